"""The deploy step: one entry point over the two targets, `local` and `kubernetes`."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.constants import (
    ACTION_FAILED,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALE_METRIC,
    DEFAULT_SCALE_TARGET,
    DEPLOY_TARGET_LOCAL,
    DEPLOY_TARGETS,
    LOCAL_STORE_PVC,
    MODEL_DIGEST_ENV,
    MODEL_READER_SERVICE_ACCOUNT,
    MODEL_VERSION_ENV,
)


@dataclass(frozen=True)
class DeployOutcome:
    """What the deploy step reports: where to call the model, its state, and the manifest for the cluster."""

    endpoint: str
    status: str
    manifest: dict[str, Any]

    @property
    def manifest_yaml(self) -> str:
        """The InferenceService as YAML, for the step's manifest artifact and for `kubectl apply -f`."""
        import yaml

        return yaml.safe_dump(self.manifest, sort_keys=False)


def deploy_model(
    target: str,
    model_dir: Path,
    *,
    model_uri: str,
    model_name: str,
    namespace: str,
    local_store: Path,
    run_id: str,
    metrics: Mapping[str, float],
    service_account: str | None = None,
    timeout_seconds: float = 600.0,
    payload_logger_url: str = "",
    run_name: str = "",
    expected_digest: str | None = None,
    min_replicas: int = DEFAULT_MIN_REPLICAS,
    max_replicas: int = DEFAULT_MAX_REPLICAS,
    scale_metric: str = DEFAULT_SCALE_METRIC,
    scale_target: int = DEFAULT_SCALE_TARGET,
    cpu_request: str = "",
    memory_request: str = "",
    cpu_limit: str = "",
    memory_limit: str = "",
    poll_interval_seconds: float = 5.0,
) -> DeployOutcome:
    """Deploy the verified model directory to `target`.

    Args:
        target: `local` (publish to the local model store that `pipeline.py serve` reads) or `kubernetes`
            (create or patch a KServe InferenceService and wait until it answers).
        model_dir: The `Input[Model]` directory.
        model_uri: The artifact's URI (an object-store URI on a cluster, a path under `kfp.local`).
        model_name: InferenceService and V1 model name.
        namespace: Namespace of the InferenceService.
        local_store: Root of the local model store (local target only).
        run_id: The run's UUID (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), recorded as lineage.
        metrics: Evaluation metrics, recorded as lineage.
        service_account: Predictor service account holding the object-store credentials (kubernetes target;
            default `constants.MODEL_READER_SERVICE_ACCOUNT`, which `manifests/base` creates).
        timeout_seconds: How long to wait for the InferenceService to become ready (kubernetes target).
        payload_logger_url: KServe logger sink for request/response payloads (kubernetes target; empty: none).
        run_name: The run's display name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`), lineage beside the run id.
        expected_digest: The digest train recorded (Model artifact metadata `model_digest`); the directory must
            match it. None: computed here. Either way it is pinned where the server checks it before loading: the
            local store's pointer, or the InferenceService's env `MODEL_DIGEST` (a bucket writer cannot change it).
        min_replicas: Fewest predictor pods (kubernetes target; Standard mode: at least 1).
        max_replicas: Most predictor pods; KServe's HPA scales between the two (kubernetes target).
        scale_metric: What the HPA scales on, `cpu` or `memory` (kubernetes target).
        scale_target: Target utilisation of the request, in percent (kubernetes target).
        cpu_request: Model server CPU request, e.g. `100m`; empty keeps the ServingRuntime's (the overlay's).
        memory_request: Memory request, e.g. `256Mi`; empty keeps the runtime's.
        cpu_limit: CPU limit; empty keeps the runtime's.
        memory_limit: Memory limit; empty keeps the runtime's.
        poll_interval_seconds: Pause between status reads while waiting (kubernetes target).
    """
    import sklearn

    from components.deploy.inference_service import (
        build_inference_service,
        lineage_annotations,
        resource_requirements,
        storage_uri_from_artifact,
    )
    from components.model_artifact import directory_digest, verify_model_dir, version_id
    from components.payload_log import logger_spec

    if target not in DEPLOY_TARGETS:
        raise ValueError(f"unknown deploy_target '{target}'; choose one of: {', '.join(DEPLOY_TARGETS)}")
    digest = expected_digest or directory_digest(model_dir)
    card = verify_model_dir(model_dir, expected_digest=digest)
    annotations = lineage_annotations(card, run_id=run_id, run_name=run_name, metrics=metrics)
    pin = {MODEL_DIGEST_ENV: digest, MODEL_VERSION_ENV: version_id(digest)}
    if target == DEPLOY_TARGET_LOCAL:
        from components.deploy.local_store import publish

        deployment = publish(
            model_dir,
            local_store,
            model_name=model_name,
            run_id=run_id,
            run_name=run_name,
            metrics=metrics,
            expected_sklearn=sklearn.__version__,
            expected_digest=digest,
        )
        # The manifest a cluster would apply to serve this same version from a volume holding the store.
        manifest = build_inference_service(
            name=model_name,
            namespace=namespace,
            storage_uri=f"pvc://{LOCAL_STORE_PVC}/{model_name}/{deployment.version}",
            annotations=annotations,
            env=pin,
        )
        endpoint = f"http://{DEFAULT_HOST}:{DEFAULT_HTTP_PORT}/v1/models/{model_name}:predict"
        return DeployOutcome(endpoint=endpoint, status=f"published {deployment.model_dir}", manifest=manifest)

    from components.deploy.cluster import DeployError, deploy_inference_service, kube_api_client
    from components.deploy.cluster_versions import record_deploy

    manifest = build_inference_service(
        name=model_name,
        namespace=namespace,
        storage_uri=storage_uri_from_artifact(model_uri),
        # Without it the storage initializer has no credentials for KFP's object store.
        service_account=service_account or MODEL_READER_SERVICE_ACCOUNT,
        annotations=annotations,
        logger=logger_spec(payload_logger_url) if payload_logger_url else None,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_metric=scale_metric,
        scale_target=scale_target,
        resources=resource_requirements(
            cpu_request=cpu_request, memory_request=memory_request, cpu_limit=cpu_limit, memory_limit=memory_limit
        ),
        # The server refuses a model directory whose digest differs (checked before anything is unpickled).
        env=pin,
    )
    api_client = kube_api_client()
    smoke = smoke_instances(card)
    try:
        result = deploy_inference_service(
            manifest,
            card=card,
            timeout_seconds=timeout_seconds,
            runtime_sklearn_version=sklearn.__version__,
            smoke_instances=smoke,
            api_client=api_client,
            poll_interval_seconds=poll_interval_seconds,
        )
    except DeployError as exc:
        if exc.rolled_back:  # it was written, failed and undone: `models list` shows it as failed
            with contextlib.suppress(DeployError):  # the deploy's own error is the one to report
                record_deploy(api_client, manifest, metrics=metrics, smoke_instances=smoke, action=ACTION_FAILED)
        raise
    # Only a version that served its smoke test is recorded: promote and rollback may return to it.
    try:
        record_deploy(api_client, manifest, metrics=metrics, smoke_instances=smoke)
    except DeployError as exc:
        raise type(exc)(
            f"{namespace}/{model_name} now serves version {version_id(digest)} ({result.action}), but its version "
            f"record was not written: {exc}"
        ) from exc
    return DeployOutcome(endpoint=result.url, status=result.action, manifest=manifest)


def smoke_instances(card: Any) -> list[list[Any]]:
    """One row the model must answer: 0.0 for a numeric feature, the first known category for a categorical one.

    Cards of schema 1 list names only (every feature numeric); newer cards describe each feature (`features`).
    """
    features = getattr(card, "features", None) or []
    if not features:
        return [[0.0] * len(card.feature_names)]
    row: list[Any] = []
    for feature in features:
        categories = list(getattr(feature, "categories", None) or [])
        row.append((categories[0] if categories else "") if getattr(feature, "kind", "") == "categorical" else 0.0)
    return [row]
