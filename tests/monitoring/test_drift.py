"""detect_drift: in-distribution traffic is rarely flagged, a half-std shift is, small windows never decide.

False-alarm bound: with the Bonferroni split, a window of in-distribution traffic alarms with probability at
most `ks_alpha` (the KS test is conservative with ties, and the PSI condition only removes alarms). So over N
independent windows the alarm count is at most Binomial(N, ks_alpha); the tests allow the count that such a
binomial exceeds with probability 1e-6. A real regression (say a 25% false-alarm rate) still fails them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from monitoring_helpers import IRIS_TRAIN_ROWS, shift_feature
from scipy import stats

from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_PSI_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
)
from components.monitoring.drift import DriftInputError, detect_drift, population_stability_index
from components.monitoring.reference import build_reference_profile

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
        # then: when flagged, it is that feature and only that one
        if report.drift_detected:
            detected += 1
            assert report.drifted_features == [column]
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
    assert report.ks_alpha_per_feature == pytest.approx(DEFAULT_KS_ALPHA / 4)
    for feature in report.features:
        assert 0 <= feature.psi < DEFAULT_PSI_THRESHOLD and 0 < feature.ks_pvalue <= 1
        assert abs(feature.mean_shift_in_std) < 0.3
        assert sum(feature.window_bin_proportions) == pytest.approx(1.0)


def test_too_few_records_is_not_enough_data_never_drift(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    # even a window shifted by 3 std stays undecided when it is too small
    tiny = shift_feature(iris_frame.head(DEFAULT_MIN_RECORDS - 1 - 100), "petal width (cm)", 3.0)
    report = detect_drift(profile, tiny)
    assert report.status == DRIFT_STATUS_NOT_ENOUGH_DATA and not report.drift_detected
    assert report.drifted_features == []
    assert "not enough data" in report.message and str(DEFAULT_MIN_RECORDS) in report.message
    empty = detect_drift(profile, pd.DataFrame())
    assert empty.status == DRIFT_STATUS_NOT_ENOUGH_DATA and empty.records == 0


def test_rows_with_missing_values_do_not_count(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    window = iris_frame.copy()
    window.iloc[:10, 0] = math.nan
    assert detect_drift(profile, window, min_records=1).records == len(iris_frame) - 10


def test_window_without_a_profiled_feature_is_refused(iris_frame: pd.DataFrame) -> None:
    profile = build_reference_profile(iris_frame)
    with pytest.raises(DriftInputError, match="petal width"):
        detect_drift(profile, iris_frame.drop(columns=["petal width (cm)"]))
    with pytest.raises(DriftInputError, match="ks_alpha"):
        detect_drift(profile, iris_frame, ks_alpha=0)


def test_psi_of_identical_bins_is_zero_and_grows_with_difference() -> None:
    same = population_stability_index([0.25] * 4, [0.25] * 4)
    small = population_stability_index([0.25] * 4, [0.3, 0.2, 0.25, 0.25])
    large = population_stability_index([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert same == 0 and 0 < small < large
    assert math.isfinite(population_stability_index([0.5, 0.5], [1.0, 0.0]))  # empty bins are floored
