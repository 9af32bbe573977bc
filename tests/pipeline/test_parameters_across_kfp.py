"""Every pipeline parameter crosses KFP's own serialization: real kfp.local runs of the compiled pipeline.

Calling a step function directly never shows what KFP does to a value (a dict's numbers become doubles). Two runs
share the work: run A through `pipeline.py run` as a user types it, run B through `run_locally` for the parameters
only the cluster path uses. Each checks what the step received (the executor input kfp.local logs) or what the
model card and the store record.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pipeline
from components import local_run
from components.constants import LOCAL_STORE_DIRNAME, MODEL_CARD_FILENAME
from components.deploy.local_store import current
from components.model_artifact import load_estimator

pytestmark = pytest.mark.slow

LOCAL_JOB_ID = re.compile(r"\d{1,8}\Z")
"""What kfp.local puts for `dsl.PIPELINE_JOB_ID_PLACEHOLDER` (a random number; KFP's backend gives the run UUID)."""
RUN_A = {
    "--dataset": "wine",
    "--label-column": "cultivar",
    "--test-fraction": "0.3",
    "--seed": "7",
    "--model-family": "random_forest",
    "--hyperparameters": '{"n_estimators": 7, "max_depth": 3}',
    "--min-accuracy": "0.5",
    "--model-name": "wine-forest",
}


def churn_csv(path: Path) -> Path:
    """A small churn table as a user would bring it: numeric features, a 0/1 label column named `churned`."""
    rng = np.random.default_rng(0)
    tenure = rng.integers(1, 72, 120).astype(float)
    calls = rng.poisson(2, 120).astype(float)
    frame = pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": rng.normal(70, 20, 120).round(2),
            "support_calls": calls,
            "churned": ((calls > 2) | (tenure < 12)).astype(int),
        }
    )
    frame.to_csv(path, index=False)
    return path


def executor_inputs(log: Path) -> dict[str, dict[str, Any]]:
    """Each task's executor input, as kfp.local handed it to the step (it logs them verbatim)."""
    text = log.read_text()
    found: dict[str, dict[str, Any]] = {}
    for match in re.finditer(r"Executing task \x1b\[\d+m'([\w-]+)'|Executing task '([\w-]+)'", text):
        task = match[1] or match[2]
        start = text.index("Got executor_input:", match.end()) + len("Got executor_input:")
        found[task], _ = json.JSONDecoder().raw_decode(text[start:].lstrip())
    return found


def parameters(inputs: dict[str, dict[str, Any]], task: str) -> dict[str, Any]:
    return inputs[task]["inputs"]["parameterValues"]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("run-a")
    flags = [item for pair in RUN_A.items() for item in pair]
    proc = subprocess.run(
        [sys.executable, str(Path(pipeline.__file__)), "run", "--root", "out", *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, proc


def test_integer_hyperparameters_reach_the_estimator_and_the_card_as_ints(run_a):
    cwd, _ = run_a
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "wine-forest")
    card = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())
    assert card["model_family"] == "random_forest"
    hyper = card["hyperparameters"]
    assert hyper["n_estimators"] == 7 and isinstance(hyper["n_estimators"], int)
    assert hyper["max_depth"] == 3 and isinstance(hyper["max_depth"], int)
    estimator, _ = load_estimator(Path(live.model_dir))
    forest = estimator.named_steps["classify"]
    assert len(forest.estimators_) == 7 and forest.max_depth == 3
    assert forest.random_state == 7, "--seed reached the classifier"
    # What crossed the boundary: the Struct's numbers arrive as doubles, which train turned back into ints.
    received = parameters(executor_inputs(next((cwd / "out" / "logs").glob("run-*.log"))), "train")
    assert received["hyperparameters"] == {"n_estimators": 7.0, "max_depth": 3.0}
    assert received["model_family"] == "random_forest" and received["seed"] == 7


def test_data_parameters_shape_the_split_and_the_card(run_a):
    cwd, _ = run_a
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "wine-forest")
    card = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())
    assert card["label_column"] == "cultivar" and len(card["feature_names"]) == 13, "wine, label renamed"
    (test_split,) = (cwd / "out" / "runs").glob("*/load-data/test_data")
    test = pd.read_parquet(test_split)
    assert "cultivar" in test.columns and len(test) == 54, "30% of wine's 178 rows (sklearn rounds up)"
    received = parameters(executor_inputs(next((cwd / "out" / "logs").glob("run-*.log"))), "load-data")
    assert received == {"dataset": "wine", "label_column": "cultivar", "test_fraction": 0.3, "seed": 7}


def test_gate_name_store_and_lineage_parameters_reach_deploy(run_a):
    cwd, proc = run_a
    assert "threshold 0.5000: deploy" in proc.stdout, "--min-accuracy reached the gate"
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "wine-forest")
    assert LOCAL_JOB_ID.match(live.run_id), f"lineage records the run's id, got {live.run_id!r}"
    received = parameters(executor_inputs(next((cwd / "out" / "logs").glob("run-*.log"))), "deploy")
    assert received["model_name"] == "wine-forest"
    assert received["local_store"] == str(cwd / "out" / LOCAL_STORE_DIRNAME)
    assert received["run_id"] == live.run_id
    assert received["run_name"].startswith(f"{pipeline.PIPELINE_NAME}-") and received["run_name"] != live.run_id


@pytest.fixture
def backoffs(monkeypatch) -> list[float]:
    """The retry delays kfp.local waits between attempts, recorded instead of slept (the spec asks 30 s, then 60 s)."""
    from kfp.local.orchestrator import task_executor

    waited: list[float] = []
    monkeypatch.setattr(task_executor, "time", SimpleNamespace(sleep=waited.append))
    return waited


def test_cluster_parameters_cross_kfp_and_a_users_csv_gets_its_own_model_name(tmp_path, backoffs):
    # Given a user's CSV and every cluster-only parameter set to a non-default value
    churn_csv(tmp_path / "churn.csv")
    arguments = {
        "dataset": str(tmp_path / "churn.csv"),
        "label_column": "churned",
        "model_family": "logistic_regression",
        "hyperparameters": {"C": 0.5, "max_iter": 200},
        "min_accuracy": 0.0,
        "namespace": "team-a",
        "deploy_target": "kubernetes",
        "predictor_service_account": "model-reader-a",
        "deploy_timeout_seconds": 45,
        "payload_logger_url": "http://payload-logger.team-a.svc.cluster.local",
        "min_replicas": 2,
        "max_replicas": 5,
        "scale_metric": "memory",
        "scale_target": 70,
        "predictor_cpu_request": "250m",
        "predictor_memory_request": "192Mi",
        "predictor_cpu_limit": "2",
        "predictor_memory_limit": "1Gi",
    }
    # When it runs under kfp.local, the deploy step refuses the local artifact a cluster could not fetch
    with pytest.raises(RuntimeError, match="is a local path: a cluster cannot fetch it") as caught:
        local_run.run_locally(tmp_path / "out", arguments)
    # Then the step received every value as given, typed as the component declares it
    reported = re.search(r"full log: (\S+)", str(caught.value))
    assert reported, "the failure names its log file"
    log = Path(reported[1])
    inputs = executor_inputs(log)
    deploy = parameters(inputs, "deploy")
    assert deploy["model_name"] == "sklearn-churn", "the default name follows the dataset, not sklearn-iris"
    assert deploy["deploy_target"] == "kubernetes" and deploy["namespace"] == "team-a"
    assert deploy["service_account"] == "model-reader-a"
    assert deploy["timeout_seconds"] == 45 and isinstance(deploy["timeout_seconds"], int)
    assert deploy["payload_logger_url"] == "http://payload-logger.team-a.svc.cluster.local"
    scaling = {k: deploy[k] for k in ("min_replicas", "max_replicas", "scale_metric", "scale_target")}
    assert scaling == {"min_replicas": 2, "max_replicas": 5, "scale_metric": "memory", "scale_target": 70}
    assert isinstance(deploy["min_replicas"], int) and isinstance(deploy["scale_target"], int)
    resources = [deploy[f"predictor_{r}_{k}"] for k in ("request", "limit") for r in ("cpu", "memory")]
    assert resources == ["250m", "192Mi", "2", "1Gi"]
    assert LOCAL_JOB_ID.match(deploy["run_id"]) and deploy["run_name"].startswith(pipeline.PIPELINE_NAME)
    train = parameters(inputs, "train")
    assert train["hyperparameters"] == {"C": 0.5, "max_iter": 200.0} and train["label_column"] == "churned"
    assert parameters(inputs, "evaluate")["min_accuracy"] == 0.0
    # The deploy step's retry policy is in force under kfp.local too: two more attempts, 30 s then 60 s apart.
    assert backoffs == [30.0, 60.0]
