"""The ONNX fast path is written only when ONNX Runtime predicts exactly what sklearn predicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from components.constants import ONNX_FILENAME, ONNX_PROBA_TOLERANCE
from components.model_artifact import ModelCard
from components.onnx_export import export_verified_onnx
from components.serving.predictor import BACKEND_ONNX, LoadedModel


def onnx_model(estimator, path: Path, report: dict) -> LoadedModel:
    card = ModelCard([], [], "", {}, {"scikit-learn": ""}, {}, "", "", onnx=report)
    return LoadedModel(card=card, estimator=estimator, onnx_bytes=path.read_bytes())


@pytest.mark.parametrize(
    ("estimator", "rebuilt_forest"),
    [
        (make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), False),
        (make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=20, random_state=0)), True),
    ],
    ids=["logistic_regression", "random_forest"],
)
def test_export_matches_sklearn_on_every_row(estimator, rebuilt_forest: bool, tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    estimator.fit(x, y)
    path = tmp_path / ONNX_FILENAME

    report = export_verified_onnx(estimator, x, path)

    assert report is not None and path.is_file()
    assert report["rows_checked"] == len(x)
    assert report["dtype"] == "float64"
    assert report["exact_float32_forest"] is rebuilt_forest
    assert report["max_abs_proba_diff"] <= report["proba_tolerance"] == ONNX_PROBA_TOLERANCE
    assert {"opset", "onnxruntime", "skl2onnx", "has_probabilities"} <= set(report)
    served = onnx_model(estimator, path, report)
    assert served.backend == BACKEND_ONNX
    both = served.predict(x, probabilities=True)
    np.testing.assert_array_equal(both.labels, estimator.predict(x))
    np.testing.assert_allclose(both.probabilities, estimator.predict_proba(x), atol=ONNX_PROBA_TOLERANCE, rtol=0)
    np.testing.assert_array_equal(served.predict(x, probabilities=False).labels, estimator.predict(x))


def test_tree_boundary_rows_agree_with_sklearn(tmp_path: Path) -> None:
    # sklearn's trees compare float32(x) with the float64 threshold. Build a row whose scaled value lies just
    # above the threshold in float64 but on it after float32 rounding: sklearn sends it left (class 0); a
    # double ONNX graph that skipped the rounding would send it right (class 1).
    forest = RandomForestClassifier(n_estimators=1, bootstrap=False, random_state=0)
    estimator = make_pipeline(StandardScaler(), forest).fit([[0.0], [1.0], [3.0]], [0, 0, 1])
    scaler, threshold = estimator[0], forest.estimators_[0].tree_.threshold[0]
    scaled = np.nextafter(threshold, np.inf)
    while np.float32(scaled) > threshold:
        scaled = np.nextafter(scaled, np.inf)
    row = scaled * scaler.scale_[0] + scaler.mean_[0]
    assert (row - scaler.mean_[0]) / scaler.scale_[0] > threshold  # what a double graph computes
    boundary = np.array([[row], [0.5], [3.0]])
    assert estimator.predict(boundary).tolist() == [0, 0, 1]

    report = export_verified_onnx(estimator, boundary, tmp_path / ONNX_FILENAME)

    assert report is not None
    assert (report["dtype"], report["tree_inputs_rounded_to_float32"]) == ("float64", True)
    served = onnx_model(estimator, tmp_path / ONNX_FILENAME, report)
    assert served.predict(boundary, probabilities=False).labels.tolist() == [0, 0, 1]


def test_a_bare_tree_falls_back_to_an_exact_float32_graph(tmp_path: Path) -> None:
    # skl2onnx types a lone tree's double graph in a way onnxruntime refuses; float32 input is what sklearn's
    # trees compare anyway.
    tree = DecisionTreeClassifier().fit([[0.0], [1.0]], [0, 1])
    boundary = np.array([[0.5 + 1e-12], [0.5], [0.75]])
    assert tree.predict(boundary).tolist() == [0, 0, 1]

    report = export_verified_onnx(tree, boundary, tmp_path / ONNX_FILENAME)

    assert report is not None and report["dtype"] == "float32"
    served = onnx_model(tree, tmp_path / ONNX_FILENAME, report)
    assert served.predict(boundary, probabilities=False).labels.tolist() == [0, 0, 1]


def test_string_class_labels_survive_the_round_trip(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, names)

    report = export_verified_onnx(estimator, x, tmp_path / ONNX_FILENAME)

    assert report is not None
    labels = onnx_model(estimator, tmp_path / ONNX_FILENAME, report).predict(x, probabilities=False).labels
    assert labels.tolist() == estimator.predict(x).tolist()


def _double(values):
    return values * 2.0


def test_unconvertible_estimator_writes_nothing_and_returns_none(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    estimator = make_pipeline(FunctionTransformer(_double), LogisticRegression(max_iter=500)).fit(x, y)

    assert export_verified_onnx(estimator, x, tmp_path / ONNX_FILENAME) is None
    assert list(tmp_path.iterdir()) == []


def test_empty_check_set_is_refused(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    estimator = LogisticRegression(max_iter=500).fit(x, y)

    assert export_verified_onnx(estimator, x[:0], tmp_path / ONNX_FILENAME) is None
    assert list(tmp_path.iterdir()) == []
