"""Start the model server on one model directory: the function behind `pipeline.py serve` and `kfp-sklearn-serve`."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import functools
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.model_artifact import ModelIntegrityError
from components.serving.model import SklearnModel
from components.serving.options import ServingOptions
from components.serving.slow_clients import ConnectionLimits

logger = logging.getLogger(__name__)

_RENAMED = {
    "port": "http_port",
    "keep_alive_timeout": "timeout_keep_alive",
    "grpc_max_receive_bytes": "grpc_max_receive_message_length",
}
"""`serve()` keywords spelled differently from the `ServingOptions` fields they set."""


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


def build_model(options: ServingOptions) -> SklearnModel:
    """Create and load the served model.

    Raises:
        ModelIntegrityError: The directory was refused (the message says why); nothing was unpickled.
    """
    model = SklearnModel(options)
    if not model.load():
        raise ModelIntegrityError(model.load_error or f"model directory {options.model_dir} could not be loaded")
    return model


def serve(model_dir: Path, *, model_name: str, **fields: Any) -> None:
    """Keyword form of `run`: build `ServingOptions` from `model_dir`, `model_name` and its fields, then serve.

    Args:
        model_dir: Model directory written by train.
        model_name: Name in the URLs.
        **fields: Any other `ServingOptions` field by name; the older keywords `port`, `keep_alive_timeout` and
            `grpc_max_receive_bytes` set `http_port`, `timeout_keep_alive` and `grpc_max_receive_message_length`.

    Raises:
        ServingOptionError: A limit is out of range.
        InvalidNameError: `model_name` is not a valid model name.
        PortInUseError: A port is taken (checked before the model is loaded).
        ModelIntegrityError: The model directory was refused; the server never started.
    """
    renamed = {_RENAMED.get(name, name): value for name, value in fields.items()}
    run(ServingOptions(model_dir=Path(model_dir), model_name=model_name, **renamed))


def run(options: ServingOptions) -> None:
    """Serve `options.model_dir` over KServe V1/V2 REST (and V2 gRPC) until SIGINT/SIGTERM (in-flight finish first).

    Args:
        options: Every server setting, already validated (see `ServingOptions` for each field).

    Raises:
        PortInUseError: A port is taken (checked before the model is loaded).
        ModelIntegrityError: The model directory was refused; the server never started.
    """
    host, port, grpc_port = options.host, options.http_port, options.grpc_port
    if grpc_port is not None and grpc_port == port:
        raise PortInUseError(f"HTTP and gRPC cannot share port {port}; choose another --grpc_port")
    check_ports_free(host, [("HTTP", port)] + ([("gRPC", grpc_port)] if grpc_port is not None else []))
    _configure_logging(options.access_log)
    model = build_model(options)
    server = create_model_server(options)
    grpc_note = f", gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    logger.info(
        "serving %s on http://%s:%d%s (%d worker(s), backend %s)",
        options.model_name,
        host,
        port,
        grpc_note,
        options.workers,
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

        KServe's own gRPC server stays off; ours serves the same contract as REST. Settings KServe's parser
        owns and `ServingOptions` does not (event loop, SSL files, access log format) keep KServe's defaults.
        """

        def __init__(self, options: ServingOptions) -> None:
            super().__init__(
                http_port=options.http_port,
                grpc_port=options.grpc_port or 0,
                enable_grpc=False,
                workers=options.workers,
                grace_period=options.grace_period,
                timeout_keep_alive=options.timeout_keep_alive,
            )
            self.options = options
            self._stopping = False

        def stop(self, sig: int) -> None:
            # uvicorn re-raises every signal it caught during shutdown; KServe's stop() unloads the models and
            # fails with KeyError the second time, turning a clean exit into exit code 1.
            if self._stopping:
                return
            self._stopping = True
            super().stop(sig)

        def _rest_server_for(self) -> ProjectRESTServer:
            # KServe moves the default port to 8443 when given SSL files; the REST server binds what KServe chose.
            options = dataclasses.replace(self.options, http_port=self.http_port)
            rest = ProjectRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                options,
                access_log_format=self.access_log_format,
                event_loop=self.event_loop,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
            )
            limits = ConnectionLimits(
                idle_timeout=options.timeout_keep_alive,
                header_timeout=options.header_timeout,
                body_timeout=options.body_timeout,
                max_connections=options.max_connections,
            )
            # Module-level class + partial: picklable into KServe's worker processes.
            rest.config.http = functools.partial(GuardedHttpToolsProtocol, limits=limits)
            return rest

        def _grpc_server_for(self) -> GRPCServer:
            servicer = InferenceServicer(
                self.dataplane.model_registry.get_model,
                label=self.options.model_name,
                server_name=str(self.dataplane.metadata()["name"]),
                server_version=str(self.dataplane.metadata()["version"]),
                extensions=[],
            )
            servicer.watch(list(self.registered_models.get_models()))
            return GRPCServer(servicer, self.options)

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
            if self.options.grpc_port is not None:
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


def create_model_server(options: ServingOptions) -> Any:
    """The project's KServe ModelServer for `options` (its class is built on first use, see `_model_server_class`)."""
    return _model_server_class()(options)
