"""The model directory contract: exactly one `model.joblib` plus a `model.json` card.

Training writes it, the local store and the InferenceService serve it, and every loader verifies the
sha256 recorded in the card BEFORE unpickling, because joblib is pickle and loading runs code.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.constants import (
    MODEL_CARD_FILENAME,
    MODEL_CARD_SCHEMA_VERSION,
    MODEL_FILENAME,
    ONNX_FILENAME,
)

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
"""Suffixes KServe's sklearnserver treats as model files; a directory must hold exactly one."""

_HASH_CHUNK = 1 << 20


class ModelIntegrityError(RuntimeError):
    """The model directory is not safe or not fit to load; the message says why and what to do."""


@dataclass(frozen=True)
class ModelCard:
    """What `model.json` records about a trained model."""

    feature_names: list[str]
    class_names: list[str]
    model_family: str
    hyperparameters: dict[str, Any]
    versions: dict[str, str]
    files: dict[str, str]
    """File name -> sha256 of every file a loader may read."""
    training_data_fingerprint: str
    label_column: str
    metrics: dict[str, float] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)
    """How the ONNX fast path was checked against sklearn (empty when there is none)."""
    schema_version: int = MODEL_CARD_SCHEMA_VERSION

    @property
    def model_sha256(self) -> str:
        """Digest of `model.joblib`, the model's identity in lineage annotations and metrics."""
        return self.files[MODEL_FILENAME]

    @property
    def sklearn_version(self) -> str:
        """The scikit-learn version the model was trained with."""
        return self.versions["scikit-learn"]

    def to_json(self) -> str:
        """Serialize for `model.json` (stable key order so the file diff is readable)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ModelCard:
        """Parse a decoded `model.json`, naming the first missing or mistyped field."""
        required = {
            "feature_names": list,
            "class_names": list,
            "model_family": str,
            "hyperparameters": dict,
            "versions": dict,
            "files": dict,
            "training_data_fingerprint": str,
            "label_column": str,
        }
        for key, kind in required.items():
            if key not in raw:
                raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} has no '{key}' field")
            if not isinstance(raw[key], kind):
                raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} field '{key}' must be a {kind.__name__}")
        if MODEL_FILENAME not in raw["files"]:
            raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} records no sha256 for {MODEL_FILENAME}")
        if "scikit-learn" not in raw["versions"]:
            raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} records no scikit-learn version")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in raw.items() if k in known})


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large models do not spike memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def runtime_versions() -> dict[str, str]:
    """Versions that decide whether a pickle written here loads the same elsewhere."""
    import joblib
    import sklearn

    return {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
    }


def save_model(
    directory: Path,
    estimator: Any,
    *,
    feature_names: Sequence[str],
    class_names: Sequence[str],
    model_family: str,
    hyperparameters: Mapping[str, Any],
    training_data_fingerprint: str,
    label_column: str,
    extra_files: Mapping[str, Path] | None = None,
    onnx: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Write `model.joblib` and `model.json` (and any verified extra files) into `directory`.

    Args:
        directory: The `Output[Model]` path; created if missing, must not already hold a pickle.
        estimator: The fitted scikit-learn estimator.
        feature_names: Column order the estimator expects.
        class_names: Labels in the order of `estimator.classes_`.
        model_family: One of `constants.MODEL_FAMILIES`.
        hyperparameters: What the estimator was built with, for lineage.
        training_data_fingerprint: sha256 of the training data.
        label_column: Name of the label column in the source data.
        extra_files: Name -> already-written file inside `directory` (e.g. the ONNX fast path) to hash.
        onnx: How the ONNX file was checked against sklearn.

    Returns:
        The card written to `model.json`.
    """
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    stray = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if stray:
        raise ModelIntegrityError(f"{directory} already holds {stray}; a model directory must hold one pickle")
    model_path = directory / MODEL_FILENAME
    joblib.dump(estimator, model_path)
    files = {MODEL_FILENAME: sha256_file(model_path)}
    for name, path in (extra_files or {}).items():
        files[name] = sha256_file(path)
    card = ModelCard(
        feature_names=[str(n) for n in feature_names],
        class_names=[str(c) for c in class_names],
        model_family=model_family,
        hyperparameters=dict(hyperparameters),
        versions=runtime_versions(),
        files=files,
        training_data_fingerprint=training_data_fingerprint,
        label_column=label_column,
        onnx=dict(onnx or {}),
    )
    (directory / MODEL_CARD_FILENAME).write_text(card.to_json())
    return card


def read_model_card(directory: Path) -> ModelCard:
    """Read and validate `model.json` from a model directory."""
    card_path = directory / MODEL_CARD_FILENAME
    if not directory.is_dir():
        raise ModelIntegrityError(f"model directory {directory} does not exist")
    if not card_path.is_file():
        raise ModelIntegrityError(f"{card_path} is missing; the model directory was not written by train")
    try:
        raw = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelIntegrityError(f"{card_path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelIntegrityError(f"{card_path} must hold a JSON object")
    return ModelCard.from_mapping(raw)


def with_metrics(directory: Path, metrics: Mapping[str, float]) -> ModelCard:
    """Record evaluation metrics in the card (they are lineage, not part of any hashed file)."""
    card = read_model_card(directory)
    updated = ModelCard(**{**asdict(card), "metrics": {k: float(v) for k, v in metrics.items()}})
    (directory / MODEL_CARD_FILENAME).write_text(updated.to_json())
    return updated


def verify_model_dir(directory: Path, *, expected_sklearn: str | None = None) -> ModelCard:
    """Check a model directory before anything in it is unpickled.

    Refuses: a missing card or model file, more than one pickle, a sha256 that differs from the card, and
    (when `expected_sklearn` is given) a model trained with another scikit-learn version.

    Returns:
        The verified card.
    """
    card = read_model_card(directory)
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles != [MODEL_FILENAME]:
        found = ", ".join(pickles) or "none"
        raise ModelIntegrityError(f"{directory} must hold exactly one model file {MODEL_FILENAME}; found: {found}")
    for name, expected in card.files.items():
        path = directory / name
        if not path.is_file():
            raise ModelIntegrityError(f"{path} is recorded in {MODEL_CARD_FILENAME} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"sha256 of {name} is {actual[:12]}..., {MODEL_CARD_FILENAME} records {expected[:12]}...: "
                "refusing to unpickle a file that changed after training"
            )
    if expected_sklearn is not None and card.sklearn_version != expected_sklearn:
        raise ModelIntegrityError(
            f"model was trained with scikit-learn {card.sklearn_version} but this runtime has {expected_sklearn}; "
            "retrain with the project image or serve it with an image that pins the same version"
        )
    return card


def load_estimator(directory: Path, *, expected_sklearn: str | None = None) -> tuple[Any, ModelCard]:
    """Verify the directory, then unpickle `model.joblib`. Never unpickles an unverified file."""
    import io

    import joblib

    card = verify_model_dir(directory, expected_sklearn=expected_sklearn)
    # Hash the very bytes we unpickle, so a file swapped after verification is still refused.
    payload = (directory / MODEL_FILENAME).read_bytes()
    if hashlib.sha256(payload).hexdigest() != card.model_sha256:
        raise ModelIntegrityError(f"{MODEL_FILENAME} changed while it was being verified; refusing to load it")
    return joblib.load(io.BytesIO(payload)), card


def has_onnx(card: ModelCard) -> bool:
    """Whether training wrote and verified an ONNX fast path for this model."""
    return ONNX_FILENAME in card.files
