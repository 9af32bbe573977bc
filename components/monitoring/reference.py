"""The training data's reference profile: what "normal" inputs look like, stored beside the model.

Train writes `build_reference_profile(features)` as `constants.REFERENCE_PROFILE_FILENAME` in the model
directory; the monitoring pipeline compares logged traffic with it. It holds, per feature, quantile bin edges
and proportions (for PSI) and a bounded random sample (for the two-sample KS test), so the training data itself
is not needed at monitoring time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import REFERENCE_PROFILE_FILENAME, REFERENCE_PROFILE_SCHEMA_VERSION

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

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


def validate_reference_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded profile has what the drift check reads, naming the first problem.

    A version-1 profile (bin edges on quantiles, which can sit on tied values) is returned upgraded: its bins
    are rebuilt from its stored sample (all training values up to `DEFAULT_SAMPLE_SIZE` rows).
    """
    version = profile.get("schema_version")
    if version not in (_SCHEMA_QUANTILE_EDGES, REFERENCE_PROFILE_SCHEMA_VERSION):
        raise ReferenceProfileError(
            f"reference profile schema_version {version!r} is not {REFERENCE_PROFILE_SCHEMA_VERSION}; "
            "rebuild it with build_reference_profile"
        )
    names = profile.get("feature_names")
    if not isinstance(names, list) or not names:
        raise ReferenceProfileError("reference profile has no feature_names")
    for name in names:
        entry = profile.get("features", {}).get(name)
        if not isinstance(entry, dict):
            raise ReferenceProfileError(f"reference profile has no entry for feature '{name}'")
        for key in ("bin_edges", "bin_proportions", "sample", "mean", "std"):
            if key not in entry:
                raise ReferenceProfileError(f"reference profile entry for '{name}' lacks '{key}'")
        if len(entry["bin_proportions"]) != len(entry["bin_edges"]) + 1:
            raise ReferenceProfileError(f"reference profile entry for '{name}': bins and edges do not match")
        if not entry["sample"] or not all(math.isfinite(v) for v in entry["sample"]):
            raise ReferenceProfileError(f"reference profile entry for '{name}' has an empty or non-finite sample")
    return _upgraded(profile) if version == _SCHEMA_QUANTILE_EDGES else profile


def _upgraded(profile: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    features = {}
    for name in profile["feature_names"]:
        entry = profile["features"][name]
        sample = np.asarray(entry["sample"], dtype=np.float64)
        edges = tie_safe_edges(sample, bins_for(len(sample), int(profile.get("bins", DEFAULT_BINS))))
        features[name] = {**entry, "bin_edges": edges, "bin_proportions": bin_proportions(sample, edges)}
    return {**profile, "schema_version": REFERENCE_PROFILE_SCHEMA_VERSION, "features": features}


def write_reference_profile(model_dir: Path, profile: dict[str, Any]) -> Path:
    """Write the profile into a model directory as `REFERENCE_PROFILE_FILENAME` (JSON, not a pickle)."""
    path = model_dir / REFERENCE_PROFILE_FILENAME
    path.write_text(json.dumps(profile, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_reference_profile(path: Path) -> dict[str, Any]:
    """Read and validate a profile from a model directory or from the JSON file itself.

    Raises:
        FileNotFoundError: No profile there (models trained before monitoring existed have none).
        ReferenceProfileError: The file is not a usable profile.
    """
    file = path / REFERENCE_PROFILE_FILENAME if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no {REFERENCE_PROFILE_FILENAME} at {path}: retrain the model with the current pipeline to get one"
        )
    try:
        profile = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ReferenceProfileError(f"{file} is not valid JSON: {error}") from error
    if not isinstance(profile, dict):
        raise ReferenceProfileError(f"{file} does not hold a JSON object")
    return validate_reference_profile(profile)


def load_reference_profile_from_uri(model_uri: str, *, s3_endpoint: str = "") -> dict[str, Any]:
    """Read the profile from a model directory given as a local path or an `s3://` / `minio://` URI."""
    from components.monitoring.payload_log import open_filesystem

    filesystem, path = open_filesystem(model_uri, s3_endpoint=s3_endpoint)
    if filesystem is None and "://" not in path:
        return load_reference_profile(Path(path))
    import pyarrow.fs as pafs

    if filesystem is None:
        filesystem, path = pafs.FileSystem.from_uri(path)
    file = path.rstrip("/")
    if not file.endswith(".json"):
        file = f"{file}/{REFERENCE_PROFILE_FILENAME}"
    if filesystem.get_file_info(file).type != pafs.FileType.File:
        raise FileNotFoundError(f"no {REFERENCE_PROFILE_FILENAME} at {model_uri}")
    with filesystem.open_input_stream(file) as stream:
        profile = json.loads(stream.read().decode("utf-8"))
    return validate_reference_profile(profile)
