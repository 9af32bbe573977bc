"""Does a window of live inputs still look like the training data? PSI for size, KS and spread tests for significance.

Per feature, two hypothesis tests against the training reference:

- the two-sample Kolmogorov-Smirnov test ("same distribution"; sees shifts of the centre), and
- the Brown-Forsythe test (Levene's test around the median: "same spread"; sees a wider or narrower feature,
  heavier tails, which KS misses when the centre does not move).

All 2 x n_features p-values share one family-wise level `ks_alpha` through Holm's step-down correction: the chance
of ANY false alarm in a window stays at most `ks_alpha`, and Holm rejects everything Bonferroni rejects (and
sometimes more). A feature counts as drifted when

- KS rejects AND its population stability index is at least `psi_threshold`, or
- the spread test rejects AND its standard deviation changed by at least the factor `std_ratio_threshold`
  (either way),

so a huge window does not alarm on a change too small to matter. The window drifts when any feature does.
Fewer than `min_records` rows give `not_enough_data`, never a decision: small windows are noisy and a false
alarm would start a retraining run for nothing.
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
    DEFAULT_STD_RATIO_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
)
from components.reference_profile import ReferenceProfile, bin_proportions, validate_reference_profile

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import pandas as pd

__all__ = ["DriftInputError", "DriftReport", "FeatureDrift", "detect_drift", "holm_adjusted",
           "population_stability_index"]  # fmt: skip

CORRECTION = "holm"
PSI_FLOOR = 1e-4
"""Stand-in for an empty bin's share when no counts are known: PSI takes log(p/q), infinite for an empty bin."""
PSI_PSEUDO_COUNT = 0.5
"""Added to every bin's count before PSI (Jeffreys' prior): an empty bin in a 200-row window is a share of
0.25%, not 0.01%, so one empty bin cannot dominate the index."""
SPREAD_CENTER = "median"
"""Brown-Forsythe: Levene's test of absolute deviations from the median, which keeps its level on skewed and
heavy-tailed data (around the mean, Levene's original, it does not)."""
REASON_DISTRIBUTION = "distribution"
"""KS rejected and PSI reached the threshold."""
REASON_SPREAD = "spread"
"""The spread test rejected and the standard deviation changed by the threshold factor."""


class DriftInputError(ValueError):
    """The window cannot be compared with the profile (missing or non-numeric feature columns, bad thresholds)."""


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
    std_ratio: float = math.nan
    """Window standard deviation / reference standard deviation (1 = same spread)."""
    spread_statistic: float = 0.0
    spread_pvalue: float = 1.0
    """Brown-Forsythe test of equal spread (Levene around the median), unadjusted."""
    ks_pvalue_adjusted: float = 1.0
    spread_pvalue_adjusted: float = 1.0
    """Holm-adjusted p-values: a test rejects when its adjusted p-value is at most the family-wise level."""
    reasons: list[str] = field(default_factory=list)
    """Why the feature drifted: `distribution` and/or `spread` (empty when it did not)."""


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check; `status` is what automation acts on."""

    status: str
    """`ok`, `drift` or `not_enough_data` (constants.DRIFT_STATUS_*)."""
    records: int
    min_records: int
    psi_threshold: float
    ks_alpha: float
    """Family-wise false-alarm level over all tests of all features."""
    features: list[FeatureDrift]
    message: str
    std_ratio_threshold: float = DEFAULT_STD_RATIO_THRESHOLD
    correction: str = CORRECTION

    @property
    def evaluated(self) -> bool:
        """False under `not_enough_data`: the numbers are shown, but no feature was judged."""
        return self.status != DRIFT_STATUS_NOT_ENOUGH_DATA

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

    @property
    def min_spread_pvalue(self) -> float:
        """Smallest spread-test p-value over the features (1 with no features)."""
        return min((f.spread_pvalue for f in self.features), default=1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the report artifact and the retraining request embed it); NaN becomes null."""
        data = _json_safe(asdict(self))
        data["evaluated"] = self.evaluated
        data["drift_detected"] = self.drift_detected
        data["drifted_features"] = self.drifted_features
        return data


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def population_stability_index(
    reference: Sequence[float],
    window: Sequence[float],
    *,
    reference_count: int | None = None,
    window_count: int | None = None,
) -> float:
    """PSI = sum((w - r) * ln(w / r)) over bins.

    With the row counts behind the shares, every bin's count gets `PSI_PSEUDO_COUNT` added first (smoothing);
    without them, empty bins are floored at `PSI_FLOOR`.
    """

    def shares(proportions: Sequence[float], count: int | None) -> list[float]:
        if count is None:
            return [max(p, PSI_FLOOR) for p in proportions]
        total = count + PSI_PSEUDO_COUNT * len(proportions)
        return [(p * count + PSI_PSEUDO_COUNT) / total for p in proportions]

    r_shares, w_shares = shares(reference, reference_count), shares(window, window_count)
    return sum((w - r) * math.log(w / r) for r, w in zip(r_shares, w_shares, strict=True))


def holm_adjusted(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (reject a test when its value is <= alpha).

    The smallest p-value is multiplied by m, the next by m - 1, ...; each adjusted value is at least the one
    before it (and at most 1). Controls the family-wise error like Bonferroni (which multiplies all by m) and
    rejects at least as much.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def check_thresholds(*, psi_threshold: float, ks_alpha: float, min_records: int, std_ratio_threshold: float) -> None:
    """Refuse thresholds that make no sense, in one line (what the pipeline checks before reading data)."""
    if not 0 < ks_alpha < 1:
        raise DriftInputError(f"ks_alpha must be in (0, 1), got {ks_alpha}")
    if psi_threshold < 0:
        raise DriftInputError(f"psi_threshold must be >= 0, got {psi_threshold}")
    if min_records < 1:
        raise DriftInputError(f"min_records must be >= 1, got {min_records}")
    if not std_ratio_threshold >= 1:
        raise DriftInputError(f"std_ratio_threshold must be >= 1 (a factor either way), got {std_ratio_threshold}")


def _spread(column: Any, sample: Any, reference_std: float) -> tuple[float, float, float]:
    """(std ratio, Brown-Forsythe statistic, p-value); no evidence (p = 1) when either side has no spread."""
    import numpy as np
    from scipy import stats

    window_std = float(np.std(column, ddof=1)) if len(column) > 1 else math.nan
    ratio = window_std / reference_std if reference_std > 0 else (math.inf if window_std > 0 else math.nan)
    if len(column) < 2 or (np.ptp(column) == 0 and np.ptp(sample) == 0):
        return ratio, 0.0, 1.0
    result = stats.levene(column, sample, center=SPREAD_CENTER)
    statistic, pvalue = float(result.statistic), float(result.pvalue)
    return ratio, (statistic if math.isfinite(statistic) else 0.0), (pvalue if math.isfinite(pvalue) else 1.0)


def detect_drift(
    profile: Mapping[str, Any] | ReferenceProfile,
    window: pd.DataFrame,
    *,
    psi_threshold: float = DEFAULT_PSI_THRESHOLD,
    ks_alpha: float = DEFAULT_KS_ALPHA,
    min_records: int = DEFAULT_MIN_RECORDS,
    std_ratio_threshold: float = DEFAULT_STD_RATIO_THRESHOLD,
) -> DriftReport:
    """Compare each profiled feature of a window of logged inputs with the training reference.

    Args:
        profile: From `load_reference_profile`, or the dict `build_reference_profile` returns (validated here).
        window: Logged rows (`read_payload_window`); must have a column per profiled feature. Rows with a
            missing value in any feature are not counted.
        psi_threshold: Smallest PSI that counts as a meaningful change of the distribution.
        ks_alpha: Family-wise false-alarm level over all tests (KS and spread, every feature; Holm).
        min_records: Fewer usable rows than this give status `not_enough_data`.
        std_ratio_threshold: Smallest factor by which the standard deviation must grow (or shrink) for a
            significant spread test to count.

    Returns:
        A `DriftReport`.

    Raises:
        DriftInputError: A profiled feature is missing from the window or is not numeric, or a bad threshold.
        ReferenceProfileError: The profile is malformed.
    """
    import numpy as np
    import pandas as pd
    from scipy import stats

    check_thresholds(
        psi_threshold=psi_threshold, ks_alpha=ks_alpha, min_records=min_records, std_ratio_threshold=std_ratio_threshold
    )
    profile = validate_reference_profile(profile)
    names = profile.feature_names
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
    enough = records >= min_records

    measured: list[dict[str, Any]] = []
    for name in names:
        ref = profile.features[name]
        column = values[name].to_numpy()
        if records == 0:
            empty = {"psi": 0.0, "ks_statistic": 0.0, "ks_pvalue": 1.0, "window_mean": math.nan}
            measured.append({"name": name, "reference_mean": ref.mean, "mean_shift_in_std": math.nan, **empty})
            continue
        sample = np.asarray(ref.sample, dtype=np.float64)
        proportions = bin_proportions(column, ref.bin_edges)
        psi = population_stability_index(
            ref.bin_proportions,
            proportions,
            reference_count=ref.count if ref.count is not None else len(sample),
            window_count=records,
        )
        ks = stats.ks_2samp(column, sample)
        std_ratio, spread_statistic, spread_pvalue = _spread(column, sample, ref.std)
        window_mean = float(column.mean())
        measured.append(
            {
                "name": name,
                "psi": psi,
                "ks_statistic": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "reference_mean": ref.mean,
                "window_mean": window_mean,
                "mean_shift_in_std": (window_mean - ref.mean) / ref.std if ref.std > 0 else math.nan,
                "window_bin_proportions": proportions,
                "std_ratio": std_ratio,
                "spread_statistic": spread_statistic,
                "spread_pvalue": spread_pvalue,
            }
        )

    # One family: every feature's KS and spread p-values.
    adjusted = holm_adjusted([m["ks_pvalue"] for m in measured] + [m.get("spread_pvalue", 1.0) for m in measured])
    features: list[FeatureDrift] = []
    for i, m in enumerate(measured):
        ks_adjusted, spread_adjusted = adjusted[i], adjusted[len(measured) + i]
        ratio = m.get("std_ratio", math.nan)
        reasons = []
        if enough and ks_adjusted <= ks_alpha and m["psi"] >= psi_threshold:
            reasons.append(REASON_DISTRIBUTION)
        spread_changed = ratio >= std_ratio_threshold or ratio <= 1 / std_ratio_threshold  # False for NaN
        if enough and spread_adjusted <= ks_alpha and spread_changed:
            reasons.append(REASON_SPREAD)
        features.append(
            FeatureDrift(
                **m, drifted=bool(reasons), ks_pvalue_adjusted=ks_adjusted, spread_pvalue_adjusted=spread_adjusted,
                reasons=reasons,
            )
        )  # fmt: skip

    drifted = [f for f in features if f.drifted]
    if not enough:
        status = DRIFT_STATUS_NOT_ENOUGH_DATA
        message = f"not enough data: {records} usable records in the window, at least {min_records} needed"
    elif drifted:
        status = DRIFT_STATUS_DRIFT
        named = ", ".join(f"{f.name} [{'+'.join(f.reasons)}]" for f in drifted)
        message = f"drift in {len(drifted)} of {len(names)} features: {named}"
    else:
        status = DRIFT_STATUS_OK
        message = f"no drift in {len(names)} features over {records} records"
    return DriftReport(
        status=status,
        records=records,
        min_records=min_records,
        psi_threshold=psi_threshold,
        ks_alpha=ks_alpha,
        features=features,
        message=message,
        std_ratio_threshold=std_ratio_threshold,
    )
