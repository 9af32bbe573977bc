"""Load a verified model directory and predict with ONNX Runtime when training proved it equivalent, else sklearn."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.constants import (
    MODEL_CARD_FILENAME,
    ONNX_FILENAME,
    ONNX_LABEL_OUTPUT,
    ONNX_NUMERIC_INPUT,
    ONNX_PROBA_OUTPUT,
    SERVING_PATH_ONNX,
    TASK_REGRESSION,
)
from components.model_artifact import ModelCard, ModelIntegrityError, has_onnx, load_verified, version_id

logger = logging.getLogger(__name__)

BACKEND_ONNX = "onnx"
BACKEND_JOBLIB = "joblib"
INLINE_BUDGET_S = 0.001
"""Predictions expected to take longer run in a worker thread instead of blocking the event loop."""
_CALIBRATION_ROWS = 64
_PYTHON_SCAN_LIMIT = 64
"""Up to this many values, max/min over a list beat numpy's per-call overhead."""
ONNX_EXACT_MAGNITUDE = 1e15
"""Requests with a larger |value| are predicted by the joblib estimator, the reference: the ONNX graph computes in
float32 and was proved equal to sklearn on training-like rows only; far outside them, float32 overflow answers
rows that sklearn refuses (or answers differently)."""


def _n_features_in(estimator: Any) -> int:
    return int(getattr(estimator, "n_features_in_", 0) or 0)


class NonFiniteScores(ValueError):
    """The model cannot compute with a row's values: non-finite probabilities or numbers, or sklearn refused them."""

    def __init__(self, row: int) -> None:
        super().__init__(f"row {row} gives non-finite scores")
        self.row = row


@dataclass
class Prediction:
    """Labels (classification) or numbers (regression) for every row, plus class probabilities when asked for."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


def _extreme(x: np.ndarray) -> bool:
    """Whether any |value| exceeds ONNX_EXACT_MAGNITUDE (on a request-sized matrix, plain Python is cheapest)."""
    if x.size <= _PYTHON_SCAN_LIMIT:
        values = x.ravel().tolist()
        return bool(values) and (max(values) > ONNX_EXACT_MAGNITUDE or min(values) < -ONNX_EXACT_MAGNITUDE)
    return bool(np.abs(x).max() > ONNX_EXACT_MAGNITUDE)


@dataclass
class LoadedModel:
    """A model ready to predict: the card, the estimator and (optionally) an ONNX session over the same model."""

    card: ModelCard
    estimator: Any
    onnx_bytes: bytes | None = None
    version: str = ""
    """The served version: the short id of the directory digest (or the version the deploy recorded)."""
    _session: Any = field(default=None, repr=False)
    _input_name: str = ""
    _label_output: str = ONNX_LABEL_OUTPUT
    _input_dtype: Any = np.float64
    _session_proba: bool = False
    _fixed_s: float = 0.0
    _per_row_s: float = 0.0
    _typed: bool = False
    _regression: bool = False
    _feed: Any = field(default=None, repr=False)
    """Typed models: rows -> the graph's inputs (`onnx_export.make_onnx_feed`), built once at load."""
    _float32_inputs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # Decided once here, never per request: the all-numeric float64 path stays exactly as fast as it was.
        self._typed = not all(f.kind == "numeric" and not f.nullable for f in self.card.features)
        self._regression = self.card.task == TASK_REGRESSION
        self._open_session()
        self._calibrate()

    def runs_inline(self, rows: int) -> bool:
        """Whether predicting `rows` rows is quick enough to run on the event loop (measured at load time)."""
        return self._session is not None and self._fixed_s + rows * self._per_row_s < INLINE_BUDGET_S

    @property
    def backend(self) -> str:
        """Which engine answers requests: `onnx` or `joblib`."""
        return BACKEND_ONNX if self._session is not None else BACKEND_JOBLIB

    @property
    def has_probabilities(self) -> bool:
        """Whether the model can return class probabilities (never for regression)."""
        return not self._regression and hasattr(self.estimator, "predict_proba")

    @property
    def regression(self) -> bool:
        """Whether the model predicts numbers rather than classes."""
        return self._regression

    def predict(self, x: np.ndarray, *, probabilities: bool) -> Prediction:
        """Predict labels or numbers (and probabilities if asked) for a validated input matrix.

        Args:
            x: float64 rows for an all-numeric model; for categorical or nullable features the object matrix of
                `components.features.feature_matrix` (floats, str categories, np.nan for missing).
            probabilities: Also return class probabilities (classification only).

        Raises:
            NonFiniteScores: Probabilities or predicted numbers came out NaN or infinite (the values overflow the
                model's arithmetic).
        """
        inputs = (
            self._graph_inputs(x) if self._session is not None and (self._session_proba or not probabilities) else None
        )
        if inputs is not None:
            wanted = [self._label_output, ONNX_PROBA_OUTPUT] if probabilities else [self._label_output]
            outputs = self._session.run(wanted, inputs)
            proba = np.asarray(outputs[1], dtype=np.float64) if probabilities else None
            prediction = Prediction(np.asarray(outputs[0]).ravel(), proba)
        else:
            try:
                # An overflow is answered below (a 400 naming the feature), not printed as a RuntimeWarning.
                with np.errstate(over="ignore", invalid="ignore"):
                    prediction = self._predict_joblib(x, probabilities=probabilities)
            except ValueError as exc:
                # sklearn's input check: a step overflowed (a scaler turning 1e38 into inf for float32 trees).
                if "infinity" not in str(exc) and "too large" not in str(exc):
                    raise
                raise NonFiniteScores(self._largest_row(x)) from None
        if prediction.probabilities is not None and not np.isfinite(prediction.probabilities).all():
            raise NonFiniteScores(int(np.argwhere(~np.isfinite(prediction.probabilities))[0][0]))
        if self._regression:
            numbers = np.asarray(prediction.labels, dtype=np.float64)
            if not np.isfinite(numbers).all():
                raise NonFiniteScores(int(np.argwhere(~np.isfinite(numbers))[0][0]))
            prediction.labels = numbers
        return prediction

    def _graph_inputs(self, x: np.ndarray) -> dict[str, np.ndarray] | None:
        """The ONNX feed for `x`, or None when a value is beyond the range the graph was proved on."""
        if not self._typed:
            return None if _extreme(x) else {self._input_name: x.astype(self._input_dtype, copy=False)}
        inputs: dict[str, np.ndarray] = self._feed(x)
        numbers = inputs.get(ONNX_NUMERIC_INPUT)
        # NaN (missing) compares false: only real values beyond the bound send the request to joblib.
        if numbers is not None and (np.abs(numbers) > ONNX_EXACT_MAGNITUDE).any():
            return None
        for name in self._float32_inputs:
            inputs[name] = inputs[name].astype(np.float32)
        return inputs

    def _largest_row(self, x: np.ndarray) -> int:
        """The row holding the largest numeric |value| (the one that overflowed)."""
        if not self._typed:
            return int(np.abs(x).max(axis=1).argmax())
        numeric = [j for j, f in enumerate(self.card.features) if f.kind == "numeric"]
        values = np.abs(np.asarray(x[:, numeric], dtype=np.float64))
        return int(np.nan_to_num(values, nan=0.0).max(axis=1).argmax()) if numeric else 0

    def _predict_joblib(self, x: np.ndarray, *, probabilities: bool) -> Prediction:
        if probabilities:
            proba = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
            # sklearn classifiers define predict as the argmax of predict_proba; one call instead of two.
            return Prediction(np.asarray(self.estimator.classes_).take(proba.argmax(axis=1)), proba)
        return Prediction(np.asarray(self.estimator.predict(x)))

    def _calibrate(self) -> None:
        # Time a 1-row and a 64-row call on random rows (varied tree paths) after one warm-up call each; this
        # also moves ONNX Runtime's first-call setup out of the first client's latency.
        n_features = len(self.card.feature_names) or _n_features_in(self.estimator)
        if n_features == 0:
            return
        rows = np.random.default_rng(0).normal(size=(_CALIBRATION_ROWS, n_features))
        if self._typed:
            rows = rows.astype(object)
            for j, feature in enumerate(self.card.features):
                if feature.kind != "numeric":
                    # Known categories in turn (an unknown one where none is known): every encoder branch runs.
                    known = feature.categories or [""]
                    rows[:, j] = [known[i % len(known)] for i in range(_CALIBRATION_ROWS)]
        timings = []
        for batch in (rows[:1], rows):
            try:
                self.predict(batch, probabilities=False)
                started = time.perf_counter()
                self.predict(batch, probabilities=False)
            except Exception:  # an estimator that cannot take these rows still serves real ones
                return
            timings.append(time.perf_counter() - started)
        self._fixed_s = timings[0]
        self._per_row_s = max(0.0, (timings[1] - timings[0]) / (_CALIBRATION_ROWS - 1))

    def _open_session(self) -> None:
        if self.onnx_bytes is None:
            return
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One request is tiny: thread fan-out costs more than it saves, and workers/processes give parallelism.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(self.onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a runtime that cannot run the graph still has the verified joblib model
            logger.warning("ONNX Runtime cannot open %s (%s); serving with joblib", ONNX_FILENAME, exc)
            return
        first_input = session.get_inputs()[0]
        self._input_name = first_input.name
        self._input_dtype = np.float32 if first_input.type == "tensor(float)" else np.float64
        if self._typed:
            from components.onnx_export import make_onnx_feed

            # Per-kind inputs (numeric float, categorical string), split out of the object matrix the same way the
            # export check fed them.
            self._feed = make_onnx_feed(self.card.feature_schema)
            self._float32_inputs = frozenset(i.name for i in session.get_inputs() if i.type == "tensor(float)")
        outputs = {out.name for out in session.get_outputs()}
        if self._regression:
            # A regressor's graph has one output, the predicted numbers ([N, 1] or [N]), whatever it is called.
            self._label_output = session.get_outputs()[0].name
        elif ONNX_LABEL_OUTPUT not in outputs:
            logger.warning("%s has no '%s' output; serving with joblib", ONNX_FILENAME, ONNX_LABEL_OUTPUT)
            return
        self._session_proba = ONNX_PROBA_OUTPUT in outputs and bool(self.card.onnx.get("has_probabilities", True))
        self._session = session

    def __getstate__(self) -> dict[str, Any]:
        # KServe's multi-worker mode pickles the model into each worker; an ONNX session cannot be pickled,
        # so the already-verified bytes travel and each worker opens its own session.
        state = dict(self.__dict__)
        state["_session"] = None
        state["_feed"] = None  # a closure; rebuilt with the session
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_session()


def load_model(
    directory: Path, *, use_onnx: bool = True, expected_digest: str | None = None, model_version: str | None = None
) -> LoadedModel:
    """Verify and load a model directory; never unpickles or runs a file whose sha256 differs from the card.

    Args:
        directory: The model directory (read-only is fine: nothing is written).
        use_onnx: Use the ONNX fast path when the card lists a verified `model.onnx`.
        expected_digest: The directory digest the deploy pinned (`sha256:<hex>`); any other directory is refused.
        model_version: The version to serve under; default: the short id of the directory's digest.

    Returns:
        The loaded model.

    Raises:
        ModelIntegrityError: The directory is missing files, holds two model files, a hash, the digest or the
            scikit-learn version does not match, or the card disagrees with the estimator.
    """
    import sklearn

    estimator, files = load_verified(directory, expected_sklearn=sklearn.__version__, expected_digest=expected_digest)
    card = files.card
    check_card_matches(card, estimator)
    # The very bytes that were verified go to ONNX Runtime; the file is not read a second time.
    onnx_bytes = (
        files.contents[ONNX_FILENAME]
        if use_onnx and card.serving_path == SERVING_PATH_ONNX and has_onnx(card)
        else None
    )
    model = LoadedModel(
        card=card, estimator=estimator, onnx_bytes=onnx_bytes, version=model_version or version_id(files.digest)
    )
    logger.info(
        "loaded model %s (version %s, sha256 %s..., scikit-learn %s, backend %s)",
        directory,
        model.version,
        card.model_sha256[:12],
        card.sklearn_version,
        model.backend,
    )
    return model


def check_card_matches(card: ModelCard, estimator: Any) -> None:
    """Refuse a card that describes another model than the estimator it ships with (one-line reason).

    Raises:
        ModelIntegrityError: No features, a feature count or names, or a class count that differ.
    """
    names = list(card.feature_names)
    if not names:
        raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} lists no features; the model cannot be served")
    expected = _n_features_in(estimator)
    if expected and expected != len(names):
        raise ModelIntegrityError(
            f"{MODEL_CARD_FILENAME} lists {len(names)} features but the model was trained on {expected}"
        )
    trained_names = getattr(estimator, "feature_names_in_", None)
    if trained_names is not None and [str(n) for n in trained_names] != names:
        raise ModelIntegrityError(f"{MODEL_CARD_FILENAME} names the features differently from the trained model")
    classes = getattr(estimator, "classes_", None)
    if classes is not None and card.class_names and len(classes) != len(card.class_names):
        raise ModelIntegrityError(
            f"{MODEL_CARD_FILENAME} lists {len(card.class_names)} classes but the model predicts {len(classes)}"
        )
