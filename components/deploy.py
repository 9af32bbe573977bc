"""The deploy step: one entry point over the two targets, `local` and `kubernetes`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEPLOY_TARGET_LOCAL,
    DEPLOY_TARGETS,
    LOCAL_STORE_PVC,
    MODEL_READER_SERVICE_ACCOUNT,
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
        run_id: The pipeline run, recorded as lineage.
        metrics: Evaluation metrics, recorded as lineage.
        service_account: Predictor service account holding the object-store credentials (kubernetes target;
            default `constants.MODEL_READER_SERVICE_ACCOUNT`, which `manifests/base` creates).
        timeout_seconds: How long to wait for the InferenceService to become ready (kubernetes target).
        payload_logger_url: KServe logger sink for request/response payloads (kubernetes target; empty: none).
    """
    import sklearn

    from components.inference_service import (
        build_inference_service,
        lineage_annotations,
        storage_uri_from_artifact,
    )
    from components.model_artifact import verify_model_dir
    from components.monitoring.sink import logger_spec

    if target not in DEPLOY_TARGETS:
        raise ValueError(f"unknown deploy_target '{target}'; choose one of: {', '.join(DEPLOY_TARGETS)}")
    card = verify_model_dir(model_dir)
    annotations = lineage_annotations(card, run_id=run_id, metrics=metrics)
    if target == DEPLOY_TARGET_LOCAL:
        from components.local_store import publish

        deployment = publish(
            model_dir,
            local_store,
            model_name=model_name,
            run_id=run_id,
            metrics=metrics,
            expected_sklearn=sklearn.__version__,
        )
        # The manifest a cluster would apply to serve this same version from a volume holding the store.
        manifest = build_inference_service(
            name=model_name,
            namespace=namespace,
            storage_uri=f"pvc://{LOCAL_STORE_PVC}/{model_name}/{deployment.version}",
            annotations=annotations,
        )
        endpoint = f"http://{DEFAULT_HOST}:{DEFAULT_HTTP_PORT}/v1/models/{model_name}:predict"
        return DeployOutcome(endpoint=endpoint, status=f"published {deployment.model_dir}", manifest=manifest)

    from components.deploy_kubernetes import deploy_inference_service

    manifest = build_inference_service(
        name=model_name,
        namespace=namespace,
        storage_uri=storage_uri_from_artifact(model_uri),
        # Without it the storage initializer has no credentials for KFP's object store.
        service_account=service_account or MODEL_READER_SERVICE_ACCOUNT,
        annotations=annotations,
        logger=logger_spec(payload_logger_url) if payload_logger_url else None,
    )
    result = deploy_inference_service(
        manifest,
        card=card,
        timeout_seconds=timeout_seconds,
        runtime_sklearn_version=sklearn.__version__,
        smoke_instances=[[0.0] * len(card.feature_names)],
    )
    return DeployOutcome(endpoint=result.url, status=result.action, manifest=manifest)
