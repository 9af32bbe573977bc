"""The compiled pipeline YAML: tasks, edges, the search fan-out, the deploy decision, images, no pip, caching."""

import re
from pathlib import Path

import pytest
import yaml

import pipeline
from components.constants import (
    DEFAULT_CV_FOLDS,
    DEFAULT_IMAGE,
    DEFAULT_MIN_IMPROVEMENT,
    KFP_ARTIFACT_SECRET_KEYS,
    KFP_ARTIFACT_SECRET_NAME,
    KFP_OBJECT_STORE_ENDPOINT,
)

CUSTOM_IMAGE = "registry.example/team/kfp-sklearn-kserve:1.2.3"


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    pipeline.compile_pipeline(path, image=CUSTOM_IMAGE)
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def spec(documents) -> dict:
    return documents[0]


def root_tasks(spec):
    return spec["root"]["dag"]["tasks"]


def test_the_dag_searches_trains_evaluates_compares_then_deploys_on_the_decision(spec):
    tasks = root_tasks(spec)
    assert set(tasks) == {
        "load-data",
        "expand-search",
        "for-loop-1",
        "select-candidate",
        "train",
        "evaluate",
        "champion-vs-challenger",
        "condition-2",
    }
    # The fan-out: one score-candidate per item of expand-search's list, collected by select-candidate.
    loop = tasks["for-loop-1"]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--expand-search-Output"
    assert set(spec["components"]["comp-for-loop-1"]["dag"]["tasks"]) == {"score-candidate"}
    assert tasks["select-candidate"]["dependentTasks"] == ["for-loop-1"]
    collected = tasks["select-candidate"]["inputs"]["parameters"]["scores"]["taskOutputParameter"]
    assert collected == {"outputParameterKey": "pipelinechannel--score-candidate-Output", "producerTask": "for-loop-1"}
    # Only the winner is trained, with the winner's family and hyperparameters.
    train_inputs = tasks["train"]["inputs"]["parameters"]
    for name in ("model_family", "hyperparameters"):
        assert train_inputs[name]["taskOutputParameter"] == {
            "outputParameterKey": name,
            "producerTask": "select-candidate",
        }
    assert sorted(tasks["evaluate"]["dependentTasks"]) == ["load-data", "train"]
    # The champion step runs whatever the gate said (it reads it); deploy hangs on its decision.
    assert "triggerPolicy" not in tasks["champion-vs-challenger"]
    champion_inputs = tasks["champion-vs-challenger"]["inputs"]["artifacts"]
    assert champion_inputs["gate"]["taskOutputArtifact"] == {"outputArtifactKey": "gate", "producerTask": "evaluate"}
    gate = tasks["condition-2"]
    assert gate["taskInfo"]["name"] == "deploy-decision"
    assert gate["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--champion-vs-challenger-Output'] == true"
    )
    inner = spec["components"]["comp-condition-2"]["dag"]["tasks"]
    assert set(inner) == {"deploy"}
    deploy_inputs = inner["deploy"]["inputs"]
    assert deploy_inputs["artifacts"]["model"]["componentInputArtifact"] == "pipelinechannel--train-model"
    assert deploy_inputs["artifacts"]["decision"]["componentInputArtifact"] == (
        "pipelinechannel--champion-vs-challenger-decision"
    )
    # Lineage: the run's UUID (the 2.17 driver resolves the job-name placeholder to the display name) and its name.
    assert deploy_inputs["parameters"]["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert deploy_inputs["parameters"]["run_name"]["runtimeValue"]["constant"] == "{{$.pipeline_job_name}}"


def test_every_step_gets_the_feature_schema_of_load_data(spec):
    tasks = root_tasks(spec)
    loop_tasks = spec["components"]["comp-for-loop-1"]["dag"]["tasks"]
    producer = {"outputArtifactKey": "feature_schema", "producerTask": "load-data"}
    for task in (tasks["train"], tasks["evaluate"], tasks["champion-vs-challenger"]):
        assert task["inputs"]["artifacts"]["feature_schema"]["taskOutputArtifact"] == producer
    scorer = loop_tasks["score-candidate"]["inputs"]["artifacts"]["feature_schema"]
    assert scorer["componentInputArtifact"] == "pipelinechannel--load-data-feature_schema"


def test_deploy_and_the_champion_step_never_cache_and_deploy_retries(spec):
    deploy = spec["components"]["comp-condition-2"]["dag"]["tasks"]["deploy"]
    assert deploy["cachingOptions"].get("enableCache", False) is False
    assert deploy["retryPolicy"]["maxRetryCount"] == 2
    tasks = root_tasks(spec)
    assert tasks["champion-vs-challenger"]["cachingOptions"].get("enableCache", False) is False
    for name in ("load-data", "expand-search", "select-candidate", "train", "evaluate"):
        assert tasks[name]["cachingOptions"]["enableCache"] is True


def test_the_champion_step_reads_the_object_store_with_kfps_own_secret(documents):
    platform = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (secret,) = platform["exec-champion-vs-challenger"]["secretAsEnv"]
    assert secret["secretName"] == KFP_ARTIFACT_SECRET_NAME and secret["optional"] is True
    assert {m["secretKey"]: m["envVar"] for m in secret["keyToEnv"]} == KFP_ARTIFACT_SECRET_KEYS


def test_every_component_runs_the_project_image_without_installing_anything(spec):
    executors = spec["deploymentSpec"]["executors"]
    assert set(executors) == {
        f"exec-{name}"
        for name in (
            "load-data",
            "expand-search",
            "score-candidate",
            "select-candidate",
            "train",
            "evaluate",
            "champion-vs-challenger",
            "deploy",
        )
    }
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
    assert defaults["model_family"] == "auto"
    assert defaults["min_accuracy"] == pipeline.DEFAULT_MIN_ACCURACY
    assert defaults["hyperparameters"] == {} and params["hyperparameters"]["parameterType"] == "STRUCT"
    assert defaults["feature_types"] == {} and params["feature_types"]["parameterType"] == "STRUCT"
    assert defaults["search_space"] == [] and params["search_space"]["parameterType"] == "LIST"
    assert defaults["task"] == "" and defaults["gate_metric"] == "" and defaults["mlflow_tracking_uri"] == ""
    assert defaults["gate_threshold"] == 0.0 and defaults["min_improvement"] == DEFAULT_MIN_IMPROVEMENT
    assert defaults["cv_folds"] == DEFAULT_CV_FOLDS and params["cv_folds"]["parameterType"] == "NUMBER_INTEGER"
    assert defaults["s3_endpoint"] == KFP_OBJECT_STORE_ENDPOINT


def test_every_pipeline_parameter_is_described_for_the_kfp_ui(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    undocumented = [name for name, p in params.items() if not p.get("description")]
    assert not undocumented, "add them to the pipeline docstring's Args:"
    assert "cross-validate" in params["search_space"]["description"]


def test_the_committed_pipeline_yaml_is_in_step_with_the_code(tmp_path):
    committed = Path(pipeline.PIPELINE_FILE)
    fresh = tmp_path / "pipeline.yaml"
    pipeline.compile_pipeline(fresh, image=DEFAULT_IMAGE)
    assert committed.read_text() == fresh.read_text(), "run `make compile` and commit pipeline.yaml"


def test_no_secret_lands_in_the_compiled_yaml():
    text = Path(pipeline.PIPELINE_FILE).read_text()
    # The one `secretkey` allowed is the champion step's reference to a key of KFP's Secret, never a value.
    reference = f"- envVar: {KFP_ARTIFACT_SECRET_KEYS['secretkey']}\n              secretKey: secretkey\n"
    assert text.count(reference) == 1
    text = text.replace(reference, "")
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
