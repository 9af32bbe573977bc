"""Every code block of the README's "Clients" section runs against a live server and prints what it says."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serving.servers import (
    ROOT,
    ServerProcess,
    start_server,
    train_iris_model_dir,
    train_readme_typed_model_dir,
)

README_ADDRESS = "127.0.0.1:8080"


def client_blocks() -> list[tuple[str, str]]:
    """(language, code) of each fenced block between '## Clients' and the next '## ' heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(bash|python)\n(.*?)```", section, re.DOTALL)
    # The gRPC blocks need a server with --grpc_port; tests/serving/test_grpc.py runs them.
    return [(language, code) for language, code in blocks if "grpc" not in code.lower()]


BLOCKS = client_blocks()
EXPECTED = [
    ['{"predictions":[0,2]}', '"name":"predict"', '"data":[0]'],
    ["inference-header-content-length"],
    ["[0 2]"],
    ["{'predictions': [0]}", "[0]"],
    [
        '{"predictions":["no","yes"]}',
        """{"error":"instances[0], feature 'age' (numeric, nullable): expected a number or null, got a string"}""",
    ],
    ["[b'no']"],
    [
        '{"predictions":[97.886',  # ONNX and sklearn agree to ~1e-13; the digits shown are these
        '{"error":"parameter \'return_probabilities\': this is a regression model',
    ],
]
IDS = ["curl-json", "curl-binary", "tritonclient", "kserve", "typed-curl", "typed-tritonclient", "regression-curl"]
MODELS = {"sklearn-customers": "classification", "sklearn-spend": "regression"}
"""The README's typed examples name these models (Bring your own data's table, served alone on 8080)."""


def test_the_section_has_one_example_per_client() -> None:
    assert [lang for lang, _ in BLOCKS] == ["bash", "bash", "python", "python", "bash", "python", "bash"]
    joined = "\n".join(code for _, code in BLOCKS)
    for client in ("curl", "tritonclient.http", "InferenceRESTClient", "application/octet-stream", "BYTES"):
        assert client in joined


def test_the_comments_show_what_the_tests_check() -> None:
    """Each block's `# ...` answer lines are among the fragments its test asserts (nothing claimed unchecked)."""
    for (_, code), expected in zip(BLOCKS, EXPECTED, strict=True):
        for line in re.findall(r"^# (\{.*?\})(?:\s|$)", code, re.MULTILINE):
            assert any(line.replace(" ", "").startswith(e.replace(" ", "")) for e in expected), line


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("readme-clients")
    directory, _, _ = train_iris_model_dir(base / "model", family="logistic_regression", onnx=True)
    served = start_server(directory, base / "server.log", model_name="sklearn-iris")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def typed_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    """One server per typed README model, each under the name the README uses."""
    base = tmp_path_factory.mktemp("readme-typed")
    servers: dict[str, ServerProcess] = {}
    try:
        for name, task in MODELS.items():
            directory, _, _ = train_readme_typed_model_dir(base / name, task=task)
            servers[name] = start_server(directory, base / f"{name}.log", model_name=name)
        yield servers
    finally:
        for served in servers.values():
            served.stop()


@pytest.mark.parametrize("index", range(len(EXPECTED)), ids=IDS)
def test_readme_client_example_runs(request: pytest.FixtureRequest, index: int, tmp_path: Path) -> None:
    language, code = BLOCKS[index]
    typed = [name for name in MODELS if name in code]
    server = request.getfixturevalue("typed_servers")[typed[0]] if typed else request.getfixturevalue("server")
    code = code.replace(README_ADDRESS, server.url.removeprefix("http://"))
    argv = ["bash", "-euo", "pipefail", "-c", code] if language == "bash" else [sys.executable, "-c", code]

    done = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout.replace(" ", "") if language == "bash" else done.stdout
    for fragment in EXPECTED[index]:
        wanted = fragment.replace(" ", "") if language == "bash" else fragment
        assert wanted.lower() in output.lower(), (fragment, done.stdout[-2000:])
    if index == 1:
        found = re.search(r"(?i)inference-header-content-length:\s*(\d+)", done.stdout)
        assert found is not None
        json_length = int(found.group(1))
        raw = (tmp_path / "answer.bin").read_bytes()[json_length:]
        assert struct.unpack("<q", raw) == (0,)
