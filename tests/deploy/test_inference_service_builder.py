"""The pure InferenceService builder: URIs, lineage, argument checks, and strict CRD validity of what it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from components import constants
from components.deploy.inference_service import (
    LINEAGE_DATA_FINGERPRINT,
    LINEAGE_METRIC_PREFIX,
    LINEAGE_MODEL_SHA256,
    LINEAGE_RUN_ID,
    LINEAGE_RUN_NAME,
    LINEAGE_SKLEARN_VERSION,
    InferenceServiceSpecError,
    build_inference_service,
    check_scaling_options,
    lineage_annotations,
    resource_requirements,
    storage_uri_from_artifact,
    with_standard_canary,
)
from tests.manifests.kube_schemas import crd_errors

URI = "s3://mlpipeline/v2/artifacts/pipe/run/train/model"


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        ("minio://mlpipeline/v2/artifacts/p/r/train/model", "s3://mlpipeline/v2/artifacts/p/r/train/model"),
        ("MINIO://mlpipeline/v2/x/", "s3://mlpipeline/v2/x"),
        ("s3://bucket/key", "s3://bucket/key"),
        ("gs://bucket/a/b", "gs://bucket/a/b"),
        ("pvc://claim/models/v3", "pvc://claim/models/v3"),
    ],
)
def test_storage_uri_from_artifact(artifact, expected):
    assert storage_uri_from_artifact(artifact) == expected


@pytest.mark.parametrize(
    ("artifact", "complaint"),
    [
        ("/tmp/local_outputs/model", "local path"),
        ("file:///tmp/model", "scheme 'file'"),
        ("minio://mlpipeline", "names no object"),
        ("minio://mlpipeline/", "names no object"),
    ],
)
def test_storage_uri_from_artifact_refuses_what_a_cluster_cannot_fetch(artifact, complaint):
    with pytest.raises(InferenceServiceSpecError, match=complaint):
        storage_uri_from_artifact(artifact)


def test_lineage_annotations_record_run_model_data_and_metrics(make_model_dir):
    _, card = make_model_dir()
    annotations = lineage_annotations(
        card, run_id="run-42", run_name="nightly 2026-12-02", metrics={"accuracy": 0.9666666, "f1 macro": 1.0}
    )

    assert annotations[LINEAGE_RUN_ID] == "run-42"
    assert annotations[LINEAGE_RUN_NAME] == "nightly 2026-12-02"
    assert LINEAGE_RUN_NAME not in lineage_annotations(card, run_id="r", metrics={})
    assert annotations[LINEAGE_MODEL_SHA256] == card.model_sha256
    assert annotations[LINEAGE_DATA_FINGERPRINT] == card.training_data_fingerprint
    assert annotations[LINEAGE_SKLEARN_VERSION] == card.sklearn_version
    assert float(annotations[f"{LINEAGE_METRIC_PREFIX}accuracy"]) == pytest.approx(0.9666666, rel=1e-5)
    assert annotations[f"{LINEAGE_METRIC_PREFIX}f1-macro"] == "1"
    assert all(isinstance(v, str) for v in annotations.values())


def test_lineage_annotations_are_valid_object_metadata(make_model_dir, shared_schemas: Path):
    _, card = make_model_dir()
    odd_metrics = {"roc_auc_ovr": float("nan"), "x/y": 1, "a" * 55 + "-" + "b" * 20: 0.5, "  ": 2}
    manifest = build_inference_service(
        name="iris",
        namespace="models",
        storage_uri=URI,
        annotations=lineage_annotations(card, run_id="r", metrics=odd_metrics),
    )
    assert crd_errors(manifest, shared_schemas) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"protocol_version": "v2"},
        {"service_account": "kfp-model-reader", "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        {"canary_traffic_percent": 10},
        {"canary_traffic_percent": 10, "deployment_mode": constants.DEPLOYMENT_MODE_KNATIVE},
        {"runtime": "kserve-sklearnserver", "annotations": {"team": "ml"}},
    ],
)
def test_every_built_variant_validates_strictly_against_the_crd(kwargs, shared_schemas: Path):
    manifest = build_inference_service(name="sklearn-iris", namespace="kserve-models", storage_uri=URI, **kwargs)
    assert crd_errors(manifest, shared_schemas) == []


def test_built_service_targets_our_runtime_in_standard_mode():
    manifest = build_inference_service(name="sklearn-iris", namespace="kserve-models", storage_uri=URI)
    predictor = manifest["spec"]["predictor"]

    assert manifest["apiVersion"] == constants.KSERVE_API_VERSION
    assert manifest["kind"] == constants.INFERENCE_SERVICE_KIND
    assert (
        manifest["metadata"]["annotations"][constants.DEPLOYMENT_MODE_ANNOTATION] == constants.DEPLOYMENT_MODE_STANDARD
    )
    assert predictor["model"]["modelFormat"]["name"] == constants.SKLEARN_MODEL_FORMAT
    assert predictor["model"]["runtime"] == constants.SERVING_RUNTIME_NAME
    assert predictor["model"]["storageUri"] == URI
    # No resources: the ServingRuntime's (sized by the overlays) apply; see test_manifests_offline.
    assert "resources" not in predictor["model"]
    assert predictor["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in predictor
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (constants.DEFAULT_MIN_REPLICAS, 3)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("cpu", constants.DEFAULT_SCALE_TARGET)


def test_resources_carry_only_the_values_given():
    assert resource_requirements() is None
    assert resource_requirements(cpu_request="200m", memory_limit="1Gi") == {
        "requests": {"cpu": "200m"},
        "limits": {"memory": "1Gi"},
    }
    with pytest.raises(InferenceServiceSpecError, match="cpu request '2 cores' is not a Kubernetes quantity"):
        resource_requirements(cpu_request="2 cores")


def test_the_digest_pin_goes_into_the_model_server_environment(shared_schemas: Path):
    pin = {constants.MODEL_DIGEST_ENV: "sha256:" + "a" * 64, constants.MODEL_VERSION_ENV: "a" * 12}
    manifest = build_inference_service(name="iris", namespace="ns", storage_uri=URI, env=pin)
    assert manifest["spec"]["predictor"]["model"]["env"] == [{"name": k, "value": v} for k, v in pin.items()]
    assert crd_errors(manifest, shared_schemas) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 2, "max_replicas": 5, "scale_metric": "memory", "scale_target": 70},
        {"deployment_mode": "Knative", "min_replicas": 0, "scale_metric": "rps", "scale_target": 50},
        {"deployment_mode": "Knative", "min_replicas": 0},
    ],
)
def test_scaling_variants_validate_against_the_crd(kwargs, shared_schemas: Path):
    manifest = build_inference_service(name="iris", namespace="ns", storage_uri=URI, **kwargs)
    assert crd_errors(manifest, shared_schemas) == []
    assert manifest["spec"]["predictor"]["minReplicas"] == kwargs["min_replicas"]


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"min_replicas": 0}, "min_replicas must be an integer from 1"),
        ({"min_replicas": 3, "max_replicas": 2}, "max_replicas must be an integer from 3"),
        ({"scale_metric": "concurrency"}, "does not work in Standard mode; choose one of cpu, memory"),
        ({"deployment_mode": "Knative", "scale_metric": "cpu"}, "choose one of concurrency, rps"),
        ({"scale_target": 0}, "scale_target must be an integer from 1 to 100"),
        ({"scale_target": 101}, "scale_target must be an integer from 1 to 100"),
        ({"max_replicas": True}, "max_replicas"),
    ],
)
def test_scaling_arguments_kserve_would_refuse_are_refused(kwargs, complaint):
    with pytest.raises(InferenceServiceSpecError, match=complaint):
        build_inference_service(name="iris", namespace="ns", storage_uri=URI, **kwargs)
    # The same check, before any work (pipeline pre-flight).
    with pytest.raises(InferenceServiceSpecError, match=complaint):
        check_scaling_options(**kwargs)


def test_canary_in_standard_mode_is_recorded_for_deploy_not_as_the_ignored_knative_field():
    standard = build_inference_service(name="a", namespace="ns", storage_uri=URI, canary_traffic_percent=25)
    knative = build_inference_service(
        name="a", namespace="ns", storage_uri=URI, canary_traffic_percent=25, deployment_mode="Knative"
    )
    assert standard["metadata"]["annotations"][constants.CANARY_ANNOTATION] == "25"
    assert "canaryTrafficPercent" not in standard["spec"]["predictor"]
    assert knative["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert constants.CANARY_ANNOTATION not in knative["metadata"]["annotations"]


def test_standard_canary_keeps_the_live_predictor_primary(shared_schemas: Path, make_model_dir):
    _, card = make_model_dir()
    live = build_inference_service(
        name="iris", namespace="ns", storage_uri="s3://b/old", annotations={LINEAGE_RUN_ID: "old-run"}
    )
    new = build_inference_service(
        name="iris",
        namespace="ns",
        storage_uri="s3://b/new",
        annotations=lineage_annotations(card, run_id="new-run", metrics={}),
    )
    rollout = with_standard_canary(
        new,
        stable_predictor=live["spec"]["predictor"],
        traffic_percent=10,
        stable_annotations=live["metadata"]["annotations"],
    )

    assert rollout["spec"]["predictor"]["model"]["storageUri"] == "s3://b/old"
    (canary,) = rollout["spec"]["canary"]
    assert canary["trafficPercent"] == 10
    assert canary["predictor"]["name"] == constants.CANARY_PREDICTOR_NAME
    assert canary["predictor"]["model"]["storageUri"] == "s3://b/new"
    # Lineage of the new model on the canary only; the InferenceService's (copied into stable pods) unchanged.
    assert canary["predictor"]["annotations"][LINEAGE_RUN_ID] == "new-run"
    assert canary["predictor"]["annotations"][LINEAGE_MODEL_SHA256] == card.model_sha256
    assert rollout["metadata"]["annotations"] == live["metadata"]["annotations"]
    # KServe's webhook refuses scaling fields on a canary (it runs fixed replicas).
    assert not {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"} & set(canary["predictor"])
    assert new["spec"]["predictor"]["model"]["storageUri"] == "s3://b/new"  # input untouched
    assert crd_errors(rollout, shared_schemas) == []


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"name": "Iris"}, "not a valid Kubernetes name"),
        ({"name": "1iris"}, "starting with a letter"),
        ({"name": "a" * 60}, "at most"),
        ({"namespace": "my_ns"}, "namespace"),
        ({"storage_uri": "/tmp/model"}, "storage_uri"),
        ({"storage_uri": "minio://mlpipeline/x"}, "storage_uri_from_artifact"),
        ({"protocol_version": "v3"}, "protocol_version"),
        ({"deployment_mode": "Serverless"}, "deployment_mode"),
        ({"canary_traffic_percent": 100}, "1 to 99"),
        ({"canary_traffic_percent": 0}, "1 to 99"),
        ({"canary_traffic_percent": True}, "1 to 99"),
        ({"service_account": "Bad Name"}, "service account"),
    ],
)
def test_builder_rejects_what_the_api_server_or_kserve_would(kwargs, complaint):
    arguments = {"name": "iris", "namespace": "ns", "storage_uri": URI, **kwargs}
    with pytest.raises(InferenceServiceSpecError, match=complaint):
        build_inference_service(**arguments)
