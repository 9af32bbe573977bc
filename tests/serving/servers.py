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


MIXED_LABEL = "churn"
MIXED_FEATURES = ["tenure", "monthly_charge", "contract", "region"]
"""The mixed-type test model's inputs: numeric nullable, numeric, categorical, categorical nullable."""


def mixed_frame(rows: int = 400, seed: int = 0) -> Any:
    """A churn-like table with string categories, missing values and a yes/no label (no download)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    tenure = rng.integers(1, 73, rows).astype(float)
    charge = np.round(rng.uniform(20, 120, rows), 2)
    contract = rng.choice(["month", "one_year", "two_year"], rows)
    region = rng.choice(["north", "south", "east", "west"], rows).astype(object)
    score = (contract == "month") * 1.5 + (charge > 80) - tenure / 36 + rng.normal(0, 0.5, rows)
    tenure[rng.random(rows) < 0.1] = np.nan
    region[rng.random(rows) < 0.1] = None
    frame = pd.DataFrame({"tenure": tenure, "monthly_charge": charge, "contract": contract, "region": region})
    frame[MIXED_LABEL] = np.where(score > 0.3, "yes", "no")
    return frame


def train_mixed_model_dir(directory: Path) -> tuple[Path, ModelCard, Any, Any]:
    """Categorical + missing values + HistGradientBoosting through the pipeline's own data, train and save steps.

    Returns (directory, card, estimator, schema).
    """
    from components.features import infer_feature_schema
    from components.train import save_trained_model, train_model

    frame = mixed_frame()
    schema = infer_feature_schema(frame, label_column=MIXED_LABEL)
    assert [f.name for f in schema.features] == MIXED_FEATURES
    model = train_model(
        frame, schema=schema, model_family="hist_gradient_boosting", hyperparameters={"max_iter": 30}, seed=0
    )
    card = save_trained_model(
        model, directory, training_data_fingerprint="mixed-test", check_features=frame, reference_features=frame
    )
    return directory, card, model.estimator, schema


def train_regression_model_dir(directory: Path) -> tuple[Path, ModelCard, Any]:
    """Ridge on scikit-learn's bundled diabetes data (all numeric, regression), through train and save."""
    from sklearn.datasets import load_diabetes

    from components.features import infer_feature_schema
    from components.train import save_trained_model, train_model

    frame = load_diabetes(as_frame=True).frame
    schema = infer_feature_schema(frame, label_column=DEFAULT_LABEL_COLUMN)
    assert schema.task == "regression"
    model = train_model(frame, schema=schema, model_family="ridge", seed=0)
    card = save_trained_model(
        model, directory, training_data_fingerprint="diabetes-test", check_features=frame, reference_features=frame
    )
    return directory, card, model.estimator


README_FEATURE_TYPES = {"store": "categorical"}
"""What the README's typed examples declare for `benchmarks/make_mixed_data.py`'s data (its `store` codes)."""


def train_readme_typed_model_dir(directory: Path, *, task: str) -> tuple[Path, ModelCard, Any]:
    """The README's `sklearn-customers` (classification) or `sklearn-spend` (regression) model, `model_family=auto`."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_mixed_data import make_mixed_data

    from components.features import infer_feature_schema
    from components.train import save_trained_model, train_model

    frame = make_mixed_data(2000, task=task, seed=0)
    label = str(frame.columns[-1])
    schema = infer_feature_schema(frame, label_column=label, task=task, feature_types=README_FEATURE_TYPES)
    model = train_model(frame, schema=schema, model_family="auto", seed=0)
    card = save_trained_model(
        model, directory, training_data_fingerprint="readme", check_features=frame, reference_features=frame
    )
    return directory, card, model.estimator


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
