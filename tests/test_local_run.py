"""The README's main job, end to end: the pipeline under kfp.local, then the served model answers V1 predict.

Runs `pipeline.py` as a user would, from a working directory outside the repo.
"""

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import DEFAULT_LABEL_COLUMN, DEFAULT_MODEL_NAME, LOCAL_STORE_DIRNAME
from components.deploy.local_store import DEPLOYMENT_FILENAME, current
from components.model_artifact import load_estimator
from tests.helpers import free_port, predict_with_pipeline_serve

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline.py"
pytestmark = pytest.mark.slow


def run_pipeline(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PIPELINE), "run", "--root", "out", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("user-dir")
    return cwd, run_pipeline(cwd)


def test_local_run_trains_evaluates_and_deploys_with_readable_progress(local_run):
    cwd, proc = local_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    steps = ("load-data", "expand-search", "score-candidate", "select-candidate", "train", "evaluate")
    for step in (*steps, "champion-vs-challenger", "deploy"):
        assert f"  > {step} ..." in out and f"  < {step} ok in " in out
    assert "Task: classification (inferred: label 'target' has 3 distinct values" in out
    assert "the only candidate: not cross-validated" in out, "an empty search space costs no cross-validation"
    assert "Deploy gate: accuracy" in out and ": deploy" in out
    assert "Champion vs challenger: no champion to compare with" in out
    assert "executor_input" not in out and "executorInput" not in out, "executor JSON stays in the log file"
    assert "Traceback" not in out + proc.stderr
    log = next((cwd / "out" / "logs").glob("run-*.log"))
    assert "executorInput" in log.read_text() or "executor_input" in log.read_text()
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, DEFAULT_MODEL_NAME)
    assert f"Deployed '{DEFAULT_MODEL_NAME}' version {live.version}" in out
    assert live.metrics["accuracy"] >= 0.9


def test_served_model_answers_v1_predict_like_the_trained_model(local_run):
    cwd, proc = local_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, DEFAULT_MODEL_NAME)
    estimator, card = load_estimator(Path(live.model_dir))
    test_split = next((cwd / "out" / "runs").glob("*/load-data/test_data"))
    rows = pd.read_parquet(test_split).drop(columns=[DEFAULT_LABEL_COLUMN]).to_numpy()
    served = predict_with_pipeline_serve(cwd, rows.tolist(), model=DEFAULT_MODEL_NAME)
    assert served.predictions == estimator.predict(rows).tolist()
    assert len(card.feature_names) == rows.shape[1]
    output = served.output
    assert served.returncode in (0, -signal.SIGINT, 130), output
    assert f"/v1/models/{DEFAULT_MODEL_NAME}:predict" in output, "serve prints a working curl"
    assert "Traceback" not in output


def test_a_model_below_the_gate_is_not_deployed_and_not_served(tmp_path):
    proc = run_pipeline(tmp_path, "--min-accuracy", "0.999", "--serve")
    assert proc.returncode == 1
    assert "threshold 0.9990: do not deploy" in proc.stdout
    assert "Champion vs challenger: not compared with the live model: the absolute gate refused it" in proc.stdout
    assert "Nothing to serve: the model was not deployed (not compared" in proc.stderr
    assert "  > deploy ..." not in proc.stdout
    assert not (tmp_path / "out" / LOCAL_STORE_DIRNAME / DEFAULT_MODEL_NAME / DEPLOYMENT_FILENAME).exists()


def test_bad_data_fails_the_run_with_the_reason_not_a_traceback(tmp_path):
    # An ID column: distinct strings on every row teach a model nothing, and the data step says how to drop it.
    data = pd.DataFrame({"a": np.arange(30) / 7, "id": [f"u{n}" for n in range(30)], DEFAULT_LABEL_COLUMN: [0, 1] * 15})
    data.to_csv(tmp_path / "bad.csv", index=False)
    proc = run_pipeline(tmp_path, "--dataset", "bad.csv")
    assert proc.returncode == 1
    assert "Run failed: DataValidationError: feature column 'id' looks like an ID" in proc.stderr
    assert 'drop it with feature_types {"id": "drop"}' in proc.stderr
    assert "full log:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_serve_refuses_a_tampered_deployment_in_one_line(tmp_path, model_dir):
    from components.constants import MODEL_FILENAME
    from components.deploy.local_store import publish

    deployment = publish(model_dir, tmp_path / "out" / LOCAL_STORE_DIRNAME, model_name=DEFAULT_MODEL_NAME)
    stored = Path(deployment.model_dir) / MODEL_FILENAME
    stored.chmod(0o644)
    stored.write_bytes(stored.read_bytes() + b"tampered")
    proc = subprocess.run(
        [sys.executable, str(PIPELINE), "serve", "--root", "out", "--port", str(free_port())],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith("cannot serve: ") and "refusing to load a model directory that changed" in line
    assert "Serving" not in proc.stdout, "refused before the server starts"
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hyperparameters", '{"depth": 3}'], "logistic_regression does not take hyperparameter(s) depth"),
        (["--hyperparameters", "[1]"], "--hyperparameters: must be a JSON object"),
        (
            ["--model-family", "sklearn.svm.SVX"],
            "model_family 'sklearn.svm.SVX' is not a scikit-learn classifier or regressor; did you mean "
            "sklearn.svm.SVR?",
        ),
        (["--task", "ranking"], "pipeline.py run: task must be one of classification, regression or empty"),
        (["--search-space", '{"model_family": "svm"}'], "--search-space: must be a JSON list"),
        (["--gate-metric", "rmse", "--task", "classification"], "gate_metric 'rmse' is a regression metric"),
    ],
)
def test_bad_run_options_fail_before_any_step_runs(tmp_path, flags, message):
    proc = run_pipeline(tmp_path, *flags)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing ran"
