"""Serving-test helpers: models trained into a directory, and real servers (subprocesses on ephemeral ports)."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.constants import DEFAULT_LABEL_COLUMN, ONNX_FILENAME
from components.model_artifact import ModelCard, save_model
from components.onnx_export import export_verified_onnx
from tests.helpers import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 120.0


def train_iris_model_dir(directory: Path, *, family: str, onnx: bool) -> tuple[Path, ModelCard, object]:
    """Same recipe as the `make_model_dir` fixture, optionally with the verified ONNX fast path.

    Module-scoped servers need a module-scoped directory, which the function-scoped fixture cannot give.
    """
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bunch = load_iris()
    x, y = bunch.data, bunch.target
    if family == "random_forest":
        estimator = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0))
    else:
        estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    estimator.fit(x, y)
    directory.mkdir(parents=True)
    report = export_verified_onnx(estimator, x, directory / ONNX_FILENAME) if onnx else None
    if onnx:
        assert report is not None, "the ONNX fast path must convert this model"
    card = save_model(
        directory,
        estimator,
        feature_names=list(bunch.feature_names),
        class_names=[str(c) for c in estimator.classes_],
        model_family=family,
        hyperparameters={},
        training_data_fingerprint=hashlib.sha256(x.tobytes()).hexdigest(),
        label_column=DEFAULT_LABEL_COLUMN,
        extra_files={ONNX_FILENAME: directory / ONNX_FILENAME} if report else None,
        onnx=report,
    )
    return directory, card, estimator


@dataclass
class ServerProcess:
    """A `python -m components.serving` subprocess; `url` is its base URL."""

    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server ignored signal {sig} for {timeout}s") from None
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def launch(
    model_dir: Path, log: Path, *args: str, model_name: str = "iris", env: dict[str, str] | None = None
) -> subprocess.Popen:
    argv = [sys.executable, "-m", "components.serving", f"--model_dir={model_dir}", f"--model_name={model_name}"]
    return subprocess.Popen([*argv, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def start_server(
    model_dir: Path, log: Path, *args: str, model_name: str = "iris", env: dict[str, str] | None = None
) -> ServerProcess:
    """Start a server on an ephemeral loopback port and wait until it reports ready."""
    port = free_port()
    proc = launch(model_dir, log, "--host=127.0.0.1", f"--http_port={port}", *args, model_name=model_name, env=env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_until_ready(f"{server.url}/v2/health/ready", proc, timeout=STARTUP_TIMEOUT_S, output=server.output)
    except AssertionError:
        server.stop(signal.SIGKILL)
        raise
    return server


@dataclass
class Served:
    server: ServerProcess
    model_dir: Path
    card: ModelCard
    estimator: Any
    name: str = "iris"

    @property
    def v1(self) -> str:
        return f"{self.server.url}/v1/models/{self.name}:predict"

    @property
    def v2(self) -> str:
        return f"{self.server.url}/v2/models/{self.name}/infer"
