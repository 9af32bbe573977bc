"""MLflow tracking and registry (components/tracking.py) against a real `mlflow server` on 127.0.0.1 (SQLite backend,
proxied artifacts), checked through MLflow's own client: the run, the registered version, the `champion` alias, and
the alias following `pipeline.py models rollback`/`promote`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.constants import LOCAL_STORE_DIRNAME
from components.deploy.local_store import current, publish
from components.model_artifact import directory_digest
from components.tracking import (
    CANDIDATES_ARTIFACT,
    CHAMPION_ALIAS,
    DIGEST_TAG,
    TrackingError,
    log_training_run,
    set_champion_alias,
    version_for_digest,
)
from components.versions_cli import main as models_main

REPO = Path(__file__).resolve().parents[1]
MLFLOW_SERVER = REPO / ".tools" / "mlflow" / "bin" / "mlflow"
SERVER_START_SECONDS = 120
REQUIRE_MLFLOW_ENV = "KFP_SKLEARN_KSERVE_REQUIRE_MLFLOW"
"""CI sets it to 1: a missing server is then a failure, not a skip."""
CANDIDATES = [
    {
        "candidate_id": 0,
        "model_family": "logistic_regression",
        "hyperparameters": {"C": 1.0},
        "mean": 0.95,
        "std": 0.02,
    },
    {
        "candidate_id": 1,
        "model_family": "random_forest",
        "hyperparameters": {"n_estimators": 50},
        "mean": 0.96,
        "std": 0.01,
    },
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking server (full `mlflow`, its own venv: `make mlflow-install`), stopped afterwards."""
    if not MLFLOW_SERVER.exists():
        reason = f"no MLflow server at {MLFLOW_SERVER}: run `make mlflow-install` (CI does)"
        if os.environ.get(REQUIRE_MLFLOW_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_MLFLOW_ENV}=1: the MLflow round trip must be tested here)")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(
        [
            str(MLFLOW_SERVER), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
        log.close()


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def log_run(uri: str, model_dir: Path, *, model_name: str, run_name: str) -> str:
    return log_training_run(
        uri,
        model_name=model_name,
        run_name=run_name,
        params={"model_family": "auto", "search_space": [{"model_family": "random_forest"}], "seed": 42},
        metrics={"accuracy": 0.9667, "f1_macro": 0.9665, "roc_auc_ovr": float("nan"), "champion_score": None},
        candidates=CANDIDATES,
        model_dir=model_dir,
        digest=directory_digest(model_dir),
        tags={"kfp_run_id": f"uuid-of-{run_name}"},
    )


def test_a_run_is_logged_registered_and_aliased_champion(mlflow_server: str, make_model_dir, tmp_path):
    model_dir, _ = make_model_dir()
    version = log_run(mlflow_server, model_dir, model_name="sklearn-iris", run_name="training 1")

    mlflow = client(mlflow_server)
    registered = mlflow.get_model_version("sklearn-iris", version)
    assert version == "1" and registered.tags[DIGEST_TAG] == directory_digest(model_dir)
    run = mlflow.get_run(registered.run_id)
    assert run.info.run_name == "training 1" and run.info.status == "FINISHED"
    assert run.data.params["model_family"] == "auto" and run.data.params["seed"] == "42"
    assert json.loads(run.data.params["search_space"]) == [{"model_family": "random_forest"}]
    assert run.data.metrics == {"accuracy": 0.9667, "f1_macro": 0.9665, "candidate_mean": 0.96, "candidate_std": 0.01}
    history = mlflow.get_metric_history(run.info.run_id, "candidate_mean")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.95), (1, 0.96)]
    assert run.data.tags["kfp_run_id"] == "uuid-of-training 1"
    assert run.info.experiment_id == mlflow.get_experiment_by_name("sklearn-iris").experiment_id
    # The model directory, byte for byte, downloaded back through the server's artifact proxy.
    downloaded = Path(mlflow.download_artifacts(run.info.run_id, "model", str(tmp_path / "download")))
    assert directory_digest(downloaded) == directory_digest(model_dir)
    assert registered.source.endswith("/model")
    candidates = json.loads(
        Path(mlflow.download_artifacts(run.info.run_id, CANDIDATES_ARTIFACT, str(tmp_path))).read_text()
    )
    assert candidates == CANDIDATES

    set_champion_alias(mlflow_server, model_name="sklearn-iris", version=version)
    assert mlflow.get_model_version_by_alias("sklearn-iris", CHAMPION_ALIAS).version == "1"

    other_dir, _ = make_model_dir(family="random_forest", name="rf")
    assert log_run(mlflow_server, other_dir, model_name="sklearn-iris", run_name="training 2") == "2"
    assert version_for_digest(mlflow_server, model_name="sklearn-iris", digest=directory_digest(other_dir)) == "2"
    assert version_for_digest(mlflow_server, model_name="sklearn-iris", digest="sha256:" + "0" * 64) is None
    with pytest.raises(TrackingError, match="could not set sklearn-iris@champion to version 7"):
        set_champion_alias(mlflow_server, model_name="sklearn-iris", version="7")


def test_rollback_and_promote_move_the_champion_alias_with_the_live_version(
    mlflow_server: str, make_model_dir, tmp_path, capsys
):
    """The MLflow round trip of `pipeline.py models`: each deployed version registered, the alias follows the switch."""
    name = "roundtrip"
    store = tmp_path / "outputs" / LOCAL_STORE_DIRNAME
    registered = {}
    for run, family in (("run-a", "logistic_regression"), ("run-b", "random_forest")):
        model_dir, _ = make_model_dir(family=family, name=run)
        registered[run] = log_run(mlflow_server, model_dir, model_name=name, run_name=run)
        publish(model_dir, store, model_name=name, run_id=run)
        set_champion_alias(mlflow_server, model_name=name, version=registered[run])
    mlflow = client(mlflow_server)
    assert mlflow.get_model_version_by_alias(name, CHAMPION_ALIAS).version == registered["run-b"]

    common = ["--root", str(store.parent), "--model-name", name, "--mlflow-tracking-uri", mlflow_server]
    assert models_main(["models", "rollback", *common]) == 0
    assert (
        capsys.readouterr().out.splitlines()[-1] == f"MLflow: {name}@{CHAMPION_ALIAS} -> version {registered['run-a']}"
    )
    assert current(store, name).run_id == "run-a"
    assert mlflow.get_model_version_by_alias(name, CHAMPION_ALIAS).version == registered["run-a"]

    assert models_main(["models", "promote", current(store, name).version, *common]) == 0  # live already: alias stays
    assert mlflow.get_model_version_by_alias(name, CHAMPION_ALIAS).version == registered["run-a"]
    version_b = next(r["version"] for r in _listing(store, name) if r["run_id"] == "run-b")
    assert models_main(["models", "promote", version_b, *common]) == 0
    assert mlflow.get_model_version_by_alias(name, CHAMPION_ALIAS).version == registered["run-b"]


def _listing(store: Path, name: str) -> list[dict]:
    command = [sys.executable, "-m", "components.versions_cli", "models", "list", "--json"]
    listed = subprocess.run(
        [*command, "--root", str(store.parent), "--model-name", name],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_an_sqlite_uri_works_without_a_server(make_model_dir, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model_dir, _ = make_model_dir()
    version = log_run(uri, model_dir, model_name="sklearn-iris", run_name="no server")
    set_champion_alias(uri, model_name="sklearn-iris", version=version)
    assert client(uri).get_model_version_by_alias("sklearn-iris", CHAMPION_ALIAS).tags[DIGEST_TAG] == directory_digest(
        model_dir
    )
    # The artifacts sit beside the database, not in `./mlruns` of whatever directory the step ran in.
    assert (tmp_path / "mlflow-artifacts").is_dir()
    assert not (Path.cwd() / "mlruns").exists()


def test_without_a_uri_nothing_imports_mlflow():
    """The pipeline's steps and `pipeline.py` import these modules always; MLflow only loads when a URI is given."""
    probe = (
        "import sys, components.tracking, components.versions_cli, components.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    with pytest.raises(TrackingError, match="no MLflow tracking URI given"):
        set_champion_alias("", model_name="sklearn-iris", version="1")


def test_a_uri_without_mlflow_installed_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what an install without the extra looks like to `import`
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(TrackingError, match=r"MLflow is not installed: pip install '\.\[mlflow\]'"):
        set_champion_alias("http://127.0.0.1:5000", model_name="sklearn-iris", version="1")


@pytest.mark.slow
def test_a_kfp_local_run_logs_to_mlflow_and_its_deploy_makes_the_version_champion(mlflow_server: str, tmp_path):
    """`python pipeline.py run --mlflow-tracking-uri URL` (the README's command): the champion step logs and registers,
    the deploy step sets the alias, and the alias names exactly the digest the local store serves."""
    done = subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "run", "--root", "out", "--mlflow-tracking-uri", mlflow_server],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    live = current(tmp_path / "out" / LOCAL_STORE_DIRNAME, "sklearn-iris")
    mlflow = client(mlflow_server)
    champion = mlflow.get_model_version_by_alias("sklearn-iris", CHAMPION_ALIAS)
    assert champion.tags[DIGEST_TAG] == live.digest
    run = mlflow.get_run(champion.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["accuracy"] == pytest.approx(live.metrics["accuracy"])
    assert run.data.params  # the run's parameters, as the champion step passed them
