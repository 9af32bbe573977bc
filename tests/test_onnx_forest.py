"""The rebuilt forest graph branches exactly like sklearn's trees, keeps ties, and puts the busier child next."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.constants import ONNX_FILENAME
from components.onnx_export import _convert, _run, export_verified_onnx
from components.onnx_forest import final_forest, floor_to_float32, rebuild_forest_node


def float32_neighbours(values: np.ndarray) -> np.ndarray:
    """Every float32 within two steps of float32(values): where rounding decides a comparison."""
    with np.errstate(over="ignore"):
        base = values.astype(np.float32)
    below, above = np.nextafter(base, np.float32(-np.inf)), np.nextafter(base, np.float32(np.inf))
    steps = [np.nextafter(below, np.float32(-np.inf)), below, base, above, np.nextafter(above, np.float32(np.inf))]
    return np.stack(steps, axis=1)


def test_floor_to_float32_keeps_every_float32_comparison() -> None:
    rng = np.random.default_rng(0)
    thresholds = np.concatenate([rng.normal(scale=1e3, size=2000), [0.0, -0.0, 1e-300, -1e-300, 1e39, -1e39]])
    floors = floor_to_float32(thresholds)
    xs = float32_neighbours(thresholds)

    assert floors.dtype == np.float32
    assert np.all(floors.astype(np.float64) <= thresholds)
    np.testing.assert_array_equal(xs <= thresholds[:, None], xs <= floors[:, None])


def test_negated_threshold_is_exactly_greater_than() -> None:
    # A node whose left child is busier tests -x <= nextafter(-f, -inf); that must mean x > f for float32 x.
    rng = np.random.default_rng(1)
    floors = floor_to_float32(np.concatenate([rng.normal(scale=10, size=2000), [0.0, 1.0, -1.0]]))
    negated = np.nextafter(-floors, np.float32(-np.inf))
    xs = float32_neighbours(floors.astype(np.float64))

    np.testing.assert_array_equal(-xs <= negated[:, None], xs > floors[:, None])


def test_a_row_on_a_rounded_threshold_branches_like_sklearn(tmp_path: Path) -> None:
    # Two adjacent float32 values: sklearn splits at their float64 midpoint, which rounds to the upper value in
    # float32 (ties go to the even one). Round-to-nearest thresholds would send the upper value left; sklearn
    # sends it right. Near 100 the float32 step exceeds sklearn's 1e-7 "same value" tolerance.
    low = np.float32(100.0)
    while np.float32((np.float64(low) + np.float64(np.nextafter(low, np.float32(np.inf)))) / 2) == low:
        low = np.nextafter(low, np.float32(np.inf))
    high = np.nextafter(low, np.float32(np.inf))
    forest = RandomForestClassifier(n_estimators=1, bootstrap=False, random_state=0)
    x = np.array([[low], [high]], dtype=np.float64)
    forest.fit(x, [0, 1])
    threshold = forest.estimators_[0].tree_.threshold[0]
    assert np.float32(threshold) == high and threshold < high  # the case nearest rounding gets wrong
    assert forest.predict(x).tolist() == [0, 1]

    report = export_verified_onnx(forest, x, tmp_path / ONNX_FILENAME)

    assert report is not None and report["exact_float32_forest"] is True
    labels, _ = _run((tmp_path / ONNX_FILENAME).read_bytes(), x)
    assert labels.tolist() == [0, 1]


def test_a_tied_vote_picks_the_first_class_like_sklearn() -> None:
    # Two trees on two features that separate the training rows equally well; the row [0, 0] goes to class
    # "a" by one feature and "b" by the other: a 1-1 vote, which sklearn's argmax gives to the first class.
    x = np.array([[0.0, 1.0], [1.0, 0.0]])
    tied = np.array([[0.0, 0.0], [1.0, 1.0]])
    forest = next(
        f
        for seed in range(100)
        if len({(f := _two_stumps(seed, x)).estimators_[0].tree_.feature[0], f.estimators_[1].tree_.feature[0]}) == 2
    )
    np.testing.assert_array_equal(forest.predict_proba(tied), [[0.5, 0.5], [0.5, 0.5]])

    model_bytes, _ = _convert(forest, n_features=2, dtype=np.float64, rebuild_forest=True)
    labels, proba = _run(model_bytes, tied)

    assert labels.tolist() == forest.predict(tied).tolist() == ["a", "a"]
    np.testing.assert_array_equal(proba, [[0.5, 0.5], [0.5, 0.5]])


def _two_stumps(seed: int, x: np.ndarray) -> RandomForestClassifier:
    forest = RandomForestClassifier(n_estimators=2, max_features=1, bootstrap=False, random_state=seed)
    return forest.fit(x, ["a", "b"])


@pytest.mark.parametrize(
    ("forest", "n_classes"),
    [
        (RandomForestClassifier(n_estimators=15, random_state=0), 2),
        (RandomForestClassifier(n_estimators=15, min_samples_leaf=4, random_state=0), 3),
        (ExtraTreesClassifier(n_estimators=15, min_samples_leaf=2, random_state=0), 4),
    ],
    ids=["random_forest_binary", "impure_leaves_3_classes", "extra_trees_4_classes"],
)
def test_rebuilt_forests_match_sklearn_on_every_row(forest, n_classes: int, tmp_path: Path) -> None:
    x, y = make_classification(600, 6, n_informative=4, n_classes=n_classes, random_state=0)
    estimator = make_pipeline(StandardScaler(), forest).fit(x, y)

    report = export_verified_onnx(estimator, x, tmp_path / ONNX_FILENAME)

    assert report is not None and report["exact_float32_forest"] is True
    labels, proba = _run((tmp_path / ONNX_FILENAME).read_bytes(), x)
    np.testing.assert_array_equal(labels, estimator.predict(x))
    np.testing.assert_allclose(proba, estimator.predict_proba(x), atol=report["proba_tolerance"], rtol=0)


def test_every_false_child_is_the_busier_child() -> None:
    x, y = make_classification(400, 5, random_state=0)
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    model = _skl2onnx_graph(forest)

    assert rebuild_forest_node(model, forest)

    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleRegressor"]
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    modes = [m.decode() for m in attributes["nodes_modes"]]
    assert set(modes) == {"BRANCH_LEQ", "LEAF"}  # one comparison mode: ONNX Runtime's fast loop
    checked = 0
    for i, mode in enumerate(modes):
        if mode == "LEAF":
            continue
        tree = forest.estimators_[attributes["nodes_treeids"][i]].tree_
        weight = tree.weighted_n_node_samples
        false_child, true_child = attributes["nodes_falsenodeids"][i], attributes["nodes_truenodeids"][i]
        assert weight[false_child] >= weight[true_child]
        checked += 1
    assert checked == sum(int((e.tree_.children_left != -1).sum()) for e in forest.estimators_)


def test_only_forest_classifiers_are_rebuilt() -> None:
    x, y = make_classification(100, 4, random_state=0)
    linear = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=2, random_state=0)).fit(x, y)

    assert final_forest(linear) is None
    assert final_forest(RandomForestClassifier()) is None  # not fitted
    assert final_forest(forest) is forest[-1]
    model = _skl2onnx_graph(linear)
    before = model.SerializeToString()
    assert rebuild_forest_node(model, forest[-1]) is False
    assert model.SerializeToString() == before


def _skl2onnx_graph(estimator) -> onnx.ModelProto:
    model_bytes, _ = _convert(estimator, n_features=estimator.n_features_in_, dtype=np.float64)
    return onnx.load_from_string(model_bytes)
