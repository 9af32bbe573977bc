"""Regression and champion vs challenger through real kfp.local runs of the compiled pipeline, as a user types them.

The live model (the champion) is a constant-prediction model published to the local store the way deploy publishes
one. Run 1 (ridge, the `auto` family for an inferred regression task, gated on RMSE) beats it by more than
`--min-improvement` and is deployed; run 2 (the constant model again, a challenger that passes its absolute gate)
loses to the live ridge model on the same held-out rows and is not deployed. Both runs log to MLflow (an SQLite
store, no server): each registers a version, and only the deployed one carries the `champion` alias.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from components.constants import LOCAL_STORE_DIRNAME, MODEL_CARD_FILENAME
from components.data import fingerprint, load_dataset, split_dataset, validate_dataset
from components.deploy.local_store import current, publish
from components.features import read_schema
from components.tracking import DIGEST_TAG
from components.train import save_trained_model, train_model

pytestmark = pytest.mark.slow

MODEL_NAME = "sklearn-diabetes"
CONSTANT = "sklearn.dummy.DummyRegressor"


def run_pipeline(cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(Path(pipeline.__file__)), "run", "--root", "out", "--dataset", "diabetes", *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("champion")
    store = cwd / "out" / LOCAL_STORE_DIRNAME
    # Given a live constant model for diabetes, trained on the same split a run makes and published as deploy does
    frame = load_dataset("diabetes", label_column="target")
    summary = validate_dataset(frame, label_column="target", test_fraction=0.2)
    train, test = split_dataset(frame, label_column="target", test_fraction=0.2, seed=42, task=summary.schema.task)
    trained = train_model(train, schema=summary.schema, model_family=CONSTANT, hyperparameters={}, seed=42)
    model_dir = cwd / "constant-model"
    save_trained_model(
        trained, model_dir, training_data_fingerprint=fingerprint(train), check_features=test, reference_features=train
    )
    constant = publish(model_dir, store, model_name=MODEL_NAME, run_id="earlier-run").version
    # When a ridge model gated on RMSE challenges it, then the constant model challenges the ridge model
    mlflow = ("--mlflow-tracking-uri", f"sqlite:///{cwd / 'mlflow.db'}")
    ridge = run_pipeline(cwd, "--gate-metric", "rmse", "--gate-threshold", "70", "--min-improvement", "1.0", *mlflow)
    weaker = run_pipeline(cwd, "--model-family", CONSTANT, "--gate-threshold", "-1", "--task", "regression", *mlflow)
    return cwd, constant, ridge, weaker


def test_the_task_is_inferred_and_the_run_says_so_with_regression_metrics(runs):
    cwd, _, ridge, _ = runs
    assert re.search(r"Task: regression \(inferred: label 'target' .*\)", ridge.stdout), ridge.stdout
    for metric in ("rmse", "mae", "r2"):
        assert re.search(rf"^  {metric} +\d+\.\d{{4}}$", ridge.stdout, re.M), metric
    assert "accuracy" not in ridge.stdout.split("Metrics:")[1].split("Artifacts:")[0]
    first_run = sorted((cwd / "out" / "runs").glob(f"{pipeline.PIPELINE_NAME}-*"))[0]
    schema = read_schema(first_run / "load-data" / "feature_schema")
    assert schema.task == "regression" and schema.class_names == [] and len(schema.features) == 10


def test_a_challenger_that_beats_the_champion_by_min_improvement_is_deployed(runs):
    cwd, constant, ridge, _ = runs
    gate = re.search(r"Deploy gate: rmse (\d+\.\d{4}) <= threshold 70\.0000: deploy", ridge.stdout)
    assert gate, ridge.stdout
    decided = re.search(
        rf"Champion vs challenger: challenger rmse (\d+\.\d{{4}}) vs champion (\d+\.\d{{4}}) \(version {constant}, "
        r"89 held-out rows\): improvement \+(\d+\.\d{4}) >= min_improvement 1: deploy",
        ridge.stdout,
    )
    assert decided, ridge.stdout
    challenger, champion, improvement = map(float, decided.groups())
    assert challenger == float(gate[1]) and champion - challenger == pytest.approx(improvement, abs=2e-4)
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, MODEL_NAME)
    assert live.version != constant and f"Deployed '{MODEL_NAME}' version {live.version}" in ridge.stdout
    card = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())
    assert card["task"] == "regression" and card["class_names"] == []
    assert card["model_family"] == "ridge" and card["estimator"] == "sklearn.linear_model.Ridge"


def test_a_champion_that_beats_the_challenger_stays_live(runs):
    cwd, constant, _, weaker = runs
    assert "Task: regression (given)" in weaker.stdout
    assert re.search(r"Deploy gate: r2 -?\d+\.\d{4} >= threshold -1\.0000: deploy", weaker.stdout), weaker.stdout
    decided = re.search(
        r"Champion vs challenger: challenger r2 (-?\d+\.\d{4}) vs champion (\d+\.\d{4}) \(version (\w+), .*\): "
        r"improvement -\d+\.\d{4} < min_improvement 0: keep the live model",
        weaker.stdout,
    )
    assert decided, weaker.stdout
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, MODEL_NAME)
    assert decided[3] == live.version != constant, "compared with the ridge model the first run deployed"
    assert float(decided[1]) < 0.1 < float(decided[2])
    assert "Deployed" not in weaker.stdout and "  > deploy ..." not in weaker.stdout
    (report,) = sorted((cwd / "out" / "runs").glob("*/champion-vs-challenger/report"))[-1:]
    assert "keep the live model" in report.read_text()


def test_every_run_is_registered_in_mlflow_and_only_the_deployed_one_is_the_champion(runs):
    cwd, _, ridge, weaker = runs
    from mlflow import MlflowClient

    assert f"MLflow: registered '{MODEL_NAME}' version 1" in ridge.stdout
    assert f"MLflow: registered '{MODEL_NAME}' version 2" in weaker.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias(MODEL_NAME, "champion").version) == "1"
    kept_out = client.get_model_version(MODEL_NAME, "2")
    assert kept_out.aliases == []
    params = {v: client.get_run(client.get_model_version(MODEL_NAME, v).run_id).data.params for v in ("1", "2")}
    assert params["1"]["family"] == "ridge" and params["1"]["metric"] == "rmse"
    assert params["2"]["estimator"] == CONSTANT and params["2"]["metric"] == "r2"
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, MODEL_NAME)
    assert client.get_model_version(MODEL_NAME, "1").tags.get(DIGEST_TAG) == live.digest, "promote/rollback find it"
