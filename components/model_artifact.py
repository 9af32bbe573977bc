"""The model directory contract: exactly one `model.joblib` plus a `model.json` card, pinned by one digest.

Training writes it, the local store and the InferenceService serve it. Two checks guard a load, both BEFORE
anything is unpickled or handed to ONNX Runtime, because joblib is pickle and loading runs code:

- the card's per-file sha256s catch accidents (a truncated copy, a file swapped by mistake);
- the directory digest (`directory_digest`), recorded by training and pinned OUTSIDE the directory (the local
  store's pointer, the InferenceService's `MODEL_DIGEST`), covers every file, `model.json` included, so an
  attacker who can write the directory but not the pin cannot change what runs (README "Security and reliability").

The loader reads every file into memory once, checks the digest of those bytes, and then parses, unpickles and
hands to ONNX Runtime the very same bytes: a file swapped after the check is never the one that runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from components.atomic import atomic_write_text
from components.constants import (
    MODEL_CARD_FILENAME,
    MODEL_CARD_SCHEMA_VERSION,
    MODEL_FILENAME,
    ONNX_FILENAME,
    SERVING_PATH_JOBLIB,
    SERVING_PATH_ONNX,
)
from components.features import Feature, FeatureSchema, Task

PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")
"""Suffixes KServe's sklearnserver treats as model files; a directory must hold exactly one."""
READABLE_SCHEMA_VERSIONS = (1, MODEL_CARD_SCHEMA_VERSION)
"""Card versions this code loads: 1 (all-numeric classification, before typed features) and the current one."""
DIGEST_PREFIX = "sha256:"
VERSION_ID_DIGITS = 12
"""Hex digits of the digest that name a version (48 bits); a reused version is still checked on its full digest."""
MAX_CARD_BYTES = 1 << 20
"""A card is a few KB; a larger one is refused before it is parsed."""

_HASH_CHUNK = 1 << 20
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
"""Names a model directory may hold: no hidden files, no spaces or newlines, so the digest is easy to recompute."""


class ModelIntegrityError(RuntimeError):
    """The model directory is not safe or not fit to load; the message says why and what to do."""


Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


def _unique(names: list[str]) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"names must be unique; repeated: {', '.join(map(repr, repeated[:5]))}")
    return names


def _model_file_listed(files: dict[str, str]) -> dict[str, str]:
    if MODEL_FILENAME not in files:
        raise ValueError(f"records no sha256 for {MODEL_FILENAME}")
    bad = [name for name in files if not _FILE_NAME.match(name)]
    if bad:
        raise ValueError(f"lists a file name a model directory cannot hold: {bad[0][:40]!r}")
    return files


def _sklearn_version(versions: dict[str, str]) -> dict[str, str]:
    if "scikit-learn" not in versions:
        raise ValueError("records no scikit-learn version")
    return versions


def _known_schema(version: int) -> int:
    if version not in READABLE_SCHEMA_VERSIONS:
        readable = " and ".join(map(str, READABLE_SCHEMA_VERSIONS))
        raise ValueError(f"is {version}; this code reads schema versions {readable}")
    return version


_NonEmpty = Annotated[str, StringConstraints(min_length=1)]


@dataclass(frozen=True)
class ModelCard:
    """What `model.json` records about a trained model.

    The annotations are also the schema `from_json` checks (strict: an integer where a string belongs is refused,
    not coerced); constructing a card in code does not validate. A version-1 card (written before typed features:
    all-numeric classification) has no `task`, `features`, `estimator` or `serving_path`; they are derived from
    what it does record (`__post_init__`), so old model directories keep loading and serving.
    """

    __pydantic_config__ = ConfigDict(strict=True, extra="ignore")

    feature_names: Annotated[list[_NonEmpty], Field(min_length=1), AfterValidator(_unique)]
    """Model input order; always `[f.name for f in features]`."""
    class_names: Annotated[list[str], AfterValidator(_unique)]
    """Classification: labels in the order of the estimator's `classes_` (at least two). Regression: empty."""
    model_family: _NonEmpty
    """What `model_family` resolved to: a short name (`random_forest`) or the sklearn import path given."""
    hyperparameters: dict[str, Any]
    versions: Annotated[dict[str, str], AfterValidator(_sklearn_version)]
    files: Annotated[dict[str, Sha256Hex], AfterValidator(_model_file_listed)]
    """File name -> sha256 of every file a loader may read."""
    training_data_fingerprint: str
    label_column: str
    metrics: dict[str, float] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)
    """How the ONNX fast path was checked against sklearn (empty when there is none)."""
    schema_version: Annotated[int, AfterValidator(_known_schema)] = MODEL_CARD_SCHEMA_VERSION
    task: Task = "classification"
    features: list[Feature] = field(default_factory=list)
    """The typed inputs in model order (kind, known categories, whether null is allowed); version 1: all numeric."""
    estimator: str = ""
    """Import path of the final estimator, e.g. `sklearn.ensemble.RandomForestClassifier`."""
    serving_path: Literal["onnx", "joblib", ""] = ""
    """Which file answers predictions: `onnx` (the verified fast path) or `joblib`; "" in code means derive it."""

    def __post_init__(self) -> None:
        """Derive what a version-1 card does not record (object.__setattr__: the dataclass is frozen)."""
        if not self.features:
            derived = [Feature(name=name, kind="numeric") for name in self.feature_names]
            object.__setattr__(self, "features", derived)
        if not self.estimator:
            object.__setattr__(self, "estimator", _estimator_path_of(self.model_family, self.task))
        if not self.serving_path:
            path = SERVING_PATH_ONNX if ONNX_FILENAME in self.files else SERVING_PATH_JOBLIB
            object.__setattr__(self, "serving_path", path)

    @property
    def feature_schema(self) -> FeatureSchema:
        """The card's inputs, task and label as the `FeatureSchema` that training used (its `task_reason` is lost)."""
        return FeatureSchema(
            task=self.task,
            task_reason=f"recorded in {MODEL_CARD_FILENAME}",
            label_column=self.label_column,
            features=self.features,
            class_names=self.class_names,
        )

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
        return json.dumps(_CARD_ADAPTER.dump_python(self, mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, data: bytes) -> ModelCard:
        """Parse the bytes of `model.json` (size-capped, depth-limited by the parser, never a traceback)."""
        if len(data) > MAX_CARD_BYTES:
            raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} is {len(data)} bytes; at most {MAX_CARD_BYTES} are read")
        try:
            card = _CARD_ADAPTER.validate_json(data)
        except ValidationError as exc:
            raise ModelIntegrityError(_card_error(exc)) from None
        problem = _inconsistency(card)
        if problem:
            raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} {problem}")
        return card


_CARD_ADAPTER: TypeAdapter[ModelCard] = TypeAdapter(ModelCard)


def _estimator_path_of(model_family: str, task: str) -> str:
    """The import path a family short name stands for (version-1 cards record only the short name)."""
    from components.estimators import FAMILIES

    if model_family in FAMILIES:
        classifier, regressor = FAMILIES[model_family]
        return (classifier if task == "classification" else regressor) or ""
    return model_family if model_family.startswith("sklearn.") else ""


def _inconsistency(card: ModelCard) -> str:
    """What makes a well-typed card contradict itself, or "" (checked on load, so never written either)."""
    names = [feature.name for feature in card.features]
    if names != card.feature_names:
        return f"field 'features' names {names[:5]} but 'feature_names' is {card.feature_names[:5]}"[:300]
    if card.task == "classification" and len(card.class_names) < 2:
        return f"field 'class_names' needs at least 2 classes for classification, got {len(card.class_names)}"
    if card.task == "regression" and card.class_names:
        return "field 'class_names' must be empty for a regression model"
    if card.serving_path == SERVING_PATH_ONNX and ONNX_FILENAME not in card.files:
        return f"field 'serving_path' is onnx but 'files' records no {ONNX_FILENAME}"
    return ""


def _card_error(exc: ValidationError) -> str:
    """The first problem of a card, as one line that names the field and never echoes a large value."""
    first = exc.errors(include_url=False, include_input=False)[0]
    kind, message = first["type"], str(first["msg"]).replace("\n", " ")
    where = ".".join(str(part) for part in first["loc"])
    if kind == "json_invalid":
        return f"{MODEL_CARD_FILENAME} is not valid JSON: {message.removeprefix('Invalid JSON: ')}"
    if kind == "dataclass_type" or (not where and kind != "value_error"):
        return f"{MODEL_CARD_FILENAME} must hold a JSON object"
    if kind == "missing":
        return f"{MODEL_CARD_FILENAME} has no '{where}' field"
    message = message.removeprefix("Value error, ")
    if not where:  # raised by a model validator of a nested value (e.g. a Feature), not by one field
        return f"{MODEL_CARD_FILENAME} {message}"[:300]
    if kind == "string_pattern_mismatch" and where.startswith("files."):
        message = "must be a sha256 (64 lowercase hex digits)"
    return f"{MODEL_CARD_FILENAME} field '{where}' {message[:1].lower()}{message[1:]}"[:300]


@dataclass(frozen=True)
class ModelFiles:
    """Every file of a model directory, read once into memory, with the digest of exactly these bytes."""

    directory: Path
    contents: Mapping[str, bytes]
    digest: str
    card: ModelCard


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
    task: Task = "classification",
    features: Sequence[Feature] | None = None,
    estimator_path: str = "",
) -> ModelCard:
    """Write `model.joblib` and `model.json` (and any verified extra files) into `directory`.

    Args:
        directory: The `Output[Model]` path; created if missing, must not already hold a pickle.
        estimator: The fitted scikit-learn estimator.
        feature_names: Column order the estimator expects.
        class_names: Labels in the order of `estimator.classes_`; empty for regression.
        model_family: What `model_family` resolved to (a short name of `estimators.FAMILIES` or an import path).
        hyperparameters: What the estimator was built with, for lineage.
        training_data_fingerprint: sha256 of the training data.
        label_column: Name of the label column in the source data.
        extra_files: Name -> already-written file inside `directory` (e.g. the ONNX fast path) to hash.
        onnx: How the ONNX file was checked against sklearn (or why it was not kept). `model.onnx` serves (the
            card's `serving_path`) exactly when it is one of `extra_files`.
        task: `classification` or `regression`.
        features: The typed inputs in `feature_names` order (None: all numeric, never missing).
        estimator_path: Import path of the final estimator ("": derived from a short `model_family`).

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
        task=task,
        features=list(features or []),
        estimator=estimator_path,
        serving_path=SERVING_PATH_ONNX if ONNX_FILENAME in files else SERVING_PATH_JOBLIB,
    )
    text = card.to_json()
    ModelCard.from_json(text.encode())  # never write a card the loaders would refuse
    atomic_write_text(directory / MODEL_CARD_FILENAME, text)
    return card


def read_model_card(directory: Path) -> ModelCard:
    """Read and validate `model.json` from a model directory (no integrity check: use `load_model_files` for that)."""
    card_path = directory / MODEL_CARD_FILENAME
    if not directory.is_dir():
        raise ModelIntegrityError(f"model directory {directory} does not exist")
    if not card_path.is_file():
        raise ModelIntegrityError(f"{card_path} is missing; the model directory was not written by train")
    with card_path.open("rb") as handle:
        return ModelCard.from_json(handle.read(MAX_CARD_BYTES + 1))


def check_digest(digest: object) -> str:
    """Return `digest` if it has the form `sha256:<64 lowercase hex>`, else raise `ModelIntegrityError`."""
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        shown = repr(digest)[:80]
        raise ModelIntegrityError(f"model digest {shown} is not of the form {DIGEST_PREFIX}<64 lowercase hex digits>")
    return digest


def version_id(digest: str) -> str:
    """The short version id of a model directory: the first 12 hex digits of its digest."""
    return check_digest(digest).removeprefix(DIGEST_PREFIX)[:VERSION_ID_DIGITS]


def _digest_of(file_hashes: Mapping[str, str]) -> str:
    # The same bytes `sha256sum` prints for the files in C-locale order, so anyone can recompute the digest with
    # `cd DIR && export LC_ALL=C && sha256sum -- * | sha256sum` (README, "Security and reliability").
    manifest = "".join(f"{file_hashes[name]}  {name}\n" for name in sorted(file_hashes, key=os.fsencode))
    return DIGEST_PREFIX + hashlib.sha256(manifest.encode()).hexdigest()


def _model_entries(directory: Path) -> list[Path]:
    """The files of a model directory, refusing anything a loader should never follow or that the digest skips."""
    if not directory.is_dir():
        raise ModelIntegrityError(f"model directory {directory} does not exist")
    entries = sorted(directory.iterdir(), key=lambda p: os.fsencode(p.name))
    for entry in entries:
        mode = entry.lstat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode) else "not a file"
            raise ModelIntegrityError(
                f"{directory} holds {entry.name[:60]!r}, which is {kind}; a model directory holds only regular files"
            )
        if not _FILE_NAME.match(entry.name):
            raise ModelIntegrityError(
                f"{directory} holds {entry.name[:60]!r}; model file names are letters, digits, '.', '_' and '-', "
                "not starting with '.'"
            )
    if not entries:
        raise ModelIntegrityError(f"model directory {directory} is empty")
    return entries


def directory_digest(directory: Path) -> str:
    """One digest over every file of a model directory, `model.json` included: `sha256:<64 hex>`.

    It is the sha256 of the lines `<sha256 of file>  <file name>` in byte order of the names, i.e. what
    `sha256sum -- * | sha256sum` computes in the directory under `LC_ALL=C`. Symlinks, sub-directories and hidden
    or oddly named files are refused, so nothing a loader could read escapes the digest.
    """
    return _digest_of({entry.name: sha256_file(entry) for entry in _model_entries(directory)})


def _check_pin(directory: Path, actual: str, expected_digest: str | None) -> None:
    if expected_digest is None:
        return
    check_digest(expected_digest)
    if actual != expected_digest:
        raise ModelIntegrityError(
            f"{directory} hashes to {actual[:19]}..., the pinned digest is {expected_digest[:19]}...: refusing to "
            "load a model directory that changed after training (or the pin names another model)"
        )


def load_model_files(directory: Path, *, expected_digest: str | None = None) -> ModelFiles:
    """Read every file of `directory` into memory once, check the pin and the card, and return the checked bytes.

    Nothing is parsed before the digest of the bytes read matches `expected_digest` (when given); the card is then
    parsed from those bytes, and every file it lists is checked against its recorded sha256.

    Raises:
        ModelIntegrityError: An odd entry, a digest that differs from the pin, a malformed card, a missing file or a
            file whose sha256 differs from the card.
    """
    entries = _model_entries(directory)
    for entry in entries:  # refuse a huge card before reading it, not after
        if entry.name == MODEL_CARD_FILENAME and entry.stat().st_size > MAX_CARD_BYTES:
            raise ModelIntegrityError(
                f"{MODEL_CARD_FILENAME} is {entry.stat().st_size} bytes; at most {MAX_CARD_BYTES} are read"
            )
    contents = {entry.name: entry.read_bytes() for entry in entries}
    digest = _digest_of({name: hashlib.sha256(data).hexdigest() for name, data in contents.items()})
    _check_pin(directory, digest, expected_digest)
    if MODEL_CARD_FILENAME not in contents:
        raise ModelIntegrityError(
            f"{directory / MODEL_CARD_FILENAME} is missing; the model directory was not written by train"
        )
    card = ModelCard.from_json(contents[MODEL_CARD_FILENAME])
    pickles = sorted(name for name in contents if Path(name).suffix in PICKLE_SUFFIXES)
    if pickles != [MODEL_FILENAME]:
        found = ", ".join(pickles) or "none"
        raise ModelIntegrityError(f"{directory} must hold exactly one model file {MODEL_FILENAME}; found: {found}")
    for name, expected in card.files.items():
        if name not in contents:
            raise ModelIntegrityError(f"{directory / name} is recorded in {MODEL_CARD_FILENAME} but missing")
        actual = hashlib.sha256(contents[name]).hexdigest()
        if actual != expected:
            raise ModelIntegrityError(
                f"sha256 of {name} is {actual[:12]}..., {MODEL_CARD_FILENAME} records {expected[:12]}...: "
                "refusing to unpickle a file that changed after training"
            )
    return ModelFiles(directory=directory, contents=contents, digest=digest, card=card)


def check_sklearn_version(card: ModelCard, expected_sklearn: str | None) -> None:
    """Refuse a model trained with another scikit-learn than `expected_sklearn` (None: accept any)."""
    if expected_sklearn is not None and card.sklearn_version != expected_sklearn:
        raise ModelIntegrityError(
            f"model was trained with scikit-learn {card.sklearn_version} but this runtime has {expected_sklearn}; "
            "retrain with the project image or serve it with an image that pins the same version"
        )


def verify_model_dir(
    directory: Path, *, expected_sklearn: str | None = None, expected_digest: str | None = None
) -> ModelCard:
    """Check a model directory before anything in it is unpickled.

    Refuses: odd entries (symlinks, sub-directories, hidden files), a digest that differs from `expected_digest`,
    a malformed card, a missing card or model file, more than one pickle, a sha256 that differs from the card, and
    (when `expected_sklearn` is given) a model trained with another scikit-learn version.

    Returns:
        The verified card.
    """
    card = load_model_files(directory, expected_digest=expected_digest).card
    check_sklearn_version(card, expected_sklearn)
    return card


def load_estimator(
    directory: Path, *, expected_sklearn: str | None = None, expected_digest: str | None = None
) -> tuple[Any, ModelCard]:
    """Verify the directory, then unpickle the very bytes that were verified. Never unpickles an unverified file."""
    estimator, files = load_verified(directory, expected_sklearn=expected_sklearn, expected_digest=expected_digest)
    return estimator, files.card


def load_verified(
    directory: Path, *, expected_sklearn: str | None = None, expected_digest: str | None = None
) -> tuple[Any, ModelFiles]:
    """`load_estimator` that also returns the checked bytes (hand `contents[ONNX_FILENAME]` to ONNX Runtime)."""
    import joblib

    files = load_model_files(directory, expected_digest=expected_digest)
    check_sklearn_version(files.card, expected_sklearn)
    return joblib.load(io.BytesIO(files.contents[MODEL_FILENAME])), files


def has_onnx(card: ModelCard) -> bool:
    """Whether training wrote and verified an ONNX fast path for this model."""
    return ONNX_FILENAME in card.files
