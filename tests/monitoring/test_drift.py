"""detect_drift: in-distribution traffic is rarely flagged, a half-std shift and a change of spread are, PSI is
not inflated by tied values, small windows never decide.

False-alarm bound: with Holm's correction over every test, a window of in-distribution traffic alarms with
probability at most `ks_alpha` (KS is conservative with ties, and the PSI and std-ratio conditions only remove
alarms). So over N independent windows the alarm count is at most Binomial(N, ks_alpha); the tests allow the count
that such a binomial exceeds with probability 1e-6. A real regression (say a 25% false-alarm rate) still fails them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_PSI_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
)
from components.monitoring.drift import (
    REASON_DISTRIBUTION,
    REASON_SPREAD,
    DriftInputError,
    detect_drift,
    holm_adjusted,
    population_stability_index,
)
from components.reference_profile import build_reference_profile
from tests.monitoring.monitoring_helpers import IRIS_TRAIN_ROWS, shift_feature

WINDOWS = 150
WINDOW_ROWS = DEFAULT_MIN_RECORDS


def alarm_bound(windows: int, alpha: float = DEFAULT_KS_ALPHA) -> int:
    return int(stats.binom.ppf(1 - 1e-6, windows, alpha))


def make_classification_frames(seed: int, train_rows: int, window_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from sklearn.datasets import make_classification

    x, _ = make_classification(n_samples=train_rows + window_rows, n_features=8, n_informative=4, random_state=seed)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    return frame.iloc[:train_rows], frame.iloc[train_rows:]


@pytest.mark.slow
def test_false_alarm_rate_on_iris_like_traffic_is_within_the_binomial_bound(iris_population) -> None:
    alarms = 0
    for seed in range(WINDOWS):
        rng = np.random.default_rng(seed)
        profile = build_reference_profile(iris_population(rng, IRIS_TRAIN_ROWS), seed=seed)
        alarms += detect_drift(profile, iris_population(rng, WINDOW_ROWS)).drift_detected
    assert alarms <= alarm_bound(WINDOWS), f"{alarms}/{WINDOWS} in-distribution windows flagged"


@pytest.mark.slow
def test_false_alarm_rate_on_make_classification_traffic_is_within_the_binomial_bound() -> None:
    alarms = 0
    for seed in range(WINDOWS):
        train, window = make_classification_frames(seed, 1000, WINDOW_ROWS)
        alarms += detect_drift(build_reference_profile(train, seed=seed), window).drift_detected
    assert alarms <= alarm_bound(WINDOWS), f"{alarms}/{WINDOWS} in-distribution windows flagged"


def test_half_std_shift_of_one_feature_is_flagged_and_named(iris_frame: pd.DataFrame) -> None:
    # given: the profile of all of Iris and windows resampled from Iris, one feature moved by 0.5 std
    profile = build_reference_profile(iris_frame)
    detected = 0
    seeds = 40
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        column = iris_frame.columns[seed % 4]
        window = iris_frame.iloc[rng.integers(0, len(iris_frame), WINDOW_ROWS)]
        report = detect_drift(profile, shift_feature(window, column, 0.5 * iris_frame[column].std()))
        # then: when flagged, it is that feature and only that one, for its distribution
        if report.drift_detected:
            detected += 1
            assert report.drifted_features == [column]
            assert REASON_DISTRIBUTION in report.features[seed % 4].reasons
    assert detected / seeds >= 0.8, f"only {detected}/{seeds} shifted windows flagged"


def test_half_std_shift_is_flagged_on_make_classification_data() -> None:
    detected = 0
    for seed in range(30):
        train, window = make_classification_frames(seed, 1000, WINDOW_ROWS)
        profile = build_reference_profile(train, seed=seed)
        report = detect_drift(profile, shift_feature(window, "f3", 0.5 * profile["features"]["f3"]["std"]))
        detected += report.status == DRIFT_STATUS_DRIFT and report.drifted_features == ["f3"]
    assert detected >= 27


def test_unshifted_window_reports_ok_with_per_feature_numbers(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    window = iris_frame.sample(n=WINDOW_ROWS, replace=True, random_state=1)
    report = detect_drift(profile, window)
    assert report.status == DRIFT_STATUS_OK and not report.drift_detected
    assert [f.name for f in report.features] == list(iris_frame.columns)
    assert report.records == WINDOW_ROWS
    assert report.correction == "holm" and report.ks_alpha == DEFAULT_KS_ALPHA
    for feature in report.features:
        assert 0 <= feature.psi < DEFAULT_PSI_THRESHOLD and 0 < feature.ks_pvalue <= feature.ks_pvalue_adjusted <= 1
        assert 0 < feature.spread_pvalue <= feature.spread_pvalue_adjusted <= 1
        assert abs(feature.mean_shift_in_std) < 0.3 and 0.8 < feature.std_ratio < 1.25
        assert sum(feature.window_bin_proportions) == pytest.approx(1.0)
        assert feature.reasons == []


def test_too_few_records_is_not_enough_data_never_drift(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    # even a window shifted by 3 std stays undecided when it is too small
    tiny = shift_feature(iris_frame.head(DEFAULT_MIN_RECORDS - 1 - 100), "petal width (cm)", 3.0)
    report = detect_drift(profile, tiny)
    assert report.status == DRIFT_STATUS_NOT_ENOUGH_DATA and not report.drift_detected
    assert report.drifted_features == []
    assert "not enough data" in report.message and str(DEFAULT_MIN_RECORDS) in report.message
    assert not report.evaluated and report.to_dict()["evaluated"] is False
    empty = detect_drift(profile, pd.DataFrame())
    assert empty.status == DRIFT_STATUS_NOT_ENOUGH_DATA and empty.records == 0
    json.dumps(empty.to_dict(), allow_nan=False)  # NaN means (no rows) become null, not invalid JSON


def test_window_without_a_profiled_feature_is_refused(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    with pytest.raises(DriftInputError, match="petal width"):
        detect_drift(profile, iris_frame.drop(columns=["petal width (cm)"]))
    with pytest.raises(DriftInputError, match="ks_alpha"):
        detect_drift(profile, iris_frame, ks_alpha=0)
    with pytest.raises(DriftInputError, match="std_ratio_threshold"):
        detect_drift(profile, iris_frame, std_ratio_threshold=0.8)


def test_psi_of_identical_bins_is_zero_and_grows_with_difference() -> None:
    same = population_stability_index([0.25] * 4, [0.25] * 4)
    small = population_stability_index([0.25] * 4, [0.3, 0.2, 0.25, 0.25])
    large = population_stability_index([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert same == 0 and 0 < small < large
    assert math.isfinite(population_stability_index([0.5, 0.5], [1.0, 0.0]))  # empty bins are floored


def test_smoothing_keeps_one_empty_bin_from_dominating_psi() -> None:
    reference, window = [0.1] * 10, [0.0] + [1 / 9] * 9
    floored = population_stability_index(reference, window)
    smoothed = population_stability_index(reference, window, reference_count=150, window_count=200)
    # 0 of 200 rows is a share of 0.25% after adding half a row, not the 0.01% floor
    assert 0 < smoothed < 0.6 * floored
    assert population_stability_index(reference, reference, reference_count=150, window_count=200) < 1e-12


def test_holm_adjusted_p_values_match_the_step_down_rule_and_reject_more_than_bonferroni() -> None:
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm_adjusted([0.02, 0.03])
    assert adjusted == pytest.approx([0.04, 0.04])  # both <= 0.05, while Bonferroni (x2) rejects only 0.02
    assert holm_adjusted([0.9, 0.3]) == pytest.approx([0.9, 0.6]) and holm_adjusted([]) == []


def jittered_iris(iris_frame: pd.DataFrame, rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Iris rows resampled, each value moved by up to half the data's 0.1 cm grid step (rounding undoes it)."""
    window = iris_frame.iloc[rng.integers(0, len(iris_frame), rows)].reset_index(drop=True)
    return window + rng.uniform(-0.05, 0.05, size=window.shape)


@pytest.mark.parametrize("rounded", [False, True], ids=["jittered", "rounded"])
def test_psi_on_unchanged_iris_traffic_stays_under_the_threshold_despite_ties(
    iris_frame: pd.DataFrame, rounded: bool
) -> None:
    # given: the profile of Iris (values on a 0.1 cm grid: many ties at the decile edges) and unchanged traffic
    profile = build_reference_profile(iris_frame)
    flags = feature_windows = 0
    for seed in range(60):
        window = jittered_iris(iris_frame, np.random.default_rng(seed), WINDOW_ROWS)
        if rounded:
            window = window.round(1)
        report = detect_drift(profile, window)
        flags += sum(f.psi >= DEFAULT_PSI_THRESHOLD for f in report.features)
        feature_windows += len(report.features)
        assert not report.drift_detected
    # then: PSI reaches the threshold in under 5% of feature-windows (edges on tied values gave ~29%)
    assert flags / feature_windows < 0.05, f"{flags}/{feature_windows} unchanged feature-windows had PSI >= 0.15"


def test_doubled_variance_with_the_same_mean_is_flagged_as_spread() -> None:
    detected = 0
    for seed in range(30):
        train, window = make_classification_frames(seed, 1000, WINDOW_ROWS)
        profile = build_reference_profile(train, seed=seed)
        mean = profile["features"]["f2"]["mean"]
        wider = window.assign(f2=mean + (window["f2"] - mean) * math.sqrt(2))
        report = detect_drift(profile, wider)
        feature = report.features[2]
        assert feature.std_ratio == pytest.approx(math.sqrt(2) * window["f2"].std() / profile["features"]["f2"]["std"])
        detected += report.drifted_features == ["f2"] and REASON_SPREAD in feature.reasons
    assert detected >= 27, f"only {detected}/30 windows with doubled variance flagged for spread"


def test_a_significant_spread_change_below_the_ratio_threshold_does_not_count() -> None:
    train, window = make_classification_frames(0, 1000, 5000)  # a big window: tiny changes are significant
    profile = build_reference_profile(train)
    mean = profile["features"]["f2"]["mean"]
    wider = window.assign(f2=mean + (window["f2"] - mean) * 1.15)
    feature = detect_drift(profile, wider).features[2]
    assert feature.spread_pvalue_adjusted <= DEFAULT_KS_ALPHA and feature.std_ratio < 1.2
    assert REASON_SPREAD not in feature.reasons
    assert REASON_SPREAD in detect_drift(profile, wider, std_ratio_threshold=1.1).features[2].reasons
