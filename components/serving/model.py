"""The `kserve.Model` the server registers: verified loading, the V1/V2 contract and the monitoring hooks."""

from __future__ import annotations

import atexit
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kserve
import numpy as np
import orjson
from kserve.errors import InvalidInput

from components.model_artifact import ModelIntegrityError
from components.serving import metrics
from components.serving.contract import (
    BINARY_DATA_SIZE,
    CATEGORICAL,
    V2_BYTES,
    V2_FP64,
    ClientError,
    FeatureSpec,
    rows_from_v1,
    rows_from_v2,
    typed_rows_from_v1,
    typed_rows_from_v2,
    want_probabilities,
)
from components.serving.options import ServingOptions
from components.serving.predictor import LoadedModel, NonFiniteScores, Prediction, load_model

logger = logging.getLogger(__name__)

V2_LABEL_OUTPUT = "predict"
V2_PROBA_OUTPUT = "predict_proba"
V2_OUTPUTS = (V2_LABEL_OUTPUT, V2_PROBA_OUTPUT)
V2_PLATFORM = "sklearn"
"""V2 metadata `platform`: the KServe model format the ServingRuntime declares (the backend is in /metrics)."""
BINARY_DATA_OUTPUT = "binary_data_output"
BINARY_DATA = "binary_data"
_LITTLE_ENDIAN = {"INT64": "<i8", "FP64": "<f8", "BOOL": "?"}


NO_PROBABILITIES = (
    "this is a regression model: it predicts numbers and has no class probabilities; ask for the prediction only"
)


@dataclass(frozen=True)
class ParsedRequest:
    """A validated inference request: the input rows (float64, or the typed object matrix) and how to answer."""

    x: np.ndarray
    probabilities: bool
    v2: bool = False
    outputs: set[str] = field(default_factory=set)
    """V2 outputs the client named (empty: the default outputs)."""
    request_id: Any = None
    binary_outputs: frozenset[str] = frozenset()
    """V2 outputs to send as raw bytes after the JSON (the binary tensor extension)."""


class SklearnModel(kserve.Model):
    """A scikit-learn model directory served through KServe; `ready` only once it is verified and loaded."""

    def __init__(self, options: ServingOptions) -> None:
        """Create an unloaded model; call `load()` before serving.

        Args:
            options: The server's settings; the model reads `model_name` (the name in the URLs), `model_dir`,
                `max_rows`, `return_probabilities`, `use_onnx`, `payload_log_dir`, `model_version` (the only
                version `versions/<v>` routes answer for; default: the short id of the directory digest) and
                `model_digest` (refuse a directory whose digest differs).
        """
        super().__init__(options.model_name)
        self.options = options
        self.payload_log_dir = options.payload_log_dir
        """Where predictions are logged; set to None for good when the log fails (predictions go on)."""
        self.loaded: LoadedModel | None = None
        self.spec = FeatureSpec((), options.max_rows)
        self.load_error: str | None = None
        self._label_datatype = V2_FP64
        self._rows_v1 = rows_from_v1
        self._rows_v2 = rows_from_v2
        self._writer: Any = None
        self._writer_pid = 0

    def load(self) -> bool:
        """Verify and load the model directory; on refusal log why and stay unready."""
        try:
            loaded = load_model(
                self.options.model_dir,
                use_onnx=self.options.use_onnx,
                expected_digest=self.options.model_digest,
                model_version=self.options.model_version,
            )
        except ModelIntegrityError as exc:
            self.load_error = str(exc)
            self.ready = False
            logger.error("model '%s' NOT loaded, it stays unready: %s", self.name, exc)
            return False
        self.loaded = loaded
        self.spec = FeatureSpec.of(loaded.card.features, self.options.max_rows)
        # The parser is chosen once per model: all-numeric models keep the float64 fast path untouched.
        typed = self.spec.typed
        self._rows_v1 = typed_rows_from_v1 if typed else rows_from_v1
        self._rows_v2 = typed_rows_from_v2 if typed else rows_from_v2
        if loaded.regression:
            self._label_datatype = V2_FP64
            if self.options.return_probabilities:
                logger.warning("--return_probabilities is ignored: '%s' is a regression model", self.name)
        else:
            self._label_datatype = _v2_datatype(np.asarray(getattr(loaded.estimator, "classes_", [])))
        metrics.record_model(
            self.name,
            model_sha256=loaded.card.model_sha256,
            sklearn_version=loaded.card.sklearn_version,
            backend=loaded.backend,
        )
        self.ready = True
        return True

    @property
    def version(self) -> str:
        """The served version id (empty until loaded, unless the deploy named one)."""
        return self.loaded.version if self.loaded is not None else (self.options.model_version or "")

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata (REST `GET /v2/models/<name>`; gRPC ModelMetadata has no `parameters` fields).

        Each input carries its feature's schema in `parameters` (kind, nullable, known categories), and the
        model's `parameters` say the task.
        """
        return {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": V2_PLATFORM,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            "parameters": {"task": self.task},
        }

    def v1_metadata(self) -> dict[str, Any]:
        """V1 model status with the schema (`GET /v1/models/<name>`): task, typed features and classes."""
        card = self.loaded.card if self.loaded is not None else None
        return {
            "name": self.name,
            "ready": self.ready,
            "version": self.version,
            "task": self.task,
            "features": [_feature_schema(f) for f in card.features] if card is not None else [],
            "class_names": list(card.class_names) if card is not None else [],
        }

    @property
    def task(self) -> str:
        """`classification` or `regression` (from `model.json`; empty until loaded)."""
        return self.loaded.card.task if self.loaded is not None else ""

    # --- the contract, shared by the fast HTTP routes and the gRPC servicer -----------------------------

    def parse(self, payload: dict[str, Any], *, v2: bool, binary: memoryview | None = None) -> ParsedRequest:
        """Validate a decoded V1 or V2 body into the matrix to predict and what to answer with.

        Args:
            payload: The decoded JSON object.
            v2: Whether it is an Open Inference Protocol request.
            binary: The raw tensor bytes after the JSON part (binary tensor extension), if any.
        """
        if not v2:
            return ParsedRequest(self._rows_v1(payload, self.spec), self._want_probabilities(payload.get("parameters")))
        x = self._rows_v2(payload, self.spec, binary)
        parameters = payload.get("parameters")
        requested = _requested_outputs(payload.get("outputs"))
        if V2_PROBA_OUTPUT in requested and self.loaded is not None and self.loaded.regression:
            raise ClientError(f"output '{V2_PROBA_OUTPUT}': {NO_PROBABILITIES}", reason="bad_outputs")
        proba = V2_PROBA_OUTPUT in requested if requested else self._want_probabilities(parameters)
        binary_outputs = _binary_outputs(parameters, payload.get("outputs"))
        request_id = payload.get("id")
        return ParsedRequest(x, proba, v2=True, outputs=requested, request_id=request_id, binary_outputs=binary_outputs)

    def predict_rows(self, request: ParsedRequest) -> Prediction:
        """Run the model on a parsed request (thread-safe: ONNX Runtime and sklearn predict hold no state).

        Raises:
            ClientError: The values overflow the model's arithmetic (names the row's largest feature).
        """
        if self.loaded is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        try:
            return self.loaded.predict(request.x, probabilities=request.probabilities)
        except NonFiniteScores as exc:
            row = request.x[exc.row]
            numeric = [j for j in range(self.spec.n_features) if self.spec.kind(j) != CATEGORICAL]
            values = np.array([row[j] for j in numeric], dtype=np.float64)
            if not numeric or np.isnan(values).all():
                raise ClientError(
                    f"row {exc.row}: the model cannot compute with these values", reason="out_of_range"
                ) from None
            column = numeric[int(np.nanargmax(np.abs(values)))]
            raise ClientError(
                f"row {exc.row}: the model cannot compute with these values (largest: feature "
                f"'{self.spec.feature_names[column][:60]}' = {float(row[column]):.3g})",
                reason="out_of_range",
            ) from None

    def render(self, request: ParsedRequest, prediction: Prediction) -> tuple[bytes, int | None]:
        """The response body, and the JSON part's length when binary outputs follow it (else None)."""
        body = self.reply(request, prediction)
        if not request.binary_outputs:
            return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), None
        arrays = {V2_LABEL_OUTPUT: prediction.labels, V2_PROBA_OUTPUT: prediction.probabilities}
        chunks = []
        for output in body["outputs"]:
            if output["name"] not in request.binary_outputs:
                continue
            raw = _tensor_bytes(np.asarray(arrays[output["name"]]), output["datatype"])
            del output["data"]
            output["parameters"] = {BINARY_DATA_SIZE: len(raw)}
            chunks.append(raw)
        header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        return header + b"".join(chunks), len(header)

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
            "model_version": self.version,
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
        """Count predictions and hand the rows to the payload log (both cheap, neither can fail a request).

        `x` is the matrix the model predicted from (float64, or the typed object matrix), as the payload log takes it.
        """
        if self.loaded is not None and self.loaded.regression:
            metrics.record_numeric_predictions(self.name, len(prediction.labels))
        else:
            metrics.record_predictions(self.name, prediction.labels)
        if self.payload_log_dir is None:
            return
        try:
            writer = self._payload_writer()
            writer.record(x, prediction.labels.tolist())
        except Exception as exc:
            # Once, in one line, then no more tries: a broken log must not write a traceback per request.
            self.payload_log_dir = None
            logger.error("payload log disabled: %s; predictions are still served", str(exc)[:300])

    def _want_probabilities(self, parameters: Any) -> bool:
        regression = self.loaded is not None and self.loaded.regression
        wanted = want_probabilities(parameters, self.options.return_probabilities and not regression)
        if wanted and regression:
            raise ClientError(f"parameter 'return_probabilities': {NO_PROBABILITIES}", reason="bad_parameters")
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
        """V2 metadata inputs: one per feature, named as in `model.json`: FP64 numeric, BYTES categorical.

        `parameters` hold the feature's schema: `feature_kind`, `nullable` and, for a categorical feature, the
        `categories` training saw (others are served too; see the README).
        """
        if self.loaded is None:
            return [{"name": name, "datatype": V2_FP64, "shape": [-1]} for name in self.spec.feature_names]
        return [
            {
                "name": feature.name,
                "datatype": V2_BYTES if feature.kind == CATEGORICAL else V2_FP64,
                "shape": [-1],
                "parameters": _feature_parameters(feature),
            }
            for feature in self.loaded.card.features
        ]

    def get_output_types(self) -> list[dict[str, Any]]:
        """V2 metadata outputs: labels (or FP64 numbers for regression), and probabilities in class order."""
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
            from components.payload_log import PayloadLogWriter

            assert self.loaded is not None and self.payload_log_dir is not None
            self._writer = PayloadLogWriter(
                self.payload_log_dir,
                model_name=self.name,
                model_sha256=self.loaded.card.model_sha256,
                features=list(self.loaded.card.features),
            )
            self._writer_pid = os.getpid()
            atexit.register(self.close_payload_log)
        return self._writer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_writer"] = None
        return state


def _feature_parameters(feature: Any) -> dict[str, Any]:
    parameters: dict[str, Any] = {"feature_kind": feature.kind, "nullable": feature.nullable}
    if feature.kind == CATEGORICAL:
        parameters["categories"] = list(feature.categories)
    return parameters


def _feature_schema(feature: Any) -> dict[str, Any]:
    schema = {"name": feature.name, "kind": feature.kind, "nullable": feature.nullable}
    if feature.kind == CATEGORICAL:
        schema["categories"] = list(feature.categories)
    return schema


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


def _binary_outputs(parameters: Any, outputs: Any) -> frozenset[str]:
    """Outputs to send as raw bytes: `parameters.binary_data_output`, overridden per output by `binary_data`."""
    default = parameters.get(BINARY_DATA_OUTPUT, False) if isinstance(parameters, dict) else False
    if not isinstance(default, bool):
        raise ClientError(f"parameter '{BINARY_DATA_OUTPUT}' must be true or false", reason="bad_parameters")
    chosen = set(V2_OUTPUTS) if default else set()
    for output in outputs or ():  # already checked by _requested_outputs: objects with a string name
        options = output.get("parameters")
        flag = options.get(BINARY_DATA) if isinstance(options, dict) else None
        if flag is None:
            continue
        if not isinstance(flag, bool):
            raise ClientError(f"output parameter '{BINARY_DATA}' must be true or false", reason="bad_outputs")
        if flag:
            chosen.add(output["name"])
        else:
            chosen.discard(output["name"])
    return frozenset(chosen)


def _tensor_bytes(values: np.ndarray, datatype: str) -> bytes:
    """Little-endian tensor bytes; BYTES elements are each a 4-byte length followed by UTF-8."""
    if datatype == "BYTES":
        encoded = [str(v).encode() for v in values.ravel().tolist()]
        return b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
    return np.ascontiguousarray(values, dtype=_LITTLE_ENDIAN[datatype]).tobytes()


def _infer_request_to_dict(request: kserve.InferRequest) -> dict[str, Any]:
    inputs = []
    for tensor in request.inputs:
        try:
            data = np.asarray(tensor.as_numpy()).ravel().tolist()
            data = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in data]
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
