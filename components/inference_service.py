"""The InferenceService the pipeline deploys, built as a plain dict (no cluster, no I/O).

`manifests/base/inferenceservice.yaml` is the same object written by hand; the tests validate both against
KServe's CRD schema, so the builder and the reference manifest cannot drift apart silently.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from components.constants import (
    CANARY_ANNOTATION,
    CANARY_PREDICTOR_NAME,
    DEFAULT_PREDICTOR_RESOURCES,
    DEPLOYMENT_MODE_ANNOTATION,
    DEPLOYMENT_MODE_KNATIVE,
    DEPLOYMENT_MODE_STANDARD,
    DEPLOYMENT_MODES,
    INFERENCE_SERVICE_KIND,
    KSERVE_API_VERSION,
    LINEAGE_ANNOTATION_PREFIX,
    PREDICTOR_CONTAINER_NAME,
    PROTOCOL_VERSIONS,
    SERVING_RUNTIME_NAME,
    SKLEARN_MODEL_FORMAT,
    SKLEARN_MODEL_FORMAT_VERSION,
    STORAGE_URI_SCHEMES,
)
from components.model_artifact import ModelCard

# Kubernetes object-name rules: InferenceService names become Service names, so DNS-1035 (start with a letter).
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ANNOTATION_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_NAME = 63
# The predictor Deployment is named "<isvc>-predictor" (and "<isvc>-canary-predictor"); keep it under 63.
_MAX_ISVC_NAME = _MAX_NAME - len(f"-{CANARY_PREDICTOR_NAME}-predictor")


class InferenceServiceSpecError(ValueError):
    """An argument cannot produce a valid InferenceService; the message names it and what is allowed."""


LINEAGE_RUN_ID = f"{LINEAGE_ANNOTATION_PREFIX}pipeline-run-id"
LINEAGE_MODEL_SHA256 = f"{LINEAGE_ANNOTATION_PREFIX}model-sha256"
LINEAGE_DATA_FINGERPRINT = f"{LINEAGE_ANNOTATION_PREFIX}training-data-fingerprint"
LINEAGE_SKLEARN_VERSION = f"{LINEAGE_ANNOTATION_PREFIX}sklearn-version"
LINEAGE_MODEL_FAMILY = f"{LINEAGE_ANNOTATION_PREFIX}model-family"
LINEAGE_METRIC_PREFIX = f"{LINEAGE_ANNOTATION_PREFIX}metric-"


def storage_uri_from_artifact(uri: str) -> str:
    """Turn a KFP Model artifact URI into a `storageUri` KServe's storage initializer can fetch.

    KFP records artifacts under `minio://bucket/key` (also with SeaweedFS, which speaks S3); the storage
    initializer knows that store as `s3://bucket/key`. Schemes KServe already understands pass through.

    Args:
        uri: The artifact's `uri`, e.g. `minio://mlpipeline/v2/artifacts/pipe/run/train/model`.

    Returns:
        The `storageUri`, e.g. `s3://mlpipeline/v2/artifacts/pipe/run/train/model`.

    Raises:
        InferenceServiceSpecError: A local path (a `kfp.local` run) or an unknown scheme.
    """
    text = uri.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise InferenceServiceSpecError(
            f"artifact URI {uri!r} is a local path: a cluster cannot fetch it. Deploy to Kubernetes from a run on "
            "KFP (its artifacts live in the object store), or use the local deploy target for kfp.local runs"
        )
    scheme = scheme.lower()
    if scheme == "minio":
        scheme = "s3"
    if scheme not in STORAGE_URI_SCHEMES:
        raise InferenceServiceSpecError(
            f"artifact URI {uri!r} has scheme {scheme!r}; KServe can fetch {', '.join(STORAGE_URI_SCHEMES)} "
            "(and minio://, rewritten to s3://)"
        )
    bucket, _, key = rest.partition("/")
    if not bucket or not key.strip("/"):
        raise InferenceServiceSpecError(f"artifact URI {uri!r} names no object inside a bucket")
    return f"{scheme}://{bucket}/{key.rstrip('/')}"


def _metric_key(name: str) -> str:
    cleaned = _ANNOTATION_NAME_CHARS.sub("-", name).strip("-_.") or "unnamed"
    # The part after the prefix must be at most 63 characters and end with a letter or digit.
    return f"{LINEAGE_METRIC_PREFIX}{cleaned}"[: len(LINEAGE_ANNOTATION_PREFIX) + _MAX_NAME].rstrip("-_.")


def lineage_annotations(card: ModelCard, *, run_id: str, metrics: Mapping[str, float]) -> dict[str, str]:
    """Annotations that tie a live InferenceService to the run, the model bytes and the data it came from.

    Args:
        card: The model card of the deployed model.
        run_id: The KFP pipeline run id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER` resolved at run time).
        metrics: Evaluation metrics to record (e.g. accuracy); non-finite values are written as text.

    Returns:
        Annotation key -> value, every value a string as Kubernetes requires.
    """
    annotations = {
        LINEAGE_RUN_ID: run_id,
        LINEAGE_MODEL_SHA256: card.model_sha256,
        LINEAGE_DATA_FINGERPRINT: card.training_data_fingerprint,
        LINEAGE_SKLEARN_VERSION: card.sklearn_version,
        LINEAGE_MODEL_FAMILY: card.model_family,
    }
    for name, value in sorted(metrics.items()):
        number = float(value)
        annotations[_metric_key(name)] = f"{number:.6g}" if math.isfinite(number) else str(number)
    return annotations


def _check_name(kind: str, value: str, pattern: re.Pattern[str], limit: int) -> None:
    if not value or len(value) > limit or not pattern.match(value):
        start = "a letter" if pattern is _DNS1035 else "a letter or digit"
        raise InferenceServiceSpecError(
            f"{kind} {value!r} is not a valid Kubernetes name: use at most {limit} lowercase letters, digits and "
            f"'-', starting with {start} and ending with a letter or digit"
        )


def build_inference_service(
    *,
    name: str,
    namespace: str,
    storage_uri: str,
    runtime: str = SERVING_RUNTIME_NAME,
    service_account: str | None = None,
    resources: Mapping[str, Mapping[str, str]] | None = None,
    annotations: Mapping[str, str] | None = None,
    protocol_version: str = "v1",
    canary_traffic_percent: int | None = None,
    deployment_mode: str = DEPLOYMENT_MODE_STANDARD,
    logger: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the InferenceService that serves one scikit-learn model directory.

    Args:
        name: InferenceService name (DNS-1035, short enough for "<name>-canary-predictor").
        namespace: Namespace of the models (`constants.DEFAULT_NAMESPACE` on our clusters).
        storage_uri: Where the model directory lives (see `storage_uri_from_artifact`).
        runtime: The ServingRuntime to use; ours serves `modelFormat: sklearn` with the project image.
        service_account: Predictor service account holding the object-store Secret (None: namespace default).
        resources: Container `requests`/`limits`; defaults to `constants.DEFAULT_PREDICTOR_RESOURCES`.
        annotations: Extra metadata annotations, typically `lineage_annotations(...)`.
        protocol_version: `v1` or `v2`; our runtime serves both on the same port.
        canary_traffic_percent: 1-99 to send only part of the traffic to this model. In Knative mode this is
            `predictor.canaryTrafficPercent`; in Standard mode KServe ignores that field, so the builder records
            the wish in an annotation and `deploy_kubernetes` turns it into a `spec.canary` entry beside the live
            predictor (the only place that knows what is live).
        deployment_mode: `Standard` (plain Deployment + Service) or `Knative`, set per object by annotation.
        logger: `spec.predictor.logger` (payload logging, see `components.monitoring.sink.logger_spec`).

    Returns:
        The InferenceService as a JSON-ready dict.

    Raises:
        InferenceServiceSpecError: An argument that the API server or KServe would reject.
    """
    _check_name("InferenceService name", name, _DNS1035, _MAX_ISVC_NAME)
    _check_name("namespace", namespace, _DNS1123_LABEL, _MAX_NAME)
    _check_name("runtime", runtime, _DNS1123_LABEL, _MAX_NAME)
    if service_account is not None:
        _check_name("service account", service_account, _DNS1123_LABEL, _MAX_NAME)
    if protocol_version not in PROTOCOL_VERSIONS:
        raise InferenceServiceSpecError(
            f"protocol_version must be one of {PROTOCOL_VERSIONS}, not {protocol_version!r}"
        )
    if deployment_mode not in DEPLOYMENT_MODES:
        raise InferenceServiceSpecError(f"deployment_mode must be one of {DEPLOYMENT_MODES}, not {deployment_mode!r}")
    scheme = storage_uri.partition("://")[0]
    if scheme not in STORAGE_URI_SCHEMES or "://" not in storage_uri:
        raise InferenceServiceSpecError(
            f"storage_uri {storage_uri!r} must start with one of {', '.join(s + '://' for s in STORAGE_URI_SCHEMES)}; "
            "convert KFP artifact URIs with storage_uri_from_artifact()"
        )
    if canary_traffic_percent is not None and (
        isinstance(canary_traffic_percent, bool)
        or not isinstance(canary_traffic_percent, int)
        or not 0 < canary_traffic_percent < 100
    ):
        raise InferenceServiceSpecError(
            f"canary_traffic_percent must be an integer from 1 to 99, not {canary_traffic_percent!r}"
        )

    model: dict[str, Any] = {
        "modelFormat": {"name": SKLEARN_MODEL_FORMAT, "version": SKLEARN_MODEL_FORMAT_VERSION},
        "runtime": runtime,
        "protocolVersion": protocol_version,
        "storageUri": storage_uri,
        "resources": copy.deepcopy(dict(resources if resources is not None else DEFAULT_PREDICTOR_RESOURCES)),
    }
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        # The model server needs no Kubernetes API access; an unmounted token cannot leak (kserve/kserve#3928).
        "automountServiceAccountToken": False,
        # Pod level, so KServe's injected storage-initializer (USER 1000 in its image) gets it too; the runtime's
        # container adds the rest of Pod Security "restricted" (no escalation, no capabilities, read-only root).
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "model": model,
    }
    if service_account is not None:
        predictor["serviceAccountName"] = service_account
    if logger is not None:
        predictor["logger"] = copy.deepcopy(dict(logger))

    merged_annotations = {DEPLOYMENT_MODE_ANNOTATION: deployment_mode, **dict(annotations or {})}
    if canary_traffic_percent is not None:
        if deployment_mode == DEPLOYMENT_MODE_KNATIVE:
            predictor["canaryTrafficPercent"] = canary_traffic_percent
        else:
            merged_annotations[CANARY_ANNOTATION] = str(canary_traffic_percent)

    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": INFERENCE_SERVICE_KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "kfp-sklearn-kserve", "app.kubernetes.io/component": "predictor"},
            "annotations": {k: str(v) for k, v in merged_annotations.items()},
        },
        "spec": {"predictor": predictor},
    }


def with_standard_canary(
    manifest: Mapping[str, Any], *, stable_predictor: Mapping[str, Any], traffic_percent: int
) -> dict[str, Any]:
    """Turn a built InferenceService into a Standard-mode canary rollout beside the live predictor.

    KServe >= 0.20 runs each `spec.canary[]` predictor as its own Deployment ("<isvc>-<name>-predictor") and
    splits traffic by `trafficPercent` (weighted routes need the Gateway API; without it the canary still runs
    and is reachable on its own Service). Re-deploying without a canary promotes the new model to 100%.

    Args:
        manifest: Output of `build_inference_service` (its predictor is the new model).
        stable_predictor: `spec.predictor` of the live InferenceService, kept as the primary.
        traffic_percent: Share of traffic for the new model, 1-99.

    Returns:
        A new dict; `manifest` is not modified.
    """
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 0 < traffic_percent < 100:
        raise InferenceServiceSpecError(
            f"canary traffic percent must be an integer from 1 to 99, not {traffic_percent!r}"
        )
    result = copy.deepcopy(dict(manifest))
    new_predictor = result["spec"]["predictor"]
    new_predictor["name"] = CANARY_PREDICTOR_NAME
    # Unlike spec.predictor, the canary schema requires the container name of predictor.model.
    new_predictor["model"]["name"] = PREDICTOR_CONTAINER_NAME
    result["spec"]["predictor"] = copy.deepcopy(dict(stable_predictor))
    result["spec"]["canary"] = [{"predictor": new_predictor, "trafficPercent": traffic_percent}]
    return result
