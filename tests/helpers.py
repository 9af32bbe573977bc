"""Helpers shared by several test folders (fixtures stay in conftest.py; helpers are imported from here)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(
    url: str,
    proc: subprocess.Popen,
    *,
    timeout: float,
    output: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll GET `url` until it answers 200; fail at once, with the server's output, if `proc` exits first.

    Args:
        url: The readiness URL (a health or model endpoint).
        proc: The server process; its exit ends the wait.
        timeout: Seconds to wait before failing.
        output: Returns the server's output for the failure message; default: what `proc.stdout` holds.
        interval: Seconds between polls.
    """

    def describe() -> str:
        if output is not None:
            return output()[-3000:]
        return proc.stdout.read()[-3000:] if proc.stdout and proc.poll() is not None else ""

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{describe()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise AssertionError(f"server not ready at {url} within {timeout:.0f}s:\n{describe()}")


REPO = Path(__file__).resolve().parents[1]


@dataclass
class ServedReply:
    """What `pipeline.py serve` answered to one V1 predict, and everything it printed until stopped."""

    predictions: list
    returncode: int
    output: str


def predict_with_pipeline_serve(cwd: Path, rows: list, *flags: str, model: str, timeout: float = 60.0) -> ServedReply:
    """Run `pipeline.py serve --root out` in `cwd` on a free loopback port, POST `rows` to V1 predict, stop it (SIGINT).

    Args:
        cwd: The user's directory holding `out/` from an earlier `pipeline.py run`.
        rows: The instances to predict.
        *flags: More `serve` flags (e.g. `--host`).
        model: The served model name.
        timeout: Seconds to wait for the server to be ready.
    """
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "pipeline.py"), "serve", "--root", "out", "--port", str(port), *flags],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/v1/models/{model}", server, timeout=timeout, interval=0.3)
        response = httpx.post(f"{base}/v1/models/{model}:predict", json={"instances": rows})
        assert response.status_code == 200, response.text
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    return ServedReply(response.json()["predictions"], server.returncode, output)
