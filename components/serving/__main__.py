"""`kfp-sklearn-serve` / `python -m components.serving`: the predictor a KServe ServingRuntime runs.

Accepts KServe's standard model-server flags (`--model_name`, `--http_port`, `--workers`, ...) as a
ServingRuntime passes them, plus `--model_dir` and this server's own limits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from components.constants import CONTAINER_HOST, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_ROWS, PROBA_PARAMETER


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

    from components.serving.server import DEFAULT_GRACE_PERIOD_SECONDS

    parser = argparse.ArgumentParser(
        prog="kfp-sklearn-serve",
        parents=[model_server.parser],
        description="Serve a scikit-learn model directory (model.joblib + model.json) over KServe V1/V2 REST.",
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
        help=f"Answer with class probabilities by default; a request's parameters.{PROBA_PARAMETER} overrides it.",
    )
    parser.add_argument("--use_onnx", type=_flag, default=True, help="Use the verified model.onnx when present.")
    parser.add_argument("--payload_log_dir", type=Path, default=None, help="Log every prediction (Parquet) here.")
    parser.add_argument("--grace_period", type=int, default=DEFAULT_GRACE_PERIOD_SECONDS, help="Shutdown grace (s).")
    parser.add_argument(
        "--access_log", type=_flag, default=False, help="Log one line per request (costs more than an ONNX predict)."
    )
    # REST only: KServe's gRPC server would bypass the body limit; the flag stays accepted for compatibility.
    parser.set_defaults(enable_grpc=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags and serve; a refused model directory exits 1 with a one-line reason."""
    args = build_parser().parse_args(argv)
    from components.model_artifact import ModelIntegrityError
    from components.serving.server import serve

    if args.enable_grpc:
        print("kfp-sklearn-serve: gRPC is not served (REST V1/V2 only); ignoring --enable_grpc", file=sys.stderr)
    for name in ("max_body_bytes", "max_rows", "workers"):
        if getattr(args, name) < 1:
            print(f"kfp-sklearn-serve: --{name} must be at least 1", file=sys.stderr)
            return 2
    try:
        serve(
            args.model_dir,
            model_name=args.model_name,
            host=args.host,
            port=args.http_port,
            workers=args.workers,
            max_body_bytes=args.max_body_bytes,
            max_rows=args.max_rows,
            return_probabilities=args.return_probabilities,
            use_onnx=args.use_onnx,
            payload_log_dir=args.payload_log_dir,
            grace_period=args.grace_period,
            access_log=args.access_log,
        )
    except ModelIntegrityError as exc:
        print(f"kfp-sklearn-serve: cannot serve {args.model_dir}: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"kfp-sklearn-serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
