"""Fixtures shared by every test layer: tiny real models written into tmp_path, never committed binaries."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from components.constants import DEFAULT_LABEL_COLUMN
from components.model_artifact import ModelCard, save_model
from tests.fakes.fake_kfp_api import FakeKfpApi

SHARED_SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "schemas"
"""KServe CRD schemas, present beside the repo on the team's machines and CI; absent in a user's clone."""


@pytest.fixture(scope="session")
def iris_xy() -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Iris features, integer labels, feature names and class names."""
    from sklearn.datasets import load_iris

    bunch = load_iris()
    return bunch.data, bunch.target, list(bunch.feature_names), [str(c) for c in bunch.target_names]


ModelDirFactory = Callable[..., tuple[Path, ModelCard]]


@pytest.fixture
def make_model_dir(tmp_path: Path, iris_xy) -> ModelDirFactory:
    """Write a real model directory (joblib + card) trained on Iris; `family` picks the estimator."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, features, _ = iris_xy

    def factory(family: str = "logistic_regression", name: str = "model", **kwargs) -> tuple[Path, ModelCard]:
        if family == "random_forest":
            estimator = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=10, random_state=0))
        else:
            estimator = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
        estimator.fit(x, y)
        directory = tmp_path / name
        card = save_model(
            directory,
            estimator,
            feature_names=features,
            class_names=[str(c) for c in estimator.classes_],
            model_family=family,
            hyperparameters={},
            training_data_fingerprint=hashlib.sha256(x.tobytes()).hexdigest(),
            label_column=DEFAULT_LABEL_COLUMN,
            **kwargs,
        )
        return directory, card

    return factory


@pytest.fixture
def model_dir(make_model_dir: ModelDirFactory) -> Path:
    """A logistic-regression Iris model directory."""
    directory, _ = make_model_dir()
    return directory


@pytest.fixture(scope="session")
def shared_schemas() -> Path:
    """The KServe CRD schema folder, or a skip that says why."""
    if not SHARED_SCHEMAS.is_dir():
        pytest.skip(
            f"KServe CRD schemas not found at {SHARED_SCHEMAS} (they sit beside the repo on team machines and CI)"
        )
    return SHARED_SCHEMAS


@pytest.fixture
def kfp_api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfpApi]:
    """The fake KFP API (tests/fakes/fake_kfp_api.py) over real HTTP, for kfp.Client; HOME is a fresh directory."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.config/kfp/context.json from the developer
    api = FakeKfpApi()
    api.start()
    yield api
    api.stop()
