"""`build_runner`: the runner `pipeline.py run --runner` asks for, or one line saying what is missing.

The Docker runner's real run (containers, the host's store, serve afterwards) is tests/image/test_docker_runner.py.
"""

from __future__ import annotations

import inspect
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kfp import local
from kfp.local import docker_task_handler, logging_utils

from components import local_runners
from components.local_runners import (
    DOCKER_PACKAGE_PIN,
    PODMAN_API_SCRIPT,
    RUNNER_DOCKER,
    RUNNER_SUBPROCESS,
    RunnerUnavailableError,
    build_runner,
)

REPO = Path(__file__).resolve().parents[1]


def _closed_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _build(runner: str, root: Path):
    return build_runner(runner, pipeline_root=root / "runs", local_store=root / "store")


def test_subprocess_runner_runs_steps_in_this_environment(tmp_path):
    runner = _build(RUNNER_SUBPROCESS, tmp_path)
    assert isinstance(runner, local.SubprocessRunner)
    assert runner.use_venv is False


@pytest.mark.parametrize(
    "docker_host",
    [
        "unix://{tmp}/no-engine-here.sock",  # nothing listens on the socket path
        "tcp://127.0.0.1:{port}",  # nothing listens on the port
    ],
)
def test_no_docker_api_is_one_line_saying_how_to_get_one(tmp_path, monkeypatch, docker_host):
    host = docker_host.format(tmp=tmp_path, port=_closed_tcp_port())
    monkeypatch.setenv("DOCKER_HOST", host)
    with pytest.raises(RunnerUnavailableError) as raised:
        _build(RUNNER_DOCKER, tmp_path)
    message = str(raised.value)
    assert "\n" not in message
    assert f"no Docker API at {host}" in message
    assert f'eval "$({PODMAN_API_SCRIPT} start)"' in message and "--runner subprocess" in message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "store").exists(), "checked before touching disk"


def test_no_docker_sdk_is_one_line_with_the_locked_pin(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "docker", None)  # what `import docker` sees when the package is missing
    with pytest.raises(RunnerUnavailableError, match=rf"pip install {DOCKER_PACKAGE_PIN}$"):
        _build(RUNNER_DOCKER, tmp_path)
    locked = (REPO / "requirements.lock").read_text().splitlines()
    assert DOCKER_PACKAGE_PIN in locked, "the hint installs what requirements.lock pins"


def test_unknown_runner_names_the_choices(tmp_path):
    with pytest.raises(RunnerUnavailableError, match="unknown runner 'kubernetes': choose one of subprocess, docker"):
        _build("kubernetes", tmp_path)


def test_kfps_container_launcher_is_where_the_exit_code_fix_plugs_in():
    # The fix swaps kfp.local's module-level launcher; a kfp upgrade that renames or reshapes it must fail here,
    # not silently bring back "assume success" (Docker) / "500 no such container" (podman).
    original = docker_task_handler.run_docker_container
    try:
        ours = inspect.signature(local_runners._run_container).parameters
        theirs = inspect.signature(original).parameters
        assert list(ours)[:4] == list(theirs)[:4] == ["client", "image", "command", "volumes"]
        local_runners._use_exit_code_safe_launcher()
        local_runners._use_exit_code_safe_launcher()
        assert docker_task_handler.run_docker_container is local_runners._run_container
    finally:
        docker_task_handler.run_docker_container = original


def test_cli_without_a_docker_api_exits_with_one_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/no-engine-here.sock", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "run", "--runner", "docker", "--root", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "no Docker API at" in lines[0] and PODMAN_API_SCRIPT in lines[0]
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "out" / "runs").exists(), "no step ran"


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_podman_api_script_and_ci_pass_shellcheck():
    scripts = [str(REPO / PODMAN_API_SCRIPT), str(REPO / ".ci" / "run")]
    result = subprocess.run(
        ["shellcheck", "--external-sources", "--source-path=SCRIPTDIR", "--shell=bash", *scripts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_container_output_is_printed_in_whole_lines_however_the_engine_splits_it(capsys):
    text = "data: 10 rows\ncomponents.data.DataValidationError: feature columns must be numeric: b (é)\nno newline"
    encoded = text.encode()
    split_inside_a_character = encoded.index("é".encode()) + 1
    chunks = [encoded[:7], encoded[7:31], encoded[31:split_inside_a_character], encoded[split_inside_a_character:]]
    with logging_utils.indented_print():  # how kfp's task handler prints a step's output: indent per print()
        local_runners._print_lines(iter(chunks))
    assert capsys.readouterr().out == "".join(f"    {line}\n" for line in text.split("\n"))
