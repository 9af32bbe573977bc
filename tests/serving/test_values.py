"""Extreme finite values: a correct finite answer or a 4xx naming the feature, the same on ONNX and joblib."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from components.serving.contract import MAX_FEATURE_MAGNITUDE, ClientError
from components.serving.model import SklearnModel
from components.serving.options import ServingOptions
from components.serving.predictor import BACKEND_JOBLIB, BACKEND_ONNX, NonFiniteScores
from tests.serving.servers import train_iris_model_dir
from tests.serving.serving_cases import FEATURES

FAMILIES = ["logistic_regression", "random_forest"]


@pytest.fixture(scope="module", params=FAMILIES)
def backends(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, SklearnModel]:
    """The same trained model served on both backends."""
    directory, _, _ = train_iris_model_dir(
        tmp_path_factory.mktemp(request.param) / "model", family=request.param, onnx=True
    )
    served = {}
    for backend, use_onnx in ((BACKEND_ONNX, True), (BACKEND_JOBLIB, False)):
        model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris", use_onnx=use_onnx))
        assert model.load() is True
        assert model.loaded is not None and model.loaded.backend == backend
        served[backend] = model
    return served


def _outcome(model: SklearnModel, rows: list[list[float]], *, v2: bool, probabilities: bool) -> Any:
    if v2:
        payload: dict = {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}
        if probabilities:
            payload["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    else:
        payload = {"instances": rows, "parameters": {"return_probabilities": probabilities}}
    try:
        body, _, _ = model.infer(payload, v2=v2)
    except ClientError as exc:
        return (exc.status, exc.reason, exc.message)
    return body["outputs"] if v2 else body["predictions"]


EXTREME = [
    [[1.7e308] * 4],
    [[-1.7e308] * 4],
    [[5.1, 3.5, 1.4, 1.7e308]],
    [[5.1, 3.5, 1.4, 0.2], [3.5e38, 3.5, 1.4, 0.2]],
]


@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("rows", EXTREME, ids=["all-max", "all-min", "one-feature", "second-row"])
def test_values_beyond_the_model_range_are_a_400_naming_the_feature_on_both_backends(
    backends: dict[str, SklearnModel], rows: list[list[float]], v2: bool, probabilities: bool
) -> None:
    outcomes = {name: _outcome(model, rows, v2=v2, probabilities=probabilities) for name, model in backends.items()}

    assert outcomes[BACKEND_ONNX] == outcomes[BACKEND_JOBLIB]
    status, reason, message = outcomes[BACKEND_ONNX]
    assert (status, reason) == (400, "out_of_range")
    bad_row = len(rows) - 1
    bad_column = next(j for j, v in enumerate(rows[bad_row]) if abs(v) > MAX_FEATURE_MAGNITUDE)
    assert f"row {bad_row}" in message and f"feature '{FEATURES[bad_column]}'" in message


@pytest.mark.parametrize("value", [1e6, 1e20, 3.4e38, -3.4e38])
@pytest.mark.parametrize("probabilities", [False, True], ids=["labels", "probabilities"])
def test_large_values_inside_the_range_get_the_same_answer_on_both_backends(
    backends: dict[str, SklearnModel], value: float, probabilities: bool
) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [value] * 4, [5.1, 3.5, value, 0.2]]
    onnx, joblib = (
        _outcome(backends[b], rows, v2=False, probabilities=probabilities) for b in (BACKEND_ONNX, BACKEND_JOBLIB)
    )

    if isinstance(onnx, list):  # an answer: finite, and the same (ONNX probabilities are float32)
        assert isinstance(joblib, list)
        assert all(math.isfinite(p) for p in np.ravel(onnx))
        np.testing.assert_allclose(onnx, joblib, atol=1e-6)
    else:
        assert (
            onnx == joblib
        )  # a step overflowed (a scaler in front of float32 trees): a 400 naming the row's largest feature
        assert onnx[:2] == (400, "out_of_range") and "row 1" in onnx[2] and "feature 'sepal length (cm)'" in onnx[2]


def test_ordinary_rows_still_take_the_onnx_path(backends: dict[str, SklearnModel]) -> None:
    onnx = backends[BACKEND_ONNX]
    assert onnx.loaded is not None
    calls = []
    session = onnx.loaded._session
    original = session.run

    def counting_run(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    session.run = counting_run
    try:
        onnx.infer({"instances": [[5.1, 3.5, 1.4, 0.2]]}, v2=False)
        onnx.infer({"instances": [[1e20] * 4]}, v2=False)
    finally:
        session.run = original
    assert calls == [1]


def test_non_finite_probabilities_become_a_400_naming_the_largest_feature(tmp_path: Path) -> None:
    # A model whose arithmetic overflows inside the accepted range: the guard after predict catches it.
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=False)
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris"))
    assert model.load() is True and model.loaded is not None

    class Overflowing:
        classes_ = np.array([0, 1, 2])

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            return np.full((len(x), 3), np.nan)

    model.loaded.estimator = Overflowing()
    with pytest.raises(NonFiniteScores):
        model.loaded.predict(np.ones((1, 4)), probabilities=True)
    with pytest.raises(ClientError) as caught:
        model.infer({"instances": [[1.0, 2.0, 9.0, 3.0]], "parameters": {"return_probabilities": True}}, v2=False)
    assert caught.value.status == 400 and f"feature '{FEATURES[2]}'" in caught.value.message
