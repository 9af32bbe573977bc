"""The Open Inference Protocol over gRPC, driven by the clients users have: tritonclient.grpc and KServe's own.

One server per module (`--grpc_port`) on the Iris ONNX model; every prediction is checked against the same rows
sent to V1 REST on the same server, and every refusal against its gRPC status code and message.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest, InferResponse
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc
from kserve.protocol.infer_type import RequestedOutput

from tests.helpers import free_port
from tests.serving.servers import ROOT, ServerProcess, start_server, train_iris_model_dir, train_mixed_model_dir
from tests.serving.serving_cases import FEATURES, GOOD_ROW, MAX_BODY_BYTES, MAX_ROWS

TRITON_CLIENT = Path(__file__).with_name("grpc_triton_client.py")

MODEL = "iris"
ROWS = np.array([GOOD_ROW, [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [5.9, 3.0, 5.1, 1.8]])
INT_ROWS = np.array([[5, 3, 1, 0], [6, 3, 4, 1], [7, 3, 6, 2]], dtype=np.int64)
DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64}


class GrpcServed:
    def __init__(self, server: ServerProcess, grpc_port: int, estimator: object) -> None:
        self.server = server
        self.target = f"127.0.0.1:{grpc_port}"
        self.estimator = estimator

    def v1(self, rows: np.ndarray, *, probabilities: bool = False) -> list:
        body = {"instances": rows.astype(np.float64).tolist(), "parameters": {"return_probabilities": probabilities}}
        reply = httpx.post(f"{self.server.url}/v1/models/{MODEL}:predict", json=body, timeout=30)
        assert reply.status_code == 200, reply.text
        return reply.json()["predictions"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcServed]:
    base = tmp_path_factory.mktemp("grpc-served")
    directory, _, estimator = train_iris_model_dir(base / "model", family="logistic_regression", onnx=True)
    grpc_port = free_port()
    server = start_server(
        directory,
        base / "server.log",
        f"--grpc_port={grpc_port}",
        f"--max_rows={MAX_ROWS}",
        f"--max_body_bytes={MAX_BODY_BYTES}",
    )
    yield GrpcServed(server, grpc_port, estimator)
    assert server.stop() == 0, server.output()[-3000:]
    log = server.output()
    assert "Traceback" not in log, log[-3000:]


@pytest.fixture(scope="module")
def stub(served: GrpcServed) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(served.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def triton_seen(served: GrpcServed) -> dict[str, Any]:
    """What tritonclient.grpc saw (run in its own process: it cannot share one with kserve's protobufs)."""
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient[grpc] is a dev dependency")
    spec = {"rows": ROWS.tolist(), "int_rows": INT_ROWS.tolist(), "features": FEATURES}
    done = subprocess.run(
        [sys.executable, str(TRITON_CLIENT), served.target, MODEL, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, Any] = json.loads(done.stdout)
    return seen


def test_tritonclient_health_and_metadata(triton_seen: dict[str, Any]) -> None:
    assert triton_seen["live"] and triton_seen["ready"] and triton_seen["model_ready"]
    assert triton_seen["unknown_model_ready"]["status"] == "StatusCode.NOT_FOUND"
    meta = triton_seen["metadata"]
    assert meta["name"] == MODEL
    assert [i["name"] for i in meta["inputs"]] == FEATURES
    assert {i["datatype"] for i in meta["inputs"]} == {"FP64"}
    assert meta["outputs"][0]["name"] == "predict"
    assert len(meta["versions"]) == 1 and meta["platform"], meta
    assert triton_seen["server_metadata"]["name"] and triton_seen["server_metadata"]["version"]


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_tritonclient_raw_inputs_equal_v1(served: GrpcServed, triton_seen: dict[str, Any], datatype: str) -> None:
    rows = _rows_for(datatype)
    seen = triton_seen["infer"][datatype]
    assert seen["predict"] == served.v1(rows)
    np.testing.assert_allclose(seen["predict_proba"], served.v1(rows, probabilities=True), rtol=1e-6)
    # Raw inputs get raw outputs, as from Triton and stock KServe.
    assert seen["raw_outputs"] == 2


def test_tritonclient_one_input_per_feature_equals_v1(served: GrpcServed, triton_seen: dict[str, Any]) -> None:
    assert triton_seen["per_feature"] == served.v1(ROWS)


def test_tritonclient_sees_invalid_argument_and_not_found(triton_seen: dict[str, Any]) -> None:
    assert triton_seen["wrong_shape"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "[N, 4]" in triton_seen["wrong_shape"]["message"]
    assert triton_seen["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert "nope" in triton_seen["unknown_model"]["message"]


def test_kserve_grpc_client_health(served: GrpcServed) -> None:
    async def check() -> tuple[bool, bool, bool]:
        async with InferenceGRPCClient(served.target) as client:
            return (
                await client.is_server_live(),
                await client.is_server_ready(),
                await client.is_model_ready(MODEL),
            )

    assert asyncio.run(check()) == (True, True, True)


# --- predictions equal V1's ---------------------------------------------------------------------------------


def _rows_for(datatype: str) -> np.ndarray:
    return INT_ROWS if datatype == "INT64" else ROWS.astype(DTYPES[datatype])


@pytest.mark.parametrize("binary", [False, True], ids=["typed-contents", "raw-contents"])
@pytest.mark.parametrize("datatype", list(DTYPES))
def test_kserve_grpc_client_equals_v1(served: GrpcServed, datatype: str, binary: bool) -> None:
    rows = _rows_for(datatype)
    tensor = InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    request = InferRequest(
        model_name=MODEL,
        infer_inputs=[tensor],
        request_outputs=[RequestedOutput("predict"), RequestedOutput("predict_proba")],
    )

    async def call() -> InferResponse:
        async with InferenceGRPCClient(served.target) as client:
            return await client.infer(request)

    response = asyncio.run(call())
    by_name = {o.name: o.as_numpy() for o in response.outputs}
    assert by_name["predict"].tolist() == served.v1(rows)
    np.testing.assert_allclose(by_name["predict_proba"], served.v1(rows, probabilities=True), rtol=1e-6)


def test_typed_contents_answer_typed_unless_raw_is_asked(
    served: GrpcServed, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    def request(raw_out: bool) -> pb.ModelInferRequest:
        message = pb.ModelInferRequest(model_name=MODEL, id="req-1")
        tensor = message.inputs.add(name="input-0", datatype="FP64", shape=list(ROWS.shape))
        tensor.contents.fp64_contents.extend(ROWS.ravel().tolist())
        if raw_out:
            message.parameters["binary_data_output"].bool_param = True
        return message

    typed = stub.ModelInfer(request(False))
    assert typed.id == "req-1" and typed.model_name == MODEL and typed.model_version
    assert list(typed.outputs[0].contents.int64_contents) == served.v1(ROWS)
    assert not typed.raw_output_contents
    raw = stub.ModelInfer(request(True))
    assert np.frombuffer(raw.raw_output_contents[0], dtype="<i8").tolist() == served.v1(ROWS)


# --- the contract: INVALID_ARGUMENT naming the problem, NOT_FOUND, RESOURCE_EXHAUSTED ---------------------


def _fp64(rows: np.ndarray, shape: list[int] | None = None, datatype: str = "FP64") -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=MODEL)
    message.inputs.add(name="input-0", datatype=datatype, shape=shape or list(rows.shape))
    message.raw_input_contents.append(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
    return message


def _refused(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=30)
    error = info.value
    assert len(error.details()) < 300 and "Traceback" not in error.details()
    return error


def _typed_with_wrong_field() -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=MODEL)
    tensor = message.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp64_contents.extend(GOOD_ROW)
    return message


def _both_contents() -> pb.ModelInferRequest:
    message = _fp64(np.array([GOOD_ROW]))
    message.inputs[0].contents.fp64_contents.extend(GOOD_ROW)
    return message


def _unknown_version() -> pb.ModelInferRequest:
    message = _fp64(np.array([GOOD_ROW]))
    message.model_version = "not-the-deployed-one"
    return message


def _unknown_model() -> pb.ModelInferRequest:
    message = _fp64(np.array([GOOD_ROW]))
    message.model_name = "nope"
    return message


REFUSALS = [
    ("wrong-shape", lambda: _fp64(np.array([GOOD_ROW[:3]])), grpc.StatusCode.INVALID_ARGUMENT, "[N, 4]"),
    ("shape-vs-bytes", lambda: _fp64(np.array([GOOD_ROW]), [2, 4]), grpc.StatusCode.INVALID_ARGUMENT, "64"),
    (
        "bytes-datatype",
        lambda: _fp64(np.array([GOOD_ROW]), datatype="BYTES"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "BYTES",
    ),
    ("typed-wrong-field", _typed_with_wrong_field, grpc.StatusCode.INVALID_ARGUMENT, "fp32_contents"),
    ("contents-and-raw", _both_contents, grpc.StatusCode.INVALID_ARGUMENT, "both"),
    ("too-many-rows", lambda: _fp64(np.array([GOOD_ROW] * (MAX_ROWS + 1))), grpc.StatusCode.INVALID_ARGUMENT, "limit"),
    ("nan", lambda: _fp64(np.array([[5.1, np.nan, 1.4, 0.2]])), grpc.StatusCode.INVALID_ARGUMENT, "sepal width"),
    ("unknown-model", _unknown_model, grpc.StatusCode.NOT_FOUND, "nope"),
    ("unknown-version", _unknown_version, grpc.StatusCode.NOT_FOUND, "not-the-deployed-one"),
]


@pytest.mark.parametrize(("builder", "code", "says"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_client_mistakes_get_a_status_naming_the_problem(
    stub: pb_grpc.GRPCInferenceServiceStub, builder, code: grpc.StatusCode, says: str
) -> None:
    error = _refused(stub, builder())
    assert error.code() == code, error.details()
    assert says.lower() in error.details().lower()


def test_message_over_the_limit_is_resource_exhausted(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    rows = np.tile(np.array(GOOD_ROW), (MAX_BODY_BYTES // 32 + 10, 1))
    request = _fp64(rows)
    assert request.ByteSize() > MAX_BODY_BYTES
    error = _refused(stub, request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_model_control_is_not_served_over_grpc(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=MODEL), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready


def test_a_client_error_logs_one_short_line(served: GrpcServed, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    before = served.server.output().count("\n")
    _refused(stub, _fp64(np.array([GOOD_ROW[:3]])))
    for _ in range(50):
        stub.ServerLive(pb.ServerLiveRequest())  # give the log a moment without sleeping on a guess
    lines = served.server.output().splitlines()[before:]
    assert "Traceback" not in "\n".join(lines)
    assert len(lines) <= 1, lines


# --- typed features: BYTES for categorical inputs -------------------------------------------------------------

MIXED_ROWS = [[12.0, 70.5, "month", "north"], [60.0, 25.0, "two_year", "south"], [3.0, 99.9, "month", "atlantis"]]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], list[tuple[str, str, list]]]]:
    """A gRPC server on the mixed-type model: (target, what V1 answers for MIXED_ROWS, the per-feature columns)."""
    base = tmp_path_factory.mktemp("grpc-mixed")
    _, card, _, _ = train_mixed_model_dir(base / "model")
    grpc_port = free_port()
    server = start_server(base / "model", base / "server.log", f"--grpc_port={grpc_port}", model_name="churn")
    try:
        reply = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": MIXED_ROWS}, timeout=30)
        assert reply.status_code == 200, reply.text
        columns = [
            (f.name, "BYTES" if f.kind == "categorical" else "FP64", [row[j] for row in MIXED_ROWS])
            for j, f in enumerate(card.features)
        ]
        yield f"127.0.0.1:{grpc_port}", reply.json()["predictions"], columns
    finally:
        assert server.stop() == 0, server.output()[-3000:]


def test_tritonclient_grpc_raw_bytes_inputs_equal_v1(mixed: tuple[str, list[str], list]) -> None:
    target, expected, columns = mixed
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient[grpc] is a dev dependency")
    done = subprocess.run(
        [sys.executable, str(TRITON_CLIENT), target, "churn", json.dumps({"columns": columns})],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)

    assert seen["predict"] == expected
    assert [i["datatype"] for i in seen["metadata"]["inputs"]] == ["FP64", "FP64", "BYTES", "BYTES"]
    assert seen["wrong_datatype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "feature 'region' (categorical, nullable) takes BYTES" in seen["wrong_datatype"]["message"]


@pytest.mark.parametrize("binary", [False, True], ids=["typed-contents", "raw-contents"])
def test_kserve_grpc_client_bytes_inputs_equal_v1(mixed: tuple[str, list[str], list], binary: bool) -> None:
    target, expected, columns = mixed
    tensors = []
    for name, datatype, values in columns:
        tensor = InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else None), binary_data=binary)
        tensors.append(tensor)

    async def call() -> InferResponse:
        async with InferenceGRPCClient(target) as client:
            return await client.infer(InferRequest(model_name="churn", infer_inputs=tensors))

    labels = asyncio.run(call()).outputs[0].as_numpy().tolist()
    assert [v.decode() if isinstance(v, bytes) else v for v in labels] == expected


# --- startup flags -------------------------------------------------------------------------------------------


def test_sigterm_with_grpc_exits_cleanly(tmp_path: Path) -> None:
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    grpc_port = free_port()
    server = start_server(directory, tmp_path / "server.log", f"--grpc_port={grpc_port}")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        assert pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=30).ready
    assert server.stop() == 0, server.output()[-3000:]


# --- the README's gRPC examples -------------------------------------------------------------------------------

README_GRPC_ADDRESS = "127.0.0.1:8081"


def _readme_grpc_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    return [code for code in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "grpc" in code.lower()]


def test_readme_grpc_examples(tmp_path: Path) -> None:
    blocks = _readme_grpc_blocks()
    joined = "\n".join(blocks)
    assert len(blocks) == 2 and "tritonclient.grpc" in joined and "InferenceGRPCClient" in joined
    directory, _, _ = train_iris_model_dir(tmp_path / "model", family="logistic_regression", onnx=True)
    grpc_port = free_port()
    server = start_server(directory, tmp_path / "server.log", f"--grpc_port={grpc_port}", model_name="sklearn-iris")
    try:
        printed = []
        for code in blocks:
            code = code.replace(README_GRPC_ADDRESS, f"127.0.0.1:{grpc_port}")
            done = subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
            )
            assert done.returncode == 0, done.stderr[-2000:]
            printed.append(done.stdout.strip())
    finally:
        assert server.stop() == 0
    # What each block's comment says it prints.
    assert printed == ["[0 2]", "[0]"]


def test_an_unready_model_is_unavailable(tmp_path: Path) -> None:
    from components.serving.grpc_server import GRPCServer, InferenceServicer
    from components.serving.model import SklearnModel
    from components.serving.options import ServingOptions

    # Given the real servicer on a real port, over a model that was never loaded (as after a refused directory)
    port = free_port()
    options = ServingOptions(
        model_dir=tmp_path / "never-loaded", model_name="iris", host="127.0.0.1", grpc_port=port, grace_period=1
    )
    model = SklearnModel(options)
    servicer = InferenceServicer(
        model_lookup(model), label="iris", server_name="kserve", server_version="x", extensions=[]
    )
    servicer.watch(["iris"])
    server = GRPCServer(servicer, options, max_send_bytes=1 << 20)
    loop = asyncio.new_event_loop()
    done = asyncio.Event()

    async def lifecycle() -> None:
        # Start and stop on the server's own loop (grpc.aio), in a thread, while this thread is the client.
        serving = asyncio.ensure_future(server.start())
        await done.wait()
        await server.stop()
        await serving

    thread = threading.Thread(target=loop.run_until_complete, args=(lifecycle(),), daemon=True)
    thread.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            # Then readiness says so, and inference is UNAVAILABLE (retryable), not a client error
            assert not stub.ServerReady(pb.ServerReadyRequest(), timeout=30).ready
            assert not stub.ModelReady(pb.ModelReadyRequest(name="iris"), timeout=30).ready
            error = _refused(stub, _fp64(np.array([GOOD_ROW])))
            assert error.code() == grpc.StatusCode.UNAVAILABLE and "not ready" in error.details()
    finally:
        loop.call_soon_threadsafe(done.set)
        thread.join(timeout=30)
    assert not thread.is_alive()


def model_lookup(model: object) -> Callable[[str], object | None]:
    """A registry with one model, looked up like KServe's `ModelRepository.get_model`."""
    return {"iris": model}.get
