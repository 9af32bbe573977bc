"""The training data's reference profile: what "normal" inputs look like, stored beside the model.

Train writes `build_reference_profile(features)` as `constants.REFERENCE_PROFILE_FILENAME` in the model
directory; the monitoring pipeline (`components.monitoring`) compares logged traffic with it. It holds, per
feature, quantile bin edges and proportions (for PSI) and a bounded random sample (for the two-sample KS test),
so the training data itself is not needed at monitoring time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.constants import REFERENCE_PROFILE_FILENAME, REFERENCE_PROFILE_SCHEMA_VERSION

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow.fs as pafs

DEFAULT_BINS = 10
"""Deciles: the usual PSI binning; each bin holds ~10% of the training rows."""
DEFAULT_SAMPLE_SIZE = 5000
"""KS needs the raw values; 5000 keeps the JSON small (~100 KB per feature at most) and the test sharp."""
MIN_REFERENCE_ROWS = 20
_SCHEMA_QUANTILE_EDGES = 1
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
    features: pd.DataFrame, *, bins: int = DEFAULT_BINS, sample_size: int = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> dict[str, Any]:
    """Summarize each numeric feature of the training data for later drift checks.

    Args:
        features: Training features only (no label column), one column per model input.
        bins: Quantile bins for PSI (fewer if a feature has fewer distinct values, or the data fewer than
            `MIN_ROWS_PER_BIN` rows per bin).
        sample_size: Most raw values kept per feature for the KS test.
        seed: Seed of the sample, so the same data gives the same profile.

    Returns:
        A JSON-able dict: `schema_version`, `feature_names`, `rows`, and `features[name]` with `count`, `mean`,
        `std`, `min`, `max`, `bin_edges` (inner edges), `bin_proportions` and `sample`.

    Raises:
        ReferenceProfileError: Too few rows, a non-numeric column, or a column with missing values.
    """
    import numpy as np
    import pandas as pd

    if len(features) < MIN_REFERENCE_ROWS:
        raise ReferenceProfileError(f"need at least {MIN_REFERENCE_ROWS} rows to profile, got {len(features)}")
    if bins < 2:
        raise ReferenceProfileError(f"bins must be >= 2, got {bins}")
    rng = np.random.default_rng(seed)
    profile: dict[str, Any] = {
        "schema_version": REFERENCE_PROFILE_SCHEMA_VERSION,
        "feature_names": [str(c) for c in features.columns],
        "rows": len(features),
        "bins": bins,
        "features": {},
    }
    for column in features.columns:
        if not pd.api.types.is_numeric_dtype(features[column]):
            raise ReferenceProfileError(f"feature '{column}' is {features[column].dtype}, not numeric")
        values = features[column].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise ReferenceProfileError(f"feature '{column}' has missing or infinite values")
        edges = tie_safe_edges(values, bins_for(len(values), bins))
        sample = values if len(values) <= sample_size else rng.choice(values, size=sample_size, replace=False)
        profile["features"][str(column)] = {
            "count": len(values),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)),
            "min": float(values.min()),
            "max": float(values.max()),
            "bin_edges": edges,
            "bin_proportions": bin_proportions(values, edges),
            "sample": [float(v) for v in np.sort(sample)],
        }
    return profile


class FeatureProfile(BaseModel):
    """One feature's entry: what PSI (bins), KS and the spread test (sample, std) read."""

    model_config = ConfigDict(frozen=True)

    mean: float
    std: float
    bin_edges: list[float]
    bin_proportions: list[float]
    sample: list[float]
    count: int | None = None
    min: float | None = None
    max: float | None = None


class ReferenceProfile(BaseModel):
    """A decoded `reference_profile.json`; `validate_reference_profile` builds it and names the first problem."""

    model_config = ConfigDict(frozen=True)

    schema_version: int
    feature_names: list[str] = Field(min_length=1)
    features: dict[str, FeatureProfile]
    rows: int | None = None
    bins: int = DEFAULT_BINS

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, version: Any) -> Any:
        if version not in (_SCHEMA_QUANTILE_EDGES, REFERENCE_PROFILE_SCHEMA_VERSION):
            raise ValueError(
                f"reference profile schema_version {version!r} is not {REFERENCE_PROFILE_SCHEMA_VERSION}; "
                "rebuild it with build_reference_profile"
            )
        return version

    @model_validator(mode="after")
    def _every_feature_usable(self) -> ReferenceProfile:
        for name in self.feature_names:
            entry = self.features.get(name)
            if entry is None:
                raise ValueError(f"reference profile has no entry for feature '{name}'")
            if len(entry.bin_proportions) != len(entry.bin_edges) + 1:
                raise ValueError(f"reference profile entry for '{name}': bins and edges do not match")
            if not entry.sample or not all(math.isfinite(v) for v in entry.sample):
                raise ValueError(f"reference profile entry for '{name}' has an empty or non-finite sample")
        return self


def validate_reference_profile(profile: Mapping[str, Any] | ReferenceProfile) -> ReferenceProfile:
    """Check a decoded profile has what the drift check reads, naming the first problem.

    A version-1 profile (bin edges on quantiles, which can sit on tied values) is returned upgraded: its bins
    are rebuilt from its stored sample (all training values up to `DEFAULT_SAMPLE_SIZE` rows).

    Raises:
        ReferenceProfileError: One line naming the first problem.
    """
    if not isinstance(profile, ReferenceProfile):
        try:
            profile = ReferenceProfile.model_validate(profile)
        except ValidationError as error:
            raise ReferenceProfileError(_first_problem(error)) from None
    return _upgraded(profile) if profile.schema_version == _SCHEMA_QUANTILE_EDGES else profile


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    if "error" in first.get("ctx", {}):  # the model's own check already says it in full
        return str(first["ctx"]["error"])
    location = first["loc"]
    if location[0] == "schema_version":  # absent: the validator above never ran
        return (
            f"reference profile schema_version None is not {REFERENCE_PROFILE_SCHEMA_VERSION}; "
            "rebuild it with build_reference_profile"
        )
    if location[0] == "feature_names":
        return "reference profile has no feature_names"
    if location[0] == "features" and len(location) == 2:
        return f"reference profile has no entry for feature '{location[1]}'"
    if location[0] == "features" and len(location) > 2 and first["type"] == "missing":
        return f"reference profile entry for '{location[1]}' lacks '{location[2]}'"
    return f"reference profile {'.'.join(str(part) for part in location)}: {first['msg']}"


def _upgraded(profile: ReferenceProfile) -> ReferenceProfile:
    import numpy as np

    features = {}
    for name in profile.feature_names:
        entry = profile.features[name]
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
