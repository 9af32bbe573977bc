"""Every pipeline parameter crosses KFP's own serialization: real kfp.local runs of the compiled pipeline.

Calling a step function directly never shows what KFP does to a value (a dict's numbers become doubles, a loop's
items are rebuilt). Two runs share the work: run A through `pipeline.py run` as a user types it, a search over four
estimator families on data whose answer is known; run B through `run_locally`, a mixed-type CSV with the parameters
only the cluster path uses. Each checks what the steps received (the executor inputs kfp.local logs) or what the
model card, the search report and the store record.
"""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import pipeline
from benchmarks.make_mixed_data import CLASSIFICATION_LABEL, ID_COLUMN, make_mixed_data
from components import local_run
from components.constants import LOCAL_STORE_DIRNAME, MODEL_CARD_FILENAME
from components.deploy.local_store import current
from components.model_artifact import load_estimator
from tests.fakes.fake_kube_api import FakeKubeApi

pytestmark = pytest.mark.slow

LOCAL_JOB_ID = re.compile(r"\d{1,8}\Z")
"""What kfp.local puts for `dsl.PIPELINE_JOB_ID_PLACEHOLDER` (a random number; KFP's backend gives the run UUID)."""
SEARCH_SPACE = [
    {"model_family": "logistic_regression"},
    {"model_family": "svm", "hyperparameters": {"kernel": "linear"}},
    {
        "model_family": "hist_gradient_boosting",
        "grid": {"learning_rate": [0.05, 0.2]},
        "hyperparameters": {"max_depth": 1},
    },
    {"model_family": "random_forest", "hyperparameters": {"n_estimators": 30, "max_depth": 6}},
]
"""On XOR data only the forest can win: the linear models and additive stumps (depth-1 boosting) cannot represent
an interaction of two features, so they stay near chance however they are tuned."""
WINNER = 4
RUN_A = {
    "--dataset": "xor.csv",
    "--label-column": "quadrant",
    "--test-fraction": "0.3",
    "--seed": "7",
    "--search-space": json.dumps(SEARCH_SPACE),
    "--cv-folds": "3",
    "--gate-metric": "balanced_accuracy",
    "--gate-threshold": "0.8",
    "--min-accuracy": "0.5",
    "--model-name": "xor-forest",
}


def xor_csv(path: Path) -> Path:
    """Two features whose signs' agreement is the label, plus two noise columns: only an interaction separates it."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(300, 4))
    frame = pd.DataFrame(x, columns=["x1", "x2", "noise1", "noise2"])
    frame["quadrant"] = np.where(x[:, 0] * x[:, 1] > 0, "same", "opposite")
    frame.to_csv(path, index=False)
    return path


def executor_inputs(log: Path) -> dict[str, list[dict[str, Any]]]:
    """Each task's executor inputs (one per loop iteration or retry), as kfp.local handed them to the step.

    A loop's iterations run concurrently and log interleaved, so each input is named by its own output file's
    folder (`.../<task>/executor_output.json`), not by the nearest "Executing task" line.
    """
    text = log.read_text()
    found: dict[str, list[dict[str, Any]]] = {}
    for match in re.finditer(r"Got executor_input:", text):
        executor_input, _ = json.JSONDecoder().raw_decode(text[match.end() :].lstrip())
        task = Path(executor_input["outputs"]["outputFile"]).parent.name
        found.setdefault(task, []).append(executor_input)
    return found


def parameters(inputs: dict[str, list[dict[str, Any]]], task: str) -> dict[str, Any]:
    """The parameters of a task that ran once (or was retried with the same inputs)."""
    received = [executor_input["inputs"]["parameterValues"] for executor_input in inputs[task]]
    assert all(each == received[0] for each in received), f"{task} ran with different inputs"
    return received[0]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("run-a")
    xor_csv(cwd / "xor.csv")
    flags = [item for pair in RUN_A.items() for item in pair]
    proc = subprocess.run(
        [sys.executable, str(Path(pipeline.__file__)), "run", "--root", "out", *flags],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cwd, proc


def run_a_log(cwd: Path) -> Path:
    return next((cwd / "out" / "logs").glob("run-*.log"))


def test_the_search_fits_every_family_and_the_known_winner_is_trained_and_deployed(run_a):
    cwd, proc = run_a
    scored = executor_inputs(run_a_log(cwd))["score-candidate"]
    received = sorted((s["inputs"]["parameterValues"]["candidate"] for s in scored), key=lambda c: c["candidate_id"])
    families = [c["model_family"] for c in received]
    assert families == [
        "logistic_regression",
        "svm",
        "hist_gradient_boosting",
        "hist_gradient_boosting",
        "random_forest",
    ]
    assert [c["hyperparameters"].get("learning_rate") for c in received[2:4]] == [0.05, 0.2], "the grid expanded"
    for candidate in received:  # every family was cross-validated in its own step, on 3 folds
        assert re.search(
            rf"search: candidate {int(candidate['candidate_id'])} {candidate['model_family']} .*: "
            r"balanced_accuracy \d\.\d{4} \+/- \d\.\d{4} over 3 folds",
            proc.stdout,
        ), candidate
    (report,) = (cwd / "out" / "runs").glob("*/select-candidate/report")
    table = report.read_text()
    assert f"**Selected:** candidate {WINNER}, random_forest" in table
    means = {
        int(row[0]): float(row[3]) for row in re.findall(r"^\| (\d) \| (\w+) \| `(.*?)` \| ([\d.]+) \|", table, re.M)
    }
    assert len(means) == 5 and max(means, key=means.get) == WINNER
    assert means[WINNER] > 0.85 and max(v for k, v in means.items() if k != WINNER) < 0.7, means
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "xor-forest")
    card = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())
    assert card["model_family"] == "random_forest" and card["estimator"].endswith("RandomForestClassifier")


def test_the_winners_integer_hyperparameters_reach_the_estimator_as_ints(run_a):
    cwd, _ = run_a
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "xor-forest")
    hyper = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())["hyperparameters"]
    assert hyper["n_estimators"] == 30 and isinstance(hyper["n_estimators"], int)
    assert hyper["max_depth"] == 6 and isinstance(hyper["max_depth"], int)
    estimator, _ = load_estimator(Path(live.model_dir))
    forest = estimator.steps[-1][1]
    assert len(forest.estimators_) == 30 and forest.max_depth == 6
    assert forest.random_state == 7, "--seed reached the estimator"
    # What crossed two boundaries (the loop's item, then select's output): doubles, turned back into ints by train.
    received = parameters(executor_inputs(run_a_log(cwd)), "train")
    assert received["hyperparameters"] == {"n_estimators": 30.0, "max_depth": 6.0}
    assert received["model_family"] == "random_forest" and received["seed"] == 7


def test_data_parameters_shape_the_split_the_schema_and_the_search(run_a):
    cwd, proc = run_a
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "xor-forest")
    card = json.loads((Path(live.model_dir) / MODEL_CARD_FILENAME).read_text())
    assert card["label_column"] == "quadrant" and card["feature_names"] == ["x1", "x2", "noise1", "noise2"]
    assert card["class_names"] == ["opposite", "same"] and card["task"] == "classification"
    (test_split,) = (cwd / "out" / "runs").glob("*/load-data/test_data")
    assert len(pd.read_parquet(test_split)) == 90, "30% of 300 rows"
    inputs = executor_inputs(run_a_log(cwd))
    received = parameters(inputs, "load-data")
    assert received == {
        "dataset": "xor.csv",
        "label_column": "quadrant",
        "test_fraction": 0.3,
        "seed": 7,
        "task": "",
        "feature_types": {},
    }
    assert "Task: classification (inferred: label 'quadrant' is not numeric (2 classes))" in proc.stdout
    assert parameters(inputs, "expand-search")["search_space"][3]["hyperparameters"] == {
        "n_estimators": 30.0,
        "max_depth": 6.0,
    }
    assert {s["inputs"]["parameterValues"]["cv_folds"] for s in inputs["score-candidate"]} == {3}


def test_gate_name_store_and_lineage_parameters_reach_the_decision_and_deploy(run_a):
    cwd, proc = run_a
    assert re.search(r"Deploy gate: balanced_accuracy 0\.\d{4} >= threshold 0\.8000: deploy", proc.stdout)
    assert "Champion vs challenger: no champion to compare with" in proc.stdout
    live = current(cwd / "out" / LOCAL_STORE_DIRNAME, "xor-forest")
    assert LOCAL_JOB_ID.match(live.run_id), f"lineage records the run's id, got {live.run_id!r}"
    inputs = executor_inputs(run_a_log(cwd))
    evaluate = parameters(inputs, "evaluate")
    assert evaluate == {"min_accuracy": 0.5, "gate_metric": "balanced_accuracy", "gate_threshold": 0.8}
    decided = parameters(inputs, "champion-vs-challenger")
    assert decided["model_name"] == "xor-forest" and decided["gate_metric"] == "balanced_accuracy"
    received = parameters(inputs, "deploy")
    assert received["model_name"] == "xor-forest"
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


@pytest.fixture
def empty_cluster(tmp_path, monkeypatch) -> Iterator[FakeKubeApi]:
    """A fake Kubernetes API with no InferenceService yet, which the steps (subprocesses) reach through $KUBECONFIG."""
    api = FakeKubeApi()
    api.start()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": api.base_url}}],
        "users": [{"name": "runner", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
        "current-context": "fake",
    }
    (tmp_path / "kubeconfig").write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield api
    api.stop()


def test_typed_data_and_cluster_parameters_cross_kfp_and_a_users_csv_gets_its_own_model_name(
    tmp_path, backoffs, empty_cluster
):
    # Given a user's mixed-type CSV (string categories, missing values, a coded category, an ID column) and every
    # cluster-only parameter set to a non-default value
    make_mixed_data(300, seed=2, with_id=True).to_csv(tmp_path / "customers.csv", index=False)
    arguments = {
        "dataset": str(tmp_path / "customers.csv"),
        "label_column": CLASSIFICATION_LABEL,
        "task": "classification",
        "feature_types": {"store": "categorical", ID_COLUMN: "drop"},
        "model_family": "logistic_regression",
        "hyperparameters": {"C": 0.5, "max_iter": 200},
        "min_accuracy": 0.0,
        "min_improvement": 0.02,
        "namespace": "team-a",
        "deploy_target": "kubernetes",
        "predictor_service_account": "model-reader-a",
        "s3_endpoint": "http://minio.team-a.svc:9000",
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
    # When it runs under kfp.local: the champion step asks the cluster for the live model (there is none), then
    # the deploy step refuses the local artifact a cluster could not fetch
    with pytest.raises(RuntimeError, match="is a local path: a cluster cannot fetch it") as caught:
        local_run.run_locally(tmp_path / "out", arguments)
    # Then every step received every value as given, typed as the component declares it
    reported = re.search(r"full log: (\S+)", str(caught.value))
    assert reported, "the failure names its log file"
    log = Path(reported[1])
    inputs = executor_inputs(log)
    deploy = parameters(inputs, "deploy")
    assert deploy["model_name"] == "sklearn-customers", "the default name follows the dataset, not sklearn-iris"
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
    decided = parameters(inputs, "champion-vs-challenger")
    assert decided["deploy_target"] == "kubernetes" and decided["namespace"] == "team-a"
    assert decided["s3_endpoint"] == "http://minio.team-a.svc:9000" and decided["min_improvement"] == 0.02
    assert "champion: no champion to compare with (there is no InferenceService team-a/sklearn-customers" in (
        log.read_text()
    ), "the step looked on the cluster"
    assert ("GET", "/apis/serving.kserve.io/v1beta1/namespaces/team-a/inferenceservices/sklearn-customers") in [
        (method, path) for method, path, *_ in empty_cluster.requests
    ]
    load = parameters(inputs, "load-data")
    assert load["task"] == "classification" and load["feature_types"] == {"store": "categorical", ID_COLUMN: "drop"}
    train = parameters(inputs, "train")
    assert train["hyperparameters"] == {"C": 0.5, "max_iter": 200.0} and train["model_family"] == "logistic_regression"
    assert parameters(inputs, "evaluate")["min_accuracy"] == 0.0
    # The schema the run inferred follows the data and the overrides: categories, missing values, the ID dropped
    (card_path,) = (tmp_path / "out" / "runs").glob(f"*/train/model/{MODEL_CARD_FILENAME}")
    features = {f["name"]: f for f in json.loads(card_path.read_text())["features"]}
    assert ID_COLUMN not in features
    assert features["store"]["kind"] == "categorical" and features["store"]["categories"] == [
        str(n) for n in range(1, 9)
    ]
    assert features["plan"]["kind"] == "categorical" and features["plan"]["nullable"] is True
    assert features["age"]["kind"] == "numeric" and features["age"]["nullable"] is True
    assert features["tenure_months"] == {**features["tenure_months"], "kind": "numeric", "nullable": False}
    # The deploy step's retry policy is in force under kfp.local too: two more attempts, 30 s then 60 s apart.
    assert backoffs == [30.0, 60.0]
