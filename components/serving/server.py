"""Start the model server on one model directory: the function behind `pipeline.py serve` and `kfp-sklearn-serve`."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ROWS,
)
from components.model_artifact import ModelIntegrityError
from components.names import check_model_name
from components.serving.model import SklearnModel
from components.serving.slow_clients import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
)

logger = logging.getLogger(__name__)

DEFAULT_GRACE_PERIOD_SECONDS = 30
"""In-flight requests get this long to finish on SIGTERM; match the pod's terminationGracePeriodSeconds."""
DEFAULT_KEEP_ALIVE_SECONDS = 65
"""KServe's default: longer than a proxy's idle timeout (Istio/Envoy 60 s), so the proxy closes first."""
GRPC_MAX_SEND_BYTES = 64 << 20
"""Replies are small (labels, probabilities); this only bounds a pathological one."""


class PortInUseError(RuntimeError):
    """A port the server must bind is taken; the message names it (checked before the model is loaded)."""


def check_ports_free(host: str, ports: Sequence[tuple[str, int]]) -> None:
    """Bind and release each `(protocol, port)` on `host`, so a busy port is reported first, in one line.

    Raises:
        PortInUseError: A port is in use (or the address cannot be bound).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for protocol, port in ports:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # uvicorn binds with SO_REUSEADDR too: a port in TIME_WAIT is free, one with a listener is not.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(
                        f"{protocol} port {port} on {host} is already in use (another server?); choose another port"
                    ) from None
                raise PortInUseError(f"cannot bind {protocol} port {port} on {host}: {exc.strerror}") from None


def build_model(
    model_dir: Path,
    *,
    model_name: str,
    max_rows: int = DEFAULT_MAX_ROWS,
    return_probabilities: bool = False,
    use_onnx: bool = True,
    payload_log_dir: Path | None = None,
    model_digest: str | None = None,
    model_version: str | None = None,
) -> SklearnModel:
    """Create and load the served model.

    Raises:
        ModelIntegrityError: The directory was refused (the message says why); nothing was unpickled.
    """
    model = SklearnModel(
        model_name,
        model_dir,
        max_rows=max_rows,
        return_probabilities=return_probabilities,
        use_onnx=use_onnx,
        payload_log_dir=payload_log_dir,
        model_version=model_version,
        expected_digest=model_digest,
    )
    if not model.load():
        raise ModelIntegrityError(model.load_error or f"model directory {model_dir} could not be loaded")
    return model


def serve(
    model_dir: Path,
    *,
    model_name: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_HTTP_PORT,
    grpc_port: int | None = None,
    workers: int = 1,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    grpc_max_receive_bytes: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    return_probabilities: bool = False,
    use_onnx: bool = True,
    payload_log_dir: Path | None = None,
    grace_period: int = DEFAULT_GRACE_PERIOD_SECONDS,
    access_log: bool = False,
    model_digest: str | None = None,
    model_version: str | None = None,
    enable_model_control: bool = False,
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_SECONDS,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> None:
    """Serve `model_dir` over KServe V1/V2 REST (and V2 gRPC) until SIGINT/SIGTERM (in-flight requests finish first).

    Args:
        model_dir: Model directory written by train (verified before anything is unpickled; never written to).
        model_name: Name in the URLs, e.g. `/v1/models/<model_name>:predict`.
        host: Interface to bind; 127.0.0.1 keeps a laptop server private, 0.0.0.0 is for containers.
        port: HTTP port.
        grpc_port: Serve the Open Inference Protocol over gRPC on this port too (None: REST only).
        workers: HTTP server processes (KServe `--workers`); each holds its own copy of the model. gRPC is
            answered by the main process, as in stock KServe.
        max_body_bytes: Larger request bodies get 413.
        grpc_max_receive_bytes: Larger gRPC messages get RESOURCE_EXHAUSTED (None: `max_body_bytes`).
        max_rows: More instances in one request get 400.
        return_probabilities: Answer with class probabilities unless a request says otherwise.
        use_onnx: Use the verified ONNX fast path when the model directory has one.
        payload_log_dir: Hand every successful prediction to a PayloadLogWriter writing here.
        grace_period: Seconds in-flight requests get to finish on shutdown.
        access_log: One log line per request (uvicorn's access log).
        model_digest: The pinned `sha256:...` digest of the whole model directory; anything else is refused
            before it is unpickled.
        model_version: The version id the routes and metadata report (None: derived from the digest).
        enable_model_control: Serve KServe's model load/unload endpoints (off: nobody can unload the model).
        keep_alive_timeout: Seconds an idle HTTP connection stays open (before a request and between requests).
        header_timeout: Seconds a request's headers may take from its first byte.
        body_timeout: Seconds a request's body may take after its headers.
        max_connections: Open HTTP connections per process; beyond it the oldest idle or slow one is closed.

    Raises:
        InvalidNameError: `model_name` is not a valid model name (checked before anything else).
        PortInUseError: A port is taken (checked before the model is loaded).
        ModelIntegrityError: The model directory was refused; the server never started.
        ValueError: A limit is not positive.
    """
    check_model_name(model_name)
    limits = ConnectionLimits(
        idle_timeout=keep_alive_timeout,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
    )
    ports = [("HTTP", port)] + ([("gRPC", grpc_port)] if grpc_port is not None else [])
    if grpc_port is not None and grpc_port == port:
        raise PortInUseError(f"HTTP and gRPC cannot share port {port}; choose another --grpc_port")
    check_ports_free(host, ports)
    _configure_logging(access_log)
    model = build_model(
        model_dir,
        model_name=model_name,
        max_rows=max_rows,
        return_probabilities=return_probabilities,
        use_onnx=use_onnx,
        payload_log_dir=payload_log_dir,
        model_digest=model_digest,
        model_version=model_version,
    )
    server = _ProjectModelServer(
        host=host,
        http_port=port,
        grpc_port=grpc_port,
        workers=workers,
        max_body_bytes=max_body_bytes,
        grpc_max_receive_bytes=grpc_max_receive_bytes or max_body_bytes,
        model_name=model_name,
        grace_period=grace_period,
        access_log=access_log,
        enable_model_control=enable_model_control,
        timeout_keep_alive=keep_alive_timeout,
        limits=limits,
    )
    grpc_note = f", gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    logger.info(
        "serving %s on http://%s:%d%s (%d worker(s), backend %s)",
        model_name,
        host,
        port,
        grpc_note,
        workers,
        _backend(model),
    )
    try:
        server.start([model])
    finally:
        model.close_payload_log()


def _backend(model: SklearnModel) -> str:
    return model.loaded.backend if model.loaded is not None else "none"


def _configure_logging(access_log: bool) -> None:
    from kserve import logging as kserve_logging

    kserve_logging.configure_logging()
    project = logging.getLogger("components")
    if not project.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        project.addHandler(handler)
        project.setLevel(logging.INFO)
        project.propagate = False
    if not access_log:
        logging.getLogger("uvicorn.access").disabled = True


def _model_server_class() -> type:
    """Build the ModelServer subclass lazily: importing kserve.model_server parses sys.argv and builds an app."""
    from kserve import ModelServer
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess, RESTServerProcess

    from components.serving.app import ProjectRESTServer
    from components.serving.grpc_server import GRPCServer, InferenceServicer
    from components.serving.slow_clients import GuardedHttpToolsProtocol

    class WorkerProcesses(RESTServerMultiProcess):
        """KServe's worker supervisor, replacing only workers that exited.

        KServe pings every worker each 0.5 s with a blocking 5 s wait on the event loop: that loop also serves gRPC,
        and on a busy machine a worker still importing after 5 s is killed and respawned forever.
        """

        async def keep_subprocess_alive(self, sockets: list[Any]) -> None:
            for index, process in enumerate(self._processes):
                if self.should_exit.is_set():
                    return
                if process._process.is_alive():  # no ping: see the class docstring
                    continue
                logger.warning("HTTP worker process [%s] exited; starting a new one", process.pid)
                replacement = RESTServerProcess(sockets, self._rest_server.run)
                replacement.start()
                self._processes[index] = replacement

    class ProjectModelServer(ModelServer):
        """KServe's ModelServer with our REST server (host, body limit, fast routes, slow-client guard) and gRPC.

        KServe's own gRPC server stays off; ours serves the same contract as REST.
        """

        def __init__(
            self,
            *,
            host: str,
            grpc_port: int | None,
            max_body_bytes: int,
            grpc_max_receive_bytes: int,
            model_name: str,
            access_log: bool,
            enable_model_control: bool,
            limits: ConnectionLimits,
            **kwargs: Any,
        ) -> None:
            super().__init__(enable_grpc=False, grpc_port=grpc_port or 0, **kwargs)
            self.access_log = access_log
            self.host = host
            self.serve_grpc = grpc_port is not None
            self.max_body_bytes = max_body_bytes
            self.grpc_max_receive_bytes = grpc_max_receive_bytes
            self.model_name = model_name
            self.enable_model_control = enable_model_control
            self.limits = limits
            self._stopping = False

        def stop(self, sig: int) -> None:
            # uvicorn re-raises every signal it caught during shutdown; KServe's stop() unloads the models and
            # fails with KeyError the second time, turning a clean exit into exit code 1.
            if self._stopping:
                return
            self._stopping = True
            super().stop(sig)

        def _rest_server_for(self) -> ProjectRESTServer:
            rest = ProjectRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                host=self.host,
                max_body_bytes=self.max_body_bytes,
                model_name=self.model_name,
                access_log=self.access_log,
                enable_model_control=self.enable_model_control,
                access_log_format=self.access_log_format,
                workers=self.workers,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
            )
            # Module-level class + partial: picklable into KServe's worker processes.
            rest.config.http = functools.partial(GuardedHttpToolsProtocol, limits=self.limits)
            return rest

        def _grpc_server_for(self) -> GRPCServer:
            servicer = InferenceServicer(
                self.dataplane.model_registry.get_model,
                label=self.model_name,
                server_name=str(self.dataplane.metadata()["name"]),
                server_version=str(self.dataplane.metadata()["version"]),
                extensions=[],
            )
            servicer.watch(list(self.registered_models.get_models()))
            return GRPCServer(
                servicer,
                host=self.host,
                port=self.grpc_port,
                max_receive_bytes=self.grpc_max_receive_bytes,
                max_send_bytes=GRPC_MAX_SEND_BYTES,
                grace_period=self.grace_period,
            )

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            rest = self._rest_server_for()
            if self.workers > 1:
                multi = WorkerProcesses(
                    FASTAPI_APP_IMPORT_STRING,
                    self.dataplane,
                    self.model_repository_extension,
                    self.http_port,
                    workers=self.workers,
                    grace_period=self.grace_period,
                    event_loop=self.event_loop,
                    timeout_keep_alive=self.timeout_keep_alive,
                )
                # Each worker process runs this server's `run` (pickled), so it gets our routes and host.
                multi._rest_server = rest
                self._rest_multiprocess_server = multi
                self.servers.append(multi.start())
            else:
                self._rest_server = rest
                self.servers.append(rest.start())
            if self.serve_grpc:
                # KServe's stop() stops `_grpc_server` on SIGTERM, after the REST server's graceful shutdown.
                self._grpc_server = self._grpc_server_for()
                self.servers.append(self._grpc_server.start())
            # KServe's single-worker path runs uvicorn inside asyncio.run, i.e. on the stdlib loop even when
            # uvloop is installed; uvloop's faster socket and callback handling is free throughput.
            with asyncio.Runner(loop_factory=_loop_factory(self.event_loop)) as runner:
                runner.get_loop()  # creates the loop and makes it current, which setup_event_loop configures
                self.setup_event_loop()
                self.register_signal_handler()
                runner.run(self._serve())

    return ProjectModelServer


def _loop_factory(event_loop: str) -> Any:
    """The loop factory: uvloop, unless KServe's `--event-loop asyncio` asked for the stdlib loop."""
    if event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # uvloop is a kserve dependency on Linux; fall back quietly elsewhere
        return None
    return uvloop.new_event_loop


def _ProjectModelServer(**kwargs: Any) -> Any:
    return _model_server_class()(**kwargs)
