"""Pre-flight: every pipeline parameter is checked before the first step, with one message on `run` and `submit`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from components.constants import DEFAULT_MODEL_NAME
from components.names import MAX_MODEL_NAME_LENGTH, check_model_name
from components.parameters import ParameterError, check_writable, default_model_name, validate_parameters

PIPELINE = Path(pipeline.__file__).resolve()
DEFAULTS = pipeline.pipeline_defaults()

# (run flags, the same parameters as submit's --arg KEY=VALUE, the one line both print)
REFUSALS = [
    (["--min-accuracy", "1.5"], ("min_accuracy=1.5",), "min_accuracy must be a number in [0, 1], got 1.5"),
    (["--test-fraction", "1"], ("test_fraction=1.0",), "test_fraction must be a number in (0, 1), got 1.0"),
    (["--seed", "-1"], ("seed=-1",), "seed must be an integer between 0 and 4294967295, got -1"),
    (["--model-name", "Iris_Model"], ("model_name=Iris_Model",), "model name 'Iris_Model' must be lowercase letters"),
    (
        ["--model-family", "os.system"],
        ("model_family=os.system",),
        "unknown model_family 'os.system'; choose auto, one of logistic_regression",
    ),
    (
        ["--search-space", '[{"model_family": "random_forest", "grid": {"max_depth": []}}]'],
        ('search_space=[{"model_family": "random_forest", "grid": {"max_depth": []}}]',),
        "search_space[0].grid.max_depth must be a non-empty list of values, not []",
    ),
    (
        ["--gate-metric", "rmse", "--task", "classification"],
        ("gate_metric=rmse", "task=classification"),
        "gate_metric 'rmse' is a regression metric but this is a classification model",
    ),
    (["--min-improvement", "-0.5"], ("min_improvement=-0.5",), "min_improvement must be a finite number of at least 0"),
    (
        ["--hyperparameters", '{"C": -1}'],
        ('hyperparameters={"C": -1}',),
        "invalid hyperparameters for logistic_regression: The 'C' parameter of LogisticRegression must be a float",
    ),
    (
        ["--model-family", "random_forest", "--hyperparameters", '{"max_features": 1}'],
        ("model_family=random_forest", 'hyperparameters={"max_features": 1}'),
        "hyperparameter max_features=1 would reach the step as 1.0",
    ),
]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PIPELINE), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("run_flags", "submit_args", "message"), REFUSALS, ids=[r[1][-1] for r in REFUSALS])
def test_run_and_submit_refuse_a_bad_parameter_with_the_same_line_before_anything_runs(
    tmp_path, run_flags, submit_args, message
):
    ran = cli(tmp_path, "run", "--root", "out", *run_flags)
    # An endpoint nobody listens on: a refusal that came from the server would say "could not reach".
    submit_flags = [flag for arg in submit_args for flag in ("--arg", arg)]
    submitted = cli(tmp_path, "submit", "--endpoint", "http://127.0.0.1:9", *submit_flags)
    for proc, command in ((ran, "run"), (submitted, "submit")):
        assert proc.returncode == 2, proc.stdout + proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith(f"pipeline.py {command}: {message}")
        assert "Traceback" not in proc.stdout + proc.stderr
    assert ran.stderr.split(": ", 1)[1] == submitted.stderr.split(": ", 1)[1], "the same message on both paths"
    assert not (tmp_path / "out").exists(), "no step ran"


def test_submit_refuses_a_misspelt_parameter_and_a_bad_deploy_target_before_contacting_kfp(tmp_path):
    typo = cli(tmp_path, "submit", "--endpoint", "http://127.0.0.1:9", "--arg", "min_acuracy=0.5")
    assert typo.returncode == 2 and "unknown pipeline parameter(s) min_acuracy; known: dataset" in typo.stderr
    target = cli(tmp_path, "submit", "--endpoint", "http://127.0.0.1:9", "--arg", "deploy_target=gke")
    assert target.returncode == 2
    assert "unknown deploy_target 'gke'; choose one of: local, kubernetes" in target.stderr
    assert "could not reach" not in typo.stderr + target.stderr


def test_a_root_that_cannot_be_created_is_one_line_not_a_traceback(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    proc = cli(tmp_path, "run", "--root", "file/out")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"pipeline.py run: --root {tmp_path / 'file' / 'out'} cannot be created: " + (
        f"{tmp_path / 'file'} is not a directory"
    )


def test_a_read_only_root_is_refused_before_the_run(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # Root ignores mode bits; sysfs refuses new entries even to root (the store's own test uses it the same way).
    root = "locked/out" if os.geteuid() != 0 else "/sys/kfp-sklearn-kserve-out"
    try:
        proc = cli(tmp_path, "run", "--root", root)
    finally:
        locked.chmod(0o755)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and "is not writable" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Running pipeline" not in proc.stdout


def test_check_writable_accepts_a_new_directory_under_a_writable_one(tmp_path):
    check_writable(tmp_path / "a" / "b", what="--root")
    assert not (tmp_path / "a").exists(), "checking creates nothing"
    with pytest.raises(ParameterError, match="is not a directory"):
        (tmp_path / "f").write_text("")
        check_writable(tmp_path / "f" / "x", what="--root")


def test_an_int_that_kfp_turns_into_a_double_is_refused_in_a_search_candidate_too():
    space = [{"model_family": "random_forest", "hyperparameters": {"max_features": 1}}]
    with pytest.raises(ParameterError, match=r"hyperparameter max_features=1 would reach the step as 1\.0"):
        validate_parameters({**DEFAULTS, "search_space": space}, accepted=DEFAULTS)
    validate_parameters(
        {**DEFAULTS, "search_space": [{"model_family": "random_forest", "grid": {"n_estimators": [5]}}]},
        accepted=DEFAULTS,
    )


def test_the_defaults_of_the_compiled_pipeline_pass():
    validate_parameters(DEFAULTS, accepted=DEFAULTS)
    assert DEFAULTS["model_name"] == default_model_name(DEFAULTS["dataset"]) == DEFAULT_MODEL_NAME


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"deploy_timeout_seconds": 0}, "deploy_timeout_seconds must be an integer >= 1, got 0"),
        ({"deploy_timeout_seconds": 1.5}, "deploy_timeout_seconds must be an integer >= 1, got 1.5"),
        ({"seed": True}, "seed must be an integer"),
        ({"min_accuracy": "high"}, "min_accuracy must be a number in [0, 1], got 'high'"),
        ({"namespace": "Team A"}, "namespace 'Team A' must be lowercase letters"),
        ({"predictor_service_account": "-x"}, "predictor_service_account '-x' must be lowercase"),
        ({"payload_logger_url": "logger:8080"}, "payload_logger_url must be empty or an http(s):// URL"),
        ({"dataset": " "}, "dataset must be a non-empty string"),
        ({"label_column": ""}, "label_column must be a non-empty string"),
        ({"local_store": ""}, "local_store must be a non-empty path"),
        ({"hyperparameters": [1]}, "hyperparameters must be a JSON object"),
        ({"model_name": "m" * (MAX_MODEL_NAME_LENGTH + 1)}, "characters long; at most 46 are allowed"),
        ({"task": "ranking"}, "task must be one of classification, regression or empty"),
        ({"task": 1}, "task must be a string"),
        ({"feature_types": ["a"]}, "feature_types must be a JSON object"),
        ({"feature_types": {"a": "text"}}, "feature_types['a'] must be one of numeric, categorical, drop, got 'text'"),
        ({"model_family": "sklearn.cluster.KMeans"}, "sklearn.cluster.KMeans"),
        ({"model_family": "ridge", "task": "classification"}, "model_family 'ridge' has no classifier"),
        ({"search_space": {"model_family": "svm"}}, "search_space must be a JSON list"),
        ({"search_space": [{"model_family": "svm"}] * 2}, "search_space lists the same configuration twice"),
        ({"search_space": [{"model_family": "svm", "hyperparameters": {"C": -1}}]}, "search_space candidate 0"),
        ({"cv_folds": 1}, "cv_folds must be an integer between 2 and 20, got 1"),
        ({"cv_folds": 5.0}, "cv_folds must be an integer between 2 and 20, got 5.0"),
        ({"gate_metric": "auc"}, "gate_metric 'auc' is not a known metric: use one of accuracy"),
        ({"gate_metric": "accuracy", "gate_threshold": 2.0}, "gate_threshold for accuracy must be within [0, 1]"),
        ({"gate_threshold": "high"}, "gate_threshold must be a number, got 'high'"),
        ({"min_improvement": float("nan")}, "min_improvement must be a finite number of at least 0"),
        ({"mlflow_tracking_uri": "mlflow:5000"}, "mlflow_tracking_uri must be empty or a URI of scheme http"),
        ({"s3_endpoint": "seaweedfs:9000"}, "s3_endpoint must be empty or an http(s):// URL"),
    ],
)
def test_each_parameter_is_checked_with_a_message_naming_it(override, message):
    with pytest.raises(ParameterError) as caught:
        validate_parameters({**DEFAULTS, **override}, accepted=DEFAULTS)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("dataset", "name"),
    [
        ("iris", "sklearn-iris"),
        ("breast_cancer", "sklearn-breast-cancer"),
        ("data/churn.csv", "sklearn-churn"),
        ("/home/me/Sales_2024.parquet", "sklearn-sales-2024"),
        ("s3://bucket/exports/Churn%20Q3.csv?versionId=2", "sklearn-churn-20q3"),
        ("https://example.org/d/42.csv", "sklearn-42"),
        ("data/___.csv", "sklearn-model"),
        (f"data/{'x' * 80}.csv", f"sklearn-{'x' * (MAX_MODEL_NAME_LENGTH - 8)}"),
    ],
)
def test_the_default_model_name_follows_the_dataset_and_is_always_valid(dataset, name):
    assert default_model_name(dataset) == name
    assert check_model_name(name) == name


def test_scaling_parameters_are_checked_by_the_inference_service_builders_rules():
    accepted = {**DEFAULTS, "min_replicas": 1, "max_replicas": 3, "predictor_cpu_request": ""}
    validate_parameters(accepted, accepted=accepted)
    with pytest.raises(ParameterError, match="max_replicas") as caught:
        validate_parameters({**accepted, "min_replicas": 5, "max_replicas": 2}, accepted=accepted)
    assert "\n" not in str(caught.value)
