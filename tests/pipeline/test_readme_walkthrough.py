"""The README's "Bring your own data" walkthrough, run as written from a user's working directory.

The commands and the request body are read from README.md, so the walkthrough cannot drift from what works: the
generated CSV, the refused run (its one-line reason), the run with `--feature-types` and the R² gate (through
kfp.local), then `serve` on a free port answering the README's V1 request with a number.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import pipeline
from components.constants import LOCAL_STORE_DIRNAME
from components.deploy.local_store import current
from components.model_artifact import read_model_card
from tests.helpers import free_port, wait_until_ready

REPO = Path(pipeline.__file__).resolve().parent
README = REPO / "README.md"
BIN = Path(sys.executable).parent
MODEL_NAME = "sklearn-spend"  # derived from spend.csv, as the README's curl line says
pytestmark = [pytest.mark.slow]


def walkthrough() -> tuple[list[tuple[str, str]], str]:
    """The first bash block of the section as (command, comment) pairs, and the section's curl command."""
    text = README.read_text()
    section = re.search(r"^## Bring your own data\n(.*?)^## ", text, re.S | re.M)
    assert section, "README lost its 'Bring your own data' section"
    blocks = re.findall(r"```bash\n(.*?)```", section[1], re.S)
    assert len(blocks) == 2, "the section has the commands block and the curl block"
    commands = []
    for line in blocks[0].splitlines():
        command, _, comment = line.partition("  #")
        if command.strip():
            commands.append((command.strip(), comment.strip()))
    curl = " ".join(
        line.split("  #")[0].rstrip("\\ ") for line in blocks[1].splitlines() if line.startswith(("c", " "))
    )
    return commands, curl


def env(home: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)}


def run(cwd: Path, command: str, home: Path) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    assert words[0] == "python"
    words[0] = sys.executable
    return subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=900, env=env(home), check=False)


def test_the_bring_your_own_data_walkthrough_runs_as_written(tmp_path):
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    for name in ("pipeline.py", "components", "benchmarks"):
        (user_dir / name).symlink_to(REPO / name)
    commands, curl = walkthrough()
    assert [c.split()[1] for c, _ in commands] == [
        "benchmarks/make_mixed_data.py",
        "pipeline.py",
        "pipeline.py",
        "pipeline.py",
    ]

    for command, comment in commands:
        if " serve " in f"{command} ":
            serve_and_predict(user_dir, command, curl, tmp_path)
            continue
        proc = run(user_dir, command, tmp_path)
        output = proc.stdout + proc.stderr
        assert "Traceback" not in output
        if comment.startswith("refused"):
            # The refusal is the data step's one line, and the reason the README gives.
            assert proc.returncode == 1, output  # the README says: exit status 1
            expected = re.search(r"'(\w+)' looks like an ID", comment)
            assert expected and f"feature column '{expected[1]}' looks like an ID" in output, output
            assert not (user_dir / "local_outputs" / LOCAL_STORE_DIRNAME / MODEL_NAME).exists()
            continue
        assert proc.returncode == 0, f"{command}\n{output[-4000:]}"
        if "make_mixed_data" in command:
            assert (user_dir / "spend.csv").is_file()
        else:
            assert "task regression (inferred: label 'spend' holds non-integral numbers)" in proc.stdout, proc.stdout
            assert "Deployed '" in proc.stdout, proc.stdout

    card = read_model_card(Path(current(user_dir / "local_outputs" / LOCAL_STORE_DIRNAME, MODEL_NAME).model_dir))
    assert card.task == "regression"
    kinds = {f.name: f.kind for f in card.features}
    assert "customer_id" not in kinds
    assert kinds["store"] == "categorical" and kinds["plan"] == "categorical" and kinds["age"] == "numeric"
    assert {f.name for f in card.features if f.nullable} == {"age", "income", "plan", "region"}


def serve_and_predict(cwd: Path, command: str, curl: str, home: Path) -> None:
    port = free_port()
    words = [sys.executable, *[str(port) if w == "8080" else w for w in shlex.split(command)[1:]]]
    server = subprocess.Popen(
        words, cwd=cwd, env=env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/v1/models/{MODEL_NAME}", server, timeout=90, interval=0.3)
        # The README's curl line, sent as curl would send it: its URL (on our port) and its -d body.
        parts = shlex.split(curl)
        url = next(p for p in parts if p.startswith("http://127.0.0.1:8080/"))
        body = json.loads(parts[parts.index("-d") + 1])
        assert url == f"http://127.0.0.1:8080/v1/models/{MODEL_NAME}:predict"
        answer = httpx.post(url.replace(":8080", f":{port}"), json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 1 and isinstance(predictions[0], float)
        # "a number or boolean is read as its text": the same row with JSON types gets the same answer.
        typed = {**body["instances"][0], "store": int(body["instances"][0]["store"]), "autopay": True}
        again = httpx.post(url.replace(":8080", f":{port}"), json={"instances": [typed]}, timeout=30)
        assert again.status_code == 200 and again.json()["predictions"] == predictions, again.text
        # "null only where the training data had gaps": tenure_months had none.
        row = {**body["instances"][0], "tenure_months": None}
        refused = httpx.post(url.replace(":8080", f":{port}"), json={"instances": [row]}, timeout=30)
        assert refused.status_code == 400 and "tenure_months" in refused.text, refused.text
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
