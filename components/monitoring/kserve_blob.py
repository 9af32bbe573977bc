"""Read what KServe's built-in blob logger writes, as the same records the sink and the local server write.

The alternative to the sink: KServe 0.21's agent can upload its log records to S3/GCS/Azure itself
(`logger.url: s3://bucket/prefix` + `logger.storage`, batched by `batchSize`/`batchInterval`; kserve
`pkg/logger/store.go`). With `parameters.format: json` each object holds one `LogRequest` or a JSON list of
them (Go's encoding: `bytes` base64, `occurrenceTime` RFC 3339), keyed
`<prefix>/<namespace>/<isvc>/<component>/<path>/<first id>-<request|response>.json`. There is no date
partition, so a window read lists every object and skips those last modified before the window starts (an object
is written after the events it holds). CSV/Parquet output is not read: those drop `occurrenceTime`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import (
    CE_TYPE_INFERENCE_REQUEST,
    CE_TYPE_INFERENCE_RESPONSE,
    KSERVE_LOGGER_MODES,
    MODEL_SHA256_ANNOTATION,
    PAYLOAD_COLUMN_MODEL_NAME,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_SOURCE,
    PAYLOAD_COLUMN_TIMESTAMP,
    PAYLOAD_SOURCE_KSERVE_BLOB,
)
from components.monitoring.sink import (
    CloudEventError,
    instances_from_request,
    parse_rfc3339,
    predictions_from_response,
    typed_rows,
)
from components.payload_log import (
    METADATA_COLUMNS,
    PayloadLogError,
    encode_prediction,
    resolve_destination,
    to_utc,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs


def kserve_blob_logger_spec(
    storage_uri: str,
    *,
    service_account: str,
    path: str = "/",
    storage_key: str = "",
    mode: str = "all",
    batch_size: int = 100,
    batch_interval: str = "60s",
    metadata_annotations: Sequence[str] = (MODEL_SHA256_ANNOTATION,),
) -> dict[str, Any]:
    """`spec.predictor.logger` for KServe's own blob logger in JSON format (read with `read_kserve_blob_window`).

    Args:
        storage_uri: `s3://bucket/prefix` the agent uploads to.
        service_account: Account whose Secret holds the store's credentials and `serving.kserve.io/s3-*`
            annotations (e.g. `kfp-model-reader` with `kfp-object-store`).
        path: Appended to `<prefix>/<namespace>/<isvc>/<component>/` in every object key.
        storage_key: Key in KServe's `storage-config` Secret, if credentials come from there instead.
        mode: `all` or `request` (drift needs the inputs).
        batch_size: Records per uploaded object.
        batch_interval: Longest wait before a partial batch is uploaded (Go duration, e.g. `60s`).
        metadata_annotations: InferenceService annotations copied into each record.

    Returns:
        The logger block. The webhook requires `storage.path`, `storage.parameters` and `storage.key`.
    """
    if mode not in KSERVE_LOGGER_MODES or mode == "response":
        raise ValueError(f"logger mode must be 'all' or 'request' for drift monitoring, got {mode!r}")
    if not storage_uri.startswith(("s3://", "gs://", "abfs://")):
        raise ValueError(f"storage_uri must be s3://, gs:// or abfs://, got {storage_uri!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec: dict[str, Any] = {
        "url": storage_uri,
        "mode": mode,
        "storage": {
            "path": path,
            "key": storage_key,
            "serviceAccountName": service_account,
            "parameters": {"type": storage_uri.split("://", 1)[0], "format": "json"},
        },
        "batchSize": batch_size,
        "batchInterval": batch_interval,
    }
    if metadata_annotations:
        spec["metadataAnnotations"] = list(metadata_annotations)
    return spec


def _body(record: Mapping[str, Any]) -> Any:
    raw = record.get("bytes")
    if raw is None:
        raise CloudEventError(f"log record {record.get('id')!r} has no bytes")
    try:
        return json.loads(base64.b64decode(raw))
    except (ValueError, TypeError) as error:
        raise CloudEventError(f"log record {record.get('id')!r}: payload is not base64 JSON ({error})") from error


def records_from_log_requests(
    log_requests: Iterable[Mapping[str, Any]],
    *,
    feature_names: Sequence[str],
    mode: str = "all",
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """Pair KServe `LogRequest` records by id and flatten them into payload-log rows.

    Unpaired requests (the model did not answer 200) and records that cannot be decoded are skipped; the
    frame's `attrs["skipped"]` counts them.

    Args:
        log_requests: Decoded `LogRequest` objects from the blob logger's JSON files.
        feature_names: Column names for the instance columns, in the model's order.
        mode: `all` (pair with responses) or `request` (inputs only, no predictions).
        categorical: Which features are categorical (kept as category texts); the rest must be numbers.

    Returns:
        A frame with the payload log columns (`source` = `kserve-blob-logger`).
    """
    import pandas as pd

    requests: dict[str, Mapping[str, Any]] = {}
    responses: dict[str, Mapping[str, Any]] = {}
    for record in log_requests:
        kind, record_id = record.get("reqType"), record.get("id")
        if not record_id:
            continue
        if kind == CE_TYPE_INFERENCE_REQUEST:
            requests[str(record_id)] = record
        elif kind == CE_TYPE_INFERENCE_RESPONSE:
            responses[str(record_id)] = record
    columns: dict[str, list[Any]] = {name: [] for name in (*METADATA_COLUMNS, *feature_names)}
    skipped = 0
    for record_id, request in requests.items():
        response = responses.get(record_id)
        if mode == "all" and response is None:
            skipped += 1
            continue
        try:
            rows = typed_rows(instances_from_request(_body(request), feature_names), feature_names, categorical)
            predictions = predictions_from_response(_body(response)) if response is not None else [None] * len(rows)
            when = parse_rfc3339(str(request.get("occurrenceTime", "")))
        except (CloudEventError, ValueError, TypeError):
            skipped += 1
            continue
        if rows.ndim != 2 or rows.shape[1] != len(feature_names) or len(predictions) != len(rows):
            skipped += 1
            continue
        annotations = request.get("annotations") or {}
        columns[PAYLOAD_COLUMN_REQUEST_ID] += [record_id] * len(rows)
        columns[PAYLOAD_COLUMN_TIMESTAMP] += [when] * len(rows)
        columns[PAYLOAD_COLUMN_MODEL_NAME] += [str(request.get("inferenceService", ""))] * len(rows)
        columns[PAYLOAD_COLUMN_MODEL_SHA256] += [str(annotations.get(MODEL_SHA256_ANNOTATION, ""))] * len(rows)
        columns[PAYLOAD_COLUMN_PREDICTION] += [encode_prediction(p) for p in predictions]
        columns[PAYLOAD_COLUMN_SOURCE] += [PAYLOAD_SOURCE_KSERVE_BLOB] * len(rows)
        for index, name in enumerate(feature_names):
            columns[name] += rows[:, index].tolist()
    frame = pd.DataFrame(columns)
    frame[PAYLOAD_COLUMN_TIMESTAMP] = pd.to_datetime(frame[PAYLOAD_COLUMN_TIMESTAMP], utc=True)
    frame.attrs["skipped"] = skipped
    return frame


def read_kserve_blob_window(
    storage_uri: Path | str,
    *,
    feature_names: Sequence[str],
    model_name: str | None,
    start: datetime | None,
    end: datetime | None,
    filesystem: pafs.FileSystem | None = None,
    categorical: Sequence[str] = (),
) -> pd.DataFrame:
    """Read KServe blob-logger JSON objects under `storage_uri` into payload-log rows with `start <= t < end`.

    Args:
        storage_uri: The logger's `url` (or any prefix below it, e.g. `.../<namespace>/<isvc>`).
        feature_names: The model's feature names (KServe's V1 records carry none).
        model_name: Keep only this InferenceService's records (None: all).
        start: Inclusive lower bound (naive = UTC); objects last modified before it are not read.
        end: Exclusive upper bound (naive = UTC).
        filesystem: A ready pyarrow filesystem (S3 endpoint and credentials).
        categorical: Which features are categorical (the reference profile's kinds).

    Returns:
        A frame with the payload log columns, oldest first.

    Raises:
        FileNotFoundError: Nothing at `storage_uri`.
    """
    import pandas as pd
    import pyarrow.fs as pafs

    if start is not None and end is not None and to_utc(start) >= to_utc(end):
        raise PayloadLogError(f"window start {start} is not before end {end}")
    fs, base = resolve_destination(storage_uri, filesystem)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"KServe blob log location {storage_uri} does not exist")
    log_requests: list[Mapping[str, Any]] = []
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        if start is not None and info.mtime is not None and to_utc(info.mtime) < to_utc(start):
            continue
        with fs.open_input_stream(info.path) as stream:
            try:
                content = json.loads(stream.read())
            except ValueError:
                continue
        for record in content if isinstance(content, list) else [content]:
            if isinstance(record, dict) and (model_name is None or record.get("inferenceService") == model_name):
                log_requests.append(record)
    frame = records_from_log_requests(log_requests, feature_names=feature_names, categorical=categorical)
    mask = pd.Series(True, index=frame.index)
    if start is not None:
        mask &= frame[PAYLOAD_COLUMN_TIMESTAMP] >= pd.Timestamp(to_utc(start))
    if end is not None:
        mask &= frame[PAYLOAD_COLUMN_TIMESTAMP] < pd.Timestamp(to_utc(end))
    result = frame.loc[mask].sort_values(PAYLOAD_COLUMN_TIMESTAMP, kind="stable").reset_index(drop=True)
    result.attrs["skipped"] = frame.attrs["skipped"]
    return result
