"""Fixtures for the serving tests: real servers (subprocesses on ephemeral ports) over models trained in tmp_path."""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from components.constants import DEFAULT_LABEL_COLUMN, ONNX_FILENAME
from components.model_artifact import ModelCard, save_model
from components.onnx_export import export_verified_onnx

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def launch(model_dir: Path, log: Path, *args: str, model_name: str = "iris") -> subprocess.Popen:
    argv = [sys.executable, "-m", "components.serving", f"--model_dir={model_dir}", f"--model_name={model_name}"]
    return subprocess.Popen([*argv, *args], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def start_server(model_dir: Path, log: Path, *args: str, model_name: str = "iris") -> ServerProcess:
    """Start a server on an ephemeral loopback port and wait until it reports ready."""
    port = free_port()
    proc = launch(model_dir, log, "--host=127.0.0.1", f"--http_port={port}", *args, model_name=model_name)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.output()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise AssertionError(f"server not ready after {STARTUP_TIMEOUT_S}s:\n{server.output()[-3000:]}")


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


@pytest.fixture(scope="module")
def onnx_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per module on an Iris logistic-regression model with the verified ONNX fast path."""
    base = tmp_path_factory.mktemp("onnx-served")
    directory, card, estimator = train_iris_model_dir(base / "model", family="logistic_regression", onnx=True)
    server = start_server(directory, base / "server.log", "--max_rows=50", "--max_body_bytes=20000")
    yield Served(server, directory, card, estimator)
    server.stop()


@pytest.fixture(scope="module")
def joblib_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server on a random-forest model without ONNX (joblib fallback), probabilities on by default."""
    base = tmp_path_factory.mktemp("joblib-served")
    directory, card, estimator = train_iris_model_dir(base / "model", family="random_forest", onnx=False)
    server = start_server(directory, base / "server.log", "--return_probabilities=true", "--access_log=true")
    yield Served(server, directory, card, estimator)
    server.stop()


@pytest.fixture(scope="session")
def iris_rows() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data
