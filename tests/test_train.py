import json

import numpy as np
import pandas as pd
import pytest

from components.constants import (
    DEFAULT_LABEL_COLUMN,
    MODEL_CARD_FILENAME,
    MODEL_FAMILIES,
    MODEL_FILENAME,
    ONNX_FILENAME,
    REFERENCE_PROFILE_FILENAME,
)
from components.data import load_dataset, split_dataset
from components.model_artifact import load_estimator, verify_model_dir
from components.train import (
    FAMILY_DEFAULTS,
    TrainingConfigError,
    resolve_hyperparameters,
    save_trained_model,
    train_model,
)

LABEL = DEFAULT_LABEL_COLUMN


@pytest.fixture(scope="module")
def iris_split() -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_dataset(load_dataset("iris", label_column=LABEL), label_column=LABEL, test_fraction=0.2, seed=0)


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_each_family_fits_a_scaled_pipeline_that_learns_iris(iris_split, family):
    train, test = iris_split
    trained = train_model(train, label_column=LABEL, family=family, seed=0)
    assert [name for name, _ in trained.estimator.steps] == ["scale", "classify"]
    assert trained.feature_names == [c for c in train.columns if c != LABEL]
    assert trained.class_names == ["0", "1", "2"]
    accuracy = (trained.estimator.predict(test.drop(columns=[LABEL]).to_numpy()) == test[LABEL]).mean()
    assert accuracy > 0.85


def test_overrides_merge_onto_family_defaults_and_reach_the_classifier(iris_split):
    train, _ = iris_split
    trained = train_model(train, label_column=LABEL, family="random_forest", hyperparameters={"n_estimators": 7})
    assert trained.hyperparameters == {**FAMILY_DEFAULTS["random_forest"], "n_estimators": 7}
    assert len(trained.estimator.named_steps["classify"].estimators_) == 7


def test_the_seed_makes_training_reproducible(iris_split):
    train, test = iris_split
    x = test.drop(columns=[LABEL]).to_numpy()
    first = train_model(train, label_column=LABEL, family="random_forest", seed=3).estimator.predict_proba(x)
    second = train_model(train, label_column=LABEL, family="random_forest", seed=3).estimator.predict_proba(x)
    np.testing.assert_array_equal(first, second)


def test_unknown_family_and_hyperparameters_are_named():
    with pytest.raises(TrainingConfigError, match="unknown model_family 'svm'; choose one of: logistic_regression"):
        resolve_hyperparameters("svm", {})
    with pytest.raises(TrainingConfigError, match="does not take hyperparameter\\(s\\) depth"):
        resolve_hyperparameters("random_forest", {"depth": 3})


def test_invalid_hyperparameter_values_are_a_config_error(iris_split):
    train, _ = iris_split
    with pytest.raises(TrainingConfigError, match="invalid hyperparameters for logistic_regression"):
        train_model(train, label_column=LABEL, family="logistic_regression", hyperparameters={"C": -1.0})


@pytest.mark.parametrize("family", MODEL_FAMILIES)
def test_saved_model_directory_is_what_kserve_loads(tmp_path, iris_split, family):
    train, test = iris_split
    trained = train_model(
        train,
        label_column=LABEL,
        family=family,
        hyperparameters={"n_estimators": 10} if family == "random_forest" else None,
    )
    check = test.drop(columns=[LABEL])
    card = save_trained_model(
        trained,
        tmp_path / "model",
        family=family,
        label_column=LABEL,
        training_data_fingerprint="f" * 64,
        check_features=check,
        reference_features=train.drop(columns=[LABEL]),
    )
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert files == sorted([MODEL_CARD_FILENAME, MODEL_FILENAME, ONNX_FILENAME, REFERENCE_PROFILE_FILENAME])
    assert [f for f in files if f.endswith((".joblib", ".pkl", ".pickle"))] == [MODEL_FILENAME]
    recorded = json.loads((tmp_path / "model" / MODEL_CARD_FILENAME).read_text())
    assert recorded["feature_names"] == list(check.columns)
    assert recorded["versions"]["scikit-learn"] == card.sklearn_version
    assert set(recorded["files"]) == {MODEL_FILENAME, ONNX_FILENAME, REFERENCE_PROFILE_FILENAME}
    profile = json.loads((tmp_path / "model" / REFERENCE_PROFILE_FILENAME).read_text())
    assert profile["feature_names"] == list(check.columns) and profile["rows"] == len(train)
    assert recorded["onnx"], "the fast path's equivalence check is recorded"
    assert verify_model_dir(tmp_path / "model") == card
    loaded, _ = load_estimator(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(check.to_numpy()), trained.estimator.predict(check.to_numpy()))


def test_integral_floats_from_a_kfp_struct_become_ints_where_the_classifier_wants_ints():
    # A dict pipeline parameter crosses KFP as a protobuf Struct: every number arrives as a double.
    resolved = resolve_hyperparameters(
        "random_forest", {"n_estimators": 7.0, "max_depth": 3.0, "min_samples_leaf": 0.5, "max_features": 1.0}
    )
    assert resolved["n_estimators"] == 7 and type(resolved["n_estimators"]) is int
    assert resolved["max_depth"] == 3 and type(resolved["max_depth"]) is int
    assert resolved["n_jobs"] == 1 and type(resolved["n_jobs"]) is int
    # Where sklearn gives the float its own meaning (a fraction), the float stays.
    assert type(resolved["min_samples_leaf"]) is float and type(resolved["max_features"]) is float
    logistic = resolve_hyperparameters("logistic_regression", {"C": 2.0, "max_iter": 50.0})
    assert type(logistic["C"]) is float and type(logistic["max_iter"]) is int


@pytest.mark.parametrize(
    ("family", "overrides", "message"),
    [
        (
            "random_forest",
            {"n_estimators": 2.5},
            "The 'n_estimators' parameter of RandomForestClassifier must be an int",
        ),
        ("random_forest", {"max_depth": 0}, "The 'max_depth' parameter of RandomForestClassifier must be an int"),
        ("logistic_regression", {"C": -1.0}, "The 'C' parameter of LogisticRegression must be a float"),
    ],
)
def test_values_outside_the_classifiers_constraints_are_refused_in_one_line(family, overrides, message):
    with pytest.raises(TrainingConfigError, match=f"invalid hyperparameters for {family}: {message}") as caught:
        resolve_hyperparameters(family, overrides)
    assert "\n" not in str(caught.value)


def test_a_model_trained_on_struct_numbers_records_int_hyperparameters(iris_split):
    train, _ = iris_split
    trained = train_model(train, label_column=LABEL, family="random_forest", hyperparameters={"n_estimators": 7.0})
    assert trained.hyperparameters["n_estimators"] == 7 and type(trained.hyperparameters["n_estimators"]) is int
    assert len(trained.estimator.named_steps["classify"].estimators_) == 7
