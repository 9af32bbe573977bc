import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from components.constants import DEFAULT_LABEL_COLUMN, METRIC_ACCURACY, METRIC_F1_MACRO, METRIC_ROC_AUC
from components.evaluate import deploy_gate, evaluate_model, gate_decision, render_markdown_report

LABEL = DEFAULT_LABEL_COLUMN


class FixedPredictions:
    """An estimator whose predictions are given, so the expected metrics can be computed by hand."""

    classes_ = np.array([0, 1, 2])

    def __init__(self, predictions):
        self.predictions = np.asarray(predictions)

    def predict(self, x):
        return self.predictions[: len(x)]


def test_metrics_match_a_hand_computed_case():
    # true 0,0,1,1,2,2 ; predicted 0,1,1,1,2,0  -> 4/6 correct
    test = pd.DataFrame({"a": np.zeros(6), LABEL: [0, 0, 1, 1, 2, 2]})
    evaluation = evaluate_model(FixedPredictions([0, 1, 1, 1, 2, 0]), test, label_column=LABEL)
    assert evaluation.accuracy == pytest.approx(4 / 6)
    assert evaluation.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert evaluation.per_class["1"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2.0,
    }
    # f1: class0 = 0.5, class1 = 0.8, class2 = 2/3
    assert evaluation.f1_macro == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert evaluation.roc_auc is None and evaluation.roc_curve is None
    assert set(evaluation.headline()) == {METRIC_ACCURACY, METRIC_F1_MACRO}


def test_binary_problems_get_a_finite_roc_curve():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    evaluation = evaluate_model(model, pd.DataFrame({"a": x[:, 0], "b": x[:, 1], LABEL: y}), label_column=LABEL)
    curve = evaluation.roc_curve
    assert curve is not None and evaluation.roc_auc is not None and evaluation.roc_auc > 0.95
    assert curve.fpr[0] == 0.0 and curve.tpr[-1] == 1.0
    assert all(np.isfinite(curve.thresholds))
    assert METRIC_ROC_AUC in evaluation.headline()


def test_gate_passes_at_the_threshold_and_explains_itself():
    assert gate_decision(0.9, min_accuracy=0.9).deploy
    blocked = gate_decision(0.5, min_accuracy=0.9)
    assert not blocked.deploy
    assert blocked.reason == "accuracy 0.5000 < threshold 0.9000: do not deploy"
    with pytest.raises(ValueError, match="within"):
        gate_decision(0.5, min_accuracy=1.5)


def test_a_model_that_guesses_does_not_pass_the_gate_and_the_report_says_so():
    x = np.arange(30.0).reshape(-1, 1)
    y = np.array([0, 1, 2] * 10)
    dummy = DummyClassifier(strategy="most_frequent").fit(x, y)
    evaluation = evaluate_model(dummy, pd.DataFrame({"a": x[:, 0], LABEL: y}), label_column=LABEL)
    decision = deploy_gate(evaluation, min_accuracy=0.9)
    assert not decision.deploy
    report = render_markdown_report(evaluation, decision)
    assert "do not deploy" in report
    assert "| **0** | 10 | 0 | 0 |" in report
