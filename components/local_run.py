"""Local runs of the training pipeline under kfp.local, and serving the model such a run deployed.

Parameters are checked before any step starts; kfp.local's own output goes to a log file under `<root>/logs` while
the console shows one line per step (`_ProgressStream`). The command line (components/cli.py) calls these.
"""

import json
import re
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from components.constants import DEFAULT_IMAGE, LOCAL_STORE_DIRNAME
from components.local_runners import RUNNER_SUBPROCESS
from pipeline import make_training_pipeline, pipeline_defaults

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TASK_START = re.compile(r"Executing task '?([\w-]+)'?")
_TASK_END = re.compile(r"Task '?([\w-]+)'? finished with status (\w+)")
_STEP_LINE = re.compile(r"^\s*(data|search|select|train|evaluate|champion|deploy): ")
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
    """The absolute gate's reason."""
    artifacts: dict[str, str]
    log: Path
    seconds: float
    task: str = ""
    task_reason: str = ""
    """`given`, or why the task was inferred from the label."""
    champion: dict[str, Any] = field(default_factory=dict)
    """The champion step's decision: `deploy`, `reason`, both scores, `mlflow_model_version` when logged."""


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
    from components.features import read_schema

    outputs = task.outputs
    schema = read_schema(outputs["feature_schema"].path)
    decision = json.loads(Path(outputs["decision"].path).read_text())
    shown = ("feature_schema", "search_report", "model", "metrics", "classification", "report", "champion_report")
    return LocalRunResult(
        metrics={k: float(v) for k, v in outputs["metrics"].metadata.items()},
        deploy=bool(outputs["deploy"]),
        reason=decision["gate"]["reason"],
        artifacts={name: outputs[name].uri for name in shown},
        log=log_path,
        seconds=time.monotonic() - started,
        task=schema.task,
        task_reason=schema.task_reason,
        champion=decision,
    )


def print_summary(result: LocalRunResult, arguments: dict[str, Any], store: Path) -> None:
    """Print the run's metrics, artifacts, log file and gate decision, and what it deployed to `store`."""
    print(f"\nRun finished in {result.seconds:.1f}s")
    from components.features import TASK_GIVEN

    how = TASK_GIVEN if result.task_reason == TASK_GIVEN else f"inferred: {result.task_reason}"
    print(f"Task: {result.task} ({how})")
    print("Metrics:")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name:<28} {value:.4f}")
    print("Artifacts:")
    for name, uri in result.artifacts.items():
        print(f"  {name:<16} {uri}")
    print(f"  {'log':<16} {result.log}")
    print(f"Deploy gate: {result.reason}")
    print(f"Champion vs challenger: {result.champion['reason']}")
    if result.champion.get("mlflow_model_version"):
        print(f"MLflow: registered '{arguments['model_name']}' version {result.champion['mlflow_model_version']}")
    if result.deploy:
        from components.deploy.local_store import current

        live = current(store, arguments["model_name"])
        print(f"Deployed '{live.model_name}' version {live.version} to {live.model_dir}")


def _curl_example(model_name: str, host: str, port: int, features: list[Any]) -> str:
    """A V1 predict the served model accepts.

    Iris-like numbers for all-numeric rows; with a categorical feature, an object keyed by feature name holding a
    known category (or 0.0 for a numeric feature).
    """
    if all(f.kind == "numeric" for f in features):
        row = ", ".join(["5.1", "3.5", "1.4", "0.2"][: len(features)] + ["0.0"] * max(0, len(features) - 4))
        instance = f"[{row}]"
    else:
        values = {f.name: (f.categories[0] if f.kind == "categorical" and f.categories else 0.0) for f in features}
        instance = json.dumps(values)
    return (
        f"curl -s -H 'Content-Type: application/json' http://{host}:{port}/v1/models/{model_name}:predict "
        f"-d '{{\"instances\": [{instance}]}}'"
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
    from components.deploy.local_store import current, latest
    from components.model_artifact import verify_model_dir
    from components.names import check_model_name
    from components.serving.options import ServingOptions
    from components.serving.server import check_ports_free, run

    # A bad name or a busy port is the first and only line printed, before anything is read or loaded.
    if model_name is not None:
        check_model_name(model_name)
    check_ports_free(host, [("HTTP", port)] + ([("gRPC", grpc_port)] if grpc_port is not None else []))
    deployment = current(store, model_name) if model_name is not None else latest(store)
    model_name = deployment.model_name
    # Refuse a changed deployment here, in one line, before the server starts and logs its own refusal.
    card = verify_model_dir(Path(deployment.model_dir), expected_digest=deployment.digest or None)
    options = ServingOptions(  # out-of-range options are refused here, before anything is printed
        model_dir=Path(deployment.model_dir),
        model_name=model_name,
        host=host,
        http_port=port,
        grpc_port=grpc_port,
        workers=workers,
        payload_log_dir=payload_log_dir,
        model_digest=deployment.digest,
        model_version=deployment.version,
    )
    print(f"Serving '{model_name}' version {deployment.version} from {deployment.model_dir}")
    print(f"  V1 predict: {_curl_example(model_name, host, port, card.features)}")
    if payload_log_dir is not None:
        print(f"  Logging predictions to {payload_log_dir} (check drift: python pipeline.py monitor --help)")
    if grpc_port is not None:
        print(f"  gRPC (Open Inference Protocol V2): {host}:{grpc_port}")
    print("  Ctrl-C stops the server.")
    run(options)
