"""Does a window of live inputs still look like the training data? Per feature kind, a test and a size of change.

Numeric features, against the training reference:

- the two-sample Kolmogorov-Smirnov test ("same distribution"; sees shifts of the centre), and
- the Brown-Forsythe test (Levene's test around the median: "same spread"; sees a wider or narrower feature,
  heavier tails, which KS misses when the centre does not move).

Categorical features: the chi-square test of homogeneity of the category counts, training against window
(categories too rare for the test, expected count below `CHI2_MIN_EXPECTED`, are pooled into one cell), and PSI
over the same cells. Values of categories training never saw are counted apart, as the unseen share.

Every feature: the missing rate, training against window (Fisher's exact test), when either side has missing
values. A regression model's predictions, logged beside the inputs, are checked like a numeric feature against its
predictions on the training rows.

All p-values of a window share one family-wise level `ks_alpha` through Holm's step-down correction: the chance of
ANY false alarm in a window stays at most `ks_alpha`, and Holm rejects everything Bonferroni rejects (and
sometimes more). A feature counts as drifted for each reason that holds:

- `distribution`: KS (numeric) or chi-square (categorical) rejects AND PSI is at least `psi_threshold`;
- `spread`: the spread test rejects AND the standard deviation changed by at least the factor
  `std_ratio_threshold` (either way);
- `missing`: the missing-rate test rejects AND the rate moved by at least `missing_rate_threshold`;
- `unseen`: at least `unseen_threshold` of the feature's logged values are categories training never saw (no test:
  such a value is new by definition),

so a huge window does not alarm on a change too small to matter. The window drifts when any feature does, or the
predictions do. Fewer than `min_records` rows give `not_enough_data`, never a decision: small windows are noisy and
a false alarm would start a retraining run for nothing.
How the defaults were chosen (false-alarm and detection rates): components/monitoring/README.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_MISSING_RATE_THRESHOLD,
    DEFAULT_PSI_THRESHOLD,
    DEFAULT_STD_RATIO_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    PAYLOAD_COLUMN_PREDICTION,
)
from components.reference_profile import (
    KIND_CATEGORICAL,
    KIND_NUMERIC,
    CategoricalProfile,
    FeatureProfile,
    ReferenceProfile,
    bin_proportions,
    category_labels,
    validate_reference_profile,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np
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
CHI2_MIN_EXPECTED = 5.0
"""Cochran's rule: the chi-square approximation holds when every cell expects at least 5 counts. Rarer categories
are pooled into one cell (and that cell into the next rarest while it is still short)."""
TOP_CATEGORIES = 5
"""Categories listed per feature in the report: those whose share moved most."""
TOP_UNSEEN = 10
"""Unseen categories listed per feature in the report, most frequent first."""
PREDICTION_NAME = PAYLOAD_COLUMN_PREDICTION
"""The name a regression model's predictions go by in the report."""
REASON_DISTRIBUTION = "distribution"
"""KS (numeric) or chi-square (categorical) rejected and PSI reached the threshold."""
REASON_SPREAD = "spread"
"""The spread test rejected and the standard deviation changed by the threshold factor."""
REASON_MISSING = "missing"
"""The missing-rate test rejected and the rate moved by the threshold."""
REASON_UNSEEN = "unseen"
"""The share of values in categories training never saw reached the threshold."""


class DriftInputError(ValueError):
    """The window cannot be compared with the profile (missing or non-numeric feature columns, bad thresholds)."""


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's (or the predictions') comparison with its reference."""

    name: str
    psi: float
    """Over the PSI bins (numeric) or the pooled category cells (categorical)."""
    ks_statistic: float
    ks_pvalue: float
    drifted: bool
    reference_mean: float
    window_mean: float
    mean_shift_in_std: float
    """(window mean - reference mean) / reference std: the shift a person can picture."""
    window_bin_proportions: list[float] = field(default_factory=list)
    """Numeric: share of the window's values per PSI bin. Categorical: share of its known values per category, in
    the profile's category order."""
    std_ratio: float = math.nan
    """Window standard deviation / reference standard deviation (1 = same spread)."""
    spread_statistic: float = 0.0
    spread_pvalue: float = 1.0
    """Brown-Forsythe test of equal spread (Levene around the median), unadjusted."""
    ks_pvalue_adjusted: float = 1.0
    spread_pvalue_adjusted: float = 1.0
    """Holm-adjusted p-values: a test rejects when its adjusted p-value is at most the family-wise level."""
    reasons: list[str] = field(default_factory=list)
    """Why the feature drifted: `distribution`, `spread`, `missing`, `unseen` (empty when it did not)."""
    kind: str = KIND_NUMERIC
    """`numeric` or `categorical` (the predictions are numeric)."""
    window_count: int = 0
    """Non-missing values of the feature in the window."""
    missing_rate_reference: float = 0.0
    missing_rate_window: float = math.nan
    missing_pvalue: float = 1.0
    missing_pvalue_adjusted: float = 1.0
    """Fisher's exact test of the missing rate, training against window (1 when neither side has missing values)."""
    chi2_statistic: float = 0.0
    chi2_pvalue: float = 1.0
    chi2_pvalue_adjusted: float = 1.0
    chi2_cells: int = 0
    """Categorical: the chi-square test of homogeneity over this many cells (after pooling rare categories)."""
    unseen_share: float = 0.0
    """Categorical: share of the window's non-missing values in categories training never saw."""
    unseen_count: int = 0
    unseen_categories: list[dict[str, Any]] = field(default_factory=list)
    """Categorical: `{"category", "count"}` of the most frequent unseen categories, at most `TOP_UNSEEN`."""
    category_changes: list[dict[str, Any]] = field(default_factory=list)
    """Categorical: `{"category", "reference_share", "window_share"}` for the categories whose share (of known values)
    moved most, at most `TOP_CATEGORIES`."""

    @property
    def missing_rate_change(self) -> float:
        """Window missing rate - training missing rate (NaN with no window)."""
        return self.missing_rate_window - self.missing_rate_reference


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
    missing_rate_threshold: float = DEFAULT_MISSING_RATE_THRESHOLD
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD
    prediction: FeatureDrift | None = None
    """A regression model's predictions against those on its training rows (None for other profiles)."""
    tests: int = 0
    """How many p-values shared the Holm correction."""

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
        """Names of the features that drifted (the predictions are not a feature: see `prediction_drifted`)."""
        return [f.name for f in self.features if f.drifted]

    @property
    def prediction_drifted(self) -> bool:
        """True when a regression model's predictions drifted."""
        return self.prediction is not None and self.prediction.drifted

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

    @property
    def min_chi2_pvalue(self) -> float:
        """Smallest chi-square p-value over the categorical features (1 without any)."""
        return min((f.chi2_pvalue for f in self.features), default=1.0)

    @property
    def max_unseen_share(self) -> float:
        """Largest unseen-category share over the categorical features (0 without any)."""
        return max((f.unseen_share for f in self.features), default=0.0)

    @property
    def max_missing_rate_change(self) -> float:
        """Largest absolute change of a feature's missing rate (0 with no window)."""
        changes = [abs(f.missing_rate_change) for f in self.features]
        return max((c for c in changes if math.isfinite(c)), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the report artifact and the retraining request embed it); NaN becomes null."""
        data = _json_safe(asdict(self))
        data["evaluated"] = self.evaluated
        data["drift_detected"] = self.drift_detected
        data["drifted_features"] = self.drifted_features
        data["prediction_drifted"] = self.prediction_drifted
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


def check_thresholds(
    *,
    psi_threshold: float,
    ks_alpha: float,
    min_records: int,
    std_ratio_threshold: float,
    missing_rate_threshold: float = DEFAULT_MISSING_RATE_THRESHOLD,
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD,
) -> None:
    """Refuse thresholds that make no sense, in one line (what the pipeline checks before reading data)."""
    if not 0 < ks_alpha < 1:
        raise DriftInputError(f"ks_alpha must be in (0, 1), got {ks_alpha}")
    if psi_threshold < 0:
        raise DriftInputError(f"psi_threshold must be >= 0, got {psi_threshold}")
    if min_records < 1:
        raise DriftInputError(f"min_records must be >= 1, got {min_records}")
    if not std_ratio_threshold >= 1:
        raise DriftInputError(f"std_ratio_threshold must be >= 1 (a factor either way), got {std_ratio_threshold}")
    if not 0 <= missing_rate_threshold <= 1:
        raise DriftInputError(
            f"missing_rate_threshold must be in [0, 1] (a change of the missing share), got {missing_rate_threshold}"
        )
    if not 0 < unseen_threshold <= 1:
        raise DriftInputError(f"unseen_threshold must be in (0, 1] (a share of the values), got {unseen_threshold}")


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
    missing_rate_threshold: float = DEFAULT_MISSING_RATE_THRESHOLD,
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD,
) -> DriftReport:
    """Compare each profiled feature of a window of logged inputs, and a regression model's predictions, with training.

    Args:
        profile: From `load_reference_profile`, or the dict `build_reference_profile` returns (validated here).
        window: Logged rows (`read_payload_window`); must have a column per profiled feature. A missing value
            (null, NaN) counts toward the feature's missing rate and is left out of its distribution tests. With a
            regression profile, the `prediction` column is read as numbers.
        psi_threshold: Smallest PSI that counts as a meaningful change of the distribution.
        ks_alpha: Family-wise false-alarm level over all tests (every feature and the predictions; Holm).
        min_records: Fewer rows than this give status `not_enough_data`.
        std_ratio_threshold: Smallest factor by which the standard deviation must grow (or shrink) for a
            significant spread test to count.
        missing_rate_threshold: Smallest change of a feature's missing rate (a share, either way) for a
            significant missing-rate test to count.
        unseen_threshold: Share of a categorical feature's logged values in categories training never saw from
            which the feature counts as drifted.

    Returns:
        A `DriftReport`.

    Raises:
        DriftInputError: A profiled feature is missing from the window, a numeric one is not numeric, or a bad
            threshold.
        ReferenceProfileError: The profile is malformed.
    """
    import numpy as np
    import pandas as pd

    check_thresholds(
        psi_threshold=psi_threshold, ks_alpha=ks_alpha, min_records=min_records,
        std_ratio_threshold=std_ratio_threshold, missing_rate_threshold=missing_rate_threshold,
        unseen_threshold=unseen_threshold,
    )  # fmt: skip
    profile = validate_reference_profile(profile)
    names = profile.feature_names
    records = len(window)
    absent = [n for n in names if n not in window.columns]
    if absent and records > 0:
        raise DriftInputError(f"the logged window has no column for features {absent}; columns: {list(window)}")
    enough = records >= min_records

    measured: list[dict[str, Any]] = []
    for name in names:
        entry = profile.features[name]
        column = window[name] if records else pd.Series([], dtype=object)
        if isinstance(entry, CategoricalProfile):
            labels = category_labels(column)
            present = labels[labels.notna()]
            m = _categorical_measure(name, entry, present)
        else:
            values = _numeric_values(name, column)
            present = values[~np.isnan(values)]
            m = _numeric_measure(name, entry, present)
        missing = _missing_measure(entry, reference_rows=profile.rows, window_rows=records, present=len(present))
        if missing.pop("_tested", False):
            m["_tests"].append("missing_pvalue")
        measured.append(m | missing)
    predicted: dict[str, Any] | None = None
    if profile.prediction is not None:
        # Request-only logging has no predictions: then there is nothing to compare (no test, no alarm).
        raw = window[PAYLOAD_COLUMN_PREDICTION] if PAYLOAD_COLUMN_PREDICTION in window.columns else pd.Series([])
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        predicted = _numeric_measure(PREDICTION_NAME, profile.prediction, values[np.isfinite(values)])

    # One family: every test that ran, of every feature and of the predictions.
    family = [(m, key) for m in [*measured, *([predicted] if predicted else [])] for key in m.pop("_tests")]
    for (m, key), value in zip(family, holm_adjusted([m[key] for m, key in family]), strict=True):
        m[f"{key}_adjusted"] = value
    thresholds = {"psi": psi_threshold, "alpha": ks_alpha, "std_ratio": std_ratio_threshold,
                  "missing": missing_rate_threshold, "unseen": unseen_threshold}  # fmt: skip
    features = [_judged(m, thresholds, enough) for m in measured]
    prediction = _judged(predicted, thresholds, enough) if predicted is not None else None

    drifted = [f for f in features if f.drifted]
    predictions_drifted = prediction is not None and prediction.drifted
    if not enough:
        status = DRIFT_STATUS_NOT_ENOUGH_DATA
        message = f"not enough data: {records} records in the window, at least {min_records} needed"
    elif drifted or predictions_drifted:
        status = DRIFT_STATUS_DRIFT
        named = ", ".join(f"{f.name} [{'+'.join(f.reasons)}]" for f in drifted)
        message = f"drift in {len(drifted)} of {len(names)} features: {named}" if drifted else "no feature drifted"
        if prediction is not None and prediction.drifted:
            message += f"; the predictions drifted [{'+'.join(prediction.reasons)}]"
    else:
        status = DRIFT_STATUS_OK
        checked = f"{len(names)} features" + (" and the predictions" if prediction is not None else "")
        message = f"no drift in {checked} over {records} records"
    return DriftReport(
        status=status,
        records=records,
        min_records=min_records,
        psi_threshold=psi_threshold,
        ks_alpha=ks_alpha,
        features=features,
        message=message,
        std_ratio_threshold=std_ratio_threshold,
        missing_rate_threshold=missing_rate_threshold,
        unseen_threshold=unseen_threshold,
        prediction=prediction,
        tests=len(family),
    )


def _numeric_values(name: str, column: pd.Series) -> np.ndarray:
    """A logged numeric column as float64, missing (null, NaN, infinite) as NaN."""
    import numpy as np
    import pandas as pd

    try:
        values = pd.to_numeric(column, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as error:
        raise DriftInputError(f"feature columns must be numeric: '{name}': {error}") from error
    values[~np.isfinite(values)] = np.nan
    return values


def _numeric_measure(name: str, ref: FeatureProfile, column: np.ndarray) -> dict[str, Any]:
    """PSI, KS and the spread test of the window's present values (no tests without values on both sides)."""
    import numpy as np
    from scipy import stats

    m: dict[str, Any] = {"name": name, "kind": KIND_NUMERIC, "window_count": len(column),
                         "reference_mean": ref.mean, "_tests": []}  # fmt: skip
    if len(column) == 0 or not ref.sample:
        return m | {"psi": 0.0, "ks_statistic": 0.0, "ks_pvalue": 1.0, "window_mean": math.nan,
                    "mean_shift_in_std": math.nan}  # fmt: skip
    sample = np.asarray(ref.sample, dtype=np.float64)
    proportions = bin_proportions(column, ref.bin_edges)
    psi = population_stability_index(
        ref.bin_proportions,
        proportions,
        reference_count=ref.count if ref.count is not None else len(sample),
        window_count=len(column),
    )
    ks = stats.ks_2samp(column, sample)
    std_ratio, spread_statistic, spread_pvalue = _spread(column, sample, ref.std)
    window_mean = float(column.mean())
    return m | {
        "psi": psi,
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "window_mean": window_mean,
        "mean_shift_in_std": (window_mean - ref.mean) / ref.std if ref.std > 0 else math.nan,
        "window_bin_proportions": proportions,
        "std_ratio": std_ratio,
        "spread_statistic": spread_statistic,
        "spread_pvalue": spread_pvalue,
        "_tests": ["ks_pvalue", "spread_pvalue"],
    }


def _categorical_measure(name: str, ref: CategoricalProfile, present: pd.Series) -> dict[str, Any]:
    """Chi-square and PSI over the known categories, the unseen share, and what moved most."""
    import numpy as np

    counts = present.value_counts()
    known = set(ref.categories)
    unseen = counts[[c not in known for c in counts.index]]
    window_counts = np.array([float(counts.get(c, 0)) for c in ref.categories])
    known_total = float(window_counts.sum())
    window_shares = (window_counts / known_total).tolist() if known_total else [0.0] * len(ref.categories)
    m: dict[str, Any] = {
        "name": name,
        "kind": KIND_CATEGORICAL,
        "window_count": len(present),
        "ks_statistic": 0.0,
        "ks_pvalue": 1.0,
        "reference_mean": math.nan,
        "window_mean": math.nan,
        "mean_shift_in_std": math.nan,
        "window_bin_proportions": window_shares,
        "unseen_count": int(unseen.sum()),
        "unseen_share": float(unseen.sum()) / len(present) if len(present) else 0.0,
        "unseen_categories": [{"category": str(c), "count": int(n)} for c, n in unseen.head(TOP_UNSEEN).items()],
        "psi": 0.0,
        "_tests": [],
    }
    moved = sorted(
        zip(ref.categories, ref.category_proportions, window_shares, strict=True),
        key=lambda item: -abs(item[2] - item[1]),
    )
    m["category_changes"] = [{"category": c, "reference_share": r, "window_share": w}
                             for c, r, w in moved[:TOP_CATEGORIES]] if known_total else []  # fmt: skip
    reference_counts = np.asarray(ref.category_proportions, dtype=np.float64) * ref.count
    cells = pooled_cells(reference_counts, window_counts)
    if cells is None:
        return m
    reference_cells, window_cells = cells
    statistic, pvalue = chi_square_homogeneity(reference_cells, window_cells)
    psi = population_stability_index(
        (reference_cells / reference_cells.sum()).tolist(),
        (window_cells / window_cells.sum()).tolist(),
        reference_count=ref.count,
        window_count=int(known_total),
    )
    return m | {"chi2_statistic": statistic, "chi2_pvalue": pvalue, "chi2_cells": len(window_cells), "psi": psi,
                "_tests": ["chi2_pvalue"]}  # fmt: skip


def pooled_cells(reference: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Category counts of both samples with the rare categories pooled, so every cell expects `CHI2_MIN_EXPECTED`.

    Under "same distribution" a category holding `t` of both samples' `n` values expects `t * rows / n` in each
    sample; categories below `CHI2_MIN_EXPECTED` in the smaller sample go into one pooled cell, and while that cell
    is still short it takes the next rarest category. Returns None when fewer than two cells remain (nothing to
    compare) or either sample is empty.
    """
    import numpy as np

    rows = min(reference.sum(), window.sum())
    if rows <= 0:
        return None
    totals = reference + window
    needed = CHI2_MIN_EXPECTED * totals.sum() / rows  # a category total below this expects < 5 somewhere
    order = np.argsort(totals, kind="stable")
    order = order[totals[order] > 0]
    pooled: list[int] = []
    while len(order) and (totals[order[0]] < needed or (pooled and totals[pooled].sum() < needed)):
        pooled.append(int(order[0]))
        order = order[1:]
    keep = [int(i) for i in order]
    reference_cells = [reference[i] for i in keep] + ([reference[pooled].sum()] if pooled else [])
    window_cells = [window[i] for i in keep] + ([window[pooled].sum()] if pooled else [])
    if len(window_cells) < 2:
        return None
    return np.asarray(reference_cells, dtype=np.float64), np.asarray(window_cells, dtype=np.float64)


def chi_square_homogeneity(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Pearson's chi-square test that both count vectors come from one distribution: (statistic, p-value)."""
    import numpy as np
    from scipy import stats

    table = np.vstack([reference, window])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    statistic, pvalue = float(result.statistic), float(result.pvalue)
    return (statistic, pvalue) if math.isfinite(pvalue) else (0.0, 1.0)


def _missing_measure(
    entry: FeatureProfile | CategoricalProfile, *, reference_rows: int | None, window_rows: int, present: int
) -> dict[str, Any]:
    """Missing rates on both sides and Fisher's exact test, run only when either side has missing values."""
    from scipy import stats

    missing = window_rows - present
    m: dict[str, Any] = {
        "missing_rate_reference": entry.missing_rate,
        "missing_rate_window": missing / window_rows if window_rows else math.nan,
    }
    if window_rows == 0 or (missing == 0 and entry.missing_rate == 0):
        return m
    rows = reference_rows if reference_rows else (entry.count or 0)
    reference_missing = round(entry.missing_rate * rows)
    table = [[reference_missing, rows - reference_missing], [missing, present]]
    pvalue = float(stats.fisher_exact(table).pvalue)
    return m | {"missing_pvalue": pvalue if math.isfinite(pvalue) else 1.0, "_tested": True}


def _judged(m: dict[str, Any], thresholds: dict[str, float], enough: bool) -> FeatureDrift:
    """The measurements with their verdict: each reason that holds (none when the window is too small)."""
    alpha = thresholds["alpha"]
    reasons = []
    if m["kind"] == KIND_NUMERIC:
        significant = m.get("ks_pvalue_adjusted", 1.0) <= alpha
    else:
        significant = m.get("chi2_pvalue_adjusted", 1.0) <= alpha
    if significant and m["psi"] >= thresholds["psi"]:
        reasons.append(REASON_DISTRIBUTION)
    ratio = m.get("std_ratio", math.nan)
    spread_changed = ratio >= thresholds["std_ratio"] or ratio <= 1 / thresholds["std_ratio"]  # False for NaN
    if m.get("spread_pvalue_adjusted", 1.0) <= alpha and spread_changed:
        reasons.append(REASON_SPREAD)
    change = abs(m.get("missing_rate_window", math.nan) - m.get("missing_rate_reference", 0.0))
    if m.get("missing_pvalue_adjusted", 1.0) <= alpha and change >= thresholds["missing"]:  # False for NaN
        reasons.append(REASON_MISSING)
    if m.get("unseen_share", 0.0) >= thresholds["unseen"]:
        reasons.append(REASON_UNSEEN)
    reasons = reasons if enough else []
    return FeatureDrift(**m, drifted=bool(reasons), reasons=reasons)
