"""The training pipeline (data -> train -> evaluate -> gated deploy) and its command line.

    python pipeline.py compile [--image IMG]     write pipeline.yaml for `kfp run create` / the KFP UI
    python pipeline.py run [--serve]              run it here with kfp.local, then optionally serve the model
    python pipeline.py serve [--port N]           serve the model the last local run deployed (KServe V1/V2)
    python pipeline.py submit --endpoint URL      compile and start a run on a KFP cluster
    python pipeline.py monitor --log_dir D --model_dir M   the drift-check pipeline under kfp.local

With no arguments it compiles, like every KFP example.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real annotation objects.

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Model

from components.constants import (
    DEFAULT_DATASET,
    DEFAULT_DEPLOY_TIMEOUT_SECONDS,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_IMAGE,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MODEL_FAMILY,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEPLOY_TARGET_LOCAL,
    DEPLOY_TARGETS,
    LOCAL_STORE_DIRNAME,
    MODEL_FAMILIES,
    MONITORING_PIPELINE_FILENAME,
)
from components.ops import Components, build_components

PIPELINE_NAME = "sklearn-kserve-training"
PIPELINE_FILE = Path(__file__).resolve().with_name("pipeline.yaml")
MONITORING_PIPELINE_FILE = PIPELINE_FILE.with_name(MONITORING_PIPELINE_FILENAME)
DEFAULT_MIN_ACCURACY = 0.9
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 42


class TrainingOutputs(NamedTuple):
    """What a run hands back: the model, its metrics and report, and the gate's decision."""

    model: Model
    metrics: Metrics
    classification: ClassificationMetrics
    report: Markdown
    deploy: bool


def make_training_pipeline(image: str = DEFAULT_IMAGE) -> Callable[..., Any]:
    """Build the training pipeline with every component on `image` (the one place the image is chosen)."""
    ops: Components = build_components(image)

    @dsl.pipeline(name=PIPELINE_NAME, description="Train a scikit-learn classifier and serve it with KServe.")
    def training_pipeline(
        dataset: str = DEFAULT_DATASET,
        label_column: str = DEFAULT_LABEL_COLUMN,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        seed: int = DEFAULT_SEED,
        model_family: str = DEFAULT_MODEL_FAMILY,
        hyperparameters: dict = {},  # noqa: B006  # KFP reads the literal default into the pipeline spec
        min_accuracy: float = DEFAULT_MIN_ACCURACY,
        model_name: str = DEFAULT_MODEL_NAME,
        namespace: str = DEFAULT_NAMESPACE,
        deploy_target: str = DEPLOY_TARGET_LOCAL,
        local_store: str = f"{DEFAULT_LOCAL_ROOT}/{LOCAL_STORE_DIRNAME}",
        predictor_service_account: str = "",
        deploy_timeout_seconds: int = int(DEFAULT_DEPLOY_TIMEOUT_SECONDS),
        payload_logger_url: str = "",
    ) -> TrainingOutputs:
        """Steps: load_data (validate, stratified split) -> train -> evaluate -> deploy, only if the gate passes.

        Args:
            dataset: `iris`, `wine`, `breast_cancer`, or a path/URL to a .csv/.parquet file.
            label_column: The label column (the name given to a built-in dataset's target).
            test_fraction: Share of rows held out for evaluation (stratified).
            seed: Seed of the split and of the classifier.
            model_family: `logistic_regression` or `random_forest`.
            hyperparameters: Overrides of the family's defaults, e.g. {"C": 0.5}.
            min_accuracy: The deploy gate: test accuracy needed to deploy.
            model_name: InferenceService / V1 model name.
            namespace: Namespace of the InferenceService (kubernetes target).
            deploy_target: `local` (model store read by `pipeline.py serve`) or `kubernetes` (KServe).
            local_store: Model store root for the local target.
            predictor_service_account: Predictor service account with the object-store credentials (kubernetes
                target; empty means `kfp-model-reader` from manifests/base).
            deploy_timeout_seconds: How long deploy waits for the InferenceService to be ready.
            payload_logger_url: KServe logger sink for payloads, e.g. the one `manifests/monitoring` deploys
                (`http://payload-logger.kserve-models.svc.cluster.local`); empty: no payload logging.
        """
        data = ops.load_data(dataset=dataset, label_column=label_column, test_fraction=test_fraction, seed=seed)
        data.set_display_name("load and split data")
        trained = ops.train(
            train_data=data.outputs["train_data"],
            test_data=data.outputs["test_data"],
            label_column=label_column,
            model_family=model_family,
            hyperparameters=hyperparameters,
            seed=seed,
        )
        trained.set_display_name("train")
        scored = ops.evaluate(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],
            label_column=label_column,
            min_accuracy=min_accuracy,
        )
        scored.set_display_name("evaluate")
        with dsl.If(scored.outputs["Output"] == True, name="accuracy-gate"):  # noqa: E712  # KFP builds a condition
            deployed = ops.deploy(
                model=trained.outputs["model"],
                metrics=scored.outputs["metrics"],
                model_name=model_name,
                namespace=namespace,
                deploy_target=deploy_target,
                local_store=local_store,
                service_account=predictor_service_account,
                timeout_seconds=deploy_timeout_seconds,
                run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                payload_logger_url=payload_logger_url,
            )
            deployed.set_display_name("deploy")
            # The cluster changes while the inputs do not: a cached deploy would skip a needed rollout.
            deployed.set_caching_options(False)
            deployed.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
        return TrainingOutputs(
            model=trained.outputs["model"],
            metrics=scored.outputs["metrics"],
            classification=scored.outputs["classification"],
            report=scored.outputs["report"],
            deploy=scored.outputs["Output"],
        )

    return training_pipeline


def compile_pipeline(output: Path = PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the pipeline YAML that `kfp run create` and the KFP UI accept."""
    compiler.Compiler().compile(make_training_pipeline(image), package_path=str(output))
    return output


def compile_monitoring_pipeline(output: Path = MONITORING_PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the monitoring (drift check + retraining trigger) pipeline's YAML, for a KFP recurring run."""
    from components.monitoring.pipeline_def import make_monitoring_pipeline

    compiler.Compiler().compile(make_monitoring_pipeline(image), package_path=str(output))
    return output


# --------------------------------------------------------------------------------------------------
# Local runs: kfp.local with the current environment, progress on the console, full log in a file.
# --------------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '?([\w-]+)'?")
_TASK_END = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_STEP_LINE = re.compile(r"^\s*(data|train|evaluate|deploy): ")
_ERROR_LINE = re.compile(r"^\s*(?:[\w]+\.)*(\w*(?:Error|Exception)): (.+)$")


class _ProgressStream:
    """A stdout replacement: everything to the log file, a few readable lines to the console."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self.console, self.log = console, log
        self._pending = ""
        self._started: dict[str, float] = {}
        self.errors: list[str] = []

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._show(_ANSI.sub("", line))
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def _show(self, line: str) -> None:
        if match := _TASK_START.search(line):
            self._started[match[1]] = time.monotonic()
            self.console.write(f"  > {match[1]} ...\n")
        elif match := _TASK_END.search(line):
            took = time.monotonic() - self._started.get(match[1], time.monotonic())
            mark = "ok" if match[2] == "SUCCESS" else match[2]
            self.console.write(f"  < {match[1]} {mark} in {took:.1f}s\n")
        elif _STEP_LINE.match(line):
            self.console.write(f"      {line.strip()}\n")
        elif match := _ERROR_LINE.match(line):
            self.errors.append(f"{match[1]}: {match[2]}")
        self.console.flush()


@contextmanager
def _progress(log_path: Path) -> Iterator[_ProgressStream]:
    import logging

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        stream = _ProgressStream(sys.stdout, log)
        root_logger = logging.getLogger()
        saved = sys.stdout, root_logger.handlers[:], root_logger.level
        sys.stdout = stream
        # kfp.local points the root logger at sys.stdout while it logs a task; between tasks it logs through
        # whatever handlers are set, so send those to the same stream.
        root_logger.handlers = [logging.StreamHandler(stream)]
        root_logger.setLevel(logging.INFO)
        try:
            yield stream
        finally:
            sys.stdout, root_logger.handlers, _ = saved
            root_logger.setLevel(saved[2])


@dataclass(frozen=True)
class LocalRunResult:
    """The outcome of a local run, as printed at its end."""

    metrics: dict[str, float]
    deploy: bool
    reason: str
    artifacts: dict[str, str]
    log: Path
    seconds: float


def run_locally(root: Path, arguments: dict[str, Any]) -> LocalRunResult:
    """Run the training pipeline with `kfp.local` in this Python environment; raise `RuntimeError` on failure."""
    import warnings

    from kfp import local

    root = root.resolve()
    arguments = {"local_store": str(root / LOCAL_STORE_DIRNAME), **arguments}
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root / "runs"))
    log_path = root / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    started = time.monotonic()
    with _progress(log_path) as stream, warnings.catch_warnings():
        # kfp.local warns for any image without "python" in its name; ours has Python, and the runner uses this venv.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            task = make_training_pipeline()(**arguments)
        except RuntimeError as exc:
            reason = stream.errors[-1] if stream.errors else str(exc)
            raise RuntimeError(f"{reason}\n  full log: {log_path}") from None
    from components.constants import METRIC_ACCURACY
    from components.evaluate import gate_decision

    outputs = task.outputs
    metrics = {k: float(v) for k, v in outputs["metrics"].metadata.items()}
    decision = gate_decision(metrics[METRIC_ACCURACY], min_accuracy=arguments["min_accuracy"])
    return LocalRunResult(
        metrics=metrics,
        deploy=bool(outputs["deploy"]),
        reason=decision.reason,
        artifacts={name: outputs[name].uri for name in ("model", "metrics", "classification", "report")},
        log=log_path,
        seconds=time.monotonic() - started,
    )


def _print_summary(result: LocalRunResult, arguments: dict[str, Any], store: Path) -> None:
    print(f"\nRun finished in {result.seconds:.1f}s")
    print("Metrics:")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:<28} {value:.4f}")
    print("Artifacts:")
    for name, uri in result.artifacts.items():
        print(f"  {name:<14} {uri}")
    print(f"  {'log':<14} {result.log}")
    print(f"Deploy gate: {result.reason}")
    if result.deploy:
        from components.local_store import current

        live = current(store, arguments["model_name"])
        print(f"Deployed '{live.model_name}' version {live.version} to {live.model_dir}")


def _curl_example(model_name: str, host: str, port: int, n_features: int) -> str:
    row = ", ".join(["5.1", "3.5", "1.4", "0.2"][:n_features] + ["0.0"] * max(0, n_features - 4))
    return (
        f"curl -s -H 'Content-Type: application/json' http://{host}:{port}/v1/models/{model_name}:predict "
        f"-d '{{\"instances\": [[{row}]]}}'"
    )


def serve_deployed(
    store: Path, *, model_name: str, host: str, port: int, workers: int = 1, payload_log_dir: Path | None = None
) -> None:
    """Serve the live local deployment of `model_name` with the project's KServe model server (blocks)."""
    from components.local_store import current
    from components.model_artifact import read_model_card
    from components.serving import serve

    deployment = current(store, model_name)
    card = read_model_card(Path(deployment.model_dir))
    print(f"Serving '{model_name}' version {deployment.version} from {deployment.model_dir}")
    print(f"  V1 predict: {_curl_example(model_name, host, port, len(card.feature_names))}")
    if payload_log_dir is not None:
        print(f"  Logging predictions to {payload_log_dir} (check drift: python pipeline.py monitor --help)")
    print("  Ctrl-C stops the server.")
    serve(
        Path(deployment.model_dir),
        model_name=model_name,
        host=host,
        port=port,
        workers=workers,
        payload_log_dir=payload_log_dir,
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")

    compile_cmd = commands.add_parser("compile", help="write pipeline.yaml and monitoring_pipeline.yaml")
    compile_cmd.add_argument("--output", type=Path, default=PIPELINE_FILE, help="the monitoring YAML goes beside it")
    compile_cmd.add_argument("--image", default=DEFAULT_IMAGE, help="image of every component (default: %(default)s)")

    def add_serve_options(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--port", type=int, default=DEFAULT_HTTP_PORT)
        cmd.add_argument("--host", default=DEFAULT_HOST, help="bind address (default: %(default)s, this machine only)")
        cmd.add_argument("--workers", type=int, default=1)
        cmd.add_argument(
            "--payload-log-dir", type=Path, default=None, help="log every prediction here (Parquet) for drift checks"
        )

    def add_root(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("--root", type=Path, default=Path(DEFAULT_LOCAL_ROOT), help="local outputs (%(default)s)")
        cmd.add_argument("--model-name", default=DEFAULT_MODEL_NAME)

    run_cmd = commands.add_parser("run", help="run the pipeline locally with kfp.local")
    add_root(run_cmd)
    run_cmd.add_argument("--dataset", default=DEFAULT_DATASET)
    run_cmd.add_argument("--label-column", default=DEFAULT_LABEL_COLUMN)
    run_cmd.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    run_cmd.add_argument("--seed", type=int, default=DEFAULT_SEED)
    run_cmd.add_argument("--model-family", choices=MODEL_FAMILIES, default=DEFAULT_MODEL_FAMILY)
    run_cmd.add_argument("--hyperparameters", type=_json_object, default={}, help="JSON, e.g. '{\"C\": 0.5}'")
    run_cmd.add_argument("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY)
    run_cmd.add_argument("--serve", action="store_true", help="serve the deployed model when the run ends")
    add_serve_options(run_cmd)

    serve_cmd = commands.add_parser("serve", help="serve the model the last local run deployed")
    add_root(serve_cmd)
    add_serve_options(serve_cmd)

    # `monitor` is handed to components.monitoring before parsing; listed here so --help shows it.
    commands.add_parser("monitor", help="check logged predictions for drift under kfp.local (monitor --help)")

    submit_cmd = commands.add_parser("submit", help="compile and run on a KFP cluster")
    submit_cmd.add_argument("--endpoint", required=True, help="KFP API, e.g. http://127.0.0.1:8080 (make port-forward)")
    submit_cmd.add_argument("--image", default=DEFAULT_IMAGE)
    submit_cmd.add_argument("--experiment", default=None)
    submit_cmd.add_argument("--service-account", default=None, help="run service account (KFP's default if unset)")
    submit_cmd.add_argument(
        "--arg", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter (JSON values allowed)"
    )
    return parser.parse_args(argv)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. {"C": 0.5}')
    return value


def _run_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": args.dataset,
        "label_column": args.label_column,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "model_family": args.model_family,
        "hyperparameters": args.hyperparameters,
        "min_accuracy": args.min_accuracy,
        "model_name": args.model_name,
        "deploy_target": DEPLOY_TARGET_LOCAL,
    }


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
    target = parsed.setdefault("deploy_target", "kubernetes")
    if target not in DEPLOY_TARGETS:
        raise SystemExit(f"deploy_target must be one of {DEPLOY_TARGETS}")
    return parsed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python pipeline.py`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["monitor"]:
        from components.monitoring.__main__ import main as monitor

        return monitor(argv[1:])
    args = _parse_args(argv)
    command = args.command or "compile"
    if command == "compile":
        output = getattr(args, "output", PIPELINE_FILE)
        image = getattr(args, "image", DEFAULT_IMAGE)
        for written in (
            compile_pipeline(output, image=image),
            compile_monitoring_pipeline(output.with_name(MONITORING_PIPELINE_FILENAME), image=image),
        ):
            print(f"wrote {written}")
        return 0
    if command == "submit":
        from components.submit import SubmitError, submit_pipeline

        package = compile_pipeline(PIPELINE_FILE, image=args.image)
        try:
            run_id = submit_pipeline(
                package,
                endpoint=args.endpoint,
                arguments=_parse_submit_args(args.arg),
                service_account=args.service_account,
                experiment=args.experiment,
            )
        except SubmitError as exc:
            print(f"submit failed: {exc}", file=sys.stderr)
            return 1
        print(f"started run {run_id} on {args.endpoint}")
        return 0
    store = args.root.resolve() / LOCAL_STORE_DIRNAME
    if command == "run":
        arguments = _run_arguments(args)
        from components.train import TrainingConfigError, resolve_hyperparameters

        try:  # fail before any step starts, not after loading the data
            resolve_hyperparameters(args.model_family, args.hyperparameters)
        except TrainingConfigError as exc:
            print(f"pipeline.py run: {exc}", file=sys.stderr)
            return 2
        print(f"Running pipeline '{PIPELINE_NAME}' locally (kfp.local, this Python environment)")
        try:
            result = run_locally(args.root, arguments)
        except RuntimeError as exc:
            print(f"\nRun failed: {exc}", file=sys.stderr)
            return 1
        _print_summary(result, arguments, store)
        if not args.serve:
            return 0
        if not result.deploy:
            print("Nothing to serve: the model did not pass the deploy gate.", file=sys.stderr)
            return 1
    from components.local_store import NothingDeployedError
    from components.model_artifact import ModelIntegrityError

    try:
        serve_deployed(
            store,
            model_name=args.model_name,
            host=args.host,
            port=args.port,
            workers=args.workers,
            payload_log_dir=args.payload_log_dir,
        )
    except (NothingDeployedError, ModelIntegrityError) as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
