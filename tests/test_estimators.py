import subprocess
import sys

import pytest
from sklearn.base import is_classifier, is_regressor

from components.estimators import (
    AUTO_FAMILIES,
    AUTO_FAMILY,
    ESTIMATOR_DEFAULTS,
    FAMILIES,
    TrainingConfigError,
    build_estimator,
    check_training_config,
    needs_scaling,
    resolve_estimator,
    resolve_hyperparameters,
    short_names,
    sklearn_estimators,
)

FAMILY_TASKS = [
    (family, task)
    for family, paths in FAMILIES.items()
    for task, path in zip(("classification", "regression"), paths, strict=True)
    if path is not None
]


def test_the_issue_names_are_all_short_families():
    for name in ("logistic_regression", "random_forest", "hist_gradient_boosting", "ridge", "linear_regression"):
        assert name in FAMILIES
    assert {"svm", "gradient_boosting", "extra_trees", "knn"} <= set(FAMILIES)


@pytest.mark.parametrize(("family", "task"), FAMILY_TASKS)
def test_each_short_name_resolves_to_the_public_sklearn_estimator_of_its_task(family, task):
    choice = resolve_estimator(family, task)
    assert choice.family == family and choice.task == task
    assert choice.path == FAMILIES[family][0 if task == "classification" else 1]
    assert sklearn_estimators()[choice.path] == ("classifier" if task == "classification" else "regressor", choice.cls)
    estimator = build_estimator(choice, resolve_hyperparameters(family, task, {}), seed=0)
    assert (is_classifier if task == "classification" else is_regressor)(estimator)
    if task == "classification":
        assert hasattr(estimator, "predict_proba"), "every classification family can serve probabilities"


def test_auto_is_logistic_regression_for_classification_and_ridge_for_regression():
    assert AUTO_FAMILIES == {"classification": "logistic_regression", "regression": "ridge"}
    assert resolve_estimator(AUTO_FAMILY, "classification").path == "sklearn.linear_model.LogisticRegression"
    assert resolve_estimator(AUTO_FAMILY, "regression").family == "ridge"


def test_family_defaults_are_sane_for_a_shared_node_and_for_serving():
    svc = resolve_hyperparameters("svm", "classification", {})
    assert svc["probability"] is True  # so the served model answers predict_proba
    assert resolve_hyperparameters("random_forest", "regression", {})["n_jobs"] == 1
    assert resolve_hyperparameters("extra_trees", "classification", {})["n_jobs"] == 1
    assert resolve_hyperparameters("logistic_regression", "classification", {})["max_iter"] == 1000
    # A path gets the same defaults as the short name for the same class.
    assert resolve_hyperparameters("sklearn.svm.SVC", "classification", {}) == svc
    assert set(ESTIMATOR_DEFAULTS) <= set(sklearn_estimators())


@pytest.mark.parametrize(
    ("path", "task"),
    [
        ("sklearn.ensemble.ExtraTreesClassifier", "classification"),
        ("sklearn.naive_bayes.GaussianNB", "classification"),
        ("sklearn.linear_model.Lasso", "regression"),
        ("sklearn.tree.DecisionTreeRegressor", "regression"),
    ],
)
def test_public_sklearn_paths_of_the_right_task_are_accepted(path, task):
    choice = resolve_estimator(path, task)
    module, _, name = path.rpartition(".")
    assert choice.cls is getattr(__import__(module, fromlist=[name]), name)
    assert choice.family == choice.path == path


@pytest.mark.parametrize(
    ("model_family", "task", "message"),
    [
        ("os.system", "classification", r"unknown model_family 'os\.system'; choose auto, one of logistic_regression"),
        (
            "sklearn.cluster.KMeans",
            "classification",
            r"'sklearn\.cluster\.KMeans' is not a scikit-learn classifier or regressor; choose auto",
        ),
        (
            "sklearn.ensemble.RandomForestRegressor",
            "classification",
            r"is a regressor, but the task is classification: use sklearn\.ensemble\.RandomForestClassifier, or",
        ),
        (
            "sklearn.svm.SVC",
            "regression",
            r"is a classifier, but the task is regression: use sklearn\.svm\.SVR, or choose auto, one of "
            r"linear_regression, ridge, svm, knn, random_forest",
        ),
        ("ridge", "classification", "model_family 'ridge' has no classifier, and the task is classification"),
        ("logistic_regression", "regression", "'logistic_regression' has no regressor"),
        ("sklearn.ensemble.RandomForestClasifier", "classification", r"did you mean .*RandomForestClassifier\?"),
        (
            "sklearn.ensemble._forest.RandomForestClassifier",
            "classification",
            r"is not a scikit-learn classifier or regressor; did you mean sklearn\.ensemble\.RandomForestClassifier",
        ),
        ("sklearn.ensemble.VotingClassifier", "classification", "it needs estimators .*which a JSON hyperparameter"),
        ("sklearn.linear_model.MultiTaskLasso", "regression", "it predicts several targets at once"),
        ("", "classification", "model_family must be a non-empty string"),
        ("random_forest", "clustering", "task must be classification or regression"),
    ],
)
def test_refusals_are_one_line_and_name_what_is_allowed(model_family, task, message):
    with pytest.raises(TrainingConfigError, match=message) as refused:
        resolve_estimator(model_family, task)
    text = str(refused.value)
    assert "\n" not in text
    if task in ("classification", "regression") and model_family:
        assert "choose auto, one of" in text and "sklearn.utils.all_estimators" in text


_NEVER_IMPORTED = """
import sys
from components.estimators import TrainingConfigError, check_training_config, resolve_estimator

sys.path.insert(0, sys.argv[1])
for family in ("planted.Evil", "sklearn.experimental.enable_halving_search_cv.HalvingGridSearchCV"):
    for call in (lambda: resolve_estimator(family, "classification"), lambda: check_training_config(family, "", {})):
        try:
            call()
        except TrainingConfigError:
            pass
        else:
            raise SystemExit(f"{family} was accepted")
print("planted" in sys.modules, "sklearn.experimental.enable_halving_search_cv" in sys.modules)
"""


def test_a_model_family_string_is_looked_up_never_imported(tmp_path):
    # A module that leaves a mark when imported, and an sklearn module whose import changes sklearn (it enables an
    # experimental API): neither may be imported because a pipeline parameter named it.
    marker = tmp_path / "imported"
    (tmp_path / "planted.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\nclass Evil: ...\n")
    result = subprocess.run(
        [sys.executable, "-c", _NEVER_IMPORTED, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
    assert not marker.exists()


def test_integral_floats_become_ints_for_any_estimator_where_only_an_int_is_accepted():
    # KFP delivers {"n_estimators": 50} as 50.0; the estimator's own constraints decide.
    gb = resolve_hyperparameters("gradient_boosting", "regression", {"n_estimators": 50.0, "subsample": 1.0})
    assert type(gb["n_estimators"]) is int and type(gb["subsample"]) is float
    hgb = resolve_hyperparameters("hist_gradient_boosting", "classification", {"max_iter": 10.0, "max_bins": 63.0})
    assert type(hgb["max_iter"]) is int and type(hgb["max_bins"]) is int
    knn = resolve_hyperparameters("knn", "regression", {"n_neighbors": 3.0})
    assert type(knn["n_neighbors"]) is int
    lasso = resolve_hyperparameters("sklearn.linear_model.Lasso", "regression", {"alpha": 1.0, "max_iter": 500.0})
    assert type(lasso["alpha"]) is float and type(lasso["max_iter"]) is int
    # Where the float has its own meaning (a fraction of the features), it stays a float.
    extra = resolve_hyperparameters("extra_trees", "classification", {"max_features": 1.0})
    assert type(extra["max_features"]) is float


@pytest.mark.parametrize(
    ("family", "task", "overrides", "message"),
    [
        ("svm", "classification", {"C": 0.0}, "invalid hyperparameters for svm: The 'C' parameter of SVC must be"),
        ("ridge", "regression", {"alpha": -1.0}, "The 'alpha' parameter of Ridge must be"),
        ("hist_gradient_boosting", "regression", {"max_bins": 300}, "The 'max_bins' parameter of"),
        ("knn", "classification", {"weights": "far"}, "The 'weights' parameter of KNeighborsClassifier must be"),
        ("random_forest", "regression", {"criterion": "gini"}, "The 'criterion' parameter of RandomForestRegressor"),
        ("ridge", "regression", {"C": 1.0}, r"ridge does not take hyperparameter\(s\) C; it takes: alpha,"),
        ("svm", "regression", ["C", 1.0], "hyperparameters must be a JSON object, got list"),
    ],
)
def test_hyperparameters_outside_the_estimators_constraints_are_refused_in_one_line(family, task, overrides, message):
    with pytest.raises(TrainingConfigError, match=message) as refused:
        resolve_hyperparameters(family, task, overrides)
    assert "\n" not in str(refused.value)


def test_preflight_without_a_task_accepts_what_some_task_of_the_family_takes():
    check_training_config("random_forest", "", {"criterion": "gini"})  # classifier only
    check_training_config("random_forest", "", {"criterion": "squared_error"})  # regressor only
    check_training_config(AUTO_FAMILY, "", {"alpha": 2.0})  # auto: ridge for regression
    check_training_config(AUTO_FAMILY, "", {"C": 2.0})  # auto: logistic regression for classification
    check_training_config("sklearn.linear_model.Lasso", "", {"alpha": 0.5})
    with pytest.raises(TrainingConfigError, match="invalid hyperparameters for random_forest"):
        check_training_config("random_forest", "", {"criterion": "entropy-ish"})
    with pytest.raises(TrainingConfigError, match="unknown model_family 'xgboost'; choose auto, one of"):
        check_training_config("xgboost", "", {})
    with pytest.raises(TrainingConfigError, match=r"'sklearn\.cluster\.KMeans' is not a scikit-learn classifier"):
        check_training_config("sklearn.cluster.KMeans", "", {})


def test_preflight_with_a_task_checks_that_task():
    check_training_config("svm", "regression", {"epsilon": 0.2})
    with pytest.raises(TrainingConfigError, match="svm does not take hyperparameter"):
        check_training_config("svm", "classification", {"epsilon": 0.2})
    with pytest.raises(TrainingConfigError, match="is a classifier, but the task is regression"):
        check_training_config("sklearn.ensemble.ExtraTreesClassifier", "regression", {})


def test_the_seed_becomes_random_state_unless_the_run_sets_it():
    choice = resolve_estimator("random_forest", "classification")
    assert build_estimator(choice, {}, seed=7).random_state == 7
    assert build_estimator(choice, {"random_state": 3}, seed=7).random_state == 3
    ridge = resolve_estimator("linear_regression", "regression")
    assert "random_state" not in build_estimator(ridge, {}, seed=7).get_params()


def test_scaling_is_for_estimators_that_compare_features_with_each_other():
    tasks = {family: "classification" if paths[0] else "regression" for family, paths in FAMILIES.items()}
    scaled = {family for family, task in tasks.items() if needs_scaling(resolve_estimator(family, task).cls)}
    assert scaled == {"logistic_regression", "linear_regression", "ridge", "svm", "knn"}
    assert not needs_scaling(resolve_estimator("sklearn.naive_bayes.GaussianNB", "classification").cls)
    assert needs_scaling(resolve_estimator("sklearn.neural_network.MLPRegressor", "regression").cls)


def test_short_names_per_task():
    assert "ridge" not in short_names("classification") and "logistic_regression" not in short_names("regression")
    assert set(short_names("")) == set(FAMILIES)
