"""Does a window of live inputs still look like the training data? PSI for size, KS for significance.

A feature counts as drifted when BOTH hold:

- the two-sample Kolmogorov-Smirnov test rejects "same distribution" at `ks_alpha / n_features` (Bonferroni:
  with several features tested at once the chance of ANY false alarm stays at most `ks_alpha`), and
- its population stability index is at least `psi_threshold`, so a huge window does not alarm on a shift too
  small to matter.

The window drifts when any feature does. Fewer than `min_records` rows give `not_enough_data`, never a
decision: small windows are noisy and a false alarm would start a retraining run for nothing.
How the defaults were chosen (false-alarm and detection rates): components/monitoring/README.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_PSI_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
)
from components.monitoring.payload_log import read_payload_window
from components.monitoring.reference import bin_proportions, validate_reference_profile

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DriftInputError", "DriftReport", "FeatureDrift", "detect_drift", "population_stability_index",
           "read_payload_window"]  # fmt: skip

PSI_FLOOR = 1e-4
"""Stand-in for an empty bin's share: PSI takes log(p/q) and an empty bin would make it infinite."""


class DriftInputError(ValueError):
    """The window cannot be compared with the profile (missing or non-numeric feature columns)."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's comparison with its reference."""

    name: str
    psi: float
    ks_statistic: float
    ks_pvalue: float
    drifted: bool
    reference_mean: float
    window_mean: float
    mean_shift_in_std: float
    """(window mean - reference mean) / reference std: the shift a person can picture."""
    window_bin_proportions: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check; `status` is what automation acts on."""

    status: str
    """`ok`, `drift` or `not_enough_data` (constants.DRIFT_STATUS_*)."""
    records: int
    min_records: int
    psi_threshold: float
    ks_alpha: float
    ks_alpha_per_feature: float
    features: list[FeatureDrift]
    message: str

    @property
    def drift_detected(self) -> bool:
        """True only for status `drift`: too little data is never a drift."""
        return self.status == DRIFT_STATUS_DRIFT

    @property
    def drifted_features(self) -> list[str]:
        """Names of the features that drifted."""
        return [f.name for f in self.features if f.drifted]

    @property
    def max_psi(self) -> float:
        """Largest PSI over the features (0 with no features)."""
        return max((f.psi for f in self.features), default=0.0)

    @property
    def min_ks_pvalue(self) -> float:
        """Smallest KS p-value over the features (1 with no features)."""
        return min((f.ks_pvalue for f in self.features), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the report artifact and the retraining request embed it)."""
        data = asdict(self)
        data["drift_detected"] = self.drift_detected
        data["drifted_features"] = self.drifted_features
        return data


def population_stability_index(reference: list[float], window: list[float]) -> float:
    """PSI = sum((w - r) * ln(w / r)) over bins, with empty bins floored at `PSI_FLOOR`."""
    total = 0.0
    for r, w in zip(reference, window, strict=True):
        r_, w_ = max(r, PSI_FLOOR), max(w, PSI_FLOOR)
        total += (w_ - r_) * math.log(w_ / r_)
    return total


def detect_drift(
    profile: dict[str, Any],
    window: pd.DataFrame,
    *,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    ks_alpha: float = DEFAULT_KS_ALPHA,
    min_records: int = DEFAULT_MIN_RECORDS,
) -> DriftReport:
    """Compare each profiled feature of a window of logged inputs with the training reference.

    Args:
        profile: From `build_reference_profile` (the model's `reference_profile.json`).
        window: Logged rows (`read_payload_window`); must have a column per profiled feature. Rows with a
            missing value in any feature are not counted.
        psi_threshold: Smallest PSI that counts as a meaningful shift.
        ks_alpha: Family-wise false-alarm level over all features (Bonferroni-split between them).
        min_records: Fewer usable rows than this give status `not_enough_data`.

    Returns:
        A `DriftReport`.

    Raises:
        DriftInputError: A profiled feature is missing from the window or is not numeric.
        ReferenceProfileError: The profile is malformed.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    if not 0 < ks_alpha < 1:
        raise DriftInputError(f"ks_alpha must be in (0, 1), got {ks_alpha}")
    if psi_threshold < 0:
        raise DriftInputError(f"psi_threshold must be >= 0, got {psi_threshold}")
    if min_records < 1:
        raise DriftInputError(f"min_records must be >= 1, got {min_records}")
    validate_reference_profile(profile)
    names: list[str] = profile["feature_names"]
    missing = [n for n in names if n not in window.columns]
    if missing and len(window) > 0:
        raise DriftInputError(f"the logged window has no column for features {missing}; columns: {list(window)}")
    if len(window) == 0:
        values = pd.DataFrame({n: pd.Series(dtype=np.float64) for n in names})
    else:
        try:
            values = window[names].apply(pd.to_numeric, errors="raise").astype(np.float64)
        except (ValueError, TypeError) as error:
            raise DriftInputError(f"feature columns must be numeric: {error}") from error
    values = values[np.isfinite(values).all(axis=1)]
    records = len(values)
    per_feature_alpha = ks_alpha / len(names)
    enough = records >= min_records

    features: list[FeatureDrift] = []
    for name in names:
        ref = profile["features"][name]
        column = values[name].to_numpy()
        if records == 0:
            features.append(FeatureDrift(name, 0.0, 0.0, 1.0, False, ref["mean"], math.nan, math.nan))
            continue
        proportions = bin_proportions(column, ref["bin_edges"])
        psi = population_stability_index(ref["bin_proportions"], proportions)
        ks = stats.ks_2samp(column, np.asarray(ref["sample"], dtype=np.float64))
        ks_statistic, ks_pvalue = float(ks.statistic), float(ks.pvalue)
        drifted = enough and ks_pvalue < per_feature_alpha and psi >= psi_threshold
        window_mean = float(column.mean())
        shift = (window_mean - ref["mean"]) / ref["std"] if ref["std"] > 0 else math.nan
        features.append(
            FeatureDrift(name, psi, ks_statistic, ks_pvalue, drifted, ref["mean"], window_mean, shift, proportions)
        )

    drifted_names = [f.name for f in features if f.drifted]
    if not enough:
        status = DRIFT_STATUS_NOT_ENOUGH_DATA
        message = f"not enough data: {records} usable records in the window, at least {min_records} needed"
    elif drifted_names:
        status = DRIFT_STATUS_DRIFT
        message = f"drift in {len(drifted_names)} of {len(names)} features: {', '.join(drifted_names)}"
    else:
        status = DRIFT_STATUS_OK
        message = f"no drift in {len(names)} features over {records} records"
    return DriftReport(
        status=status,
        records=records,
        min_records=min_records,
        psi_threshold=psi_threshold,
        ks_alpha=ks_alpha,
        ks_alpha_per_feature=per_feature_alpha,
        features=features,
        message=message,
    )
