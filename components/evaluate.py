"""Score a trained model on the held-out split and decide whether it may be deployed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from components.constants import METRIC_ACCURACY, METRIC_F1_MACRO, METRIC_ROC_AUC

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve (binary problems only: KFP's UI draws a single curve)."""

    fpr: list[float]
    tpr: list[float]
    thresholds: list[float]


@dataclass(frozen=True)
class Evaluation:
    """Everything evaluate reports: headline metrics, per-class scores, confusion matrix, ROC."""

    accuracy: float
    f1_macro: float
    per_class: dict[str, dict[str, float]]
    """Class name -> precision, recall, f1, support."""
    class_names: list[str]
    confusion_matrix: list[list[int]]
    """Rows are true classes, columns predicted, both in `class_names` order."""
    rows: int
    roc_auc: float | None = None
    roc_curve: RocCurve | None = None

    def headline(self) -> dict[str, float]:
        """The scalar metrics, keyed by the names in `constants`."""
        scores = {METRIC_ACCURACY: self.accuracy, METRIC_F1_MACRO: self.f1_macro}
        if self.roc_auc is not None:
            scores[METRIC_ROC_AUC] = self.roc_auc
        return scores


@dataclass(frozen=True)
class GateDecision:
    """Whether the model may be deployed, and why, in words a run's reader understands."""

    deploy: bool
    reason: str


def evaluate_model(estimator: Any, test: pd.DataFrame, *, label_column: str) -> Evaluation:
    """Score `estimator` on `test` (features = every column but the label)."""
    import numpy as np
    from sklearn import metrics

    from components.data import features_and_labels

    x_frame, y_frame = features_and_labels(test, label_column=label_column)
    x, y = x_frame.to_numpy(dtype=float), y_frame.to_numpy()
    classes = list(estimator.classes_)
    predicted = estimator.predict(x)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, predicted, labels=classes, zero_division=0
    )
    names = [str(c) for c in classes]
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": float(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }
    roc_auc: float | None = None
    curve: RocCurve | None = None
    if hasattr(estimator, "predict_proba"):
        proba = estimator.predict_proba(x)
        present = set(np.unique(y))
        if len(classes) == 2 and len(present) == 2:
            roc_auc = float(metrics.roc_auc_score(y, proba[:, 1]))
            fpr, tpr, thresholds = metrics.roc_curve(y, proba[:, 1], pos_label=classes[1])
            # roc_curve's first threshold is +inf, which JSON (and KFP's UI) cannot hold.
            finite = np.nan_to_num(thresholds, posinf=1.0)
            curve = RocCurve(fpr.tolist(), tpr.tolist(), finite.tolist())
        elif len(classes) > 2 and present == set(classes):
            roc_auc = float(metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return Evaluation(
        accuracy=float(metrics.accuracy_score(y, predicted)),
        f1_macro=float(metrics.f1_score(y, predicted, average="macro", labels=classes, zero_division=0)),
        per_class=per_class,
        class_names=names,
        confusion_matrix=metrics.confusion_matrix(y, predicted, labels=classes).tolist(),
        rows=len(y),
        roc_auc=roc_auc,
        roc_curve=curve,
    )


def deploy_gate(evaluation: Evaluation, *, min_accuracy: float) -> GateDecision:
    """The pipeline deploys only a model whose test accuracy reaches `min_accuracy`."""
    return gate_decision(evaluation.accuracy, min_accuracy=min_accuracy)


def gate_decision(accuracy: float, *, min_accuracy: float) -> GateDecision:
    """The gate on a bare accuracy, so a run's summary can restate the decision from its metrics."""
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must be within [0, 1], got {min_accuracy}")
    deploy = accuracy >= min_accuracy
    verdict, action = (">=", "deploy") if deploy else ("<", "do not deploy")
    return GateDecision(
        deploy=deploy, reason=f"accuracy {accuracy:.4f} {verdict} threshold {min_accuracy:.4f}: {action}"
    )


def render_markdown_report(evaluation: Evaluation, decision: GateDecision) -> str:
    """A short report for KFP's Markdown viewer: headline metrics, gate, per-class table, confusion matrix."""
    lines = ["# Evaluation", "", f"Test rows: {evaluation.rows}", ""]
    lines += ["| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.4f} |" for name, value in evaluation.headline().items()]
    lines += ["", f"**Deploy gate:** {decision.reason}", "", "## Per class", ""]
    lines += ["| class | precision | recall | f1 | support |", "| --- | --- | --- | --- | --- |"]
    for name, row in evaluation.per_class.items():
        lines.append(
            f"| {name} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {int(row['support'])} |"
        )
    lines += ["", "## Confusion matrix (rows: true, columns: predicted)", ""]
    lines.append("| | " + " | ".join(evaluation.class_names) + " |")
    lines.append("| --- " * (len(evaluation.class_names) + 1) + "|")
    for name, counts in zip(evaluation.class_names, evaluation.confusion_matrix, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in counts) + " |")
    return "\n".join(lines) + "\n"
