import json

import numpy as np
import pandas as pd
import pytest

from benchmarks.make_mixed_data import CLASSIFICATION_LABEL, REGRESSION_LABEL, make_mixed_data
from components import estimators
from components.constants import (
    DEFAULT_LABEL_COLUMN,
    FINAL_STEP_NAME,
    MODEL_CARD_FILENAME,
    MODEL_FILENAME,
    ONNX_FILENAME,
    REFERENCE_PROFILE_FILENAME,
)
from components.data import load_dataset, split_dataset
from components.estimators import FAMILIES
from components.features import FeatureSchema, feature_matrix, infer_feature_schema
from components.model_artifact import load_estimator, verify_model_dir
from components.train import TrainingConfigError, save_trained_model, train_model

LABEL = DEFAULT_LABEL_COLUMN
FAMILY_TASKS = [
    (family, task)
    for family, paths in FAMILIES.items()
    for task, path in zip(("classification", "regression"), paths, strict=True)
    if path is not None
]
SMALL_ENSEMBLES = {"n_estimators": 20}
"""Enough trees to learn the demo data, few enough to keep the tests quick."""


def _small(family: str) -> dict:
    return SMALL_ENSEMBLES if family in ("random_forest", "extra_trees", "gradient_boosting") else {}


@pytest.fixture(scope="module")
def iris_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_dataset(load_dataset("iris", label_column=LABEL), label_column=LABEL, test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def iris_schema(iris_split) -> FeatureSchema:
    return infer_feature_schema(pd.concat(iris_split), label_column=LABEL)


def _mixed(task: str, rows: int = 240) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSchema]:
    """The issue's demo data: string categories, missing values, a boolean, a coded category."""
    frame = make_mixed_data(rows, task=task, seed=1)
    label = CLASSIFICATION_LABEL if task == "classification" else REGRESSION_LABEL
    schema = infer_feature_schema(frame, label_column=label, feature_types={"store": "categorical"})
    cut = rows * 3 // 4
    return frame.iloc[:cut], frame.iloc[cut:], schema


@pytest.fixture(scope="module")
def mixed_classification():
    return _mixed("classification")


@pytest.fixture(scope="module")
def mixed_regression():
    return _mixed("regression")


@pytest.mark.filterwarnings("ignore::UserWarning")  # KNN/SVM may warn about feature names: they get arrays by design
@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_each_family_learns_each_task_on_mixed_data(request, family, task):
    train, test, schema = request.getfixturevalue(f"mixed_{task}")
    assert not schema.all_numeric and any(f.nullable for f in schema.features)
    trained = train_model(train, schema=schema, model_family=family, hyperparameters=_small(family), seed=0)
    assert [name for name, _ in trained.estimator.steps] == ["pre", FINAL_STEP_NAME]
    assert (trained.family, trained.task, trained.schema) == (family, task, schema)
    assert trained.estimator_path == FAMILIES[family][0 if task == "classification" else 1]
    predicted = trained.estimator.predict(feature_matrix(test, schema))
    label = test[schema.label_column]
    if task == "classification":
        assert trained.class_names == ["no", "yes"]
        majority = label.value_counts(normalize=True).max()
        assert (predicted == label.to_numpy()).mean() > majority + 0.1
    else:
        assert trained.class_names == []
        truth = label.to_numpy(dtype=float)
        r2 = 1 - np.sum((predicted - truth) ** 2) / np.sum((truth - truth.mean()) ** 2)
        assert r2 > 0.1


def test_auto_trains_logistic_regression_or_ridge(mixed_classification, mixed_regression):
    for (train, _, schema), expected in ((mixed_classification, "logistic_regression"), (mixed_regression, "ridge")):
        trained = train_model(train, schema=schema, model_family="auto", hyperparameters={}, seed=0)
        assert trained.family == expected
        assert type(trained.estimator.named_steps[FINAL_STEP_NAME]).__name__ in ("LogisticRegression", "Ridge")


def test_an_sklearn_import_path_trains_like_a_family(mixed_regression):
    train, test, schema = mixed_regression
    trained = train_model(
        train, schema=schema, model_family="sklearn.linear_model.Lasso", hyperparameters={"alpha": 0.1}
    )
    assert trained.family == trained.estimator_path == "sklearn.linear_model.Lasso"
    assert trained.hyperparameters == {"alpha": 0.1}
    assert np.isfinite(trained.estimator.predict(feature_matrix(test, schema))).all()


def test_a_regressor_for_classification_is_refused_before_fitting(mixed_classification):
    train, _, schema = mixed_classification
    with pytest.raises(TrainingConfigError, match="is a regressor, but the task is classification"):
        train_model(train, schema=schema, model_family="sklearn.ensemble.RandomForestRegressor", hyperparameters={})


def test_data_the_schema_does_not_describe_is_a_one_line_error(mixed_classification):
    train, _, schema = mixed_classification
    odd = train.copy()
    odd.loc[odd.index[0], "plan"] = "platinum"  # a category the schema does not list
    with pytest.raises(
        TrainingConfigError, match="categories of feature 'plan' the feature schema does not list: 'platinum'"
    ) as e:
        train_model(odd, schema=schema, model_family="logistic_regression", hyperparameters={})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest"])
def test_all_numeric_data_keeps_the_plain_pipeline_and_learns_iris(iris_split, iris_schema, family):
    train, test = iris_split
    assert iris_schema.all_numeric
    trained = train_model(train, schema=iris_schema, model_family=family, hyperparameters={}, seed=0)
    expected = ["scale", FINAL_STEP_NAME] if family == "logistic_regression" else [FINAL_STEP_NAME]
    assert [name for name, _ in trained.estimator.steps] == expected
    assert trained.feature_names == [c for c in train.columns if c != LABEL]
    assert trained.class_names == ["0", "1", "2"]
    accuracy = (trained.estimator.predict(feature_matrix(test, iris_schema)) == test[LABEL]).mean()
    assert accuracy > 0.85


def test_callers_without_a_schema_still_train_all_numeric_classification(iris_split, iris_schema):
    train, test = iris_split
    old = train_model(train, label_column=LABEL, family="random_forest", hyperparameters={"n_estimators": 7}, seed=1)
    new = train_model(
        train, schema=iris_schema, model_family="random_forest", hyperparameters={"n_estimators": 7.0}, seed=1
    )
    x = feature_matrix(test, iris_schema)
    np.testing.assert_array_equal(old.estimator.predict_proba(x), new.estimator.predict_proba(x))
    assert old.schema.names == iris_schema.names and old.schema.all_numeric


def test_overrides_merge_onto_family_defaults_and_reach_the_estimator(iris_split, iris_schema):
    train, _ = iris_split
    trained = train_model(train, schema=iris_schema, model_family="random_forest", hyperparameters={"n_estimators": 7})
    defaults = estimators.ESTIMATOR_DEFAULTS["sklearn.ensemble.RandomForestClassifier"]
    assert trained.hyperparameters == {**defaults, "n_estimators": 7}
    assert len(trained.estimator.named_steps[FINAL_STEP_NAME].estimators_) == 7


def test_the_seed_makes_training_reproducible(mixed_classification):
    train, test, schema = mixed_classification
    x = feature_matrix(test, schema)
    runs = [
        train_model(train, schema=schema, model_family="extra_trees", hyperparameters=SMALL_ENSEMBLES, seed=3)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].estimator.predict_proba(x), runs[1].estimator.predict_proba(x))


def test_a_model_trained_on_struct_numbers_records_int_hyperparameters(iris_split, iris_schema):
    train, _ = iris_split
    trained = train_model(
        train, schema=iris_schema, model_family="random_forest", hyperparameters={"n_estimators": 7.0}
    )
    assert trained.hyperparameters["n_estimators"] == 7 and type(trained.hyperparameters["n_estimators"]) is int
    assert len(trained.estimator.named_steps[FINAL_STEP_NAME].estimators_) == 7


def test_the_config_error_stays_importable_from_train():
    assert TrainingConfigError is estimators.TrainingConfigError


def _saved(trained, directory, train, test):
    return save_trained_model(
        trained,
        directory,
        training_data_fingerprint="f" * 64,
        check_features=test,
        reference_features=train,
    )


@pytest.mark.parametrize("family", ["logistic_regression", "random_forest"])
def test_an_all_numeric_model_directory_is_what_kserve_loads_with_its_onnx_fast_path(
    tmp_path, iris_split, iris_schema, family
):
    train, test = iris_split
    trained = train_model(train, schema=iris_schema, model_family=family, hyperparameters=_small(family))
    card = _saved(trained, tmp_path / "model", train, test)
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == sorted([MODEL_CARD_FILENAME, MODEL_FILENAME, ONNX_FILENAME, REFERENCE_PROFILE_FILENAME])
    recorded = json.loads((tmp_path / "model" / MODEL_CARD_FILENAME).read_text())
    assert recorded["schema_version"] == 2 and recorded["task"] == "classification"
    assert recorded["feature_names"] == iris_schema.names
    assert recorded["features"] == [f.model_dump() for f in iris_schema.features]
    assert recorded["estimator"] == FAMILIES[family][0] and recorded["model_family"] == family
    assert recorded["serving_path"] == "onnx" and recorded["onnx"], "the fast path's equivalence check is recorded"
    assert set(recorded["files"]) == {MODEL_FILENAME, ONNX_FILENAME, REFERENCE_PROFILE_FILENAME}
    assert verify_model_dir(tmp_path / "model") == card
    loaded, _ = load_estimator(tmp_path / "model")
    x = feature_matrix(test, iris_schema)
    np.testing.assert_array_equal(loaded.predict(x), trained.estimator.predict(x))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_mixed_type_model_directory_records_the_typed_schema(tmp_path, request, task):
    train, test, schema = request.getfixturevalue(f"mixed_{task}")
    family = "hist_gradient_boosting"
    trained = train_model(train, schema=schema, model_family=family, hyperparameters={"max_iter": 20})
    card = _saved(trained, tmp_path / "model", train, test)
    assert card.schema_version == 2 and card.task == task and card.features == schema.features
    assert card.class_names == (["no", "yes"] if task == "classification" else [])
    assert card.feature_schema.features == schema.features and card.label_column == schema.label_column
    plan = next(f for f in card.features if f.name == "plan")
    assert plan.kind == "categorical" and plan.nullable and plan.categories == ["basic", "premium", "standard"]
    # The card says which file serves: HGB with native categorical splits has an exact ONNX graph (onnx_hgb).
    assert card.serving_path == "onnx" and card.onnx["kept"] is True
    assert (tmp_path / "model" / ONNX_FILENAME).is_file() and ONNX_FILENAME in card.files
    assert (tmp_path / "model" / REFERENCE_PROFILE_FILENAME).is_file()
    loaded, loaded_card = load_estimator(tmp_path / "model")
    assert loaded_card == card
    x = feature_matrix(test, schema)
    np.testing.assert_array_equal(loaded.predict(x), trained.estimator.predict(x))


def test_saving_refuses_a_family_or_label_the_model_was_not_trained_with(tmp_path, iris_split, iris_schema):
    train, test = iris_split
    trained = train_model(train, schema=iris_schema, model_family="logistic_regression", hyperparameters={})
    with pytest.raises(TrainingConfigError, match="trained as logistic_regression, not random_forest"):
        save_trained_model(
            trained, tmp_path / "m", training_data_fingerprint="f", check_features=test, reference_features=train,
            family="random_forest",
        )  # fmt: skip
    card = save_trained_model(
        trained, tmp_path / "m", training_data_fingerprint="f", check_features=test, reference_features=train,
        family="logistic_regression", label_column=LABEL,
    )  # fmt: skip
    assert card.model_family == "logistic_regression"


def test_an_estimator_that_refuses_the_data_is_a_one_line_config_error(mixed_regression):
    train, _, schema = mixed_regression
    with pytest.raises(
        TrainingConfigError, match=r"cannot train sklearn\.isotonic\.IsotonicRegression on this data: "
    ) as e:
        train_model(train, schema=schema, model_family="sklearn.isotonic.IsotonicRegression", hyperparameters={})
    assert "\n" not in str(e.value)
