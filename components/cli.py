"""The command line of `python pipeline.py`: one function per command.

    python pipeline.py compile [--image IMG]     write pipeline.yaml (and the monitoring YAML, manifests/pipelines/)
    python pipeline.py run [--serve] [--runner docker]   run it here with kfp.local, then optionally serve the model
    python pipeline.py serve [--port N]           serve the model the last local run deployed (KServe V1/V2)
    python pipeline.py submit --endpoint URL      compile and start a run on a KFP cluster
    python pipeline.py monitor --log-dir D --model-dir M   the drift-check pipeline under kfp.local
    python pipeline.py models list|promote VERSION|rollback   the deployed versions of a model

With no arguments it compiles, like every KFP example.
"""

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_CV_FOLDS,
    DEFAULT_DATASET,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_IMAGE,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MIN_IMPROVEMENT,
    DEFAULT_MODEL_FAMILY,
    DEPLOY_TARGET_KUBERNETES,
    DEPLOY_TARGET_LOCAL,
    LOCAL_STORE_DIRNAME,
)
from components.local_run import local_runner, preflight, print_summary, run_locally, serve_deployed
from components.local_runners import RUNNER_SUBPROCESS, RUNNERS, RunnerUnavailableError
from components.parameters import ParameterError, check_writable
from pipeline import (
    DEFAULT_MIN_ACCURACY,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    PIPELINE_FILE,
    PIPELINE_NAME,
    compile_all,
    compile_pipeline,
)

DESCRIPTION = (
    "The training pipeline (data -> search -> train -> evaluate -> champion vs challenger -> deploy) and its "
    "command line."
)


def compile_command(args: argparse.Namespace) -> int:
    """`compile`: write the training and monitoring YAMLs and the manifests (under build/ for another image)."""
    for written in compile_all(args.output, image=args.image):
        print(f"wrote {written}")
    if args.image != DEFAULT_IMAGE and args.output is None:
        print(f"(image {args.image} is not the default: the committed YAMLs are unchanged)")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """`run`: the training pipeline under kfp.local, then (`--serve`) the model it deployed."""
    store = args.root.resolve() / LOCAL_STORE_DIRNAME
    try:  # fail before any step starts, not after loading the data
        check_writable(args.root.resolve(), what="--root")
        arguments = preflight({"local_store": str(store), **_run_arguments(args)})
        runner = local_runner(args.runner, args.root, arguments)
    except (ParameterError, RunnerUnavailableError) as exc:
        print(f"pipeline.py run: {exc}", file=sys.stderr)
        return 2
    where = "this Python environment" if args.runner == RUNNER_SUBPROCESS else f"every step in {DEFAULT_IMAGE}"
    print(f"Running pipeline '{PIPELINE_NAME}' locally (kfp.local, {where})")
    try:
        result = run_locally(args.root, arguments, runner=runner)
    except (ParameterError, RunnerUnavailableError) as exc:
        print(f"pipeline.py run: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"\nRun failed: {exc}", file=sys.stderr)
        return 1
    print_summary(result, arguments, store)
    if not args.serve:
        return 0
    if not result.deploy:
        print(f"Nothing to serve: the model was not deployed ({result.champion['reason']}).", file=sys.stderr)
        return 1
    return _serve(args, store, arguments["model_name"])


def serve_command(args: argparse.Namespace) -> int:
    """`serve`: the model the last local run under `--root` deployed (or `--model-name`'s live version)."""
    return _serve(args, args.root.resolve() / LOCAL_STORE_DIRNAME, args.model_name)


def _serve(args: argparse.Namespace, store: Path, model_name: str | None) -> int:
    from components.deploy.local_store import LocalStoreError
    from components.model_artifact import ModelIntegrityError
    from components.names import InvalidNameError
    from components.serving.options import ServingOptionError
    from components.serving.server import PortInUseError

    try:
        serve_deployed(
            store,
            model_name=model_name,
            host=args.host,
            port=args.port,
            workers=args.workers,
            payload_log_dir=args.payload_log_dir,
            grpc_port=args.grpc_port,
        )
    except (LocalStoreError, ModelIntegrityError, InvalidNameError, PortInUseError, ServingOptionError) as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


def submit_command(args: argparse.Namespace) -> int:
    """`submit`: compile into a temporary file and start a run on the KFP API at `--endpoint`."""
    from components.submit import SubmitError, submit_pipeline

    try:  # the same check, and message, as `run`: before compiling or contacting the server
        arguments = preflight(_parse_submit_args(args.arg))
    except ParameterError as exc:
        print(f"pipeline.py submit: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:  # never touch the committed pipeline.yaml
        package = compile_pipeline(Path(tmp) / PIPELINE_FILE.name, image=args.image)
        try:
            run_id = submit_pipeline(
                package,
                endpoint=args.endpoint,
                arguments=arguments,
                service_account=args.service_account,
                experiment=args.experiment,
            )
        except SubmitError as exc:
            print(f"submit failed: {exc}", file=sys.stderr)
            return 1
    print(f"started run {run_id} on {args.endpoint}")
    return 0


def monitor_command(args: argparse.Namespace) -> int:
    """`monitor`: the monitoring CLI parses its own arguments (`monitor --help` shows them)."""
    from components.monitoring.cli import main as monitor

    return monitor(args.monitor_argv)


def build_parser() -> argparse.ArgumentParser:
    """The `pipeline.py` parser: each subcommand sets `handler`, the function that runs it."""
    parser = argparse.ArgumentParser(prog="pipeline.py", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command")

    compile_cmd = commands.add_parser(
        "compile", help="write pipeline.yaml, monitoring_pipeline.yaml and manifests/pipelines/ (kubectl apply -k)"
    )
    compile_cmd.add_argument(
        "--output",
        type=Path,
        default=None,
        help="training YAML; the monitoring YAML goes beside it, manifests/pipelines/ below its directory "
        "(default: pipeline.yaml, or build/pipeline.yaml with a non-default --image)",
    )
    compile_cmd.add_argument("--image", default=DEFAULT_IMAGE, help="image of every component (default: %(default)s)")
    compile_cmd.set_defaults(handler=compile_command)

    def add_serve_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT)
        cmd.add_argument("--grpc-port", type=int, default=None, help="also serve Open Inference Protocol gRPC here")
        cmd.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s, this machine only)")
        cmd.add_argument("--workers", type=int, default=1)
        cmd.add_argument(
            "--payload-log-dir", type=Path, default=None, help="log every prediction here (Parquet) for drift checks"
        )

    def add_root(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--root", type=Path, default=Path(DEFAULT_LOCAL_ROOT), help="local outputs (%(default)s)")

    def add_model_name(cmd: argparse.ArgumentParser, default: str | None, shown: str) -> None:
        cmd.add_argument("--model-name", default=default, help=f"model (and InferenceService) name ({shown})")

    run_cmd = commands.add_parser("run", help="run the pipeline locally with kfp.local")
    add_root(run_cmd)
    add_model_name(run_cmd, None, "default: sklearn-<dataset>, e.g. sklearn-iris, sklearn-churn for churn.csv")
    run_cmd.add_argument("--dataset", default=DEFAULT_DATASET, help="built-in name, or a .csv/.parquet path or URL")
    run_cmd.add_argument("--label-column", default=DEFAULT_LABEL_COLUMN)
    run_cmd.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    run_cmd.add_argument("--seed", type=int, default=DEFAULT_SEED)
    run_cmd.add_argument("--task", default="", help="classification or regression (default: inferred from the label)")
    run_cmd.add_argument(
        "--feature-types", type=_json_object, default={}, help='JSON, e.g. \'{"zip": "categorical", "id": "drop"}\''
    )
    run_cmd.add_argument(
        "--model-family",
        default=DEFAULT_MODEL_FAMILY,
        help="auto, a short name (random_forest, hist_gradient_boosting, ...) or sklearn.<module>.<Estimator> "
        "(default: %(default)s)",
    )
    run_cmd.add_argument("--hyperparameters", type=_json_object, default={}, help="JSON, e.g. '{\"C\": 0.5}'")
    run_cmd.add_argument(
        "--search-space",
        type=_json_list,
        default=[],
        help='JSON list of candidates, e.g. \'[{"model_family": "random_forest", "grid": {"max_depth": [3, 6]}}]\'',
    )
    run_cmd.add_argument("--cv-folds", type=int, default=DEFAULT_CV_FOLDS, help="folds per search candidate")
    run_cmd.add_argument("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY)
    run_cmd.add_argument("--gate-metric", default="", help="e.g. f1_macro, r2, rmse (default: accuracy / r2)")
    run_cmd.add_argument("--gate-threshold", type=float, default=0.0, help="what --gate-metric must reach")
    run_cmd.add_argument(
        "--min-improvement",
        type=float,
        default=DEFAULT_MIN_IMPROVEMENT,
        help="how much the new model must beat the live one by (default: %(default)s)",
    )
    run_cmd.add_argument(
        "--mlflow-tracking-uri", default="", help="log the run to MLflow, e.g. http://127.0.0.1:5000 (default: off)"
    )
    run_cmd.add_argument("--serve", action="store_true", help="serve the deployed model when the run ends")
    run_cmd.add_argument(
        "--runner",
        choices=RUNNERS,
        default=RUNNER_SUBPROCESS,
        help="subprocess: steps in this Python environment; docker: every step in the project image over a Docker "
        "API (Docker, or podman's socket through DOCKER_HOST) (default: %(default)s)",
    )
    add_serve_options(run_cmd)
    run_cmd.set_defaults(handler=run_command)

    serve_cmd = commands.add_parser("serve", help="serve the model the last local run deployed")
    add_root(serve_cmd)
    add_model_name(serve_cmd, None, "default: the model the last run deployed")
    add_serve_options(serve_cmd)
    serve_cmd.set_defaults(handler=serve_command)

    # Everything after `monitor` goes, unparsed, to components.monitoring.cli (see `main`), whose --help lists it.
    monitor_cmd = commands.add_parser(
        "monitor", add_help=False, help="check logged predictions for drift under kfp.local (monitor --help)"
    )
    monitor_cmd.set_defaults(handler=monitor_command)

    submit_cmd = commands.add_parser("submit", help="compile and run on a KFP cluster")
    submit_cmd.add_argument("--endpoint", required=True, help="KFP API, e.g. http://127.0.0.1:8080 (make port-forward)")
    submit_cmd.add_argument("--image", default=DEFAULT_IMAGE)
    submit_cmd.add_argument("--experiment", default=None)
    submit_cmd.add_argument("--service-account", default=None, help="run service account (KFP's default if unset)")
    submit_cmd.add_argument(
        "--arg", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter (JSON values allowed)"
    )
    submit_cmd.set_defaults(handler=submit_command)

    from components.versions_cli import add_models_command  # stdlib and constants only: cheap

    add_models_command(commands)
    return parser


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. {"C": 0.5}')
    return value


def _json_list(text: str) -> list[Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError('must be a JSON list, e.g. [{"model_family": "random_forest"}]')
    return value


def _run_arguments(args: argparse.Namespace) -> dict[str, Any]:
    arguments = {
        "dataset": args.dataset,
        "label_column": args.label_column,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "task": args.task,
        "feature_types": args.feature_types,
        "model_family": args.model_family,
        "hyperparameters": args.hyperparameters,
        "search_space": args.search_space,
        "cv_folds": args.cv_folds,
        "min_accuracy": args.min_accuracy,
        "gate_metric": args.gate_metric,
        "gate_threshold": args.gate_threshold,
        "min_improvement": args.min_improvement,
        "mlflow_tracking_uri": args.mlflow_tracking_uri,
        "deploy_target": DEPLOY_TARGET_LOCAL,
    }
    if args.model_name is not None:
        arguments["model_name"] = args.model_name
    return arguments


def _parse_submit_args(pairs: Sequence[str]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--arg takes KEY=VALUE, got '{pair}'")
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    parsed.setdefault("deploy_target", DEPLOY_TARGET_KUBERNETES)
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command `argv` names (no command: `compile`); return the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Known arguments only: `monitor` takes the rest, every other command refuses them as `parse_args` would.
    args, rest = parser.parse_known_args(argv or ["compile"])
    handler = getattr(args, "handler", None)
    if handler is monitor_command:
        args.monitor_argv = rest
    elif rest or handler is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return int(handler(args))
