"""`kfp-sklearn-serve` / `python -m components.serving`: the predictor a KServe ServingRuntime runs.

Accepts KServe's standard model-server flags (`--model_name`, `--http_port`, `--grpc_port`, `--workers`, ...) as a
ServingRuntime passes them, plus `--model_dir` and this server's own limits.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from components.constants import (
    CONTAINER_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_ROWS,
    MODEL_DIGEST_ENV,
    MODEL_VERSION_ENV,
    PROBA_PARAMETER,
)
from components.serving.options import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_GRACE_PERIOD_SECONDS,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    ServingOptions,
)


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server parser extended with this server's options."""
    from kserve import model_server

    parser = argparse.ArgumentParser(
        prog="kfp-sklearn-serve",
        parents=[model_server.parser],
        description="Serve a scikit-learn model directory (model.joblib + model.json) over KServe V1/V2 REST "
        "and, with --grpc_port, Open Inference Protocol gRPC.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model_dir", required=True, type=Path, help="Model directory written by the train step.")
    parser.add_argument("--host", default=CONTAINER_HOST, help="Interface to bind (127.0.0.1 for a private server).")
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="Bodies above get 413.")
    parser.add_argument("--max_rows", type=int, default=DEFAULT_MAX_ROWS, help="More instances per request get 400.")
    parser.add_argument(
        "--return_probabilities",
        type=_flag,
        default=False,
        help=f"Answer with class probabilities by default; a request's parameters.{PROBA_PARAMETER} overrides it "
        "(ignored for a regression model).",
    )
    parser.add_argument("--use_onnx", type=_flag, default=True, help="Use the verified model.onnx when present.")
    parser.add_argument("--payload_log_dir", type=Path, default=None, help="Log every prediction (Parquet) here.")
    parser.add_argument("--grace_period", type=int, default=DEFAULT_GRACE_PERIOD_SECONDS, help="Shutdown grace (s).")
    parser.add_argument(
        "--access_log", type=_flag, default=False, help="Log one line per request (costs more than an ONNX predict)."
    )
    parser.add_argument(
        "--model_digest",
        default=os.environ.get(MODEL_DIGEST_ENV) or None,
        help=f"Pinned sha256:<hex> digest of the model directory; anything else is refused (env {MODEL_DIGEST_ENV}).",
    )
    parser.add_argument(
        "--model_version",
        default=os.environ.get(MODEL_VERSION_ENV) or None,
        help=f"Version id the V2 routes serve (env {MODEL_VERSION_ENV}; default: from the directory's digest).",
    )
    parser.add_argument(
        "--enable_model_control",
        type=_flag,
        default=False,
        help="Serve the model load/unload endpoints (off: no client can unload the model).",
    )
    parser.add_argument(
        "--header_timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S, help="Seconds for a request's headers."
    )
    parser.add_argument(
        "--body_timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, help="Seconds for a body after its headers."
    )
    parser.add_argument(
        "--max_connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="Open HTTP connections per process; beyond it the oldest idle or slow one is closed.",
    )
    # gRPC (our Open Inference Protocol servicer, not KServe's) is served when --grpc_port is given or
    # --enable_grpc=true; a None default tells "not given" apart from KServe's 8081.
    parser.set_defaults(enable_grpc=None, grpc_port=None, grpc_max_receive_message_length=None)
    return parser


def _grpc_port(args: argparse.Namespace) -> int | None:
    from kserve.constants.constants import DEFAULT_GRPC_PORT

    if args.enable_grpc is False:
        return None
    if args.grpc_port is not None:
        return int(args.grpc_port)
    return DEFAULT_GRPC_PORT if args.enable_grpc else None


def options_from_args(args: argparse.Namespace) -> ServingOptions:
    """The `ServingOptions` the parsed flags ask for (each field is read from the flag of the same name).

    Raises:
        ServingOptionError: A limit is out of range.
        InvalidNameError: `--model_name` is not a valid model name.
    """
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(ServingOptions)}
    return ServingOptions(**{**values, "grpc_port": _grpc_port(args)})


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve; a refused model directory exits 1 with a one-line reason."""
    args = build_parser().parse_args(argv)
    from components.model_artifact import ModelIntegrityError
    from components.names import InvalidNameError
    from components.serving.options import ServingOptionError
    from components.serving.server import PortInUseError, run

    try:
        options = options_from_args(args)
    except ServingOptionError as exc:
        print(f"kfp-sklearn-serve: --{exc.option} {exc.rule}", file=sys.stderr)
        return 2
    except InvalidNameError as exc:
        print(f"kfp-sklearn-serve: {exc}", file=sys.stderr)
        return 2
    try:
        run(options)
    except PortInUseError as exc:
        print(f"kfp-sklearn-serve: {exc}", file=sys.stderr)
        return 2
    except ModelIntegrityError as exc:
        print(f"kfp-sklearn-serve: cannot serve {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"kfp-sklearn-serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
