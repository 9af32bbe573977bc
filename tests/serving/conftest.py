"""Fixtures for the serving tests: real servers (subprocesses on ephemeral ports) over models trained in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tests.serving.servers import (
    Served,
    start_server,
    train_iris_model_dir,
    train_mixed_model_dir,
    train_regression_model_dir,
)


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


@pytest.fixture(scope="module")
def mixed_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server on the mixed-type model: categorical and nullable features, HistGradientBoosting, yes/no labels."""
    base = tmp_path_factory.mktemp("mixed-served")
    directory, card, estimator, _ = train_mixed_model_dir(base / "model")
    server = start_server(
        directory, base / "server.log", "--max_rows=50", f"--payload_log_dir={base / 'payloads'}", model_name="churn"
    )
    yield Served(server, directory, card, estimator, name="churn")
    server.stop()


@pytest.fixture(scope="module")
def regression_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A server on a Ridge regression model (diabetes), started with probabilities on by default (ignored)."""
    base = tmp_path_factory.mktemp("regression-served")
    directory, card, estimator = train_regression_model_dir(base / "model")
    server = start_server(directory, base / "server.log", "--return_probabilities=true", model_name="diabetes")
    yield Served(server, directory, card, estimator, name="diabetes")
    server.stop()


@pytest.fixture(scope="session")
def iris_rows() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data
