"""Load, validate and split a tabular dataset for classification or regression.

Every refusal raises `DataValidationError` with a message that names the column or class at fault, because the
person reading it is looking at a failed pipeline step, not at this code.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import math
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from components.constants import BUILTIN_DATASETS
from components.features import (
    FEATURE_TYPE_DROP,
    TASK_GIVEN,
    FeatureSchema,
    FeatureSchemaError,
    check_feature_types,
    infer_feature_schema,
)
from components.payload_log import METADATA_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_URL_SCHEMES = ("http", "https")
_READ_CHUNK = 1 << 16
DATASET_TIMEOUT_S = 30.0
"""Longest wait to connect to a dataset URL, for any read, and for the whole download."""
DATASET_MAX_BYTES = 256 << 20
"""Largest dataset file read (256 MiB): the load step holds it, and the frame, in memory."""
MIN_ROWS_PER_CLASS = 2
"""A stratified split needs at least one row of each class on each side."""
MIN_REGRESSION_ROWS = 2
"""Rows a regression split needs on each side: R² of fewer than two test rows is undefined."""


class DataValidationError(ValueError):
    """The dataset cannot be trained on; the message says what is wrong and where."""


@dataclass(frozen=True)
class DatasetSummary:
    """What the data step records about a validated frame (KFP artifact metadata)."""

    rows: int
    feature_names: list[str]
    class_names: list[str]
    label_column: str
    fingerprint: str
    schema: FeatureSchema
    label_stats: dict[str, float] = field(default_factory=dict)
    """Regression: the target's min, mean and max; empty for classification."""

    @property
    def columns(self) -> int:
        """Feature count (the label and dropped columns are not features)."""
        return len(self.feature_names)

    @property
    def task(self) -> str:
        """`classification` or `regression`, given or inferred."""
        return self.schema.task

    def as_metadata(self) -> dict[str, Any]:
        """Flat JSON-able form for `Dataset.metadata`."""
        return {
            "rows": self.rows,
            "columns": self.columns,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "label_column": self.label_column,
            "sha256": self.fingerprint,
            "task": self.schema.task,
            "task_reason": self.schema.task_reason,
            "categorical_features": [f.name for f in self.schema.features if f.kind == "categorical"],
            "nullable_features": [f.name for f in self.schema.features if f.nullable],
        }

    def describe(self) -> list[str]:
        """What the data step prints: size, kinds, the task and why, classes or the target's range, notes."""
        kinds = [f.kind for f in self.schema.features]
        how = "given" if self.schema.task_reason == TASK_GIVEN else f"inferred: {self.schema.task_reason}"
        lines = [
            f"data: {self.rows} rows, {self.columns} features ({kinds.count('numeric')} numeric, "
            f"{kinds.count('categorical')} categorical), task {self.schema.task} ({how})"
        ]
        if self.schema.task == "classification":
            lines.append(f"data: classes {self.class_names}")
        else:
            stats = self.label_stats
            lines.append(
                f"data: target '{self.label_column}' min {stats['min']:.4g}, mean {stats['mean']:.4g}, "
                f"max {stats['max']:.4g}"
            )
        nullable = [f.name for f in self.schema.features if f.nullable]
        if nullable:
            lines.append(f"data: missing values (allowed at serve time) in: {', '.join(nullable)}")
        lines.extend(f"data: note: {note}" for note in self.schema.notes)
        return lines


def load_dataset(
    source: str,
    *,
    label_column: str,
    timeout_s: float = DATASET_TIMEOUT_S,
    max_bytes: int = DATASET_MAX_BYTES,
) -> pd.DataFrame:
    """Load a built-in dataset by name, or a CSV/Parquet file from a local path or an http(s) URL.

    Args:
        source: `iris`, `wine`, `breast_cancer`, `diabetes` (shipped with scikit-learn, no download), a local path,
            or an `http://` / `https://` URL whose path ends in `.csv` or `.parquet` (`check_dataset_source`).
        label_column: Name given to the label of a built-in dataset; a file must already contain it.
        timeout_s: Longest wait to connect, for any read, and for the whole download of a URL.
        max_bytes: Largest file read (local or downloaded); a larger one is refused before it is parsed.

    Returns:
        The raw frame, label included.

    Raises:
        DataValidationError: An unsupported form, an unreachable or too large file, or one that does not parse.
            Messages name the source (without credentials or query) and never quote the file's content.
    """
    import pandas as pd

    if source in BUILTIN_DATASETS:
        return _load_builtin(source, label_column)
    where = check_dataset_source(source)
    if where.is_url:
        data = _download(where, timeout_s=timeout_s, max_bytes=max_bytes)
    else:
        data = _read_local(Path(source), max_bytes=max_bytes)
    try:
        buffer = io.BytesIO(data)
        return pd.read_csv(buffer) if where.kind == "csv" else pd.read_parquet(buffer)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        # The parser's own words only: its first line, cut short, so no message can carry a file's content.
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise DataValidationError(f"could not read {where.kind} from '{where.shown}': {reason}") from None


@dataclass(frozen=True)
class DatasetSource:
    """A dataset location that passed `check_dataset_source`."""

    kind: str
    """`csv` or `parquet`."""
    is_url: bool
    location: str
    shown: str
    """How messages show it: a URL without user, password, query or fragment."""
    basic_auth: str = field(default="", repr=False)
    """`user:password` from the URL, sent as an Authorization header."""


def check_dataset_source(source: str) -> DatasetSource:
    """Refuse any `--dataset` that is not a built-in name, a local path or an http(s) URL to a .csv/.parquet file.

    The format is judged on the URL's path, so `file:///etc/passwd#.csv` or `http://h/x?f=.csv` is refused. Other
    schemes (`file://`, `ftp://`, `s3://`, ...) are refused: a local file is given as a path.
    """
    names = ", ".join(BUILTIN_DATASETS)
    if not isinstance(source, str) or not source.strip():
        raise DataValidationError(f"dataset must be a built-in dataset ({names}), a local path or an http(s) URL")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in source):
        raise DataValidationError("dataset location contains control characters")
    if source in BUILTIN_DATASETS:
        return DatasetSource(kind="builtin", is_url=False, location=source, shown=source)
    if "://" in source:
        try:
            parts = urlsplit(source)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise DataValidationError("dataset URL cannot be parsed") from None
        scheme = parts.scheme.lower()
        host = parts.netloc.rpartition("@")[2]
        shown = urlunsplit((scheme, host, parts.path, "", ""))
        if scheme not in _URL_SCHEMES:
            raise DataValidationError(
                f"dataset URL scheme '{scheme[:20]}' is not supported: use a built-in dataset ({names}), a local path "
                "or an http(s):// URL"
            )
        if not parts.hostname:
            raise DataValidationError(f"dataset URL '{shown[:200]}' names no host")
        path, is_url = parts.path, True
        # urllib takes no user:password in a URL: it is sent as Basic auth, and the fragment is never sent.
        location = urlunsplit((scheme, host, parts.path, parts.query, ""))
        auth = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}" if parts.username else ""
    else:
        shown, path, is_url, location, auth = source, source, False, source, ""
    kind = _TABLE_SUFFIXES.get(PurePosixPath(path).suffix.lower())
    if kind is None:
        raise DataValidationError(
            f"cannot tell the format of '{shown[:200]}': use a built-in dataset ({names}) or a file whose path ends "
            "in .csv or .parquet"
        )
    return DatasetSource(kind=kind, is_url=is_url, location=location, shown=shown[:200], basic_auth=auth)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects only to http(s): urllib would also follow one to ftp://."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if urlsplit(newurl).scheme.lower() not in _URL_SCHEMES:
            raise DataValidationError("dataset URL redirects to a scheme that is not http(s); refusing to follow it")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(where: DatasetSource, *, timeout_s: float, max_bytes: int) -> bytes:
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    headers = {"User-Agent": "kfp-sklearn-kserve"}
    if where.basic_auth:
        headers["Authorization"] = "Basic " + base64.b64encode(where.basic_auth.encode()).decode()
    request = urllib.request.Request(where.location, headers=headers)  # noqa: S310  # scheme checked: http(s)
    deadline = time.monotonic() + timeout_s
    failure = f"could not download '{where.shown}'"
    try:
        # The socket timeout bounds the connect and every read; the deadline bounds a server that drips bytes.
        with opener.open(request, timeout=timeout_s) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise DataValidationError(f"{failure}: it is {int(declared)} bytes, more than the {max_bytes} allowed")
            chunks, size = [], 0
            while chunk := response.read1(_READ_CHUNK):  # read1: return what arrived, do not wait to fill
                size += len(chunk)
                if size > max_bytes:
                    raise DataValidationError(f"{failure}: it is more than the {max_bytes} bytes allowed")
                if time.monotonic() > deadline:
                    raise DataValidationError(f"{failure}: not complete within {timeout_s:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise DataValidationError(f"{failure}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = f"no answer within {timeout_s:g} s" if isinstance(reason, TimeoutError) else str(reason)[:160]
        raise DataValidationError(f"{failure}: {text}") from None
    except TimeoutError:
        raise DataValidationError(f"{failure}: no answer within {timeout_s:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DataValidationError(f"{failure}: {type(exc).__name__}: {str(exc)[:160]}") from None


def _read_local(path: Path, *, max_bytes: int) -> bytes:
    if not path.is_file():  # also refuses devices and FIFOs, which could block or never end
        raise DataValidationError(f"dataset file '{str(path)[:200]}' does not exist or is not a regular file")
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise DataValidationError(f"could not read dataset file '{str(path)[:200]}': {exc.strerror}") from None
    if len(data) > max_bytes:
        raise DataValidationError(f"dataset file '{str(path)[:200]}' is more than the {max_bytes} bytes allowed")
    return data


def _load_builtin(name: str, label_column: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]
    frame = loader(as_frame=True).frame
    return frame.rename(columns={"target": label_column})


def validate_dataset(
    frame: pd.DataFrame,
    *,
    label_column: str,
    test_fraction: float,
    task: str = "",
    feature_types: Mapping[str, str] | None = None,
) -> DatasetSummary:
    """Check that `frame` can be split and trained on, infer its feature schema and task, and describe it.

    Refuses: an empty frame, a missing label, a feature named like a payload-log column, an all-NaN feature, infinite
    numeric feature values, missing or infinite labels, whatever the schema inference refuses (ID-like columns, a
    `feature_types` entry for a column that is not there, a task the label cannot support); for classification,
    fewer than two classes and classes too small for a stratified split of `test_fraction`; for regression, a
    constant label or too few rows to split. Categorical (text, boolean) features and missing feature values are
    accepted: the schema records them. Messages name columns only once the label is found (never the header of an
    unknown file).

    Args:
        frame: The whole dataset, label included.
        label_column: The label column.
        test_fraction: Share of rows the split holds out, strictly between 0 and 1.
        task: `classification`, `regression`, or "" to infer it from the label.
        feature_types: `{"column": "numeric" | "categorical" | "drop"}` overriding the inferred kinds.

    Returns:
        The summary, with the inferred `FeatureSchema` as `.schema`.

    Raises:
        DataValidationError: Every refusal, one line.
    """
    import numpy as np
    import pandas as pd

    if not 0.0 < test_fraction < 1.0:
        raise DataValidationError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if frame.empty or len(frame.columns) == 0:
        raise DataValidationError("the dataset is empty: no rows or no columns")
    if label_column not in frame.columns:
        # No column names: a header is file content too (`/etc/passwd` as CSV has its first line as a header).
        raise DataValidationError(
            f"label column '{label_column}' not found among the dataset's {len(frame.columns)} columns; "
            "pass the label's name as label_column (--label-column)"
        )
    try:
        dropped = {c for c, kind in check_feature_types(feature_types).items() if kind == FEATURE_TYPE_DROP}
    except FeatureSchemaError as exc:
        raise DataValidationError(str(exc)) from None
    features = frame.drop(columns=[label_column])
    if features.shape[1] == 0:
        raise DataValidationError(f"the dataset has no feature columns besides the label '{label_column}'")
    kept = [c for c in features.columns if str(c) not in dropped]
    clash = [str(c) for c in kept if str(c) in METADATA_COLUMNS]
    if clash:
        raise DataValidationError(
            f"feature column '{clash[0]}' has the name of a payload-log column ({', '.join(METADATA_COLUMNS)}); "
            "rename it before training"
        )
    all_nan = [str(c) for c in kept if features[c].isna().all()]
    if all_nan:
        raise DataValidationError(f"feature columns with no values at all (all NaN): {', '.join(all_nan)}")
    labels = frame[label_column]
    if labels.isna().any():
        raise DataValidationError(f"label column '{label_column}' has {int(labels.isna().sum())} missing values")
    numeric_label = pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels)
    if numeric_label and np.isinf(labels.to_numpy(dtype=float)).any():
        raise DataValidationError(f"label column '{label_column}' has infinite values")
    try:
        schema = infer_feature_schema(frame, label_column=label_column, task=task, feature_types=feature_types)
    except FeatureSchemaError as exc:
        raise DataValidationError(str(exc)) from None
    infinite = [
        f.name
        for f in schema.features
        if f.kind == "numeric" and np.isinf(pd.to_numeric(frame[f.name], errors="coerce").to_numpy(dtype=float)).any()
    ]
    if infinite:
        raise DataValidationError(f"feature columns with infinite values: {', '.join(infinite)}")
    label_stats: dict[str, float] = {}
    if schema.task == "classification":
        counts = labels.value_counts()
        if len(counts) < 2:
            raise DataValidationError(f"label column '{label_column}' needs at least two classes, found {len(counts)}")
        _check_split_sizes(counts, test_fraction, len(frame))
    else:
        values = labels.to_numpy(dtype=float)
        if np.unique(values).size < 2:
            raise DataValidationError(f"label column '{label_column}' has one value only: there is nothing to learn")
        _check_regression_split(test_fraction, len(frame))
        label_stats = {"min": float(values.min()), "mean": float(values.mean()), "max": float(values.max())}
    return DatasetSummary(
        rows=len(frame),
        feature_names=schema.names,
        class_names=list(schema.class_names),
        label_column=label_column,
        fingerprint=fingerprint(frame),
        schema=schema,
        label_stats=label_stats,
    )


def _check_split_sizes(counts: pd.Series, test_fraction: float, rows: int) -> None:
    small = counts[counts < MIN_ROWS_PER_CLASS]
    if not small.empty:
        detail = ", ".join(f"{label!r} ({n})" for label, n in small.items())
        raise DataValidationError(
            f"classes need at least {MIN_ROWS_PER_CLASS} rows each for a stratified split; too few: {detail}"
        )
    # scikit-learn rounds the test side up and needs one row per class on each side.
    n_test = math.ceil(rows * test_fraction)
    n_train = rows - n_test
    n_classes = len(counts)
    if n_test < n_classes or n_train < n_classes:
        raise DataValidationError(
            f"test_fraction={test_fraction} on {rows} rows gives {n_train} train / {n_test} test rows, "
            f"fewer than the {n_classes} classes; use more data or a test_fraction closer to 0.5"
        )


def _check_regression_split(test_fraction: float, rows: int) -> None:
    n_test = math.ceil(rows * test_fraction)
    n_train = rows - n_test
    if n_train < MIN_REGRESSION_ROWS or n_test < MIN_REGRESSION_ROWS:
        raise DataValidationError(
            f"test_fraction={test_fraction} on {rows} rows gives {n_train} train / {n_test} test rows; regression "
            f"needs at least {MIN_REGRESSION_ROWS} on each side (R² is undefined below that): use more data"
        )


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content (values, column names and dtypes), independent of the file format."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split_dataset(
    frame: pd.DataFrame, *, label_column: str, test_fraction: float, seed: int, task: str = "classification"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded train/test split: stratified for classification, shuffled for regression.

    A numeric target has no classes to stratify on. The index is reset so Parquet files hold no stray index column.
    """
    from sklearn.model_selection import train_test_split

    stratify = frame[label_column] if task == "classification" else None
    train, test = train_test_split(frame, test_size=test_fraction, random_state=seed, stratify=stratify)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def features_and_labels(frame: pd.DataFrame, *, label_column: str) -> tuple[pd.DataFrame, pd.Series]:
    """Split a frame into its feature columns and its label column."""
    return frame.drop(columns=[label_column]), frame[label_column]
