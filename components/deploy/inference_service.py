"""The InferenceService the pipeline deploys, built as a plain dict (no cluster, no I/O).

`manifests/base/inferenceservice.yaml` is the same object written by hand; the tests validate both against
KServe's CRD schema, so the builder and the reference manifest cannot drift apart silently.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from components.constants import (
    CANARY_ANNOTATION,
    CANARY_PREDICTOR_NAME,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALE_METRIC,
    DEFAULT_SCALE_TARGET,
    DEPLOYMENT_MODE_ANNOTATION,
    DEPLOYMENT_MODE_KNATIVE,
    DEPLOYMENT_MODE_STANDARD,
    DEPLOYMENT_MODES,
    INFERENCE_SERVICE_KIND,
    KSERVE_API_VERSION,
    LINEAGE_ANNOTATION_PREFIX,
    PREDICTOR_CONTAINER_NAME,
    PROTOCOL_VERSIONS,
    SCALE_METRICS_KNATIVE,
    SCALE_METRICS_STANDARD,
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
"""The run's UUID (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`): what `kfp run get` and the KFP API take."""
LINEAGE_RUN_NAME = f"{LINEAGE_ANNOTATION_PREFIX}pipeline-run-name"
"""The run's display name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`, which KFP 2.17's driver resolves to the display
name, backend/src/v2/driver/resolve.go): what the KFP UI lists."""
LINEAGE_MODEL_SHA256 = f"{LINEAGE_ANNOTATION_PREFIX}model-sha256"
LINEAGE_DATA_FINGERPRINT = f"{LINEAGE_ANNOTATION_PREFIX}training-data-fingerprint"
LINEAGE_SKLEARN_VERSION = f"{LINEAGE_ANNOTATION_PREFIX}sklearn-version"
LINEAGE_MODEL_FAMILY = f"{LINEAGE_ANNOTATION_PREFIX}model-family"
LINEAGE_METRIC_PREFIX = f"{LINEAGE_ANNOTATION_PREFIX}metric-"
LINEAGE_ROLLOUT_ID = f"{LINEAGE_ANNOTATION_PREFIX}rollout-id"
"""sha256 (16 hex digits) of the predictor spec and lineage one deploy wrote. KServe copies InferenceService and
predictor annotations into the predictor Deployment's pod template (components/predictor.go, buildObjectMeta), so
the deploy step finds its own Deployment revision and pods by this value (cluster.wait_for_rollout)."""
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SCALING_FIELDS = ("minReplicas", "maxReplicas", "scaleMetric", "scaleTarget", "autoScaling")
"""Fields KServe's webhook refuses on a canary predictor: it runs fixed replicas (inference_service_validation.go)."""


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


def lineage_annotations(
    card: ModelCard, *, run_id: str, metrics: Mapping[str, float], run_name: str = ""
) -> dict[str, str]:
    """Annotations that tie a live InferenceService to the run, the model bytes and the data it came from.

    Args:
        card: The model card of the deployed model.
        run_id: The KFP run's UUID (`dsl.PIPELINE_JOB_ID_PLACEHOLDER` resolved at run time).
        metrics: Evaluation metrics to record (e.g. accuracy); non-finite values are written as text.
        run_name: The run's display name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`); empty: not recorded.

    Returns:
        Annotation key -> value, every value a string as Kubernetes requires.
    """
    annotations = {
        LINEAGE_RUN_ID: run_id,
        **({LINEAGE_RUN_NAME: run_name} if run_name else {}),
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


def predictor_deployment_name(isvc_name: str, predictor_name: str = "") -> str:
    """The Deployment (and Service) KServe's Standard mode runs a predictor as.

    `<isvc>-predictor`, or `<isvc>-<name>-predictor` for a named (canary) predictor (pkg/constants/constants.go,
    PredictorServiceName).
    """
    return f"{isvc_name}-{predictor_name}-predictor" if predictor_name else f"{isvc_name}-predictor"


def predictor_pod_selector(deployment_name: str) -> str:
    """Label selector of that Deployment's pods: `app=isvc.<deployment>` (constants.go, GetRawServiceLabel)."""
    return f"app=isvc.{deployment_name}"


def resource_requirements(
    *, cpu_request: str = "", memory_request: str = "", cpu_limit: str = "", memory_limit: str = ""
) -> dict[str, dict[str, str]] | None:
    """Container `resources` holding only the values given, or None when none is.

    KServe merges the InferenceService's container into the ServingRuntime's key by key, the InferenceService
    winning, so an unset value keeps the runtime's (the kind overlay's 50m/128Mi, for instance).

    Raises:
        InferenceServiceSpecError: A value that is not a Kubernetes quantity.
    """
    given = {
        ("requests", "cpu"): cpu_request,
        ("requests", "memory"): memory_request,
        ("limits", "cpu"): cpu_limit,
        ("limits", "memory"): memory_limit,
    }
    resources: dict[str, dict[str, str]] = {}
    for (section, resource), raw in given.items():
        value = str(raw).strip()
        if not value:
            continue
        if not _QUANTITY.match(value):
            raise InferenceServiceSpecError(
                f"{resource} {section[:-1]} {raw!r} is not a Kubernetes quantity (e.g. 100m, 0.5, 256Mi, 1Gi)"
            )
        resources.setdefault(section, {})[resource] = value
    return resources or None


def _check_int(kind: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        upper = f" to {high}" if high is not None else " or more"
        raise InferenceServiceSpecError(f"{kind} must be an integer from {low}{upper}, not {value!r}")
    return value


def _scaling(
    deployment_mode: str,
    min_replicas: int,
    max_replicas: int,
    scale_metric: str | None,
    scale_target: int | None,
) -> dict[str, Any]:
    """The predictor's scaling fields, checked the way KServe's webhook and autoscalers read them."""
    knative = deployment_mode == DEPLOYMENT_MODE_KNATIVE
    # Standard mode has no scale-from-zero; Knative scales to zero with minReplicas 0.
    _check_int("min_replicas", min_replicas, 0 if knative else 1)
    _check_int("max_replicas", max_replicas, max(min_replicas, 1))
    metrics = SCALE_METRICS_KNATIVE if knative else SCALE_METRICS_STANDARD
    metric = scale_metric or metrics[0]
    if metric not in metrics:
        raise InferenceServiceSpecError(
            f"scale_metric {metric!r} does not work in {deployment_mode} mode; choose one of {', '.join(metrics)}"
        )
    fields: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas, "scaleMetric": metric}
    if scale_target is None and metric == DEFAULT_SCALE_METRIC:
        scale_target = DEFAULT_SCALE_TARGET
    if scale_target is not None:
        # HPA utilisation is a percentage of the request (webhook: "should be a [1-100] integer").
        fields["scaleTarget"] = _check_int("scale_target", scale_target, 1, 100 if metric == "cpu" else None)
    return fields


def check_scaling_options(
    *,
    min_replicas: int = DEFAULT_MIN_REPLICAS,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    scale_metric: str | None = None,
    scale_target: int | None = None,
    cpu_request: str = "",
    memory_request: str = "",
    cpu_limit: str = "",
    memory_limit: str = "",
    deployment_mode: str = DEPLOYMENT_MODE_STANDARD,
) -> None:
    """Refuse, in one line, scaling and resource values the builder would refuse at deploy time (for pre-flight).

    Raises:
        InferenceServiceSpecError: The first bad value, named.
    """
    _scaling(deployment_mode, min_replicas, max_replicas, scale_metric, scale_target)
    resource_requirements(
        cpu_request=cpu_request, memory_request=memory_request, cpu_limit=cpu_limit, memory_limit=memory_limit
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
    min_replicas: int = DEFAULT_MIN_REPLICAS,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    scale_metric: str | None = None,
    scale_target: int | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the InferenceService that serves one scikit-learn model directory.

    Args:
        name: InferenceService name (DNS-1035, short enough for "<name>-canary-predictor").
        namespace: Namespace of the models (`constants.DEFAULT_NAMESPACE` on our clusters).
        storage_uri: Where the model directory lives (see `storage_uri_from_artifact`).
        runtime: The ServingRuntime to use; ours serves `modelFormat: sklearn` with the project image.
        service_account: Predictor service account holding the object-store Secret (None: namespace default).
        resources: Container `requests`/`limits` (see `resource_requirements`). None: the ServingRuntime's, which
            the overlays size for kind/minikube; any value given here wins over the runtime's.
        annotations: Extra metadata annotations, typically `lineage_annotations(...)`.
        protocol_version: `v1` or `v2`; our runtime serves both on the same port.
        canary_traffic_percent: 1-99 to send only part of the traffic to this model. In Knative mode this is
            `predictor.canaryTrafficPercent`; in Standard mode KServe ignores that field, so the builder records
            the wish in an annotation and `cluster` turns it into a `spec.canary` entry beside the live
            predictor (the only place that knows what is live).
        deployment_mode: `Standard` (plain Deployment + Service + HPA) or `Knative`, set per object by annotation.
        logger: `spec.predictor.logger` (payload logging, see `components.payload_log.logger_spec`).
        min_replicas: Fewest predictor pods (Standard: at least 1; Knative: 0 scales to zero when idle).
        max_replicas: Most predictor pods (at least `min_replicas`).
        scale_metric: Standard (HPA): `cpu` (default) or `memory`; Knative: `concurrency` (default) or `rps`.
        scale_target: The metric's target: percent of the request for cpu/memory (default 80 for cpu, KServe's
            own), requests in flight or per second per pod in Knative (default: Knative's).
        env: Extra environment of the model server container, e.g. the model digest pin.

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
    scaling = _scaling(deployment_mode, min_replicas, max_replicas, scale_metric, scale_target)

    model: dict[str, Any] = {
        "modelFormat": {"name": SKLEARN_MODEL_FORMAT, "version": SKLEARN_MODEL_FORMAT_VERSION},
        "runtime": runtime,
        "protocolVersion": protocol_version,
        "storageUri": storage_uri,
    }
    if resources:
        model["resources"] = {section: dict(values) for section, values in resources.items()}
    if env:
        # KServe merges these into the runtime container's env by name (the InferenceService's value wins).
        model["env"] = [{"name": key, "value": str(value)} for key, value in env.items()]
    predictor: dict[str, Any] = {
        **scaling,
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


def is_lineage_annotation(key: str) -> bool:
    """Whether `key` is one of the deploy step's own annotations (lineage, rollout id; not the canary request)."""
    return key.startswith(LINEAGE_ANNOTATION_PREFIX) and key != CANARY_ANNOTATION


def rollout_id(predictor: Mapping[str, Any], annotations: Mapping[str, str]) -> str:
    """A short sha256 over what one deploy puts into a predictor's pod template (spec and lineage)."""
    content = {
        "predictor": {k: v for k, v in predictor.items() if k != "annotations"},
        "predictor_annotations": {
            k: v for k, v in (predictor.get("annotations") or {}).items() if k != LINEAGE_ROLLOUT_ID
        },
        "annotations": {k: v for k, v in annotations.items() if k not in (LINEAGE_ROLLOUT_ID, CANARY_ANNOTATION)},
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def with_standard_canary(
    manifest: Mapping[str, Any],
    *,
    stable_predictor: Mapping[str, Any],
    traffic_percent: int,
    stable_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Turn a built InferenceService into a Standard-mode canary rollout beside the live predictor.

    KServe >= 0.20 runs each `spec.canary[]` predictor as its own Deployment ("<isvc>-<name>-predictor") and
    splits traffic by `trafficPercent` (weighted routes need the Gateway API; without it the canary still runs
    and is reachable on its own Service). Re-deploying without a canary promotes the new model to 100%.

    KServe copies the InferenceService's annotations into the *stable* predictor's pod template too
    (components/predictor.go, buildObjectMeta), so the new model's lineage goes on the canary predictor's own
    `annotations` (which win over the InferenceService's in the canary's pods) and the InferenceService keeps
    `stable_annotations`: the stable pods are not restarted, and the payload logger keeps tagging stable traffic
    with the stable model's sha256.

    Args:
        manifest: Output of `build_inference_service` (its predictor is the new model).
        stable_predictor: `spec.predictor` of the live InferenceService, kept as the primary.
        traffic_percent: Share of traffic for the new model, 1-99.
        stable_annotations: The live InferenceService's annotations (None: the manifest's, without lineage).

    Returns:
        A new dict; `manifest` is not modified.
    """
    if isinstance(traffic_percent, bool) or not isinstance(traffic_percent, int) or not 0 < traffic_percent < 100:
        raise InferenceServiceSpecError(
            f"canary traffic percent must be an integer from 1 to 99, not {traffic_percent!r}"
        )
    result = copy.deepcopy(dict(manifest))
    new_annotations = result["metadata"].get("annotations") or {}
    new_predictor = result["spec"]["predictor"]
    new_predictor["name"] = CANARY_PREDICTOR_NAME
    # Unlike spec.predictor, the canary schema requires the container name of predictor.model.
    new_predictor["model"]["name"] = PREDICTOR_CONTAINER_NAME
    for scaling_field in _SCALING_FIELDS:
        new_predictor.pop(scaling_field, None)
    lineage = {k: v for k, v in new_annotations.items() if is_lineage_annotation(k)}
    if lineage:
        new_predictor["annotations"] = {**(new_predictor.get("annotations") or {}), **lineage}
    if stable_annotations is None:
        stable_annotations = {
            k: v for k, v in new_annotations.items() if not is_lineage_annotation(k) and k != CANARY_ANNOTATION
        }
    result["metadata"]["annotations"] = dict(stable_annotations)
    result["spec"]["predictor"] = copy.deepcopy(dict(stable_predictor))
    result["spec"]["canary"] = [{"predictor": new_predictor, "trafficPercent": traffic_percent}]
    return result


def with_model_version(
    live: Mapping[str, Any], *, storage_uri: str, env: Mapping[str, str], lineage: Mapping[str, str]
) -> dict[str, Any]:
    """The manifest that serves another model version in place of the live InferenceService's (promote, rollback).

    Only the model changes: `storageUri`, the digest pin in the container env and the lineage annotations are the
    recorded version's; everything else (runtime, scaling, resources, logger, service account, other tools'
    annotations and labels) stays as it is live. A canary, if any, is dropped: the chosen version takes all the
    traffic.

    Args:
        live: The InferenceService as the API server returned it.
        storage_uri: The recorded version's immutable model directory (e.g. its run's `s3://` artifact).
        env: Container env to set, by name (the digest pin `MODEL_DIGEST`/`MODEL_VERSION`); other env entries stay.
        lineage: The recorded version's lineage annotations; the live ones are replaced.

    Returns:
        A manifest for `cluster.deploy_inference_service` (no status, no server-set metadata).
    """
    scheme = storage_uri.partition("://")[0]
    if scheme not in STORAGE_URI_SCHEMES or "://" not in storage_uri:
        raise InferenceServiceSpecError(f"recorded storageUri {storage_uri!r} is not a URI KServe can fetch")
    metadata = live.get("metadata") or {}
    spec = copy.deepcopy(dict(live.get("spec") or {}))
    spec.pop("canary", None)
    model = spec["predictor"]["model"]
    model["storageUri"] = storage_uri
    entries = [e for e in model.get("env") or [] if e.get("name") not in env]
    model["env"] = entries + [{"name": key, "value": str(value)} for key, value in env.items()]
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items() if not k.startswith(LINEAGE_ANNOTATION_PREFIX)
    }
    # The rollout id is deploy's own: it recomputes it for the spec it writes.
    annotations.update({k: str(v) for k, v in lineage.items() if is_lineage_annotation(k) and k != LINEAGE_ROLLOUT_ID})
    return {
        "apiVersion": KSERVE_API_VERSION,
        "kind": INFERENCE_SERVICE_KIND,
        "metadata": {
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "labels": dict(metadata.get("labels") or {}),
            "annotations": annotations,
        },
        "spec": spec,
    }
