"""The pipeline's deploy step with `deploy_target=kubernetes`, as its component runs it: credentials from a
kubeconfig (in a pod: the in-cluster config), the InferenceService built from the model artifact, then
create-or-patch against a fake API server over HTTP and a smoke predict against a real predictor endpoint."""

import json

import pytest
from fake_kube_api import FakeKubeApi

from components.constants import DEFAULT_MODEL_NAME, DEFAULT_NAMESPACE, MODEL_READER_SERVICE_ACCOUNT
from components.deploy import deploy_model
from components.deploy_kubernetes import DeployForbiddenError
from components.inference_service import LINEAGE_MODEL_SHA256, LINEAGE_RUN_ID

ARTIFACT_URI = "minio://mlpipeline/v2/artifacts/sklearn-kserve-training/run-1/train/model"


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch, fake_api: FakeKubeApi, predictor):
    """Point the kubernetes client at the fake API, and the fake's predictor address at a real endpoint."""
    fake_api.address_template = predictor.base_url
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": fake_api.base_url}}],
        "users": [{"name": "runner", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # The client reads $KUBECONFIG once, at import time.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


def deploy(model_dir, **overrides):
    arguments = dict(
        model_uri=ARTIFACT_URI,
        model_name=DEFAULT_MODEL_NAME,
        namespace=DEFAULT_NAMESPACE,
        local_store=model_dir.parent / "unused-store",
        run_id="run-1",
        metrics={"accuracy": 0.97},
        timeout_seconds=30,
    )
    return deploy_model("kubernetes", model_dir, **{**arguments, **overrides})


def test_deploy_step_creates_the_inference_service_then_patches_it(kubeconfig, fake_api, predictor, model_dir):
    first = deploy(model_dir)
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert first.status == "created"
    assert first.endpoint == predictor.base_url
    predictor_spec = stored["spec"]["predictor"]
    assert predictor_spec["model"]["storageUri"] == ARTIFACT_URI.replace("minio://", "s3://")
    assert predictor_spec["serviceAccountName"] == MODEL_READER_SERVICE_ACCOUNT
    annotations = stored["metadata"]["annotations"]
    assert annotations[LINEAGE_RUN_ID] == "run-1"
    assert annotations[LINEAGE_MODEL_SHA256] == first.manifest["metadata"]["annotations"][LINEAGE_MODEL_SHA256]
    assert predictor.calls >= 1, "the step smoke-tested the endpoint"
    assert "logger" not in predictor_spec

    sink = "http://payload-logger.kserve-models.svc.cluster.local"
    again = deploy(model_dir, run_id="run-2", service_account="custom-reader", payload_logger_url=sink)
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert again.status == "patched"
    assert stored["spec"]["predictor"]["logger"]["url"] == sink  # accepted by the strict CRD schema in the fake
    assert stored["metadata"]["annotations"][LINEAGE_RUN_ID] == "run-2"
    assert stored["spec"]["predictor"]["serviceAccountName"] == "custom-reader"


def test_deploy_step_refuses_a_local_artifact_before_calling_the_cluster(kubeconfig, fake_api, model_dir):
    with pytest.raises(ValueError, match="local path: a cluster cannot fetch it"):
        deploy(model_dir, model_uri=str(model_dir))
    assert fake_api.requests == []


def test_deploy_step_names_the_missing_rbac(kubeconfig, fake_api, model_dir):
    fake_api.forbidden_verbs = {"create"}
    with pytest.raises(DeployForbiddenError, match="create"):
        deploy(model_dir)
