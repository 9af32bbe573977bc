"""Deploy backend `kubernetes`: write an InferenceService, wait until it serves, smoke-test it, roll back on failure.

The pipeline's last step calls `deploy_inference_service` with the dict that
`inference_service.build_inference_service` returns. It talks to the API server through the official `kubernetes`
client (CustomObjectsApi), so the same code runs in a pipeline pod (in-cluster config), from a laptop (kubeconfig)
and against the fake API server in tests/deploy/.
"""

from __future__ import annotations

import copy
import email.utils
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from components.constants import (
    CANARY_ANNOTATION,
    CANARY_PREDICTOR_NAME,
    DEPLOYER_ROLE_BINDING_NAME,
    DEPLOYER_ROLE_NAME,
    DEPLOYMENT_MODE_ANNOTATION,
    DEPLOYMENT_MODE_KNATIVE,
    INFERENCE_SERVICE_KIND,
    INFERENCE_SERVICE_PLURAL,
    KSERVE_API_VERSION,
    KSERVE_GROUP,
    KSERVE_VERSION,
    LINEAGE_ANNOTATION_PREFIX,
)
from components.deploy.inference_service import (
    LINEAGE_MODEL_SHA256,
    LINEAGE_ROLLOUT_ID,
    predictor_deployment_name,
    predictor_pod_selector,
    rollout_id,
    with_standard_canary,
)


class ServedModel(Protocol):
    """What deploy checks of the model it puts live.

    A `ModelCard` (deploy), or a recorded version (promote, rollback: `cluster_versions.ClusterVersion`) whose
    directory stays in the object store.
    """

    @property
    def model_sha256(self) -> str:
        """sha256 of `model.joblib`, as the lineage annotation records it."""
        ...

    @property
    def sklearn_version(self) -> str:
        """The scikit-learn version the model was pickled with."""
        ...


ACTION_CREATED = "created"
ACTION_PATCHED = "patched"
_API_REQUEST_TIMEOUT_SECONDS = 30.0
_RETRYABLE_SMOKE_STATUS = frozenset({404, 429, 502, 503, 504})
"""Right after Ready the route may still 404 (kserve/kserve#1658) and a rolling pod may 503."""
_FORBIDDEN_USER = re.compile(r'User "([^"]+)"')
_ISVC_RESOURCE = f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}"
_DEPLOYMENT_RESOURCE = "deployments.apps"
_POD_RESOURCE = "pods"
_CONFIG_MAP_RESOURCE = "configmaps"
_FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})
"""modelStatus.transitionStatus values that mean the target model will not load (inference_service_status.go)."""
_FATAL_WAITING_REASONS = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"}
)
"""Container waiting reasons that do not resolve by waiting (KServe itself reacts to CrashLoopBackOff)."""


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
    """`status.observedGeneration`: in Standard mode KServe copies it from the predictor Deployment."""
    action: str
    """`created` or `patched`."""
    resource_version: str
    predictions: list[Any] = field(default_factory=list)
    """The smoke test's V1 predictions (empty when no smoke instances were given)."""
    smoke_url: str = ""
    """Base URL the smoke predict went to (the reported URL unless one was injected; empty when skipped)."""
    canary_traffic_percent: int | None = None
    """Set when the new model went out as a Standard-mode canary beside the live predictor."""
    deployment: str = ""
    """The predictor Deployment whose rollout the step waited for."""
    rollout_id: str = ""
    """The rollout id (annotation `LINEAGE_ROLLOUT_ID`) that the new pods carry."""


def check_runtime_compatible(card: ServedModel, runtime_sklearn_version: str) -> None:
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


class _KubeApi:
    """Every call the deploy step makes; each is a verb the Role in manifests/base/rbac.yaml grants.

    InferenceServices: get, create, patch, delete (rollback of a first deploy). Deployments (apps): get, to follow
    the rollout KServe starts. Pods: list, to see why the new pods do not start. ConfigMaps: get, create, update,
    for the model's version record (`cluster_versions`). Nothing else.
    """

    def __init__(self, api_client: Any, namespace: str, name: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self._apps = client.AppsV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.name = name

    def _call(self, verb: str, resource: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return func(*args, _request_timeout=_API_REQUEST_TIMEOUT_SECONDS, **kwargs)
        except ApiException as exc:
            if exc.status == 403 and "admission webhook" in _api_message(exc):
                # KServe's validating webhook denies with 403 too; that is a bad spec, not missing RBAC.
                raise DeployError(
                    f"KServe refused to {verb} InferenceService {self.namespace}/{self.name}: {_api_message(exc)}"
                ) from exc
            if exc.status == 403:
                raise DeployForbiddenError(_forbidden_message(exc, verb, resource, self.namespace)) from exc
            raise
        except urllib3.exceptions.HTTPError as exc:
            host = getattr(getattr(self._api, "api_client", None), "configuration", None)
            raise DeployError(
                f"could not reach the Kubernetes API{' at ' + host.host if host else ''} to {verb} "
                f"{resource} in {self.namespace}: {exc}"
            ) from exc

    def _isvc(self, verb: str, func: Any, *args: Any) -> Any:
        scope = (KSERVE_GROUP, KSERVE_VERSION, self.namespace, INFERENCE_SERVICE_PLURAL)
        return self._call(verb, _ISVC_RESOURCE, func, *scope, *args)

    def get(self) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return dict(self._isvc("get", self._api.get_namespaced_custom_object, self.name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeployError(_api_error("read", self.namespace, self.name, exc)) from exc

    def create(self, body: dict[str, Any]) -> tuple[dict[str, Any], datetime | None]:
        """Create; returns the object and the API server's clock at the write (its `Date` header)."""
        data, _, headers = self._isvc("create", self._api.create_namespaced_custom_object_with_http_info, body)
        return dict(data), _server_time(headers)

    def patch(self, body: dict[str, Any]) -> tuple[dict[str, Any], datetime | None]:
        """Merge-patch; returns the object and the API server's clock at the write (its `Date` header)."""
        data, _, headers = self._isvc("patch", self._api.patch_namespaced_custom_object_with_http_info, self.name, body)
        return dict(data), _server_time(headers)

    def delete(self) -> None:
        self._isvc("delete", self._api.delete_namespaced_custom_object, self.name)

    def config_map(self, name: str) -> dict[str, Any] | None:
        """The ConfigMap `name` (camelCase JSON), or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._call(
                "get", _CONFIG_MAP_RESOURCE, self._core.read_namespaced_config_map, name, self.namespace,
                _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404 and "namespaces" not in _api_message(exc):
                return None
            raise DeployError(_config_map_error("read", self.namespace, name, exc)) from exc
        return dict(json.loads(response.data))

    def write_config_map(self, body: dict[str, Any], *, create: bool) -> None:
        """Create the ConfigMap, or replace it (PUT: the body's `resourceVersion` makes a stale write a 409).

        Raises:
            ApiException: 409 (someone wrote it meanwhile) for the caller to retry.
            DeployError: Any other failure.
        """
        from kubernetes.client.exceptions import ApiException

        name = body["metadata"]["name"]
        try:
            if create:
                self._call(
                    "create", _CONFIG_MAP_RESOURCE, self._core.create_namespaced_config_map, self.namespace, body
                )
            else:
                self._call(
                    "update", _CONFIG_MAP_RESOURCE, self._core.replace_namespaced_config_map, name, self.namespace, body
                )
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise DeployError(_config_map_error("create" if create else "update", self.namespace, name, exc)) from exc

    def deployment(self, name: str) -> dict[str, Any] | None:
        """The Deployment `name` as the API server stores it (camelCase JSON), or None while it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._call(
                "get",
                _DEPLOYMENT_RESOURCE,
                self._apps.read_namespaced_deployment,
                name,
                self.namespace,
                _preload_content=False,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DeployError(f"could not read Deployment {self.namespace}/{name}: HTTP {exc.status}") from exc
        return dict(json.loads(response.data))

    def pods(self, selector: str) -> list[dict[str, Any]]:
        """Pods matching the label `selector` (camelCase JSON)."""
        from kubernetes.client.exceptions import ApiException

        try:
            response = self._call(
                "list",
                _POD_RESOURCE,
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=selector,
                _preload_content=False,
            )
        except ApiException as exc:
            raise DeployError(f"could not list pods {selector} in {self.namespace}: HTTP {exc.status}") from exc
        return list(json.loads(response.data).get("items") or [])


def _server_time(headers: Any) -> datetime | None:
    """The API server's `Date` header as an aware datetime (None when absent or unreadable)."""
    text = headers.get("Date") if headers is not None else None
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


def _parse_time(text: Any) -> datetime | None:
    """An RFC 3339 time as Kubernetes writes it (`2026-12-02T04:05:06Z`), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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


def _config_map_error(action: str, namespace: str, name: str, exc: Any) -> str:
    return f"could not {action} ConfigMap {namespace}/{name}: HTTP {exc.status}: {_api_message(exc) or exc.reason}"


def _forbidden_message(exc: Any, verb: str, resource: str, namespace: str) -> str:
    api_message = _api_message(exc)
    match = _FORBIDDEN_USER.search(api_message)
    user = match.group(1) if match else "the pipeline run's service account"
    as_flag = f" --as={user}" if match else ""
    return (
        f"{user} may not {verb} {resource} in namespace {namespace} (HTTP 403"
        f"{': ' + api_message if api_message else ''}). Grant it the Role {DEPLOYER_ROLE_NAME}: "
        f"`kubectl apply -k manifests/overlays/kind` (or overlays/minikube) creates the Role and RoleBinding "
        f"{DEPLOYER_ROLE_BINDING_NAME} for kubeflow/pipeline-runner; if runs use another service account, add it "
        f"as a subject of that RoleBinding (manifests/base/rbac.yaml). Check with: kubectl auth can-i {verb} "
        f"{resource} -n {namespace}{as_flag}"
    )


def _condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def _failure_text(failure: Mapping[str, Any]) -> str:
    parts = [str(failure.get(k)) for k in ("reason", "message") if failure.get(k)]
    return ": ".join(parts) or "lastFailureInfo set without a message"


def _failure_reason(status: Mapping[str, Any]) -> str | None:
    """Any failure the status reports, new or old (Knative mode, where there is no Deployment to follow)."""
    model_status = status.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo")
    if failure:
        return _failure_text(failure)
    if (model_status.get("states") or {}).get("activeModelState") == "FailedToLoad":
        return "activeModelState is FailedToLoad"
    return None


def new_model_failure(
    status: Mapping[str, Any], baseline: Mapping[str, Any], write_time: datetime | None
) -> str | None:
    """A model failure KServe reported after this deploy's write, or None. Stale failures do not count.

    KServe only ever sets `lastFailureInfo` (inference_service_status.go, SetModelFailureInfo: never cleared), and
    recomputes `transitionStatus` on every reconcile from one arbitrary pod (PropagateModelStatus looks at
    podList.Items[0]). So a failure counts when it is new against `baseline` (the status read just before the
    write): a different `lastFailureInfo`, one whose `time` is after `write_time` (KServe 0.21 leaves `time`
    empty; honoured when set), or a `transitionStatus` of BlockedByFailedLoad/InvalidSpec that was not there before.
    """
    model_status = status.get("modelStatus") or {}
    before = baseline.get("modelStatus") or {}
    failure = model_status.get("lastFailureInfo")
    if failure:
        failed_at = _parse_time(failure.get("time"))
        if failure != before.get("lastFailureInfo") or (failed_at and write_time and failed_at > write_time):
            return _failure_text(failure)
    transition = model_status.get("transitionStatus")
    if transition in _FAILED_TRANSITIONS and transition != before.get("transitionStatus"):
        return f"transitionStatus {transition}" + (f" ({_failure_text(failure)})" if failure else "")
    return None


def _deployment_failure(deployment: Mapping[str, Any]) -> str | None:
    """A Deployment condition that will not fix itself, or None.

    ReplicaFailure (e.g. Pod Security rejected the pod), or Progressing=False with ProgressDeadlineExceeded (KServe
    sets progressDeadlineSeconds 600, deployment_reconciler.go).
    """
    status = deployment.get("status") or {}
    failure = _condition(status, "ReplicaFailure")
    if failure and str(failure.get("status")) == "True":
        return f"Deployment {failure.get('reason') or 'ReplicaFailure'}: {failure.get('message') or ''}".strip()
    progressing = _condition(status, "Progressing")
    if progressing and str(progressing.get("status")) == "False":
        return f"Deployment {progressing.get('reason') or 'not progressing'}: {progressing.get('message') or ''}"
    return None


def _container_problem(pod_name: str, container: Mapping[str, Any]) -> str | None:
    state = container.get("state") or {}
    name = container.get("name")
    terminated = state.get("terminated") or {}
    if terminated and (terminated.get("reason") == "Error" or terminated.get("exitCode", 0) not in (0, None)):
        return f"pod {pod_name} container {name} exited {terminated.get('exitCode')}: {terminated.get('message') or ''}"
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in _FATAL_WAITING_REASONS:
        last = (container.get("lastState") or {}).get("terminated") or {}
        detail = last.get("message") or waiting.get("message") or ""
        return f"pod {pod_name} container {name} {waiting['reason']}: {detail}".strip()
    return None


def pod_failure(pods: list[Mapping[str, Any]]) -> str | None:
    """The first failed container of these pods, or None.

    The storage-initializer (cannot fetch the model) or the model server (cannot load it), judged as KServe's
    PropagateModelStatus does (terminated with Error, CrashLoopBackOff), plus image and config errors.
    """
    for pod in pods:
        pod_name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            problem = _container_problem(pod_name, container)
            if problem:
                return problem
    return None


def rolled_out(deployment: Mapping[str, Any]) -> bool:
    """Whether the rollout is complete and every pod ready (stricter than `kubectl rollout status`).

    The Deployment controller has seen the latest template (observedGeneration == generation), and updated,
    available and ready replicas all equal the wanted replicas, so no old pod is left behind the Service.
    """
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration") or 0) == int((deployment.get("metadata") or {}).get("generation") or 0)
        and all(
            int(status.get(key) or 0) == wanted for key in ("updatedReplicas", "availableReplicas", "readyReplicas")
        )
        and int(status.get("replicas") or 0) == wanted
    )


def _describe_rollout(deployment: Mapping[str, Any] | None, rollout: str) -> str:
    if deployment is None:
        return "no predictor Deployment yet"
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template.get("annotations") or {}).get(LINEAGE_ROLLOUT_ID) != rollout:
        return f"Deployment {deployment['metadata'].get('name')} does not run rollout {rollout} yet"
    status = deployment.get("status") or {}
    counts = ", ".join(
        f"{k}={status.get(k, 0)}" for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
    )
    return (
        f"Deployment {deployment['metadata'].get('name')} generation {deployment['metadata'].get('generation')} "
        f"(observed {status.get('observedGeneration')}), wants {(deployment.get('spec') or {}).get('replicas', 1)}: "
        f"{counts}"
    )


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


@dataclass(frozen=True)
class RolloutTarget:
    """What one deploy waits for: the predictor Deployment KServe updates, and the rollout id its pods carry."""

    deployment: str
    """`<isvc>-predictor`, or `<isvc>-canary-predictor` for a canary."""
    rollout_id: str
    canary_name: str | None = None


def _read(api: _KubeApi, what: Any, last: Any) -> tuple[Any, str]:
    """One read while waiting; a restarting API server is not a failed deploy (keep the last answer)."""
    try:
        return what(), ""
    except DeployForbiddenError:
        raise
    except DeployError as exc:
        return last, str(exc)


def _read_inference_service(api: _KubeApi, last: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`_read` of the InferenceService itself, which must still exist."""
    obj, read_error = _read(api, api.get, last)
    if obj is None:
        raise DeployError(f"InferenceService {api.namespace}/{api.name} disappeared while waiting for it")
    return obj, read_error


def wait_for_rollout(
    api: _KubeApi,
    *,
    target: RolloutTarget,
    baseline_status: Mapping[str, Any],
    write_time: datetime | None,
    timeout_seconds: float,
    poll_interval_seconds: float,
) -> dict[str, Any]:
    """Wait until the pods this deploy started serve, or fail fast on a failure that happened after the write.

    In Standard mode the InferenceService status cannot say that on its own: `observedGeneration` is copied from
    the predictor Deployment, not from the InferenceService (inference_service_status.go, PropagateRawStatus),
    and `Ready` stays True during a rollout while the old pod keeps the Deployment Available (KServe >= 0.20,
    #5703; the default rolling update keeps the old pod until the new one is ready). So the step follows the
    Deployment: its pod template must carry `target.rollout_id` (KServe copies our annotations into it), the
    rollout must be complete (`rolled_out`), and then `Ready` (and the canary's entry) must be True.

    Returns:
        The InferenceService as last read.
    """
    deadline = time.monotonic() + timeout_seconds
    selector = predictor_pod_selector(target.deployment)
    last: dict[str, Any] = {}
    deployment: dict[str, Any] | None = None
    errors: list[str] = []
    while True:
        last, read_error = _read_inference_service(api, last)
        status = last.get("status") or {}
        # The InferenceService's modelStatus describes the stable predictor only; canary entries carry none
        # (components/predictor.go, reconcileCanaryDeployments).
        reason = None if target.canary_name else new_model_failure(status, baseline_status, write_time)
        deployment, deployment_error = _read(api, lambda: api.deployment(target.deployment), deployment)
        template = (((deployment or {}).get("spec") or {}).get("template") or {}).get("metadata") or {}
        ours = (template.get("annotations") or {}).get(LINEAGE_ROLLOUT_ID) == target.rollout_id
        if ours and reason is None and deployment is not None:
            reason = _deployment_failure(deployment)
            if reason is None:
                pods, _ = _read(api, lambda: api.pods(selector), [])
                mine = [
                    p
                    for p in pods
                    if ((p.get("metadata") or {}).get("annotations") or {}).get(LINEAGE_ROLLOUT_ID) == target.rollout_id
                ]
                reason = pod_failure(mine)
        if reason:
            where = f"canary {target.canary_name}: " if target.canary_name else ""
            raise ModelLoadFailedError(
                f"InferenceService {api.namespace}/{api.name} failed to load the model: {where}{reason}. "
                f"Inspect: kubectl describe deployment {target.deployment} -n {api.namespace}; kubectl logs -n "
                f"{api.namespace} -l {selector} -c storage-initializer"
            )
        errors = [e for e in (read_error, deployment_error) if e]
        ready = _condition(status, "Ready")
        stable_ready = ready is not None and str(ready.get("status")).lower() == "true"
        canary = _canary_status(status, target.canary_name) if target.canary_name else None
        canary_ready = target.canary_name is None or (canary is not None and canary.get("ready") is True)
        if ours and deployment is not None and rolled_out(deployment) and stable_ready and canary_ready:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_interval_seconds, max(0.0, deadline - time.monotonic())))
    which = f" (canary {target.canary_name})" if target.canary_name else ""
    raise DeployTimeoutError(
        f"InferenceService {api.namespace}/{api.name}{which} did not finish rollout {target.rollout_id} "
        f"within {timeout_seconds:g}s; "
        f"{_describe_rollout(deployment, target.rollout_id)}; last status: {_describe(last.get('status') or {})}"
        f"{'; last read failed: ' + '; '.join(errors) if errors else ''}. Common causes: image not loaded "
        "into the cluster (ErrImagePull), storage-initializer cannot reach the object store (NetworkPolicy or "
        "credentials), or too little CPU/memory to schedule the pod"
    )


def wait_until_ready(
    api: _KubeApi,
    *,
    generation: int,
    timeout_seconds: float,
    poll_interval_seconds: float,
) -> dict[str, Any]:
    """Knative mode only: poll until `Ready=True` with `observedGeneration >= generation`.

    Weaker than `wait_for_rollout` and not verified on a cluster: KServe copies the Knative Service's
    observedGeneration (inference_service_status.go, PropagateStatus), which is not the InferenceService's. The
    project deploys in Standard mode; this path exists for `deployment_mode="Knative"` manifests.

    Returns:
        The InferenceService as last read.
    """
    deadline = time.monotonic() + timeout_seconds
    last: dict[str, Any] = {}
    read_error = ""
    while True:
        last, read_error = _read_inference_service(api, last)
        status = last.get("status") or {}
        if int(status.get("observedGeneration") or 0) >= generation:
            reason = _failure_reason(status)
            if reason:
                raise ModelLoadFailedError(
                    f"InferenceService {api.namespace}/{api.name} failed to load the model: {reason}"
                )
            ready = _condition(status, "Ready")
            if ready is not None and str(ready.get("status")).lower() == "true":
                return last
        if time.monotonic() >= deadline:
            break
        time.sleep(min(poll_interval_seconds, max(0.0, deadline - time.monotonic())))
    raise DeployTimeoutError(
        f"InferenceService {api.namespace}/{api.name} was not Ready for generation {generation} within "
        f"{timeout_seconds:g}s; last status: {_describe(last.get('status') or {})}"
        f"{'; last read failed: ' + read_error if read_error else ''}"
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
        # Our prefix only (lineage, rollout id, a canary request an older version wrote): other tools' keys stay.
        if key.startswith(LINEAGE_ANNOTATION_PREFIX) and key not in want_ann:
            annotations[key] = None
    if annotations:
        patch["annotations"] = annotations
    return patch


def _validate_manifest(manifest: Mapping[str, Any], card: ServedModel) -> tuple[str, str]:
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


def _desired_object(
    manifest: Mapping[str, Any], previous: Mapping[str, Any] | None
) -> tuple[dict[str, Any], RolloutTarget, int | None]:
    """The object to write, the rollout to wait for, and the canary's traffic share (None: not a canary)."""
    desired = copy.deepcopy(dict(manifest))
    desired.pop("status", None)
    name = desired["metadata"]["name"]
    annotations = desired["metadata"].setdefault("annotations", {})
    canary_text = annotations.pop(CANARY_ANNOTATION, None)
    if canary_text is not None and previous is not None:
        percent = int(canary_text)
        desired = with_standard_canary(
            {**desired, "metadata": {**desired["metadata"], "annotations": {**annotations}}},
            stable_predictor=previous["spec"]["predictor"],
            traffic_percent=percent,
            stable_annotations=(previous.get("metadata") or {}).get("annotations") or {},
        )
        canary = desired["spec"]["canary"][0]["predictor"]
        marker = rollout_id(canary, desired["metadata"]["annotations"])
        canary.setdefault("annotations", {})[LINEAGE_ROLLOUT_ID] = marker
        target = RolloutTarget(predictor_deployment_name(name, CANARY_PREDICTOR_NAME), marker, CANARY_PREDICTOR_NAME)
        return desired, target, percent
    # Nothing live to split traffic with (or no canary asked): the new model takes all of it.
    marker = rollout_id(desired["spec"]["predictor"], annotations)
    annotations[LINEAGE_ROLLOUT_ID] = marker
    return desired, RolloutTarget(predictor_deployment_name(name), marker), None


def deploy_inference_service(
    manifest: Mapping[str, Any],
    *,
    card: ServedModel,
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
    """Create or patch an InferenceService, wait until the pods it starts serve, smoke-test them, or roll back.

    Re-running with the same manifest is idempotent (same spec, same rollout id: nothing restarts). A manifest
    carrying the canary annotation (`build_inference_service(canary_traffic_percent=...)`) is deployed, when a
    live InferenceService exists, as a `spec.canary` entry beside the live predictor.

    Args:
        manifest: From `inference_service.build_inference_service`.
        card: The model's card (or a recorded version); its scikit-learn version must equal
            `runtime_sklearn_version` and its model sha256 the manifest's lineage annotation.
        timeout_seconds: Upper bound on waiting for the rollout.
        runtime_sklearn_version: scikit-learn in the serving image (the project pins one version for both).
        smoke_instances: Rows for a V1 predict once the new pods serve (None or empty: skip the smoke test).
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
        DeployError: Any other API failure, with the server's message; after the write, also rolled back.
    """
    from kubernetes.client.exceptions import ApiException

    check_runtime_compatible(card, runtime_sklearn_version)
    name, namespace = _validate_manifest(manifest, card)
    api = _KubeApi(api_client if api_client is not None else kube_api_client(), namespace, name)

    previous = api.get()
    desired, target, canary_percent = _desired_object(manifest, previous)
    try:
        if previous is None:
            written, write_time = api.create(desired)
            action = ACTION_CREATED
        else:
            body = {
                "metadata": _metadata_patch(previous.get("metadata") or {}, desired["metadata"]),
                "spec": merge_patch(previous.get("spec") or {}, desired["spec"]),
            }
            written, write_time = api.patch(body)
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
    knative = (desired["metadata"].get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION) == DEPLOYMENT_MODE_KNATIVE
    try:
        if knative:
            ready_obj = wait_until_ready(
                api, generation=generation, timeout_seconds=timeout_seconds, poll_interval_seconds=poll_interval_seconds
            )
        else:
            ready_obj = wait_for_rollout(
                api,
                target=target,
                baseline_status=(previous or {}).get("status") or {},
                write_time=write_time,
                timeout_seconds=timeout_seconds,
                poll_interval_seconds=poll_interval_seconds,
            )
        url = _served_url(ready_obj)
        smoke_url = ""
        predictions: list[Any] = []
        if smoke_instances:
            # Only now, with every old pod gone, does the Service reach the new model alone. Without the Gateway
            # API the main Service reaches only the stable predictor: test the canary on its own Service.
            canary_url = f"http://{target.deployment}.{namespace}.svc.cluster.local" if target.canary_name else ""
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
    except DeployError as exc:
        # Whatever stopped the wait (a failed model, a timeout, a failed smoke test, a read the Role does not
        # allow), what this step wrote is not known to serve: put back what served before.
        if not rollback:
            raise
        undo = _roll_back(api, previous)
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
        deployment=target.deployment,
        rollout_id=target.rollout_id,
    )


def _roll_back(api: _KubeApi, previous: Mapping[str, Any] | None) -> str:
    """Undo our write; returns a sentence for the error message (never raises, the original error matters more)."""
    from kubernetes.client.exceptions import ApiException

    try:
        if previous is None:
            api.delete()
            return f"rolled back: deleted the InferenceService {api.namespace}/{api.name} this step created"
        current = api.get()
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
        restored, _ = api.patch(body)
        # The previous spec's pods never stopped serving (the rolling update keeps them until the new ones are
        # ready); KServe points the Deployment back at them and removes the failed ones.
        return (
            f"rolled back: restored the previous spec of {api.namespace}/{api.name} "
            f"(now generation {restored['metadata'].get('generation')})"
        )
    except (ApiException, DeployError) as exc:
        return f"rollback FAILED ({exc}); fix by hand: kubectl edit isvc {api.name} -n {api.namespace}"
