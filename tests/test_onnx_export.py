"""The ONNX fast path is written only when ONNX Runtime predicts exactly what sklearn predicts."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import onnxruntime
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder, StandardScaler
from sklearn.svm import SVR
from sklearn.tree import DecisionTreeClassifier

from benchmarks.make_mixed_data import CLASSIFICATION_LABEL, REGRESSION_LABEL, make_mixed_data
from components.constants import (
    MISSING_CATEGORY,
    ONNX_CATEGORICAL_INPUT,
    ONNX_FILENAME,
    ONNX_NUMERIC_INPUT,
    ONNX_PROBA_TOLERANCE,
    ONNX_REGRESSION_RTOL,
    SERVING_PATH_JOBLIB,
    SERVING_PATH_ONNX,
    TASK_CLASSIFICATION,
    TASK_REGRESSION,
)
from components.estimators import FAMILIES, resolve_estimator, resolve_hyperparameters
from components.features import Task, feature_matrix, infer_feature_schema
from components.model_artifact import ModelCard
from components.onnx_export import (
    ONNX_INPUT_NAME,
    _compare,
    _Outputs,
    export_verified_onnx,
    onnx_feed,
    onnx_serving_path,
    regression_tolerance,
)
from components.preprocessing import build_pipeline
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


def test_a_bare_tree_gets_a_double_graph_with_float32_rounded_inputs(tmp_path: Path) -> None:
    # sklearn's tree compares float32(x) with its threshold: 0.5 + 1e-12 rounds to 0.5 and goes left like 0.5.
    # skl2onnx declares the lone tree's float32 probabilities as double; the export casts them, so the double
    # graph (inputs rounded to float32 before the tree) runs and is exact.
    tree = DecisionTreeClassifier().fit([[0.0], [1.0]], [0, 1])
    boundary = np.array([[0.5 + 1e-12], [0.5], [0.75]])
    assert tree.predict(boundary).tolist() == [0, 0, 1]

    report = export_verified_onnx(tree, boundary, tmp_path / ONNX_FILENAME)

    assert report is not None and report["dtype"] == "float64" and report["tree_inputs_rounded_to_float32"]
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


# --- Typed features, regression, every family -------------------------------------------------------------------


def _family_estimator(family: str, name: str):
    """The family's estimator with the pipeline's defaults, made small enough for a quick test."""
    task = cast(Task, name)
    choice = resolve_estimator(family, task)
    estimator = choice.cls(**resolve_hyperparameters(family, task, {}))
    if "n_estimators" in estimator.get_params():
        estimator.set_params(n_estimators=15)
    if family == "hist_gradient_boosting":
        estimator.set_params(max_iter=20)
    return estimator


def _families(task: str) -> list[str]:
    return [name for name, paths in FAMILIES.items() if paths[0 if task == TASK_CLASSIFICATION else 1]]


FAMILY_TASKS = [(f, TASK_CLASSIFICATION) for f in _families(TASK_CLASSIFICATION)] + [
    (f, TASK_REGRESSION) for f in _families(TASK_REGRESSION)
]


def run_graph(path: Path, x: np.ndarray, schema) -> list[np.ndarray]:
    """What a server does: feed the `feature_matrix` rows through `onnx_feed` into ONNX Runtime."""
    session = onnxruntime.InferenceSession(path.read_bytes(), providers=["CPUExecutionProvider"])
    types = {i.name: i.type for i in session.get_inputs()}
    feed = {
        name: value.astype(np.float32) if types[name] == "tensor(float)" else value
        for name, value in onnx_feed(x, schema).items()
    }
    return session.run(None, feed)


def assert_graph_matches_sklearn(path: Path, report: dict, estimator, x: np.ndarray, schema) -> None:
    outputs = run_graph(path, x, schema)
    if schema.task == TASK_REGRESSION:
        got = np.asarray(outputs[0], dtype=np.float64).ravel()
        expected = estimator.predict(x)
        assert report["max_abs_diff"] <= report["tolerance"]
        np.testing.assert_allclose(got, expected, rtol=0, atol=regression_tolerance(expected))
        return
    np.testing.assert_array_equal(np.asarray(outputs[0]).ravel(), estimator.predict(x))
    if report["has_probabilities"]:
        np.testing.assert_allclose(outputs[1], estimator.predict_proba(x), rtol=0, atol=ONNX_PROBA_TOLERANCE)


def mixed_frame(task: str, rows: int = 300):
    frame = make_mixed_data(rows, task=task, seed=11, missing_rate=0.1)
    label = CLASSIFICATION_LABEL if task == TASK_CLASSIFICATION else REGRESSION_LABEL
    schema = infer_feature_schema(frame, label_column=label, task=task, feature_types={"store": "categorical"})
    return frame, label, schema


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS, ids=[f"{f}-{t}" for f, t in FAMILY_TASKS])
def test_every_family_with_categories_and_missing_values_is_kept_and_served_equal(
    family: str, task: str, tmp_path: Path
) -> None:
    frame, label, schema = mixed_frame(task)
    assert not schema.all_numeric and any(f.nullable for f in schema.features)
    x = feature_matrix(frame, schema)
    model = build_pipeline(schema, _family_estimator(family, task)).fit(x[:200], frame[label][:200])
    path = tmp_path / ONNX_FILENAME

    report = export_verified_onnx(model, x[200:], path, schema=schema)

    assert report is not None
    assert report["kept"] is True, report.get("reason")
    assert report["serving_path"] == SERVING_PATH_ONNX == onnx_serving_path(report)
    assert report["task"] == task and report["rows_checked"] == 100 and report["dtype"] == "float64"
    assert report["inputs"] == {ONNX_NUMERIC_INPUT: "float64", ONNX_CATEGORICAL_INPUT: "string"}
    # Rows the check never saw: a category unknown to training, and every nullable feature missing.
    unseen = frame[200:230].copy()
    unseen["plan"], unseen["region"], unseen["age"], unseen["income"] = "platinum", None, np.nan, np.nan
    for rows in (x[200:], feature_matrix(unseen, schema)):
        assert_graph_matches_sklearn(path, report, model, rows, schema)


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS, ids=[f"{f}-{t}" for f, t in FAMILY_TASKS])
def test_every_family_on_all_numeric_features_keeps_one_input(family: str, task: str, tmp_path: Path) -> None:
    load = load_iris if task == TASK_CLASSIFICATION else load_diabetes
    features, target = load(return_X_y=True, as_frame=True)
    frame = features.assign(target=target).sample(frac=1.0, random_state=0)
    schema = infer_feature_schema(frame, label_column="target", task=task)
    assert schema.all_numeric
    x = feature_matrix(frame, schema)
    model = build_pipeline(schema, _family_estimator(family, task)).fit(x[:100], frame["target"][:100])
    path = tmp_path / ONNX_FILENAME

    report = export_verified_onnx(model, x[100:], path, schema=schema)

    assert report is not None
    assert report["kept"] is True, report.get("reason")
    assert list(report["inputs"]) == [ONNX_INPUT_NAME]
    assert_graph_matches_sklearn(path, report, model, x[100:], schema)


def test_the_graph_reads_numerics_as_float64_and_categories_as_strings(tmp_path: Path) -> None:
    frame, label, schema = mixed_frame(TASK_CLASSIFICATION)
    x = feature_matrix(frame, schema)
    model = build_pipeline(schema, LogisticRegression(max_iter=1000)).fit(x, frame[label])

    report = export_verified_onnx(model, x, tmp_path / ONNX_FILENAME, schema=schema)

    assert report is not None and report["kept"]
    session = onnxruntime.InferenceSession((tmp_path / ONNX_FILENAME).read_bytes(), providers=["CPUExecutionProvider"])
    numeric = [f.name for f in schema.features if f.kind == "numeric"]
    categorical = [f.name for f in schema.features if f.kind == "categorical"]
    assert [(i.name, i.type, i.shape[1]) for i in session.get_inputs()] == [
        (ONNX_NUMERIC_INPUT, "tensor(double)", len(numeric)),
        (ONNX_CATEGORICAL_INPUT, "tensor(string)", len(categorical)),
    ]
    # A linear model in float64 from end to end: the probabilities agree to rounding, not just within 1e-6.
    assert report["max_abs_proba_diff"] < 1e-12


def test_onnx_feed_splits_the_matrix_by_kind_and_names_missing_categories() -> None:
    frame = pd.DataFrame(
        {
            "colour": ["red", None, "blue"],
            "size": [1.5, np.nan, 3.0],
            "shape": ["round", "square", np.nan],
            "weight": [10.0, 20.0, 30.0],
            "target": [0, 1, 0],
        }
    )
    schema = infer_feature_schema(frame, label_column="target", feature_types={"weight": "numeric"})

    feed = onnx_feed(feature_matrix(frame, schema), schema)

    assert set(feed) == {ONNX_NUMERIC_INPUT, ONNX_CATEGORICAL_INPUT}
    assert feed[ONNX_NUMERIC_INPUT].dtype == np.float64
    np.testing.assert_array_equal(feed[ONNX_NUMERIC_INPUT], [[1.5, 10.0], [np.nan, 20.0], [3.0, 30.0]])
    assert feed[ONNX_CATEGORICAL_INPUT].tolist() == [
        ["red", "round"],
        [MISSING_CATEGORY, "square"],
        ["blue", MISSING_CATEGORY],
    ]
    numeric_only = infer_feature_schema(frame[["weight", "target"]], label_column="target")
    assert list(onnx_feed(np.array([[1.0]]), numeric_only)) == [ONNX_INPUT_NAME]


def test_regression_tolerance_is_relative_to_the_largest_prediction() -> None:
    expected = np.array([-2000.0, 0.001, 1500.0])
    bound = regression_tolerance(expected)
    assert bound == pytest.approx(ONNX_REGRESSION_RTOL * 2000.0)

    within = _compare(_Outputs(expected), _Outputs(expected + bound), TASK_REGRESSION)
    beyond = _compare(_Outputs(expected), _Outputs(expected + np.array([0, 2 * bound, 0])), TASK_REGRESSION)
    not_a_number = _compare(_Outputs(expected), _Outputs(np.array([np.nan, 0.001, 1500.0])), TASK_REGRESSION)

    assert within[0] is None and within[1]["max_abs_diff"] == pytest.approx(bound)
    assert beyond[0] is not None and beyond[0].startswith("predictions differ by up to")
    assert not_a_number[0] is not None


def test_a_float32_kernel_is_within_the_regression_tolerance_but_not_exact(tmp_path: Path) -> None:
    # ONNX Runtime runs SVMRegressor in float32 only: the graph casts around it, which the tolerance is for.
    x, y = load_diabetes(return_X_y=True)
    model = make_pipeline(StandardScaler(), SVR(C=50.0)).fit(x[:300], y[:300])

    report = export_verified_onnx(model, x[300:], tmp_path / ONNX_FILENAME)

    assert report is not None and report["task"] == TASK_REGRESSION and not report["has_probabilities"]
    assert 0.0 < report["max_abs_diff"] <= report["tolerance"]
    assert report["rtol"] == ONNX_REGRESSION_RTOL


def test_a_column_transformer_part_over_both_kinds_falls_back_with_its_reason(tmp_path: Path) -> None:
    frame, label, schema = mixed_frame(TASK_CLASSIFICATION)
    x = feature_matrix(frame, schema)
    # One encoder over every column: sklearn can fit it (each value becomes a category), ONNX needs one type per part.
    everything = ColumnTransformer(
        [("all", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), list(range(x.shape[1])))]
    )
    model = make_pipeline(everything, DecisionTreeClassifier(random_state=0))
    model.fit(x.astype(str), frame[label])
    path = tmp_path / ONNX_FILENAME

    report = export_verified_onnx(model, x.astype(str).astype(object), path, schema=schema)

    assert report == {
        "kept": False,
        "serving_path": SERVING_PATH_JOBLIB,
        "reason": "ColumnTransformer part 'all' mixes numeric and categorical columns",
    }
    assert onnx_serving_path(report) == SERVING_PATH_JOBLIB
    assert not path.exists()


def test_an_unconvertible_step_falls_back_with_the_converter_reason(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True, as_frame=True)
    frame = x.assign(target=y)
    schema = infer_feature_schema(frame, label_column="target")
    estimator = make_pipeline(FunctionTransformer(_double), LogisticRegression(max_iter=500))
    estimator.fit(feature_matrix(frame, schema), y)

    report = export_verified_onnx(estimator, feature_matrix(frame, schema), tmp_path / ONNX_FILENAME, schema=schema)

    assert report is not None and report["kept"] is False and report["serving_path"] == SERVING_PATH_JOBLIB
    assert "FunctionTransformer" in report["reason"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("task", [TASK_CLASSIFICATION, TASK_REGRESSION])
def test_knn_fitted_on_sparse_one_hot_rows_is_kept(task: str, tmp_path: Path) -> None:
    # 300 categories: the pipeline keeps one-hot output sparse for KNN, so KNN stores its training rows as a
    # csr_matrix, which skl2onnx cannot embed; the converted copy holds them dense, the same rows.
    frame = make_mixed_data(600, task=task, seed=1)
    frame.insert(0, "city", [f"c{i % 300}" for i in range(600)])
    label = CLASSIFICATION_LABEL if task == TASK_CLASSIFICATION else REGRESSION_LABEL
    types = {"store": "categorical", "city": "categorical"}
    schema = infer_feature_schema(frame, label_column=label, task=task, feature_types=types)
    x = feature_matrix(frame, schema)
    model = build_pipeline(schema, _family_estimator("knn", task)).fit(x[:400], frame[label][:400])
    assert hasattr(model[-1]._fit_X, "toarray")  # sparse

    report = export_verified_onnx(model, x[400:], tmp_path / ONNX_FILENAME, schema=schema)

    assert report is not None
    assert report["kept"] is True, report.get("reason")
    assert_graph_matches_sklearn(tmp_path / ONNX_FILENAME, report, model, x[400:], schema)
    assert hasattr(model[-1]._fit_X, "toarray")  # the fitted model itself is untouched
