"""Convert a fitted scikit-learn pipeline to ONNX and keep the file only if it predicts like sklearn.

The ONNX file is a speed-up, never a second source of truth: it is written only when ONNX Runtime, fed by
`onnx_feed`, returns on every held-out row

- classification: the same class as sklearn, with probabilities within `ONNX_PROBA_TOLERANCE`;
- regression: a value within `ONNX_REGRESSION_RTOL` x the largest |sklearn prediction| of sklearn's.

Anything that cannot be converted or does not agree is reported with the reason, and the server uses joblib.

Graph inputs. An all-numeric schema (and every model card from before typed features) has one `[N, n_features]`
tensor, `X`. Any other schema has one input per kind of column, so each has one ONNX type: `numeric` (float64, the
numeric features in schema order, NaN = missing) and `categorical` (strings, the categorical features in schema
order, a missing value fed as `MISSING_CATEGORY`, which is exactly what the pipeline's categorical imputer turns it
into). `onnx_feed` turns the `feature_matrix` representation into these inputs; the converted pipeline is a copy
whose `ColumnTransformer` selects columns of those inputs instead of the object matrix, with the same fitted steps.

Numerics run in float64 wherever ONNX Runtime has a float64 kernel (linear models, scalers, one-hot, imputation as
`Where(IsNaN)`), so they agree with sklearn to the last bits. Where it has only float32 kernels (tree ensembles'
outputs, SVM regression) the graph casts around that operator: that is what the regression tolerance is for.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from components.atomic import atomic_write_bytes
from components.constants import (
    MISSING_CATEGORY,
    ONNX_CATEGORICAL_INPUT,
    ONNX_LABEL_OUTPUT,
    ONNX_ML_TARGET_OPSET,
    ONNX_NUMERIC_INPUT,
    ONNX_PROBA_OUTPUT,
    ONNX_PROBA_TOLERANCE,
    ONNX_REGRESSION_RTOL,
    ONNX_TARGET_OPSET,
    ONNX_VALUE_OUTPUT,
    SERVING_PATH_JOBLIB,
    SERVING_PATH_ONNX,
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
)
from components.onnx_forest import final_forest, rebuild_forest_node
from components.onnx_hgb import final_hist_gradient_boosting, rebuild_hgb_node

if TYPE_CHECKING:
    from components.features import FeatureSchema

logger = logging.getLogger(__name__)

ONNX_INPUT_NAME = "X"
"""The one input of an all-numeric graph."""
_TREE_ENSEMBLE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "TreeEnsemble")
_FLOAT_ONLY_INPUT_OPS = ("SVMRegressor",)
"""ai.onnx.ml operators ONNX Runtime runs on float32 input only: a float64 graph feeds them a cast."""
_REASON_MAX_CHARS = 900
"""The card keeps this much of why no graph was kept (each candidate's error is cut to 200 characters)."""
_FOREST, _HGB = "forest", "hgb"
"""Tree nodes `_convert` can rebuild: a forest classifier (components.onnx_forest), HistGradientBoosting (onnx_hgb)."""


class _NotConvertible(ValueError):
    """This pipeline's structure has no ONNX form here; the message is the reason recorded in the card."""


@dataclass(frozen=True)
class InputLayout:
    """Which `feature_matrix` columns feed which graph input."""

    numeric: tuple[int, ...]
    categorical: tuple[int, ...]
    single: bool
    """True: one float tensor `X` holds every column (all-numeric schema, or a card from before schemas)."""

    @classmethod
    def of(cls, schema: FeatureSchema | None, n_features: int) -> InputLayout:
        """The layout for `schema` (None: all `n_features` columns numeric, one input)."""
        if schema is None or schema.all_numeric:
            return cls(tuple(range(n_features)), (), single=True)
        kinds = [feature.kind for feature in schema.features]
        return cls(
            tuple(i for i, kind in enumerate(kinds) if kind != "categorical"),
            tuple(i for i, kind in enumerate(kinds) if kind == "categorical"),
            single=False,
        )


def make_onnx_feed(schema: FeatureSchema | None) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function from `feature_matrix` rows to the graph's inputs, with the column split worked out once.

    The server builds it once per model and calls it per request (`onnx_feed` is the one-off form).
    """
    if schema is None or schema.all_numeric:
        return _single_feed
    layout = InputLayout.of(schema, len(schema.features))
    numeric, categorical = list(layout.numeric), list(layout.categorical)

    def feed(x: np.ndarray) -> dict[str, np.ndarray]:
        inputs: dict[str, np.ndarray] = {}
        if numeric:
            inputs[ONNX_NUMERIC_INPUT] = np.asarray(x[:, numeric], dtype=np.float64)
        if categorical:
            values = np.asarray(x[:, categorical], dtype=object)  # fancy indexing: a copy, safe to fill
            # NaN is the only value unequal to itself; None may come from a caller that skipped feature_matrix.
            missing = (values != values) | (values == None)  # noqa: E711 - elementwise, not identity
            values[missing] = MISSING_CATEGORY
            inputs[ONNX_CATEGORICAL_INPUT] = values
        return inputs

    return feed


def onnx_feed(x: np.ndarray, schema: FeatureSchema | None) -> dict[str, np.ndarray]:
    """The graph's inputs for `x`, rows in the `feature_matrix` representation of `schema`.

    Args:
        x: 2-D rows: float64 for an all-numeric schema, else dtype=object (floats, category strings, NaN = missing).
        schema: The model's feature schema; None for a card from before schemas (all numeric).

    Returns:
        `{"X": float64 [N, n]}` for an all-numeric schema (cast it to the graph's input type, float32 for some
        tree graphs), else `{"numeric": float64 [N, n_numeric], "categorical": str objects [N, n_categorical]}`
        (only the kinds the schema has).
    """
    return make_onnx_feed(schema)(x)


def _single_feed(x: np.ndarray) -> dict[str, np.ndarray]:
    return {ONNX_INPUT_NAME: np.asarray(x, dtype=np.float64)}


def onnx_serving_path(report: dict[str, Any] | None) -> str:
    """`ModelCard.serving_path` for an export report: `onnx` when the graph was kept, else `joblib`."""
    return SERVING_PATH_ONNX if report and report.get("kept", True) else SERVING_PATH_JOBLIB


def export_verified_onnx(
    estimator: Any, x_check: np.ndarray, path: Path, *, schema: FeatureSchema | None = None
) -> dict[str, Any] | None:
    """Write `path` as ONNX only if it reproduces the estimator's predictions on `x_check`.

    The graph takes float64 numerics (sklearn's own dtype, so rows near a decision boundary agree); tree
    ensembles from sklearn's decision trees see that input rounded to float32 first, as sklearn's trees do
    (HistGradientBoosting compares in float64 and gets no rounding). A RandomForest/ExtraTrees classifier is first
    tried as `components.onnx_forest` rebuilds it (float32 trees, sklearn's exact branches). An all-numeric graph
    falls back to float32 input when the double one cannot be built.

    Args:
        estimator: A fitted scikit-learn classifier or regressor, or a Pipeline ending in one.
        x_check: Held-out rows (2-D, `feature_matrix` representation) to compare sklearn and ONNX Runtime on.
        path: Where to write the ONNX file (`constants.ONNX_FILENAME` inside the model directory).
        schema: The model's feature schema. None: the pre-schema call (all numeric; returns None when not kept).

    Returns:
        With `schema`, always a JSON-able dict for `ModelCard.onnx`: kept -> `"kept": True`, `"serving_path":
        "onnx"`, rows checked, the differences found and the tolerance, opsets, input types, library versions;
        not kept -> `{"kept": False, "serving_path": "joblib", "reason": ...}` and no file. Without `schema`, the
        same report when kept, else None.
    """
    report = _export(estimator, x_check, path, schema=schema)
    if schema is None and not report["kept"]:
        return None
    return report


def _export(estimator: Any, x_check: np.ndarray, path: Path, *, schema: FeatureSchema | None) -> dict[str, Any]:
    from sklearn.base import is_regressor

    task = schema.task if schema is not None else (TASK_REGRESSION if is_regressor(estimator) else TASK_CLASSIFICATION)
    x = np.asarray(x_check)
    if x.ndim != 2 or x.shape[0] == 0:
        return _not_kept(f"the check rows must be a non-empty 2-D array, got shape {x.shape}")
    layout = InputLayout.of(schema, x.shape[1])
    if layout.single:
        x = x.astype(np.float64)
    try:
        expected = _sklearn_predictions(estimator, x, task)
    except Exception as exc:  # the estimator itself is unusable on this data: nothing to compare against
        return _not_kept(f"sklearn could not predict on the check rows ({type(exc).__name__}: {exc})")
    inputs = make_onnx_feed(schema)(x)

    failures: list[str] = []
    for dtype, rebuild in _candidate_graphs(estimator, layout):
        name = f"{np.dtype(dtype).name}{f' exact-{rebuild}' if rebuild else ''}"
        try:
            model_bytes, tree_rounding = _convert(
                estimator,
                layout=layout,
                dtype=dtype,
                rebuild_forest=rebuild == _FOREST,
                rebuild_hgb=rebuild == _HGB,
                task=task,
            )
            fed = {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in inputs.items()}
            got = _run_outputs(model_bytes, fed, task)
        except _NotConvertible as exc:
            failures.append(str(exc))
            break  # the structure, not the dtype, is the obstacle: no other candidate can do better
        except Exception as exc:  # skl2onnx and onnxruntime raise many types for unsupported estimators/options
            failures.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        problem, differences = _compare(expected, got, task)
        if problem:
            failures.append(f"{name}: {problem}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model_bytes)  # a crash never leaves a half-written model.onnx behind
        return _report(
            x.shape[0],
            differences,
            dtype,
            tree_rounding,
            task=task,
            inputs={k: ("string" if v.dtype.kind == "O" else np.dtype(dtype).name) for k, v in fed.items()},
            rebuilt=rebuild,
            has_probabilities=expected.probabilities is not None,
            opset=_opsets(model_bytes),
        )
    reason = "; ".join(failures) or "no ONNX graph to try"
    logger.warning("ONNX export skipped, the server will use joblib: %s", reason)
    return _not_kept(reason)


def _opsets(model_bytes: bytes) -> dict[str, int]:
    """The graph's opset per domain ("" is the default domain), as the card records them."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    return {opset.domain: int(opset.version) for opset in model.opset_import if opset.domain in ("", "ai.onnx.ml")}


def _not_kept(reason: str) -> dict[str, Any]:
    return {"kept": False, "serving_path": SERVING_PATH_JOBLIB, "reason": reason[:_REASON_MAX_CHARS]}


@dataclass(frozen=True)
class _Outputs:
    """Predictions of one engine: labels or values, and probabilities when the model has them."""

    values: np.ndarray
    probabilities: np.ndarray | None = None


def _sklearn_predictions(estimator: Any, x: np.ndarray, task: str) -> _Outputs:
    values = np.asarray(estimator.predict(x))
    if task == TASK_REGRESSION:
        return _Outputs(values.astype(np.float64).ravel())
    proba = np.asarray(estimator.predict_proba(x)) if hasattr(estimator, "predict_proba") else None
    return _Outputs(values, proba)


def _candidate_graphs(estimator: Any, layout: InputLayout) -> list[tuple[type[np.floating], str]]:
    """(numeric input dtype, which tree node to rebuild or "") pairs to try, fastest exact graph first.

    Mixed-type graphs are float64 only: `onnx_feed` hands the server's numerics over as they are.
    """
    plain: list[tuple[type[np.floating], str]] = [(np.float64, "")]
    if layout.single:
        plain.append((np.float32, ""))
    if final_forest(estimator) is not None:
        return [(np.float64, _FOREST), *plain]
    if final_hist_gradient_boosting(estimator) is not None:
        return [(np.float64, _HGB), *plain]
    return plain


def _final_step(estimator: Any) -> Any:
    return estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator


def _convert(
    estimator: Any,
    *,
    n_features: int | None = None,
    dtype: type[np.floating],
    rebuild_forest: bool = False,
    rebuild_hgb: bool = False,
    layout: InputLayout | None = None,
    task: str = TASK_CLASSIFICATION,
) -> tuple[bytes, bool]:
    """Run skl2onnx and adapt the graph; returns the serialized model and whether tree inputs were rounded."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType, StringTensorType

    if layout is None:
        layout = InputLayout(tuple(range(n_features or 0)), (), single=True)
    tensor_type = DoubleTensorType if dtype == np.float64 else FloatTensorType
    if layout.single:
        model_to_convert = estimator
        initial_types = [(ONNX_INPUT_NAME, tensor_type([None, len(layout.numeric)]))]
    else:
        model_to_convert = _mixed_input_copy(estimator, layout)
        initial_types = []
        if layout.numeric:
            initial_types.append((ONNX_NUMERIC_INPUT, tensor_type([None, len(layout.numeric)])))
        if layout.categorical:
            initial_types.append((ONNX_CATEGORICAL_INPUT, StringTensorType([None, len(layout.categorical)])))
    model_to_convert = _with_dense_training_rows(model_to_convert)
    final_step = _final_step(model_to_convert)
    # Plain arrays, not a list of {class: p} maps: cheaper to run and to turn into JSON.
    options = {id(final_step): {"zipmap": False}} if task == TASK_CLASSIFICATION else None
    opsets = {"": ONNX_TARGET_OPSET, "ai.onnx.ml": ONNX_ML_TARGET_OPSET}
    try:
        model = to_onnx(model_to_convert, initial_types=initial_types, options=options, target_opset=opsets)
    except NameError as exc:
        # Classifiers without probabilities (LinearSVC) have no zipmap option: their graph has no map to drop.
        if not options or "zipmap" not in str(exc):
            raise
        model = to_onnx(model_to_convert, initial_types=initial_types, target_opset=opsets)
    if task == TASK_REGRESSION:
        _name_first_output(model, ONNX_VALUE_OUTPUT)
    if dtype == np.float64:
        _impute_in_float64(model, _numeric_imputers(model_to_convert))
    if rebuild_forest:
        if not rebuild_forest_node(model, final_forest(estimator)):
            raise ValueError("the graph has no single forest node to rebuild")
        return model.SerializeToString(), True
    if rebuild_hgb:
        if not rebuild_hgb_node(model, final_hist_gradient_boosting(estimator)):
            raise ValueError("the graph has no single HistGradientBoosting node to rebuild")
        return model.SerializeToString(), False
    rounded = False
    if dtype == np.float64:
        _float32_kernels_in_float64_graph(model)
        if not _is_hist_gradient_boosting(final_step):
            rounded = _round_tree_inputs_to_float32(model)
    return model.SerializeToString(), rounded


def _with_dense_training_rows(model: Any) -> Any:
    """A copy whose nearest-neighbours step holds its training rows dense (skl2onnx cannot embed a sparse matrix).

    One-hot output stays sparse for estimators that accept it, so KNN can be fitted on a csr_matrix; the graph
    stores the same rows as a dense constant either way.
    """
    final = _final_step(model)
    rows = getattr(final, "_fit_X", None)
    if rows is None or not hasattr(rows, "toarray"):
        return model
    dense = copy.copy(final)
    dense._fit_X = rows.toarray()
    if not hasattr(model, "steps"):
        return dense
    pipeline = copy.copy(model)
    pipeline.steps = [*model.steps[:-1], (model.steps[-1][0], dense)]
    return pipeline


def _name_first_output(model: Any, name: str) -> None:
    """Call the graph's first output `name` (skl2onnx names a regressor's output after the converter)."""
    graph = model.graph
    old = graph.output[0].name
    if old == name:
        return
    # Some converters use `name` for an intermediate tensor: that one is renamed out of the way first.
    for before, after in ((name, f"{name}_intermediate"), (old, name)):
        for node in graph.node:
            node.output[:] = [after if o == before else o for o in node.output]
            node.input[:] = [after if i == before else i for i in node.input]
    graph.output[0].name = name


def _is_hist_gradient_boosting(step: Any) -> bool:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    return isinstance(step, HistGradientBoostingClassifier | HistGradientBoostingRegressor)


def _mixed_input_copy(estimator: Any, layout: InputLayout) -> Any:
    """The pipeline with its ColumnTransformer reading the `numeric` + `categorical` inputs; fitted steps shared.

    skl2onnx numbers columns across the graph's inputs in order, so column i of the object matrix becomes its
    position in (numeric columns..., categorical columns...). A categorical imputer that fills MISSING_CATEGORY is
    left out: `onnx_feed` already feeds a missing value as MISSING_CATEGORY.

    Raises:
        _NotConvertible: No leading ColumnTransformer, columns given by name, or one transformer over both kinds.
    """
    from sklearn.compose import ColumnTransformer

    steps = getattr(estimator, "steps", None)
    if not steps or not isinstance(steps[0][1], ColumnTransformer):
        raise _NotConvertible("mixed-type inputs need a Pipeline whose first step is a ColumnTransformer")
    transformer = steps[0][1]
    n_columns = len(layout.numeric) + len(layout.categorical)
    position = {column: i for i, column in enumerate(layout.numeric + layout.categorical)}
    categorical = set(layout.categorical)
    remapped = []
    for name, step, columns in transformer.transformers_:
        indices = _column_indices(columns, n_columns, name)
        if (isinstance(step, str) and step == "drop") or not indices:
            remapped.append((name, step, columns))
            continue
        kinds = {index in categorical for index in indices}
        if len(kinds) > 1:
            raise _NotConvertible(f"ColumnTransformer part '{name}' mixes numeric and categorical columns")
        if kinds == {True}:
            step = _without_missing_category_imputer(step)
        remapped.append((name, step, [position[index] for index in indices]))
    converted = copy.copy(transformer)
    converted.transformers_ = remapped
    pipeline = copy.copy(estimator)
    pipeline.steps = [(steps[0][0], converted), *steps[1:]]
    return pipeline


def _column_indices(columns: Any, n_columns: int, name: str) -> list[int]:
    if isinstance(columns, slice):
        return list(range(n_columns))[columns]
    values = np.atleast_1d(np.asarray(columns))
    if values.dtype == bool:
        return [int(i) for i in np.flatnonzero(values)]
    if values.size and values.dtype.kind not in "iu":
        raise _NotConvertible(f"ColumnTransformer part '{name}' selects columns by name, not by position")
    return [int(i) for i in values]


def _without_missing_category_imputer(step: Any) -> Any:
    from sklearn.impute import SimpleImputer

    def fills_missing_category(imputer: Any) -> bool:
        return (
            isinstance(imputer, SimpleImputer)
            and imputer.strategy == "constant"
            and imputer.fill_value == MISSING_CATEGORY
        )

    if fills_missing_category(step):
        return "passthrough"
    steps = getattr(step, "steps", None)
    if steps and fills_missing_category(steps[0][1]):
        if len(steps) == 2:
            return steps[1][1]
        shorter = copy.copy(step)
        shorter.steps = steps[1:]
        return shorter
    return step


def _numeric_imputers(model: Any) -> list[Any]:
    """Every fitted SimpleImputer with numeric statistics in `model` (a Pipeline, ColumnTransformer or step)."""
    from sklearn.impute import SimpleImputer

    found: list[Any] = []
    if isinstance(model, SimpleImputer):
        if np.asarray(model.statistics_).dtype.kind == "f":
            found.append(model)
        return found
    for _, step, *_ in getattr(model, "steps", None) or getattr(model, "transformers_", None) or []:
        if not isinstance(step, str):
            found.extend(_numeric_imputers(step))
    return found


def _impute_in_float64(model: Any, imputers: list[Any]) -> None:
    """Replace each ai.onnx.ml `Imputer` (no float64 kernel in ONNX Runtime) by `Where(IsNaN(x), medians, x)`.

    The statistics are sklearn's float64 values (the node holds them rounded to float32): the imputer whose
    rounded statistics equal the node's supplies them.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes, constants = [], []
    for node in graph.node:
        if node.op_type != "Imputer":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rounded = np.asarray(attributes.get("imputed_value_floats", []), dtype=np.float32)
        replaced = attributes.get("replaced_value_float", np.nan)
        match = [
            imputer
            for imputer in imputers
            if imputer.statistics_.shape == rounded.shape
            and np.array_equal(imputer.statistics_.astype(np.float32), rounded)
        ]
        if not match or not np.isnan(replaced):
            raise ValueError("an Imputer node has no float64 form (statistics unknown or missing value not NaN)")
        statistics, is_missing = f"{node.name}_statistics_f64", f"{node.name}_is_missing"
        constants.append(numpy_helper.from_array(match[0].statistics_.astype(np.float64).reshape(1, -1), statistics))
        nodes.append(helper.make_node("IsNaN", [node.input[0]], [is_missing]))
        nodes.append(helper.make_node("Where", [is_missing, statistics, node.input[0]], [node.output[0]]))
    if constants:
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(constants)


def _float32_kernels_in_float64_graph(model: Any) -> None:
    """Cast around the operators ONNX Runtime only runs in float32, where skl2onnx typed them float64.

    Tree ensembles take float64 input but always emit float32 scores; skl2onnx declares float64 (a graph output,
    or an Identity's) for some of them (HistGradientBoosting, GradientBoosting, forest regressors). SVMRegressor
    takes float32 input only.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    declared = {v.name: v.type.tensor_type.elem_type for v in [*graph.output, *graph.value_info]}
    consumers_double = {
        name
        for node in graph.node
        if node.op_type == "Identity"
        for name in node.input
        if declared.get(node.output[0]) == TensorProto.DOUBLE
    }
    nodes = []
    for node in graph.node:
        if node.op_type in _FLOAT_ONLY_INPUT_OPS:
            as_float = f"{node.name}_input_f32"
            nodes.append(helper.make_node("Cast", [node.input[0]], [as_float], to=TensorProto.FLOAT))
            node.input[0] = as_float
        nodes.append(node)
        if node.op_type not in _TREE_ENSEMBLE_OPS or not node.output:
            continue
        score_index = 1 if node.op_type == "TreeEnsembleClassifier" else 0
        if score_index >= len(node.output):
            continue
        score = node.output[score_index]
        if declared.get(score) == TensorProto.DOUBLE or score in consumers_double:
            as_float = f"{score}_f32"
            node.output[score_index] = as_float
            nodes.append(helper.make_node("Cast", [as_float], [score], to=TensorProto.DOUBLE))
    del graph.node[:]
    graph.node.extend(nodes)


def _round_tree_inputs_to_float32(model: Any) -> bool:
    """Insert Cast(float32)->Cast(float64) before each tree ensemble.

    sklearn's decision trees cast X to float32 before comparing it with their float64 thresholds; a double ONNX
    graph would compare the unrounded value, and a row within float32 rounding of a threshold could go the other way.
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
    """Predict labels (and probabilities when the graph has them) with ONNX Runtime on a one-input graph."""
    got = _run_outputs(model_bytes, {ONNX_INPUT_NAME: x}, TASK_CLASSIFICATION, by_position=True)
    return got.values, got.probabilities


def _run_outputs(
    model_bytes: bytes, inputs: dict[str, np.ndarray], task: str, *, by_position: bool = False
) -> _Outputs:
    import onnxruntime

    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    if by_position:
        inputs = {session.get_inputs()[0].name: next(iter(inputs.values()))}
    names = [out.name for out in session.get_outputs()]
    if task == TASK_REGRESSION:
        (values,) = session.run([ONNX_VALUE_OUTPUT], inputs)
        return _Outputs(np.asarray(values, dtype=np.float64).ravel())
    wanted = [ONNX_LABEL_OUTPUT] + ([ONNX_PROBA_OUTPUT] if ONNX_PROBA_OUTPUT in names else [])
    outputs = session.run(wanted, inputs)
    return _Outputs(np.asarray(outputs[0]).ravel(), np.asarray(outputs[1]) if len(outputs) > 1 else None)


def regression_tolerance(expected: np.ndarray) -> float:
    """The largest |onnx - sklearn| accepted for a regression graph: `ONNX_REGRESSION_RTOL` x max |prediction|.

    Relative to the predictions' scale, not to each value: a prediction near 0 is a sum of terms as large as the
    others, and carries their rounding error.
    """
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return ONNX_REGRESSION_RTOL * scale if np.isfinite(scale) else float("nan")


def _compare(expected: _Outputs, got: _Outputs, task: str) -> tuple[str | None, dict[str, float]]:
    """Return (what differs or None, the differences measured)."""
    if task == TASK_REGRESSION:
        if got.values.shape != expected.values.shape:
            return f"prediction shape {got.values.shape} differs from sklearn's {expected.values.shape}", {}
        diff = np.abs(got.values - expected.values)
        max_diff = float(np.max(diff))
        bound = regression_tolerance(expected.values)
        measured = {"max_abs_diff": max_diff, "tolerance": bound}
        if not max_diff <= bound:  # NaN on either side fails too
            return f"predictions differ by up to {max_diff:.3g} > {bound:.3g}", measured
        return None, measured
    labels, expected_labels = got.values, expected.values
    if labels.shape != expected_labels.shape or labels.tolist() != expected_labels.tolist():
        if labels.shape != expected_labels.shape:
            return f"label shape {labels.shape} differs from sklearn's {expected_labels.shape}", {}
        differing = int(np.sum(labels.astype(str) != expected_labels.astype(str)))
        return f"labels differ from sklearn on {differing} of {labels.shape[0]} rows", {}
    if expected.probabilities is None:
        return None, {"max_abs_proba_diff": 0.0}
    proba = got.probabilities
    if proba is None or proba.shape != expected.probabilities.shape:
        return "ONNX graph has no probabilities matching sklearn's predict_proba", {}
    max_diff = float(np.max(np.abs(proba.astype(np.float64) - expected.probabilities)))
    if not max_diff <= ONNX_PROBA_TOLERANCE:
        return f"probabilities differ by {max_diff:.3g} > {ONNX_PROBA_TOLERANCE}", {"max_abs_proba_diff": max_diff}
    return None, {"max_abs_proba_diff": max_diff}


def _report(
    rows: int,
    differences: dict[str, float],
    dtype: type[np.floating],
    tree_rounding: bool,
    *,
    task: str,
    inputs: dict[str, str],
    rebuilt: str,
    has_probabilities: bool,
    opset: dict[str, int],
) -> dict[str, Any]:
    import onnxruntime
    import skl2onnx

    report: dict[str, Any] = {
        "kept": True,
        "serving_path": SERVING_PATH_ONNX,
        "task": task,
        "rows_checked": rows,
        "inputs": inputs,
        "opset": opset,
        "dtype": np.dtype(dtype).name,
        "tree_inputs_rounded_to_float32": tree_rounding,
        # HistGradientBoosting as a float64 TreeEnsemble with sklearn's own splits, categories included.
        "exact_float64_hist_gradient_boosting": rebuilt == _HGB,
        # The forest walks float32 trees with thresholds rounded down: branches identical to sklearn's.
        "exact_float32_forest": rebuilt == _FOREST,
        "onnxruntime": onnxruntime.__version__,
        "skl2onnx": skl2onnx.__version__,
    }
    if task == TASK_REGRESSION:
        report.update(
            {
                "has_probabilities": False,
                "max_abs_diff": differences["max_abs_diff"],
                "tolerance": differences["tolerance"],
                "rtol": ONNX_REGRESSION_RTOL,
            }
        )
        return report
    report.update(
        {
            "labels_identical": True,
            # False when sklearn has no predict_proba: the graph's second output is then scores, not probabilities.
            "has_probabilities": has_probabilities,
            "max_abs_proba_diff": differences["max_abs_proba_diff"],
            "proba_tolerance": ONNX_PROBA_TOLERANCE,
        }
    )
    return report
