"""The fake API server keeps the promises the deploy tests rely on (checked through the real client)."""

from __future__ import annotations

import json

import pytest
from fake_kube_api import FakeKubeApi

from components.constants import DEFAULT_NAMESPACE, INFERENCE_SERVICE_PLURAL, KSERVE_GROUP, KSERVE_VERSION
from components.inference_service import build_inference_service

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
