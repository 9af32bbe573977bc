"""The Open Inference Protocol (V2) over gRPC: a thin servicer over KServe's generated stubs, same contract as REST.

Why not KServe's own `InferenceServicer` + `GRPCServer`: it serves `RepositoryModelLoad/Unload` to anyone who can
reach the port (issue 12's unload finding, over gRPC), logs a traceback for every client mistake and a line for
every call, and walks the whole dataplane (InferRequest objects, three latency histograms) around a 30 us model.
Here `ModelInfer` turns the protobuf (typed `contents` or `raw_input_contents`) into the same V2 dict the REST
routes decode and hands it to `SklearnModel.parse` / `predict_rows` / `reply`, so the two protocols cannot disagree
on what is valid or what is answered. Client mistakes are `INVALID_ARGUMENT` with the REST error message, unknown
models and versions `NOT_FOUND`, an unready model `UNAVAILABLE`; oversized messages get gRPC's own
`RESOURCE_EXHAUSTED` from the receive limit. Model control RPCs stay `UNIMPLEMENTED`.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc
import numpy as np
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from components.serving import metrics
from components.serving.contract import BINARY_DATA_SIZE, ClientError
from components.serving.model import SklearnModel
from components.serving.options import ServingOptions

logger = logging.getLogger(__name__)

GRPC_MAX_SEND_BYTES = 64 << 20
"""Replies are small (labels, probabilities); this only bounds a pathological one."""
RAW_OUTPUT_PARAMETER = "binary_data_output"
"""Request parameter (as in the REST binary extension) asking for `raw_output_contents`; raw inputs imply it."""

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Where the Open Inference Protocol puts a tensor's values for each datatype (`InferTensorContents`)."""

RAW_DTYPE = {
    "BOOL": np.dtype("?"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""Raw output bytes are little-endian, row-major (the binary tensor data extension)."""

Lookup = Callable[[str], Any]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """`inference.GRPCInferenceService` for the models in KServe's registry (only `SklearnModel`s infer)."""

    def __init__(
        self, lookup: Lookup, *, label: str, server_name: str, server_version: str, extensions: Sequence[str]
    ) -> None:
        """Serve the models `lookup(name)` returns (None for an unknown name).

        Args:
            lookup: Model registry lookup by name.
            label: Metric label for calls refused before a model is found (the served model's name: a client's
                random names must not become label values).
            server_name: `ServerMetadata` name (KServe's, as REST `GET /v2` says).
            server_version: `ServerMetadata` version.
            extensions: `ServerMetadata` extensions.
        """
        self._lookup = lookup
        self._label = label
        self._server = pb.ServerMetadataResponse(name=server_name, version=server_version, extensions=extensions)
        self._registered: list[str] = []

    def watch(self, names: Sequence[str]) -> None:
        """Names whose readiness `ServerReady` reports (the models the server was started with)."""
        self._registered = list(names)

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        """Live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        """Ready when every model the server started with is loaded and ready."""
        models = [self._lookup(name) for name in self._registered]
        return pb.ServerReadyResponse(ready=bool(models) and all(m is not None and m.ready for m in models))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        """Name and version as REST `GET /v2` says; no extensions (model repository RPCs are not served here)."""
        return self._server

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        """Whether the named (and, if given, versioned) model is ready; NOT_FOUND for any other."""
        model = await self._model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=bool(model.ready))

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        """Inputs, outputs, versions and platform, as REST `GET /v2/models/{name}` reports them."""
        model = await self._model(request.name, request.version, context)
        meta = model.metadata()
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[_tensor_metadata(t) for t in meta["inputs"]],
            outputs=[_tensor_metadata(t) for t in meta["outputs"]],
        )

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        """Validate with the REST contract, predict, answer in typed or raw contents."""
        model = await self._model(request.model_name, request.model_version, context)
        if not model.ready or model.loaded is None:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, f"model '{model.name}' is not ready")
        try:
            payload, binary, raw_out = request_payload(request)
            parsed = model.parse(payload, v2=True, binary=binary)
            started = time.perf_counter()
            if model.loaded.runs_inline(len(parsed.x)):
                prediction = model.predict_rows(parsed)
            else:
                # Same rule as REST: long calls leave the event loop so other requests keep being read.
                prediction = await asyncio.get_running_loop().run_in_executor(None, model.predict_rows, parsed)
            metrics.observe_predict_seconds(model.name, time.perf_counter() - started)
            reply = model.reply(parsed, prediction)
        except ClientError as exc:
            metrics.record_rejection(model.name, exc.reason)
            logger.info("gRPC ModelInfer refused for model %s: %s", model.name, exc.reason)
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message)
        except Exception:
            logger.exception("gRPC prediction failed for model %s", model.name)
            await _abort(context, grpc.StatusCode.INTERNAL, "internal error while predicting; see the server log")
        asyncio.get_running_loop().call_soon(model.after_prediction, parsed.x, prediction)
        return response_message(reply, raw=raw_out, model_version=_served_version(model))

    async def _model(self, name: str, version: str, context: Any) -> SklearnModel:
        model = self._lookup(name)
        if not isinstance(model, SklearnModel):
            metrics.record_rejection(self._label, "unknown_model")
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"model '{name[:60]}' is not served here")
        served = _served_version(model)
        if version and version != served:
            metrics.record_rejection(model.name, "unknown_version")
            await _abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"model '{model.name}' version '{version[:60]}' is not served here (serving version '{served}')",
            )
        return model


async def _abort(context: Any, code: grpc.StatusCode, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("grpc.aio's context.abort always raises")


def _served_version(model: SklearnModel) -> str:
    return model.version


def _tensor_metadata(tensor: dict[str, Any]) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"]
    )


# --- protobuf <-> the V2 dict the contract reads ------------------------------------------------------------


def request_payload(request: pb.ModelInferRequest) -> tuple[dict[str, Any], memoryview | None, bool]:
    """The V2 dict for a `ModelInferRequest`, its binary buffer, and whether the answer goes in raw contents.

    Typed `contents` become JSON-style `data` lists; `raw_input_contents` become the REST binary tensor extension
    (`parameters.binary_data_size` per input, one buffer), so both are decoded by the very code REST uses.

    Raises:
        ClientError: Raw contents that do not match the inputs in number, or that mix with typed contents.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ClientError(
            f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents; send one raw buffer per input",
            reason="bad_inputs",
        )
    inputs = []
    for i, tensor in enumerate(request.inputs):
        entry: dict[str, Any] = {"name": tensor.name, "shape": list(tensor.shape), "datatype": tensor.datatype}
        if raw:
            if tensor.HasField("contents"):
                raise ClientError(
                    f"input '{_short(tensor.name)}' has both contents and raw_input_contents; send one",
                    reason="bad_inputs",
                )
            entry["parameters"] = {BINARY_DATA_SIZE: len(raw[i])}
        else:
            entry["data"] = _typed_values(tensor)
        inputs.append(entry)
    parameters = _parameters(request.parameters)
    raw_out = bool(raw) or parameters.pop(RAW_OUTPUT_PARAMETER, False) is True
    payload: dict[str, Any] = {"inputs": inputs}
    if request.id:
        payload["id"] = request.id
    if parameters:
        payload["parameters"] = parameters
    if request.outputs:
        payload["outputs"] = [{"name": o.name} for o in request.outputs]
    binary = memoryview(raw[0] if len(raw) == 1 else b"".join(raw)) if raw else None
    return payload, binary, raw_out


def _typed_values(tensor: pb.ModelInferRequest.InferInputTensor) -> list[Any]:
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        return []  # the contract names the unsupported datatype
    values = list(getattr(tensor.contents, field))
    if field == "bytes_contents":
        try:
            values = [v.decode() for v in values]
        except UnicodeDecodeError:
            raise ClientError(
                f"input '{_short(tensor.name)}': a BYTES element is not UTF-8", reason="bad_value"
            ) from None
    if not values and tensor.HasField("contents"):
        filled = [descriptor.name for descriptor, _ in tensor.contents.ListFields()]
        if filled:
            raise ClientError(
                f"input '{_short(tensor.name)}' is {tensor.datatype} but its values are in {filled[0]}; "
                f"put them in {field}",
                reason="bad_datatype",
            )
    return values


def _parameters(parameters: Any) -> dict[str, Any]:
    decoded = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is not None:
            decoded[key] = getattr(value, kind)
    return decoded


def response_message(reply: dict[str, Any], *, raw: bool, model_version: str = "") -> pb.ModelInferResponse:
    """The `ModelInferResponse` for a V2 reply dict (`SklearnModel.reply`), typed or raw contents."""
    response = pb.ModelInferResponse(model_name=reply["model_name"], model_version=model_version, id=reply["id"])
    for output in reply["outputs"]:
        tensor = response.outputs.add(name=output["name"], datatype=output["datatype"], shape=output["shape"])
        data = output["data"]
        if raw:
            response.raw_output_contents.append(_raw_bytes(output["datatype"], data))
        elif output["datatype"] == "BYTES":
            tensor.contents.bytes_contents.extend(str(v).encode() for v in data)
        else:
            getattr(tensor.contents, CONTENTS_FIELD[output["datatype"]]).extend(data)
    return response


def _raw_bytes(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        # BYTES raw format: each element is a 4-byte little-endian length, then the bytes.
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in data))
    return np.asarray(data, dtype=RAW_DTYPE[datatype]).tobytes()


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the server ------------------------------------------------------------------------------------------


class GRPCServer:
    """A grpc.aio server on the model server's event loop, stopped with the REST server's grace period."""

    def __init__(
        self, servicer: InferenceServicer, options: ServingOptions, *, max_send_bytes: int = GRPC_MAX_SEND_BYTES
    ) -> None:
        """Bind `options.host:options.grpc_port` when `start()` runs (it must run on the serving loop).

        Args:
            servicer: The Open Inference Protocol servicer.
            options: The server's settings: host, `grpc_port` (required here), receive limit, grace period.
            max_send_bytes: Largest reply message.
        """
        host, port = options.host, options.grpc_port
        if port is None:
            raise ValueError("GRPCServer needs options.grpc_port")
        self.servicer = servicer
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_receive_bytes = options.grpc_max_receive_bytes
        self.max_send_bytes = max_send_bytes
        self.grace_period = options.grace_period
        self._server: aio.Server | None = None

    async def start(self) -> None:
        """Serve until `stop()`."""
        server = aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_receive_bytes),
                ("grpc.max_send_message_length", self.max_send_bytes),
                # gRPC sets SO_REUSEPORT by default: a second server on a busy port would silently share it.
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, server)
        server.add_insecure_port(self.address)
        self._server = server
        await server.start()
        logger.info("gRPC (Open Inference Protocol V2) on %s", self.address)
        await server.wait_for_termination()

    async def stop(self, sig: int | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period."""
        if self._server is not None:
            await self._server.stop(grace=self.grace_period)
