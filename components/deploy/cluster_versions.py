"""Model versions on a cluster: the record in Kubernetes itself, promote and rollback through deploy's own path.

The record is ConfigMap `<model>-versions` in the model's namespace, key `history.jsonl`: one JSON record per deploy,
promotion and rollback, oldest first, the same history the local store keeps (`versions` derives the states).
Helm keeps its release history the same way, in the release's namespace (its `configmap`/`secret` storage
drivers), and needs no server of its own; here no extra object per version is needed because each record is small.
The InferenceService stays the truth about what is live: its digest pin (`MODEL_DIGEST`) names the live version,
and its lineage annotations say where it came from.

Every record keeps what a rollback needs without the model directory at hand: the immutable `storageUri` of the
run's artifact, the digest the server checks, the lineage annotations, the scikit-learn version and the smoke-test
rows. Promote and rollback call `cluster.deploy_inference_service` with the live InferenceService pointed back at
that `storageUri` (`inference_service.with_model_version`): the same patch, wait for the new pods, smoke predict
and restore-on-failure as a deploy, then append the record. A failed switch leaves the record unchanged.

Writes are read-modify-write with the ConfigMap's `resourceVersion` (a concurrent writer gets 409 and this code
reads again), so two deploys never lose each other's line. The deployer Role grants `get`, `create` and `update`
on ConfigMaps in the models namespace, nothing more (manifests/base/rbac.yaml).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

from components.constants import (
    ACTION_DEPLOY,
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    MODEL_DIGEST_ENV,
    MODEL_VERSION_ENV,
    VERSIONS_CONFIGMAP_KEY,
    VERSIONS_CONFIGMAP_MAX_BYTES,
    VERSIONS_CONFIGMAP_SUFFIX,
)
from components.deploy.inference_service import (
    LINEAGE_DATA_FINGERPRINT,
    LINEAGE_METRIC_PREFIX,
    LINEAGE_MODEL_SHA256,
    LINEAGE_ROLLOUT_ID,
    LINEAGE_RUN_ID,
    LINEAGE_RUN_NAME,
    LINEAGE_SKLEARN_VERSION,
    is_lineage_annotation,
)
from components.deploy.versions import (
    VersionError,
    VersionSummary,
    resolve_version,
    rollback_target,
    summarize,
)

_WRITE_ATTEMPTS = 5
"""Read-modify-write rounds before giving up on a ConfigMap other writers keep changing."""


@dataclass(frozen=True)
class ClusterVersion:
    """One record of the version history on a cluster (one line of the ConfigMap)."""

    model_name: str
    version: str
    digest: str
    """`sha256:<hex>` over the model directory: the pin the server checks (env `MODEL_DIGEST`)."""
    storage_uri: str
    """The model directory KServe fetches; a KFP artifact path, never rewritten, so it still holds this version."""
    model_sha256: str
    sklearn_version: str
    training_data_fingerprint: str
    metrics: dict[str, float]
    run_id: str
    run_name: str
    deployed_at: str
    action: str
    smoke_instances: list[list[Any]] = field(default_factory=list)
    """The rows deploy smoke-tested this version with; promote and rollback send the same."""
    annotations: dict[str, str] = field(default_factory=dict)
    """The lineage annotations it was deployed with, restored as they were on promote and rollback."""

    def to_line(self) -> str:
        """The record as one JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_line(cls, line: str) -> ClusterVersion:
        """Parse one line (fields unknown to this version of the code are ignored)."""
        raw = json.loads(line)
        if not isinstance(raw, dict):
            raise ValueError("a record must be a JSON object")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def config_map_name(model_name: str) -> str:
    """The ConfigMap holding `model_name`'s history (`<model>-versions`; model names are at most 46 characters)."""
    return f"{model_name}{VERSIONS_CONFIGMAP_SUFFIX}"


def _env(obj: Mapping[str, Any]) -> dict[str, str]:
    model = ((obj.get("spec") or {}).get("predictor") or {}).get("model") or {}
    return {str(e.get("name")): str(e.get("value", "")) for e in model.get("env") or []}


def version_from_inference_service(
    obj: Mapping[str, Any],
    *,
    action: str = ACTION_DEPLOY,
    metrics: Mapping[str, float] | None = None,
    smoke_instances: Sequence[Sequence[Any]] = (),
) -> ClusterVersion | None:
    """The version an InferenceService serves, read from its digest pin, `storageUri` and lineage annotations.

    Args:
        obj: The InferenceService (a manifest or as the API server returns it).
        action: What to record as the event.
        metrics: The metrics by their own names (deploy has them); None: parsed from the metric annotations.
        smoke_instances: The rows the deploy smoke-tested with.

    Returns:
        The version, or None when the object carries no digest pin (not deployed by this project).
    """
    env = _env(obj)
    digest = env.get(MODEL_DIGEST_ENV)
    if not digest:
        return None
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    lineage = {k: str(v) for k, v in annotations.items() if is_lineage_annotation(k) and k != LINEAGE_ROLLOUT_ID}
    if metrics is None:
        metrics = {}
        for key, value in lineage.items():
            if key.startswith(LINEAGE_METRIC_PREFIX):
                try:
                    metrics[key[len(LINEAGE_METRIC_PREFIX) :]] = float(value)
                except ValueError:
                    continue
    model = obj["spec"]["predictor"]["model"]
    return ClusterVersion(
        model_name=str(obj["metadata"]["name"]),
        version=env.get(MODEL_VERSION_ENV) or digest.partition(":")[2][:12],
        digest=digest,
        storage_uri=str(model.get("storageUri", "")),
        model_sha256=lineage.get(LINEAGE_MODEL_SHA256, ""),
        sklearn_version=lineage.get(LINEAGE_SKLEARN_VERSION, ""),
        training_data_fingerprint=lineage.get(LINEAGE_DATA_FINGERPRINT, ""),
        metrics={k: float(v) for k, v in metrics.items() if math.isfinite(float(v))},
        run_id=lineage.get(LINEAGE_RUN_ID, ""),
        run_name=lineage.get(LINEAGE_RUN_NAME, ""),
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        action=action,
        smoke_instances=[list(row) for row in smoke_instances],
        annotations=lineage,
    )


def _api(api_client: Any, namespace: str, model_name: str) -> Any:
    from components.deploy.cluster import _KubeApi, kube_api_client

    return _KubeApi(api_client if api_client is not None else kube_api_client(), namespace, model_name)


def _parse_history(config_map: Mapping[str, Any] | None, where: str) -> list[ClusterVersion]:
    text = ((config_map or {}).get("data") or {}).get(VERSIONS_CONFIGMAP_KEY, "")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(ClusterVersion.from_line(line))
        except (ValueError, TypeError) as exc:
            raise VersionError(f"ConfigMap {where} line {number} is not a version record ({exc})") from None
    return records


def read_history(api: Any, model_name: str) -> list[ClusterVersion]:
    """The records of `model_name`, oldest first (empty when nothing was recorded yet)."""
    name = config_map_name(model_name)
    return _parse_history(api.config_map(name), f"{api.namespace}/{name}")


def _trimmed(lines: list[str]) -> list[str]:
    """The newest lines that fit in `VERSIONS_CONFIGMAP_MAX_BYTES` (a ConfigMap holds at most 1 MiB)."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line.encode()) + 1
        if size > VERSIONS_CONFIGMAP_MAX_BYTES and kept:
            break
        kept.append(line)
    return list(reversed(kept))


def append_record(api: Any, record: ClusterVersion) -> None:
    """Append `record` to its model's ConfigMap (created on first use), retrying when another writer got there first.

    Raises:
        DeployForbiddenError: RBAC denies the ConfigMap verbs (the message names the Role).
        DeployError: Any other API failure, or a ConfigMap that keeps changing under us.
    """
    from kubernetes.client.exceptions import ApiException

    from components.deploy.cluster import DeployError

    name = config_map_name(record.model_name)
    for _ in range(_WRITE_ATTEMPTS):
        existing = api.config_map(name)
        lines = [ln for ln in ((existing or {}).get("data") or {}).get(VERSIONS_CONFIGMAP_KEY, "").splitlines() if ln]
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": api.namespace,
                "labels": {
                    "app.kubernetes.io/part-of": "kfp-sklearn-kserve",
                    "app.kubernetes.io/component": "model-versions",
                    "serving.kserve.io/inferenceservice": record.model_name,
                },
            },
            "data": {VERSIONS_CONFIGMAP_KEY: "\n".join(_trimmed([*lines, record.to_line()])) + "\n"},
        }
        if existing is not None:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        try:
            api.write_config_map(body, create=existing is None)
            return
        except ApiException:  # 409: written (or created) by someone else since our read
            continue
    raise DeployError(
        f"ConfigMap {api.namespace}/{name} kept changing; the version record of {record.version} was not written"
    )


def record_deploy(
    api_client: Any,
    manifest: Mapping[str, Any],
    *,
    metrics: Mapping[str, float],
    smoke_instances: Sequence[Sequence[Any]],
    action: str = ACTION_DEPLOY,
) -> ClusterVersion:
    """Record a deploy of `manifest`: a success once the smoke test passed, or a failed, undone one (`failed`)."""
    record = version_from_inference_service(manifest, action=action, metrics=metrics, smoke_instances=smoke_instances)
    if record is None:
        raise ValueError("the manifest carries no digest pin (env MODEL_DIGEST): build it with deploy_model")
    metadata = manifest["metadata"]
    append_record(_api(api_client, metadata["namespace"], metadata["name"]), record)
    return record


def _live(api: Any) -> tuple[dict[str, Any], ClusterVersion | None]:
    obj = api.get()
    if obj is None:
        raise VersionError(
            f"no InferenceService {api.namespace}/{api.name}: nothing is deployed under that name (check "
            "--model-name and --namespace)"
        )
    return obj, version_from_inference_service(obj)


def live_version(namespace: str, model_name: str, *, api_client: Any = None) -> ClusterVersion | None:
    """The version the InferenceService serves now (the champion), or None when there is no InferenceService."""
    api = _api(api_client, namespace, model_name)
    obj = api.get()
    return version_from_inference_service(obj) if obj is not None else None


def list_versions(namespace: str, model_name: str, *, api_client: Any = None) -> list[VersionSummary[ClusterVersion]]:
    """Every recorded version, newest first; live is what the InferenceService's digest pin names."""
    api = _api(api_client, namespace, model_name)
    _, live = _live(api)
    return summarize(read_history(api, model_name), live.version if live else None)


def _switch(
    namespace: str,
    model_name: str,
    choose: Any,
    *,
    action: str,
    api_client: Any,
    timeout_seconds: float,
    smoke_base_url: str | None,
    **deploy_options: Any,
) -> tuple[ClusterVersion, bool]:
    import sklearn

    from components.deploy.cluster import deploy_inference_service
    from components.deploy.inference_service import with_model_version

    api = _api(api_client, namespace, model_name)
    obj, live = _live(api)
    records = read_history(api, model_name)
    version = choose(records, live.version if live else None)
    target = next(r for r in reversed(records) if r.version == version)
    if live is not None and live.version == version:
        return target, False
    manifest = with_model_version(
        obj,
        storage_uri=target.storage_uri,
        env={MODEL_DIGEST_ENV: target.digest, MODEL_VERSION_ENV: target.version},
        lineage=target.annotations,
    )
    deploy_inference_service(
        manifest,
        card=target,
        timeout_seconds=timeout_seconds,
        runtime_sklearn_version=sklearn.__version__,
        smoke_instances=target.smoke_instances or None,
        api_client=api.api_client,
        smoke_base_url=smoke_base_url,
        **deploy_options,
    )
    switched = replace(target, deployed_at=datetime.now(UTC).isoformat(timespec="seconds"), action=action)
    append_record(api, switched)
    return switched, True


def promote(
    namespace: str,
    model_name: str,
    version: str,
    *,
    api_client: Any = None,
    timeout_seconds: float = 600.0,
    smoke_base_url: str | None = None,
    **deploy_options: Any,
) -> tuple[ClusterVersion, bool]:
    """Serve the recorded `version` (an id or an unambiguous prefix) exactly as deploy would, then record it.

    Args:
        namespace: The InferenceService's namespace.
        model_name: The InferenceService (and model) name.
        version: The version to make live.
        api_client: A `kubernetes.client.ApiClient`; None: in-cluster config, else the kubeconfig.
        timeout_seconds: Upper bound on waiting for the new pods.
        smoke_base_url: Where to send the smoke predict instead of the InferenceService's URL.
        **deploy_options: Passed to `cluster.deploy_inference_service` (poll and smoke intervals).

    Returns:
        The record written (or the live one), and whether anything changed (False: it was live already).

    Raises:
        UnknownVersionError: No recorded version matches.
        VersionError: No InferenceService of that name.
        DeployError: As from deploy (after restoring the version that was live).
    """
    return _switch(
        namespace,
        model_name,
        lambda records, _live: resolve_version(records, version, model_name=model_name),
        action=ACTION_PROMOTE,
        api_client=api_client,
        timeout_seconds=timeout_seconds,
        smoke_base_url=smoke_base_url,
        **deploy_options,
    )


def rollback(
    namespace: str,
    model_name: str,
    *,
    api_client: Any = None,
    timeout_seconds: float = 600.0,
    smoke_base_url: str | None = None,
    **deploy_options: Any,
) -> tuple[ClusterVersion, bool]:
    """Serve the newest earlier version that was not rolled back, exactly as deploy would, then record it.

    Arguments and errors as `promote`, plus `NothingToRollBackError` when no such version is recorded.
    """
    return _switch(
        namespace,
        model_name,
        lambda records, live: rollback_target(records, live, model_name=model_name),
        action=ACTION_ROLLBACK,
        api_client=api_client,
        timeout_seconds=timeout_seconds,
        smoke_base_url=smoke_base_url,
        **deploy_options,
    )
