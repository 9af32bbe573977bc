"""The `kserve.Model` the server registers: verified loading, the V1/V2 contract and the monitoring hooks."""

from __future__ import annotations

import atexit
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput

from components.constants import DEFAULT_MAX_ROWS
from components.model_artifact import ModelIntegrityError
from components.serving import metrics
from components.serving.contract import (
    V2_FP64,
    ClientError,
    FeatureSpec,
    rows_from_v1,
    rows_from_v2,
    want_probabilities,
)
from components.serving.predictor import LoadedModel, Prediction, load_model

logger = logging.getLogger(__name__)

V2_LABEL_OUTPUT = "predict"
V2_PROBA_OUTPUT = "predict_proba"
V2_OUTPUTS = (V2_LABEL_OUTPUT, V2_PROBA_OUTPUT)


@dataclass(frozen=True)
class ParsedRequest:
    """A validated inference request: the float64 rows and how to answer."""

    x: np.ndarray
    probabilities: bool
    v2: bool = False
    outputs: set[str] = field(default_factory=set)
    """V2 outputs the client named (empty: the default outputs)."""
    request_id: Any = None


class SklearnModel(kserve.Model):
    """A scikit-learn model directory served through KServe; `ready` only once it is verified and loaded."""

    def __init__(
        self,
        name: str,
        model_dir: Path,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        return_probabilities: bool = False,
        use_onnx: bool = True,
        payload_log_dir: Path | None = None,
    ) -> None:
        """Create an unloaded model; call `load()` before serving.

        Args:
            name: The name in the URL (`/v1/models/<name>:predict`).
            model_dir: Directory with `model.joblib` + `model.json` (+ optional verified `model.onnx`).
            max_rows: Most rows accepted in one request.
            return_probabilities: Server default for answering with class probabilities instead of labels.
            use_onnx: Use the ONNX fast path when the card lists a verified one.
            payload_log_dir: When set, every successful prediction is handed to a PayloadLogWriter here.
        """
        super().__init__(name)
        self.model_dir = model_dir
        self.max_rows = max_rows
        self.return_probabilities = return_probabilities
        self.use_onnx = use_onnx
        self.payload_log_dir = payload_log_dir
        self.loaded: LoadedModel | None = None
        self.spec = FeatureSpec((), max_rows)
        self.load_error: str | None = None
        self._label_datatype = V2_FP64
        self._writer: Any = None
        self._writer_pid = 0

    def load(self) -> bool:
        """Verify and load the model directory; on refusal log why and stay unready."""
        try:
            loaded = load_model(self.model_dir, use_onnx=self.use_onnx)
        except ModelIntegrityError as exc:
            self.load_error = str(exc)
            self.ready = False
            logger.error("model '%s' NOT loaded, it stays unready: %s", self.name, exc)
            return False
        self.loaded = loaded
        self.spec = FeatureSpec(tuple(loaded.card.feature_names), self.max_rows)
        self._label_datatype = _v2_datatype(np.asarray(getattr(loaded.estimator, "classes_", [])))
        metrics.record_model(
            self.name,
            model_sha256=loaded.card.model_sha256,
            sklearn_version=loaded.card.sklearn_version,
            backend=loaded.backend,
        )
        self.ready = True
        return True

    # --- the contract, shared by the fast HTTP routes and KServe's own dataplane (gRPC) -------------

    def parse(self, payload: dict[str, Any], *, v2: bool) -> ParsedRequest:
        """Validate a decoded V1 or V2 body into the matrix to predict and what to answer with."""
        if not v2:
            return ParsedRequest(rows_from_v1(payload, self.spec), self._want_probabilities(payload.get("parameters")))
        x = rows_from_v2(payload, self.spec)
        requested = _requested_outputs(payload.get("outputs"))
        proba = V2_PROBA_OUTPUT in requested if requested else self._want_probabilities(payload.get("parameters"))
        request_id = payload.get("id")
        return ParsedRequest(x, proba, v2=True, outputs=requested, request_id=request_id)

    def predict_rows(self, request: ParsedRequest) -> Prediction:
        """Run the model on a parsed request (thread-safe: ONNX Runtime and sklearn predict hold no state)."""
        if self.loaded is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self.loaded.predict(request.x, probabilities=request.probabilities)

    def reply(self, request: ParsedRequest, prediction: Prediction) -> dict[str, Any]:
        """The V1 or V2 response body for a prediction."""
        if not request.v2:
            values = prediction.probabilities if prediction.probabilities is not None else prediction.labels
            return {"predictions": values.tolist()}
        outputs = []
        if not request.outputs or V2_LABEL_OUTPUT in request.outputs:
            outputs.append(
                {
                    "name": V2_LABEL_OUTPUT,
                    "datatype": self._label_datatype,
                    "shape": [len(prediction.labels)],
                    "data": prediction.labels.tolist(),
                }
            )
        if prediction.probabilities is not None:
            outputs.append(
                {
                    "name": V2_PROBA_OUTPUT,
                    "datatype": V2_FP64,
                    "shape": list(prediction.probabilities.shape),
                    "data": prediction.probabilities.ravel().tolist(),
                }
            )
        request_id = request.request_id
        return {
            "model_name": self.name,
            "id": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
            "parameters": {},
            "outputs": outputs,
        }

    def infer(self, payload: dict[str, Any], *, v2: bool) -> tuple[dict[str, Any], ParsedRequest, Prediction]:
        """Parse, predict and answer in one call (the dataplane path and tests)."""
        request = self.parse(payload, v2=v2)
        prediction = self.predict_rows(request)
        return self.reply(request, prediction), request, prediction

    def after_prediction(self, x: np.ndarray, prediction: Prediction) -> None:
        """Count predicted classes and hand the rows to the payload log (both cheap, neither can fail a request)."""
        metrics.record_predictions(self.name, prediction.labels)
        if self.payload_log_dir is None:
            return
        try:
            writer = self._payload_writer()
            writer.record(x, prediction.labels.tolist())
        except Exception:
            logger.exception("payload log failed; predictions are still served")

    def _want_probabilities(self, parameters: Any) -> bool:
        wanted = want_probabilities(parameters, self.return_probabilities)
        if wanted and self.loaded is not None and not self.loaded.has_probabilities:
            raise ClientError("this model has no predict_proba; ask for labels", reason="bad_parameters")
        return wanted

    # --- kserve.Model hooks ------------------------------------------------------------------------------

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """KServe dataplane entry (gRPC and any route not served by the fast path); same contract."""
        try:
            if isinstance(payload, dict):
                body, request, prediction = self.infer(payload, v2=False)
            elif isinstance(payload, kserve.InferRequest):
                body, request, prediction = self.infer(_infer_request_to_dict(payload), v2=True)
                self.after_prediction(request.x, prediction)
                return kserve.InferResponse.from_rest(body)
            else:
                raise ClientError("request must be a JSON object", reason="malformed_json")
        except ClientError as exc:
            metrics.record_rejection(self.name, exc.reason)
            raise InvalidInput(exc.message) from None
        self.after_prediction(request.x, prediction)
        return body

    def get_input_types(self) -> list[dict[str, Any]]:
        """V2 metadata inputs: one FP64 column per feature, named as in `model.json`."""
        return [{"name": name, "datatype": V2_FP64, "shape": [-1]} for name in self.spec.feature_names]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata outputs: labels, and probabilities in `model.json`'s class order."""
        outputs = [{"name": V2_LABEL_OUTPUT, "datatype": self._label_datatype, "shape": [-1]}]
        if self.loaded is not None and self.loaded.has_probabilities:
            n_classes = len(self.loaded.card.class_names)
            outputs.append({"name": V2_PROBA_OUTPUT, "datatype": V2_FP64, "shape": [-1, n_classes]})
        return outputs

    def stop(self) -> None:
        """Flush the payload log (called when KServe unloads the model)."""
        self.close_payload_log()

    def close_payload_log(self) -> None:
        """Flush and close this process's payload writer, once."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def _payload_writer(self) -> Any:
        # One writer per process: KServe's --workers pickles this model into each worker.
        if self._writer is None or self._writer_pid != os.getpid():
            from components.monitoring.payload_log import PayloadLogWriter

            assert self.loaded is not None and self.payload_log_dir is not None
            self._writer = PayloadLogWriter(
                self.payload_log_dir,
                model_name=self.name,
                model_sha256=self.loaded.card.model_sha256,
                feature_names=list(self.spec.feature_names),
            )
            self._writer_pid = os.getpid()
            atexit.register(self.close_payload_log)
        return self._writer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_writer"] = None
        return state


def _requested_outputs(outputs: Any) -> set[str]:
    if outputs is None:
        return set()
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise ClientError("'outputs' must be a list of objects with a 'name'", reason="bad_outputs")
    names = {o["name"] for o in outputs}
    unknown = names - set(V2_OUTPUTS)
    if unknown:
        raise ClientError(
            f"unknown output(s) {sorted(unknown)[:3]}; choose from {list(V2_OUTPUTS)}", reason="bad_outputs"
        )
    return names


def _infer_request_to_dict(request: kserve.InferRequest) -> dict[str, Any]:
    inputs = []
    for tensor in request.inputs:
        try:
            data = np.asarray(tensor.as_numpy()).ravel().tolist()
        except Exception:
            raise ClientError(f"input '{tensor.name}' has no readable data", reason="bad_inputs") from None
        inputs.append({"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype, "data": data})
    outputs = [{"name": o.name} for o in (request.request_outputs or [])] or None
    # gRPC parameters arrive as protobuf values; the OIP way to ask for probabilities is `outputs`.
    return {"id": request.id, "inputs": inputs, "outputs": outputs}


def _v2_datatype(classes: np.ndarray | Sequence[Any]) -> str:
    kind = np.asarray(classes).dtype.kind
    if kind in "iu":
        return "INT64"
    if kind in "fc":
        return V2_FP64
    if kind == "b":
        return "BOOL"
    return "BYTES"
