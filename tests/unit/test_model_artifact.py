import json

import pytest

from components.constants import MODEL_CARD_FILENAME, MODEL_FILENAME
from components.model_artifact import (
    ModelIntegrityError,
    load_estimator,
    read_model_card,
    verify_model_dir,
)


def test_a_fresh_model_directory_verifies_and_loads(model_dir, iris_xy):
    x, y, features, _ = iris_xy
    estimator, card = load_estimator(model_dir)
    assert card.feature_names == features
    assert (estimator.predict(x) == y).mean() > 0.9


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
    card_path.write_text(json.dumps({"feature_names": []}))
    with pytest.raises(ModelIntegrityError, match="has no 'class_names' field"):
        read_model_card(model_dir)
    card_path.unlink()
    with pytest.raises(ModelIntegrityError, match=r"model\.json is missing"):
        read_model_card(model_dir)


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
