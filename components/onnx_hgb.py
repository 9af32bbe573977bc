"""Rebuild a HistGradientBoosting model's ONNX node so it branches exactly like scikit-learn, categories included.

skl2onnx 1.20 writes a HistGradientBoosting model as an `ai.onnx.ml` opset-3 tree node. Two things differ from
sklearn there: its thresholds are float32 (sklearn compares float64 values with float64 thresholds), and a
categorical split (`categorical_features`, which train sets for the ordinal-encoded columns) becomes a numeric
threshold, so most rows with categories take the wrong branch. This module replaces that node with the opset-5
`TreeEnsemble` operator, all in float64:

    TreeEnsemble(x) -> raw scores per target (sum of the trees' leaf values) + the model's baseline
    regression: the loss's inverse link (identity, or exp for a log link)
    classification: Sigmoid (binary) or Softmax (multi-class) -> probabilities; labels = classes[ArgMax]

Each split is sklearn's own rule (`sklearn/ensemble/_hist_gradient_boosting/_predictor.pyx`,
`_predict_one_from_raw_data`): a numeric split sends `x <= threshold` left and NaN where `missing_go_to_left` says;
a categorical split sends the categories of its left bitset left, the other known categories right, and unknown
ones (and NaN) to the missing side. That is a set-membership test on the known categories of the non-missing side,
whose false branch is the missing side. sklearn re-encodes categorical columns before its trees see them (an
internal OrdinalEncoder, categorical columns first); the sets and feature indices are mapped back to the values
and columns of the graph's input, the outer ordinal encoder's integer codes.

The rebuilt graph is still checked row by row against sklearn by `components.onnx_export` before it is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_ML_DOMAIN = "ai.onnx.ml"
TREE_ENSEMBLE_ML_OPSET = 5
"""The `ai.onnx.ml` opset of the `TreeEnsemble` operator (float64 thresholds and set-membership splits)."""
_OLD_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")
_PREFIX = "exact_hgb"
_MODE_LEQ, _MODE_MEMBER = 0, 6
"""`TreeEnsemble` node modes: BRANCH_LEQ and BRANCH_MEMBER."""
_BITSET_VALUES = 256
"""sklearn's category bitsets hold 8 x 32 bits: categories 0..255."""
_UNREACHABLE_MEMBER = 1e300
"""Stands for an empty membership set (a code no encoder writes), so every set has at least one value."""
_LINKS = {"IdentityLink": None, "LogLink": "Exp"}
"""sklearn loss link -> the ONNX operator that inverts it (regression)."""


def final_hist_gradient_boosting(estimator: Any) -> Any | None:
    """The fitted HistGradientBoosting classifier/regressor at the end of `estimator`, else None."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not isinstance(final, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return None
    return final if getattr(final, "_predictors", None) else None


def rebuild_hgb_node(model: Any, hgb: Any) -> bool:
    """Replace the graph's one opset-3 tree node by the exact float64 `TreeEnsemble` computation.

    Args:
        model: An `onnx.ModelProto` from skl2onnx for a float64 pipeline ending in `hgb`; changed in place.
        hgb: The fitted HistGradientBoostingClassifier or HistGradientBoostingRegressor.

    Returns:
        True if the node was replaced; False (model untouched) when the graph does not have exactly one tree node
        or the model uses a link this module does not invert.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    tree_nodes = [node for node in graph.node if node.op_type in _OLD_OPS]
    classifier = hasattr(hgb, "classes_")
    link = None if classifier else type(getattr(getattr(hgb, "_loss", None), "link", None)).__name__
    if len(tree_nodes) != 1 or (not classifier and link not in _LINKS):
        return False
    old = tree_nodes[0]
    if classifier and len(old.output) != 2:
        return False
    baseline = np.asarray(hgb._baseline_prediction, dtype=np.float64).reshape(1, -1)
    raw, scores = f"{_PREFIX}_raw", f"{_PREFIX}_scores"
    replacement = [
        helper.make_node(
            "TreeEnsemble",
            [old.input[0]],
            [raw],
            domain=_ML_DOMAIN,
            n_targets=baseline.shape[1],
            aggregate_function=1,  # SUM
            post_transform=0,  # NONE
            **_ensemble_attributes(hgb, numpy_helper),
        ),
        helper.make_node("Add", [raw, f"{_PREFIX}_baseline"], [scores]),
    ]
    constants = [numpy_helper.from_array(baseline, f"{_PREFIX}_baseline")]
    if classifier:
        label_out, proba_out = old.output
        constants.append(numpy_helper.from_array(_class_labels(old, helper), f"{_PREFIX}_classes"))
        replacement += _probabilities(baseline.shape[1], scores, proba_out, helper, numpy_helper, constants)
        replacement += [
            # sklearn's predict is the argmax of predict_proba: the first of tied classes wins, as here.
            helper.make_node("ArgMax", [proba_out], [f"{_PREFIX}_argmax"], axis=1, keepdims=0),
            helper.make_node("Gather", [f"{_PREFIX}_classes", f"{_PREFIX}_argmax"], [label_out], axis=0),
        ]
    else:
        inverse = _LINKS[str(link)]
        if inverse is None:
            replacement.append(helper.make_node("Identity", [scores], [old.output[0]]))
        else:
            replacement.append(helper.make_node(inverse, [scores], [old.output[0]]))
    kept = [node for node in graph.node if node is not old]
    del graph.node[:]
    graph.node.extend(kept + replacement)
    graph.initializer.extend(constants)
    for output in graph.output:
        # The new scores are float64 where skl2onnx declared the old node's float32 output.
        if output.name in old.output[1 if classifier else 0 :]:
            output.type.tensor_type.elem_type = TensorProto.DOUBLE
    _use_ml_opset(model, TREE_ENSEMBLE_ML_OPSET)
    return True


def _probabilities(
    n_targets: int, scores: str, proba_out: str, helper: Any, numpy_helper: Any, constants: list[Any]
) -> list[Any]:
    if n_targets > 1:
        return [helper.make_node("Softmax", [scores], [proba_out], axis=1)]
    positive, negative, one = f"{_PREFIX}_positive", f"{_PREFIX}_negative", f"{_PREFIX}_one"
    constants.append(numpy_helper.from_array(np.ones((1, 1), dtype=np.float64), one))
    return [
        helper.make_node("Sigmoid", [scores], [positive]),
        helper.make_node("Sub", [one, positive], [negative]),
        helper.make_node("Concat", [negative, positive], [proba_out], axis=1),
    ]


def _ensemble_attributes(hgb: Any, numpy_helper: Any) -> dict[str, Any]:
    """`TreeEnsemble` attributes for every tree: interior nodes, leaves, membership sets, roots."""
    known, feature_map = hgb._bin_mapper.make_known_categories_bitsets()
    columns, categories = _input_columns(hgb)
    attributes: dict[str, list[Any]] = {
        key: []
        for key in (
            "nodes_featureids",
            "nodes_truenodeids",
            "nodes_trueleafs",
            "nodes_falsenodeids",
            "nodes_falseleafs",
            "nodes_missing_value_tracks_true",
        )
    }
    splits: list[float] = []
    modes: list[int] = []
    members: list[float] = []
    roots: list[int] = []
    leaf_targets: list[int] = []
    leaf_weights: list[float] = []
    for iteration in hgb._predictors:
        for target, predictor in enumerate(iteration):
            nodes = predictor.nodes
            leaf = nodes["is_leaf"].astype(bool)
            # Interior nodes and leaves are numbered separately, in sklearn's order, after the trees before.
            interior_index = np.cumsum(~leaf) - 1 + len(modes)
            leaf_index = np.cumsum(leaf) - 1 + len(leaf_weights)

            def child(i: int, *, leaf: np.ndarray = leaf, li: Any = leaf_index, ii: Any = interior_index) -> Any:
                return (int(li[i] if leaf[i] else ii[i]), bool(leaf[i]))

            if leaf[0]:
                # A tree that never split: one always-true node whose both branches are the leaf.
                roots.append(len(modes))
                _append_node(attributes, 0, child(0), child(0), missing_true=False)
                splits.append(0.0)
                modes.append(_MODE_LEQ)
            else:
                roots.append(int(interior_index[0]))
            for i in np.flatnonzero(~leaf):
                node = nodes[i]
                left, right = child(int(node["left"])), child(int(node["right"]))
                missing_left = bool(node["missing_go_to_left"])
                feature = int(node["feature_idx"])
                if not node["is_categorical"]:
                    _append_node(attributes, int(columns[feature]), left, right, missing_true=missing_left)
                    modes.append(_MODE_LEQ)
                    splits.append(float(node["num_threshold"]))
                    continue
                # Unknown categories (and NaN) take the missing side, an open-ended set: so the membership test
                # lists the known categories of the other side, and its false branch is the missing side.
                goes_left = _known_codes(
                    predictor.raw_left_cat_bitsets[int(node["bitset_idx"])], known, feature_map, feature
                )
                known_codes = _known_codes(None, known, feature_map, feature)
                listed = sorted(known_codes - goes_left) if missing_left else sorted(goes_left)
                true_child, false_child = (right, left) if missing_left else (left, right)
                _append_node(attributes, int(columns[feature]), true_child, false_child, missing_true=False)
                modes.append(_MODE_MEMBER)
                splits.append(0.0)
                values = [float(categories[feature][code]) for code in listed if code < len(categories[feature])]
                members += [*(values or [_UNREACHABLE_MEMBER]), float("nan")]
            leaf_targets += [target] * int(leaf.sum())
            leaf_weights += nodes["value"][leaf].astype(np.float64).tolist()
    result: dict[str, Any] = dict(attributes)
    result["tree_roots"] = roots
    result["nodes_splits"] = numpy_helper.from_array(np.asarray(splits, dtype=np.float64), "nodes_splits")
    result["nodes_modes"] = numpy_helper.from_array(np.asarray(modes, dtype=np.uint8), "nodes_modes")
    result["leaf_targetids"] = leaf_targets
    result["leaf_weights"] = numpy_helper.from_array(np.asarray(leaf_weights, dtype=np.float64), "leaf_weights")
    if members:
        result["membership_values"] = numpy_helper.from_array(
            np.asarray(members[:-1], dtype=np.float64), "membership_values"
        )
    return result


def _input_columns(hgb: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    """For each feature the trees split on: its column in the model's input, and (categorical) its raw values.

    With categorical features, sklearn's HistGradientBoosting re-encodes its input first (`_preprocessor`: an
    OrdinalEncoder over the categorical columns, placed first, then the numeric ones); the trees' feature index
    and category codes refer to that re-encoded matrix, the graph's input is the one before.
    """
    preprocessor = getattr(hgb, "_preprocessor", None)
    n_features = int(hgb.n_features_in_)
    if preprocessor is None:
        return np.arange(n_features), []
    order: list[int] = []
    categories: list[np.ndarray] = []
    for _, transformer, mask in preprocessor.transformers_:
        selected = np.flatnonzero(np.asarray(mask, dtype=bool)) if len(mask) == n_features else np.asarray(mask)
        if isinstance(transformer, str):
            if transformer == "drop":
                continue
            raise ValueError(f"unexpected HistGradientBoosting preprocessor step {transformer!r}")
        order += [int(i) for i in selected]
        categories += [np.asarray(c) for c in getattr(transformer, "categories_", [])]
    if sorted(order) != list(range(n_features)):
        raise ValueError("HistGradientBoosting's preprocessor does not keep every column once")
    return np.asarray(order), categories


def _known_codes(bitset: np.ndarray | None, known: np.ndarray, feature_map: np.ndarray, feature: int) -> set[int]:
    """Category codes in `bitset` (None: every code) that the model saw in training for this feature."""
    seen = known[int(feature_map[feature])]
    return {
        code
        for code in range(_BITSET_VALUES)
        if _in_bitset(seen, code) and (bitset is None or _in_bitset(bitset, code))
    }


def _append_node(
    columns: dict[str, list[Any]],
    feature: int,
    true_child: tuple[int, bool],
    false_child: tuple[int, bool],
    *,
    missing_true: bool,
) -> None:
    columns["nodes_featureids"].append(feature)
    columns["nodes_truenodeids"].append(true_child[0])
    columns["nodes_trueleafs"].append(int(true_child[1]))
    columns["nodes_falsenodeids"].append(false_child[0])
    columns["nodes_falseleafs"].append(int(false_child[1]))
    columns["nodes_missing_value_tracks_true"].append(int(missing_true))


def _in_bitset(bitset: np.ndarray, value: int) -> bool:
    return bool((int(bitset[value // 32]) >> (value % 32)) & 1)


def _class_labels(node: Any, helper: Any) -> np.ndarray:
    """The old node's class labels with the dtype of its label output (int64 or string)."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("classlabels_strings"):
        return np.array([s.decode() for s in attributes["classlabels_strings"]], dtype=object)
    return np.array(attributes["classlabels_int64s"], dtype=np.int64)


def _use_ml_opset(model: Any, version: int) -> None:
    for opset in model.opset_import:
        if opset.domain == _ML_DOMAIN:
            opset.version = max(opset.version, version)
            return
    from onnx import helper

    model.opset_import.append(helper.make_opsetid(_ML_DOMAIN, version))
