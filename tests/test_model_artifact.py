import hashlib
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from components.constants import MODEL_CARD_FILENAME, MODEL_FILENAME, ONNX_FILENAME
from components.model_artifact import (
    MAX_CARD_BYTES,
    ModelIntegrityError,
    directory_digest,
    load_estimator,
    load_verified,
    read_model_card,
    verify_model_dir,
    version_id,
)


class _MakeDirectoryOnLoad:
    """A pickle whose payload creates a directory when unpickled: proof of whether a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _edit_card(directory, **changes):
    card = json.loads((directory / MODEL_CARD_FILENAME).read_text())
    for key, value in changes.items():
        card[key] = value
    (directory / MODEL_CARD_FILENAME).write_text(json.dumps(card))


def _forge(directory, name, data):
    """What an attacker with write access to the directory does: swap a file and fix its hash in the card."""
    (directory / name).write_bytes(data)
    card = json.loads((directory / MODEL_CARD_FILENAME).read_text())
    card["files"][name] = hashlib.sha256(data).hexdigest()
    (directory / MODEL_CARD_FILENAME).write_text(json.dumps(card))


def test_a_fresh_model_directory_verifies_and_loads(model_dir, iris_xy):
    x, y, features, _ = iris_xy
    estimator, card = load_estimator(model_dir, expected_digest=directory_digest(model_dir))
    assert card.feature_names == features
    assert (estimator.predict(x) == y).mean() > 0.9


def test_the_digest_is_what_sha256sum_computes_and_covers_every_file(model_dir):
    digest = directory_digest(model_dir)
    # The README's recipe, run by the real coreutils.
    shell = subprocess.run(
        ["sh", "-c", "export LC_ALL=C && sha256sum -- * | sha256sum"],
        cwd=model_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert digest == "sha256:" + shell.stdout.split()[0]
    assert version_id(digest) == digest[len("sha256:") : len("sha256:") + 12]
    card_path = model_dir / MODEL_CARD_FILENAME
    card_path.write_text(card_path.read_text().replace('"label_column"', ' "label_column"'))
    assert directory_digest(model_dir) != digest  # model.json is covered, even a whitespace change


def test_a_malicious_pickle_with_a_matching_card_is_refused_before_unpickling(model_dir, tmp_path):
    pin = directory_digest(model_dir)
    marker = tmp_path / "payload-ran"
    _forge(model_dir, MODEL_FILENAME, pickle.dumps(_MakeDirectoryOnLoad(marker)))
    verify_model_dir(model_dir)  # the card alone is fooled: its hash matches the forged file

    with pytest.raises(ModelIntegrityError, match=r"hashes to sha256:\w+\.\.\., the pinned digest is") as refused:
        load_estimator(model_dir, expected_digest=pin)
    assert "\n" not in str(refused.value)
    assert not marker.exists()  # nothing was unpickled

    # The same load without the pin runs the payload: the refusal above is what stopped it.
    estimator, _ = load_estimator(model_dir)
    assert estimator is None and marker.is_dir()  # os.mkdir ran and returned None


def test_a_swapped_onnx_file_with_an_edited_hash_is_refused(make_model_dir, tmp_path):
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / ONNX_FILENAME).write_bytes(b"the verified graph")
    directory, _ = make_model_dir(name="m", extra_files={ONNX_FILENAME: staged / ONNX_FILENAME})
    shutil.copy(staged / ONNX_FILENAME, directory / ONNX_FILENAME)
    pin = directory_digest(directory)
    _, files = load_verified(directory, expected_digest=pin)
    assert files.contents[ONNX_FILENAME] == b"the verified graph" and files.digest == pin

    _forge(directory, ONNX_FILENAME, b"a graph that answers wrongly")
    verify_model_dir(directory)  # the card alone is fooled
    with pytest.raises(ModelIntegrityError, match="pinned digest"):
        verify_model_dir(directory, expected_digest=pin)
    with pytest.raises(ModelIntegrityError, match="pinned digest"):
        load_verified(directory, expected_digest=pin)


@pytest.mark.parametrize("pin", ["", "sha256:abc", "ab" * 32, "sha256:" + "AB" * 32, 42])
def test_a_malformed_pin_is_refused(model_dir, pin):
    with pytest.raises(ModelIntegrityError, match="is not of the form sha256:<64 lowercase hex digits>"):
        verify_model_dir(model_dir, expected_digest=pin)


@pytest.mark.parametrize("kind", ["symlink", "subdirectory", "hidden file", "newline in name"])
def test_entries_the_digest_cannot_describe_are_refused(model_dir, tmp_path, kind):
    if kind == "symlink":
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        (model_dir / "extra.json").symlink_to(outside)
        expected = "which is a symlink"
    elif kind == "subdirectory":
        (model_dir / "nested").mkdir()
        expected = "which is a directory"
    elif kind == "hidden file":
        (model_dir / ".hidden").write_text("x")
        expected = "not starting with '.'"
    else:
        (model_dir / "a\nb").write_text("x")
        expected = "model file names are letters"
    with pytest.raises(ModelIntegrityError, match=expected):
        directory_digest(model_dir)
    with pytest.raises(ModelIntegrityError, match=expected):
        verify_model_dir(model_dir)


def test_a_changed_model_file_is_refused_before_unpickling(model_dir):
    path = model_dir / MODEL_FILENAME
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match=r"sha256 of model\.joblib .* refusing to unpickle"):
        load_estimator(model_dir)


def test_two_pickles_or_none_are_refused(model_dir):
    (model_dir / "other.pkl").write_bytes(b"x")
    with pytest.raises(
        ModelIntegrityError, match=r"exactly one model file model\.joblib; found: model\.joblib, other\.pkl"
    ):
        verify_model_dir(model_dir)
    (model_dir / "other.pkl").unlink()
    (model_dir / MODEL_FILENAME).unlink()
    with pytest.raises(ModelIntegrityError, match="found: none"):
        verify_model_dir(model_dir)


def test_missing_or_broken_card_is_refused(model_dir, tmp_path):
    with pytest.raises(ModelIntegrityError, match="does not exist"):
        read_model_card(tmp_path / "absent")
    card_path = model_dir / MODEL_CARD_FILENAME
    card_path.write_text("{not json")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        read_model_card(model_dir)
    card_path.write_text(json.dumps({"feature_names": ["a"]}))
    with pytest.raises(ModelIntegrityError, match="has no 'class_names' field"):
        read_model_card(model_dir)
    card_path.unlink()
    with pytest.raises(ModelIntegrityError, match=r"model\.json is missing"):
        read_model_card(model_dir)
    with pytest.raises(ModelIntegrityError, match=r"model\.json is missing"):
        verify_model_dir(model_dir)


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hyperparameters": "DEEP"}, "not valid JSON: recursion limit exceeded"),
        ({"files": {MODEL_FILENAME: 12345}}, r"field 'files\.model\.joblib' input should be a valid string"),
        ({"files": {MODEL_FILENAME: "abc"}}, r"field 'files\.model\.joblib' must be a sha256"),
        ({"files": {"other": "ab" * 32}}, r"field 'files' records no sha256 for model\.joblib"),
        ({"files": {MODEL_FILENAME: "ab" * 32, "../x": "ab" * 32}}, "a file name a model directory cannot hold"),
        ({"feature_names": []}, "field 'feature_names' list should have at least 1 item"),
        ({"feature_names": "abcd"}, "field 'feature_names' input should be a valid array"),
        ({"feature_names": [1, 2, 3, 4]}, r"field 'feature_names\.0' input should be a valid string"),
        ({"feature_names": ["a", "a", "b", "c"]}, "names must be unique; repeated: 'a'"),
        ({"class_names": ["only"]}, "field 'class_names' needs at least 2 classes for classification, got 1"),
        ({"task": "regression"}, "field 'class_names' must be empty for a regression model"),
        ({"task": "ranking"}, "field 'task' input should be 'classification' or 'regression'"),
        ({"features": [{"name": "x", "kind": "numeric"}]}, "field 'features' names \\['x'\\] but 'feature_names' is"),
        ({"features": [{"name": "x", "kind": "text"}]}, r"field 'features\.0\.kind' input should be 'numeric' or"),
        ({"serving_path": "triton"}, "field 'serving_path' input should be 'onnx', 'joblib' or ''"),
        ({"versions": {"python": "3.11"}}, "records no scikit-learn version"),
        ({"versions": {"scikit-learn": 1.5}}, r"field 'versions\.scikit-learn' input should be a valid string"),
        ({"metrics": {"accuracy": "high"}}, r"field 'metrics\.accuracy' input should be a valid number"),
        ({"schema_version": 3}, "schema_version' is 3; this code reads schema versions 1 and 2"),
        ({"model_family": None}, "field 'model_family' input should be a valid string"),
    ],
)
def test_malformed_cards_are_refused_in_one_line(model_dir, change, message):
    card = json.loads((model_dir / MODEL_CARD_FILENAME).read_text())
    card.update(change)
    text = json.dumps(card).replace('"DEEP"', DEEP)
    (model_dir / MODEL_CARD_FILENAME).write_text(text)
    for check in (read_model_card, verify_model_dir, load_estimator):
        with pytest.raises(ModelIntegrityError, match=message) as refused:
            check(model_dir)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 400


def test_a_card_that_is_not_an_object_or_too_large_is_refused(model_dir):
    card_path = model_dir / MODEL_CARD_FILENAME
    card_path.write_text("[1, 2]")
    with pytest.raises(ModelIntegrityError, match="must hold a JSON object"):
        read_model_card(model_dir)
    card_path.write_text(" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(ModelIntegrityError, match=r"model\.json is \d+ bytes; at most"):
        verify_model_dir(model_dir)


def test_another_sklearn_version_is_refused_with_a_fix(model_dir):
    with pytest.raises(ModelIntegrityError, match=r"trained with scikit-learn .* this runtime has 0\.0\.1; retrain"):
        verify_model_dir(model_dir, expected_sklearn="0.0.1")


def test_a_recorded_file_that_disappeared_is_refused(make_model_dir, tmp_path):
    extra = tmp_path / "m" / "notes.txt"
    extra.parent.mkdir()
    extra.write_text("x")
    directory, _ = make_model_dir(name="m", extra_files={"notes.txt": extra})
    extra.unlink()
    with pytest.raises(ModelIntegrityError, match=r"notes\.txt is recorded in model\.json but missing"):
        verify_model_dir(directory)


def test_training_never_writes_a_card_the_loaders_would_refuse(tmp_path, iris_xy):
    from sklearn.linear_model import LogisticRegression

    from components.model_artifact import save_model

    x, y, _, _ = iris_xy
    estimator = LogisticRegression(max_iter=300).fit(x, y)
    with pytest.raises(ModelIntegrityError, match="'feature_names' names must be unique; repeated: 'a'"):
        save_model(
            tmp_path / "dup", estimator, feature_names=["a", "a", "b", "c"], class_names=["0", "1", "2"],
            model_family="logistic_regression", hyperparameters={}, training_data_fingerprint="f", label_column="t",
        )  # fmt: skip
    assert not (tmp_path / "dup" / MODEL_CARD_FILENAME).exists()


_SWAP_DURING_LOAD = """
import sys
from pathlib import Path
from components.model_artifact import directory_digest, load_estimator
directory, evil = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
pin = directory_digest(directory)
opened, swapped = [], []
def hook(event, args):
    if event != "open" or not str(args[0]).startswith(str(directory)) or args[1] not in (None, "r", "rb"):
        return
    opened.append(Path(args[0]).name)
    if Path(args[0]).name == "model.json" and not swapped:  # model.joblib was read a moment ago: swap it now
        swapped.append(True)
        (directory / "model.joblib").write_bytes(evil)
sys.addaudithook(hook)
estimator, card = load_estimator(directory, expected_digest=pin)
print(opened.count("model.joblib"), type(estimator).__name__, bool(swapped))
"""


def test_a_file_swapped_after_it_was_read_is_never_the_one_loaded(model_dir, tmp_path):
    import sys

    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(_MakeDirectoryOnLoad(marker)))
    root = str(Path(__file__).resolve().parents[1])
    child = subprocess.run(  # the audit hook stays installed for the process: keep it out of pytest's
        [sys.executable, "-c", _SWAP_DURING_LOAD, str(model_dir), str(evil)],
        env={**os.environ, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert child.stdout.split() == ["1", "Pipeline", "True"]  # read once, the verified bytes loaded, swap happened
    assert not marker.exists()
    assert (model_dir / MODEL_FILENAME).read_bytes() == evil.read_bytes()


def test_a_version_1_card_still_loads_with_its_typed_fields_derived(model_dir):
    # Given a card exactly as session-3 training wrote it: no task, features, estimator or serving_path.
    card_path = model_dir / MODEL_CARD_FILENAME
    recorded = json.loads(card_path.read_text())
    for key in ("task", "features", "estimator", "serving_path"):
        del recorded[key]
    recorded["schema_version"] = 1
    card_path.write_text(json.dumps(recorded))
    # When it is loaded, then it reads as all-numeric, non-nullable classification served by joblib.
    estimator, card = load_estimator(model_dir, expected_digest=directory_digest(model_dir))
    assert card.schema_version == 1
    assert card.task == "classification"
    assert [(f.name, f.kind, f.nullable, f.categories) for f in card.features] == [
        (name, "numeric", False, []) for name in recorded["feature_names"]
    ]
    assert card.estimator == "sklearn.linear_model.LogisticRegression"
    assert card.serving_path == "joblib"
    assert card.feature_schema.all_numeric and card.feature_schema.class_names == ["0", "1", "2"]
    assert estimator.predict([[5.1, 3.5, 1.4, 0.2]]).tolist() == [0]


def test_a_version_1_forest_card_with_onnx_derives_the_onnx_serving_path(make_model_dir):
    directory, _ = make_model_dir(family="random_forest", name="rf")
    (directory / ONNX_FILENAME).write_bytes(b"onnx bytes")
    card_path = directory / MODEL_CARD_FILENAME
    recorded = json.loads(card_path.read_text())
    recorded["files"][ONNX_FILENAME] = hashlib.sha256(b"onnx bytes").hexdigest()
    for key in ("task", "features", "estimator", "serving_path"):
        del recorded[key]
    recorded["schema_version"] = 1
    card_path.write_text(json.dumps(recorded))
    card = verify_model_dir(directory)
    assert (card.estimator, card.serving_path) == ("sklearn.ensemble.RandomForestClassifier", "onnx")


def test_a_typed_regression_card_round_trips(tmp_path):
    import numpy as np
    from sklearn.linear_model import Ridge

    from components.features import Feature
    from components.model_artifact import ModelCard, save_model

    features = [
        Feature(name="size", kind="numeric", nullable=True),
        Feature(name="colour", kind="categorical", categories=["blue", "red"]),
    ]
    written = save_model(
        tmp_path / "m", Ridge().fit(np.array([[0.0], [1.0]]), [0.0, 1.0]), feature_names=["size", "colour"],
        class_names=[], model_family="ridge", hyperparameters={"alpha": 1.0}, training_data_fingerprint="f",
        label_column="price", task="regression", features=features, estimator_path="sklearn.linear_model.Ridge",
    )  # fmt: skip
    loaded = read_model_card(tmp_path / "m")
    assert loaded == written
    assert loaded.schema_version == 2 and loaded.task == "regression" and loaded.class_names == []
    assert loaded.features == features and loaded.serving_path == "joblib"
    assert loaded.feature_schema.features == features and not loaded.feature_schema.all_numeric
    assert ModelCard.from_json(loaded.to_json().encode()) == loaded


def test_a_card_claiming_an_onnx_path_it_does_not_have_is_refused(model_dir):
    _edit_card(model_dir, serving_path="onnx")
    with pytest.raises(ModelIntegrityError, match=r"field 'serving_path' is onnx but 'files' records no model\.onnx"):
        verify_model_dir(model_dir)
