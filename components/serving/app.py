"""HTTP layer: KServe's REST server with our own route table, a body-size guard and a direct inference path.

KServe's stock inference path decodes the body, walks the dataplane (CloudEvent checks, header copies,
preprocess/validate/predict/postprocess with three latency histograms) and a timing middleware on every
request. For a 30 us model that bookkeeping is most of the latency, so a POST to V1 `:predict` or V2 `/infer`
(also `/versions/<v>/infer`) of a ready model is answered by `ServingMiddleware` straight from the ASGI messages
(no Request/Response objects, no router walk). Everything else goes to plain Starlette routes registered here in
place of KServe's: the same URLs, but no pydantic request models (FastAPI's 422 `{"detail": ...}` echoes the
input back), `{"error": "..."}` on every refusal, one short log line per client mistake, readiness that follows
the model, and the model-repository control routes (load/unload) off unless the server was started with them on.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from importlib import metadata
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.server import RESTServer, metrics_handler
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from components.serving import metrics
from components.serving.contract import (
    BINARY_MEDIA_TYPE,
    INFERENCE_HEADER_LENGTH,
    ClientError,
    check_content_type,
    parse_json_object,
    split_binary,
)
from components.serving.model import SklearnModel
from components.serving.options import ServingOptions

logger = logging.getLogger(__name__)

V1_PREDICT_PATH = "/v1/models/{model_name}:predict"
V2_INFER_PATH = "/v2/models/{model_name}/infer"
V2_VERSION_PATH = "/v2/models/{model_name}/versions/{model_version}"
V2_EXTENSIONS = ["binary_tensor_data"]
"""Open Inference Protocol extensions this server implements (Triton's names)."""
MODEL_REPOSITORY_EXTENSION = "model_repository"
_JSON = "application/json"
_NOT_POST = ["GET", "PUT", "DELETE", "PATCH"]
_V1_PREFIX, _V1_SUFFIX = "/v1/models/", ":predict"
_V2_PREFIX, _V2_SUFFIX = "/v2/models/", "/infer"
_VERSIONS = "/versions/"
_SHOWN = 60
"""Characters of a client-supplied name or path shown in a message or log line."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Lookup = Callable[[str], Any]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """KServe's error body shape: `{"error": "<message>"}`."""
    return Response(_error_body(message), status_code=status, media_type=_JSON, headers=headers)


def _json(content: Any, status: int = HTTPStatus.OK) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type=_JSON)


class ServingMiddleware:
    """413 for oversized bodies (KServe sets no REST limit, kserve#2810) and the fast inference path."""

    def __init__(self, app: ASGIApp, options: ServingOptions, *, lookup: Lookup) -> None:
        self.app = app
        self.max_bytes = options.max_body_bytes
        self.model_name = options.model_name
        self.lookup = lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: 413, answer an inference call directly, or hand the request to the routes."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_type = header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"content-type":
                content_type = value
            elif key == b"inference-header-content-length":
                header_length = value
        if declared is None:
            await self._guard_chunked(scope, receive, send)
            return
        # With a Content-Length the HTTP parser never delivers more bytes than declared.
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        target = _inference_target(scope) if scope["method"] == "POST" else None
        model = self.lookup(target[0]) if target else None
        if (
            target is None
            or not isinstance(model, SklearnModel)
            or not model.ready
            or (target[2] is not None and target[2] != model.version)
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        status, payload, json_length = await answer(
            model,
            content_type.decode("latin-1") if content_type is not None else None,
            body,
            v2=target[1],
            header_length=header_length.decode("latin-1") if header_length is not None else None,
        )
        await send({"type": "http.response.start", "status": status, "headers": _headers(len(payload), json_length)})
        await send({"type": "http.response.body", "body": payload})

    async def _guard_chunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        # No Content-Length (chunked upload): read up to the limit here, then replay it to the app. Rare enough
        # that buffering costs nothing in practice, and the app never sees an over-limit body.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], then=receive), send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics.record_rejection(self.model_name, "body_too_large")
        response = error_response(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body is larger than the {self.max_bytes}-byte limit"
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A `receive` that yields buffered messages, then defers to the real one (for disconnect events)."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


async def answer(
    model: SklearnModel, content_type: str | None, body: bytes, *, v2: bool, header_length: str | None = None
) -> tuple[int, bytes, int | None]:
    """Apply the whole contract to one inference call.

    Returns:
        (HTTP status, body, JSON length when binary outputs follow the JSON part, else None).
    """
    if not model.ready or model.loaded is None:
        return HTTPStatus.SERVICE_UNAVAILABLE, _error_body(f"model '{model.name}' is not ready"), None
    try:
        json_length = check_content_type(content_type, header_length, v2=v2)
        if json_length is None:
            request = model.parse(parse_json_object(body), v2=v2)
        else:
            payload, binary = split_binary(body, json_length)
            request = model.parse(payload, v2=v2, binary=binary)
        started = time.perf_counter()
        if model.loaded.runs_inline(len(request.x)):
            # Most calls take tens of microseconds: a thread hop would cost more than it frees.
            prediction = model.predict_rows(request)
        else:
            # Long calls (big forests, big batches, the joblib path) go to a thread: ONNX Runtime and numpy release
            # the GIL, so the event loop keeps reading other requests instead of queueing them behind this one.
            prediction = await run_in_threadpool(model.predict_rows, request)
        metrics.observe_predict_seconds(model.name, time.perf_counter() - started)
        reply, reply_json_length = model.render(request, prediction)
    except ClientError as exc:
        metrics.record_rejection(model.name, exc.reason)
        return exc.status, _error_body(exc.message), None
    except Exception:
        logger.exception("prediction failed for model %s", model.name)
        return (
            HTTPStatus.INTERNAL_SERVER_ERROR,
            _error_body("internal error while predicting; see the server log"),
            None,
        )
    # Monitoring runs after the response is handed back to the event loop, never in the client's latency.
    asyncio.get_running_loop().call_soon(model.after_prediction, request.x, prediction)
    return HTTPStatus.OK, reply, reply_json_length


def _inference_target(scope: Scope) -> tuple[str, bool, str | None] | None:
    """(model name, is V2, version or None) for the V1 predict and V2 infer paths, else None."""
    path: str = scope["path"]
    version = None
    if path.startswith(_V1_PREFIX) and path.endswith(_V1_SUFFIX):
        name, v2 = path[len(_V1_PREFIX) : -len(_V1_SUFFIX)], False
    elif path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX):
        name, v2 = path[len(_V2_PREFIX) : -len(_V2_SUFFIX)], True
        if _VERSIONS in name:
            name, version = name.split(_VERSIONS, 1)
            if not version or "/" in version:
                return None
    else:
        return None
    return (name, v2, version) if name and "/" not in name else None


def _headers(length: int, json_length: int | None) -> list[tuple[bytes, bytes]]:
    if json_length is None:
        return [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return [
        (b"content-type", BINARY_MEDIA_TYPE.encode()),
        (b"content-length", str(length).encode()),
        (INFERENCE_HEADER_LENGTH.encode(), str(json_length).encode()),
    ]


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def _shown(text: str) -> str:
    """A client-supplied string fit for a message or a log line: short, and no control characters."""
    cut = text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."
    return cut.encode("unicode_escape").decode("ascii")


def client_mistake(request: Request, status: int, message: str, reason: str, **headers: str) -> Response:
    """A refused request: the metric, one short log line (never a traceback) and the `{"error": ...}` body."""
    metrics.record_rejection(request.app.state.served_model_name, reason)
    logger.info("%d %s %s: %s", status, request.method, _shown(request.url.path), message)
    return error_response(status, message, headers or None)


class Routes:
    """Every REST route KServe registers, answered with this project's contract.

    Args:
        lookup: Model registry lookup by name (returns None for an unknown name).
        list_models: The names in the registry.
        options: The server's settings: `model_name` (the metric label for requests refused before lookup) and
            `enable_model_control` (serve `/v2/repository/models/<name>/load|unload`; off, they answer 403).
    """

    def __init__(self, lookup: Lookup, list_models: Callable[[], list[str]], options: ServingOptions) -> None:
        self.lookup = lookup
        self.list_models = list_models
        self.model_name = options.model_name
        self.model_control = options.enable_model_control

    def register(self, app: FastAPI) -> None:
        """Add the routes (plain Starlette routes: no request models, no 422)."""
        get, post = ["GET"], ["POST"]
        table: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
            ("/", self.live_v1, get),
            ("/metrics", metrics_handler, get),
            ("/v1/models", self.models_v1, get),
            (V1_PREDICT_PATH, self.infer, post),
            (V1_PREDICT_PATH, self.predict_wrong_method, _NOT_POST),
            ("/v1/models/{model_name}:explain", self.explain, post),
            ("/v1/models/{model_name}", self.model_ready_v1, get),
            ("/v2", self.server_metadata, get),
            ("/v2/health/live", self.live_v2, get),
            ("/v2/health/ready", self.server_ready, get),
            ("/v2/models", self.models_v2, get),
            ("/v2/models/{model_name}", self.model_metadata, get),
            (V2_VERSION_PATH, self.model_metadata, get),
            ("/v2/models/{model_name}/ready", self.model_ready_v2, get),
            (V2_VERSION_PATH + "/ready", self.model_ready_v2, get),
            (V2_INFER_PATH, self.infer, post),
            (V2_VERSION_PATH + "/infer", self.infer, post),
            ("/v2/repository/models/{model_name}/load", self.load, post),
            ("/v2/repository/models/{model_name}/unload", self.unload, post),
        ]
        for path, endpoint, methods in table:
            app.add_route(path, endpoint, methods=methods, include_in_schema=False)

    # --- model lookup ------------------------------------------------------------------------------------

    def _model(self, request: Request, *, ready: bool = False) -> SklearnModel | Response:
        """The served model named in the path (and version), or the 404/503 answer to send instead."""
        name = request.path_params["model_name"]
        model = self.lookup(name)
        if not isinstance(model, SklearnModel):
            return client_mistake(
                request,
                HTTPStatus.NOT_FOUND,
                f"model '{_shown(name)}' is not served here; GET /v2/models lists models",
                "unknown_model",
            )
        version = request.path_params.get("model_version")
        if version is not None and version != model.version:
            return client_mistake(
                request,
                HTTPStatus.NOT_FOUND,
                f"model '{model.name}' has no version '{_shown(version)}' here; it serves version '{model.version}'",
                "unknown_version",
            )
        if ready and not model.ready:
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"model '{model.name}' is not ready")
        return model

    # --- inference -------------------------------------------------------------------------------------------

    async def infer(self, request: Request) -> Response:
        """V1 predict and V2 infer when the fast path did not answer (unknown or unready model, other version)."""
        model = self._model(request, ready=True)
        if isinstance(model, Response):
            return model
        v2 = request.url.path.startswith("/v2/")
        status, body, json_length = await answer(
            model,
            request.headers.get("content-type"),
            await request.body(),
            v2=v2,
            header_length=request.headers.get(INFERENCE_HEADER_LENGTH),
        )
        headers = {INFERENCE_HEADER_LENGTH: str(json_length)} if json_length is not None else None
        media_type = _JSON if json_length is None else BINARY_MEDIA_TYPE
        return Response(body, status_code=status, media_type=media_type, headers=headers)

    async def predict_wrong_method(self, request: Request) -> Response:
        """405 with `Allow: POST` (a GET here would otherwise read `<name>:predict` as a model name)."""
        return client_mistake(
            request,
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed here; use POST",
            "method_not_allowed",
            Allow="POST",
        )

    async def explain(self, request: Request) -> Response:
        """KServe's V1 explain route: this predictor has no explainer."""
        model = self._model(request)
        if isinstance(model, Response):
            return model
        return client_mistake(
            request, HTTPStatus.NOT_IMPLEMENTED, f"model '{model.name}' has no explainer", "not_implemented"
        )

    # --- health, readiness, metadata ------------------------------------------------------------------------

    async def live_v1(self, request: Request) -> Response:
        """KServe's root liveness answer."""
        return _json({"status": "alive"})

    async def live_v2(self, request: Request) -> Response:
        """V2 server liveness: the process answers."""
        return _json({"live": True})

    async def server_ready(self, request: Request) -> Response:
        """V2 server readiness: ready only while the served model is loaded and serving."""
        model = self.lookup(self.model_name)
        if not isinstance(model, SklearnModel) or not model.ready:
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"model '{self.model_name}' is not ready")
        return _json({"ready": True})

    async def model_ready_v1(self, request: Request) -> Response:
        """V1 model status with the schema (task, typed features, classes): 200 ready, 503 not serving, 404 unknown."""
        model = self._model(request, ready=True)
        return model if isinstance(model, Response) else _json(model.v1_metadata())

    async def model_ready_v2(self, request: Request) -> Response:
        """V2 model readiness (also under `versions/<v>`)."""
        model = self._model(request, ready=True)
        return model if isinstance(model, Response) else _json({"name": model.name, "ready": True})

    async def models_v1(self, request: Request) -> Response:
        """V1 model list."""
        return _json({"models": self.list_models()})

    async def models_v2(self, request: Request) -> Response:
        """V2 model list (KServe's extension of the protocol)."""
        return _json({"models": self.list_models()})

    async def server_metadata(self, request: Request) -> Response:
        """V2 server metadata: name, version and the protocol extensions served."""
        extensions = V2_EXTENSIONS + ([MODEL_REPOSITORY_EXTENSION] if self.model_control else [])
        return _json({"name": "kserve", "version": metadata.version("kserve"), "extensions": extensions})

    async def model_metadata(self, request: Request) -> Response:
        """V2 model metadata (also under `versions/<v>`): inputs, outputs, versions and platform."""
        model = self._model(request)
        return model if isinstance(model, Response) else _json(model.metadata())

    # --- model repository control --------------------------------------------------------------------------

    async def load(self, request: Request) -> Response:
        """Re-verify and load the model directory (only with model control on)."""
        model = self._control(request)
        if isinstance(model, Response):
            return model
        if not model.ready and not await run_in_threadpool(model.load):
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, f"model '{model.name}' was refused at load")
        logger.warning("model '%s' loaded through the repository API", model.name)
        return _json({"name": model.name, "load": True})

    async def unload(self, request: Request) -> Response:
        """Stop serving the model (only with model control on): predicts and readiness answer 503 until a load."""
        model = self._control(request)
        if isinstance(model, Response):
            return model
        model.ready = False
        logger.warning("model '%s' unloaded through the repository API; the server is not ready", model.name)
        return _json({"name": model.name, "unload": True})

    def _control(self, request: Request) -> SklearnModel | Response:
        if not self.model_control:
            return client_mistake(
                request,
                HTTPStatus.FORBIDDEN,
                "model load/unload is disabled on this server (it is off unless the server is started with it on)",
                "control_disabled",
            )
        return self._model(request)


async def _http_exception_as_json(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return error_response(exc.status_code, str(exc.detail), headers)
    reason = "method_not_allowed" if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED else "bad_route"
    return client_mistake(request, exc.status_code, str(exc.detail), reason, **headers)


async def _validation_error_as_json(request: Request, exc: Exception) -> Response:
    # No route here declares a request model, so this is a guard: never FastAPI's 422 that echoes the input.
    return client_mistake(request, HTTPStatus.BAD_REQUEST, "request does not match this route", "bad_request")


class ProjectRESTServer(RESTServer):
    """KServe's REST server with our host, body limit, route table and fast inference path (no timing middleware)."""

    def __init__(
        self,
        app: str,
        data_plane: DataPlane,
        model_repository_extension: ModelRepositoryExtension,
        options: ServingOptions,
        **kwargs: Any,
    ) -> None:
        """KServe's RESTServer on `options`' port, workers, grace period and keep-alive timeout.

        Args:
            app: The FastAPI app's import string (KServe's).
            data_plane: KServe's dataplane over the model registry.
            model_repository_extension: KServe's model repository extension.
            options: The server's settings (host, body limit, model name, access log, model control, ...).
            **kwargs: Passed to KServe's RESTServer (event loop, access log format, SSL files).
        """
        super().__init__(
            app,
            data_plane,
            model_repository_extension,
            options.http_port,
            workers=options.workers,
            grace_period=options.grace_period,
            timeout_keep_alive=options.timeout_keep_alive,
            **kwargs,
        )
        self.options = options
        # KServe binds 0.0.0.0; a laptop run should stay on loopback unless asked otherwise.
        self.config.host = options.host

    def create_application(self) -> None:
        """Configure KServe's app, then put `ServingMiddleware` in front of it as the app uvicorn runs.

        Outside FastAPI, the fast path also skips FastAPI's and Starlette's own middleware layers. This runs in
        each worker process too (KServe's multi-worker mode calls it after unpickling this server).
        """
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from uvicorn.importer import import_from_string

        super().create_application()
        if not self.options.access_log:
            # uvicorn builds each access line's arguments whenever this logger has handlers, even disabled ones.
            access = logging.getLogger("uvicorn.access")
            access.handlers.clear()
            access.propagate = False
        self.config.app = ServingMiddleware(
            import_from_string(FASTAPI_APP_IMPORT_STRING), self.options, lookup=self.dataplane.model_registry.get_model
        )
        # Everything loaded so far (kserve, FastAPI, sklearn, the model) lives as long as the process. Frozen, the
        # garbage collector stops re-scanning it: without this, the objects a ~1 MB JSON body creates trigger full
        # collections over a million startup objects, stalling every other request for ~0.2 s.
        gc.collect()
        gc.freeze()

    def _add_middlewares(self, app: FastAPI) -> None:
        # KServe's TimingMiddleware only feeds a trace log line per request; the predict histogram stays.
        pass

    def _register_endpoints(self, app: FastAPI) -> None:
        # Not KServe's: its routes validate with pydantic (422 echoing the body), expose unload to every client
        # and answer readiness for the server rather than the model. Same URLs, our contract.
        app.state.served_model_name = self.options.model_name
        registry = self.dataplane.model_registry
        Routes(registry.get_model, lambda: list(registry.get_models().keys()), self.options).register(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(StarletteHTTPException, _http_exception_as_json)
        app.add_exception_handler(RequestValidationError, _validation_error_as_json)
