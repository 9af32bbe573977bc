"""A small Kubernetes API server over real HTTP, with a scripted KServe controller (Standard mode).

The API server, where the deploy step depends on it:
- POST/GET/PATCH (application/merge-patch+json only, like custom resources)/PUT/DELETE on
  /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}]; GET on
  /apis/apps/v1/namespaces/{ns}/deployments/{name} and /api/v1/namespaces/{ns}/pods?labelSelector=k=v,...;
  POST/GET/PUT/DELETE on /api/v1/namespaces/{ns}/configmaps[/{name}] (PUT with a stale resourceVersion: 409
  Conflict; data above 1 MiB: 422);
- 404 for a missing object or namespace, 409 AlreadyExists on create and Conflict on a stale resourceVersion,
  403 Forbidden in the API server's wording for what RBAC denies (per resource, from the project's Role), 415 for
  other patch types, 422 for objects the CRD schema rejects (when a validator is given);
- `metadata.generation` starts at 1 and grows only when `spec` changes; `resourceVersion` grows on every write;
  writes to the main resource never change `status` (status is a subresource); every answer has a `Date` header.

The controller runs on every read of an InferenceService and follows KServe's Standard mode (kserve/kserve,
mid-2026; file and function next to each rule below):
- one Deployment per predictor, `<isvc>-predictor` and `<isvc>-<canary>-predictor`, whose pod template carries the
  InferenceService's annotations overlaid by the predictor's own (components/predictor.go, buildObjectMeta;
  reconcileCanaryDeployments builds the canary from the stable predictor merged with the canary's);
- a template change bumps the Deployment's generation; its observedGeneration catches up one read later;
- rolling update with maxSurge 25%/maxUnavailable 25%, i.e. for 1-3 replicas one new pod beside the old ones, and the
  old pods are removed only once the new ones are ready (deployment_reconciler.go, setDefaultDeploymentSpec);
- `status.observedGeneration` is the stable Deployment's, not the InferenceService's generation
  (inference_service_status.go, PropagateRawStatus);
- PredictorReady/Ready follow the Deployment's Available condition, so Ready stays True during a rollout while the
  old pod serves (PropagateRawStatus; KServe >= 0.20, #5703);
- `modelStatus` is judged from the first pod of the list only (PropagateModelStatus, podList.Items[0]), and
  `lastFailureInfo` is only ever set, never cleared (SetModelFailureInfo); KServe writes no `time` into it;
- `canaryStatuses` entries carry name, ready (= the canary Deployment has an available replica) and
  trafficPercent, and no modelStatus (reconcileCanaryDeployments); a removed canary's Deployment is deleted.

`FakePredictor` is the other half: a V1 predict endpoint that serves a real model directory, optionally answering
404 for its first requests (Ready but not yet routed, kserve/kserve#1658).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.constants import INFERENCE_SERVICE_PLURAL, KSERVE_GROUP, KSERVE_VERSION
from tests.fakes.kserve_webhook import WEBHOOK_NAME
from tests.fakes.loopback_http import LoopbackServer, QuietHandler

_COLLECTION = re.compile(
    rf"^/apis/{re.escape(KSERVE_GROUP)}/{KSERVE_VERSION}/namespaces/([^/]+)/{INFERENCE_SERVICE_PLURAL}$"
)
_ITEM = re.compile(
    rf"^/apis/{re.escape(KSERVE_GROUP)}/{KSERVE_VERSION}/namespaces/([^/]+)/{INFERENCE_SERVICE_PLURAL}/([^/]+)$"
)
_DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/]+)$")
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
_CONFIG_MAPS = re.compile(r"^/api/v1/namespaces/([^/]+)/configmaps(?:/([^/]+))?$")
CONFIG_MAPS = "configmaps"
CONFIG_MAP_MAX_BYTES = 1024 * 1024
"""The API server refuses ConfigMap data above 1 MiB (kubernetes pkg/apis/core/validation, ValidateConfigMap)."""
RESOURCE = f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}"
DEPLOYMENTS = "deployments.apps"
PODS = "pods"
DEFAULT_USER = "system:serviceaccount:kubeflow:pipeline-runner"
STORAGE_INITIALIZER = "storage-initializer"
"""KServe's injected init container (constants.StorageInitializerContainerName)."""
MODEL_CONTAINER = "kserve-container"
SOURCE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
"""Where KServe puts storageUri on the pod template for its storage-initializer injector (predictor.go)."""


@dataclass(frozen=True)
class Outcome:
    """What the pods the controller starts for a new pod template do, `after_reads` reads after they start."""

    result: str = "ready"
    """Stable predictor pods: `ready`; `fail` (storage-initializer exits with Error, then CrashLoopBackOff); `crash`
    (the model server exits, then CrashLoopBackOff); `pending` (never ready); `rejected` (no pod is admitted: the
    Deployment reports ReplicaFailure)."""
    after_reads: int = 2
    message: str = ""
    canary: str = "ready"
    """The same, for the pods of each `spec.canary` predictor."""


ControllerScript = Callable[[dict[str, Any]], Outcome]


def ready_always(_obj: dict[str, Any]) -> Outcome:
    """Every new pod becomes ready after two reads."""
    return Outcome("ready")


def merge_patch_apply(target: Any, patch: Any) -> Any:
    """RFC 7386: apply a JSON merge patch (the API server's algorithm for application/merge-patch+json)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch_apply(result.get(key), value)
    return result


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Tracked:
    obj: dict[str, Any]


@dataclass
class _Pod:
    name: str
    template_key: str
    metadata: dict[str, Any]
    outcome: str
    after: int
    message: str
    age: int = 0
    created: str = field(default_factory=_now)

    def ready(self) -> bool:
        return self.outcome == "ready" and self.age >= self.after

    def as_json(self, namespace: str) -> dict[str, Any]:
        """The pod as the API server returns it, container states as the kubelet reports them."""
        image = {"image": "runtime-image", "imageID": "", "ready": False, "restartCount": 0}
        init: dict[str, Any] = {"name": STORAGE_INITIALIZER, **image, "state": {"running": {}}}
        main: dict[str, Any] = {"name": MODEL_CONTAINER, **image, "state": {"waiting": {}}}
        failed = {"terminated": {"reason": "Error", "exitCode": 1, "message": self.message or "failed"}}
        settled = self.age >= self.after
        if self.outcome == "fail" and settled:
            # First the exit, then the kubelet's back-off with the exit kept as lastState.
            if self.age == self.after:
                init["state"] = failed
            else:
                init.update(state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=failed)
                init["restartCount"] = self.age - self.after
        elif self.outcome in ("ready", "crash") and settled:
            init["state"] = {"terminated": {"reason": "Completed", "exitCode": 0}}
            if self.outcome == "ready":
                main.update(ready=True, state={"running": {"startedAt": self.created}})
            else:
                main.update(state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=failed, restartCount=1)
        ready = self.ready()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **copy.deepcopy(self.metadata),
                "name": self.name,
                "namespace": namespace,
                "creationTimestamp": self.created,
            },
            "spec": {"containers": [{"name": MODEL_CONTAINER, "image": "runtime-image"}]},
            "status": {
                "phase": "Running" if ready or self.outcome == "crash" else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "initContainerStatuses": [init],
                "containerStatuses": [main],
            },
        }


@dataclass
class _Deployment:
    name: str
    template: dict[str, Any]
    template_key: str
    replicas: int = 1
    generation: int = 1
    observed: int = 0
    pods: list[_Pod] = field(default_factory=list)
    rejected: str = ""
    owner: str = ""
    """The InferenceService that owns it (owner reference): deleted with it."""

    def current(self) -> list[_Pod]:
        return [p for p in self.pods if p.template_key == self.template_key]

    def as_json(self, namespace: str) -> dict[str, Any]:
        """The Deployment with the rollout fields `kubectl rollout status` reads."""
        current = self.current()
        available = sum(p.ready() for p in self.pods)
        complete = len(current) == self.replicas and all(p.ready() for p in current) and len(self.pods) == len(current)
        now = _now()
        conditions = [
            {
                "type": "Available",
                # maxUnavailable 25% of 1-3 replicas rounds down to 0: all wanted replicas must be available.
                "status": "True" if available >= self.replicas else "False",
                "reason": "MinimumReplicasAvailable" if available >= self.replicas else "MinimumReplicasUnavailable",
                "lastTransitionTime": now,
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                "lastTransitionTime": now,
            },
        ]
        if self.rejected:
            conditions.append(
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": self.rejected}
            )
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.name,
                "namespace": namespace,
                "generation": self.generation,
                "labels": copy.deepcopy(self.template["metadata"]["labels"]),
            },
            "spec": {
                "replicas": self.replicas,
                "selector": {"matchLabels": {"app": f"isvc.{self.name}"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": copy.deepcopy(self.template),
            },
            "status": {
                "observedGeneration": self.observed,
                "replicas": len(self.pods),
                "updatedReplicas": len(current),
                "readyReplicas": available,
                "availableReplicas": available,
                "unavailableReplicas": max(self.replicas - available, 0),
                "conditions": conditions,
            },
        }


@dataclass
class FakeKubeApi:
    """The server's state and behaviour; `start()` serves it on 127.0.0.1 and returns the base URL."""

    namespaces: set[str] = field(default_factory=lambda: {"kserve-models"})
    controller: ControllerScript = ready_always
    forbidden_verbs: set[str] = field(default_factory=set)
    """Verbs on InferenceServices RBAC denies on top of `rbac`."""
    rbac: dict[str, set[str]] | None = None
    """RBAC of the caller: resource (`inferenceservices.serving.kserve.io`, `deployments.apps`, `pods`) -> verbs
    allowed; anything else is 403. None: everything not in `forbidden_verbs` is allowed."""
    user: str = DEFAULT_USER
    validator: Callable[[dict[str, Any]], list[str]] | None = None
    """CRD schema check: errors become 422 Invalid."""
    webhook: Callable[[dict[str, Any], dict[str, Any] | None], list[str]] | None = None
    """Admission webhook check: errors become 403 'admission webhook ... denied the request'."""
    url_template: str = "http://{name}-{namespace}.example.com"
    address_template: str = "http://{name}-predictor.{namespace}.svc.cluster.local"
    failing_reads: int = 0
    """Answer this many of the next InferenceService GETs with 500 (an API server restarting under the client)."""
    failing_reads_after_write: int = 0
    """After every create or patch, set `failing_reads` to this."""
    pod_order: str = "new-first"
    """Which pod KServe's PropagateModelStatus happens to see first (`new-first` or `old-first`): the list order is
    arbitrary upstream, so tests pick the case they need."""
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    """(method, path, content type, decoded body) of every request, for assertions."""
    before_config_map_write: Callable[[], None] | None = None
    """Run (outside the lock) before each ConfigMap create or update is applied: a test plays another writer."""

    def __post_init__(self) -> None:
        self._objects: dict[tuple[str, str], _Tracked] = {}
        self._deployments: dict[tuple[str, str], _Deployment] = {}
        self._config_maps: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self._pod_names = itertools.count(1)
        self._http = LoopbackServer()
        self.base_url = ""

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on an ephemeral port; returns `http://127.0.0.1:<port>`."""
        fake = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                path, _, query = self.path.partition("?")
                self.reply_json(*fake.handle(self.command, path, content_type, self.read_body(), query))

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.base_url = self._http.serve(Handler)
        return self.base_url

    def stop(self) -> None:
        """Shut the server down and wait for its thread."""
        self._http.stop()

    # --- direct access for test setup and assertions -----------------------------------------------
    def stored(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as stored (without running the controller)."""
        with self._lock:
            tracked = self._objects.get((namespace, name))
            return copy.deepcopy(tracked.obj) if tracked else None

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A predictor Deployment as the API serves it (without running the controller)."""
        with self._lock:
            found = self._deployments.get((namespace, name))
            return found.as_json(namespace) if found else None

    def pods(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The pods of a predictor Deployment, oldest first."""
        with self._lock:
            found = self._deployments.get((namespace, deployment))
            return [p.as_json(namespace) for p in found.pods] if found else []

    def config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ConfigMap as stored."""
        with self._lock:
            found = self._config_maps.get((namespace, name))
            return copy.deepcopy(found) if found else None

    def put_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Create or overwrite a ConfigMap directly (test setup; a new resourceVersion, as any write)."""
        with self._lock:
            self._config_maps[(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": str(next(self._versions))},
                "data": dict(data),
            }

    def methods(self) -> list[str]:
        """HTTP methods received, in order."""
        return [method for method, *_ in self.requests]

    # --- the API ------------------------------------------------------------------------------
    def _forbidden(self, verb: str, resource: str, name: str | None, namespace: str) -> tuple[int, dict] | None:
        denied = resource == RESOURCE and verb in self.forbidden_verbs
        if not denied and (self.rbac is None or verb in self.rbac.get(resource, set())):
            return None
        plural, _, group = resource.partition(".")
        target = f'{resource} "{name}"' if name else resource
        return 403, _status(
            403,
            "Forbidden",
            f'{target} is forbidden: User "{self.user}" cannot {verb} resource "{plural}" in API group "{group}" '
            f'in the namespace "{namespace}"',
            {"name": name or "", "group": group, "kind": plural},
        )

    def handle(
        self, method: str, path: str, content_type: str, raw: bytes, query: str = ""
    ) -> tuple[int, dict[str, Any]]:
        """Route one request; returns (HTTP status, JSON body)."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, _status(400, "BadRequest", "the request body is not valid JSON")
        self.requests.append((method, path, content_type, body))
        if method == "GET" and (match := _DEPLOYMENT.match(path) or _PODS.match(path)):
            return self._read_workload(match, query)
        if match := _CONFIG_MAPS.match(path):
            return self._config_map_request(method, match.group(1), match.group(2), body)
        item, collection = _ITEM.match(path), _COLLECTION.match(path)
        verb = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, "")
        if not (item or collection) or (collection and method != "POST"):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        namespace = (item or collection).group(1)  # type: ignore[union-attr]
        name = item.group(2) if item else None
        if denied := self._forbidden(verb, RESOURCE, name, namespace):
            return denied
        if namespace not in self.namespaces:
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace})
        with self._lock:
            if method == "POST":
                return self._create(namespace, body)
            assert name is not None
            if method == "GET" and self.failing_reads > 0:
                self.failing_reads -= 1
                return 500, _status(500, "InternalError", "etcdserver: leader changed")
            tracked = self._objects.get((namespace, name))
            if tracked is None:
                return 404, _status(404, "NotFound", f'{RESOURCE} "{name}" not found', {"name": name})
            if method == "GET":
                self._reconcile(tracked)
                return 200, copy.deepcopy(tracked.obj)
            if method == "DELETE":
                del self._objects[(namespace, name)]
                # Owner references: the predictor Deployments go with their InferenceService.
                for key in [k for k in self._deployments if k[0] == namespace and self._deployments[k].owner == name]:
                    del self._deployments[key]
                return 200, copy.deepcopy(tracked.obj)
            if method == "PATCH":
                if content_type != "application/merge-patch+json":
                    return 415, _status(
                        415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
                    )
                if not isinstance(body, dict):
                    return 400, _status(400, "BadRequest", "a merge patch must be a JSON object")
                return self._write(tracked, merge_patch_apply(tracked.obj, body), body)
            if method == "PUT":
                if not isinstance(body, dict):
                    return 400, _status(400, "BadRequest", "the body must be a JSON object")
                return self._write(tracked, body, body)
        return 405, _status(405, "MethodNotAllowed", f"{method} is not supported")

    def _config_map_request(
        self, method: str, namespace: str, name: str | None, body: Any
    ) -> tuple[int, dict[str, Any]]:
        verb = {"GET": "get", "POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}.get(method, "")
        if name is None and method != "POST":
            verb = "list" if method == "GET" else verb
        if denied := self._forbidden(verb, CONFIG_MAPS, name, namespace):
            return denied
        if namespace not in self.namespaces:
            return 404, _status(404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace})
        if method in ("POST", "PUT"):
            if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
                return 422, _status(422, "Invalid", "metadata.name: Required value")
            size = sum(len(k) + len(str(v).encode()) for k, v in (body.get("data") or {}).items())
            if size > CONFIG_MAP_MAX_BYTES:
                return 422, _status(422, "Invalid", f"[]: Too long: must have at most {CONFIG_MAP_MAX_BYTES} bytes")
            if self.before_config_map_write is not None:
                self.before_config_map_write()
        with self._lock:
            key = (namespace, name or (body or {}).get("metadata", {}).get("name", ""))
            stored = self._config_maps.get(key)
            if method == "POST":
                if stored is not None:
                    return 409, _status(409, "AlreadyExists", f'configmaps "{key[1]}" already exists', {"name": key[1]})
            elif stored is None:
                return 404, _status(404, "NotFound", f'configmaps "{key[1]}" not found', {"name": key[1]})
            if method == "GET":
                return 200, copy.deepcopy(stored)
            if method == "DELETE":
                del self._config_maps[key]
                return 200, copy.deepcopy(stored)
            if method not in ("POST", "PUT"):
                return 405, _status(405, "MethodNotAllowed", f"{method} is not supported here")
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if method == "PUT" and sent is not None and sent != stored["metadata"]["resourceVersion"]:
                return 409, _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on configmaps "{key[1]}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": key[1]},
                )
            obj = copy.deepcopy(body)
            obj["metadata"].update(namespace=namespace, resourceVersion=str(next(self._versions)))
            self._config_maps[key] = obj
            return (201 if method == "POST" else 200), copy.deepcopy(obj)

    def _read_workload(self, match: re.Match[str], query: str) -> tuple[int, dict[str, Any]]:
        """GET one Deployment, or list pods by label selector (as the controller left them at the last read)."""
        namespace = match.group(1)
        if match.re is _DEPLOYMENT:
            name = match.group(2)
            if denied := self._forbidden("get", DEPLOYMENTS, name, namespace):
                return denied
            found = self.deployment(namespace, name)
            if found is None:
                return 404, _status(404, "NotFound", f'{DEPLOYMENTS} "{name}" not found', {"name": name})
            return 200, found
        if denied := self._forbidden("list", PODS, None, namespace):
            return denied
        selector = urllib.parse.parse_qs(query).get("labelSelector", [""])[0]
        wanted = dict(part.split("=", 1) for part in selector.split(",") if "=" in part)
        with self._lock:
            pods = [
                pod.as_json(namespace)
                for (ns, _), deployment in sorted(self._deployments.items())
                if ns == namespace
                for pod in deployment.pods
            ]
        items = [p for p in pods if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
        return 200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items}

    def _invalid(
        self, obj: dict[str, Any], name: str, old: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        errors = self.validator(obj) if self.validator else []
        if errors:
            message = f'InferenceService.{KSERVE_GROUP} "{name}" is invalid: {"; ".join(errors)}'
            return 422, _status(422, "Invalid", message)
        denials = self.webhook(obj, old) if self.webhook else []
        if denials:
            message = f'admission webhook "{WEBHOOK_NAME}" denied the request: {"; ".join(denials)}'
            return 403, _status(403, "Forbidden", message)
        return None

    def _create(self, namespace: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return 422, _status(422, "Invalid", "metadata.name: Required value")
        name = body["metadata"]["name"]
        if body["metadata"].get("namespace", namespace) != namespace:
            return 400, _status(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if (namespace, name) in self._objects:
            return 409, _status(409, "AlreadyExists", f'{RESOURCE} "{name}" already exists', {"name": name})
        obj = copy.deepcopy(body)
        obj.pop("status", None)
        invalid = self._invalid(obj, name)
        if invalid:
            return invalid
        obj["metadata"].update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            generation=1,
            resourceVersion=str(next(self._versions)),
            creationTimestamp=_now(),
        )
        self._objects[(namespace, name)] = _Tracked(obj)
        self.failing_reads = self.failing_reads_after_write
        return 201, copy.deepcopy(obj)

    def _write(
        self, tracked: _Tracked, new: dict[str, Any], request_body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        old = tracked.obj
        name = old["metadata"]["name"]
        sent_version = (request_body.get("metadata") or {}).get("resourceVersion")
        if sent_version is not None and sent_version != old["metadata"]["resourceVersion"]:
            return 409, _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {RESOURCE} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name},
            )
        updated = copy.deepcopy(new)
        updated["status"] = copy.deepcopy(old.get("status"))  # status is a subresource
        if updated["status"] is None:
            updated.pop("status")
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation"):
            updated["metadata"][key] = old["metadata"][key]
        invalid = self._invalid({k: v for k, v in updated.items() if k != "status"}, name, old)
        if invalid:
            return invalid
        if updated.get("spec") != old.get("spec"):
            updated["metadata"]["generation"] = old["metadata"]["generation"] + 1
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        tracked.obj = updated
        self.failing_reads = self.failing_reads_after_write
        return 200, copy.deepcopy(updated)

    # --- the controller -------------------------------------------------------------------------
    @staticmethod
    def _template(obj: dict[str, Any], deployment: str, predictor: dict[str, Any]) -> dict[str, Any]:
        """The pod template KServe builds for one predictor (components/predictor.go, buildObjectMeta: labels and
        annotations of predictor > InferenceService > runtime; storageUri as the storage-initializer annotation)."""
        annotations = {**(obj["metadata"].get("annotations") or {}), **(predictor.get("annotations") or {})}
        annotations[SOURCE_URI_ANNOTATION] = (predictor.get("model") or {}).get("storageUri", "")
        labels = {
            **(obj["metadata"].get("labels") or {}),
            **(predictor.get("labels") or {}),
            "serving.kserve.io/inferenceservice": obj["metadata"]["name"],
            "component": "predictor",
            "app": f"isvc.{deployment}",
        }
        model = predictor.get("model") or {}
        container = {"name": MODEL_CONTAINER, "image": "runtime-image", "env": copy.deepcopy(model.get("env", []))}
        container["resources"] = copy.deepcopy(model.get("resources", {}))
        pod_fields = ("serviceAccountName", "automountServiceAccountToken", "securityContext")
        spec = {"containers": [container], **{k: copy.deepcopy(predictor[k]) for k in pod_fields if k in predictor}}
        return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}

    def _predictors(self, obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
        """(Deployment name, effective predictor, is canary) for the stable predictor and each canary."""
        name, stable = obj["metadata"]["name"], obj["spec"]["predictor"]
        result = [(f"{name}-predictor", stable, False)]
        for canary in obj["spec"].get("canary") or []:
            # buildCanaryPredictor: the stable predictor merged with the canary's fields, the canary's winning.
            merged = merge_patch_apply(stable, canary["predictor"])
            result.append((f"{name}-{canary['predictor']['name']}-predictor", merged, True))
        return result

    def _reconcile(self, tracked: _Tracked) -> None:
        obj = tracked.obj
        namespace = obj["metadata"]["namespace"]
        expected = set()
        for deployment_name, predictor, is_canary in self._predictors(obj):
            expected.add(deployment_name)
            self._reconcile_deployment(obj, namespace, deployment_name, predictor, is_canary)
        # reconcileCanaryDeployments deletes predictor Deployments that no canary names any more.
        for key in [
            k for k in self._deployments if k[0] == namespace and self._deployments[k].owner == obj["metadata"]["name"]
        ]:
            if key[1] not in expected:
                del self._deployments[key]
        self._propagate_status(obj, namespace)

    def _reconcile_deployment(
        self, obj: dict[str, Any], namespace: str, name: str, predictor: dict[str, Any], is_canary: bool
    ) -> None:
        template = self._template(obj, name, predictor)
        # The real template holds the whole merged runtime container; hashing the predictor stands in for that.
        content = {"template": template, "predictor": {k: v for k, v in predictor.items() if k != "annotations"}}
        key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
        replicas = int(predictor.get("minReplicas") or 1) if not is_canary else 1
        deployment = self._deployments.get((namespace, name))
        if deployment is None:
            deployment = self._deployments[(namespace, name)] = _Deployment(
                name, template, key, replicas, owner=obj["metadata"]["name"]
            )
        else:
            deployment.observed = deployment.generation  # the Deployment controller caught up since the last read
            for pod in deployment.pods:
                pod.age += 1
            if deployment.template_key != key:
                deployment.template, deployment.template_key = template, key
                deployment.generation += 1
                deployment.rejected = ""
        current = deployment.current()
        if len(current) < deployment.replicas:
            script = self.controller(copy.deepcopy(obj))
            outcome = script.canary if is_canary else script.result
            if outcome == "rejected":
                deployment.rejected = script.message or "pods are forbidden: violates PodSecurity"
            else:
                metadata = copy.deepcopy(template["metadata"])
                metadata["labels"]["pod-template-hash"] = key
                for _ in range(deployment.replicas - len(current)):
                    pod_name = f"{name}-{key}-{next(self._pod_names)}"
                    deployment.pods.append(_Pod(pod_name, key, metadata, outcome, script.after_reads, script.message))
        current = deployment.current()
        if len(current) == deployment.replicas and all(p.ready() for p in current):
            deployment.pods = current  # rollout complete: the old ReplicaSet is scaled to zero

    def _propagate_status(self, obj: dict[str, Any], namespace: str) -> None:
        name = obj["metadata"]["name"]
        stable = self._deployments[(namespace, f"{name}-predictor")]
        stable_json = stable.as_json(namespace)
        status = obj.setdefault("status", {})
        conditions = {c["type"]: c for c in stable_json["status"]["conditions"]}
        available = conditions["Available"]["status"] == "True"
        predictor_ready = available and "ReplicaFailure" not in conditions
        now = _now()
        reason = conditions["Available"]["reason"]
        status["conditions"] = [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": now},
            {"type": "PredictorReady", "status": str(predictor_ready), "reason": reason, "lastTransitionTime": now},
            {"type": "Ready", "status": str(predictor_ready), "reason": reason, "lastTransitionTime": now},
        ]
        # PropagateRawStatus: ss.ObservedGeneration = deploymentList[0].Status.ObservedGeneration.
        status["observedGeneration"] = stable.observed
        status["deploymentMode"] = "Standard"
        if predictor_ready:
            status["url"] = self.url_template.format(name=name, namespace=namespace)
            status["address"] = {"url": self.address_template.format(name=name, namespace=namespace)}
        self._propagate_model_status(status, stable, predictor_ready)
        canaries = []
        for canary in obj["spec"].get("canary") or []:
            found = self._deployments.get((namespace, f"{name}-{canary['predictor']['name']}-predictor"))
            canaries.append(
                {
                    "name": canary["predictor"]["name"],
                    # reconcileCanaryDeployments: ready = deploy.Status.AvailableReplicas > 0; no modelStatus.
                    "ready": bool(found and any(p.ready() for p in found.pods)),
                    "trafficPercent": canary.get("trafficPercent", 0),
                }
            )
        status.pop("canaryStatuses", None)
        if canaries:
            status["canaryStatuses"] = canaries
            all_ready = all(c["ready"] for c in canaries)
            status["conditions"].append(
                {
                    "type": "CanaryPredictorReady",
                    "status": str(all_ready),
                    "reason": "AllCanariesReady" if all_ready else "CanariesNotReady",
                }
            )

    def _propagate_model_status(self, status: dict[str, Any], stable: _Deployment, ready: bool) -> None:
        """PropagateModelStatus, in its order: the first pod's storage-initializer, then Ready, then its model
        server. UpdateModelRevisionStates sets transitionStatus; SetModelFailureInfo only ever replaces the info."""
        model_status = status.setdefault("modelStatus", {"transitionStatus": "UpToDate"})
        states = model_status.setdefault("states", {"activeModelState": "Pending"})

        def update(state: str, failure: dict[str, Any] | None = None) -> None:
            states["targetModelState"] = state
            if state == "Loaded":
                states["activeModelState"] = "Loaded"
            model_status["transitionStatus"] = {"Loaded": "UpToDate", "FailedToLoad": "BlockedByFailedLoad"}.get(
                state, "InProgress"
            )
            if failure is not None:
                model_status["lastFailureInfo"] = {
                    "reason": "ModelLoadFailed",
                    "message": failure.get("message", ""),
                    "exitCode": failure.get("exitCode", 1),
                }

        pods = list(stable.pods) if self.pod_order == "old-first" else list(reversed(stable.pods))
        if not pods:
            update("Pending")
            return
        first = pods[0].as_json("")["status"]
        for container in first["initContainerStatuses"]:
            state = container["state"]
            if "running" in state:
                update("Loading")
                return
            if state.get("terminated", {}).get("reason") == "Error":
                update("FailedToLoad", state["terminated"])
                return
            if state.get("waiting", {}).get("reason") == "CrashLoopBackOff":
                update("FailedToLoad", container["lastState"]["terminated"])
                return
        if ready:
            update("Loaded")
            return
        for container in first["containerStatuses"]:
            state = container["state"]
            if state.get("terminated", {}).get("reason") == "Error":
                update("FailedToLoad", state["terminated"])
            elif state.get("waiting", {}).get("reason") == "CrashLoopBackOff":
                update("FailedToLoad", container["lastState"]["terminated"])
            else:
                update("Pending")


class FakePredictor:
    """A V1 predict endpoint serving a real model directory (`/v1/models/{name}:predict`)."""

    def __init__(self, model_dir: Path, model_name: str, *, not_found_first: int = 0, broken: bool = False) -> None:
        from components.model_artifact import load_estimator

        self.estimator, self.card = load_estimator(model_dir)
        self.model_name = model_name
        self.not_found_first = not_found_first
        self.broken = broken
        self.calls = 0
        self.on_call: Callable[[], None] | None = None
        """Run on every request before answering (tests record what the cluster looked like then)."""
        self.base_url = ""
        self._http = LoopbackServer()

    def predict(self, instances: Iterable[Iterable[float]]) -> list[Any]:
        """What the served model answers (the test's expected values come from the same estimator)."""
        import numpy as np

        return [int(v) if isinstance(v, np.integer) else v for v in self.estimator.predict(np.asarray(list(instances)))]

    def start(self) -> str:
        """Serve on an ephemeral port; returns the base URL."""
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                fake.calls += 1
                if fake.on_call is not None:
                    fake.on_call()
                raw = self.read_body()
                code, payload = 200, dict[str, Any]()
                if self.path != f"/v1/models/{fake.model_name}:predict" or fake.calls <= fake.not_found_first:
                    code, payload = 404, {"error": f"Model with name {fake.model_name} does not exist."}
                elif fake.broken:
                    code, payload = 500, {"error": "model exploded"}
                else:
                    try:
                        payload = {"predictions": fake.predict(json.loads(raw)["instances"])}
                    except (ValueError, KeyError, TypeError) as exc:
                        code, payload = 400, {"error": str(exc)}
                self.reply_json(code, payload)

        self.base_url = self._http.serve(Handler)
        return self.base_url

    def stop(self) -> None:
        """Shut the server down."""
        self._http.stop()
