"""Score a trained model on the held-out split and decide whether it may be deployed.

Both tasks: classification (accuracy, macro F1, balanced accuracy, ROC AUC, per-class scores, confusion matrix) and
regression (RMSE, MAE, R², a residual summary). The gate compares one metric with a threshold in that metric's
direction (`GATE_METRICS`); search and champion/challenger compare candidates with `score` on the same names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from components.constants import (
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

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from components.features import FeatureSchema

Direction = Literal["higher", "lower"]

GATE_METRICS: dict[str, Direction] = {
    METRIC_ACCURACY: "higher",
    METRIC_F1_MACRO: "higher",
    METRIC_BALANCED_ACCURACY: "higher",
    GATE_METRIC_ROC_AUC: "higher",
    METRIC_R2: "higher",
    METRIC_RMSE: "lower",
    METRIC_MAE: "lower",
}
"""Every metric the gate, search and champion/challenger accept, and which way is better."""

METRIC_TASKS: dict[str, str] = {
    METRIC_ACCURACY: TASK_CLASSIFICATION,
    METRIC_F1_MACRO: TASK_CLASSIFICATION,
    METRIC_BALANCED_ACCURACY: TASK_CLASSIFICATION,
    GATE_METRIC_ROC_AUC: TASK_CLASSIFICATION,
    METRIC_R2: TASK_REGRESSION,
    METRIC_RMSE: TASK_REGRESSION,
    METRIC_MAE: TASK_REGRESSION,
}
"""The task each metric is defined for."""

_UNIT_INTERVAL_METRICS = (METRIC_ACCURACY, METRIC_F1_MACRO, METRIC_BALANCED_ACCURACY, GATE_METRIC_ROC_AUC)
_ERROR_METRICS = (METRIC_RMSE, METRIC_MAE)
RESIDUAL_QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
RESIDUAL_BINS = 10
_BAR_WIDTH = 40
_ROC_AUC_BINARY_ONLY = "roc_auc needs a binary label: use accuracy, f1_macro or balanced_accuracy"


class GateConfigError(ValueError):
    """A gate or comparison metric that does not exist, does not fit the task, or has an impossible threshold."""


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve (binary problems only: KFP's UI draws a single curve)."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


@dataclass(frozen=True)
class ResidualSummary:
    """Residuals (true - predicted) of a regression model: quantiles, a histogram, and error by predicted value."""

    quantiles: dict[str, float]
    """"p0" (min), "p5", "p25", "p50", "p75", "p95", "p100" (max)."""
    mean: float
    std: float
    histogram: list[tuple[float, float, int]]
    """(low edge, high edge, rows) per residual bin."""
    by_prediction: list[dict[str, float]]
    """Per bin of predicted values (equal row counts): low, high, rows, mean residual, mean |residual|."""


@dataclass(frozen=True)
class Evaluation:
    """Everything evaluate reports for either task; `scores` holds the headline metrics by their `constants` names."""

    task: str
    rows: int
    scores: dict[str, float]
    class_names: list[str] = field(default_factory=list)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    """Class name -> precision, recall, f1, support (classification only)."""
    confusion_matrix: list[list[int]] = field(default_factory=list)
    """Rows are true classes, columns predicted, both in `class_names` order (classification only)."""
    roc_curve: RocCurve | None = None
    residuals: ResidualSummary | None = None

    @property
    def accuracy(self) -> float:
        """Test accuracy (NaN for a regression model)."""
        return self.scores.get(METRIC_ACCURACY, math.nan)

    @property
    def f1_macro(self) -> float:
        """Macro-averaged F1 (NaN for a regression model)."""
        return self.scores.get(METRIC_F1_MACRO, math.nan)

    @property
    def roc_auc(self) -> float | None:
        """ROC AUC (binary, or one-vs-rest when every class is in the test split), else None."""
        return self.scores.get(METRIC_ROC_AUC)

    def headline(self) -> dict[str, float]:
        """The scalar metrics, keyed by the names in `constants` (what KFP `Metrics` logs)."""
        return dict(self.scores)


@dataclass(frozen=True)
class GateDecision:
    """Whether the model may be deployed, and why, in words a run's reader understands."""

    deploy: bool
    reason: str


def default_metric(task: str) -> str:
    """The metric search and champion/challenger compare on when none is given: accuracy or R²."""
    _check_task(task)
    return METRIC_ACCURACY if task == TASK_CLASSIFICATION else METRIC_R2


def check_metric(metric: str, task: str | None = None, *, what: str = "gate_metric") -> None:
    """Refuse, in one line, a metric that does not exist or (when `task` is known) does not fit the task.

    Args:
        metric: A key of `GATE_METRICS`.
        task: `classification`, `regression`, or None / "" when the task is not known yet (inferred later).
        what: The parameter's name, for the message.

    Raises:
        GateConfigError: Unknown metric, or a metric of the other task.
    """
    if metric not in GATE_METRICS:
        raise GateConfigError(f"{what} {metric!r} is not a known metric: use one of {', '.join(GATE_METRICS)}")
    if not task:
        return
    _check_task(task)
    if METRIC_TASKS[metric] != task:
        allowed = [name for name, owner in METRIC_TASKS.items() if owner == task]
        raise GateConfigError(
            f"{what} {metric!r} is a {METRIC_TASKS[metric]} metric but this is a {task} model: "
            f"use one of {', '.join(allowed)}"
        )


def check_gate(*, gate_metric: str, gate_threshold: float, task: str | None = None) -> None:
    """Pre-flight check of the gate parameters (`task` None or "": checked again once the data step has inferred it).

    Raises:
        GateConfigError: Unknown or wrong-task metric, or a threshold the metric can never reach.
    """
    if not math.isfinite(gate_threshold):
        raise GateConfigError(f"gate_threshold must be a finite number, got {gate_threshold}")
    if not gate_metric:
        return
    check_metric(gate_metric, task)
    if gate_metric in _UNIT_INTERVAL_METRICS and not 0.0 <= gate_threshold <= 1.0:
        raise GateConfigError(f"gate_threshold for {gate_metric} must be within [0, 1], got {gate_threshold}")
    if gate_metric in _ERROR_METRICS and gate_threshold <= 0.0:
        raise GateConfigError(
            f"gate_threshold for {gate_metric} is the largest error allowed and must be above 0, got {gate_threshold}"
        )
    if gate_metric == METRIC_R2 and gate_threshold > 1.0:
        raise GateConfigError(f"gate_threshold for r2 must be at most 1, got {gate_threshold}")


def score(estimator: Any, x: np.ndarray, y: Any, *, metric: str, task: str) -> float:
    """One metric of `estimator` on rows `x` (the `feature_matrix` representation) with true labels/targets `y`.

    Args:
        estimator: A fitted scikit-learn estimator or Pipeline.
        x: Feature rows as `components.features.feature_matrix` returns them.
        y: True class labels (classification) or target values (regression).
        metric: A key of `GATE_METRICS` that fits `task`.
        task: `classification` or `regression`.

    Returns:
        The metric's value (its direction is `GATE_METRICS[metric]`).

    Raises:
        GateConfigError: The metric does not exist, does not fit the task, or (roc_auc) cannot be computed here.
    """
    import numpy as np
    from sklearn import metrics

    check_metric(metric, task, what="metric")
    y = np.asarray(y)
    if metric == GATE_METRIC_ROC_AUC:
        return _binary_roc_auc(estimator, x, y)
    predicted = np.asarray(estimator.predict(x))
    if task == TASK_CLASSIFICATION:
        y = _labels_like(y, getattr(estimator, "classes_", None))
        if metric == METRIC_ACCURACY:
            return float(metrics.accuracy_score(y, predicted))
        if metric == METRIC_BALANCED_ACCURACY:
            return float(metrics.balanced_accuracy_score(y, predicted))
        return float(metrics.f1_score(y, predicted, average="macro", zero_division=0))
    y_true, y_pred = y.astype(np.float64), predicted.astype(np.float64)
    if metric == METRIC_R2:
        return float(metrics.r2_score(y_true, y_pred))
    if metric == METRIC_RMSE:
        return float(metrics.root_mean_squared_error(y_true, y_pred))
    return float(metrics.mean_absolute_error(y_true, y_pred))


def evaluate_model(
    estimator: Any,
    test_frame: pd.DataFrame,
    *,
    schema: FeatureSchema | None = None,
    label_column: str | None = None,
) -> Evaluation:
    """Score `estimator` on `test_frame`: the columns and task of `schema`.

    Args:
        estimator: The fitted model (a Pipeline taking `feature_matrix` rows).
        test_frame: The held-out split, label column included.
        schema: The data step's feature schema. None: the schema-version-1 layout (every column but
            `label_column` a float feature, classification), for callers that predate the schema.
        label_column: Only without `schema`.

    Returns:
        The evaluation of the schema's task.
    """
    if schema is not None:
        from components.features import feature_matrix

        x = feature_matrix(test_frame, schema)
        y = test_frame[schema.label_column].to_numpy()
        task = schema.task
    else:
        if label_column is None:
            raise TypeError("evaluate_model needs schema= (or label_column= for an all-numeric classifier)")
        from components.data import features_and_labels

        x_frame, y_frame = features_and_labels(test_frame, label_column=label_column)
        x, y, task = x_frame.to_numpy(dtype=float), y_frame.to_numpy(), TASK_CLASSIFICATION
    if task == TASK_REGRESSION:
        return _evaluate_regression(estimator, x, y)
    return _evaluate_classification(estimator, x, y)


def _evaluate_classification(estimator: Any, x: np.ndarray, y: np.ndarray) -> Evaluation:
    import numpy as np
    from sklearn import metrics

    classes = list(estimator.classes_)
    y = _labels_like(y, estimator.classes_)
    predicted = estimator.predict(x)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    names = [str(c) for c in classes]
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": float(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    scores = {
        METRIC_ACCURACY: float(metrics.accuracy_score(y, predicted)),
        METRIC_F1_MACRO: float(metrics.f1_score(y, predicted, average="macro", labels=classes, zero_division=0)),
        METRIC_BALANCED_ACCURACY: float(metrics.balanced_accuracy_score(y, predicted)),
    }
    curve: RocCurve | None = None
    if hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(x)
        present = set(np.unique(y).tolist())
        if len(classes) == 2 and len(present) == 2:
            scores[METRIC_ROC_AUC] = float(metrics.roc_auc_score(y == classes[1], proba[:, 1]))
            fpr, tpr, thresholds = metrics.roc_curve(y, proba[:, 1], pos_label=classes[1])
            # roc_curve's first threshold is +inf, which JSON (and KFP's UI) cannot hold.
            finite = np.nan_to_num(thresholds, posinf=1.0)
            curve = RocCurve(fpr.tolist(), tpr.tolist(), finite.tolist())
        elif len(classes) > 2 and present == set(classes):
            scores[METRIC_ROC_AUC] = float(metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return Evaluation(
        task=TASK_CLASSIFICATION,
        rows=len(y),
        scores=scores,
        class_names=names,
        per_class=per_class,
        confusion_matrix=metrics.confusion_matrix(y, predicted, labels=classes).tolist(),
        roc_curve=curve,
    )


def _evaluate_regression(estimator: Any, x: np.ndarray, y: np.ndarray) -> Evaluation:
    import numpy as np
    from sklearn import metrics

    y_true = np.asarray(y, dtype=np.float64)
    y_pred = np.asarray(estimator.predict(x), dtype=np.float64).ravel()
    scores = {
        METRIC_RMSE: float(metrics.root_mean_squared_error(y_true, y_pred)),
        METRIC_MAE: float(metrics.mean_absolute_error(y_true, y_pred)),
        # R² of fewer than two rows is undefined; NaN says so instead of sklearn's warning.
        METRIC_R2: float(metrics.r2_score(y_true, y_pred)) if len(y_true) >= 2 else math.nan,
    }
    return Evaluation(task=TASK_REGRESSION, rows=len(y_true), scores=scores, residuals=residual_summary(y_true, y_pred))


def residual_summary(y_true: np.ndarray, y_pred: np.ndarray) -> ResidualSummary:
    """Quantiles and histogram of `y_true - y_pred`, and the error per bin of predicted values.

    The bins by prediction have (nearly) equal row counts, so a model that is biased at the high or low end shows
    it as a mean residual far from 0 in the first or last bins.
    """
    import numpy as np

    residuals = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    quantiles = np.quantile(residuals, RESIDUAL_QUANTILES)
    low, high = float(residuals.min()), float(residuals.max())
    counts, edges = np.histogram(residuals, bins=RESIDUAL_BINS, range=(low, high) if high > low else None)
    histogram = [(float(edges[i]), float(edges[i + 1]), int(count)) for i, count in enumerate(counts.tolist())]
    order = np.argsort(y_pred, kind="stable")
    by_prediction = []
    for chunk in np.array_split(order, min(RESIDUAL_BINS, len(order))):
        part = residuals[chunk]
        by_prediction.append(
            {
                "low": float(y_pred[chunk].min()),
                "high": float(y_pred[chunk].max()),
                "rows": float(len(chunk)),
                "mean_residual": float(part.mean()),
                "mean_abs_residual": float(np.abs(part).mean()),
            }
        )
    return ResidualSummary(
        quantiles={f"p{round(q * 100)}": float(v) for q, v in zip(RESIDUAL_QUANTILES, quantiles, strict=True)},
        mean=float(residuals.mean()),
        std=float(residuals.std()),
        histogram=histogram,
        by_prediction=by_prediction,
    )


def deploy_gate(
    evaluation: Evaluation, *, gate_metric: str = "", gate_threshold: float = 0.0, min_accuracy: float = 0.9
) -> GateDecision:
    """The deploy gate: one metric of the evaluation against a threshold, in the metric's direction.

    Args:
        evaluation: What `evaluate_model` returned.
        gate_metric: A key of `GATE_METRICS` fitting the task; "" keeps the old gate: classification accuracy
            >= `min_accuracy`, regression R² >= `gate_threshold`.
        gate_threshold: The threshold for `gate_metric` (and for R² when `gate_metric` is "" on regression).
        min_accuracy: The old accuracy gate, used when `gate_metric` is "" on classification.

    Raises:
        GateConfigError: Unknown or wrong-task metric, impossible threshold, or a metric this test split cannot give.
    """
    if gate_metric == GATE_METRIC_ROC_AUC and len(evaluation.class_names) != 2:
        # The evaluation's multi-class ROC AUC is one-vs-rest; the gate's roc_auc is the binary one.
        raise GateConfigError(_ROC_AUC_BINARY_ONLY)
    return gate_from_scores(
        evaluation.scores,
        task=evaluation.task,
        gate_metric=gate_metric,
        gate_threshold=gate_threshold,
        min_accuracy=min_accuracy,
    )


def gate_from_scores(
    scores: Mapping[str, float],
    *,
    task: str,
    gate_metric: str = "",
    gate_threshold: float = 0.0,
    min_accuracy: float = 0.9,
) -> GateDecision:
    """The gate on headline scores (e.g. a run's KFP metrics), so a run's summary can restate the decision.

    Same arguments as `deploy_gate`, with `scores` = `Evaluation.scores` and the model's `task`.
    """
    if not gate_metric and task == TASK_CLASSIFICATION:
        return gate_decision(_available(scores, METRIC_ACCURACY), min_accuracy=min_accuracy)
    metric = gate_metric or METRIC_R2
    check_gate(gate_metric=metric, gate_threshold=gate_threshold, task=task)
    key = METRIC_ROC_AUC if metric == GATE_METRIC_ROC_AUC else metric
    return threshold_decision(metric, _available(scores, key, gate_metric=metric), gate_threshold)


def threshold_decision(metric: str, value: float, threshold: float) -> GateDecision:
    """Compare `value` of `metric` with `threshold` in the metric's direction; NaN never passes."""
    higher = GATE_METRICS[metric] == "higher"
    deploy = value >= threshold if higher else value <= threshold
    verdict = {(True, True): ">=", (True, False): "<", (False, True): "<=", (False, False): ">"}[(higher, deploy)]
    action = "deploy" if deploy else "do not deploy"
    return GateDecision(deploy=deploy, reason=f"{metric} {value:.4f} {verdict} threshold {threshold:.4f}: {action}")


def gate_decision(accuracy: float, *, min_accuracy: float) -> GateDecision:
    """The old gate on a bare accuracy: deploy when `accuracy >= min_accuracy`."""
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be within [0, 1], got {min_accuracy}")
    return threshold_decision(METRIC_ACCURACY, accuracy, min_accuracy)


def render_markdown_report(evaluation: Evaluation, decision: GateDecision) -> str:
    """A short report for KFP's Markdown viewer: headline metrics, the gate, then per-task detail."""
    lines = ["# Evaluation", "", f"Task: {evaluation.task}", "", f"Test rows: {evaluation.rows}", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in evaluation.headline().items()]
    lines += ["", f"**Deploy gate:** {decision.reason}", ""]
    if evaluation.task == TASK_REGRESSION and evaluation.residuals is not None:
        lines += _residual_lines(evaluation.residuals)
    else:
        lines += _classification_lines(evaluation)
    return "\n".join(lines) + "\n"


def _classification_lines(evaluation: Evaluation) -> list[str]:
    lines = ["## Per class", "", "| class | precision | recall | f1 | support |", "| --- | --- | --- | --- | --- |"]
    for name, row in evaluation.per_class.items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {int(row['support'])} |"
        )
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| | " + " | ".join(evaluation.class_names) + " |")
    lines.append("| --- " * (len(evaluation.class_names) + 1) + "|")
    for name, counts in zip(evaluation.class_names, evaluation.confusion_matrix, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in counts) + " |")
    return lines


def _residual_lines(residuals: ResidualSummary) -> list[str]:
    quantiles = residuals.quantiles
    lines = ["## Residuals (true - predicted)", ""]
    lines += ["| " + " | ".join(["mean", "std", *quantiles]) + " |", "| --- " * (len(quantiles) + 2) + "|"]
    values = [residuals.mean, residuals.std, *quantiles.values()]
    lines += ["| " + " | ".join(f"{v:.4g}" for v in values) + " |", ""]
    lines += ["Histogram:", "", "```"]
    peak = max((count for _, _, count in residuals.histogram), default=0) or 1
    for low, high, count in residuals.histogram:
        bar = "#" * round(_BAR_WIDTH * count / peak)
        lines.append(f"[{low:>11.4g}, {high:>11.4g}) {count:>6} {bar}")
    lines += ["```", "", "## Error by predicted value (equal-count bins)", ""]
    lines += ["| predicted from | to | rows | mean residual | mean abs residual |", "| --- | --- | --- | --- | --- |"]
    for row in residuals.by_prediction:
        lines.append(
            f"| {row['low']:.4g} | {row['high']:.4g} | {int(row['rows'])} | {row['mean_residual']:.4g} "
            f"| {row['mean_abs_residual']:.4g} |"
        )
    return lines


def _binary_roc_auc(estimator: Any, x: np.ndarray, y: np.ndarray) -> float:
    import numpy as np
    from sklearn import metrics

    classes = getattr(estimator, "classes_", None)
    if classes is None or len(classes) != 2:
        raise GateConfigError(_ROC_AUC_BINARY_ONLY)
    y = _labels_like(y, classes)
    if len(np.unique(y)) != 2:
        raise GateConfigError("roc_auc needs rows of both classes; these rows hold only one")
    if hasattr(estimator, "predict_proba"):
        positive = np.asarray(estimator.predict_proba(x))[:, 1]
    elif hasattr(estimator, "decision_function"):
        positive = np.asarray(estimator.decision_function(x)).ravel()
    else:
        raise GateConfigError("roc_auc needs a model with predict_proba or decision_function")
    return float(metrics.roc_auc_score(y == classes[1], positive))


def _labels_like(y: np.ndarray, classes: Any) -> np.ndarray:
    """`y` in the dtype of the estimator's classes: a label column read back as numbers may meet string classes."""
    import numpy as np

    y = np.asarray(y)
    if classes is not None and np.asarray(classes).dtype.kind in "OUS" and y.dtype.kind not in "OUS":
        return y.astype(str).astype(object)
    return y


def _available(scores: Mapping[str, float], key: str, *, gate_metric: str = "") -> float:
    if key not in scores:
        why = " (ROC AUC needs predict_proba and both classes in the test split)" if key == METRIC_ROC_AUC else ""
        raise GateConfigError(f"gate_metric {gate_metric or key!r}: the evaluation has no {key}{why}")
    return float(scores[key])


def _check_task(task: str) -> None:
    if task not in (TASK_CLASSIFICATION, TASK_REGRESSION):
        raise GateConfigError(f"task must be {TASK_CLASSIFICATION!r} or {TASK_REGRESSION!r}, got {task!r}")
