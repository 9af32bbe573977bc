"""The built image does what the cluster asks of it: runs a KFP component, serves a model, as a non-root user.

Each test starts a real container from the image `.ci/image/build.sh` built (podman, read-only root filesystem,
tmpfs /tmp, like a hardened pod); see conftest.py for the skip rules.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from kfp import compiler

from components.constants import (
    DEFAULT_DATASET,
    DEFAULT_HTTP_PORT,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_MODEL_NAME,
    KFP_PIPELINE_ROOT,
    MODEL_MOUNT_PATH,
    PREDICTOR_COMMAND,
    PREDICTOR_UID,
)
from components.model_artifact import load_estimator
from tests.helpers import free_port
from tests.image.image_helpers import (
    PODMAN,
    READ_ONLY_OPTIONS,
    REPO_ROOT,
    REQUIRE_IMAGE_ENV,
    RUN_OPTIONS,
    podman,
    run_in_image,
)

pytestmark = [pytest.mark.image, pytest.mark.slow]

PINNED_DISTRIBUTIONS = ("kfp", "kserve", "scikit-learn", "joblib")
"""What must match between training and serving: the issue's `import kfp, kserve, sklearn, joblib`."""
IMAGE_SIZE_LIMIT_MB = 1200
"""Measured 889 MB (runtime deps, no dev extra, no caches); a jump past this means dev tools or caches leaked in.
The size is a function of the pinned wheels, so this bound does not flake."""
KFP_OUTPUT_DIR = "/tmp/kfp_outputs"
"""Where KFP's launcher asks the executor to write its output metadata (`outputs.outputFile`)."""
MINIO_MOUNT = "/minio"
"""The executor maps `minio://bucket/key` artifact URIs to `/minio/bucket/key`; on a cluster the launcher syncs it."""
SERVER_START_TIMEOUT_S = 180.0


def _pins_from_project() -> dict[str, str]:
    """Exact pins from pyproject's runtime dependencies, cross-checked against requirements.lock."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", dep).groups() for dep in project if "==" in dep)
    locked = dict(
        line.split("==", 1) for line in (REPO_ROOT / "requirements.lock").read_text().splitlines() if "==" in line
    )
    pins = {}
    for name in PINNED_DISTRIBUTIONS:
        assert declared[name] == locked[name], f"pyproject pins {name}=={declared[name]}, lock has {locked[name]}"
        pins[name] = declared[name]
    return pins


def _compiled_executor(component, scratch: Path) -> tuple[dict, dict]:
    """Compile one component the way `pipeline.py compile` does; return (its container spec, its interface)."""
    path = scratch / "component.yaml"
    compiler.Compiler().compile(component, str(path))
    spec = yaml.safe_load(path.read_text())
    (interface,) = spec["components"].values()
    container = spec["deploymentSpec"]["executors"][interface["executorLabel"]]["container"]
    return container, interface


@pytest.fixture(scope="module")
def runtime_facts(image: str) -> dict:
    """Who the container runs as and which versions it imports (one container for several checks)."""
    script = (
        "import json, os, importlib.metadata as md, kfp, kserve, sklearn, joblib;"
        "print(json.dumps({'uid': os.getuid(), 'gid': os.getgid(), 'home': os.path.expanduser('~'),"
        f"'versions': {{d: md.version(d) for d in {PINNED_DISTRIBUTIONS!r}}},"
        "'modules': {'kfp': kfp.__version__, 'sklearn': sklearn.__version__, 'joblib': joblib.__version__}}))"
    )
    result = run_in_image(image, "python3", "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_image_runs_as_fixed_non_root_user(image_config: dict, runtime_facts: dict) -> None:
    assert image_config["Config"]["User"] in {str(PREDICTOR_UID), f"{PREDICTOR_UID}:{PREDICTOR_UID}"}
    assert (runtime_facts["uid"], runtime_facts["gid"]) == (PREDICTOR_UID, PREDICTOR_UID)


def test_image_libraries_match_the_project_pins(runtime_facts: dict) -> None:
    pins = _pins_from_project()
    assert runtime_facts["versions"] == pins
    # The import name agrees with the distribution metadata (no second copy shadowing it on sys.path).
    assert runtime_facts["modules"] == {
        "kfp": pins["kfp"],
        "sklearn": pins["scikit-learn"],
        "joblib": pins["joblib"],
    }


def test_image_metadata_default_command_and_labels(image_config: dict) -> None:
    config = image_config["Config"]
    # No ENTRYPOINT: KFP's `command: [sh, -ec, ...]` must run unchanged. CMD is the model server.
    assert not config.get("Entrypoint")
    assert config["Cmd"] == [PREDICTOR_COMMAND, f"--model_dir={MODEL_MOUNT_PATH}", f"--http_port={DEFAULT_HTTP_PORT}"]
    labels = config["Labels"]
    version = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.source"]


def test_image_has_no_build_tools_or_caches(image_rootfs: Path) -> None:
    venv_bin = image_rootfs / "opt/venv/bin"
    assert (venv_bin / PREDICTOR_COMMAND).is_file()
    leaked = [
        path
        for path in (
            venv_bin / "pip",
            image_rootfs / "usr/bin/gcc",
            image_rootfs / "usr/bin/cc",
            image_rootfs / "root/.cache/pip",
            image_rootfs / "home/app/.cache/pip",
            image_rootfs / "src",
        )
        if path.exists()
    ]
    assert leaked == []
    site_packages = next((image_rootfs / "opt/venv/lib").glob("python3.*/site-packages"))
    assert not list(site_packages.glob("pytest*")), "dev extra leaked into the image"
    assert not list(site_packages.glob("ruff*")), "dev extra leaked into the image"


def test_image_holds_the_current_source(image_rootfs: Path) -> None:
    # Every other test here runs the code baked into the image: make sure it is this tree's code.
    site_packages = next((image_rootfs / "opt/venv/lib").glob("python3.*/site-packages"))
    source = REPO_ROOT / "components"
    stale = sorted(
        str(path.relative_to(REPO_ROOT))
        for path in source.rglob("*.py")
        if "__pycache__" not in path.parts
        and (
            not (site_packages / path.relative_to(source.parent)).is_file()
            or (site_packages / path.relative_to(source.parent)).read_bytes() != path.read_bytes()
        )
    )
    if stale:
        message = f"image is older than the source (rebuild: make image-ci): {stale[:5]}"
        if os.environ.get(REQUIRE_IMAGE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)


def test_image_size_is_reported_and_lean(image_config: dict, capsys: pytest.CaptureFixture[str]) -> None:
    size_mb = image_config["Size"] / 1e6
    with capsys.disabled():  # shown in every CI log, not only with -s
        print(f"\n[image] {image_config['RepoTags'][0]}: {size_mb:.0f} MB", end=" ")
    assert size_mb < IMAGE_SIZE_LIMIT_MB


def test_component_runs_the_way_kfp_runs_it(image: str, tmp_path: Path) -> None:
    from components.kfp_components import build_components

    # Given the load_data component compiled for this image, with KFP's own command and arguments
    container, interface = _compiled_executor(build_components(image).load_data, tmp_path)
    assert container["image"] == image
    bucket_dir = tmp_path / "minio"
    output_dir = tmp_path / "kfp_outputs"
    for directory in (bucket_dir, output_dir):
        directory.mkdir()
        directory.chmod(0o777)  # the container writes as uid 1000, the host dirs belong to root
    run_root = f"{KFP_PIPELINE_ROOT}/image-test/load-data"
    outputs = interface["outputDefinitions"]["artifacts"]
    executor_input = {
        "inputs": {
            "parameterValues": {
                "dataset": DEFAULT_DATASET,
                "label_column": DEFAULT_LABEL_COLUMN,
                "test_fraction": 0.25,
                "seed": 0,
            }
        },
        "outputs": {
            "artifacts": {
                name: {
                    "artifacts": [
                        {"name": name, "type": definition["artifactType"], "uri": f"{run_root}/{name}", "metadata": {}}
                    ]
                }
                for name, definition in outputs.items()
            },
            "outputFile": f"{KFP_OUTPUT_DIR}/output_metadata.json",
        },
    }
    args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]

    # When the image runs it as a pod would (command replaces the entrypoint, args follow)
    result = run_in_image(
        image,
        *args,
        entrypoint=container["command"],
        volumes=[f"{bucket_dir}:{MINIO_MOUNT}:rw", f"{output_dir}:{KFP_OUTPUT_DIR}:rw"],
    )

    # Then the artifacts and the executor output are written where KFP looks for them
    assert result.returncode == 0, f"component failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    bucket_path = run_root.removeprefix("minio://")
    import pandas as pd

    from components.features import read_schema

    assert set(outputs) == {"train_data", "test_data", "feature_schema"}
    frames = {name: pd.read_parquet(bucket_dir / bucket_path / name) for name in ("train_data", "test_data")}
    schema = read_schema(bucket_dir / bucket_path / "feature_schema")
    assert schema.task == "classification" and schema.label_column == DEFAULT_LABEL_COLUMN
    assert schema.names == [column for column in frames["train_data"].columns if column != DEFAULT_LABEL_COLUMN]
    assert all(DEFAULT_LABEL_COLUMN in frame.columns for frame in frames.values())
    assert len(frames["test_data"]) > 0
    assert len(frames["train_data"]) > len(frames["test_data"])
    executor_output = json.loads((output_dir / "output_metadata.json").read_text())
    for name, frame in frames.items():
        (written,) = executor_output["artifacts"][name]["artifacts"]
        assert written["uri"] == f"{run_root}/{name}"
        assert written["metadata"]["rows"] == len(frame)


@pytest.fixture
def served_model(image: str, make_model_dir):
    """The model server container on a fresh model directory, mounted read-only at KServe's path; its port."""
    model_dir, _card = make_model_dir()
    for path in (model_dir, *model_dir.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    port = free_port()
    name = f"kfp-sklearn-image-test-{uuid.uuid4().hex[:8]}"
    podman(
        "run",
        "--detach",
        "--name",
        name,
        *RUN_OPTIONS,
        *READ_ONLY_OPTIONS,
        "--volume",
        f"{model_dir}:{MODEL_MOUNT_PATH}:ro",
        image,
        # The image's default command with a free port (host network) and our model name.
        PREDICTOR_COMMAND,
        f"--model_dir={MODEL_MOUNT_PATH}",
        f"--http_port={port}",
        f"--model_name={DEFAULT_MODEL_NAME}",
        "--host=127.0.0.1",
        timeout=300,
    )
    try:
        yield model_dir, port, name
    finally:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "5", name], capture_output=True, timeout=120)


def _wait_ready(base_url: str, container: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/v1/models/{DEFAULT_MODEL_NAME}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state not in {"running", "created", "configured", ""}:
            logs = podman("logs", container, check=False)
            pytest.fail(f"server container {state}:\n{logs.stdout[-2000:]}\n{logs.stderr[-3000:]}")
        time.sleep(1)
    logs = podman("logs", container, check=False)
    pytest.fail(f"server not ready in {SERVER_START_TIMEOUT_S:.0f}s:\n{logs.stderr[-3000:]}")


def test_model_server_container_answers_v1_predict(served_model, iris_xy) -> None:
    model_dir, port, container = served_model
    base_url = f"http://127.0.0.1:{port}"
    _wait_ready(base_url, container)
    x, _, _, _ = iris_xy
    rows = x[[0, 60, 120]]
    estimator, _ = load_estimator(model_dir)

    response = httpx.post(
        f"{base_url}/v1/models/{DEFAULT_MODEL_NAME}:predict", json={"instances": rows.tolist()}, timeout=30
    )

    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [str(p) for p in predictions] == [str(p) for p in estimator.predict(rows)]
    # A client mistake is a 400 from inside the container too, not a 500.
    bad = httpx.post(f"{base_url}/v1/models/{DEFAULT_MODEL_NAME}:predict", json={"instances": [[1.0]]}, timeout=30)
    assert bad.status_code == 400, bad.text
