"""HTTP layer: KServe's REST server plus a body-size guard and direct routes for the two inference calls.

KServe's stock inference path decodes the body, walks the dataplane (CloudEvent checks, header copies,
preprocess/validate/predict/postprocess with three latency histograms) and a timing middleware on every
request. For a 30 us model that bookkeeping is most of the latency, so a POST to V1 `:predict` or V2 `/infer` of
a ready model is answered by `ServingMiddleware` straight from the ASGI messages (no Request/Response objects, no
router walk), with the same URLs, bodies and error shape (`{"error": "..."}`). Routes registered ahead of KServe's
give the JSON 404/405/503 for unknown models, wrong methods and unready models. Health, readiness, metadata,
model listing and `/metrics` stay KServe's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI
from kserve.protocol.rest.server import RESTServer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from components.serving import metrics
from components.serving.contract import ClientError, check_content_type, parse_json_object
from components.serving.model import SklearnModel

logger = logging.getLogger(__name__)

V1_PREDICT_PATH = "/v1/models/{model_name}:predict"
V2_INFER_PATH = "/v2/models/{model_name}/infer"
_JSON = "application/json"
_NOT_POST = ["GET", "PUT", "DELETE", "PATCH"]
_V1_PREFIX, _V1_SUFFIX = "/v1/models/", ":predict"
_V2_PREFIX, _V2_SUFFIX = "/v2/models/", "/infer"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """KServe's error body shape: `{"error": "<message>"}`."""
    return Response(_error_body(message), status_code=status, media_type=_JSON, headers=headers)


class ServingMiddleware:
    """413 for oversized bodies (KServe sets no REST limit, kserve#2810) and the fast inference path."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, model_name: str, lookup: Callable[[str], Any]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.model_name = model_name
        self.lookup = lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: 413, answer an inference call directly, or hand the request to KServe's app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = content_type = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                declared = value
            elif key == b"content-type":
                content_type = value
        if declared is None:
            await self._guard_chunked(scope, receive, send)
            return
        # With a Content-Length the HTTP parser never delivers more bytes than declared.
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        target = _inference_target(scope) if scope["method"] == "POST" else None
        model = self.lookup(target[0]) if target else None
        if target is None or not isinstance(model, SklearnModel) or not model.ready:
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
        ctype = content_type.decode("latin-1") if content_type is not None else None
        status, payload = await answer(model, ctype, body, v2=target[1])
        await send({"type": "http.response.start", "status": status, "headers": _json_headers(len(payload))})
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


def register_fast_routes(app: FastAPI, lookup: Callable[[str], Any], *, model_name: str) -> None:
    """Add V1 predict and V2 infer routes: JSON 404/503 for unknown or unready models, 405 for other methods.

    Args:
        app: KServe's FastAPI app, before KServe adds its own routes (the first matching route wins).
        lookup: Model registry lookup by name (returns None for an unknown name).
        model_name: The served model, used as the metric label for requests refused before lookup.
    """

    async def v1_predict(request: Request) -> Response:
        return await _infer(request, lookup, model_name, v2=False)

    async def v2_infer(request: Request) -> Response:
        return await _infer(request, lookup, model_name, v2=True)

    async def v1_predict_wrong_method(request: Request) -> Response:
        metrics.record_rejection(model_name, "method_not_allowed")
        return error_response(
            HTTPStatus.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here; use POST", {"Allow": "POST"}
        )

    app.add_route(V1_PREDICT_PATH, v1_predict, methods=["POST"], include_in_schema=False)
    app.add_route(V1_PREDICT_PATH, v1_predict_wrong_method, methods=_NOT_POST, include_in_schema=False)
    app.add_route(V2_INFER_PATH, v2_infer, methods=["POST"], include_in_schema=False)


async def _infer(request: Request, lookup: Callable[[str], Any], label: str, *, v2: bool) -> Response:
    name = request.path_params["model_name"]
    model = lookup(name)
    if not isinstance(model, SklearnModel):
        metrics.record_rejection(label, "unknown_model")
        return error_response(
            HTTPStatus.NOT_FOUND, f"model '{name[:60]}' is not served here; GET /v1/models lists models"
        )
    status, payload = await answer(model, request.headers.get("content-type"), await request.body(), v2=v2)
    return Response(payload, status_code=status, media_type=_JSON)


async def answer(model: SklearnModel, content_type: str | None, body: bytes, *, v2: bool) -> tuple[int, bytes]:
    """Apply the whole contract to one inference call; returns (HTTP status, JSON body)."""
    if not model.ready or model.loaded is None:
        return HTTPStatus.SERVICE_UNAVAILABLE, _error_body(f"model '{model.name}' is not ready")
    try:
        check_content_type(content_type)
        request = model.parse(parse_json_object(body), v2=v2)
        started = time.perf_counter()
        if model.loaded.runs_inline(len(request.x)):
            # Most calls take tens of microseconds: a thread hop would cost more than it frees.
            prediction = model.predict_rows(request)
        else:
            # Long calls (big forests, big batches, the joblib path) go to a thread: ONNX Runtime and numpy release
            # the GIL, so the event loop keeps reading other requests instead of queueing them behind this one.
            prediction = await run_in_threadpool(model.predict_rows, request)
        metrics.observe_predict_seconds(model.name, time.perf_counter() - started)
        reply = model.reply(request, prediction)
    except ClientError as exc:
        metrics.record_rejection(model.name, exc.reason)
        return exc.status, _error_body(exc.message)
    except Exception:
        logger.exception("prediction failed for model %s", model.name)
        return HTTPStatus.INTERNAL_SERVER_ERROR, _error_body("internal error while predicting; see the server log")
    # Monitoring runs after the response is handed back to the event loop, never in the client's latency.
    asyncio.get_running_loop().call_soon(model.after_prediction, request.x, prediction)
    return HTTPStatus.OK, orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY)


def _inference_target(scope: Scope) -> tuple[str, bool] | None:
    """(model name, is V2) for `/v1/models/<name>:predict` and `/v2/models/<name>/infer`, else None."""
    path: str = scope["path"]
    if path.startswith(_V1_PREFIX) and path.endswith(_V1_SUFFIX):
        name, v2 = path[len(_V1_PREFIX) : -len(_V1_SUFFIX)], False
    elif path.startswith(_V2_PREFIX) and path.endswith(_V2_SUFFIX):
        name, v2 = path[len(_V2_PREFIX) : -len(_V2_SUFFIX)], True
    else:
        return None
    return (name, v2) if name and "/" not in name else None


def _json_headers(length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


async def _http_exception_as_json(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < HTTPStatus.INTERNAL_SERVER_ERROR:
        reason = "method_not_allowed" if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED else "bad_route"
        metrics.record_rejection(request.app.state.served_model_name, reason)
    return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))


class ProjectRESTServer(RESTServer):
    """KServe's REST server with our host, body limit and fast inference routes (and no timing middleware)."""

    def __init__(
        self, *args: Any, host: str, max_body_bytes: int, model_name: str, access_log: bool, **kwargs: Any
    ) -> None:
        """Same arguments as `kserve.protocol.rest.server.RESTServer`, plus bind host, body limit, access log."""
        super().__init__(*args, **kwargs)
        self.access_log = access_log
        # KServe binds 0.0.0.0; a laptop run should stay on loopback unless asked otherwise.
        self.config.host = host
        self.max_body_bytes = max_body_bytes
        self.model_name = model_name

    def create_application(self) -> None:
        """Configure KServe's app, then put `ServingMiddleware` in front of it as the app uvicorn runs.

        Outside FastAPI, the fast path also skips FastAPI's and Starlette's own middleware layers. This runs in
        each worker process too (KServe's multi-worker mode calls it after unpickling this server).
        """
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from uvicorn.importer import import_from_string

        super().create_application()
        if not self.access_log:
            # uvicorn builds each access line's arguments whenever this logger has handlers, even disabled ones.
            access = logging.getLogger("uvicorn.access")
            access.handlers.clear()
            access.propagate = False
        self.config.app = ServingMiddleware(
            import_from_string(FASTAPI_APP_IMPORT_STRING),
            max_bytes=self.max_body_bytes,
            model_name=self.model_name,
            lookup=self.dataplane.model_registry.get_model,
        )

    def _add_middlewares(self, app: FastAPI) -> None:
        # KServe's TimingMiddleware only feeds a trace log line per request; the predict histogram stays.
        pass

    def _register_endpoints(self, app: FastAPI) -> None:
        app.state.served_model_name = self.model_name
        register_fast_routes(app, self.dataplane.model_registry.get_model, model_name=self.model_name)
        super()._register_endpoints(app)

    def _add_exception_handlers(self, app: FastAPI) -> None:
        super()._add_exception_handlers(app)
        app.add_exception_handler(StarletteHTTPException, _http_exception_as_json)
