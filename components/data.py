"""Load, validate and split a tabular classification dataset.

Every refusal raises `DataValidationError` with a message that names the column or class at fault, because the
person reading it is looking at a failed pipeline step, not at this code.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import BUILTIN_DATASETS

if TYPE_CHECKING:
    import pandas as pd

_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
MIN_ROWS_PER_CLASS = 2
"""A stratified split needs at least one row of each class on each side."""


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

    @property
    def columns(self) -> int:
        """Feature count (the label is not a feature)."""
        return len(self.feature_names)

    def as_metadata(self) -> dict[str, Any]:
        """Flat JSON-able form for `Dataset.metadata`."""
        return {
            "rows": self.rows,
            "columns": self.columns,
            "feature_names": self.feature_names,
            "class_names": self.class_names,
            "label_column": self.label_column,
            "sha256": self.fingerprint,
        }


def load_dataset(source: str, *, label_column: str) -> pd.DataFrame:
    """Load a built-in dataset by name, or a CSV/Parquet file from a local path or URL.

    Args:
        source: `iris`, `wine`, `breast_cancer` (shipped with scikit-learn, no download), a path, or an
            http(s)/file URL ending in `.csv` or `.parquet`.
        label_column: Name given to the label of a built-in dataset; a file must already contain it.

    Returns:
        The raw frame, label included.
    """
    import pandas as pd

    if source in BUILTIN_DATASETS:
        return _load_builtin(source, label_column)
    suffix = Path(source.split("?", 1)[0]).suffix.lower()
    kind = _TABLE_SUFFIXES.get(suffix)
    if kind is None:
        names = ", ".join(BUILTIN_DATASETS)
        raise DataValidationError(
            f"cannot tell the format of '{source}': use a built-in dataset ({names}) "
            "or a file ending in .csv or .parquet"
        )
    is_url = "://" in source
    if not is_url and not Path(source).is_file():
        raise DataValidationError(f"dataset file '{source}' does not exist")
    try:
        return pd.read_csv(source) if kind == "csv" else pd.read_parquet(source)
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"could not read {kind} from '{source}': {exc}") from exc


def _load_builtin(name: str, label_column: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
    }[name]
    frame = loader(as_frame=True).frame
    return frame.rename(columns={"target": label_column})


def validate_dataset(frame: pd.DataFrame, *, label_column: str, test_fraction: float) -> DatasetSummary:
    """Check that `frame` can be split and trained on, and describe it.

    Refuses: an empty frame, a missing label, non-numeric, infinite or missing feature values, an all-NaN column,
    fewer than two classes, and classes too small for a stratified split of `test_fraction`.
    """
    import numpy as np
    import pandas as pd

    if not 0.0 < test_fraction < 1.0:
        raise DataValidationError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    if frame.empty or len(frame.columns) == 0:
        raise DataValidationError("the dataset is empty: no rows or no columns")
    if label_column not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:10]))
        raise DataValidationError(f"label column '{label_column}' not found; columns are: {shown}")
    features = frame.drop(columns=[label_column])
    if features.shape[1] == 0:
        raise DataValidationError(f"the dataset has no feature columns besides the label '{label_column}'")
    all_nan = [str(c) for c in features.columns if features[c].isna().all()]
    if all_nan:
        raise DataValidationError(f"feature columns with no values at all (all NaN): {', '.join(all_nan)}")
    non_numeric = [
        f"{c} ({features[c].dtype})"
        for c in features.columns
        if not pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c])
    ]
    if non_numeric:
        raise DataValidationError(f"feature columns must be numeric; encode these first: {', '.join(non_numeric)}")
    missing = features.isna().sum()
    missing = missing[missing > 0]
    if not missing.empty:
        detail = ", ".join(f"{c} ({n} rows)" for c, n in missing.items())
        raise DataValidationError(f"feature columns with missing values; impute or drop them first: {detail}")
    infinite = [str(c) for c in features.columns if np.isinf(features[c].to_numpy(dtype=float)).any()]
    if infinite:
        raise DataValidationError(f"feature columns with infinite values: {', '.join(infinite)}")
    labels = frame[label_column]
    if labels.isna().any():
        raise DataValidationError(f"label column '{label_column}' has {int(labels.isna().sum())} missing values")
    counts = labels.value_counts()
    if len(counts) < 2:
        raise DataValidationError(f"label column '{label_column}' needs at least two classes, found {len(counts)}")
    _check_split_sizes(counts, test_fraction, len(frame))
    return DatasetSummary(
        rows=len(frame),
        feature_names=[str(c) for c in features.columns],
        class_names=[str(c) for c in sorted(counts.index)],
        label_column=label_column,
        fingerprint=fingerprint(frame),
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


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the frame's content (values, column names and dtypes), independent of the file format."""
    import pandas as pd

    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split_dataset(
    frame: pd.DataFrame, *, label_column: str, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded train/test split; the index is reset so Parquet files hold no stray index column."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(frame, test_size=test_fraction, random_state=seed, stratify=frame[label_column])
    return train.reset_index(drop=True), test.reset_index(drop=True)


def features_and_labels(frame: pd.DataFrame, *, label_column: str) -> tuple[pd.DataFrame, pd.Series]:
    """Split a frame into its feature columns and its label column."""
    return frame.drop(columns=[label_column]), frame[label_column]
