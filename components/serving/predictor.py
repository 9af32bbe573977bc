"""Load a verified model directory and predict with ONNX Runtime when training proved it equivalent, else sklearn."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.constants import ONNX_FILENAME, ONNX_LABEL_OUTPUT, ONNX_PROBA_OUTPUT
from components.model_artifact import ModelCard, ModelIntegrityError, has_onnx, load_estimator

logger = logging.getLogger(__name__)

BACKEND_ONNX = "onnx"
BACKEND_JOBLIB = "joblib"
INLINE_BUDGET_S = 0.001
"""Predictions expected to take longer run in a worker thread instead of blocking the event loop."""
_CALIBRATION_ROWS = 64


def _n_features_in(estimator: Any) -> int:
    return int(getattr(estimator, "n_features_in_", 0) or 0)


@dataclass
class Prediction:
    """Labels for every row, plus class probabilities when they were asked for."""

    labels: np.ndarray
    probabilities: np.ndarray | None = None


@dataclass
class LoadedModel:
    """A model ready to predict: the card, the estimator and (optionally) an ONNX session over the same model."""

    card: ModelCard
    estimator: Any
    onnx_bytes: bytes | None = None
    _session: Any = field(default=None, repr=False)
    _input_name: str = ""
    _input_dtype: Any = np.float64
    _session_proba: bool = False
    _fixed_s: float = 0.0
    _per_row_s: float = 0.0

    def __post_init__(self) -> None:
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
        """Whether the model can return class probabilities."""
        return hasattr(self.estimator, "predict_proba")

    def predict(self, x: np.ndarray, *, probabilities: bool) -> Prediction:
        """Predict labels (and probabilities if asked) for a validated float64 matrix."""
        if self._session is not None and (self._session_proba or not probabilities):
            wanted = [ONNX_LABEL_OUTPUT, ONNX_PROBA_OUTPUT] if probabilities else [ONNX_LABEL_OUTPUT]
            outputs = self._session.run(wanted, {self._input_name: x.astype(self._input_dtype, copy=False)})
            proba = np.asarray(outputs[1], dtype=np.float64) if probabilities else None
            return Prediction(np.asarray(outputs[0]).ravel(), proba)
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
        outputs = {out.name for out in session.get_outputs()}
        self._session_proba = ONNX_PROBA_OUTPUT in outputs and bool(self.card.onnx.get("has_probabilities", True))
        self._session = session

    def __getstate__(self) -> dict[str, Any]:
        # KServe's multi-worker mode pickles the model into each worker; an ONNX session cannot be pickled,
        # so the already-verified bytes travel and each worker opens its own session.
        state = dict(self.__dict__)
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_session()


def load_model(directory: Path, *, use_onnx: bool = True) -> LoadedModel:
    """Verify and load a model directory; never unpickles or runs a file whose sha256 differs from the card.

    Args:
        directory: The model directory (read-only is fine: nothing is written).
        use_onnx: Use the ONNX fast path when the card lists a verified `model.onnx`.

    Returns:
        The loaded model.

    Raises:
        ModelIntegrityError: The directory is missing files, holds two model files, a hash or the scikit-learn
            version does not match.
    """
    import sklearn

    estimator, card = load_estimator(directory, expected_sklearn=sklearn.__version__)
    onnx_bytes = None
    if use_onnx and has_onnx(card):
        onnx_bytes = (directory / ONNX_FILENAME).read_bytes()
        # verify_model_dir hashed every file in the card; hash the exact bytes we hand to ONNX Runtime again.
        if hashlib.sha256(onnx_bytes).hexdigest() != card.files[ONNX_FILENAME]:
            raise ModelIntegrityError(f"{ONNX_FILENAME} changed while it was being verified; refusing to load it")
    model = LoadedModel(card=card, estimator=estimator, onnx_bytes=onnx_bytes)
    logger.info(
        "loaded model %s (sha256 %s..., scikit-learn %s, backend %s)",
        directory,
        card.model_sha256[:12],
        card.sklearn_version,
        model.backend,
    )
    return model
