"""Start the model server on one model directory: the function behind `pipeline.py serve` and `kfp-sklearn-serve`."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ROWS,
)
from components.model_artifact import ModelIntegrityError
from components.serving.model import SklearnModel

logger = logging.getLogger(__name__)

DEFAULT_GRACE_PERIOD_SECONDS = 30
"""In-flight requests get this long to finish on SIGTERM; match the pod's terminationGracePeriodSeconds."""


def build_model(
    model_dir: Path,
    *,
    model_name: str,
    max_rows: int = DEFAULT_MAX_ROWS,
    return_probabilities: bool = False,
    use_onnx: bool = True,
    payload_log_dir: Path | None = None,
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
    workers: int = 1,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
    return_probabilities: bool = False,
    use_onnx: bool = True,
    payload_log_dir: Path | None = None,
    grace_period: int = DEFAULT_GRACE_PERIOD_SECONDS,
    access_log: bool = False,
) -> None:
    """Serve `model_dir` over KServe V1 and V2 REST until SIGINT/SIGTERM (in-flight requests finish first).

    Args:
        model_dir: Model directory written by train (verified before anything is unpickled; never written to).
        model_name: Name in the URLs, e.g. `/v1/models/<model_name>:predict`.
        host: Interface to bind; 127.0.0.1 keeps a laptop server private, 0.0.0.0 is for containers.
        port: HTTP port.
        workers: Server processes (KServe `--workers`); each holds its own copy of the model.
        max_body_bytes: Larger request bodies get 413.
        max_rows: More instances in one request get 400.
        return_probabilities: Answer with class probabilities unless a request says otherwise.
        use_onnx: Use the verified ONNX fast path when the model directory has one.
        payload_log_dir: Hand every successful prediction to a PayloadLogWriter writing here.
        grace_period: Seconds in-flight requests get to finish on shutdown.
        access_log: One log line per request (uvicorn's access log).

    Raises:
        ModelIntegrityError: The model directory was refused; the server never started.
    """
    _configure_logging(access_log)
    model = build_model(
        model_dir,
        model_name=model_name,
        max_rows=max_rows,
        return_probabilities=return_probabilities,
        use_onnx=use_onnx,
        payload_log_dir=payload_log_dir,
    )
    server = _ProjectModelServer(
        host=host,
        http_port=port,
        workers=workers,
        max_body_bytes=max_body_bytes,
        model_name=model_name,
        grace_period=grace_period,
        access_log=access_log,
    )
    logger.info(
        "serving %s on http://%s:%d (%d worker(s), backend %s)", model_name, host, port, workers, _backend(model)
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
    from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess

    from components.serving.app import ProjectRESTServer

    class ProjectModelServer(ModelServer):
        """KServe's ModelServer, REST only, with our REST server class (host, body limit, fast routes)."""

        def __init__(self, *, host: str, max_body_bytes: int, model_name: str, access_log: bool, **kwargs: Any) -> None:
            super().__init__(enable_grpc=False, **kwargs)
            self.access_log = access_log
            self.host = host
            self.max_body_bytes = max_body_bytes
            self.model_name = model_name
            self._stopping = False

        def stop(self, sig: int) -> None:
            # uvicorn re-raises every signal it caught during shutdown; KServe's stop() unloads the models and
            # fails with KeyError the second time, turning a clean exit into exit code 1.
            if self._stopping:
                return
            self._stopping = True
            super().stop(sig)

        def _rest_server_for(self) -> ProjectRESTServer:
            return ProjectRESTServer(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                host=self.host,
                max_body_bytes=self.max_body_bytes,
                model_name=self.model_name,
                access_log=self.access_log,
                access_log_format=self.access_log_format,
                workers=self.workers,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
                ssl_certfile=self.ssl_certfile,
                ssl_keyfile=self.ssl_keyfile,
            )

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            rest = self._rest_server_for()
            if self.workers > 1:
                multi = RESTServerMultiProcess(
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
