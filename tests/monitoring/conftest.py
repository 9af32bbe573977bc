"""Fixtures for the monitoring tests: Iris-like populations, reference profiles and payload logs in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.reference_profile import build_reference_profile, write_reference_profile


@pytest.fixture(scope="session")
def iris_frame() -> pd.DataFrame:
    from sklearn.datasets import load_iris

    return load_iris(as_frame=True).data


@pytest.fixture(scope="session")
def iris_population(iris_frame: pd.DataFrame) -> Callable[[np.random.Generator, int], pd.DataFrame]:
    """Draw rows from a Gaussian per Iris class (fitted to Iris): a population training and traffic share."""
    x = iris_frame.to_numpy()
    from sklearn.datasets import load_iris

    y = load_iris().target
    params = [(x[y == k].mean(axis=0), np.cov(x[y == k], rowvar=False)) for k in range(3)]

    def draw(rng: np.random.Generator, n: int) -> pd.DataFrame:
        labels = rng.integers(0, 3, size=n)
        out = np.empty((n, x.shape[1]))
        for k, (mean, cov) in enumerate(params):
            mask = labels == k
            out[mask] = rng.multivariate_normal(mean, cov, size=int(mask.sum()))
        return pd.DataFrame(out, columns=iris_frame.columns)

    return draw


@pytest.fixture
def iris_model_dir(tmp_path: Path, iris_frame: pd.DataFrame) -> Path:
    """A model directory holding only the reference profile (the drift check reads nothing else)."""
    directory = tmp_path / "model"
    directory.mkdir()
    write_reference_profile(directory, build_reference_profile(iris_frame))
    return directory
