"""The training data's reference profile: what "normal" inputs look like, stored beside the model.

Train writes `build_reference_profile(features, schema, predictions)` as `constants.REFERENCE_PROFILE_FILENAME` in
the model directory; the monitoring pipeline (`components.monitoring`) compares logged traffic with it, so the
training data itself is not needed at monitoring time. Per feature kind (the feature schema's):

- numeric: quantile bin edges and proportions (for PSI), a bounded random sample (for the KS and spread tests),
  mean, std, and the missing rate;
- categorical: every known category with its share of the non-missing training values (for the chi-square test,
  PSI over categories and the unseen-category share), and the missing rate.

A regression model's profile also holds its predictions on the training rows, profiled like a numeric feature, so
a shift of what the model answers is seen too. Profiles of versions 1 and 2 (all numeric, no missing values) load
as version 3.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from components.constants import REFERENCE_PROFILE_FILENAME, REFERENCE_PROFILE_SCHEMA_VERSION, TASK_REGRESSION

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow.fs as pafs

    from components.features import FeatureSchema

DEFAULT_BINS = 10
"""Deciles: the usual PSI binning; each bin holds ~10% of the training rows."""
DEFAULT_SAMPLE_SIZE = 5000
"""KS needs the raw values; 5000 keeps the JSON small (~100 KB per feature at most) and the test sharp."""
MIN_REFERENCE_ROWS = 20
_SCHEMA_QUANTILE_EDGES = 1
_SCHEMA_NUMERIC_ONLY = 2
"""Tie-safe numeric bins, no feature kinds, no missing values, no predictions: read as version 3 with defaults."""
KIND_NUMERIC = "numeric"
KIND_CATEGORICAL = "categorical"
MIN_ROWS_PER_BIN = 20
"""A bin's training share is itself an estimate: with fewer rows per bin, PSI's sampling noise alone (about
(bins - 1) * (1/training rows + 1/window rows) on average) approaches the threshold."""


class ReferenceProfileError(ValueError):
    """The data cannot be profiled, or a stored profile is unusable; the message says why."""


def bin_proportions(values: np.ndarray, inner_edges: list[float]) -> list[float]:
    """Share of `values` in each bin; bins are (-inf, e1), [e1, e2), ..., [ek, inf).

    The outer bins are open so live values outside the training range still land in a bin.
    """
    import numpy as np

    index = np.searchsorted(np.asarray(inner_edges, dtype=np.float64), values, side="right")
    counts = np.bincount(index, minlength=len(inner_edges) + 1)
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(inner_edges) + 1)


def tie_safe_edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner edges near the quantiles of `values`, each halfway between two distinct values of `values`.

    An edge placed ON a reference value (what `np.quantile` gives for data on a grid, like Iris' 0.1 cm) puts that
    whole tie group on one side, while live measurements of the same value scatter to both sides: PSI then
    reports a shift that is not there. Halfway between neighbouring distinct values, no reference value sits on
    an edge and a tie group always stays in one bin. Quantiles that fall in the same gap merge, so a feature
    with few distinct values gets fewer bins.
    """
    import numpy as np

    distinct = np.unique(values)
    if len(distinct) < 2:
        return []
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    # distinct[i - 1] <= q < distinct[i]: the gap the quantile falls in (a quantile at the maximum takes the last).
    upper = np.clip(np.searchsorted(distinct, quantiles, side="right"), 1, len(distinct) - 1)
    edges = (distinct[upper - 1] + distinct[upper]) / 2
    return [float(e) for e in np.unique(edges)]


def bins_for(rows: int, bins: int) -> int:
    """`bins`, fewer when the data is small: at least `MIN_ROWS_PER_BIN` training rows per bin."""
    return max(2, min(bins, rows // MIN_ROWS_PER_BIN))


def build_reference_profile(
    features: pd.DataFrame | np.ndarray,
    schema: FeatureSchema | None = None,
    predictions: Any = None,
    *,
    bins: int = DEFAULT_BINS,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Summarize each feature of the training data (and a regression model's predictions) for later drift checks.

    Args:
        features: Training features only (no label column): a frame with a column per schema feature (extra
            columns are ignored), or `feature_matrix(frame, schema)` (columns in schema order). Without a schema:
            a frame whose every column is a numeric feature without missing values (the version-2 behaviour).
        schema: The feature schema: each feature's kind says how it is profiled. Missing values (NaN or None) are
            counted as the feature's missing rate and left out of its distribution.
        predictions: The model's predictions on the same rows. Profiled (like a numeric feature) only when
            `schema.task` is regression; ignored otherwise.
        bins: Quantile bins for PSI (fewer if a feature has fewer distinct values, or the data fewer than
            `MIN_ROWS_PER_BIN` rows per bin).
        sample_size: Most raw values kept per numeric feature (and for the predictions) for the KS test.
        seed: Seed of the samples, so the same data gives the same profile.

    Returns:
        A JSON-able dict: `schema_version`, `feature_names`, `rows`, `bins`, `task` (None without a schema),
        `prediction` (a numeric entry, or None) and `features[name]`: for numeric features `kind`, `count`
        (non-missing values), `missing_rate`, `mean`, `std`, `min`, `max`, `bin_edges` (inner edges),
        `bin_proportions` and `sample`; for categorical ones `kind`, `count`, `missing_rate`, `categories` (sorted)
        and `category_proportions` (shares of the non-missing values).

    Raises:
        ReferenceProfileError: Too few rows, a feature column absent, predictions of the wrong length; without a
            schema also a non-numeric column or a missing value.
    """
    import numpy as np
    import pandas as pd

    if bins < 2:
        raise ReferenceProfileError(f"bins must be >= 2, got {bins}")
    rng = np.random.default_rng(seed)
    columns = _feature_columns(features, schema)
    rows = len(next(iter(columns.values()))[1]) if columns else 0
    if rows < MIN_REFERENCE_ROWS:
        raise ReferenceProfileError(f"need at least {MIN_REFERENCE_ROWS} rows to profile, got {rows}")
    task = None if schema is None else str(schema.task)
    profile: dict[str, Any] = {
        "schema_version": REFERENCE_PROFILE_SCHEMA_VERSION,
        "feature_names": list(columns),
        "rows": rows,
        "bins": bins,
        "task": task,
        "prediction": None,
        "features": {},
    }
    for name, (kind, values) in columns.items():
        if kind == KIND_CATEGORICAL:
            known = [] if schema is None else next(f.categories for f in schema.features if f.name == name)
            profile["features"][name] = _categorical_entry(values, known)
            continue
        if schema is None:  # version-2 contract: every column numeric and complete
            if not pd.api.types.is_numeric_dtype(values):
                raise ReferenceProfileError(f"feature '{name}' is {values.dtype}, not numeric")
            if not np.isfinite(values.to_numpy(dtype=np.float64)).all():
                raise ReferenceProfileError(f"feature '{name}' has missing or infinite values")
        profile["features"][name] = _numeric_entry(_as_float(name, values), bins, sample_size, rng)
    if predictions is not None and task == TASK_REGRESSION:
        predicted = _as_float("predictions", pd.Series(np.asarray(predictions).ravel()))
        if len(predicted) != rows:
            raise ReferenceProfileError(f"{len(predicted)} predictions for {rows} training rows")
        profile["prediction"] = _numeric_entry(predicted, bins, sample_size, rng)
    return profile


def _feature_columns(features: pd.DataFrame | np.ndarray, schema: FeatureSchema | None) -> dict[str, tuple[str, Any]]:
    """Each feature's (kind, values as a Series), in schema order (frame order without a schema)."""
    import pandas as pd

    if schema is None:
        if not isinstance(features, pd.DataFrame):
            raise ReferenceProfileError("a feature matrix needs its schema (the column names and kinds)")
        return {str(c): (KIND_NUMERIC, features[c]) for c in features.columns}
    names = [f.name for f in schema.features]
    if isinstance(features, pd.DataFrame):
        absent = [n for n in names if n not in features.columns]
        if absent:
            raise ReferenceProfileError(f"the training features have no column for {absent}")
        series = [features[n].reset_index(drop=True) for n in names]
    else:
        shape: tuple[int, ...] = tuple(getattr(features, "shape", ()))
        if len(shape) != 2 or shape[1] != len(names):
            raise ReferenceProfileError(
                f"the feature matrix must have {len(names)} columns (the schema's), got {shape}"
            )
        series = [pd.Series(features[:, i]) for i in range(len(names))]
    return {f.name: (str(f.kind), s) for f, s in zip(schema.features, series, strict=True)}


def _as_float(name: str, values: pd.Series) -> np.ndarray:
    """A numeric column as float64; None, NaN and infinities become NaN (missing)."""
    import numpy as np
    import pandas as pd

    try:
        numbers = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as error:
        raise ReferenceProfileError(f"numeric feature '{name}' has a non-numeric value: {error}") from None
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def _numeric_entry(values: np.ndarray, bins: int, sample_size: int, rng: np.random.Generator) -> dict[str, Any]:
    import numpy as np

    present = values[~np.isnan(values)]
    missing_rate = 1 - len(present) / len(values) if len(values) else 0.0
    if len(present) == 0:  # never observed in training: only its missing rate can be watched
        return {"kind": KIND_NUMERIC, "count": 0, "missing_rate": missing_rate, "mean": 0.0, "std": 0.0,
                "min": 0.0, "max": 0.0, "bin_edges": [], "bin_proportions": [1.0], "sample": []}  # fmt: skip
    edges = tie_safe_edges(present, bins_for(len(present), bins))
    sample = present if len(present) <= sample_size else rng.choice(present, size=sample_size, replace=False)
    return {
        "kind": KIND_NUMERIC,
        "count": len(present),
        "missing_rate": missing_rate,
        "mean": float(present.mean()),
        "std": float(present.std(ddof=1)) if len(present) > 1 else 0.0,
        "min": float(present.min()),
        "max": float(present.max()),
        "bin_edges": edges,
        "bin_proportions": bin_proportions(present, edges),
        "sample": [float(v) for v in np.sort(sample)],
    }


def category_labels(values: pd.Series) -> pd.Series:
    """Categorical values as the text the schema and the payload log hold (`features.category_value`).

    Missing values (None, NaN) become None.
    """
    import numpy as np
    import pandas as pd

    from components.features import category_value

    # Convert each distinct value once: a large window has few categories.
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = np.array([category_value(v) for v in uniques] + [None], dtype=object)
    return pd.Series(texts[codes], index=values.index, dtype=object)


def _categorical_entry(values: pd.Series, known: list[str]) -> dict[str, Any]:
    labels = category_labels(values)
    present = labels.dropna()
    counts = present.value_counts()
    # The schema's categories, plus any the data holds beyond them (then the schema is older than the data).
    categories = sorted({*known, *map(str, counts.index)})
    total = int(counts.sum())
    return {
        "kind": KIND_CATEGORICAL,
        "count": total,
        "missing_rate": 1 - total / len(labels) if len(labels) else 0.0,
        "categories": categories,
        "category_proportions": [float(counts.get(c, 0)) / total if total else 0.0 for c in categories],
    }


class FeatureProfile(BaseModel):
    """A numeric feature's entry: what PSI (bins), KS and the spread test (sample, std) read."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["numeric"] = "numeric"
    mean: float
    std: float
    bin_edges: list[float]
    bin_proportions: list[float]
    sample: list[float]
    count: int | None = None
    """Non-missing training values (None in profiles older than version 2's counts)."""
    min: float | None = None
    max: float | None = None
    missing_rate: float = 0.0

    @model_validator(mode="after")
    def _usable(self) -> FeatureProfile:
        if len(self.bin_proportions) != len(self.bin_edges) + 1:
            raise ValueError("bins and edges do not match")
        if (self.count != 0 and not self.sample) or not all(math.isfinite(v) for v in self.sample):
            raise ValueError("empty or non-finite sample")
        return self


class CategoricalProfile(BaseModel):
    """A categorical feature's entry: the known categories and their training shares."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["categorical"]
    count: int
    """Non-missing training values."""
    missing_rate: float
    categories: list[str]
    category_proportions: list[float]

    @model_validator(mode="after")
    def _usable(self) -> CategoricalProfile:
        if len(self.categories) != len(self.category_proportions):
            raise ValueError("categories and proportions do not match")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("duplicate categories")
        return self


def _kind_of(entry: Any) -> str:
    kind = entry.get("kind", KIND_NUMERIC) if isinstance(entry, dict) else getattr(entry, "kind", KIND_NUMERIC)
    return str(kind)


AnyFeatureProfile = Annotated[
    Annotated[FeatureProfile, Tag(KIND_NUMERIC)] | Annotated[CategoricalProfile, Tag(KIND_CATEGORICAL)],
    Discriminator(_kind_of),
]
"""An entry of `features`: its `kind` picks the model; entries without one (versions 1 and 2) are numeric."""


class ReferenceProfile(BaseModel):
    """A decoded `reference_profile.json`; `validate_reference_profile` builds it and names the first problem."""

    model_config = ConfigDict(frozen=True)

    schema_version: int
    feature_names: list[str] = Field(min_length=1)
    features: dict[str, AnyFeatureProfile]
    rows: int | None = None
    bins: int = DEFAULT_BINS
    task: str | None = None
    """The model's task when the profile was built with a schema (None for older profiles)."""
    prediction: FeatureProfile | None = None
    """A regression model's predictions on the training rows, profiled like a numeric feature."""

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, version: Any) -> Any:
        if version not in (_SCHEMA_QUANTILE_EDGES, _SCHEMA_NUMERIC_ONLY, REFERENCE_PROFILE_SCHEMA_VERSION):
            raise ValueError(
                f"reference profile schema_version {version!r} is not {REFERENCE_PROFILE_SCHEMA_VERSION}; "
                "rebuild it with build_reference_profile"
            )
        return version

    @model_validator(mode="after")
    def _every_feature_present(self) -> ReferenceProfile:
        for name in self.feature_names:
            if name not in self.features:
                raise ValueError(f"reference profile has no entry for feature '{name}'")
        return self

    def numeric(self, name: str) -> FeatureProfile:
        """The numeric entry of feature `name` (KeyError when it is absent or categorical)."""
        entry = self.features[name]
        if not isinstance(entry, FeatureProfile):
            raise KeyError(f"feature '{name}' is {entry.kind}, not numeric")
        return entry


def validate_reference_profile(profile: Mapping[str, Any] | ReferenceProfile) -> ReferenceProfile:
    """Check a decoded profile has what the drift check reads, naming the first problem.

    A version-1 profile (bin edges on quantiles, which can sit on tied values) is returned upgraded: its bins
    are rebuilt from its stored sample (all training values up to `DEFAULT_SAMPLE_SIZE` rows). A version-2 profile
    (all numeric, complete) is returned as version 3: numeric features, missing rate 0, no predictions.

    Raises:
        ReferenceProfileError: One line naming the first problem.
    """
    if not isinstance(profile, ReferenceProfile):
        try:
            profile = ReferenceProfile.model_validate(profile)
        except ValidationError as error:
            raise ReferenceProfileError(_first_problem(error)) from None
    if profile.schema_version == _SCHEMA_QUANTILE_EDGES:
        return _upgraded(profile)
    if profile.schema_version == _SCHEMA_NUMERIC_ONLY:
        return profile.model_copy(update={"schema_version": REFERENCE_PROFILE_SCHEMA_VERSION})
    return profile


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    # The kind's tag in the location (features.f1.numeric.std) says nothing a reader needs.
    location = [part for part in first["loc"] if part not in (KIND_NUMERIC, KIND_CATEGORICAL)]
    if "error" in first.get("ctx", {}):  # a model's own check: say whose
        problem = str(first["ctx"]["error"])
        if location[:1] == ["features"] and len(location) == 2:
            return f"reference profile entry for '{location[1]}': {problem}"
        return problem if problem.startswith("reference profile") else f"reference profile: {problem}"
    if location[0] == "schema_version":  # absent: the validator above never ran
        return (
            f"reference profile schema_version None is not {REFERENCE_PROFILE_SCHEMA_VERSION}; "
            "rebuild it with build_reference_profile"
        )
    if location[0] == "feature_names":
        return "reference profile has no feature_names"
    if location[0] == "features" and first["type"] == "union_tag_invalid":
        return (
            f"reference profile entry for '{location[1]}': kind {first['ctx']['tag']!r} is not numeric or categorical"
        )
    if location[0] == "features" and len(location) == 2:
        return f"reference profile has no entry for feature '{location[1]}'"
    if location[0] == "features" and len(location) > 2 and first["type"] == "missing":
        return f"reference profile entry for '{location[1]}' lacks '{location[2]}'"
    return f"reference profile {'.'.join(str(part) for part in location)}: {first['msg']}"


def _upgraded(profile: ReferenceProfile) -> ReferenceProfile:
    import numpy as np

    features: dict[str, Any] = {}
    for name in profile.feature_names:
        entry = profile.numeric(name)  # version 1 knew only numeric features
        sample = np.asarray(entry.sample, dtype=np.float64)
        edges = tie_safe_edges(sample, bins_for(len(sample), profile.bins))
        features[name] = entry.model_copy(
            update={"bin_edges": edges, "bin_proportions": bin_proportions(sample, edges)}
        )
    return profile.model_copy(update={"schema_version": REFERENCE_PROFILE_SCHEMA_VERSION, "features": features})


def write_reference_profile(model_dir: Path, profile: dict[str, Any]) -> Path:
    """Write the profile into a model directory as `REFERENCE_PROFILE_FILENAME` (JSON, not a pickle)."""
    path = model_dir / REFERENCE_PROFILE_FILENAME
    path.write_text(json.dumps(profile, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_reference_profile(location: Path | str, *, filesystem: pafs.FileSystem | None = None) -> ReferenceProfile:
    """Read and validate a profile from a model directory or from the JSON file itself.

    Args:
        location: A local directory or file, a URI pyarrow understands (`s3://bucket/key`), or a path on
            `filesystem`.
        filesystem: A ready pyarrow filesystem (S3 endpoint and credentials set) that `location` is a path on.

    Raises:
        FileNotFoundError: No profile there (models trained before monitoring existed have none).
        ReferenceProfileError: The file is not a usable profile.
    """
    if filesystem is None and "://" not in str(location):
        path = Path(location)
        local = path / REFERENCE_PROFILE_FILENAME if path.is_dir() else path
        if not local.is_file():
            raise FileNotFoundError(
                f"no {REFERENCE_PROFILE_FILENAME} at {path}: retrain the model with the current pipeline to get one"
            )
        file = str(local)
        text = local.read_text(encoding="utf-8")
    else:
        import pyarrow.fs as pafs

        if filesystem is None:
            filesystem, name = pafs.FileSystem.from_uri(str(location))
        else:
            name = str(location)
        file = name.rstrip("/")
        if not file.endswith(".json"):
            file = f"{file}/{REFERENCE_PROFILE_FILENAME}"
        if filesystem.get_file_info(file).type != pafs.FileType.File:
            raise FileNotFoundError(f"no {REFERENCE_PROFILE_FILENAME} at {location}")
        with filesystem.open_input_stream(file) as stream:
            text = stream.read().decode("utf-8")
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as error:
        raise ReferenceProfileError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(profile, dict):
        raise ReferenceProfileError(f"{file} does not hold a JSON object")
    return validate_reference_profile(profile)
