"""Payload logs: one Parquet record per predicted row, written in batches off the request path.

The core owns the log's schema and writer: the model server writes it (`serve --payload_log_dir`), the data step
refuses features named like its columns, the deploy step points KServe's logger at the sink (`logger_spec`), and
`components.monitoring` reads it back.

Layout (the same for the local server and the cluster sink)::

    <log_dir>/<model_name>/date=YYYY-MM-DD/part-<utc time>-<random>.parquet

Each file is written under a hidden temporary name and renamed into place (local disks), or uploaded in one
PUT (object stores), so a reader never sees a half-written file. Columns: `request_id`, `timestamp` (UTC),
`model_name`, `model_sha256`, one column per feature (named as in the model card; float64 for a numeric feature,
string for a categorical one, null where the request had no value), `prediction` (the class label as text, or
the regression value) and `source` (who logged it). Logs written before feature kinds existed (every feature
float64) read the same way.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.atomic import atomic_write_bytes
from components.constants import (
    KSERVE_LOGGER_MODES,
    MODEL_SHA256_ANNOTATION,
    PAYLOAD_COLUMN_MODEL_NAME,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_SOURCE,
    PAYLOAD_COLUMN_TIMESTAMP,
    PAYLOAD_LOG_DATE_PREFIX,
    PAYLOAD_LOG_SUFFIX,
    PAYLOAD_SOURCE_LOCAL,
)

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs

    from components.features import Feature

logger = logging.getLogger(__name__)

METADATA_COLUMNS: tuple[str, ...] = (
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_TIMESTAMP,
    PAYLOAD_COLUMN_MODEL_NAME,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_SOURCE,
)
"""Every column that is not a feature: the data step (components.data) refuses features with these names."""

DEFAULT_FLUSH_INTERVAL_S = 1.0
"""Longest a recorded row waits in memory: the most a kill -9 of the server can lose (README, "Security and
reliability"). One file per second under steady traffic is the price; `batch_size` rows flush sooner."""


class PayloadLogError(ValueError):
    """A payload log cannot be written or read as asked; the message says what is wrong."""


@dataclass(frozen=True)
class _Pending:
    """One `record()` call waiting for the background thread: kept as given, converted only there."""

    timestamp_ns: int
    instances: Any
    predictions: Sequence[Any] | np.ndarray
    request_ids: Sequence[str] | None


@dataclass(frozen=True)
class WriterStats:
    """What a writer did so far; `dropped` > 0 means the queue was full and records were shed."""

    recorded: int
    written: int
    dropped: int
    failed: int
    files: int


def resolve_destination(destination: Path | str, filesystem: pafs.FileSystem | None = None) -> tuple[Any, str]:
    """Turn a directory or URI into a pyarrow filesystem and a base path on it.

    Args:
        destination: A local directory, or a URI pyarrow understands (`s3://bucket/prefix`, `file:///...`).
        filesystem: A ready filesystem (e.g. `S3FileSystem(endpoint_override=...)`); `destination` is then a
            path on it (`bucket/prefix` for S3).

    Returns:
        `(filesystem, base_path)` with no trailing slash.
    """
    import pyarrow.fs as pafs

    if filesystem is not None:
        text = str(destination)
        for scheme in ("s3://", "gs://", "file://"):
            text = text.removeprefix(scheme)
        return filesystem, text.rstrip("/")
    text = str(destination)
    if "://" in text:
        fs, path = pafs.FileSystem.from_uri(text)
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).resolve())


def partition_dir(base: str, model_name: str, day: date) -> str:
    """The folder holding one model's records for one UTC day."""
    return f"{base}/{model_name}/{PAYLOAD_LOG_DATE_PREFIX}{day.isoformat()}"


def encode_prediction(value: Any) -> str | None:
    """Class labels are stored as text so ints, strings and numpy scalars compare equal across sources."""
    if value is None:
        return None  # request-only logging: no prediction known
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, str):
        return value
    return json.dumps(value)


def payload_schema(feature_names: Sequence[str], categorical: Sequence[str] = ()) -> pa.Schema:
    """The Parquet schema of a payload log for these features (`categorical` ones are strings, the rest float64)."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(PAYLOAD_COLUMN_REQUEST_ID, pa.string()),
            pa.field(PAYLOAD_COLUMN_TIMESTAMP, pa.timestamp("us", tz="UTC")),
            pa.field(PAYLOAD_COLUMN_MODEL_NAME, pa.string()),
            pa.field(PAYLOAD_COLUMN_MODEL_SHA256, pa.string()),
            *[pa.field(name, pa.string() if name in categorical else pa.float64()) for name in feature_names],
            pa.field(PAYLOAD_COLUMN_PREDICTION, pa.string()),
            pa.field(PAYLOAD_COLUMN_SOURCE, pa.string()),
        ]
    )


def _check_feature_names(feature_names: Sequence[str]) -> list[str]:
    names = [str(n) for n in feature_names]
    if not names:
        raise PayloadLogError("feature_names is empty: the log needs the model's feature names as column names")
    if len(set(names)) != len(names):
        raise PayloadLogError(f"feature_names has duplicates: {names}")
    clash = sorted(set(names) & set(METADATA_COLUMNS))
    if clash:
        raise PayloadLogError(f"feature names {clash} collide with payload log columns {list(METADATA_COLUMNS)}")
    return names


class PayloadLogWriter:
    """Append predicted rows to a Parquet payload log without slowing the caller.

    `record()` only enqueues (a few microseconds); a daemon thread converts and writes a file every
    `batch_size` rows or `flush_interval_s` seconds, whichever comes first. `close()` drains the queue, so a
    clean shutdown loses nothing. If the queue holds `max_pending` calls (the disk is slower than traffic),
    further calls are dropped and counted in `stats().dropped` rather than blocking predictions.

    Args:
        directory: Log root (local directory, or a URI such as `s3://bucket/prefix`).
        model_name: Sub-folder and `model_name` column.
        model_sha256: Digest of the served `model.joblib`, so records say which model answered.
        feature_names: Column names for the instance columns, in the model's order (all numeric).
        features: The model card's typed features instead (`card.features`): categorical ones are logged as
            strings. Give `feature_names` or `features`; both must agree when given.
        batch_size: Rows per file, at most.
        flush_interval_s: Longest time a row waits in memory before it is written (the loss window on kill -9).
        max_pending: Queued `record()` calls beyond which new ones are dropped.
        source: Value of the `source` column.
        filesystem: A ready pyarrow filesystem for `directory` (S3 endpoint and credentials are set on it).
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        model_name: str,
        model_sha256: str,
        feature_names: Sequence[str] | None = None,
        features: Sequence[Feature] | None = None,
        batch_size: int = 1000,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_pending: int = 100_000,
        source: str = PAYLOAD_SOURCE_LOCAL,
        filesystem: pafs.FileSystem | None = None,
    ) -> None:
        if not model_name or "/" in model_name:
            raise PayloadLogError(f"model_name must be a non-empty name without '/', got {model_name!r}")
        if batch_size < 1:
            raise PayloadLogError(f"batch_size must be >= 1, got {batch_size}")
        if flush_interval_s <= 0:
            raise PayloadLogError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.model_name = model_name
        self.model_sha256 = model_sha256
        if features is not None:
            typed = [str(f.name) for f in features]
            if feature_names is not None and [str(n) for n in feature_names] != typed:
                raise PayloadLogError(f"feature_names {list(feature_names)} differ from the features' names {typed}")
            feature_names = typed
        if feature_names is None:
            raise PayloadLogError("give feature_names or features: the log needs the model's feature columns")
        self.feature_names = _check_feature_names(feature_names)
        self.categorical = [str(f.name) for f in features or () if f.kind == "categorical"]
        """Features logged as strings; the rest are float64."""
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.source = source
        self._fs, self._base = resolve_destination(directory, filesystem)
        self._schema = payload_schema(self.feature_names, self.categorical)
        # Import the writer's modules now (server start), not on the first flush: an import holds the GIL for
        # ~0.1 s and would stall whichever request is running.
        import pyarrow.compute
        import pyarrow.parquet  # noqa: F401

        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_pending)
        self._closed = False
        self._close_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._recorded = 0
        self._dropped = 0
        self._written = 0
        self._failed = 0
        self._failing = False
        """True from a failed write until the next one succeeds: a broken destination is logged once, not per flush."""
        self._files = 0
        self._thread = threading.Thread(target=self._run, name=f"payload-log-{model_name}", daemon=True)
        self._thread.start()

    # --- caller side: keep it cheap ----------------------------------------------------------------
    def record(
        self,
        instances: np.ndarray,
        predictions: Sequence[Any] | np.ndarray,
        *,
        request_ids: Sequence[str] | None = None,
        timestamp: datetime | None = None,
    ) -> None:
        """Enqueue the rows of one successful prediction; never blocks and never touches the disk.

        Args:
            instances: 2-D array (rows x features) exactly as the model received it: float64, or the
                `feature_matrix` object array (floats, category strings, NaN or None for missing). Not copied:
                do not mutate it afterwards.
            predictions: One prediction per row.
            request_ids: One id per row (the KServe sink passes the CloudEvent id); generated when absent.
            timestamp: When the prediction happened (default: now, UTC).

        Raises:
            PayloadLogError: After `close()`, or when the shapes do not line up (a caller bug, not a client one).
        """
        if self._closed:
            raise PayloadLogError("record() after close(): the payload log writer is closed")
        shape = getattr(instances, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != len(self.feature_names):
            raise PayloadLogError(
                f"instances must be a 2-D array with {len(self.feature_names)} columns, got shape {shape}"
            )
        if len(predictions) != shape[0]:
            raise PayloadLogError(f"{shape[0]} instance rows but {len(predictions)} predictions")
        if request_ids is not None and len(request_ids) != shape[0]:
            raise PayloadLogError(f"{shape[0]} instance rows but {len(request_ids)} request ids")
        when = time.time_ns() if timestamp is None else round(to_utc(timestamp).timestamp() * 1e6) * 1000
        try:
            self._queue.put_nowait(_Pending(when, instances, predictions, request_ids))
            accepted = True
        except queue.Full:
            accepted = False
        with self._count_lock:  # `+=` on an attribute is not atomic across threads
            if accepted:
                self._recorded += shape[0]
            else:
                self._dropped += shape[0]

    def close(self) -> None:
        """Write everything still queued and stop the background thread (idempotent)."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        # The sentinel must get in even if the queue is full: this put blocks until the thread makes room.
        self._queue.put(None)
        self._thread.join()

    def stats(self) -> WriterStats:
        """Counters so far (read without locking: exact once `close()` returned)."""
        return WriterStats(self._recorded, self._written, self._dropped, self._failed, self._files)

    def __enter__(self) -> PayloadLogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- background thread -------------------------------------------------------------------------
    def _run(self) -> None:
        pending: list[_Pending] = []
        rows = 0
        deadline = float("inf")
        while True:
            timeout = max(0.0, deadline - time.monotonic()) if pending else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:  # the oldest pending row has waited flush_interval_s
                self._flush(pending)
                pending, rows = [], 0
                continue
            if item is None:
                self._flush(pending)
                return
            if not pending:
                deadline = time.monotonic() + self.flush_interval_s
            pending.append(item)
            rows += len(item.predictions)
            if rows >= self.batch_size:
                self._flush(pending)
                pending, rows = [], 0

    def _flush(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        count = sum(len(p.predictions) for p in pending)
        try:
            table = self._to_table(pending)
            self._write_partitioned(table)
            self._written += count
        except Exception as exc:
            # A broken disk must not take the model server down with it, nor flood its log: the loss is counted
            # in stats().failed and reported in one line until a write succeeds again.
            self._failed += count
            if not self._failing:
                self._failing = True
                reason = (str(exc).splitlines() or [""])[0][:200]
                logger.error(
                    "payload log: cannot write to %s for %s (%s: %s); records are dropped and counted until a write "
                    "succeeds (not logged again)",
                    self._base,
                    self.model_name,
                    type(exc).__name__,
                    reason,
                )
            return
        if self._failing:
            self._failing = False
            logger.warning("payload log: writing to %s again for %s", self._base, self.model_name)

    def _to_table(self, pending: list[_Pending]) -> pa.Table:
        # Vectorized on purpose: this runs beside the request path and competes with it for the GIL.
        import numpy as np
        import pyarrow as pa

        kind = np.float64 if not self.categorical else object
        matrix = np.concatenate([np.asarray(p.instances, dtype=kind) for p in pending], axis=0)
        counts = np.fromiter((len(p.predictions) for p in pending), dtype=np.int64, count=len(pending))
        rows = int(counts.sum())
        micros = np.repeat(np.fromiter((p.timestamp_ns // 1000 for p in pending), dtype=np.int64), counts)
        ids: list[str] = []
        for p, n in zip(pending, counts.tolist(), strict=True):
            # One id per request (as KServe's ce-id): the rows of one call share it.
            ids.extend(p.request_ids if p.request_ids is not None else [uuid.uuid4().hex] * n)
        columns: dict[str, Any] = {
            PAYLOAD_COLUMN_REQUEST_ID: ids,
            PAYLOAD_COLUMN_TIMESTAMP: pa.array(micros, type=pa.timestamp("us", tz="UTC")),
            PAYLOAD_COLUMN_MODEL_NAME: pa.repeat(pa.scalar(self.model_name), rows),
            PAYLOAD_COLUMN_MODEL_SHA256: pa.repeat(pa.scalar(self.model_sha256), rows),
        }
        for index, name in enumerate(self.feature_names):
            if name in self.categorical:
                columns[name] = _categories_as_text(matrix[:, index])
            else:  # NaN (and None in an object matrix) is stored as null: a missing value, not a number
                columns[name] = pa.array(np.asarray(matrix[:, index], dtype=np.float64), from_pandas=True)
        columns[PAYLOAD_COLUMN_PREDICTION] = _predictions_as_text(pending)
        columns[PAYLOAD_COLUMN_SOURCE] = pa.repeat(pa.scalar(self.source), rows)
        return pa.table(columns, schema=self._schema)

    def _write_partitioned(self, table: pa.Table) -> None:
        import pyarrow.compute as pc

        days = pc.cast(table[PAYLOAD_COLUMN_TIMESTAMP], "date32")
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            self._write_file(part, day)

    def _write_file(self, table: pa.Table, day: date) -> None:
        import pyarrow as pa
        import pyarrow.fs as pafs
        import pyarrow.parquet as pq

        folder = partition_dir(self._base, self.model_name, day)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        name = f"part-{stamp}-{uuid.uuid4().hex[:8]}{PAYLOAD_LOG_SUFFIX}"
        self._fs.create_dir(folder, recursive=True)
        if isinstance(self._fs, pafs.LocalFileSystem):
            # A hidden temporary name (readers skip it), fsynced and renamed: a listed file has all its rows on disk.
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer)
            atomic_write_bytes(Path(folder) / name, buffer.getvalue().to_pybytes())
        else:
            # Object stores publish an object only when its upload completes: no partial file is ever listed.
            pq.write_table(table, f"{folder}/{name}", filesystem=self._fs)
        self._files += 1


def _categories_as_text(column: np.ndarray) -> pa.Array:
    """A categorical column as strings, missing values (None, NaN) as null."""
    import pyarrow as pa

    try:  # the server hands strings already (feature_matrix): one vectorized conversion
        return pa.array(column, type=pa.string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        from components.features import category_value

        # v != v holds only for NaN
        return pa.array([None if v is None or v != v else category_value(v) for v in column], type=pa.string())


def _predictions_as_text(pending: list[_Pending]) -> pa.Array:
    """Class labels (integers, strings) and regression values convert in one cast; the rest value by value."""
    import numpy as np
    import pyarrow as pa

    arrays = [np.asarray(p.predictions) for p in pending]
    if all(a.ndim == 1 and a.dtype.kind in "iub" for a in arrays):
        return pa.array(np.concatenate(arrays)).cast(pa.string())
    if all(a.ndim == 1 and a.dtype.kind == "f" for a in arrays):  # regression: the shortest text that reads back
        return pa.array(np.concatenate(arrays).astype(np.float64)).cast(pa.string())
    if all(a.ndim == 1 and a.dtype.kind == "U" for a in arrays):
        return pa.array(np.concatenate(arrays), type=pa.string())
    return pa.array([encode_prediction(v) for p in pending for v in p.predictions], type=pa.string())


def to_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, the timezone every log timestamp is stored in."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def logger_spec(
    sink_url: str,
    mode: str = "all",
    *,
    metadata_annotations: Sequence[str] = (MODEL_SHA256_ANNOTATION,),
) -> dict[str, Any]:
    """The `spec.predictor.logger` block that sends an InferenceService's payloads to the sink (monitoring/sink.py).

    Args:
        sink_url: The sink's in-cluster URL, e.g. `http://payload-logger.kserve-models.svc.cluster.local`.
        mode: `all` (request and response: features + prediction) or `request` (features only). `response`
            alone carries no inputs, so drift could not be checked: refused.
        metadata_annotations: InferenceService annotations KServe copies into each event; the sink reads the
            model's sha256 from `constants.MODEL_SHA256_ANNOTATION` when present.

    Returns:
        A dict to put at `spec.predictor.logger`.
    """
    if mode not in KSERVE_LOGGER_MODES or mode == "response":
        raise ValueError(f"logger mode must be 'all' or 'request' for drift monitoring, got {mode!r}")
    if not sink_url.startswith(("http://", "https://")):
        raise ValueError(f"sink_url must be an http(s) URL, got {sink_url!r}")
    spec: dict[str, Any] = {"url": sink_url, "mode": mode}
    if metadata_annotations:
        spec["metadataAnnotations"] = list(metadata_annotations)
    return spec
