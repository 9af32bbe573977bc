"""The drift policy, the retrain configuration and the retraining itself: act only on drift, as configured.

No `from __future__ import annotations` here: KFP reads the probe component's annotations as real types.
"""

import json
import shlex
from dataclasses import asdict
from pathlib import Path

import pytest

from components.constants import (
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    ON_DRIFT_ACTIONS,
    RETRAIN_REQUEST_FILENAME,
)
from components.monitoring.retrain import (
    ACTION_NONE,
    RetrainConfigError,
    RetrainTriggerError,
    check_retrain_config,
    decide_on_drift,
    describe_command,
    local_training_command,
    new_retrain_request,
    training_arguments_from_card,
    trigger_retraining,
    write_retrain_request,
)
from tests.monitoring.monitoring_helpers import pipeline_cli, read_retrain_request

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


@pytest.mark.parametrize("on_drift", ON_DRIFT_ACTIONS)
def test_only_drift_leads_to_an_action(on_drift: str) -> None:
    assert decide_on_drift(DRIFT_STATUS_DRIFT, on_drift) == on_drift
    assert decide_on_drift(DRIFT_STATUS_OK, on_drift) == ACTION_NONE
    assert decide_on_drift(DRIFT_STATUS_NOT_ENOUGH_DATA, on_drift) == ACTION_NONE


def test_unknown_policy_or_status_is_refused() -> None:
    with pytest.raises(ValueError, match="on_drift"):
        decide_on_drift(DRIFT_STATUS_DRIFT, "page-someone")
    with pytest.raises(ValueError, match="status"):
        decide_on_drift("maybe", "retrain")


def test_retrain_request_round_trip_and_replacement(tmp_path: Path) -> None:
    assert read_retrain_request(tmp_path) is None
    report = {"message": "drift in 1 of 4 features: a", "drifted_features": ["a"]}
    first = new_retrain_request(model_name="iris", model_uri="s3://models/iris/1", report=report)
    write_retrain_request(tmp_path, first)
    assert read_retrain_request(tmp_path) == asdict(first)
    second = new_retrain_request(model_name="iris", model_uri="s3://models/iris/2", report=report)
    write_retrain_request(tmp_path, second)
    assert read_retrain_request(tmp_path) == asdict(second)
    assert [p.name for p in tmp_path.iterdir()] == [RETRAIN_REQUEST_FILENAME]  # no temp files left
    assert json.loads((tmp_path / RETRAIN_REQUEST_FILENAME).read_text())["drifted_features"] == ["a"]


def test_trigger_needs_an_endpoint_and_a_pipeline(tmp_path: Path) -> None:
    with pytest.raises(RetrainTriggerError, match="endpoint"):
        trigger_retraining(endpoint="", arguments={}, pipeline_id="p")
    with pytest.raises(RetrainTriggerError, match="pipeline_id"):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={})
    with pytest.raises(RetrainTriggerError, match="not found"):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={}, pipeline_package_path=str(tmp_path / "x.yaml"))


def test_unreachable_backend_gives_a_clear_error(tmp_path: Path) -> None:
    package = tmp_path / "pipeline.yaml"
    package.write_text("pipelineInfo: {name: training}\n")
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    with pytest.raises(
        RetrainTriggerError, match=r"could not start a training run on http://127\.0\.0\.1:9.*port-forward"
    ):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={"dataset": "iris"},
                           pipeline_package_path=str(package))  # fmt: skip


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({}, "needs kfp_endpoint .* or retrain_request_dir"),
        ({"kfp_endpoint": "ml-pipeline:8888", "pipeline_id": "p"}, "http"),
        ({"kfp_endpoint": "http://ml-pipeline:8888"}, "training_pipeline_id .* or training_pipeline_package"),
        ({"kfp_endpoint": "http://ml-pipeline:8888", "pipeline_package": "/nope.yaml"}, "not found"),
        ({"request_dir": "/tmp/x", "training_arguments": "[1]"}, "JSON object"),
        ({"request_dir": "/tmp/x", "training_arguments": "{"}, "not valid JSON"),
    ],
)
def test_a_retrain_configuration_that_cannot_work_is_refused(settings: dict, complaint: str) -> None:
    with pytest.raises(RetrainConfigError, match=complaint):
        check_retrain_config("retrain", **settings)


def test_a_usable_retrain_configuration_returns_the_training_arguments(tmp_path: Path) -> None:
    package = tmp_path / "pipeline.yaml"
    package.write_text("{}")
    arguments = check_retrain_config(
        "retrain", kfp_endpoint="http://ml-pipeline:8888", pipeline_package=str(package),
        training_arguments='{"dataset": "s3://data/new.csv", "seed": 7}',
    )  # fmt: skip
    assert arguments == {"dataset": "s3://data/new.csv", "seed": 7}
    assert check_retrain_config("report") == {}  # nothing to check when retraining is off
    with pytest.raises(ValueError, match="on_drift"):
        check_retrain_config("retrian", request_dir="/tmp/x")


def test_training_arguments_come_from_the_live_models_card(make_model_dir) -> None:
    directory, card = make_model_dir(family="random_forest")
    arguments = training_arguments_from_card(directory, model_name="sklearn-iris", dataset="new-data.csv")
    assert arguments == {
        "model_family": "random_forest",
        "hyperparameters": card.hyperparameters,
        "label_column": card.label_column,
        "task": "classification",  # pinned: a retrained model keeps its task
        "model_name": "sklearn-iris",
        "dataset": "new-data.csv",
    }
    with pytest.raises(RetrainConfigError, match="--retrain-dataset"):
        training_arguments_from_card(directory, model_name="sklearn-iris")
    with pytest.raises(RetrainConfigError, match="cannot read"):
        training_arguments_from_card(directory.parent / "missing", model_name="sklearn-iris", dataset="iris")


def test_pipeline_parameters_a_card_records_are_used_too(make_model_dir) -> None:
    directory, _ = make_model_dir()
    card = json.loads((directory / "model.json").read_text())
    card["training_parameters"] = {"dataset": "wine", "seed": 3, "test_fraction": 0.3, "model_family": "old"}
    (directory / "model.json").write_text(json.dumps(card))
    arguments = training_arguments_from_card(directory, model_name="m")
    assert arguments["dataset"] == "wine" and arguments["seed"] == 3 and arguments["test_fraction"] == 0.3
    assert arguments["model_family"] == "logistic_regression"  # the card's own field wins


def test_the_local_training_command_is_one_pipeline_py_run_accepts() -> None:
    arguments = {"dataset": "data/new.csv", "model_family": "random_forest", "label_column": "species",
                 "hyperparameters": {"n_estimators": 50}, "model_name": "flowers", "seed": 3, "test_fraction": 0.25,
                 "min_accuracy": 0.8, "namespace": "not-a-run-flag", "task": "regression",
                 "feature_types": {"zip": "categorical", "id": "drop"}, "gate_metric": "r2",
                 "gate_threshold": 0.5}  # fmt: skip
    command = local_training_command(arguments, pipeline_script=Path("pipeline.py"), root=Path("out"))
    assert command[:3] == ["python", "pipeline.py", "run"] and "namespace" not in describe_command(command)
    typed = shlex.split(describe_command(command))[2:]  # what the user would type
    parsed = pipeline_cli().build_parser().parse_args(typed)
    assert parsed.command == "run" and parsed.root == Path("out")
    assert (parsed.dataset, parsed.model_family, parsed.label_column, parsed.model_name) == (
        "data/new.csv", "random_forest", "species", "flowers"
    )  # fmt: skip
    assert parsed.hyperparameters == {"n_estimators": 50} and parsed.seed == 3
    assert parsed.test_fraction == 0.25 and parsed.min_accuracy == 0.8
    assert parsed.task == "regression" and parsed.feature_types == {"zip": "categorical", "id": "drop"}
    assert (parsed.gate_metric, parsed.gate_threshold) == ("r2", 0.5)


def test_trigger_submits_the_package_through_the_submitter(kfp_api, tmp_path: Path) -> None:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(dataset: str) -> str:
        return dataset

    @dsl.pipeline(name="training-probe")
    def probe(dataset: str = "iris", hyperparameters: dict = {}):  # noqa: B006  # KFP reads the literal default
        echo(dataset=dataset)

    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(probe, str(package))
    run_id = trigger_retraining(
        endpoint=kfp_api.base_url, arguments={"dataset": "new.csv", "hyperparameters": {"C": 0.5}},
        pipeline_package_path=str(package), run_name="retrain-iris",
    )  # fmt: skip
    (run,) = kfp_api.runs()
    assert run_id == "run-1" and run["display_name"] == "retrain-iris"
    assert run["runtime_config"]["parameters"] == {"dataset": "new.csv", "hyperparameters": {"C": 0.5}}
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "training-probe"
    assert run["experiment_id"] == kfp_api.experiments["retraining"]


def test_trigger_runs_the_newest_version_of_an_uploaded_pipeline(kfp_api) -> None:
    run_id = trigger_retraining(endpoint=kfp_api.base_url, arguments={"dataset": "new.csv"}, pipeline_id="train-p")
    (run,) = kfp_api.runs()
    assert run_id == "run-1" and "pipeline_spec" not in run
    assert run["pipeline_version_reference"] == {"pipeline_id": "train-p", "pipeline_version_id": "train-p-v2"}
    assert run["runtime_config"]["parameters"] == {"dataset": "new.csv"}


def test_a_refused_training_run_is_a_clear_error(kfp_api) -> None:
    kfp_api.refuse_runs_with = 403
    with pytest.raises(RetrainTriggerError, match="refused the run: HTTP 403"):
        trigger_retraining(endpoint=kfp_api.base_url, arguments={}, pipeline_id="train-p")
