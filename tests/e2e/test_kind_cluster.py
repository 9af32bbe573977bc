"""End to end on a real kind/minikube cluster (opt-in: `make e2e` after `make kind-up`).

Runs the whole cluster path: RBAC as the pipeline's service account, a pipeline run that trains, evaluates and
deploys to KServe, a V1 predict through `kubectl port-forward`, and a failed re-deploy that must roll back.

Settings (tests may read the environment; logic modules may not):
    KFP_ENDPOINT     KFP API, default http://127.0.0.1:8080 (make port-forward)
    E2E_TIMEOUT      seconds for the pipeline run and for readiness, default 1200
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from components.constants import (
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEPLOY_TARGET_KUBERNETES,
    INFERENCE_SERVICE_PLURAL,
    KFP_NAMESPACE,
    KFP_RUN_SERVICE_ACCOUNT,
    KSERVE_GROUP,
    KSERVE_VERSION,
    MODEL_DIGEST_ENV,
    MODEL_READER_SERVICE_ACCOUNT,
    SERVING_RUNTIME_NAME,
)
from components.deploy.inference_service import (
    LINEAGE_MODEL_SHA256,
    LINEAGE_ROLLOUT_ID,
    LINEAGE_RUN_ID,
    LINEAGE_RUN_NAME,
)
from tests.helpers import free_port

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not on PATH"),
    pytest.mark.timeout(3600),
]

REPO = Path(__file__).resolve().parents[2]
RUNNER = f"system:serviceaccount:{KFP_NAMESPACE}:{KFP_RUN_SERVICE_ACCOUNT}"
TIMEOUT = float(os.environ.get("E2E_TIMEOUT", "1200"))
ENDPOINT = os.environ.get("KFP_ENDPOINT", "http://127.0.0.1:8080")


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def custom_api():
    from kubernetes import client

    from components.deploy.cluster import kube_api_client

    try:
        api_client = kube_api_client()
        client.VersionApi(api_client).get_code()
    except Exception as exc:  # any failure here means "no cluster", which is a skip, not a test failure
        pytest.skip(f"no reachable cluster in the current kubectl context: {exc}")
    return client.CustomObjectsApi(api_client)


def test_platform_and_project_manifests_are_installed(custom_api):
    runtime = custom_api.get_namespaced_custom_object(
        KSERVE_GROUP, "v1alpha1", DEFAULT_NAMESPACE, "servingruntimes", SERVING_RUNTIME_NAME
    )
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "sklearn"


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}", "yes"),
        ("patch", f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}", "yes"),
        ("delete", f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}", "yes"),
        ("get", "deployments.apps", "yes"),
        ("list", "pods", "yes"),
        ("get", "configmaps", "yes"),  # the version record (components/deploy/cluster_versions.py)
        ("create", "configmaps", "yes"),
        ("update", "configmaps", "yes"),
        ("delete", "configmaps", "no"),
        ("patch", "deployments.apps", "no"),
        ("delete", "pods", "no"),
        ("get", "pods/log", "no"),
        ("list", "secrets", "no"),
        ("create", "pods/exec", "no"),
    ],
)
def test_run_service_account_has_exactly_the_deploy_rights(custom_api, verb, resource, allowed):
    result = kubectl("auth", "can-i", verb, resource, "-n", DEFAULT_NAMESPACE, f"--as={RUNNER}")
    assert result.stdout.strip() == allowed


@pytest.fixture(scope="module")
def deployed_run(custom_api, tmp_path_factory) -> str:
    """Compile, submit and wait for a pipeline run that deploys to KServe; returns the run id."""
    import kfp

    from components.submit import submit_pipeline

    package = tmp_path_factory.mktemp("e2e") / "pipeline.yaml"
    subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "pipeline.py", "compile", "--output", str(package)],
        cwd=REPO,
        check=True,
        timeout=300,
    )
    run_id = submit_pipeline(
        package,
        endpoint=ENDPOINT,
        arguments={
            "deploy_target": DEPLOY_TARGET_KUBERNETES,
            "namespace": DEFAULT_NAMESPACE,
            "model_name": DEFAULT_MODEL_NAME,
            "predictor_service_account": MODEL_READER_SERVICE_ACCOUNT,
        },
        service_account=KFP_RUN_SERVICE_ACCOUNT,
        experiment="e2e",
    )
    run = kfp.Client(host=ENDPOINT).wait_for_run_completion(run_id, timeout=int(TIMEOUT))
    assert str(run.state) == "SUCCEEDED", f"run {run_id} ended {run.state}"
    return run_id


def test_the_run_deployed_a_ready_service_that_answers_v1_predict(custom_api, deployed_run, iris_xy):
    isvc = custom_api.get_namespaced_custom_object(
        KSERVE_GROUP, KSERVE_VERSION, DEFAULT_NAMESPACE, INFERENCE_SERVICE_PLURAL, DEFAULT_MODEL_NAME
    )
    ready = [c for c in isvc["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    # The run's UUID (dsl.PIPELINE_JOB_ID_PLACEHOLDER), and its display name beside it.
    annotations = isvc["metadata"]["annotations"]
    assert annotations[LINEAGE_RUN_ID] == deployed_run
    assert annotations.get(LINEAGE_RUN_NAME)
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"]["env"]}
    assert env[MODEL_DIGEST_ENV].startswith("sha256:")

    port = free_port()
    forward = subprocess.Popen(
        ["kubectl", "port-forward", "-n", DEFAULT_NAMESPACE, f"svc/{DEFAULT_MODEL_NAME}-predictor", f"{port}:80"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        x, y, *_ = iris_xy
        body = json.dumps({"instances": x[[0, 60, 120]].tolist()}).encode()
        url = f"http://127.0.0.1:{port}/v1/models/{DEFAULT_MODEL_NAME}:predict"
        deadline = time.monotonic() + 60
        while True:
            try:
                request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    predictions = json.loads(response.read())["predictions"]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        assert predictions == y[[0, 60, 120]].tolist()
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def live_isvc(custom_api) -> dict:
    return custom_api.get_namespaced_custom_object(
        KSERVE_GROUP, KSERVE_VERSION, DEFAULT_NAMESPACE, INFERENCE_SERVICE_PLURAL, DEFAULT_MODEL_NAME
    )


def serving_rollout_ids() -> set[str]:
    """The rollout id on each pod of the stable predictor (the pods its Service routes to)."""
    result = kubectl(
        "get", "pods", "-n", DEFAULT_NAMESPACE, "-l", f"app=isvc.{DEFAULT_MODEL_NAME}-predictor", "-o", "json"
    )
    pods = json.loads(result.stdout)["items"]
    return {p["metadata"]["annotations"].get(LINEAGE_ROLLOUT_ID) for p in pods}


def test_a_redeploy_that_cannot_load_rolls_back_to_the_serving_spec(custom_api, deployed_run, make_model_dir):
    from components.deploy.cluster import DeployError, deploy_inference_service
    from components.deploy.inference_service import build_inference_service

    before = live_isvc(custom_api)
    serving_before = serving_rollout_ids()
    _, card = make_model_dir()
    broken = build_inference_service(
        name=DEFAULT_MODEL_NAME,
        namespace=DEFAULT_NAMESPACE,
        storage_uri="s3://mlpipeline/v2/artifacts/does-not-exist/model",
        service_account=MODEL_READER_SERVICE_ACCOUNT,
    )
    # KServe keeps Ready=True (the old pod serves) while the new pod's storage-initializer fails: the step must
    # see that failure on the new pod, not wait for a Ready that never turns False, and not accept the old Ready.
    with pytest.raises(DeployError) as caught:
        deploy_inference_service(
            broken,
            card=card,
            timeout_seconds=300,
            runtime_sklearn_version=card.sklearn_version,
            smoke_instances=None,
            poll_interval_seconds=5,
        )
    assert caught.value.rolled_back
    after = live_isvc(custom_api)
    assert after["spec"]["predictor"]["model"]["storageUri"] == before["spec"]["predictor"]["model"]["storageUri"]
    deadline = time.monotonic() + 300
    while serving_rollout_ids() != serving_before and time.monotonic() < deadline:
        time.sleep(5)  # KServe removes the failed pod once the Deployment points back at the old ReplicaSet
    assert serving_rollout_ids() == serving_before


def test_a_good_deploy_after_the_failed_one_succeeds_despite_the_stale_failure_info(
    custom_api, deployed_run, make_model_dir
):
    import dataclasses

    from components.constants import MODEL_FILENAME
    from components.deploy.cluster import deploy_inference_service

    live = live_isvc(custom_api)
    stale = (live.get("status") or {}).get("modelStatus", {}).get("lastFailureInfo")
    manifest = {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {
            "name": DEFAULT_MODEL_NAME,
            "namespace": DEFAULT_NAMESPACE,
            "labels": live["metadata"].get("labels", {}),
            # A new lineage value: a new pod template, so a real rollout.
            "annotations": {**live["metadata"]["annotations"], LINEAGE_RUN_NAME: "e2e: after a failed deploy"},
        },
        "spec": live["spec"],
    }
    _, card = make_model_dir()
    # The live spec is re-applied; its lineage names the served model, so the card must too.
    card = dataclasses.replace(
        card, files={**card.files, MODEL_FILENAME: live["metadata"]["annotations"][LINEAGE_MODEL_SHA256]}
    )
    result = deploy_inference_service(
        manifest,
        card=card,
        timeout_seconds=TIMEOUT,
        runtime_sklearn_version=card.sklearn_version,
        smoke_instances=None,
        poll_interval_seconds=5,
    )
    assert result.ready and serving_rollout_ids() == {result.rollout_id}
    if stale is not None:  # KServe never clears it; it must not have blocked this deploy
        assert live_isvc(custom_api)["status"]["modelStatus"]["lastFailureInfo"] == stale
