"""`pipeline.py run --runner docker`: every step in the project image through kfp.local.DockerRunner, for real.

The engine is whatever DOCKER_HOST (or Docker's default socket) answers; without one, podman's Docker API started by
`.ci/podman-docker-api.sh` for this module (CI exports its own before `make test`). Skipped with the reason when
there is no engine or no image in it, unless KFP_SKLEARN_KSERVE_REQUIRE_IMAGE=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import DEFAULT_IMAGE, DEFAULT_LABEL_COLUMN, DEFAULT_MODEL_NAME, LOCAL_STORE_DIRNAME
from components.deploy.local_store import current
from components.local_runners import PODMAN_API_SCRIPT, STEP_CONTAINER_PREFIX
from components.model_artifact import load_estimator
from tests.helpers import predict_with_pipeline_serve
from tests.image.image_helpers import REPO_ROOT, REQUIRE_IMAGE_ENV

RUN_TIMEOUT_S = 900
"""Four containers on vfs storage, each a full copy of the ~900 MB image: 1.5-3 min on the 2-core CI machine."""
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(RUN_TIMEOUT_S + 300)]

PIPELINE = REPO_ROOT / "pipeline.py"
SERVER_START_TIMEOUT_S = 120.0


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_IMAGE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_IMAGE_ENV}=1: the Docker runner must be tested here)")
    pytest.skip(reason)


def _engine_problem(env: dict[str, str]) -> str | None:
    """Why the engine at env's DOCKER_HOST cannot run the pipeline, or None when it can (answers, has the image)."""
    import docker

    try:
        client = docker.DockerClient(base_url=env.get("DOCKER_HOST") or None, timeout=30)
    except docker.errors.DockerException as exc:
        return f"no Docker API ({str(exc)[:200]})"
    try:
        client.images.get(DEFAULT_IMAGE)
    except docker.errors.ImageNotFound:
        return f"image {DEFAULT_IMAGE} is not in the engine (build it: make image-ci)"
    except docker.errors.DockerException as exc:
        return f"the Docker API does not answer ({str(exc)[:200]})"
    finally:
        client.close()
    return None


@pytest.fixture(scope="module")
def docker_env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Environment for `pipeline.py` with a DOCKER_HOST whose engine has the project image."""
    env = dict(os.environ)
    if env.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists():
        problem = _engine_problem(env)
        if problem is None:
            yield env
            return
        if env.get("DOCKER_HOST"):
            _unavailable(f"DOCKER_HOST={env['DOCKER_HOST']}: {problem}")
    if shutil.which("podman") is None:
        _unavailable(f"no Docker API and no podman to start one ({PODMAN_API_SCRIPT} needs podman)")
    script_env = {**env, "KFP_PODMAN_SOCKET": str(tmp_path_factory.mktemp("podman-api") / "podman.sock")}
    script = [str(REPO_ROOT / PODMAN_API_SCRIPT)]
    started = subprocess.run([*script, "start"], env=script_env, capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            _unavailable(f"{PODMAN_API_SCRIPT} start failed: {started.stderr.strip()[-300:]}")
        env["DOCKER_HOST"] = started.stdout.strip().removeprefix("export DOCKER_HOST=")
        problem = _engine_problem(env)
        if problem is not None:
            _unavailable(f"podman's Docker API at {env['DOCKER_HOST']}: {problem}")
        yield env
    finally:
        subprocess.run([*script, "stop"], env=script_env, capture_output=True, text=True, timeout=60)


def _run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PIPELINE), "run", "--runner", "docker", "--root", "out", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def docker_run(docker_env, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("user-dir")
    return cwd, _run(cwd, docker_env)


def test_every_step_runs_in_the_image_and_deploys_into_the_hosts_store(docker_run):
    cwd, proc = docker_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = (
        "load-data",
        "expand-search",
        "score-candidate",
        "select-candidate",
        "train",
        "evaluate",
        "champion-vs-challenger",
        "deploy",
    )
    for step in steps:
        assert f"  < {step} ok in " in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    log = next((cwd / "out" / "logs").glob("run-*.log")).read_text()
    containers = len(steps)
    assert log.count(f"{STEP_CONTAINER_PREFIX} ") == containers, "one container per step"
    assert log.count(f" from {DEFAULT_IMAGE}") == containers, "every step on the project image"

    store = (cwd / "out" / LOCAL_STORE_DIRNAME).resolve()
    live = current(store, DEFAULT_MODEL_NAME)
    assert Path(live.model_dir).parent.parent == store, "the container's deploy wrote the host's store"
    assert f"Deployed '{DEFAULT_MODEL_NAME}' version {live.version}" in proc.stdout


def test_what_the_steps_wrote_belongs_to_the_user_who_ran_it(docker_run):
    cwd, proc = docker_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = [path for top in ("runs", LOCAL_STORE_DIRNAME) for path in (cwd / "out" / top).rglob("*")]
    assert any(path.name == "model.joblib" for path in written) and len(written) > 10
    foreign = [f"{path} (uid {path.lstat().st_uid})" for path in written if path.lstat().st_uid != os.getuid()]
    assert not foreign, f"not owned by uid {os.getuid()}: {foreign[:5]}"
    unreadable = [str(path) for path in written if not os.access(path, os.R_OK)]
    assert not unreadable, unreadable[:5]


def test_serve_after_a_docker_run_answers_v1_predict_like_the_deployed_model(docker_run):
    cwd, proc = docker_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, DEFAULT_MODEL_NAME)
    estimator, _card = load_estimator(Path(live.model_dir))
    test_split = next((cwd / "out" / "runs").glob("*/load-data/test_data"))
    rows = pd.read_parquet(test_split).drop(columns=[DEFAULT_LABEL_COLUMN]).to_numpy()
    served = predict_with_pipeline_serve(cwd, rows.tolist(), "--host", "127.0.0.1", model=DEFAULT_MODEL_NAME)
    assert served.predictions == estimator.predict(rows).tolist()
    output = served.output
    assert f"Serving '{DEFAULT_MODEL_NAME}' version {live.version}" in output


def test_a_failing_step_in_a_container_fails_the_run_with_its_own_error(docker_env, tmp_path):
    # The step's exit code must survive the container's removal: podman answers 500 "no such container" where kfp
    # expects Docker's 404 (and on 404 kfp assumes success). The CSV is mounted read-only from the host.
    data = pd.DataFrame({"a": np.arange(10.0), "b": np.ones(10), DEFAULT_LABEL_COLUMN: [0] * 10})
    data.to_csv(tmp_path / "bad.csv", index=False)
    proc = _run(tmp_path, docker_env, "--dataset", "bad.csv", "--model-name", "bad-csv")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    failure = f"Run failed: DataValidationError: label column '{DEFAULT_LABEL_COLUMN}' needs at least two classes"
    assert failure in proc.stderr, proc.stderr[-3000:]
    assert "no such container" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
