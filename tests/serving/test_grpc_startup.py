"""Starting the server: gRPC from both commands, the digest and version pins, and one-line refusals before loading."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

from components.deploy.local_store import publish
from components.model_artifact import directory_digest, version_id
from tests.helpers import free_port, wait_until_ready
from tests.serving.servers import ROOT, STARTUP_TIMEOUT_S, ServerProcess, start_server, train_iris_model_dir
from tests.serving.serving_cases import GOOD_ROW

SERVE = [sys.executable, "-m", "components.serving"]
ROWS = np.array([GOOD_ROW, [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3]])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory, _, _ = train_iris_model_dir(
        tmp_path_factory.mktemp("startup") / "model", family="logistic_regression", onnx=True
    )
    return directory


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The whole output is one line on stderr, no traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
    assert done.stdout.strip() == "", done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


def _infer(target: str, version: str = "") -> list[int]:
    with grpc.insecure_channel(target) as channel:
        request = pb.ModelInferRequest(model_name="iris", model_version=version)
        request.inputs.add(name="input-0", datatype="FP64", shape=list(ROWS.shape))
        request.raw_input_contents.append(ROWS.tobytes())
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    return np.frombuffer(reply.raw_output_contents[0], dtype="<i8").tolist()


# --- one-line refusals, before the model is loaded ---------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "Iris", "iris\n", "x" * 47])
def test_bad_model_name_is_refused_in_one_line(model_dir: Path, name: str) -> None:
    done = _run([*SERVE, f"--model_dir={model_dir}", f"--model_name={name}", "--host=127.0.0.1"])
    assert done.returncode == 2
    assert "model name" in _one_line(done)


def test_busy_http_port_is_the_first_and_only_line(model_dir: Path, busy_port: int) -> None:
    argv = [*SERVE, f"--model_dir={model_dir}", "--model_name=iris", "--host=127.0.0.1", f"--http_port={busy_port}"]
    done = _run(argv)
    assert done.returncode == 2
    assert f"HTTP port {busy_port} on 127.0.0.1 is already in use" in _one_line(done)


def test_busy_grpc_port_is_refused_before_loading(model_dir: Path, busy_port: int) -> None:
    argv = [*SERVE, f"--model_dir={model_dir}", "--model_name=iris", "--host=127.0.0.1"]
    done = _run([*argv, f"--http_port={free_port()}", f"--grpc_port={busy_port}"])
    assert done.returncode == 2
    assert f"gRPC port {busy_port}" in _one_line(done)


def test_pipeline_serve_refuses_a_bad_name_and_a_busy_port_first(tmp_path: Path, busy_port: int) -> None:
    base = [sys.executable, "pipeline.py", "serve", f"--root={tmp_path}"]
    done = _run([*base, "--model-name=../x"])
    assert done.returncode != 0
    assert "model name '../x'" in _one_line(done)
    # Nothing is deployed under tmp_path either: the busy port is still what is said, first and alone.
    done = _run([*base, f"--port={busy_port}"])
    assert done.returncode != 0
    assert f"port {busy_port}" in _one_line(done) and "in use" in done.stderr


def test_a_digest_pin_that_differs_is_refused_before_loading(model_dir: Path) -> None:
    wrong = "sha256:" + "0" * 64
    env = {**os.environ, "MODEL_DIGEST": wrong}
    done = _run([*SERVE, f"--model_dir={model_dir}", "--model_name=iris", f"--http_port={free_port()}"], env=env)
    assert done.returncode == 1
    assert "pinned digest" in done.stderr and "Traceback" not in done.stderr


# --- serving ------------------------------------------------------------------------------------------------


def test_digest_and_version_pins_from_the_environment(model_dir: Path, tmp_path: Path) -> None:
    digest = directory_digest(model_dir)
    grpc_port = free_port()
    os.environ["MODEL_DIGEST"], os.environ["MODEL_VERSION"] = digest, "v7"
    try:
        server = start_server(model_dir, tmp_path / "server.log", f"--grpc_port={grpc_port}")
    finally:
        del os.environ["MODEL_DIGEST"], os.environ["MODEL_VERSION"]
    try:
        meta = httpx.get(f"{server.url}/v2/models/iris", timeout=30).json()
        assert meta["versions"] == ["v7"]
        target = f"127.0.0.1:{grpc_port}"
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert list(stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), timeout=30).versions) == ["v7"]
            assert stub.ModelReady(pb.ModelReadyRequest(name="iris", version="v7"), timeout=30).ready
        labels = _infer(target, version="v7")
        reply = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": ROWS.tolist()}, timeout=30)
        assert labels == reply.json()["predictions"]
    finally:
        assert server.stop() == 0, server.output()[-2000:]


def test_two_http_workers_with_grpc(model_dir: Path, tmp_path: Path) -> None:
    grpc_port = free_port()
    server = start_server(model_dir, tmp_path / "server.log", "--workers=2", f"--grpc_port={grpc_port}")
    try:
        reply = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": ROWS.tolist()}, timeout=30)
        assert _infer(f"127.0.0.1:{grpc_port}") == reply.json()["predictions"]
    finally:
        assert server.stop() == 0, server.output()[-2000:]


def test_pipeline_serve_grpc_port_serves_the_deployed_version(model_dir: Path, tmp_path: Path) -> None:
    from components.constants import LOCAL_STORE_DIRNAME

    deployment = publish(model_dir, tmp_path / LOCAL_STORE_DIRNAME, model_name="iris")
    assert deployment.version == version_id(directory_digest(model_dir))
    port, grpc_port = free_port(), free_port()
    argv = [sys.executable, "pipeline.py", "serve", f"--root={tmp_path}", "--model-name=iris"]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [*argv, f"--port={port}", f"--grpc-port={grpc_port}"], stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT
    )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(server)
        assert f"gRPC (Open Inference Protocol V2): 127.0.0.1:{grpc_port}" in server.output()
        labels = _infer(f"127.0.0.1:{grpc_port}", version=deployment.version)
        reply = httpx.post(f"{server.url}/v1/models/iris:predict", json={"instances": ROWS.tolist()}, timeout=30)
        assert labels == reply.json()["predictions"]
    finally:
        assert server.stop(signal.SIGINT) == 0, server.output()[-2000:]


def _wait_ready(server: ServerProcess) -> None:
    wait_until_ready(f"{server.url}/v2/health/ready", server.proc, timeout=STARTUP_TIMEOUT_S, output=server.output)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], None),
        (["--grpc_port=9000"], 9000),
        (["--enable_grpc=true"], 8081),
        (["--enable_grpc=true", "--grpc_port=9000"], 9000),
        (["--enable_grpc=false", "--grpc_port=9000"], None),
    ],
    ids=["default-off", "port-given", "enable-only", "both", "disabled-wins"],
)
def test_grpc_is_served_only_when_asked(flags: list[str], expected: int | None) -> None:
    from components.serving.__main__ import _grpc_port, build_parser

    args = build_parser().parse_args(["--model_dir=/nowhere", *flags])
    assert _grpc_port(args) == expected
