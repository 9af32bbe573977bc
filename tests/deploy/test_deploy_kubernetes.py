"""The deploy backend through the real `kubernetes` client against the fake API server, over HTTP."""

from __future__ import annotations

import dataclasses
import json

import pytest

from components.constants import (
    CANARY_ANNOTATION,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEPLOYER_ROLE_NAME,
    INFERENCE_SERVICE_PLURAL,
    KSERVE_API_VERSION,
    MODEL_READER_SERVICE_ACCOUNT,
)
from components.deploy.cluster import (
    ACTION_CREATED,
    ACTION_PATCHED,
    DeployError,
    DeployForbiddenError,
    DeployTimeoutError,
    ModelLoadFailedError,
    RuntimeVersionMismatchError,
    SmokeTestFailedError,
    deploy_inference_service,
    merge_patch,
)
from components.deploy.inference_service import (
    LINEAGE_MODEL_SHA256,
    LINEAGE_ROLLOUT_ID,
    build_inference_service,
    lineage_annotations,
    with_standard_canary,
)
from components.model_artifact import ModelCard
from tests.fakes.fake_kube_api import (
    DEFAULT_USER,
    FakeKubeApi,
    FakePredictor,
    Outcome,
    merge_patch_apply,
    ready_always,
)

URI_A = "s3://mlpipeline/v2/artifacts/pipe/run-a/train/model"
URI_B = "s3://mlpipeline/v2/artifacts/pipe/run-b/train/model"
URI_C = "s3://mlpipeline/v2/artifacts/pipe/run-c/train/model"
STABLE = f"{DEFAULT_MODEL_NAME}-predictor"
CANARY = f"{DEFAULT_MODEL_NAME}-canary-predictor"
ISVC_PATH = f"/apis/{KSERVE_API_VERSION}/namespaces/{DEFAULT_NAMESPACE}/{INFERENCE_SERVICE_PLURAL}/{DEFAULT_MODEL_NAME}"
FAST = {"poll_interval_seconds": 0.01, "smoke_retry_interval_seconds": 0.01}


def manifest_for(card: ModelCard, storage_uri: str, run_id: str = "run-a", **kwargs) -> dict:
    return build_inference_service(
        name=DEFAULT_MODEL_NAME,
        namespace=kwargs.pop("namespace", DEFAULT_NAMESPACE),
        storage_uri=storage_uri,
        service_account=MODEL_READER_SERVICE_ACCOUNT,
        annotations=lineage_annotations(card, run_id=run_id, metrics={"accuracy": 0.97}),
        **kwargs,
    )


def deploy(manifest: dict, card: ModelCard, api_client, predictor: FakePredictor, instances, **kwargs):
    options = {**FAST, "timeout_seconds": 10.0, **kwargs}
    return deploy_inference_service(
        manifest,
        card=card,
        runtime_sklearn_version=card.sklearn_version,
        smoke_instances=instances,
        api_client=api_client,
        smoke_base_url=predictor.base_url,
        **options,
    )


@pytest.fixture
def instances(iris_xy) -> list[list[float]]:
    x, *_ = iris_xy
    return x[[0, 60, 120]].tolist()


def test_first_deploy_creates_waits_for_ready_and_smoke_predicts(
    make_model_dir, fake_api: FakeKubeApi, api_client, predictor, instances
):
    _, card = make_model_dir()
    result = deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    assert result.action == ACTION_CREATED
    assert result.ready and result.generation == 1 and result.observed_generation >= 1
    assert result.predictions == [int(v) for v in predictor.estimator.predict(instances)]
    assert len(set(result.predictions)) > 1  # the rows come from different classes
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URI_A
    assert stored["metadata"]["annotations"][LINEAGE_MODEL_SHA256] == card.model_sha256
    assert fake_api.methods()[:2] == ["GET", "POST"]


def rollout_ids(fake_api: FakeKubeApi, deployment: str = STABLE) -> list[str]:
    """The rollout id on each pod of a predictor Deployment (the pods KServe would route to)."""
    return [p["metadata"]["annotations"].get(LINEAGE_ROLLOUT_ID) for p in fake_api.pods(DEFAULT_NAMESPACE, deployment)]


def test_a_redeploy_smoke_tests_only_once_every_pod_runs_the_new_spec(
    make_model_dir, fake_api: FakeKubeApi, api_client, predictor, instances
):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    version_before = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)["metadata"]["resourceVersion"]
    # The new pod needs 4 reads to become ready; meanwhile the old pod keeps Ready=True and, in KServe, the
    # InferenceService's observedGeneration (the Deployment's) soon reaches 2 as well.
    fake_api.controller = lambda obj: Outcome("ready", after_reads=4)
    seen_at_smoke: list[list[str]] = []
    predictor.on_call = lambda: seen_at_smoke.append(rollout_ids(fake_api))

    result = deploy(manifest_for(card_b, URI_B, run_id="run-b"), card_b, api_client, predictor, instances)

    assert result.action == ACTION_PATCHED and result.generation == 2
    assert result.deployment == STABLE and result.rollout_id
    assert seen_at_smoke and all(ids == [result.rollout_id] for ids in seen_at_smoke)
    patches = [r for r in fake_api.requests if r[0] == "PATCH"]
    assert len(patches) == 1
    _, _, content_type, body = patches[0]
    assert content_type == "application/merge-patch+json"
    assert body["metadata"]["resourceVersion"] == version_before
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URI_B
    assert stored["metadata"]["annotations"][LINEAGE_MODEL_SHA256] == card_b.model_sha256


def test_the_old_ready_signal_alone_would_have_passed_during_the_rollout(
    make_model_dir, fake_api: FakeKubeApi, api_client, predictor, instances
):
    """Why the step follows the Deployment: while the new pod cannot start, KServe's status looks done."""
    _, card_a = make_model_dir()
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    fake_api.controller = lambda obj: Outcome("pending")
    body = {"spec": {"predictor": {"model": {"storageUri": URI_B}}}}
    fake_api.handle("PATCH", ISVC_PATH, "application/merge-patch+json", json.dumps(body).encode())
    fake_api.handle("GET", ISVC_PATH, "", b"")
    _, isvc = fake_api.handle("GET", ISVC_PATH, "", b"")

    # What the old wait accepted (Ready=True at observedGeneration >= the written generation) ...
    conditions = {c["type"]: c["status"] for c in isvc["status"]["conditions"]}
    assert conditions["Ready"] == "True"
    assert isvc["status"]["observedGeneration"] >= isvc["metadata"]["generation"] == 2
    # ... while the Service still reaches only the old pod.
    pods = fake_api.pods(DEFAULT_NAMESPACE, STABLE)
    assert [p["status"]["conditions"][0]["status"] for p in pods] == ["True", "False"]
    with pytest.raises(DeployTimeoutError, match="did not finish rollout"):
        deploy(manifest_for(card_a, URI_B), card_a, api_client, predictor, instances, timeout_seconds=0.3)


def test_redeploying_the_same_manifest_is_idempotent(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    manifest = manifest_for(card, URI_A)
    first = deploy(manifest, card, api_client, predictor, instances)
    second = deploy(manifest, card, api_client, predictor, instances)

    assert (first.action, second.action) == (ACTION_CREATED, ACTION_PATCHED)
    assert second.generation == first.generation == 1


def test_timeout_deletes_the_service_it_created(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    fake_api.controller = lambda obj: Outcome("pending")

    with pytest.raises(DeployTimeoutError, match="did not finish rollout") as caught:
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances, timeout_seconds=0.3)

    assert caught.value.rolled_back
    assert "deleted" in str(caught.value)
    assert fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME) is None


@pytest.mark.parametrize("pod_order", ["new-first", "old-first"])
def test_a_redeploy_that_cannot_load_fails_fast_and_restores_the_previous_spec(
    pod_order, make_model_dir, fake_api, api_client, predictor, instances
):
    # old-first: KServe's modelStatus judges the old, healthy pod and says UpToDate; only the new pod tells.
    fake_api.pod_order = pod_order
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    previous = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    old_pods = [p["metadata"]["name"] for p in fake_api.pods(DEFAULT_NAMESPACE, STABLE)]

    def controller(obj: dict) -> Outcome:
        broken = obj["spec"]["predictor"]["model"]["storageUri"] == URI_B
        return Outcome("fail", message="No such key: model.joblib") if broken else Outcome("ready")

    fake_api.controller = controller
    # A timeout far longer than the test: only a fail-fast ends it with ModelLoadFailedError.
    with pytest.raises(ModelLoadFailedError, match=r"No such key: model\.joblib") as caught:
        deploy(manifest_for(card_b, URI_B), card_b, api_client, predictor, instances, timeout_seconds=600)

    assert caught.value.rolled_back
    restored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert restored["spec"] == previous["spec"]
    assert restored["metadata"]["annotations"] == previous["metadata"]["annotations"]
    assert restored["metadata"]["generation"] == 3
    fake_api.handle("GET", ISVC_PATH, "", b"")  # one reconcile: the failed pod goes, the old one never left
    assert [p["metadata"]["name"] for p in fake_api.pods(DEFAULT_NAMESPACE, STABLE)] == old_pods


def test_a_good_deploy_after_a_failed_one_succeeds_although_last_failure_info_stays(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    fake_api.controller = lambda obj: Outcome("fail", message="No such key: model.joblib")
    with pytest.raises(ModelLoadFailedError):
        deploy(manifest_for(card_b, URI_B), card_b, api_client, predictor, instances)
    stale = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)["status"]["modelStatus"]["lastFailureInfo"]
    assert stale["message"] == "No such key: model.joblib"

    fake_api.controller = ready_always
    result = deploy(manifest_for(card_b, URI_C, run_id="run-c"), card_b, api_client, predictor, instances)

    assert result.action == ACTION_PATCHED
    status = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)["status"]
    assert status["modelStatus"]["lastFailureInfo"] == stale  # KServe never clears it
    assert status["modelStatus"]["transitionStatus"] == "UpToDate"
    assert rollout_ids(fake_api) == [result.rollout_id]


def test_a_failure_reported_after_the_write_counts_by_its_time(make_model_dir, fake_api, api_client):
    from datetime import UTC, datetime, timedelta

    from components.deploy.cluster import new_model_failure

    write = datetime(2026, 12, 2, 4, 0, 0, tzinfo=UTC)
    info = {"reason": "ModelLoadFailed", "message": "boom"}
    baseline = {"modelStatus": {"transitionStatus": "UpToDate", "lastFailureInfo": info}}
    stale = {"modelStatus": {"transitionStatus": "UpToDate", "lastFailureInfo": info}}
    later = (write + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    earlier = (write - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert new_model_failure(stale, baseline, write) is None
    assert new_model_failure({"modelStatus": {"lastFailureInfo": {**info, "time": earlier}}}, baseline, write)
    timed = {"modelStatus": {"lastFailureInfo": {**info, "time": later}}}
    assert new_model_failure(timed, {"modelStatus": {"lastFailureInfo": {**info, "time": later}}}, write) == (
        "ModelLoadFailed: boom"
    )
    invalid = {"modelStatus": {"transitionStatus": "InvalidSpec", "lastFailureInfo": info}}
    assert new_model_failure(invalid, baseline, write) == "transitionStatus InvalidSpec (ModelLoadFailed: boom)"
    assert new_model_failure(invalid, invalid, write) is None


@pytest.mark.parametrize(
    ("outcome", "complaint"),
    [
        (Outcome("crash", message="model digest mismatch"), r"kserve-container CrashLoopBackOff: model digest"),
        (Outcome("rejected", message="violates PodSecurity"), r"FailedCreate: violates PodSecurity"),
    ],
)
def test_new_pods_that_never_start_fail_fast(
    outcome, complaint, make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    fake_api.controller = lambda obj: outcome

    with pytest.raises(ModelLoadFailedError, match=complaint) as caught:
        deploy(manifest_for(card, URI_B), card, api_client, predictor, instances, timeout_seconds=600)
    assert caught.value.rolled_back


def test_smoke_failure_rolls_back(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    predictor.broken = True

    with pytest.raises(SmokeTestFailedError, match="HTTP 500") as caught:
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    assert caught.value.rolled_back
    assert fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME) is None


def test_smoke_predict_retries_while_the_route_still_404s_after_ready(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    predictor.not_found_first = 3

    result = deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    assert len(result.predictions) == len(instances)
    assert predictor.calls == 4


def test_transient_read_errors_while_waiting_are_retried(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    fake_api.failing_reads_after_write = 2

    result = deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    assert result.ready and result.action == ACTION_CREATED
    assert fake_api.failing_reads == 0  # both failing reads happened, during the wait


def test_a_failed_first_read_stops_before_any_write(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    fake_api.failing_reads = 1
    with pytest.raises(DeployError, match=r"HTTP 500: etcdserver: leader changed"):
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    assert "POST" not in fake_api.methods()


def test_an_unreachable_api_server_is_a_clear_error(make_model_dir, predictor, instances):
    import socket

    from kubernetes import client

    _, card = make_model_dir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    with (
        client.ApiClient(configuration) as unreachable,
        pytest.raises(DeployError, match="could not reach the Kubernetes API"),
    ):
        deploy(manifest_for(card, URI_A), card, unreachable, predictor, instances)


def test_without_smoke_instances_the_url_comes_from_status(make_model_dir, fake_api, api_client):
    _, card = make_model_dir()
    result = deploy_inference_service(
        manifest_for(card, URI_A),
        card=card,
        timeout_seconds=10,
        runtime_sklearn_version=card.sklearn_version,
        smoke_instances=None,
        api_client=api_client,
        poll_interval_seconds=0.01,
    )
    assert result.url == f"http://{DEFAULT_MODEL_NAME}-predictor.{DEFAULT_NAMESPACE}.svc.cluster.local"
    assert result.predictions == [] and result.smoke_url == ""


@pytest.mark.parametrize("verb", ["get", "create"])
def test_rbac_denial_names_the_account_the_role_and_how_to_check(
    verb, make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    fake_api.forbidden_verbs = {verb}

    with pytest.raises(DeployForbiddenError) as caught:
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    message = str(caught.value)
    assert DEFAULT_USER in message
    assert DEPLOYER_ROLE_NAME in message
    assert f"kubectl auth can-i {verb} inferenceservices.serving.kserve.io -n {DEFAULT_NAMESPACE}" in message
    assert "POST" not in fake_api.methods()[1:] or verb == "create"


def test_rbac_denied_patch_on_redeploy(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    fake_api.forbidden_verbs = {"patch"}

    with pytest.raises(DeployForbiddenError, match="may not patch"):
        deploy(manifest_for(card, URI_B), card, api_client, predictor, instances)
    assert fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)["spec"]["predictor"]["model"]["storageUri"] == URI_A


def test_a_model_from_another_sklearn_is_refused_before_any_request(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    old = dataclasses.replace(card, versions={**card.versions, "scikit-learn": "1.5.2"})

    with pytest.raises(RuntimeVersionMismatchError) as caught:
        deploy_inference_service(
            manifest_for(card, URI_A),
            card=old,
            timeout_seconds=5,
            runtime_sklearn_version=card.sklearn_version,
            smoke_instances=instances,
            api_client=api_client,
        )

    message = str(caught.value)
    assert "1.5.2" in message and card.sklearn_version in message
    assert "Retrain" in message and "scikit-learn==1.5.2" in message
    assert fake_api.requests == []


def test_manifest_recording_another_model_is_refused(make_model_dir, fake_api, api_client, predictor, instances):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    with pytest.raises(DeployError, match="sha256"):
        deploy(manifest_for(card_a, URI_A), card_b, api_client, predictor, instances)
    assert fake_api.requests == []


def test_missing_namespace_says_which_overlay_to_apply(make_model_dir, fake_api, api_client, predictor, instances):
    _, card = make_model_dir()
    with pytest.raises(DeployError, match=r'namespaces "elsewhere" not found.*apply -k'):
        deploy(manifest_for(card, URI_A, namespace="elsewhere"), card, api_client, predictor, instances)


def test_an_object_the_crd_schema_rejects_fails_with_the_servers_message(
    make_model_dir, fake_api, api_client, predictor, instances, shared_schemas
):
    _, card = make_model_dir()
    manifest = manifest_for(card, URI_A)
    manifest["spec"]["predictor"]["model"]["storageURI"] = manifest["spec"]["predictor"]["model"].pop("storageUri")

    with pytest.raises(DeployError, match=r"HTTP 422.*storageURI"):
        deploy(manifest, card, api_client, predictor, instances)


def test_canary_goes_beside_the_live_predictor_then_promotes(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)

    canary = deploy(manifest_for(card_b, URI_B, canary_traffic_percent=20), card_b, api_client, predictor, instances)
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert canary.canary_traffic_percent == 20
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URI_A
    assert stored["spec"]["canary"][0]["trafficPercent"] == 20
    assert stored["spec"]["canary"][0]["predictor"]["model"]["storageUri"] == URI_B

    promoted = deploy(manifest_for(card_b, URI_B), card_b, api_client, predictor, instances)
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert promoted.canary_traffic_percent is None
    assert "canary" not in stored["spec"]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URI_B


@pytest.mark.parametrize(
    ("current", "desired"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}}),
        ({"canary": [{"x": 1}], "p": {"m": {"u": "a"}}}, {"p": {"m": {"u": "b", "r": "1"}}}),
        ({}, {"p": {"q": [1, 2]}}),
        ({"p": {"q": [1, 2]}}, {"p": {"q": [2]}}),
    ],
)
def test_merge_patch_turns_current_into_exactly_desired(current, desired):
    assert merge_patch_apply(current, merge_patch(current, desired)) == desired


def test_a_webhook_denial_is_reported_as_kserves_refusal_not_as_missing_rbac(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    # A canary on an InferenceService that is not in Standard mode: KServe's webhook denies it with HTTP 403.
    manifest = manifest_for(card, URI_B, deployment_mode="Knative")
    live = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    manifest = with_standard_canary(manifest, stable_predictor=live["spec"]["predictor"], traffic_percent=10)

    with pytest.raises(DeployError, match="denied the request: canary is only supported in Standard") as caught:
        deploy(manifest, card, api_client, predictor, instances)
    assert not isinstance(caught.value, DeployForbiddenError)
    assert DEPLOYER_ROLE_NAME not in str(caught.value)


def test_a_canary_that_fails_to_load_fails_fast_and_rolls_back_to_the_stable_spec(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    before = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    # The stable predictor stays Ready (KServe's Ready ignores canaries) and canaryStatuses has no modelStatus:
    # only the canary's own pods tell.
    fake_api.controller = lambda obj: Outcome("ready", canary="fail", message="unpickling error")

    with pytest.raises(
        ModelLoadFailedError,
        match=r"canary canary: pod sklearn-iris-canary-predictor-.*storage-initializer exited "
        r"1: unpickling error",
    ) as caught:
        deploy(manifest_for(card_b, URI_B, canary_traffic_percent=10), card_b, api_client, predictor, instances)

    assert caught.value.rolled_back
    after = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert after["spec"] == before["spec"]
    assert "canary" not in after["spec"]
    assert "modelStatus" not in after["status"]["canaryStatuses"][0]  # as KServe writes them


def test_a_canary_leaves_the_stable_pods_and_their_lineage_alone(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card_a = make_model_dir()
    _, card_b = make_model_dir(family="random_forest", name="model-b")
    deploy(manifest_for(card_a, URI_A), card_a, api_client, predictor, instances)
    isvc_before = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    stable_before = fake_api.deployment(DEFAULT_NAMESPACE, STABLE)
    pods_before = fake_api.pods(DEFAULT_NAMESPACE, STABLE)

    result = deploy(
        manifest_for(card_b, URI_B, run_id="run-b", canary_traffic_percent=20), card_b, api_client, predictor, instances
    )

    isvc = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert isvc["metadata"]["annotations"] == isvc_before["metadata"]["annotations"]
    stable = fake_api.deployment(DEFAULT_NAMESPACE, STABLE)
    assert stable["metadata"]["generation"] == stable_before["metadata"]["generation"]
    assert stable["spec"]["template"] == stable_before["spec"]["template"]
    assert fake_api.pods(DEFAULT_NAMESPACE, STABLE) == pods_before
    assert {p["metadata"]["annotations"][LINEAGE_MODEL_SHA256] for p in pods_before} == {card_a.model_sha256}
    (canary_pod,) = fake_api.pods(DEFAULT_NAMESPACE, CANARY)
    # The logger's metadataAnnotations read pod annotations: canary traffic is tagged with the canary's model.
    assert canary_pod["metadata"]["annotations"][LINEAGE_MODEL_SHA256] == card_b.model_sha256
    assert canary_pod["metadata"]["annotations"][LINEAGE_ROLLOUT_ID] == result.rollout_id
    assert result.deployment == CANARY


def test_a_canary_that_never_becomes_ready_times_out_although_ready_is_true(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    fake_api.controller = lambda obj: Outcome("ready", canary="pending")

    with pytest.raises(DeployTimeoutError, match=r"\(canary canary\).*canary canary ready=False"):
        deploy(
            manifest_for(card, URI_B, canary_traffic_percent=10),
            card,
            api_client,
            predictor,
            instances,
            timeout_seconds=0.3,
        )


def test_the_canary_smoke_test_goes_to_the_canary_service(make_model_dir, fake_api, api_client, instances):
    _, card = make_model_dir()
    options = {"card": card, "timeout_seconds": 10, "runtime_sklearn_version": card.sklearn_version}
    deploy_inference_service(
        manifest_for(card, URI_A), smoke_instances=None, api_client=api_client, poll_interval_seconds=0.01, **options
    )
    # Nothing listens at the cluster-local canary address here, so the smoke test fails: on the canary's URL.
    with pytest.raises(SmokeTestFailedError, match=f"{DEFAULT_MODEL_NAME}-canary-predictor.{DEFAULT_NAMESPACE}"):
        deploy_inference_service(
            manifest_for(card, URI_B, canary_traffic_percent=10),
            smoke_instances=instances,
            api_client=api_client,
            poll_interval_seconds=0.01,
            smoke_attempts=1,
            **options,
        )


def test_changing_the_deployment_mode_of_a_live_service_is_refused_by_kserve(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)

    with pytest.raises(DeployError, match="deploymentMode cannot be changed from 'Standard' to 'Knative'"):
        deploy(manifest_for(card, URI_B, deployment_mode="Knative"), card, api_client, predictor, instances)
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == URI_A


def test_a_canary_request_without_a_live_service_is_a_plain_first_deploy(
    make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    result = deploy(manifest_for(card, URI_A, canary_traffic_percent=10), card, api_client, predictor, instances)

    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert result.action == ACTION_CREATED and result.canary_traffic_percent is None
    assert "canary" not in stored["spec"]
    assert CANARY_ANNOTATION not in stored["metadata"]["annotations"]


def test_the_projects_role_is_what_the_fake_enforces_and_it_suffices(
    make_model_dir, fake_api, api_client, predictor, instances
):
    # Every test here runs as a caller holding only the Role in manifests/base/rbac.yaml: create, patch,
    # rollback by patch and rollback by delete all worked above. Pin the Role's verbs so widening it is a choice.
    assert fake_api.rbac == {
        "inferenceservices.serving.kserve.io": {"get", "create", "patch", "delete"},
        "deployments.apps": {"get", "list", "watch"},
        "pods": {"get", "list", "watch"},
        "configmaps": {"get", "create", "update"},  # the version record (tests/deploy/test_cluster_versions.py)
    }
    _, card = make_model_dir()
    predictor.broken = True
    with pytest.raises(SmokeTestFailedError):
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)  # create, then delete
    assert set(fake_api.methods()) == {"GET", "POST", "DELETE"}


@pytest.mark.parametrize(("resource", "verb"), [("deployments.apps", "get"), ("pods", "list")])
def test_without_read_access_to_the_rollout_the_step_says_which_rule_is_missing(
    resource, verb, make_model_dir, fake_api, api_client, predictor, instances
):
    _, card = make_model_dir()
    fake_api.rbac = {k: v for k, v in fake_api.rbac.items() if k != resource}

    with pytest.raises(DeployForbiddenError, match=f"may not {verb} {resource} in namespace") as caught:
        deploy(manifest_for(card, URI_A), card, api_client, predictor, instances)
    assert f"kubectl auth can-i {verb} {resource} -n {DEFAULT_NAMESPACE}" in str(caught.value)
    # It could not tell whether the new model serves: what it created is gone again.
    assert caught.value.rolled_back
    assert fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME) is None
