"""The compiled pipeline YAML: tasks, edges, the gate, images, no pip at run time, caching off on deploy."""

import re
from pathlib import Path

import pytest
import yaml

import pipeline
from components.constants import DEFAULT_IMAGE

CUSTOM_IMAGE = "registry.example/team/kfp-sklearn-kserve:1.2.3"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    pipeline.compile_pipeline(path, image=CUSTOM_IMAGE)
    return yaml.safe_load(path.read_text())


def root_tasks(spec):
    return spec["root"]["dag"]["tasks"]


def test_the_dag_is_data_train_evaluate_then_a_gated_deploy(spec):
    tasks = root_tasks(spec)
    assert set(tasks) == {"load-data", "train", "evaluate", "condition-1"}
    assert tasks["train"]["dependentTasks"] == ["load-data"]
    assert sorted(tasks["evaluate"]["dependentTasks"]) == ["load-data", "train"]
    gate = tasks["condition-1"]
    assert gate["taskInfo"]["name"] == "accuracy-gate"
    assert gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"deploy"}
    deploy_inputs = inner["deploy"]["inputs"]
    assert deploy_inputs["artifacts"]["model"]["componentInputArtifact"] == "pipelinechannel--train-model"
    # Lineage: the run's UUID (the 2.17 driver resolves the job-name placeholder to the display name) and its name.
    assert deploy_inputs["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert deploy_inputs["parameters"]["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"


def test_deploy_never_caches_and_retries_while_the_rest_may_cache(spec):
    deploy = spec["components"]["comp-condition-1"]["dag"]["tasks"]["deploy"]
    assert deploy["cachingOptions"].get("enableCache", False) is False
    assert deploy["retryPolicy"]["maxRetryCount"] == 2
    for name in ("load-data", "train", "evaluate"):
        assert root_tasks(spec)[name]["cachingOptions"]["enableCache"] is True


def test_every_component_runs_the_project_image_without_installing_anything(spec):
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-load-data", "exec-train", "exec-evaluate", "exec-deploy"}
    for executor in executors.values():
        container = executor["container"]
        assert container["image"] == CUSTOM_IMAGE
        script = " ".join(container["command"])
        assert "pip install" not in script and "kfp.dsl.executor_main" in script
        # Heavy imports happen inside the body, from the package baked into the image.
        assert "from components." in script


def test_pipeline_parameters_have_the_documented_defaults(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    defaults = {name: p.get("defaultValue") for name, p in params.items()}
    assert defaults["dataset"] == "iris"
    assert defaults["deploy_target"] == "local"
    assert defaults["model_family"] == "logistic_regression"
    assert defaults["min_accuracy"] == pipeline.DEFAULT_MIN_ACCURACY
    assert defaults["hyperparameters"] == {}
    assert params["hyperparameters"]["parameterType"] == "STRUCT"


def test_the_committed_pipeline_yaml_is_in_step_with_the_code(tmp_path):
    committed = Path(pipeline.PIPELINE_FILE)
    fresh = tmp_path / "pipeline.yaml"
    pipeline.compile_pipeline(fresh, image=DEFAULT_IMAGE)
    assert committed.read_text() == fresh.read_text(), "run `make compile` and commit pipeline.yaml"


def test_no_secret_lands_in_the_compiled_yaml():
    text = Path(pipeline.PIPELINE_FILE).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|password|token:|secretkey|[A-Za-z0-9+/]{60,}={0,2}", text)


def test_compile_writes_the_monitoring_pipeline_beside_it_on_the_same_image(tmp_path):
    assert pipeline.main(["compile", "--output", str(tmp_path / "pipeline.yaml"), "--image", CUSTOM_IMAGE]) == 0
    # A second document holds the kfp-kubernetes platform spec (the object-store Secret as env).
    monitoring = next(yaml.safe_load_all((tmp_path / "monitoring_pipeline.yaml").read_text()))
    images = {e["container"]["image"] for e in monitoring["deploymentSpec"]["executors"].values()}
    assert images == {CUSTOM_IMAGE}
    assert {"log_dir", "model_dir", "on_drift"} <= set(monitoring["root"]["inputDefinitions"]["parameters"])
    committed = Path(pipeline.MONITORING_PIPELINE_FILE)
    fresh = tmp_path / "fresh.yaml"
    pipeline.compile_monitoring_pipeline(fresh, image=DEFAULT_IMAGE)
    assert committed.read_text() == fresh.read_text(), "run `make compile` and commit monitoring_pipeline.yaml"
