"""Rebuild a scikit-learn forest's ONNX node: ONNX Runtime walks it about twice as fast, with sklearn's exact branches.

skl2onnx writes one `TreeEnsembleClassifier` that a double-input graph runs with ONNX Runtime's float64 kernel,
with children in sklearn's order. ONNX Runtime stores each node's false child right after it, so a walk that keeps
taking false branches reads memory in order; which child that is decides how many cache lines a row touches.
This module replaces the node, in the graph skl2onnx built, with:

    Cast(float32) -> Concat(x, -x) -> TreeEnsembleRegressor: votes = sum of the trees' class fractions
    labels = Gather(class labels, ArgMax(votes)); probabilities = votes / number of trees

- Each node's false child is the one more training rows went to: the right child with `x <= f`, or the left one
  by testing the negated copy of the feature, `-x <= nextafter(-f, -inf)`, which for float32 values is exactly
  `x > f`. All nodes keep one comparison mode, so ONNX Runtime stays on its fast loop.
- Thresholds are rounded *down* to float32 (as skl2onnx does for float inputs). sklearn compares
  `float32(x) <= threshold` in float64; for any float32 `x` that holds exactly when `x <= floor32(threshold)`.
- float32 nodes and inputs: smaller nodes, the same branches.
- Leaves carry sklearn's class fractions, summed over trees and divided once, the way `predict_proba` averages;
  ArgMax over the sums picks the first of tied classes, as numpy's argmax does.

The rebuilt graph is still checked row by row against sklearn by `components.onnx_export` before it is kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_CLASSIFIER_OP = "TreeEnsembleClassifier"
_ML_DOMAIN = "ai.onnx.ml"
_PREFIX = "exact_forest"


def final_forest(estimator: Any) -> Any | None:
    """The RandomForest/ExtraTrees classifier at the end of `estimator` (a Pipeline or the forest), else None."""
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    if not isinstance(final, RandomForestClassifier | ExtraTreesClassifier):
        return None
    if getattr(final, "n_outputs_", 1) != 1 or not getattr(final, "estimators_", None):
        return None
    return final


def rebuild_forest_node(model: Any, forest: Any) -> bool:
    """Replace the graph's one `TreeEnsembleClassifier` (and the Casts feeding it) by the exact float32 ensemble.

    Args:
        model: An `onnx.ModelProto` from skl2onnx for a pipeline ending in `forest`; changed in place.
        forest: The fitted RandomForestClassifier or ExtraTreesClassifier the node was converted from.

    Returns:
        True if the node was replaced; False (model untouched) when the graph does not have exactly one.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    tree_nodes = [node for node in graph.node if node.op_type == _CLASSIFIER_OP]
    if len(tree_nodes) != 1 or len(tree_nodes[0].output) != 2:
        return False
    old = tree_nodes[0]
    label_out, proba_out = old.output
    casts = _cast_chain(graph, old.input[0])
    source = casts[-1].input[0] if casts else old.input[0]
    classes = _class_labels(old, helper)

    x32, negated, both = f"{_PREFIX}_x32", f"{_PREFIX}_negated", f"{_PREFIX}_x_and_negated"
    votes, winner = f"{_PREFIX}_votes", f"{_PREFIX}_argmax"
    n_trees, labels = f"{_PREFIX}_n_trees", f"{_PREFIX}_labels"
    replacement = [
        helper.make_node("Cast", [source], [x32], to=TensorProto.FLOAT),
        helper.make_node("Neg", [x32], [negated]),
        helper.make_node("Concat", [x32, negated], [both], axis=1),
        helper.make_node(
            "TreeEnsembleRegressor",
            [both],
            [votes],
            domain=_ML_DOMAIN,
            n_targets=len(forest.classes_),
            aggregate_function="SUM",
            post_transform="NONE",
            **_tree_attributes(forest.estimators_, n_features=int(forest.n_features_in_)),
        ),
        # Ties are compared on exact vote sums, before the division could merge two close values.
        helper.make_node("ArgMax", [votes], [winner], axis=1, keepdims=0),
        helper.make_node("Gather", [labels, winner], [label_out], axis=0),
    ]
    if _declared_type(graph, proba_out) == TensorProto.DOUBLE:
        # skl2onnx declares double probabilities for some forests (ExtraTrees): keep the graph's signature.
        replacement.append(helper.make_node("Div", [votes, n_trees], [f"{_PREFIX}_proba32"]))
        replacement.append(helper.make_node("Cast", [f"{_PREFIX}_proba32"], [proba_out], to=TensorProto.DOUBLE))
    else:
        replacement.append(helper.make_node("Div", [votes, n_trees], [proba_out]))
    dropped = {id(node) for node in [old, *casts]}
    kept = [node for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept + replacement)
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(len(forest.estimators_), dtype=np.float32), n_trees),
            numpy_helper.from_array(classes, labels),
        ]
    )
    return True


def floor_to_float32(values: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 value (so `x32 <= result` iff `x32 <= value`)."""
    with np.errstate(over="ignore"):  # beyond float32's range: inf, then stepped down to the largest float32
        rounded = np.asarray(values, dtype=np.float64).astype(np.float32)
    above = rounded.astype(np.float64) > values
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


def _declared_type(graph: Any, name: str) -> int | None:
    """The element type a graph output is declared with, or None for an intermediate tensor."""
    for output in graph.output:
        if output.name == name:
            return int(output.type.tensor_type.elem_type)
    return None


def _cast_chain(graph: Any, tensor: str) -> list[Any]:
    """The Cast nodes feeding `tensor` back to its real source (skl2onnx or our float32 rounding adds them)."""
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    chain = []
    while tensor in producers and producers[tensor].op_type == "Cast" and consumers.get(tensor, 0) == 1:
        chain.append(producers[tensor])
        tensor = producers[tensor].input[0]
    return chain


def _class_labels(node: Any, helper: Any) -> np.ndarray:
    """The node's class labels with the dtype of its label output (int64 or string)."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("classlabels_strings"):
        return np.array([s.decode() for s in attributes["classlabels_strings"]], dtype=object)
    return np.array(attributes["classlabels_int64s"], dtype=np.int64)


def _tree_attributes(trees: list[Any], *, n_features: int) -> dict[str, Any]:
    """TreeEnsembleRegressor attributes over `[x, -x]`: one target per class, weights = the leaf's class fractions."""
    columns: dict[str, list[np.ndarray]] = {
        key: []
        for key in (
            "nodes_treeids",
            "nodes_nodeids",
            "nodes_featureids",
            "nodes_values",
            "nodes_truenodeids",
            "nodes_falsenodeids",
            "target_treeids",
            "target_nodeids",
            "target_ids",
            "target_weights",
        )
    }
    modes: list[str] = []
    for tree_id, estimator in enumerate(trees):
        tree = estimator.tree_
        leaf = tree.children_left == -1
        left, right = np.where(leaf, 0, tree.children_left), np.where(leaf, 0, tree.children_right)
        weight = tree.weighted_n_node_samples
        # Nodes whose left child saw more rows test -x so that the left child becomes the (adjacent) false one.
        negate = ~leaf & (weight[left] >= weight[right])
        threshold = floor_to_float32(tree.threshold)
        negated_threshold = np.nextafter(-threshold, np.float32(-np.inf))
        n = tree.node_count
        columns["nodes_treeids"].append(np.full(n, tree_id))
        columns["nodes_nodeids"].append(np.arange(n))
        columns["nodes_featureids"].append(np.where(leaf, 0, tree.feature + np.where(negate, n_features, 0)))
        columns["nodes_values"].append(np.where(leaf, 0, np.where(negate, negated_threshold, threshold)))
        columns["nodes_truenodeids"].append(np.where(negate, right, left))
        columns["nodes_falsenodeids"].append(np.where(negate, left, right))
        modes.extend(np.where(leaf, "LEAF", "BRANCH_LEQ").tolist())
        # Normalised like DecisionTreeClassifier.predict_proba; only non-zero fractions are stored.
        values = tree.value[:, 0, :].astype(np.float64)
        totals = values.sum(axis=1, keepdims=True)
        fractions = values / np.where(totals == 0, 1.0, totals)
        leaf_ids, class_ids = np.nonzero(leaf[:, None] & (fractions != 0))
        columns["target_treeids"].append(np.full(len(leaf_ids), tree_id))
        columns["target_nodeids"].append(leaf_ids)
        columns["target_ids"].append(class_ids)
        columns["target_weights"].append(fractions[leaf_ids, class_ids].astype(np.float32))
    attributes: dict[str, Any] = {key: np.concatenate(parts).tolist() for key, parts in columns.items()}
    attributes["nodes_modes"] = modes
    return attributes
