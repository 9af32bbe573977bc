"""Slow clients cannot hold the server: idle, partial-header and partial-body connections are closed, and
legitimate requests are answered while they are held open (issue 12, finding 6).

The server runs with 1-second timeouts, a 40-connection cap and a file-descriptor limit of 256, and the test holds
120 slow connections: three times the cap. Every wait is bounded; nothing asserts how fast anything is.
"""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port
from tests.serving.servers import ROOT, STARTUP_TIMEOUT_S, ServerProcess, train_iris_model_dir
from tests.serving.serving_cases import GOOD_ROW

CAP = 40
SLOW_PER_KIND = 40
FD_LIMIT = 256
TIMEOUT_S = 1
CLOSE_WAIT_S = 30.0
"""How long the test waits, at most, for the server to close a slow connection."""

PREDICT = "/v1/models/iris:predict"
BODY = json.dumps({"instances": [GOOD_ROW]}).encode()


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("slow-clients")
    directory, _, _ = train_iris_model_dir(base / "model", family="logistic_regression", onnx=True)
    port = free_port()
    argv = [sys.executable, "-m", "components.serving", f"--model_dir={directory}", "--model_name=iris"]
    argv += ["--host=127.0.0.1", f"--http_port={port}", f"--max_connections={CAP}"]
    argv += [f"--header_timeout={TIMEOUT_S}", f"--body_timeout={TIMEOUT_S}", f"--timeout-keep-alive={TIMEOUT_S}"]
    log = base / "server.log"
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_limit_fds)
    running = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _ready(running):
        assert proc.poll() is None and time.monotonic() < deadline, running.output()[-3000:]
        time.sleep(0.1)
    yield running
    assert running.stop() == 0, running.output()[-3000:]
    assert "Traceback" not in running.output()


def _ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.url}/v2/health/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _connect(server: ServerProcess) -> socket.socket:
    port = int(server.url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=CLOSE_WAIT_S)


def _partial_headers(server: ServerProcess) -> socket.socket:
    sock = _connect(server)
    sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n".encode())
    return sock


def _partial_body(server: ServerProcess) -> socket.socket:
    sock = _connect(server)
    head = (
        f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    )
    sock.sendall(head.encode() + BODY[:5])
    return sock


def _closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sent before it closed the connection (blocks at most CLOSE_WAIT_S)."""
    received = b""
    deadline = time.monotonic() + CLOSE_WAIT_S
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept a slow connection open for {CLOSE_WAIT_S}s")


def _predict(server: ServerProcess) -> int:
    # A fresh connection each time: a new client arriving while the slow ones hold theirs.
    with httpx.Client(timeout=30) as client:
        reply = client.post(server.url + PREDICT, content=BODY, headers={"content-type": "application/json"})
    assert reply.json() == {"predictions": [0]}, reply.text
    return reply.status_code


def test_legitimate_requests_are_answered_while_slow_clients_hold_connections(server: ServerProcess) -> None:
    # Given three times the connection cap in slow clients: idle, headers cut short, bodies cut short
    slow = {
        "idle": [_connect(server) for _ in range(SLOW_PER_KIND)],
        "headers": [_partial_headers(server) for _ in range(SLOW_PER_KIND)],
        "body": [_partial_body(server) for _ in range(SLOW_PER_KIND)],
    }
    try:
        # When legitimate clients arrive while those are open, they are answered
        assert [_predict(server) for _ in range(20)] == [200] * 20

        # Then every slow connection is closed by the server; those that were sending a request are told why
        for kind, sockets in slow.items():
            answers = [_closed_by_server(sock) for sock in sockets]
            if kind == "idle":
                assert answers == [b""] * len(sockets)
            else:
                assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
                assert kind.encode() in answers[-1], answers[-1]
    finally:
        for sockets in slow.values():
            for sock in sockets:
                sock.close()
    assert _predict(server) == 200


def test_headers_trickled_byte_by_byte_still_time_out(server: ServerProcess) -> None:
    request = f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-slow: " + "a" * 200
    with _connect(server) as sock:
        sent = 0
        try:
            for byte in request.encode():
                sock.sendall(bytes([byte]))  # every byte arrives well within any per-read timeout
                sent += 1
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _closed_by_server(sock) if sent == len(request) else b"closed while sending"
    # The deadline counts from the first byte, so the server gave up before the trickle could finish.
    assert sent < len(request) or answer.startswith(b"HTTP/1.1 408 "), (sent, answer[:60])


def test_a_connection_that_never_sends_a_request_is_closed(server: ServerProcess) -> None:
    # Below the cap, so only the idle timeout can close it.
    with _connect(server) as sock:
        assert _closed_by_server(sock) == b""


def test_keep_alive_connection_is_closed_when_idle(server: ServerProcess) -> None:
    with _connect(server) as sock:
        head = f"POST {PREDICT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len(BODY)}"
        sock.sendall(head.encode() + b"\r\n\r\n" + BODY)
        answer = _closed_by_server(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"predictions":[0]}'), answer[-80:]


def test_limits_are_validated(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "components.serving", f"--model_dir={tmp_path}", "--model_name=iris"]
    for flag in ("--header_timeout=0", "--body_timeout=-1", "--max_connections=0"):
        done = subprocess.run([*argv, flag], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 2 and flag.split("=")[0] in done.stderr and "Traceback" not in done.stderr
