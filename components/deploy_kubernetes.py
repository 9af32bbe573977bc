"""Deploy backend `kubernetes`: write an InferenceService, wait until it serves, smoke-test it, roll back on failure.

The pipeline's last step calls `deploy_inference_service` with the dict that
`inference_service.build_inference_service` returns. It talks to the API server through the official `kubernetes`
client (CustomObjectsApi), so the same code runs in a pipeline pod (in-cluster config), from a laptop (kubeconfig)
and against the fake API server in tests/cluster/.
"""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from components.constants import (
    CANARY_ANNOTATION,
    CANARY_PREDICTOR_NAME,
    DEPLOYER_ROLE_BINDING_NAME,
    DEPLOYER_ROLE_NAME,
    INFERENCE_SERVICE_KIND,
    INFERENCE_SERVICE_PLURAL,
    KSERVE_API_VERSION,
    KSERVE_GROUP,
    KSERVE_VERSION,
    LINEAGE_ANNOTATION_PREFIX,
)
from components.inference_service import LINEAGE_MODEL_SHA256, with_standard_canary
from components.model_artifact import ModelCard

ACTION_CREATED = "created"
ACTION_PATCHED = "patched"
_API_REQUEST_TIMEOUT_SECONDS = 30.0
_RETRYABLE_SMOKE_STATUS = frozenset({404, 429, 502, 503, 504})
"""Right after Ready the route may still 404 (kserve/kserve#1658) and a rolling pod may 503."""
_FORBIDDEN_USER = re.compile(r'User "([^"]+)"')


class DeployError(RuntimeError):
    """The deploy step failed; the message says why and what to do. `rolled_back` says whether it undid its write."""

    def __init__(self, message: str, *, rolled_back: bool = False) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


class RuntimeVersionMismatchError(DeployError):
    """The model was pickled with another scikit-learn than the serving runtime has."""


class DeployForbiddenError(DeployError):
    """RBAC denied a request (HTTP 403)."""


class ModelLoadFailedError(DeployError):
    """KServe reported `status.modelStatus.lastFailureInfo` for the generation we wrote."""


class DeployTimeoutError(DeployError):
    """The InferenceService was not Ready for our generation before the timeout."""


class SmokeTestFailedError(DeployError):
    """The InferenceService was Ready but a V1 predict did not answer correctly."""


@dataclass(frozen=True)
class DeployResult:
    """What a successful deploy reports (also the pipeline step's outputs)."""

    name: str
    namespace: str
    url: str
    """Base URL the InferenceService reports (`status.address.url`, else `status.url`)."""
    ready: bool
    generation: int
    """`metadata.generation` of the spec this deploy wrote."""
    observed_generation: int
    action: str
    """`created` or `patched`."""
    resource_version: str
    predictions: list[Any] = field(default_factory=list)
    """The smoke test's V1 predictions (empty when no smoke instances were given)."""
    smoke_url: str = ""
    """Base URL the smoke predict went to (the reported URL unless one was injected; empty when skipped)."""
    canary_traffic_percent: int | None = None
    """Set when the new model went out as a Standard-mode canary beside the live predictor."""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for step outputs and logs."""
        return asdict(self)


def check_runtime_compatible(card: ModelCard, runtime_sklearn_version: str) -> None:
    """Refuse a model whose pickle was written by another scikit-learn than the runtime image has.

    Raises:
        RuntimeVersionMismatchError: With the two versions and the two ways to fix it.
    """
    if card.sklearn_version != runtime_sklearn_version:
        raise RuntimeVersionMismatchError(
            f"refusing to deploy: the model was trained with scikit-learn {card.sklearn_version} but the serving "
            f"runtime has scikit-learn {runtime_sklearn_version}, and a pickle is only safe to load where it was made. "
            "Retrain with the project image (its components and predictor share one scikit-learn), or rebuild the "
            f"image with scikit-learn=={card.sklearn_version} and pass that version as runtime_sklearn_version"
        )


def merge_patch(current: Any, desired: Any) -> Any:
    """RFC 7386 JSON merge patch that turns `current` into exactly `desired` (removed keys become null)."""
    if not isinstance(current, Mapping) or not isinstance(desired, Mapping):
        return copy.deepcopy(desired)
    patch: dict[str, Any] = {}
    for key in current:
        if key not in desired:
            patch[key] = None
    for key, value in desired.items():
        if key not in current:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(current[key], Mapping):
            sub = merge_patch(current[key], value)
            if sub:
                patch[key] = sub
        elif current[key] != value:
            patch[key] = copy.deepcopy(value)
    return patch


def kube_api_client(*, kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient for the current cluster: in-cluster config inside a pod, else the kubeconfig."""
    from kubernetes import client, config

    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    return client.ApiClient(configuration)


class _IsvcApi:
    """The four InferenceService calls the deploy step makes (the Role grants exactly these verbs)."""

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self._api = client.CustomObjectsApi(api_client)
        self.namespace = namespace
        self.name = name

    def _call(self, verb: str, func: Any, *args: Any) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return func(
                KSERVE_GROUP,
                KSERVE_VERSION,
                self.namespace,
                INFERENCE_SERVICE_PLURAL,
                *args,
                _request_timeout=_API_REQUEST_TIMEOUT_SECONDS,
            )
        except ApiException as exc:
            if exc.status == 403 and "admission webhook" in _api_message(exc):
                # KServe's validating webhook denies with 403 too; that is a bad spec, not missing RBAC.
                raise DeployError(
                    f"KServe refused to {verb} InferenceService {self.namespace}/{self.name}: {_api_message(exc)}"
                ) from exc
            if exc.status == 403:
                raise DeployForbiddenError(_forbidden_message(exc, verb, self.namespace)) from exc
            raise
        except urllib3.exceptions.HTTPError as exc:
            host = getattr(getattr(self._api, "api_client", None), "configuration", None)
            raise DeployError(
                f"could not reach the Kubernetes API{' at ' + host.host if host else ''} to {verb} "
                f"InferenceService {self.namespace}/{self.name}: {exc}"
            ) from exc

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(self._call("get", self._api.get_namespaced_custom_object, self.name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeployError(_api_error("read", self.namespace, self.name, exc)) from exc

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("create", self._api.create_namespaced_custom_object, body))

    def patch(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("patch", self._api.patch_namespaced_custom_object, self.name, body))

    def delete(self) -> None:
        self._call("delete", self._api.delete_namespaced_custom_object, self.name)


def _api_message(exc: Any) -> str:
    """The `message` of the API server's Status body, or "" when the body is not a Status."""
    try:
        return str(json.loads(exc.body).get("message", ""))
    except (TypeError, ValueError, AttributeError):
        return ""


def _api_error(action: str, namespace: str, name: str, exc: Any) -> str:
    message = _api_message(exc) or exc.reason
    hint = ""
    if exc.status == 404 and "namespaces" in str(message):
        hint = f"; create it first: kubectl apply -k manifests/overlays/kind (it makes namespace {namespace})"
    elif exc.status == 404:
        hint = "; is KServe installed (CRD inferenceservices.serving.kserve.io)?"
    elif exc.status == 422:
        hint = "; the InferenceService does not match KServe's schema"
    return f"could not {action} InferenceService {namespace}/{name}: HTTP {exc.status}: {message}{hint}"


def _forbidden_message(exc: Any, verb: str, namespace: str) -> str:
    api_message = _api_message(exc)
    match = _FORBIDDEN_USER.search(api_message)
    user = match.group(1) if match else "the pipeline run's service account"
    as_flag = f" --as={user}" if match else ""
    return (
        f"{user} may not {verb} inferenceservices.{KSERVE_GROUP} in namespace {namespace} (HTTP 403"
        f"{': ' + api_message if api_message else ''}). Grant it the Role {DEPLOYER_ROLE_NAME}: "
        f"`kubectl apply -k manifests/overlays/kind` (or overlays/minikube) creates the Role and RoleBinding "
        f"{DEPLOYER_ROLE_BINDING_NAME} for kubeflow/pipeline-runner; if runs use another service account, add it "
        f"as a subject of that RoleBinding (manifests/base/rbac.yaml). Check with: kubectl auth can-i {verb} "
        f"inferenceservices.{KSERVE_GROUP} -n {namespace}{as_flag}"
    )


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _failure_reason(status: Mapping[str, Any]) -> str | None:
    """The controller's own words when the model cannot load (kserve/kserve#1683: do not wait them out)."""
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo")
    if failure:
        parts = [str(failure.get(k)) for k in ("reason", "message") if failure.get(k)]
        return ": ".join(parts) or "lastFailureInfo set without a message"
    if (model_status.get("states") or {}).get("activeModelState") == "FailedToLoad":
        return "activeModelState is FailedToLoad"
    return None


def _describe(status: Mapping[str, Any]) -> str:
    parts = [f"observedGeneration={status.get('observedGeneration')}"]
    parts += [f"canary {c.get('name')} ready={c.get('ready')}" for c in status.get("canaryStatuses") or []]
    for condition in status.get("conditions") or []:
        text = f"{condition.get('type')}={condition.get('status')}"
        if condition.get("reason") or condition.get("message"):
            text += f" ({condition.get('reason') or ''} {condition.get('message') or ''})".replace("( ", "(")
        parts.append(text)
    return ", ".join(parts)


def _canary_status(status: Mapping[str, Any], canary_name: str) -> Mapping[str, Any] | None:
    for entry in status.get("canaryStatuses") or []:
        if entry.get("name") == canary_name:
            return entry
    return None


def wait_until_ready(
    isvc: _IsvcApi,
    *,
    generation: int,
    timeout_seconds: float,
    poll_interval_seconds: float,
    canary_name: str | None = None,
) -> dict[str, Any]:
    """Poll until `Ready=True` with `observedGeneration >= generation`; fail fast on a reported load failure.

    A Ready condition from before our write is ignored: it describes the old spec. KServe's `Ready` covers only
    the stable predictor, so with `canary_name` the canary's own entry in `status.canaryStatuses` must be ready too.

    Returns:
        The InferenceService as last read.
    """
    deadline = time.monotonic() + timeout_seconds
    last: dict[str, Any] = {}
    read_error = ""
    while True:
        try:
            obj = isvc.get()
        except DeployForbiddenError:
            raise
        except DeployError as exc:
            # A restarting API server or a dropped connection is not a failed deploy: keep polling until the deadline.
            obj, read_error = last, str(exc)
        else:
            read_error = ""
            if obj is None:
                raise DeployError(f"InferenceService {isvc.namespace}/{isvc.name} disappeared while waiting for it")
            last = obj
        status = obj.get("status") or {}
        observed = int(status.get("observedGeneration") or 0)
        if observed >= generation:
            canary = _canary_status(status, canary_name) if canary_name else None
            reason = _failure_reason(status)
            if canary is not None and reason is None:
                reason = _failure_reason(canary)
                reason = f"canary {canary_name}: {reason}" if reason else None
            if reason:
                raise ModelLoadFailedError(
                    f"InferenceService {isvc.namespace}/{isvc.name} failed to load the model: {reason}. "
                    f"Inspect: kubectl describe isvc {isvc.name} -n {isvc.namespace}; kubectl logs -n "
                    f"{isvc.namespace} -l serving.kserve.io/inferenceservice={isvc.name} -c storage-initializer"
                )
            ready = _condition(status, "Ready")
            stable_ready = ready is not None and str(ready.get("status")).lower() == "true"
            canary_ready = canary_name is None or (canary is not None and canary.get("ready") is True)
            if stable_ready and canary_ready:
                return obj
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_interval_seconds, max(0.0, deadline - time.monotonic())))
    raise DeployTimeoutError(
        f"InferenceService {isvc.namespace}/{isvc.name}{' (canary ' + canary_name + ')' if canary_name else ''} "
        f"was not Ready for generation {generation} within "
        f"{timeout_seconds:g}s; last status: {_describe(last.get('status') or {})}"
        f"{'; last read failed: ' + read_error if read_error else ''}. Common causes: image not loaded "
        "into the cluster (ErrImagePull), storage-initializer cannot reach the object store (NetworkPolicy or "
        "credentials), or too little CPU/memory to schedule the pod"
    )


def smoke_predict(
    base_url: str,
    model_name: str,
    instances: list[list[float]],
    *,
    attempts: int = 10,
    retry_interval_seconds: float = 2.0,
    request_timeout_seconds: float = 10.0,
) -> list[Any]:
    """POST a V1 predict to `{base_url}/v1/models/{model_name}:predict`, retrying while the route warms up.

    Returns:
        The `predictions` list, one per instance.

    Raises:
        SmokeTestFailedError: After `attempts` tries, or at once on an answer that retrying cannot fix.
    """
    url = f"{base_url.rstrip('/')}/v1/models/{model_name}:predict"
    payload = json.dumps({"instances": instances}).encode()
    problem = "no attempt made"
    for attempt in range(1, max(1, attempts) + 1):
        request = urllib.request.Request(  # noqa: S310 (the URL is http(s) by construction)
            url, data=payload, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=request_timeout_seconds) as response:  # noqa: S310
                body = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            problem = f"HTTP {exc.code} {detail}".strip()
            if exc.code not in _RETRYABLE_SMOKE_STATUS:
                raise SmokeTestFailedError(f"smoke predict {url} answered {problem}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            predictions = body.get("predictions") if isinstance(body, dict) else None
            if not isinstance(predictions, list) or len(predictions) != len(instances):
                raise SmokeTestFailedError(
                    f"smoke predict {url} answered {str(body)[:300]!r}: expected 'predictions' with "
                    f"{len(instances)} entries"
                )
            return predictions
        if attempt < attempts:
            time.sleep(retry_interval_seconds)
    raise SmokeTestFailedError(f"smoke predict {url} failed {attempts} times; last error: {problem}")


def _served_url(obj: Mapping[str, Any]) -> str:
    status = obj.get("status") or {}
    address = (status.get("address") or {}).get("url")
    return str(address or status.get("url") or "")


def _metadata_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Set our labels/annotations; drop only stale lineage annotations, never other tools' keys."""
    patch: dict[str, Any] = {"resourceVersion": current.get("resourceVersion")}
    labels = {k: v for k, v in (desired.get("labels") or {}).items() if (current.get("labels") or {}).get(k) != v}
    if labels:
        patch["labels"] = labels
    cur_ann = current.get("annotations") or {}
    want_ann = desired.get("annotations") or {}
    annotations: dict[str, Any] = {k: v for k, v in want_ann.items() if cur_ann.get(k) != v}
    for key in cur_ann:
        if key.startswith(LINEAGE_ANNOTATION_PREFIX) and key not in want_ann:
            annotations[key] = None
    if annotations:
        patch["annotations"] = annotations
    return patch


def _validate_manifest(manifest: Mapping[str, Any], card: ModelCard) -> tuple[str, str]:
    if manifest.get("apiVersion") != KSERVE_API_VERSION or manifest.get("kind") != INFERENCE_SERVICE_KIND:
        raise DeployError(
            f"manifest must be a {KSERVE_API_VERSION} {INFERENCE_SERVICE_KIND} (build it with build_inference_service)"
        )
    metadata = manifest.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not name or not namespace:
        raise DeployError("manifest needs metadata.name and metadata.namespace")
    recorded = (metadata.get("annotations") or {}).get(LINEAGE_MODEL_SHA256)
    if recorded is not None and recorded != card.model_sha256:
        raise DeployError(
            f"manifest records model sha256 {recorded[:12]}... but the model card says {card.model_sha256[:12]}...: "
            "the InferenceService would not serve the model that was evaluated"
        )
    return str(name), str(namespace)


def deploy_inference_service(
    manifest: Mapping[str, Any],
    *,
    card: ModelCard,
    timeout_seconds: float,
    runtime_sklearn_version: str,
    smoke_instances: list[list[float]] | None,
    api_client: Any = None,
    smoke_base_url: str | None = None,
    poll_interval_seconds: float = 5.0,
    smoke_attempts: int = 10,
    smoke_retry_interval_seconds: float = 2.0,
    rollback: bool = True,
) -> DeployResult:
    """Create or patch an InferenceService, wait until it serves this generation, smoke-test it, or roll back.

    Re-running with the same manifest is idempotent (a patch with no spec change keeps the generation). A manifest
    carrying the canary annotation (`build_inference_service(canary_traffic_percent=...)`) is deployed, when a
    live InferenceService exists, as a `spec.canary` entry beside the live predictor.

    Args:
        manifest: From `inference_service.build_inference_service`.
        card: The model's card; its scikit-learn version must equal `runtime_sklearn_version`.
        timeout_seconds: Upper bound on waiting for Ready.
        runtime_sklearn_version: scikit-learn in the serving image (the project pins one version for both).
        smoke_instances: Rows for a V1 predict after Ready (None or empty: skip the smoke test).
        api_client: A `kubernetes.client.ApiClient`; None: in-cluster config, else the kubeconfig.
        smoke_base_url: Where to send the smoke predict instead of `status.address.url` (tests, port-forwards).
        poll_interval_seconds: Pause between status reads.
        smoke_attempts: Tries for the smoke predict (the route can 404 just after Ready).
        smoke_retry_interval_seconds: Pause between smoke tries.
        rollback: Undo this deploy's write when it fails (restore the previous spec, or delete what it created).

    Returns:
        What was deployed and where it answers.

    Raises:
        RuntimeVersionMismatchError: Before any API call, when the scikit-learn versions differ.
        DeployForbiddenError: RBAC denied a call; the message names the account and the Role to apply.
        ModelLoadFailedError, DeployTimeoutError, SmokeTestFailedError: After rolling back (see `rolled_back`).
        DeployError: Any other API failure, with the server's message.
    """
    from kubernetes.client.exceptions import ApiException

    check_runtime_compatible(card, runtime_sklearn_version)
    name, namespace = _validate_manifest(manifest, card)
    isvc = _IsvcApi(api_client if api_client is not None else kube_api_client(), namespace, name)
    desired = copy.deepcopy(dict(manifest))
    desired.pop("status", None)

    previous = isvc.get()
    canary_percent: int | None = None
    try:
        if previous is None:
            # Nothing is live to split traffic with: the first model takes all of it.
            (desired["metadata"].get("annotations") or {}).pop(CANARY_ANNOTATION, None)
            written = isvc.create(desired)
            action = ACTION_CREATED
        else:
            canary_text = (desired["metadata"].get("annotations") or {}).get(CANARY_ANNOTATION)
            if canary_text is not None:
                canary_percent = int(canary_text)
                desired = with_standard_canary(
                    desired, stable_predictor=previous["spec"]["predictor"], traffic_percent=canary_percent
                )
            body = {
                "metadata": _metadata_patch(previous.get("metadata") or {}, desired["metadata"]),
                "spec": merge_patch(previous.get("spec") or {}, desired["spec"]),
            }
            written = isvc.patch(body)
            action = ACTION_PATCHED
    except ApiException as exc:
        verb = "create" if previous is None else "patch"
        if exc.status == 409:
            raise DeployError(
                f"InferenceService {namespace}/{name} changed while this step wrote it (HTTP 409 {exc.reason}); "
                "another deploy is running: retry the step"
            ) from exc
        raise DeployError(_api_error(verb, namespace, name, exc)) from exc

    generation = int(written["metadata"].get("generation") or 0)
    try:
        canary_name = CANARY_PREDICTOR_NAME if canary_percent is not None else None
        ready_obj = wait_until_ready(
            isvc,
            generation=generation,
            timeout_seconds=timeout_seconds,
            poll_interval_seconds=poll_interval_seconds,
            canary_name=canary_name,
        )
        url = _served_url(ready_obj)
        smoke_url = ""
        predictions: list[Any] = []
        if smoke_instances:
            # Without the Gateway API the main Service reaches only the stable predictor: test the canary directly.
            canary_url = f"http://{name}-{canary_name}-predictor.{namespace}.svc.cluster.local" if canary_name else ""
            smoke_url = smoke_base_url or canary_url or url
            if not smoke_url:
                raise SmokeTestFailedError(f"InferenceService {namespace}/{name} is Ready but reports no URL")
            predictions = smoke_predict(
                smoke_url,
                name,
                smoke_instances,
                attempts=smoke_attempts,
                retry_interval_seconds=smoke_retry_interval_seconds,
            )
    except (ModelLoadFailedError, DeployTimeoutError, SmokeTestFailedError) as exc:
        if not rollback:
            raise
        undo = _roll_back(isvc, previous)
        raise type(exc)(f"{exc}; {undo}", rolled_back=True) from exc

    status = ready_obj.get("status") or {}
    return DeployResult(
        name=name,
        namespace=namespace,
        url=url,
        ready=True,
        generation=generation,
        observed_generation=int(status.get("observedGeneration") or 0),
        action=action,
        resource_version=str(ready_obj["metadata"].get("resourceVersion", "")),
        predictions=predictions,
        smoke_url=smoke_url,
        canary_traffic_percent=canary_percent,
    )


def _roll_back(isvc: _IsvcApi, previous: Mapping[str, Any] | None) -> str:
    """Undo our write; returns a sentence for the error message (never raises, the original error matters more)."""
    from kubernetes.client.exceptions import ApiException

    try:
        if previous is None:
            isvc.delete()
            return f"rolled back: deleted the InferenceService {isvc.namespace}/{isvc.name} this step created"
        current = isvc.get()
        if current is None:
            return "could not roll back: the InferenceService no longer exists"
        body = {
            "metadata": {
                "resourceVersion": current["metadata"].get("resourceVersion"),
                "annotations": merge_patch(
                    current["metadata"].get("annotations") or {},
                    (previous.get("metadata") or {}).get("annotations") or {},
                ),
            },
            "spec": merge_patch(current.get("spec") or {}, previous.get("spec") or {}),
        }
        restored = isvc.patch(body)
        return (
            f"rolled back: restored the previous spec of {isvc.namespace}/{isvc.name} "
            f"(now generation {restored['metadata'].get('generation')})"
        )
    except (ApiException, DeployError) as exc:
        return f"rollback FAILED ({exc}); fix by hand: kubectl edit isvc {isvc.name} -n {isvc.namespace}"
