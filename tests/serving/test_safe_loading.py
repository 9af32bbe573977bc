"""Safe loading: nothing is unpickled or run unless every hash and the scikit-learn version match the card."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components.constants import MODEL_CARD_FILENAME, MODEL_FILENAME, ONNX_FILENAME
from components.serving.contract import ClientError
from components.serving.model import SklearnModel
from components.serving.options import ServingOptions
from components.serving.predictor import BACKEND_JOBLIB, BACKEND_ONNX
from tests.serving.servers import ROOT, train_iris_model_dir


def _append_byte(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"\0")


def _drop_model(directory: Path) -> None:
    (directory / MODEL_FILENAME).unlink()


def _second_pickle(directory: Path) -> None:
    shutil.copy(directory / MODEL_FILENAME, directory / "extra.pkl")


def _other_sklearn(directory: Path) -> None:
    card = json.loads((directory / MODEL_CARD_FILENAME).read_text())
    card["versions"]["scikit-learn"] = "0.24.2"
    (directory / MODEL_CARD_FILENAME).write_text(json.dumps(card))


def _drop_card(directory: Path) -> None:
    (directory / MODEL_CARD_FILENAME).unlink()


def _edit_card(directory: Path, **changes: object) -> None:
    card = json.loads((directory / MODEL_CARD_FILENAME).read_text())
    card.update(changes)
    (directory / MODEL_CARD_FILENAME).write_text(json.dumps(card))


def _three_features(directory: Path) -> None:
    # A self-consistent card (names and typed features agree) that still disagrees with the estimator.
    card = json.loads((directory / MODEL_CARD_FILENAME).read_text())
    _edit_card(directory, feature_names=card["feature_names"][:3], features=card["features"][:3])


def _renamed_features(directory: Path) -> None:
    _edit_card(directory, feature_names=["a", "b", "c", "d"])


def _two_classes(directory: Path) -> None:
    _edit_card(directory, class_names=["0", "1"])


REFUSALS = {
    "tampered-joblib": (lambda d: _append_byte(d / MODEL_FILENAME), "sha256 of model.joblib"),
    "tampered-onnx": (lambda d: _append_byte(d / ONNX_FILENAME), "sha256 of model.onnx"),
    "missing-model-file": (_drop_model, "found: none"),
    "two-model-files": (_second_pickle, "found: extra.pkl, model.joblib"),
    "other-sklearn-version": (_other_sklearn, "scikit-learn 0.24.2"),
    "missing-card": (_drop_card, "model.json"),
    # A card that describes another model than the estimator it ships with (issue 12 item 10).
    "card-lists-3-of-4-features": (_three_features, "3 features but the model was trained on 4"),
    "card-lists-0-features": (lambda d: _edit_card(d, feature_names=[]), "feature"),
    "card-lists-2-of-3-classes": (_two_classes, "2 classes but the model predicts 3"),
}


@pytest.mark.parametrize("damage", list(REFUSALS), ids=list(REFUSALS))
def test_damaged_model_dir_is_refused_and_model_stays_unready(damage: str, tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    breaks, says = REFUSALS[damage]
    breaks(directory)
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris"))

    assert model.load() is False

    assert model.ready is False
    assert model.loaded is None
    assert model.load_error is not None and says in model.load_error


def test_card_naming_other_features_than_the_trained_dataframe_is_refused(tmp_path: Path) -> None:
    import hashlib

    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    from components.model_artifact import save_model

    frame = load_iris(as_frame=True).frame
    x, y = frame.drop(columns="target"), frame["target"]
    directory = tmp_path / "tree"
    save_model(
        directory,
        DecisionTreeClassifier(random_state=0).fit(x, y),
        feature_names=["a", "b", "c", "d"],
        class_names=["0", "1", "2"],
        model_family="decision_tree",
        hyperparameters={},
        training_data_fingerprint=hashlib.sha256(pd.util.hash_pandas_object(x).values.tobytes()).hexdigest(),
        label_column="target",
    )
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris"))

    assert model.load() is False
    assert model.load_error is not None and "names the features differently" in model.load_error


def test_make_model_dir_models_load_on_the_joblib_path(make_model_dir) -> None:
    directory, card = make_model_dir(family="random_forest")
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris"))

    assert model.ready is False
    assert model.load() is True

    assert model.ready and model.loaded is not None and model.loaded.backend == BACKEND_JOBLIB
    assert model.loaded.card.model_sha256 == card.model_sha256


def test_loading_writes_nothing_into_the_model_dir(tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris"))

    assert model.load() is True
    model.infer({"instances": [[5.1, 3.5, 1.4, 0.2]]}, v2=False)

    assert model.loaded is not None and model.loaded.backend == BACKEND_ONNX
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


def test_use_onnx_false_serves_the_joblib_model(tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris", use_onnx=False))

    assert model.load() is True
    assert model.loaded is not None and model.loaded.backend == BACKEND_JOBLIB


def test_probabilities_are_refused_for_a_model_without_predict_proba(make_model_dir, tmp_path: Path) -> None:
    import hashlib

    from sklearn.datasets import load_iris
    from sklearn.svm import LinearSVC

    from components.model_artifact import save_model

    x, y = load_iris(return_X_y=True)
    directory = tmp_path / "svc"
    save_model(
        directory,
        LinearSVC().fit(x, y),
        feature_names=["a", "b", "c", "d"],
        class_names=["0", "1", "2"],
        model_family="linear_svc",
        hyperparameters={},
        training_data_fingerprint=hashlib.sha256(x.tobytes()).hexdigest(),
        label_column="target",
    )
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="svc"))
    assert model.load() is True

    with pytest.raises(ClientError, match="no predict_proba"):
        model.infer({"instances": [[5.1, 3.5, 1.4, 0.2]], "parameters": {"return_probabilities": True}}, v2=False)
    assert [o["name"] for o in model.get_output_types()] == ["predict"]


def _serve_cli(directory: Path) -> subprocess.CompletedProcess:
    """`python -m components.serving` on `directory`: these models are refused before any port is bound."""
    return subprocess.run(
        [sys.executable, "-m", "components.serving", f"--model_dir={directory}", "--model_name=iris", "--http_port=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_exits_non_zero_with_a_one_line_reason_for_a_refused_dir(tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=False)
    _append_byte(directory / MODEL_FILENAME)

    done = _serve_cli(directory)

    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("kfp-sklearn-serve: cannot serve")
    assert "sha256 of model.joblib" in lines[-1]
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_exits_1_in_one_line_for_a_card_that_disagrees_with_the_model(tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    _three_features(directory)

    done = _serve_cli(directory)

    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kfp-sklearn-serve: cannot serve") and "3 features" in last
    assert "Traceback" not in done.stderr + done.stdout


def test_a_failing_payload_log_is_logged_once_and_predictions_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    model = SklearnModel(ServingOptions(model_dir=directory, model_name="iris", payload_log_dir=tmp_path / "log"))
    assert model.load() is True
    attempts = []

    def broken_writer() -> None:
        attempts.append(1)
        raise OSError("log destination is read-only")

    model._payload_writer = broken_writer  # type: ignore[method-assign]
    for _ in range(50):
        body, request, prediction = model.infer({"instances": [[5.1, 3.5, 1.4, 0.2]]}, v2=False)
        model.after_prediction(request.x, prediction)
        assert body == {"predictions": [0]}

    assert attempts == [1]
    lines = [r.getMessage() for r in caplog.records if "payload log" in r.getMessage()]
    assert len(lines) == 1 and "read-only" in lines[0] and "\n" not in lines[0]
    assert not any(r.exc_info for r in caplog.records)
