"""The rebuilt HistGradientBoosting graph branches exactly like sklearn: float64 thresholds, categories, unknowns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from components.constants import ONNX_FILENAME, TASK_CLASSIFICATION, TASK_REGRESSION
from components.onnx_export import _convert, _run_outputs, export_verified_onnx
from components.onnx_hgb import TREE_ENSEMBLE_ML_OPSET, final_hist_gradient_boosting, rebuild_hgb_node


def coded_rows(seed: int, rows: int = 600, codes: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A numeric column and a category code column (what an ordinal encoder hands the model)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=rows), rng.integers(0, codes, size=rows).astype(np.float64)


def categorical_classifier(seed: int = 0) -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    numeric, code = coded_rows(seed)
    # Categories {0, 3, 5} raise the odds, {1, 2, 4} lower them: no threshold on the code separates them.
    y = numeric + np.isin(code, [0, 3, 5]) * 2.0 - 1.0 + np.random.default_rng(seed + 1).normal(size=600) > 0
    x = np.column_stack([numeric, code])
    model = HistGradientBoostingClassifier(max_iter=15, categorical_features=[False, True], random_state=0)
    return model.fit(x, y.astype(int)), x


def predictions(model, x: np.ndarray, *, rebuild: bool, task: str = TASK_CLASSIFICATION):
    model_bytes, _ = _convert(model, n_features=x.shape[1], dtype=np.float64, rebuild_hgb=rebuild, task=task)
    return _run_outputs(model_bytes, {"X": x}, task)


def test_categorical_splits_need_the_rebuild_and_then_match_sklearn_exactly() -> None:
    model, x = categorical_classifier()

    plain = predictions(model, x, rebuild=False)
    rebuilt = predictions(model, x, rebuild=True)

    # skl2onnx 1.20 writes a categorical split as a numeric threshold: many rows take the wrong branch.
    assert (plain.values != model.predict(x)).sum() > 10
    np.testing.assert_array_equal(rebuilt.values, model.predict(x))
    assert rebuilt.probabilities is not None
    np.testing.assert_allclose(rebuilt.probabilities, model.predict_proba(x), rtol=0, atol=1e-12)


def test_unknown_negative_and_missing_codes_go_where_sklearn_sends_missing_values() -> None:
    numeric, code = coded_rows(2)
    seen = code < 4  # codes 4 and 5 never reach training: unknown to the model
    # Missing values in training make some splits send missing left and others right.
    code_with_nan = np.where(np.random.default_rng(3).random(600) < 0.15, np.nan, code)
    y = numeric + np.isin(code_with_nan, [1, 3]) * 3.0 + np.isnan(code_with_nan) * -2.0
    x = np.column_stack([numeric, code_with_nan])[seen]
    model = HistGradientBoostingRegressor(max_iter=20, categorical_features=[False, True], random_state=0)
    model.fit(x, y[seen])
    directions = {
        bool(node["missing_go_to_left"])
        for iteration in model._predictors
        for predictor in iteration
        for node in predictor.nodes
        if node["is_categorical"] and not node["is_leaf"]
    }
    assert directions == {True, False}
    grid = np.array([[value, c] for value in (-1.0, 0.2, 1.5) for c in (-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, np.nan)])

    rebuilt = predictions(model, grid, rebuild=True, task=TASK_REGRESSION)

    np.testing.assert_allclose(rebuilt.values, model.predict(grid), rtol=0, atol=1e-12)


def test_thresholds_are_float64_so_a_row_one_step_past_a_split_branches_like_sklearn() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 2)) * 1e3
    y = x[:, 0] + 0.1 * x[:, 1]
    model = HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(x, y)
    threshold = float(model._predictors[0][0].nodes[0]["num_threshold"])
    feature = int(model._predictors[0][0].nodes[0]["feature_idx"])
    assert float(np.float32(threshold)) != threshold  # a float32 threshold would move the split
    rows = np.zeros((3, 2))
    rows[:, feature] = [threshold, np.nextafter(threshold, np.inf), np.nextafter(threshold, -np.inf)]

    rebuilt = predictions(model, rows, rebuild=True, task=TASK_REGRESSION)

    np.testing.assert_allclose(rebuilt.values, model.predict(rows), rtol=0, atol=1e-9)
    assert model.predict(rows[:1])[0] != model.predict(rows[1:2])[0]


def test_multi_class_string_labels_use_softmax_and_keep_the_labels() -> None:
    numeric, code = coded_rows(5)
    names = np.array(["bronze", "gold", "silver"])
    y = names[(numeric > 0.5).astype(int) + np.isin(code, [1, 4]).astype(int)]
    x = np.column_stack([numeric, code])
    model = HistGradientBoostingClassifier(max_iter=10, categorical_features=[False, True], random_state=0).fit(x, y)

    rebuilt = predictions(model, x, rebuild=True)

    assert rebuilt.values.tolist() == model.predict(x).tolist()
    np.testing.assert_allclose(rebuilt.probabilities, model.predict_proba(x), rtol=0, atol=1e-12)


def test_a_log_link_and_trees_that_never_split(tmp_path: Path) -> None:
    # Poisson loss predicts exp(raw); a constant target gives trees of a single leaf.
    numeric, code = coded_rows(6)
    counts = np.random.default_rng(7).poisson(np.exp(0.5 * numeric + (code == 2)))
    x = np.column_stack([numeric, code])
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=15, categorical_features=[False, True])
    constant = HistGradientBoostingRegressor(max_iter=3)

    for model, target in ((poisson.fit(x, counts), counts), (constant.fit(x, np.full(600, 2.5)), None)):
        report = export_verified_onnx(model, x, tmp_path / ONNX_FILENAME)
        assert report is not None and report["exact_float64_hist_gradient_boosting"], target
        assert report["max_abs_diff"] <= 1e-9 * max(1.0, float(np.max(np.abs(model.predict(x)))))


def test_the_rebuilt_node_is_an_opset_5_tree_ensemble_with_sklearns_thresholds() -> None:
    model, _ = categorical_classifier(8)
    model_bytes, _ = _convert(model, n_features=2, dtype=np.float64, task=TASK_CLASSIFICATION)
    graph = onnx.load_from_string(model_bytes)

    assert rebuild_hgb_node(graph, model)

    (node,) = [n for n in graph.graph.node if n.op_type == "TreeEnsemble"]
    assert not [n for n in graph.graph.node if n.op_type.startswith("TreeEnsemble") and n is not node]
    assert {o.domain: o.version for o in graph.opset_import}["ai.onnx.ml"] == TREE_ENSEMBLE_ML_OPSET
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    splits = onnx.numpy_helper.to_array(attributes["nodes_splits"])
    modes = onnx.numpy_helper.to_array(attributes["nodes_modes"])
    numeric_thresholds = [
        float(n["num_threshold"])
        for iteration in model._predictors
        for predictor in iteration
        for n in predictor.nodes
        if not n["is_leaf"] and not n["is_categorical"]
    ]
    assert splits.dtype == np.float64 and sorted(splits[modes == 0].tolist()) == sorted(numeric_thresholds)
    assert (modes == 6).sum() > 0  # set-membership splits for the categories


@pytest.mark.parametrize("estimator", [HistGradientBoostingClassifier(), HistGradientBoostingRegressor()])
def test_only_fitted_hist_gradient_boosting_is_rebuilt(estimator) -> None:
    assert final_hist_gradient_boosting(estimator) is None  # not fitted
    model, _ = categorical_classifier(9)
    assert final_hist_gradient_boosting(model) is model
