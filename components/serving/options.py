"""`ServingOptions`: every setting of the model server, validated once and passed whole through the serving stack.

`kfp-sklearn-serve`'s flags and `pipeline.py serve` build one; the server, the model, the REST app and the gRPC
server read the fields they need from it. Field names are the `kfp-sklearn-serve` flag names (KServe's, underscored).
Importing this module is cheap (no kserve, no uvicorn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components.constants import DEFAULT_HOST, DEFAULT_HTTP_PORT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ROWS
from components.names import check_model_name

DEFAULT_GRACE_PERIOD_SECONDS = 30
"""In-flight requests get this long to finish on SIGTERM; match the pod's terminationGracePeriodSeconds."""
DEFAULT_KEEP_ALIVE_SECONDS = 65
"""KServe's default: longer than a proxy's idle timeout (Istio/Envoy 60 s), so the proxy closes first."""
DEFAULT_HEADER_TIMEOUT_S = 10.0
"""A request's headers must arrive within this long of its first byte (slowloris)."""
DEFAULT_BODY_TIMEOUT_S = 30.0
"""A body must arrive within this long of its headers: 1 MiB at ~35 KB/s."""
DEFAULT_MAX_CONNECTIONS = 1000
"""Open HTTP connections per process before the oldest idle or slow one is evicted; keep it below `ulimit -n`."""

_AT_LEAST_ONE = ("max_body_bytes", "max_rows", "workers", "max_connections", "timeout_keep_alive")
_POSITIVE = ("header_timeout", "body_timeout")


class ServingOptionError(ValueError):
    """An option is out of range; `option` is its field (= `kfp-sklearn-serve` flag) name, `rule` what it must be."""

    def __init__(self, option: str, rule: str) -> None:
        """Name the option and the rule it breaks."""
        super().__init__(f"{option} {rule}")
        self.option = option
        self.rule = rule


@dataclass(frozen=True, kw_only=True)
class ServingOptions:
    """The model server's settings; construction validates them (see `ServingOptionError`, `InvalidNameError`)."""

    model_dir: Path
    """Model directory written by the train step (verified before anything is unpickled; never written to)."""
    model_name: str
    """Name in the URLs, e.g. `/v1/models/<model_name>:predict`."""
    host: str = DEFAULT_HOST
    """Interface to bind: 127.0.0.1 keeps a laptop server private, 0.0.0.0 is for containers."""
    http_port: int = DEFAULT_HTTP_PORT
    """HTTP port (KServe V1/V2 REST)."""
    grpc_port: int | None = None
    """Serve the Open Inference Protocol over gRPC on this port too (None: REST only)."""
    workers: int = 1
    """HTTP server processes, each with its own copy of the model; gRPC is answered by the main process."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Larger request bodies get 413."""
    grpc_max_receive_message_length: int | None = None
    """Larger gRPC messages get RESOURCE_EXHAUSTED (None: `max_body_bytes`)."""
    max_rows: int = DEFAULT_MAX_ROWS
    """More instances in one request get 400."""
    return_probabilities: bool = False
    """Answer with class probabilities unless a request says otherwise (ignored for a regression model)."""
    use_onnx: bool = True
    """Use the verified ONNX fast path when the model directory has one."""
    payload_log_dir: Path | None = None
    """Hand every successful prediction to a PayloadLogWriter writing Parquet here (None: no payload log)."""
    grace_period: int = DEFAULT_GRACE_PERIOD_SECONDS
    """Seconds in-flight requests get to finish on shutdown."""
    access_log: bool = False
    """One log line per request (uvicorn's access log; costs more than an ONNX predict)."""
    model_digest: str | None = None
    """Pinned `sha256:<hex>` digest of the whole model directory; anything else is refused before unpickling."""
    model_version: str | None = None
    """Version id the V2 routes and metadata report (None: derived from the directory's digest)."""
    enable_model_control: bool = False
    """Serve the model load/unload endpoints (off: no client can take the model out of service)."""
    timeout_keep_alive: int = DEFAULT_KEEP_ALIVE_SECONDS
    """Seconds an idle HTTP connection stays open (before a request and between requests)."""
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S
    """Seconds a request's headers may take from its first byte."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S
    """Seconds a request's body may take after its headers."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open HTTP connections per process; beyond it the oldest idle or slow one is closed."""

    def __post_init__(self) -> None:
        """Refuse out-of-range limits, then a bad model name, each in one line.

        Raises:
            ServingOptionError: A limit is out of range.
            InvalidNameError: `model_name` is not a valid model name.
        """
        for name in _AT_LEAST_ONE:
            if getattr(self, name) < 1:
                raise ServingOptionError(name, "must be at least 1")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ServingOptionError(name, "must be positive")
        receive = self.grpc_max_receive_message_length
        if receive is not None and receive < 1:
            raise ServingOptionError("grpc_max_receive_message_length", "must be at least 1")
        check_model_name(self.model_name)

    @property
    def grpc_max_receive_bytes(self) -> int:
        """The gRPC receive limit in effect: `grpc_max_receive_message_length`, else `max_body_bytes`."""
        return self.grpc_max_receive_message_length or self.max_body_bytes
