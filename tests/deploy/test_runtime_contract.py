"""The ServingRuntime's container spec works with the project's model server, without a cluster or an image.

Starts `kfp-sklearn-serve` from this venv with the command, args and env that `manifests/base/servingruntime.yaml`
gives the container (only the port, the model path and the bind address are adapted to a test process), then asks
the routes the runtime's probes and the deploy step's smoke test use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.constants import DEFAULT_MODEL_NAME, MODEL_DIGEST_ENV, MODEL_MOUNT_PATH, MODEL_VERSION_ENV
from components.deploy.cluster import smoke_predict
from components.model_artifact import directory_digest, version_id
from tests.helpers import free_port
from tests.manifests.kube_schemas import MANIFESTS, kustomize_available, render

pytestmark = pytest.mark.skipif(not kustomize_available(), reason="kubectl/kustomize not on PATH")
START_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def runtime_container() -> dict:
    (runtime,) = [o for o in render(MANIFESTS / "overlays" / "kind") if o["kind"] == "ServingRuntime"]
    return runtime["spec"]["containers"][0]


@pytest.fixture
def server(runtime_container: dict, make_model_dir, request) -> Iterator[tuple[str, subprocess.Popen, int]]:
    executable = shutil.which(runtime_container["command"][0], path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.skip(f"{runtime_container['command'][0]} is not installed in this venv")
    model_dir, _ = make_model_dir(name="runtime-contract")
    port, grpc_port = free_port(), free_port()
    args = []
    for arg in runtime_container["args"]:
        arg = arg.replace("{{.Name}}", DEFAULT_MODEL_NAME)  # what KServe substitutes
        arg = arg.replace(MODEL_MOUNT_PATH, str(model_dir))  # where the storage initializer would put it
        if arg.startswith("--http_port="):
            arg = f"--http_port={port}"
        if arg.startswith("--grpc_port="):
            arg = f"--grpc_port={grpc_port}"
        args.append(arg)
    env = {**os.environ, **{e["name"]: e["value"] for e in runtime_container.get("env", [])}}
    env["HOME"] = str(model_dir.parent)  # the pod's HOME=/tmp, made private to this test
    # What the deploy step adds through the InferenceService (spec.predictor.model.env).
    digest = request.param(model_dir) if hasattr(request, "param") else directory_digest(model_dir)
    env.update({MODEL_DIGEST_ENV: digest, MODEL_VERSION_ENV: version_id(directory_digest(model_dir))})
    process = subprocess.Popen(
        [executable, *args, "--host=127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", process, grpc_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def wait_for(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {process.stderr.read()[-3000:]}")
        try:
            if http_status(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} not 200 within {START_TIMEOUT_S:.0f}s")


@pytest.mark.slow
def test_runtime_probes_and_smoke_predict_work_against_the_real_server(runtime_container, server, iris_xy):
    base_url, process, grpc_port = server
    ready_path = runtime_container["readinessProbe"]["httpGet"]["path"]
    live_path = runtime_container["livenessProbe"]["httpGet"]["path"]
    (port_arg,) = [a for a in runtime_container["args"] if a.startswith("--http_port=")]
    assert runtime_container["readinessProbe"]["httpGet"]["port"] == int(port_arg.split("=")[1])
    assert runtime_container["livenessProbe"]["httpGet"]["port"] == int(port_arg.split("=")[1])

    wait_for(f"{base_url}{ready_path}", process)

    assert http_status(f"{base_url}{live_path}") == 200
    assert http_status(f"{base_url}/v1/models/{DEFAULT_MODEL_NAME}") == 200
    x, y, *_ = iris_xy
    rows = [0, 60, 120]
    predictions = smoke_predict(base_url, DEFAULT_MODEL_NAME, x[rows].tolist(), attempts=3, retry_interval_seconds=1)
    assert json.loads(json.dumps(predictions)) == y[rows].tolist()
    # The runtime's second port serves Open Inference Protocol gRPC (a real client). tritonclient.grpc runs in its
    # own process: it and kserve both register the protobuf package `inference`, so one process cannot hold both.
    check = (
        "import sys, tritonclient.grpc as g\n"
        "c = g.InferenceServerClient(sys.argv[1])\n"
        "print(c.is_server_ready() and c.is_model_ready(sys.argv[2]))\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", check, f"127.0.0.1:{grpc_port}", DEFAULT_MODEL_NAME],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answer.stdout.strip() == "True", answer.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("server", [lambda model_dir: "sha256:" + "0" * 64], indirect=True)
def test_a_model_directory_that_does_not_match_the_pinned_digest_is_never_served(server):
    base_url, process, _ = server
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not listening (yet) is fine; answering 200 is not
            assert http_status(f"{base_url}/v1/models/{DEFAULT_MODEL_NAME}") != 200
        time.sleep(0.5)
    assert process.returncode not in (None, 0), "the server kept running with a model it must refuse"
    assert "digest" in process.stderr.read()
