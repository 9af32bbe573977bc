"""Every command of the README's "The same steps by hand" block, run as written from a user's working directory.

The block is read from README.md, so a command added there without a check here fails this test. Two commands
need something this machine cannot have and are run against the nearest real thing instead: `submit` goes to the
fake KFP API over real HTTP (kfp.Client on our side), and `serve --port 8080` gets a free port. `kubectl apply -k`
needs a cluster: its manifests are rendered and validated in test_compile_cli_and_manifests.py.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris

import pipeline
from components.constants import LOCAL_STORE_DIRNAME
from components.deploy.local_store import current
from components.model_artifact import read_model_card
from tests.fakes.fake_kfp_api import FakeKfpApi
from tests.helpers import free_port, wait_until_ready

REPO = Path(pipeline.__file__).resolve().parent
README = REPO / "README.md"
BIN = Path(sys.executable).parent
NEEDS_A_CLUSTER = {"kubectl apply -k manifests/pipelines"}
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")]


def readme_commands() -> list[str]:
    text = README.read_text()
    block = re.search(r"The same steps by hand.*?```bash\n(.*?)```", text, re.S)
    assert block, "README lost its 'The same steps by hand' block"
    lines = [line.split("  #")[0].strip() for line in block[1].splitlines()]
    return [line for line in lines if line]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A working directory outside the repo holding what the commands name: the project files and a data.csv."""
    cwd = tmp_path_factory.mktemp("readme-user")
    for name in ("pipeline.py", "components", "manifests"):
        (cwd / name).symlink_to(REPO / name)
    iris = load_iris(as_frame=True)
    frame = iris.data.copy()
    frame["species"] = iris.target.map(dict(enumerate(iris.target_names)))
    frame.to_csv(cwd / "data.csv", index=False)
    return cwd


@pytest.fixture(scope="module")
def kfp_api() -> Iterator[object]:
    api = FakeKfpApi()
    api.start()
    yield api
    api.stop()


def argv(command: str) -> list[str]:
    words = shlex.split(command)
    if words[0] == "python":
        words[0] = sys.executable
    elif words[0] == "kfp":
        words[0] = str(BIN / "kfp")
    return words


def run(cwd: Path, words: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, f"{shlex.join(words)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def serve_and_predict(cwd: Path, words: list[str], home: Path) -> None:
    port = free_port()
    words = [str(port) if word == "8080" else word for word in words]
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(words, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # The last run deployed the CSV model under its dataset-derived name.
        name = "sklearn-data"
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(f"{base}/v1/models/{name}", server, timeout=60, interval=0.3)
        answer = httpx.post(f"{base}/v1/models/{name}:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": ["setosa"]}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_every_command_of_the_readme_block_runs_as_written(user_dir, kfp_api, tmp_path):
    committed = {path: path.read_bytes() for path in (pipeline.PIPELINE_FILE, pipeline.MONITORING_PIPELINE_FILE)}
    commands = readme_commands()
    assert commands[0] == "python pipeline.py run", "the block starts with the plain run"
    checked = []
    for command in commands:
        words = argv(command)
        if command in NEEDS_A_CLUSTER:
            continue
        if words[1:3] == ["pipeline.py", "serve"]:
            serve_and_predict(user_dir, words, tmp_path)
        elif words[1:3] == ["pipeline.py", "submit"]:
            words = [kfp_api.base_url if word.startswith("http://127.0.0.1:8080") else word for word in words]
            proc = run(user_dir, words, tmp_path)
            assert "started run" in proc.stdout
        elif words[0].endswith("kfp"):
            out = user_dir / words[words.index("--output") + 1]
            run(user_dir, words, tmp_path)
            assert out.read_bytes() == (REPO / out.name).read_bytes(), f"{command}: differs from the committed file"
        else:
            proc = run(user_dir, words, tmp_path)
            if words[1:3] == ["pipeline.py", "run"]:
                assert "Deployed '" in proc.stdout, proc.stdout
        checked.append(command)

    store = user_dir / "local_outputs" / LOCAL_STORE_DIRNAME
    forest = read_model_card(Path(current(store, "iris-forest").model_dir))  # a model of its own: no champion yet
    assert read_model_card(Path(current(store, "sklearn-iris").model_dir)).model_family == "logistic_regression"
    assert forest.model_family == "random_forest"
    assert forest.hyperparameters["n_estimators"] == 200
    assert isinstance(forest.hyperparameters["n_estimators"], int), "an int, not the 200.0 KFP's Struct carries"
    assert read_model_card(Path(current(store, "sklearn-data").model_dir)).label_column == "species"
    image_yaml, _platform = yaml.safe_load_all((REPO / "build" / "pipeline.yaml").read_text())
    images = {e["container"]["image"] for e in image_yaml["deploymentSpec"]["executors"].values()}
    assert images == {"REG/IMG:TAG"}
    assert {path: path.read_bytes() for path in committed} == committed, (
        "compiling left the committed files as they are"
    )
    assert len(checked) == len(commands) - len(NEEDS_A_CLUSTER)
    assert len({c.split()[2] for c in checked if c.startswith("python pipeline.py")}) >= 5
    assert pd.read_csv(user_dir / "data.csv").shape == (150, 5)
