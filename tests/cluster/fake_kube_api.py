"""A small Kubernetes API server for InferenceServices, over real HTTP, with a scripted KServe controller.

It behaves like the real one where the deploy step depends on it:
- POST/GET/PATCH (application/merge-patch+json only, like custom resources)/PUT/DELETE on
  /apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices[/{name}];
- 404 for a missing object or namespace, 409 AlreadyExists on create and Conflict on a stale resourceVersion,
  403 Forbidden in the API server's wording for verbs RBAC denies, 415 for other patch types, 422 for objects the
  CRD schema rejects (when a validator is given);
- `metadata.generation` starts at 1 and grows only when `spec` changes; `resourceVersion` grows on every write;
  writes to the main resource never change `status` (status is a subresource);
- a controller, consulted on every read, that after a scripted number of reads reports the written generation as
  Ready (with `observedGeneration`, `url`, `address.url`) or as failed (`modelStatus.lastFailureInfo`), and until
  then leaves the previous generation's status in place, as KServe does while a new revision rolls out.

`FakePredictor` is the other half: a V1 predict endpoint that serves a real model directory, optionally answering
404 for its first requests (Ready but not yet routed, kserve/kserve#1658).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kserve_webhook import WEBHOOK_NAME
from loopback_http import LoopbackServer, QuietHandler

from components.constants import INFERENCE_SERVICE_PLURAL, KSERVE_GROUP, KSERVE_VERSION

_COLLECTION = re.compile(
    rf"^/apis/{re.escape(KSERVE_GROUP)}/{KSERVE_VERSION}/namespaces/([^/]+)/{INFERENCE_SERVICE_PLURAL}$"
)
_ITEM = re.compile(
    rf"^/apis/{re.escape(KSERVE_GROUP)}/{KSERVE_VERSION}/namespaces/([^/]+)/{INFERENCE_SERVICE_PLURAL}/([^/]+)$"
)
RESOURCE = f"{INFERENCE_SERVICE_PLURAL}.{KSERVE_GROUP}"
DEFAULT_USER = "system:serviceaccount:kubeflow:pipeline-runner"


@dataclass(frozen=True)
class Outcome:
    """What the scripted controller reports for one generation, after `after_reads` reads of the object."""

    result: str = "ready"
    """`ready`, `fail` (lastFailureInfo) or `pending` (never settles)."""
    after_reads: int = 2
    message: str = ""
    canary: str = "ready"
    """What each `spec.canary` predictor reports once the stable one settles: `ready`, `fail` or `pending`."""


ControllerScript = Callable[[dict[str, Any]], Outcome]


def ready_always(_obj: dict[str, Any]) -> Outcome:
    """Every generation becomes Ready after two reads."""
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


@dataclass
class _Tracked:
    obj: dict[str, Any]
    reads_since_write: int = 0


@dataclass
class FakeKubeApi:
    """The server's state and behaviour; `start()` serves it on 127.0.0.1 and returns the base URL."""

    namespaces: set[str] = field(default_factory=lambda: {"kserve-models"})
    controller: ControllerScript = ready_always
    forbidden_verbs: set[str] = field(default_factory=set)
    allowed_verbs: set[str] | None = None
    """RBAC of the caller: verbs outside this set are 403 (None: everything not forbidden is allowed)."""
    user: str = DEFAULT_USER
    validator: Callable[[dict[str, Any]], list[str]] | None = None
    """CRD schema check: errors become 422 Invalid."""
    webhook: Callable[[dict[str, Any], dict[str, Any] | None], list[str]] | None = None
    """Admission webhook check: errors become 403 'admission webhook ... denied the request'."""
    url_template: str = "http://{name}-{namespace}.example.com"
    address_template: str = "http://{name}-predictor.{namespace}.svc.cluster.local"
    failing_reads: int = 0
    """Answer this many of the next GETs with 500 (an API server restarting under the client)."""
    failing_reads_after_write: int = 0
    """After every create or patch, set `failing_reads` to this."""
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    """(method, path, content type, decoded body) of every request, for assertions."""

    def __post_init__(self) -> None:
        self._objects: dict[tuple[str, str], _Tracked] = {}
        self._lock = threading.Lock()
        self._versions = itertools.count(1000)
        self._http = LoopbackServer()
        self.base_url = ""

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        """Serve on an ephemeral port; returns `http://127.0.0.1:<port>`."""
        fake = self

        class Handler(QuietHandler):
            def _handle(self) -> None:
                content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                path = self.path.split("?")[0]
                self.reply_json(*fake.handle(self.command, path, content_type, self.read_body()))

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

    def methods(self) -> list[str]:
        """HTTP methods received, in order."""
        return [method for method, *_ in self.requests]

    # --- the API ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Route one request; returns (HTTP status, JSON body)."""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return 400, _status(400, "BadRequest", "the request body is not valid JSON")
        self.requests.append((method, path, content_type, body))
        item, collection = _ITEM.match(path), _COLLECTION.match(path)
        verb = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(method, "")
        if not (item or collection) or (collection and method != "POST"):
            return 404, _status(404, "NotFound", "the server could not find the requested resource")
        namespace = (item or collection).group(1)  # type: ignore[union-attr]
        name = item.group(2) if item else None
        if verb in self.forbidden_verbs or (self.allowed_verbs is not None and verb not in self.allowed_verbs):
            target = f'{RESOURCE} "{name}"' if name else RESOURCE
            return 403, _status(
                403,
                "Forbidden",
                f'{target} is forbidden: User "{self.user}" cannot {verb} resource "{INFERENCE_SERVICE_PLURAL}" '
                f'in API group "{KSERVE_GROUP}" in the namespace "{namespace}"',
                {"name": name or "", "group": KSERVE_GROUP, "kind": INFERENCE_SERVICE_PLURAL},
            )
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
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
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
            tracked.reads_since_write = 0
        updated["metadata"]["resourceVersion"] = str(next(self._versions))
        tracked.obj = updated
        self.failing_reads = self.failing_reads_after_write
        return 200, copy.deepcopy(updated)

    def _reconcile(self, tracked: _Tracked) -> None:
        obj = tracked.obj
        generation = obj["metadata"]["generation"]
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return
        tracked.reads_since_write += 1
        outcome = self.controller(copy.deepcopy(obj))
        if outcome.result == "pending" or tracked.reads_since_write < outcome.after_reads:
            return
        name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if outcome.result == "ready":
            conditions = [
                {"type": kind, "status": "True", "lastTransitionTime": now}
                for kind in ("IngressReady", "PredictorReady", "Ready")
            ]
            obj["status"] = {
                "observedGeneration": generation,
                "conditions": conditions,
                "deploymentMode": "Standard",
                "url": self.url_template.format(name=name, namespace=namespace),
                "address": {"url": self.address_template.format(name=name, namespace=namespace)},
                "modelStatus": {
                    "transitionStatus": "UpToDate",
                    "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                },
            }
            self._canaries(obj, outcome)
        else:
            message = outcome.message or "failed to load the model"
            obj["status"] = {
                "observedGeneration": generation,
                "conditions": [
                    {"type": "PredictorReady", "status": "False", "reason": "ModelLoadFailed", "message": message},
                    {"type": "Ready", "status": "False", "reason": "ModelLoadFailed", "message": message},
                ],
                "deploymentMode": "Standard",
                "modelStatus": {
                    "transitionStatus": "BlockedByFailedLoad",
                    "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": message},
                },
            }

    @staticmethod
    def _canaries(obj: dict[str, Any], outcome: Outcome) -> None:
        """KServe keeps canary readiness beside, not inside, Ready (condition CanaryPredictorReady)."""
        canaries = obj["spec"].get("canary") or []
        if not canaries:
            return
        statuses = []
        for canary in canaries:
            entry: dict[str, Any] = {
                "name": canary["predictor"].get("name", ""),
                "ready": outcome.canary == "ready",
                "trafficPercent": canary.get("trafficPercent", 0),
            }
            if outcome.canary == "fail":
                entry["modelStatus"] = {
                    "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": outcome.message or "canary failed"},
                }
            statuses.append(entry)
        obj["status"]["canaryStatuses"] = statuses
        all_ready = all(entry["ready"] for entry in statuses)
        obj["status"]["conditions"].append(
            {
                "type": "CanaryPredictorReady",
                "status": "True" if all_ready else "False",
                "reason": "AllCanariesReady" if all_ready else "CanariesNotReady",
            }
        )


class FakePredictor:
    """A V1 predict endpoint serving a real model directory (`/v1/models/{name}:predict`)."""

    def __init__(self, model_dir: Path, model_name: str, *, not_found_first: int = 0, broken: bool = False) -> None:
        from components.model_artifact import load_estimator

        self.estimator, self.card = load_estimator(model_dir)
        self.model_name = model_name
        self.not_found_first = not_found_first
        self.broken = broken
        self.calls = 0
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
                raw = self.read_body()
                code, payload = 200, {}
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
