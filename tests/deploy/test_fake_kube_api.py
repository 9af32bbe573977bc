"""The fake API server keeps the promises the deploy tests rely on (checked through the real client)."""

from __future__ import annotations

import json

import pytest

from components.constants import DEFAULT_NAMESPACE, INFERENCE_SERVICE_PLURAL, KSERVE_GROUP, KSERVE_VERSION
from components.deploy.inference_service import build_inference_service
from tests.fakes.fake_kube_api import FakeKubeApi, Outcome

URI = "s3://mlpipeline/v2/artifacts/p/r/model"


@pytest.fixture
def custom(api_client):
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def args(*rest):
    return (KSERVE_GROUP, KSERVE_VERSION, DEFAULT_NAMESPACE, INFERENCE_SERVICE_PLURAL, *rest)


def created(custom) -> dict:
    body = build_inference_service(name="iris", namespace=DEFAULT_NAMESPACE, storage_uri=URI)
    body["status"] = {"observedGeneration": 99}
    return custom.create_namespaced_custom_object(*args(body))


def test_create_sets_generation_and_version_and_ignores_status(custom):
    obj = created(custom)
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["resourceVersion"]
    assert "status" not in obj


def test_second_create_is_409_already_exists(custom):
    from kubernetes.client.exceptions import ApiException

    created(custom)
    with pytest.raises(ApiException) as caught:
        created(custom)
    assert caught.value.status == 409
    assert "AlreadyExists" in caught.value.body


def test_generation_grows_only_with_spec_changes_and_version_with_every_write(custom):
    obj = created(custom)
    relabelled = custom.patch_namespaced_custom_object(*args("iris", {"metadata": {"labels": {"x": "y"}}}))
    assert relabelled["metadata"]["generation"] == 1
    assert int(relabelled["metadata"]["resourceVersion"]) > int(obj["metadata"]["resourceVersion"])
    respec = {"spec": {"predictor": {"minReplicas": 2}}}
    changed = custom.patch_namespaced_custom_object(*args("iris", respec))
    assert changed["metadata"]["generation"] == 2
    assert changed["spec"]["predictor"]["model"]["storageUri"] == URI  # merge, not replace


def test_a_patch_with_a_stale_resource_version_is_409_conflict(custom):
    from kubernetes.client.exceptions import ApiException

    obj = created(custom)
    custom.patch_namespaced_custom_object(*args("iris", {"metadata": {"labels": {"x": "y"}}}))
    stale = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"predictor": {}}}
    with pytest.raises(ApiException) as caught:
        custom.patch_namespaced_custom_object(*args("iris", stale))
    assert caught.value.status == 409 and "the object has been modified" in caught.value.body


def test_missing_objects_and_namespaces_are_404(custom, fake_api: FakeKubeApi):
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(*args("nope"))
    assert missing.value.status == 404
    assert json.loads(missing.value.body)["message"] == 'inferenceservices.serving.kserve.io "nope" not found'
    fake_api.namespaces.clear()
    with pytest.raises(ApiException) as no_namespace:
        custom.get_namespaced_custom_object(*args("nope"))
    assert json.loads(no_namespace.value.body)["message"] == 'namespaces "kserve-models" not found'


def test_only_merge_patch_is_accepted_for_custom_resources(fake_api: FakeKubeApi):
    code, body = fake_api.handle(
        "PATCH",
        f"/apis/{KSERVE_GROUP}/{KSERVE_VERSION}/namespaces/{DEFAULT_NAMESPACE}/{INFERENCE_SERVICE_PLURAL}/iris",
        "application/strategic-merge-patch+json",
        b"{}",
    )
    assert code == 404  # no such object yet: checked before the media type, as the real server does
    fake_api.handle(
        "POST",
        f"/apis/{KSERVE_GROUP}/{KSERVE_VERSION}/namespaces/{DEFAULT_NAMESPACE}/{INFERENCE_SERVICE_PLURAL}",
        "application/json",
        b'{"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": {"name": "iris"},'
        b' "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/k"}}}}',
    )
    code, body = fake_api.handle(
        "PATCH",
        f"/apis/{KSERVE_GROUP}/{KSERVE_VERSION}/namespaces/{DEFAULT_NAMESPACE}/{INFERENCE_SERVICE_PLURAL}/iris",
        "application/strategic-merge-patch+json",
        b"{}",
    )
    assert code == 415 and body["reason"] == "UnsupportedMediaType"


# --- The controller follows KServe's Standard mode (rules and upstream references in fake_kube_api.py) -----------
ISVC = f"/apis/{KSERVE_GROUP}/{KSERVE_VERSION}/namespaces/{DEFAULT_NAMESPACE}/{INFERENCE_SERVICE_PLURAL}/iris"
STABLE = "iris-predictor"


def read(fake_api: FakeKubeApi, times: int = 1) -> dict:
    for _ in range(times):
        _, obj = fake_api.handle("GET", ISVC, "", b"")
    return obj


def patch(fake_api: FakeKubeApi, body: dict) -> dict:
    code, obj = fake_api.handle("PATCH", ISVC, "application/merge-patch+json", json.dumps(body).encode())
    assert code == 200, obj
    return obj


def conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in obj["status"]["conditions"]}


def test_observed_generation_is_the_deployments_not_the_inference_services(custom, fake_api: FakeKubeApi):
    created(custom)
    read(fake_api, 3)
    # An annotation changes the pod template (KServe copies annotations into it) but not the ISVC's generation.
    patch(fake_api, {"metadata": {"annotations": {"team": "ml"}}})
    obj = read(fake_api, 2)
    assert obj["metadata"]["generation"] == 1
    assert (
        obj["status"]["observedGeneration"]
        == fake_api.deployment(DEFAULT_NAMESPACE, STABLE)["metadata"]["generation"]
        == 2
    )


def test_ready_stays_true_while_a_new_pod_rolls_out(custom, fake_api: FakeKubeApi):
    created(custom)
    read(fake_api, 3)
    fake_api.controller = lambda obj: Outcome("ready", after_reads=3)
    patch(fake_api, {"spec": {"predictor": {"model": {"storageUri": "s3://b/new"}}}})
    during = read(fake_api)
    deployment = fake_api.deployment(DEFAULT_NAMESPACE, STABLE)
    assert conditions(during)["Ready"] == "True"
    assert deployment["status"]["updatedReplicas"] == 1 and deployment["status"]["replicas"] == 2
    after = read(fake_api, 3)
    assert conditions(after)["Ready"] == "True"
    assert len(fake_api.pods(DEFAULT_NAMESPACE, STABLE)) == 1  # the old pod went once the new one was ready


def test_last_failure_info_is_never_cleared(custom, fake_api: FakeKubeApi):
    fake_api.controller = lambda obj: Outcome("fail", message="No such key")
    created(custom)
    failed = read(fake_api, 3)
    assert failed["status"]["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    assert "time" not in failed["status"]["modelStatus"]["lastFailureInfo"]  # KServe writes none
    fake_api.controller = lambda obj: Outcome("ready")
    patch(fake_api, {"spec": {"predictor": {"model": {"storageUri": "s3://b/fixed"}}}})
    fixed = read(fake_api, 4)
    assert conditions(fixed)["Ready"] == "True"
    assert fixed["status"]["modelStatus"]["transitionStatus"] == "UpToDate"
    assert fixed["status"]["modelStatus"]["lastFailureInfo"]["message"] == "No such key"


def test_canary_entries_carry_no_model_status_and_removed_canaries_lose_their_deployment(custom, fake_api: FakeKubeApi):
    created(custom)
    read(fake_api, 3)
    fake_api.controller = lambda obj: Outcome("ready", canary="fail", message="unpickling error")
    model = {"name": "kserve-container", "modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/c"}
    canary = {"predictor": {"name": "canary", "model": model}}
    patch(fake_api, {"spec": {"canary": [{**canary, "trafficPercent": 10}]}})
    obj = read(fake_api, 4)
    (entry,) = obj["status"]["canaryStatuses"]
    assert entry == {"name": "canary", "ready": False, "trafficPercent": 10}
    assert conditions(obj)["Ready"] == "True" and conditions(obj)["CanaryPredictorReady"] == "False"
    (pod,) = fake_api.pods(DEFAULT_NAMESPACE, "iris-canary-predictor")
    assert pod["status"]["initContainerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    patch(fake_api, {"spec": {"canary": None}})
    read(fake_api)
    assert fake_api.deployment(DEFAULT_NAMESPACE, "iris-canary-predictor") is None


def test_deployments_and_pods_are_served_with_the_rollout_fields(api_client, custom):
    from kubernetes import client

    created(custom)
    read_isvc = [custom.get_namespaced_custom_object(*args("iris")) for _ in range(3)][-1]
    assert conditions(read_isvc)["Ready"] == "True"
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(STABLE, DEFAULT_NAMESPACE)
    assert deployment.metadata.generation == deployment.status.observed_generation == 1
    assert (deployment.spec.replicas, deployment.status.updated_replicas) == (1, 1)
    assert (deployment.status.ready_replicas, deployment.status.available_replicas) == (1, 1)
    pods = client.CoreV1Api(api_client).list_namespaced_pod(DEFAULT_NAMESPACE, label_selector=f"app=isvc.{STABLE}")
    (pod,) = pods.items
    assert pod.metadata.annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == URI
    assert pod.status.init_container_statuses[0].name == "storage-initializer"
