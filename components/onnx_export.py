"""Convert a fitted scikit-learn classifier to ONNX and keep the file only if it predicts exactly like sklearn.

The ONNX file is a speed-up, never a second source of truth: it is written only when ONNX Runtime returns the
same class as sklearn on every held-out row, and its probabilities stay within `ONNX_PROBA_TOLERANCE`. Anything
that cannot be converted or does not agree yields `None` and the server falls back to the joblib model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import atomic_write_bytes
from components.constants import (
    ONNX_LABEL_OUTPUT,
    ONNX_ML_TARGET_OPSET,
    ONNX_PROBA_OUTPUT,
    ONNX_PROBA_TOLERANCE,
    ONNX_TARGET_OPSET,
)
from components.onnx_forest import final_forest, rebuild_forest_node

logger = logging.getLogger(__name__)

ONNX_INPUT_NAME = "X"
_TREE_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")


def export_verified_onnx(estimator: Any, x_check: np.ndarray, path: Path) -> dict[str, Any] | None:
    """Write `path` as ONNX only if it reproduces the estimator's predictions on `x_check`.

    The graph takes float64 input (sklearn's own dtype for linear models, so rows near a decision boundary agree);
    tree ensembles see that input rounded to float32 first, as sklearn's trees do. A RandomForest/ExtraTrees
    classifier is first tried as `components.onnx_forest` rebuilds it (float32 trees, sklearn's exact branches).
    Falls back to a float32 graph when the double one cannot be built.

    Args:
        estimator: A fitted scikit-learn classifier or Pipeline (e.g. StandardScaler + LogisticRegression).
        x_check: Held-out feature rows (2-D) to compare sklearn and ONNX Runtime on.
        path: Where to write the ONNX file (`constants.ONNX_FILENAME` inside the model directory).

    Returns:
        A JSON-able report for `ModelCard.onnx` (rows checked, max probability difference, tolerance, opsets,
        library versions, input dtype), or None when the estimator cannot be converted or does not agree.
    """
    x = np.asarray(x_check, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        logger.warning("ONNX export skipped: x_check must be a non-empty 2-D array, got shape %s", x.shape)
        return None
    try:
        expected_labels = np.asarray(estimator.predict(x))
        expected_proba = np.asarray(estimator.predict_proba(x)) if hasattr(estimator, "predict_proba") else None
    except Exception as exc:  # the estimator itself is unusable on this data: nothing to compare against
        logger.warning("ONNX export skipped: sklearn could not predict on x_check (%s)", exc)
        return None

    failures: list[str] = []
    for dtype, rebuild_forest in _candidate_graphs(estimator):
        name = f"{np.dtype(dtype).name}{' exact-forest' if rebuild_forest else ''}"
        try:
            model_bytes, tree_rounding = _convert(
                estimator, n_features=x.shape[1], dtype=dtype, rebuild_forest=rebuild_forest
            )
            labels, proba = _run(model_bytes, x.astype(dtype))
        except Exception as exc:  # skl2onnx raises many types for unsupported estimators/options
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        problem, max_diff = _compare(expected_labels, expected_proba, labels, proba)
        if problem:
            failures.append(f"{name}: {problem}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model_bytes)  # a crash never leaves a half-written model.onnx behind
        return _report(
            x.shape[0],
            max_diff,
            dtype,
            tree_rounding,
            exact_forest=rebuild_forest,
            has_probabilities=expected_proba is not None,
        )
    logger.warning("ONNX export skipped, the server will use joblib: %s", "; ".join(failures))
    return None


def _candidate_graphs(estimator: Any) -> list[tuple[type[np.floating], bool]]:
    """(input dtype, rebuild the forest node) pairs to try, fastest exact graph first."""
    plain: list[tuple[type[np.floating], bool]] = [(np.float64, False), (np.float32, False)]
    return [(np.float64, True), *plain] if final_forest(estimator) is not None else plain


def _convert(
    estimator: Any, *, n_features: int, dtype: type[np.floating], rebuild_forest: bool = False
) -> tuple[bytes, bool]:
    """Run skl2onnx; returns the serialized model and whether tree inputs were rounded to float32."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    tensor_type = DoubleTensorType if dtype == np.float64 else FloatTensorType
    final_step = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    model = to_onnx(
        estimator,
        initial_types=[(ONNX_INPUT_NAME, tensor_type([None, n_features]))],
        # Plain arrays, not a list of {class: p} maps: cheaper to run and to turn into JSON.
        options={id(final_step): {"zipmap": False}},
        target_opset={"": ONNX_TARGET_OPSET, "ai.onnx.ml": ONNX_ML_TARGET_OPSET},
    )
    if rebuild_forest:
        if not rebuild_forest_node(model, final_forest(estimator)):
            raise ValueError("the graph has no single forest node to rebuild")
        return model.SerializeToString(), True
    rounded = _round_tree_inputs_to_float32(model) if dtype == np.float64 else False
    return model.SerializeToString(), rounded


def _round_tree_inputs_to_float32(model: Any) -> bool:
    """Insert Cast(float32)->Cast(float64) before each tree ensemble.

    sklearn's trees cast X to float32 before comparing it with their float64 thresholds; a double ONNX graph
    would compare the unrounded value, and a row within float32 rounding of a threshold could go the other way.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    rewritten: list[Any] = []
    changed = False
    for node in graph.node:
        if node.op_type in _TREE_ENSEMBLE_OPS and node.input:
            source = node.input[0]
            as_float, as_double = f"{source}_f32_{len(rewritten)}", f"{source}_f32_f64_{len(rewritten)}"
            rewritten.append(helper.make_node("Cast", [source], [as_float], to=TensorProto.FLOAT))
            rewritten.append(helper.make_node("Cast", [as_float], [as_double], to=TensorProto.DOUBLE))
            node.input[0] = as_double
            changed = True
        rewritten.append(node)
    if changed:
        del graph.node[:]
        graph.node.extend(rewritten)
    return changed


def _run(model_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict labels (and probabilities when the graph has them) with ONNX Runtime."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [out.name for out in session.get_outputs()]
    wanted = [ONNX_LABEL_OUTPUT] + ([ONNX_PROBA_OUTPUT] if ONNX_PROBA_OUTPUT in names else [])
    outputs = session.run(wanted, {session.get_inputs()[0].name: x})
    return np.asarray(outputs[0]).ravel(), (np.asarray(outputs[1]) if len(outputs) > 1 else None)


def _compare(
    expected_labels: np.ndarray,
    expected_proba: np.ndarray | None,
    labels: np.ndarray,
    proba: np.ndarray | None,
) -> tuple[str | None, float]:
    """Return (what differs or None, max absolute probability difference)."""
    if labels.shape != expected_labels.shape or labels.tolist() != expected_labels.tolist():
        if labels.shape != expected_labels.shape:
            return f"label shape {labels.shape} differs from sklearn's {expected_labels.shape}", float("nan")
        differing = int(np.sum(labels.astype(str) != expected_labels.astype(str)))
        return f"labels differ from sklearn on {differing} of {labels.shape[0]} rows", float("nan")
    if expected_proba is None:
        return None, 0.0
    if proba is None or proba.shape != expected_proba.shape:
        return "ONNX graph has no probabilities matching sklearn's predict_proba", float("nan")
    max_diff = float(np.max(np.abs(proba.astype(np.float64) - expected_proba)))
    if not max_diff <= ONNX_PROBA_TOLERANCE:
        return f"probabilities differ by {max_diff:.3g} > {ONNX_PROBA_TOLERANCE}", max_diff
    return None, max_diff


def _report(
    rows: int,
    max_diff: float,
    dtype: type[np.floating],
    tree_rounding: bool,
    *,
    exact_forest: bool,
    has_probabilities: bool,
) -> dict[str, Any]:
    import onnxruntime
    import skl2onnx

    return {
        "rows_checked": rows,
        "labels_identical": True,
        # False when sklearn has no predict_proba: the graph's second output is then scores, not probabilities.
        "has_probabilities": has_probabilities,
        "max_abs_proba_diff": max_diff,
        "proba_tolerance": ONNX_PROBA_TOLERANCE,
        "opset": {"": ONNX_TARGET_OPSET, "ai.onnx.ml": ONNX_ML_TARGET_OPSET},
        "dtype": np.dtype(dtype).name,
        "tree_inputs_rounded_to_float32": tree_rounding,
        # The forest walks float32 trees with thresholds rounded down: branches identical to sklearn's.
        "exact_float32_forest": exact_forest,
        "onnxruntime": onnxruntime.__version__,
        "skl2onnx": skl2onnx.__version__,
    }
