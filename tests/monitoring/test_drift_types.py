"""detect_drift on typed features: categories (chi-square + PSI), unseen categories, missing rates, and a regression
model's predictions. Shifted categories are flagged and named, a same-distribution sample is not.

False-alarm bound as in test_drift.py: under "no change" every window alarms with probability at most `ks_alpha`
(Holm over every test; unseen categories cannot occur when every category is common in training), so N windows give
at most Binomial(N, ks_alpha) alarms; the tests allow what such a binomial exceeds with probability 1e-6.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.make_mixed_data import REGRESSION_LABEL, make_mixed_data
from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_PSI_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_OK,
    PAYLOAD_COLUMN_PREDICTION,
)
from components.features import Feature, FeatureSchema, feature_matrix, infer_feature_schema
from components.monitoring.drift import (
    CHI2_MIN_EXPECTED,
    REASON_DISTRIBUTION,
    REASON_MISSING,
    REASON_UNSEEN,
    DriftInputError,
    chi_square_homogeneity,
    detect_drift,
    pooled_cells,
)
from components.reference_profile import build_reference_profile, load_reference_profile
from components.train import save_trained_model, train_model

COLOURS = {"red": 0.5, "green": 0.3, "blue": 0.15, "grey": 0.05}
TRAIN_ROWS = 2000
WINDOWS = 120


def schema(task: str = "classification") -> FeatureSchema:
    return FeatureSchema(
        task=task,
        task_reason="given",
        label_column="y",
        features=[
            Feature(name="age", kind="numeric", nullable=True),
            Feature(name="colour", kind="categorical", categories=sorted(COLOURS), nullable=True),
        ],
        class_names=["0", "1"] if task == "classification" else [],
    )


def draw(
    rng: np.random.Generator, rows: int, *, colours: dict[str, float] = COLOURS, colour_missing: float = 0.05
) -> pd.DataFrame:
    """Rows of the population: age ~ N(40, 10) with 2% missing, colour by `colours` with `colour_missing` missing."""
    age = rng.normal(40, 10, size=rows)
    age[rng.random(rows) < 0.02] = np.nan
    colour = rng.choice(list(colours), p=list(colours.values()), size=rows).astype(object)
    colour[rng.random(rows) < colour_missing] = None
    return pd.DataFrame({"age": age, "colour": colour})


def alarm_bound(windows: int, alpha: float = DEFAULT_KS_ALPHA) -> int:
    return int(stats.binom.ppf(1 - 1e-6, windows, alpha))


def test_a_same_distribution_window_rarely_alarms() -> None:
    alarms = 0
    for seed in range(WINDOWS):
        rng = np.random.default_rng(seed)
        profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema(), seed=seed)
        report = detect_drift(profile, draw(rng, DEFAULT_MIN_RECORDS))
        alarms += report.drift_detected
    assert alarms <= alarm_bound(WINDOWS)


def test_unchanged_categories_report_ok_with_their_numbers() -> None:
    rng = np.random.default_rng(7)
    profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema())
    report = detect_drift(profile, draw(rng, 1000))
    assert report.status == DRIFT_STATUS_OK
    colour = report.features[1]
    assert colour.kind == "categorical" and colour.reasons == []
    assert colour.psi < DEFAULT_PSI_THRESHOLD and colour.chi2_pvalue > 0.001 and colour.chi2_cells == 4
    assert colour.unseen_share == 0.0 and colour.unseen_categories == []
    assert abs(colour.missing_rate_change) < 0.03
    assert sum(colour.window_bin_proportions) == pytest.approx(1.0)
    # every test in one Holm family: KS + spread for age, chi-square for colour, the missing rate of both
    assert report.tests == 5


def test_shifted_categories_are_flagged_and_the_categories_named() -> None:
    rng = np.random.default_rng(1)
    profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema())
    shifted = {"red": 0.3, "green": 0.3, "blue": 0.35, "grey": 0.05}  # red gave a fifth of all rows to blue
    report = detect_drift(profile, draw(rng, 400, colours=shifted))
    assert report.status == DRIFT_STATUS_DRIFT and report.drifted_features == ["colour"]
    colour = report.features[1]
    assert colour.reasons == [REASON_DISTRIBUTION]
    assert colour.chi2_pvalue_adjusted < 1e-6 and colour.psi >= DEFAULT_PSI_THRESHOLD
    # what moved: red and blue, with their shares before and after
    top = {c["category"]: c for c in colour.category_changes[:2]}
    assert set(top) == {"red", "blue"}
    assert top["red"]["reference_share"] == pytest.approx(0.5, abs=0.04)
    assert top["red"]["window_share"] == pytest.approx(0.3, abs=0.07)
    assert "colour [distribution]" in report.message
    json.dumps(report.to_dict(), allow_nan=False)


def test_unseen_categories_are_flagged_with_their_share_and_names() -> None:
    rng = np.random.default_rng(2)
    profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema())
    window = draw(rng, 500)
    present = window.index[window["colour"].notna()]
    window.loc[present[:40], "colour"] = "purple"  # 40 + 10 of ~475 present values: about 10%
    window.loc[present[40:50], "colour"] = "orange"
    report = detect_drift(profile, window)
    colour = report.features[1]
    assert REASON_UNSEEN in colour.reasons and report.drifted_features == ["colour"]
    assert colour.unseen_count == 50 and colour.unseen_share == pytest.approx(50 / len(present))
    assert colour.unseen_categories == [{"category": "purple", "count": 40}, {"category": "orange", "count": 10}]
    # a few unseen values (below the threshold) are reported, not alarmed on
    few = draw(rng, 500)
    few.loc[few.index[few["colour"].notna()][:3], "colour"] = "purple"
    calm = detect_drift(profile, few).features[1]
    assert calm.unseen_count == 3 and REASON_UNSEEN not in calm.reasons
    assert detect_drift(profile, window, unseen_threshold=0.2).features[1].reasons == []


def test_a_missing_rate_jump_is_flagged() -> None:
    rng = np.random.default_rng(3)
    profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema())
    report = detect_drift(profile, draw(rng, 400, colour_missing=0.25))
    colour = report.features[1]
    assert colour.reasons == [REASON_MISSING] and report.status == DRIFT_STATUS_DRIFT
    assert colour.missing_rate_reference == pytest.approx(0.05, abs=0.015)
    assert colour.missing_rate_window == pytest.approx(0.25, abs=0.05)
    assert colour.missing_pvalue_adjusted < 1e-6 and report.max_missing_rate_change == pytest.approx(0.2, abs=0.06)
    # the same jump under a larger threshold is reported, not alarmed on
    assert (
        detect_drift(profile, draw(rng, 400, colour_missing=0.25), missing_rate_threshold=0.5).features[1].reasons == []
    )


def test_missing_values_count_toward_the_missing_rate_not_the_distribution() -> None:
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True).data
    profile = build_reference_profile(iris)  # all numeric, nothing missing: the version-2 kind of profile
    window = iris.copy()
    window.iloc[:10, 0] = np.nan
    report = detect_drift(profile, window, min_records=1)
    first = report.features[0]
    assert report.records == 150 and first.window_count == 140
    assert first.missing_rate_window == pytest.approx(10 / 150) and first.reasons == [REASON_MISSING]
    assert report.tests == 4 * 2 + 1  # the missing-rate test runs only where something is missing


def test_rare_categories_are_pooled_until_each_cell_expects_enough() -> None:
    reference = np.array([5000.0, 3000.0, 1500.0, 200.0, 200.0, 100.0])
    window = np.array([100.0, 60.0, 30.0, 4.0, 4.0, 2.0])
    cells = pooled_cells(reference, window)
    assert cells is not None
    ref_cells, win_cells = cells
    assert ref_cells.sum() == reference.sum() and win_cells.sum() == window.sum()  # nothing lost
    assert len(win_cells) == 4  # the three rare categories (each under 5 expected in 200 rows) became one cell
    table = np.vstack([ref_cells, win_cells])
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    assert expected.min() >= CHI2_MIN_EXPECTED
    statistic, pvalue = chi_square_homogeneity(ref_cells, win_cells)
    assert statistic >= 0 and pvalue > 0.5  # the window has the reference's shares
    assert pooled_cells(np.array([100.0]), np.array([10.0])) is None  # one category: nothing to compare
    assert pooled_cells(reference, np.zeros(6)) is None


def regression_setup(rng: np.random.Generator) -> dict:
    train = draw(rng, TRAIN_ROWS)
    return build_reference_profile(train, schema("regression"), rng.normal(100, 15, size=TRAIN_ROWS))


def test_a_regression_model_s_prediction_drift_is_flagged() -> None:
    rng = np.random.default_rng(4)
    profile = regression_setup(rng)
    window = draw(rng, 400)
    same = detect_drift(profile, window.assign(**{PAYLOAD_COLUMN_PREDICTION: rng.normal(100, 15, 400).astype(str)}))
    assert same.status == DRIFT_STATUS_OK and same.prediction is not None and not same.prediction.drifted
    assert "and the predictions" in same.message and same.tests == 7
    # the inputs look the same, but the model answers 10 higher (e.g. a feature's meaning changed upstream)
    moved = window.assign(**{PAYLOAD_COLUMN_PREDICTION: rng.normal(110, 15, 400).astype(str)})
    report = detect_drift(profile, moved)
    assert report.status == DRIFT_STATUS_DRIFT and report.drifted_features == [] and report.prediction_drifted
    assert report.prediction is not None and report.prediction.reasons == [REASON_DISTRIBUTION]
    assert report.prediction.mean_shift_in_std == pytest.approx(10 / 15, abs=0.15)
    assert report.message == "no feature drifted; the predictions drifted [distribution]"
    # request-only logging (no predictions): nothing to compare, no alarm
    silent = detect_drift(profile, window.assign(**{PAYLOAD_COLUMN_PREDICTION: None}))
    assert silent.prediction is not None and silent.prediction.window_count == 0 and not silent.drift_detected


def test_a_numeric_feature_logged_as_text_is_refused() -> None:
    rng = np.random.default_rng(5)
    profile = build_reference_profile(draw(rng, TRAIN_ROWS), schema())
    with pytest.raises(DriftInputError, match="'age'"):
        detect_drift(profile, draw(rng, 300).assign(age="old"))
    with pytest.raises(DriftInputError, match="unseen_threshold"):
        detect_drift(profile, draw(rng, 300), unseen_threshold=0)
    with pytest.raises(DriftInputError, match="missing_rate_threshold"):
        detect_drift(profile, draw(rng, 300), missing_rate_threshold=1.5)


def test_a_pool_that_is_still_too_rare_takes_the_next_category() -> None:
    # the rare categories together expect only 2 in the window: the pool grows by the next rarest until it is enough
    reference = np.array([5000.0, 3000.0, 1900.0, 60.0, 30.0, 10.0])
    window = np.array([100.0, 60.0, 38.0, 1.0, 1.0, 0.0])
    ref_cells, win_cells = pooled_cells(reference, window) or (np.array([]), np.array([]))
    assert win_cells.tolist() == [60.0, 100.0, 40.0] and ref_cells.tolist() == [3000.0, 5000.0, 2000.0]


def test_a_model_trained_on_mixed_data_is_monitored_by_its_own_profile(tmp_path) -> None:
    """The real chain: the data step's schema inference, training and its model directory, the profile, the check."""
    # given: a regression model trained on the mixed demo data (string categories, missing values)
    frame = make_mixed_data(1600, task="regression", seed=5)
    schema = infer_feature_schema(frame, label_column=REGRESSION_LABEL, task="regression")
    train, live = frame.iloc[:1000], frame.iloc[1000:].reset_index(drop=True)
    model = train_model(train, schema=schema, model_family="ridge", seed=0)
    save_trained_model(model, tmp_path, training_data_fingerprint="0" * 64, check_features=live,
                       reference_features=train)  # fmt: skip
    profile = load_reference_profile(tmp_path)
    kinds = {f.name: f.kind for f in schema.features}
    assert {name: entry.kind for name, entry in profile.features.items()} == kinds and "categorical" in kinds.values()
    assert profile.task == "regression" and profile.prediction is not None and profile.prediction.count == 1000
    nullable = [f.name for f in schema.features if f.nullable]
    assert nullable and all(profile.features[n].missing_rate > 0 for n in nullable)

    def window(rows: pd.DataFrame) -> pd.DataFrame:
        """What the payload log holds: the features as the server received them, and the model's answers."""
        x = feature_matrix(rows, schema)
        return pd.DataFrame(x, columns=schema.names).assign(**{PAYLOAD_COLUMN_PREDICTION: model.estimator.predict(x)})

    # when: unseen rows of the same population come in, then: no drift, every feature and the predictions checked
    calm = detect_drift(profile, window(live))
    assert calm.status == DRIFT_STATUS_OK, calm.message
    # when: a third of a categorical feature's values become a new category, then: that feature, for that reason
    category = next(f for f in schema.features if f.kind == "categorical")
    shifted = live.copy()
    shifted.loc[shifted.index[::3], category.name] = "brand-new"
    report = detect_drift(profile, window(shifted))
    assert report.drifted_features == [category.name]
    assert REASON_UNSEEN in report.features[schema.names.index(category.name)].reasons
