"""The training pipeline (data -> train -> evaluate -> gated deploy) and its command line.

    python pipeline.py compile [--image IMG]     write pipeline.yaml (and the monitoring YAML, manifests/pipelines/)
    python pipeline.py run [--serve] [--runner docker]   run it here with kfp.local, then optionally serve the model
    python pipeline.py serve [--port N]           serve the model the last local run deployed (KServe V1/V2)
    python pipeline.py submit --endpoint URL      compile and start a run on a KFP cluster
    python pipeline.py monitor --log-dir D --model-dir M   the drift-check pipeline under kfp.local

With no arguments it compiles, like every KFP example. `training_pipeline` is a module-level pipeline object, so
KFP's own `kfp dsl compile --py pipeline.py --output pipeline.yaml` writes the same file.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real annotation objects.

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Model
from kfp.dsl.graph_component import GraphComponent

from components.constants import (
    DEFAULT_DATASET,
    DEFAULT_DEPLOY_TIMEOUT_SECONDS,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_IMAGE,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_MODEL_FAMILY,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEFAULT_SCALE_METRIC,
    DEFAULT_SCALE_TARGET,
    DEPLOY_TARGET_KUBERNETES,
    DEPLOY_TARGET_LOCAL,
    LOCAL_STORE_DIRNAME,
    MODEL_FAMILIES,
    MONITORING_PIPELINE_FILENAME,
)
from components.local_runners import RUNNER_SUBPROCESS, RUNNERS
from components.ops import Components, build_components

PIPELINE_NAME = "sklearn-kserve-training"
REPO = Path(__file__).resolve().parent
PIPELINE_FILE = REPO / "pipeline.yaml"
MONITORING_PIPELINE_FILE = PIPELINE_FILE.with_name(MONITORING_PIPELINE_FILENAME)
PIPELINE_MANIFESTS_DIR = REPO / "manifests" / "pipelines"
"""`Pipeline` + `PipelineVersion` objects for `kubectl apply -k` (KFP in Kubernetes-native API mode)."""
BUILD_DIR = REPO / "build"
"""Where `compile --image OTHER` writes (git-ignored): the committed YAMLs always name the default image."""
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


def make_training_pipeline(image: str = DEFAULT_IMAGE) -> GraphComponent:
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
        min_replicas: int = DEFAULT_MIN_REPLICAS,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        scale_metric: str = DEFAULT_SCALE_METRIC,
        scale_target: int = DEFAULT_SCALE_TARGET,
        predictor_cpu_request: str = "",
        predictor_memory_request: str = "",
        predictor_cpu_limit: str = "",
        predictor_memory_limit: str = "",
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
            min_replicas: Fewest predictor pods (kubernetes; Standard mode: at least 1).
            max_replicas: Most predictor pods; KServe's HPA scales between the bounds (kubernetes).
            scale_metric: What the HPA scales on: `cpu` or `memory` (kubernetes).
            scale_target: Target utilisation of the request, percent (kubernetes).
            predictor_cpu_request: Model server CPU request, e.g. `500m`; empty keeps the ServingRuntime's.
            predictor_memory_request: Memory request, e.g. `256Mi`; empty keeps the ServingRuntime's.
            predictor_cpu_limit: CPU limit; empty keeps the ServingRuntime's.
            predictor_memory_limit: Memory limit; empty keeps the ServingRuntime's.
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
                # The run's UUID (what the API and the UI's URL use) and its display name, both for lineage.
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                payload_logger_url=payload_logger_url,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                scale_metric=scale_metric,
                scale_target=scale_target,
                predictor_cpu_request=predictor_cpu_request,
                predictor_memory_request=predictor_memory_request,
                predictor_cpu_limit=predictor_cpu_limit,
                predictor_memory_limit=predictor_memory_limit,
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


training_pipeline = make_training_pipeline()
"""The training pipeline on `DEFAULT_IMAGE`: what `kfp dsl compile --py pipeline.py` finds (the only one here)."""


def compile_pipeline(output: Path = PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the pipeline YAML that `kfp run create` and the KFP UI accept."""
    pipeline_func = training_pipeline if image == DEFAULT_IMAGE else make_training_pipeline(image)
    compiler.Compiler().compile(pipeline_func, package_path=str(output))
    return output


def compile_monitoring_pipeline(output: Path = MONITORING_PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the monitoring (drift check + retraining trigger) pipeline's YAML, for a KFP recurring run."""
    from components.monitoring.pipeline_def import make_monitoring_pipeline

    compiler.Compiler().compile(make_monitoring_pipeline(image), package_path=str(output))
    return output


def compile_manifests(directory: Path = PIPELINE_MANIFESTS_DIR, *, image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write both pipelines as Kubernetes-native `Pipeline` + `PipelineVersion` objects, with a kustomization."""
    from components.monitoring.pipeline_def import make_monitoring_pipeline
    from components.pipeline_manifests import write_kustomization, write_pipeline_manifest

    pipeline_funcs: tuple[Any, ...] = (make_training_pipeline(image), make_monitoring_pipeline(image))
    written = [write_pipeline_manifest(func, directory / f"{func.name}.yaml") for func in pipeline_funcs]
    return [*written, write_kustomization(directory, written)]


def compile_all(output: Path | None = None, *, image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write the training YAML at `output`, the monitoring YAML beside it and the manifests below it.

    Without `output`: the committed files (`pipeline.yaml`, ...) for the default image; for any other image the
    same layout under `build/` (git-ignored), so a custom image never silently replaces the committed YAMLs.
    """
    if output is None:
        output = PIPELINE_FILE if image == DEFAULT_IMAGE else BUILD_DIR / PIPELINE_FILE.name
    output.parent.mkdir(parents=True, exist_ok=True)
    return [
        compile_pipeline(output, image=image),
        compile_monitoring_pipeline(output.with_name(MONITORING_PIPELINE_FILENAME), image=image),
        *compile_manifests(output.parent / PIPELINE_MANIFESTS_DIR.relative_to(REPO), image=image),
    ]


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


def pipeline_defaults() -> dict[str, Any]:
    """The training pipeline's parameters and their defaults, as the compiled spec declares them."""
    return {name: spec.default for name, spec in training_pipeline.component_spec.inputs.items()}


def preflight(arguments: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of a run (defaults filled in, model name derived from the dataset), checked before any step.

    Raises:
        components.parameters.ParameterError: One line naming the parameter.
    """
    from components.parameters import default_model_name, validate_parameters

    defaults = pipeline_defaults()
    dataset = arguments.get("dataset", defaults["dataset"])
    complete = {**defaults, "model_name": default_model_name(str(dataset)), **arguments}
    validate_parameters(complete, accepted=defaults)
    return complete


def new_log_path(root: Path) -> Path:
    """A new, empty log file under `root/logs`: unique even for runs started in the same second."""
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = logs / f"run-{stamp}-{uuid.uuid4().hex[:8]}.log"
        try:
            path.touch(exist_ok=False)
        except FileExistsError:
            continue
        return path


def local_runner(runner: str, root: Path, arguments: dict[str, Any]) -> Any:
    """The `kfp.local` runner named `runner` (`subprocess`: this Python environment; `docker`: the project image).

    Raises:
        components.local_runners.RunnerUnavailableError: One line saying what is missing (e.g. a Docker API).
    """
    from components.local_runners import build_runner

    dataset = Path(str(arguments.get("dataset", "")))
    return build_runner(
        runner,
        pipeline_root=root.resolve() / "runs",
        local_store=Path(arguments.get("local_store") or root.resolve() / LOCAL_STORE_DIRNAME),
        image=DEFAULT_IMAGE,
        # A step in a container sees a host file only if it is mounted.
        read_only=[dataset.resolve()] if dataset.is_file() else [],
    )


def run_locally(root: Path, arguments: dict[str, Any], *, runner: Any = RUNNER_SUBPROCESS) -> LocalRunResult:
    """Run the training pipeline with `kfp.local`: in this Python environment, or every step in the project image.

    Args:
        root: Local outputs: `runs/` (the pipeline root), `logs/`, and the model store (unless `local_store` is given).
        arguments: Pipeline parameters; missing ones take the pipeline's defaults (the model name the dataset's).
        runner: `subprocess`, `docker`, or a runner `local_runner` already built.

    Raises:
        components.parameters.ParameterError: A parameter, `root` or the store is refused before any step starts.
        RuntimeError: A step failed (the message names the reason and the log file).
    """
    import warnings

    from kfp import local

    from components.parameters import check_writable

    root = root.resolve()
    check_writable(root, what="--root")
    arguments = preflight({"local_store": str(root / LOCAL_STORE_DIRNAME), **arguments})
    check_writable(Path(arguments["local_store"]), what="local_store")
    if isinstance(runner, str):
        runner = local_runner(runner, root, arguments)
    local.init(runner=runner, pipeline_root=str(root / "runs"))
    log_path = new_log_path(root)
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
    store: Path,
    *,
    model_name: str | None,
    host: str,
    port: int,
    workers: int = 1,
    payload_log_dir: Path | None = None,
    grpc_port: int | None = None,
) -> None:
    """Serve the live local deployment of `model_name` (None: the model deployed last) with KServe (blocks)."""
    from components.local_store import current, latest
    from components.model_artifact import verify_model_dir
    from components.names import check_model_name
    from components.serving import serve
    from components.serving.server import check_ports_free

    # A bad name or a busy port is the first and only line printed, before anything is read or loaded.
    if model_name is not None:
        check_model_name(model_name)
    check_ports_free(host, [("HTTP", port)] + ([("gRPC", grpc_port)] if grpc_port is not None else []))
    deployment = current(store, model_name) if model_name is not None else latest(store)
    model_name = deployment.model_name
    # Refuse a changed deployment here, in one line, before the server starts and logs its own refusal.
    card = verify_model_dir(Path(deployment.model_dir), expected_digest=deployment.digest or None)
    print(f"Serving '{model_name}' version {deployment.version} from {deployment.model_dir}")
    print(f"  V1 predict: {_curl_example(model_name, host, port, len(card.feature_names))}")
    if payload_log_dir is not None:
        print(f"  Logging predictions to {payload_log_dir} (check drift: python pipeline.py monitor --help)")
    if grpc_port is not None:
        print(f"  gRPC (Open Inference Protocol V2): {host}:{grpc_port}")
    print("  Ctrl-C stops the server.")
    serve(
        Path(deployment.model_dir),
        model_name=model_name,
        host=host,
        port=port,
        grpc_port=grpc_port,
        workers=workers,
        payload_log_dir=payload_log_dir,
        model_digest=deployment.digest,
        model_version=deployment.version,
    )


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pipeline.py", description=__doc__.split("\n\n")[0])
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
    run_cmd.add_argument("--dataset", default=DEFAULT_DATASET)
    run_cmd.add_argument("--label-column", default=DEFAULT_LABEL_COLUMN)
    run_cmd.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    run_cmd.add_argument("--seed", type=int, default=DEFAULT_SEED)
    run_cmd.add_argument("--model-family", default=DEFAULT_MODEL_FAMILY, help=f"{' or '.join(MODEL_FAMILIES)}")
    run_cmd.add_argument("--hyperparameters", type=_json_object, default={}, help="JSON, e.g. '{\"C\": 0.5}'")
    run_cmd.add_argument("--min-accuracy", type=float, default=DEFAULT_MIN_ACCURACY)
    run_cmd.add_argument("--serve", action="store_true", help="serve the deployed model when the run ends")
    run_cmd.add_argument(
        "--runner",
        choices=RUNNERS,
        default=RUNNER_SUBPROCESS,
        help="subprocess: steps in this Python environment; docker: every step in the project image over a Docker "
        "API (Docker, or podman's socket through DOCKER_HOST) (default: %(default)s)",
    )
    add_serve_options(run_cmd)

    serve_cmd = commands.add_parser("serve", help="serve the model the last local run deployed")
    add_root(serve_cmd)
    add_model_name(serve_cmd, None, "default: the model the last run deployed")
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
    arguments = {
        "dataset": args.dataset,
        "label_column": args.label_column,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "model_family": args.model_family,
        "hyperparameters": args.hyperparameters,
        "min_accuracy": args.min_accuracy,
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
    """Entry point of `python pipeline.py`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["monitor"]:
        from components.monitoring.cli import main as monitor

        return monitor(argv[1:])
    args = _parse_args(argv)
    command = args.command or "compile"
    if command == "compile":
        image = getattr(args, "image", DEFAULT_IMAGE)
        for written in compile_all(getattr(args, "output", None), image=image):
            print(f"wrote {written}")
        if image != DEFAULT_IMAGE and getattr(args, "output", None) is None:
            print(f"(image {image} is not the default: the committed YAMLs are unchanged)")
        return 0
    from components.local_runners import RunnerUnavailableError
    from components.parameters import ParameterError, check_writable

    if command == "submit":
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
    store = args.root.resolve() / LOCAL_STORE_DIRNAME
    model_name = args.model_name
    if command == "run":
        try:  # fail before any step starts, not after loading the data
            check_writable(args.root.resolve(), what="--root")
            arguments = preflight({"local_store": str(store), **_run_arguments(args)})
            runner = local_runner(args.runner, args.root, arguments)
        except (ParameterError, RunnerUnavailableError) as exc:
            print(f"pipeline.py run: {exc}", file=sys.stderr)
            return 2
        model_name = arguments["model_name"]
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
        _print_summary(result, arguments, store)
        if not args.serve:
            return 0
        if not result.deploy:
            print("Nothing to serve: the model did not pass the deploy gate.", file=sys.stderr)
            return 1
    from components.local_store import LocalStoreError
    from components.model_artifact import ModelIntegrityError
    from components.names import InvalidNameError
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
    except (LocalStoreError, ModelIntegrityError, InvalidNameError, PortInUseError) as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
