"""Evaluation of both tasks, the metrics search and champion compare on, and the deploy gate in both directions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.datasets import load_diabetes
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier

from benchmarks.make_mixed_data import CLASSIFICATION_LABEL, REGRESSION_LABEL, make_mixed_data
from components.constants import (
    DEFAULT_LABEL_COLUMN,
    GATE_METRIC_ROC_AUC,
    METRIC_ACCURACY,
    METRIC_BALANCED_ACCURACY,
    METRIC_F1_MACRO,
    METRIC_MAE,
    METRIC_R2,
    METRIC_RMSE,
    METRIC_ROC_AUC,
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
)
from components.evaluate import (
    GATE_METRICS,
    METRIC_TASKS,
    GateConfigError,
    check_gate,
    default_metric,
    deploy_gate,
    evaluate_model,
    gate_decision,
    gate_from_scores,
    render_markdown_report,
    residual_summary,
    score,
)
from components.features import feature_matrix, infer_feature_schema
from components.preprocessing import build_pipeline

LABEL = DEFAULT_LABEL_COLUMN


class FixedPredictions:
    """An estimator whose predictions are given, so the expected metrics can be computed by hand."""

    def __init__(self, predictions, classes=None):
        self.predictions = np.asarray(predictions)
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def predict(self, x):
        return self.predictions[: len(x)]


def numeric_schema(frame: pd.DataFrame, task: str):
    # Declared numeric: a tiny test column of distinct integers would otherwise look like an ID.
    declared = {name: "numeric" for name in frame.columns if name != LABEL}
    return infer_feature_schema(frame, label_column=LABEL, task=task, feature_types=declared)


def test_metrics_match_a_hand_computed_case():
    # true 0,0,1,1,2,2 ; predicted 0,1,1,1,2,0  -> 4/6 correct
    test = pd.DataFrame({"a": np.arange(6.0), LABEL: [0, 0, 1, 1, 2, 2]})
    estimator = FixedPredictions([0, 1, 1, 1, 2, 0], classes=[0, 1, 2])
    evaluation = evaluate_model(estimator, test, schema=numeric_schema(test, TASK_CLASSIFICATION))
    assert evaluation.task == TASK_CLASSIFICATION
    assert evaluation.accuracy == pytest.approx(4 / 6)
    assert evaluation.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert evaluation.per_class["1"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2.0,
    }
    # f1: class0 = 0.5, class1 = 0.8, class2 = 2/3; recall: 0.5, 1.0, 0.5
    assert evaluation.f1_macro == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert evaluation.scores[METRIC_BALANCED_ACCURACY] == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    assert evaluation.roc_auc is None and evaluation.roc_curve is None and evaluation.residuals is None
    assert set(evaluation.headline()) == {METRIC_ACCURACY, METRIC_F1_MACRO, METRIC_BALANCED_ACCURACY}


def test_the_pre_schema_call_still_scores_an_all_numeric_classifier():
    test = pd.DataFrame({"a": np.arange(6.0), LABEL: [0, 0, 1, 1, 2, 2]})
    estimator = FixedPredictions([0, 1, 1, 1, 2, 0], classes=[0, 1, 2])

    old = evaluate_model(estimator, test, label_column=LABEL)

    assert old == evaluate_model(estimator, test, schema=numeric_schema(test, TASK_CLASSIFICATION))


def test_regression_metrics_match_a_hand_computed_case():
    # residuals (true - predicted): 0.5, -0.5, 1, -1, 0 -> MAE 0.6, MSE 0.5; mean of true 3, SS_tot 10, SS_res 2.5
    test = pd.DataFrame({"a": np.arange(5.0), LABEL: [1.0, 2.0, 3.0, 4.0, 5.0]})
    estimator = FixedPredictions([0.5, 2.5, 2.0, 5.0, 5.0])

    evaluation = evaluate_model(estimator, test, schema=numeric_schema(test, TASK_REGRESSION))

    assert evaluation.task == TASK_REGRESSION
    assert evaluation.headline() == {
        METRIC_RMSE: pytest.approx(math.sqrt(0.5)),
        METRIC_MAE: pytest.approx(0.6),
        METRIC_R2: pytest.approx(1 - 2.5 / 10),
    }
    assert evaluation.class_names == [] and evaluation.confusion_matrix == [] and evaluation.roc_curve is None
    assert math.isnan(evaluation.accuracy)
    residuals = evaluation.residuals
    assert residuals is not None
    assert (
        residuals.quantiles["p0"] == -1.0 and residuals.quantiles["p50"] == 0.0 and residuals.quantiles["p100"] == 1.0
    )
    assert residuals.mean == pytest.approx(0.0)
    assert sum(count for _, _, count in residuals.histogram) == 5
    assert [row["rows"] for row in residuals.by_prediction] == [1.0] * 5


def test_residual_bins_show_where_a_model_is_biased():
    # A model that predicts 10% too low: the residual grows with the prediction, so the highest-predicted bin has
    # the largest mean residual and the lowest the smallest.
    y_true = np.linspace(100.0, 1000.0, 200)
    residuals = residual_summary(y_true, y_true * 0.9)

    means = [row["mean_residual"] for row in residuals.by_prediction]
    assert len(means) == 10 and means == sorted(means)
    assert means[0] == pytest.approx(np.mean(y_true[:20] * 0.1))
    assert residuals.quantiles["p0"] == pytest.approx(10.0) and residuals.quantiles["p100"] == pytest.approx(100.0)


def test_regression_report_has_metrics_gate_and_a_residual_plot():
    x, y = load_diabetes(return_X_y=True)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(**{LABEL: y})
    schema = numeric_schema(frame, TASK_REGRESSION)
    model = build_pipeline(schema, Ridge()).fit(feature_matrix(frame[:300], schema), y[:300])

    evaluation = evaluate_model(model, frame[300:], schema=schema)
    decision = deploy_gate(evaluation, gate_metric=METRIC_RMSE, gate_threshold=80.0)
    report = render_markdown_report(evaluation, decision)

    assert decision.deploy and decision.reason.startswith(f"rmse {evaluation.scores[METRIC_RMSE]:.4f} <= threshold")
    assert "Task: regression" in report and "| rmse |" in report and "| r2 |" in report
    assert "## Residuals (true - predicted)" in report and "## Error by predicted value" in report
    histogram = report.split("```")[1].strip().splitlines()
    assert len(histogram) == 10 and any(line.endswith("#" * 40) for line in histogram)
    assert "Confusion matrix" not in report


def test_typed_features_are_evaluated_through_feature_matrix():
    frame = make_mixed_data(400, seed=3)
    schema = infer_feature_schema(frame, label_column=CLASSIFICATION_LABEL, feature_types={"store": "categorical"})
    train, test = frame[:300], frame[300:]
    model = build_pipeline(schema, LogisticRegression(max_iter=1000))
    model.fit(feature_matrix(train, schema), train[CLASSIFICATION_LABEL])

    evaluation = evaluate_model(model, test, schema=schema)

    expected = metrics.accuracy_score(test[CLASSIFICATION_LABEL], model.predict(feature_matrix(test, schema)))
    assert evaluation.accuracy == pytest.approx(expected)
    assert evaluation.class_names == ["no", "yes"] and evaluation.roc_curve is not None
    assert METRIC_ROC_AUC in evaluation.headline()


def test_binary_problems_get_a_finite_roc_curve():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], LABEL: y})
    evaluation = evaluate_model(model, frame, schema=numeric_schema(frame, TASK_CLASSIFICATION))
    curve = evaluation.roc_curve
    assert curve is not None and evaluation.roc_auc is not None and evaluation.roc_auc > 0.95
    assert curve.fpr[0] == 0.0 and curve.tpr[-1] == 1.0
    assert all(np.isfinite(curve.thresholds))
    assert METRIC_ROC_AUC in evaluation.headline()


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        (METRIC_ACCURACY, metrics.accuracy_score),
        (METRIC_BALANCED_ACCURACY, metrics.balanced_accuracy_score),
        (METRIC_F1_MACRO, lambda y, p: metrics.f1_score(y, p, average="macro")),
    ],
)
def test_score_computes_each_classification_metric_like_sklearn(metric, expected):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 3))
    y = np.array(["a", "b", "c"])[(x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)]
    model = LogisticRegression().fit(x[:60], y[:60])

    assert score(model, x[60:], y[60:], metric=metric, task=TASK_CLASSIFICATION) == pytest.approx(
        expected(y[60:], model.predict(x[60:]))
    )


def test_score_computes_each_regression_metric_like_sklearn():
    x, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(x[:300], y[:300])
    predicted = model.predict(x[300:])

    assert score(model, x[300:], y[300:], metric=METRIC_R2, task=TASK_REGRESSION) == pytest.approx(
        metrics.r2_score(y[300:], predicted)
    )
    assert score(model, x[300:], y[300:], metric=METRIC_RMSE, task=TASK_REGRESSION) == pytest.approx(
        math.sqrt(metrics.mean_squared_error(y[300:], predicted))
    )
    assert score(model, x[300:], y[300:], metric=METRIC_MAE, task=TASK_REGRESSION) == pytest.approx(
        metrics.mean_absolute_error(y[300:], predicted)
    )


def test_roc_auc_uses_probabilities_or_the_decision_function_and_only_for_two_classes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 2))
    y = (x[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    with_proba = LogisticRegression().fit(x, y)
    without_proba = RidgeClassifier().fit(x, y)

    assert score(with_proba, x, y, metric=GATE_METRIC_ROC_AUC, task=TASK_CLASSIFICATION) == pytest.approx(
        metrics.roc_auc_score(y, with_proba.predict_proba(x)[:, 1])
    )
    assert score(without_proba, x, y, metric=GATE_METRIC_ROC_AUC, task=TASK_CLASSIFICATION) == pytest.approx(
        metrics.roc_auc_score(y, without_proba.decision_function(x))
    )
    three = LogisticRegression().fit(x, np.arange(80) % 3)
    with pytest.raises(GateConfigError, match="roc_auc needs a binary label"):
        score(three, x, np.arange(80) % 3, metric=GATE_METRIC_ROC_AUC, task=TASK_CLASSIFICATION)


def test_a_metric_of_the_other_task_is_refused_in_one_line():
    x, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(x, y)

    with pytest.raises(GateConfigError) as refused:
        score(model, x, y, metric=METRIC_ACCURACY, task=TASK_REGRESSION)
    assert str(refused.value) == (
        "metric 'accuracy' is a classification metric but this is a regression model: use one of r2, rmse, mae"
    )
    with pytest.raises(GateConfigError, match="'mse' is not a known metric: use one of accuracy, f1_macro"):
        check_gate(gate_metric="mse", gate_threshold=1.0)


def test_every_gate_metric_has_a_direction_and_a_task():
    assert set(GATE_METRICS) == set(METRIC_TASKS)
    assert {m for m, d in GATE_METRICS.items() if d == "lower"} == {METRIC_RMSE, METRIC_MAE}
    assert default_metric(TASK_CLASSIFICATION) == METRIC_ACCURACY and default_metric(TASK_REGRESSION) == METRIC_R2
    with pytest.raises(GateConfigError, match="task must be"):
        default_metric("clustering")


def test_gate_passes_at_the_threshold_and_explains_itself():
    assert gate_decision(0.9, min_accuracy=0.9).deploy
    blocked = gate_decision(0.5, min_accuracy=0.9)
    assert not blocked.deploy
    assert blocked.reason == "accuracy 0.5000 < threshold 0.9000: do not deploy"
    with pytest.raises(ValueError, match="within"):
        gate_decision(0.5, min_accuracy=1.5)


def test_without_gate_metric_the_old_gates_apply():
    classification = {METRIC_ACCURACY: 0.85, METRIC_F1_MACRO: 0.99}
    # Classification: accuracy against min_accuracy; gate_threshold is not read.
    assert not gate_from_scores(classification, task=TASK_CLASSIFICATION, min_accuracy=0.9, gate_threshold=0.1).deploy
    assert gate_from_scores(classification, task=TASK_CLASSIFICATION, min_accuracy=0.8).deploy
    # Regression: R² against gate_threshold (0.0: better than predicting the mean); min_accuracy is not read.
    regression = {METRIC_R2: 0.25, METRIC_RMSE: 50.0, METRIC_MAE: 40.0}
    assert gate_from_scores(regression, task=TASK_REGRESSION).reason == "r2 0.2500 >= threshold 0.0000: deploy"
    assert not gate_from_scores(regression, task=TASK_REGRESSION, gate_threshold=0.5, min_accuracy=0.0).deploy


def test_a_lower_is_better_metric_passes_at_or_below_its_threshold():
    scores = {METRIC_R2: 0.9, METRIC_RMSE: 50.0, METRIC_MAE: 40.0}

    assert gate_from_scores(scores, task=TASK_REGRESSION, gate_metric=METRIC_RMSE, gate_threshold=50.0).deploy
    blocked = gate_from_scores(scores, task=TASK_REGRESSION, gate_metric=METRIC_MAE, gate_threshold=39.5)
    assert not blocked.deploy and blocked.reason == "mae 40.0000 > threshold 39.5000: do not deploy"
    nan = gate_from_scores({**scores, METRIC_R2: math.nan}, task=TASK_REGRESSION, gate_metric=METRIC_R2)
    assert not nan.deploy


def test_the_gate_refuses_metrics_and_thresholds_that_cannot_work():
    classification = {METRIC_ACCURACY: 0.95, METRIC_F1_MACRO: 0.9, METRIC_BALANCED_ACCURACY: 0.9}
    with pytest.raises(GateConfigError, match="'rmse' is a regression metric but this is a classification model"):
        gate_from_scores(classification, task=TASK_CLASSIFICATION, gate_metric=METRIC_RMSE, gate_threshold=1.0)
    with pytest.raises(GateConfigError, match="gate_threshold for balanced_accuracy must be within"):
        gate_from_scores(classification, task=TASK_CLASSIFICATION, gate_metric="balanced_accuracy", gate_threshold=2)
    with pytest.raises(GateConfigError, match="the evaluation has no roc_auc_ovr"):
        gate_from_scores(classification, task=TASK_CLASSIFICATION, gate_metric=GATE_METRIC_ROC_AUC, gate_threshold=0.5)
    with pytest.raises(GateConfigError, match="largest error allowed and must be above 0"):
        check_gate(gate_metric=METRIC_MAE, gate_threshold=0.0, task=TASK_REGRESSION)
    with pytest.raises(GateConfigError, match="at most 1"):
        check_gate(gate_metric=METRIC_R2, gate_threshold=1.5, task="")
    check_gate(gate_metric="", gate_threshold=0.0)  # the old gate: nothing to check
    check_gate(gate_metric=METRIC_RMSE, gate_threshold=10.0, task="")  # task unknown until the data step


def test_the_roc_auc_gate_is_refused_for_a_multi_class_model():
    x = np.arange(30.0).reshape(-1, 1)
    y = np.array([0, 1, 2] * 10)
    model = LogisticRegression().fit(x, y)
    frame = pd.DataFrame({"a": x[:, 0], LABEL: y})
    evaluation = evaluate_model(model, frame, schema=numeric_schema(frame, TASK_CLASSIFICATION))
    assert evaluation.roc_auc is not None  # one-vs-rest is reported, but it is not the gate's binary roc_auc

    with pytest.raises(GateConfigError, match="roc_auc needs a binary label"):
        deploy_gate(evaluation, gate_metric=GATE_METRIC_ROC_AUC, gate_threshold=0.5)


def test_a_model_that_guesses_does_not_pass_the_gate_and_the_report_says_so():
    x = np.arange(30.0).reshape(-1, 1)
    y = np.array([0, 1, 2] * 10)
    dummy = DummyClassifier(strategy="most_frequent").fit(x, y)
    frame = pd.DataFrame({"a": x[:, 0], LABEL: y})
    evaluation = evaluate_model(dummy, frame, schema=numeric_schema(frame, TASK_CLASSIFICATION))
    decision = deploy_gate(evaluation, gate_metric=METRIC_BALANCED_ACCURACY, gate_threshold=0.5)
    assert not decision.deploy
    assert decision.reason == "balanced_accuracy 0.3333 < threshold 0.5000: do not deploy"
    report = render_markdown_report(evaluation, decision)
    assert "do not deploy" in report
    assert "| **0** | 10 | 0 | 0 |" in report


def test_string_classes_are_scored_against_a_label_read_back_as_numbers():
    # A label column of codes read from Parquet comes back as integers; a model fitted on their text gives strings.
    x = np.arange(20.0).reshape(-1, 1)
    y = np.array([1, 2] * 10)
    model = LogisticRegression().fit(x, y.astype(str))

    assert score(model, x, y, metric=METRIC_ACCURACY, task=TASK_CLASSIFICATION) == pytest.approx(
        metrics.accuracy_score(y.astype(str), model.predict(x))
    )


def test_regression_gate_on_a_real_run_of_evaluate_and_the_mixed_demo_data():
    frame = make_mixed_data(500, task="regression", seed=4)
    schema = infer_feature_schema(frame, label_column=REGRESSION_LABEL, feature_types={"store": "categorical"})
    model = build_pipeline(schema, Ridge())
    model.fit(feature_matrix(frame[:400], schema), frame[REGRESSION_LABEL][:400])

    evaluation = evaluate_model(model, frame[400:], schema=schema)

    r2 = evaluation.scores[METRIC_R2]
    assert r2 > 0.5  # the demo's spend depends on the features; Ridge with one-hot categories learns it
    assert deploy_gate(evaluation).deploy == (r2 >= 0.0)
    assert not deploy_gate(evaluation, gate_metric=METRIC_R2, gate_threshold=min(1.0, r2 + 1e-6)).deploy


def test_the_readme_metric_table_lists_every_gate_metric_with_its_task_and_direction():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("| metric | task | better | what |\n| --- | --- | --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()]

    documented = {row[0].strip("| `"): (row[1].split(" ")[0], row[2]) for row in rows}

    assert documented == {metric: (METRIC_TASKS[metric], GATE_METRICS[metric]) for metric in GATE_METRICS}
