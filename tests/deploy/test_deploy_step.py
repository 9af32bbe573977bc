"""The pipeline's deploy step with `deploy_target=kubernetes`, as its component runs it: credentials from a
kubeconfig (in a pod: the in-cluster config), the InferenceService built from the model artifact, then
create-or-patch against a fake API server over HTTP and a smoke predict against a real predictor endpoint."""

import pytest

from components.constants import (
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    MODEL_DIGEST_ENV,
    MODEL_READER_SERVICE_ACCOUNT,
    MODEL_VERSION_ENV,
)
from components.deploy import deploy_model
from components.deploy.cluster import DeployForbiddenError
from components.deploy.inference_service import LINEAGE_MODEL_SHA256, LINEAGE_RUN_ID, LINEAGE_RUN_NAME
from components.model_artifact import ModelIntegrityError, directory_digest, version_id

RUN_ID = "3f1c2a9e-6b1d-4c1e-9a51-2f4e8c7d1b20"
# KFP's layout: <pipeline root>/<pipeline name>/<run id>/<task>/<uuid>/<output> (backend/src/v2/driver/driver.go).
ARTIFACT_URI = f"minio://mlpipeline/v2/artifacts/sklearn-kserve-training/{RUN_ID}/train/5d0e1f3a-8c2b/model"


def deploy(model_dir, **overrides):
    arguments = dict(
        model_uri=ARTIFACT_URI,
        model_name=DEFAULT_MODEL_NAME,
        namespace=DEFAULT_NAMESPACE,
        local_store=model_dir.parent / "unused-store",
        run_id=RUN_ID,
        run_name="sklearn-kserve-training 2026-12-02 04:00",
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
    assert annotations[LINEAGE_RUN_ID] == RUN_ID
    assert annotations[LINEAGE_RUN_NAME] == "sklearn-kserve-training 2026-12-02 04:00"
    digest = directory_digest(model_dir)
    env = {e["name"]: e["value"] for e in predictor_spec["model"]["env"]}
    assert env == {MODEL_DIGEST_ENV: digest, MODEL_VERSION_ENV: version_id(digest)}
    assert (predictor_spec["minReplicas"], predictor_spec["maxReplicas"]) == (1, 3)
    assert "resources" not in predictor_spec["model"]  # the runtime's (the overlay's) apply
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


def test_deploy_step_passes_scaling_and_resources_to_the_inference_service(kubeconfig, fake_api, model_dir):
    deploy(
        model_dir,
        min_replicas=2,
        max_replicas=4,
        scale_metric="memory",
        scale_target=70,
        cpu_request="200m",
        memory_limit="1Gi",
    )
    predictor_spec = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)["spec"]["predictor"]
    assert {k: predictor_spec[k] for k in ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget")} == {
        "minReplicas": 2,
        "maxReplicas": 4,
        "scaleMetric": "memory",
        "scaleTarget": 70,
    }
    assert predictor_spec["model"]["resources"] == {"requests": {"cpu": "200m"}, "limits": {"memory": "1Gi"}}
    pods = fake_api.pods(DEFAULT_NAMESPACE, f"{DEFAULT_MODEL_NAME}-predictor")
    assert [p["status"]["conditions"][0]["status"] for p in pods] == ["True", "True"]  # minReplicas pods, all ready


def test_deploy_step_refuses_a_model_that_differs_from_the_recorded_digest(kubeconfig, fake_api, model_dir):
    recorded = "sha256:" + "0" * 64  # what train recorded; the directory in the bucket is something else now
    with pytest.raises(ModelIntegrityError, match="digest"):
        deploy(model_dir, expected_digest=recorded)
    assert fake_api.requests == []


def test_the_deploy_components_literal_defaults_are_the_projects_constants():
    """KFP ships only the component's source, so its defaults are literals; they must not drift from constants."""
    import inspect

    from components import constants
    from components.kfp_components import deploy as deploy_component

    defaults = {k: v.default for k, v in inspect.signature(deploy_component).parameters.items()}
    assert defaults["min_replicas"] == constants.DEFAULT_MIN_REPLICAS
    assert defaults["max_replicas"] == constants.DEFAULT_MAX_REPLICAS
    assert defaults["scale_metric"] == constants.DEFAULT_SCALE_METRIC
    assert defaults["scale_target"] == constants.DEFAULT_SCALE_TARGET
