"""`pipeline.py monitor`: hyphenated flags (old spellings still accepted), the whole configuration checked before
any data is read, a retrain that starts training (locally or on KFP), and schedules with typed parameters.

KFP is the fake API from tests/deploy over real HTTP, driven by the real kfp.Client.
"""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import DEFAULT_MODEL_NAME, LOCAL_STORE_DIRNAME, MONITORING_PIPELINE_NAME
from components.monitoring.cli import _parser, main, parse_args
from components.reference_profile import build_reference_profile, write_reference_profile
from tests.fakes.fake_kfp_api import FakeKfpApi
from tests.monitoring.monitoring_helpers import pipeline_cli, shift_feature, write_log

pytestmark = pytest.mark.filterwarnings(
    "ignore:This client only works:FutureWarning",
    "ignore:.*have no effect in the current local runner:UserWarning",
    "ignore:You may be attemping to run a task that uses custom or non-Python base image:RuntimeWarning",
)


@pytest.fixture
def live_model(make_model_dir, iris_frame: pd.DataFrame) -> Path:
    """A real model directory (joblib + card) with its reference profile, as train writes it."""
    directory, _ = make_model_dir(family="random_forest", name="live")
    write_reference_profile(directory, build_reference_profile(iris_frame))
    return directory


def logs(tmp_path: Path, iris_frame: pd.DataFrame, *, shifted: bool) -> Path:
    window = iris_frame.iloc[np.random.default_rng(5).integers(0, len(iris_frame), 400)].reset_index(drop=True)
    column = "petal length (cm)"
    if shifted:
        window = shift_feature(window, column, 0.5 * iris_frame[column].std())
    write_log(tmp_path / "logs", window, model_name=DEFAULT_MODEL_NAME)
    return tmp_path / "logs"


def test_help_names_only_flags_that_exist_all_hyphenated(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text)) - {"--help"}
    assert {"--log-dir", "--model-dir", "--on-drift", "--schedule", "--endpoint", "--std-ratio-threshold"} <= named
    assert not [flag for flag in named if "_" in flag]
    known = {flag for action in _parser("x")._actions for flag in action.option_strings}
    assert named <= known, f"help names flags that do not exist: {named - known}"


def test_the_old_underscore_spellings_still_work() -> None:
    args = parse_args(["--log_dir", "l", "--model_dir=m", "--on_drift", "fail", "--window_hours", "2",
                       "--ks_alpha=0.01", "--retrain_request_dir", "r", "--min_records", "5",
                       "--log_format", "kserve-json"])  # fmt: skip
    assert (args.log_dir, args.model_dir, args.on_drift, args.window_hours) == ("l", "m", "fail", 2.0)
    assert (args.ks_alpha, args.retrain_request_dir, args.min_records, args.log_format) == (
        0.01, "r", 5, "kserve-json"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        (["--on-drift", "retrain"], "does not record the training data; give the new labelled data with --retrain"),
        (["--on-drift", "retrain", "--retrain-dataset", "iris", "--endpoint", "localhost:8080"], "http"),
        (
            [
                "--on-drift",
                "retrain",
                "--retrain-dataset",
                "iris",
                "--endpoint",
                "http://x",
                "--training-package",
                "/nope.yaml",
            ],
            "not found",
        ),
        (["--ks-alpha", "1.5"], "ks_alpha"),
        (["--std-ratio-threshold", "0.5"], "std_ratio_threshold"),
        (["--schedule", "0 6 * * *", "--endpoint", "http://x"], "six"),
        (["--schedule", "0 0 6 * * *"], "--schedule needs --endpoint"),
    ],
)
def test_a_configuration_that_cannot_work_fails_at_start_before_any_data_is_read(
    tmp_path: Path, live_model: Path, capsys, extra: list[str], complaint: str
) -> None:
    # given: no logs at all (a quiet window) and a pipeline root that does not exist yet
    root = tmp_path / "root"
    argv = ["--log-dir", str(tmp_path / "no-logs"), "--model-dir", str(live_model), "--pipeline-root", str(root)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert complaint in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not root.exists()  # nothing ran


def test_a_model_directory_without_a_card_fails_at_start(tmp_path: Path, capsys) -> None:
    argv = ["--log-dir", str(tmp_path), "--model-dir", str(tmp_path / "gone"), "--on-drift", "retrain",
            "--retrain-dataset", "iris", "--pipeline-root", str(tmp_path / "root")]  # fmt: skip
    assert main(argv) == 2
    assert "cannot read the live model's card" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()


def test_schedule_creates_a_recurring_run_with_typed_parameters(kfp_api: FakeKfpApi, capsys) -> None:
    argv = [
        "--schedule", "0 0 * * * *", "--endpoint", kfp_api.base_url,
        "--log-dir", "s3://mlpipeline/payload-logs", "--model-dir", "s3://mlpipeline/v2/artifacts/run/train/model",
        "--s3-endpoint", "http://seaweedfs.kubeflow:9000", "--window-hours", "24", "--min-records", "300",
        "--on-drift", "retrain", "--training-pipeline-id", "train-p", "--training-arguments", '{"dataset": "wine"}',
    ]  # fmt: skip
    assert main(argv) == 0
    assert "created recurring run recurring-1" in capsys.readouterr().out
    (job,) = kfp_api.recurring_runs()
    assert job["trigger"]["cron_schedule"]["cron"] == "0 0 * * * *" and job["no_catchup"] is True
    assert job["display_name"] == f"{DEFAULT_MODEL_NAME}-drift"
    assert job["experiment_id"] == kfp_api.experiments["monitoring"]
    # with a platform spec (the Secret for the object store), kfp.Client sends both under pipeline_spec
    spec = job["pipeline_spec"]["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == MONITORING_PIPELINE_NAME and "platform_spec" in job["pipeline_spec"]
    parameters = job["runtime_config"]["parameters"]
    # the JSON KFP received: doubles are numbers, integers integers, strings as given (no local path resolution)
    assert parameters["window_hours"] == 24.0 and isinstance(parameters["window_hours"], float)
    assert parameters["ks_alpha"] == 0.05 and isinstance(parameters["psi_threshold"], float)
    assert parameters["min_records"] == 300 and isinstance(parameters["min_records"], int)
    assert parameters["log_dir"] == "s3://mlpipeline/payload-logs" and parameters["on_drift"] == "retrain"
    assert parameters["kfp_endpoint"] == "http://ml-pipeline.kubeflow:8888"
    assert (parameters["training_pipeline_id"], parameters["training_arguments"]) == ("train-p", '{"dataset": "wine"}')
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert declared["window_hours"]["parameterType"] == "NUMBER_DOUBLE"
    assert declared["min_records"]["parameterType"] == "NUMBER_INTEGER"


def test_a_refused_schedule_is_one_line(kfp_api: FakeKfpApi, capsys) -> None:
    kfp_api.refuse_runs_with = 403
    argv = ["--schedule", "0 0 6 * * *", "--endpoint", kfp_api.base_url, "--log-dir", "s3://l", "--model-dir", "s3://m"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("schedule failed: KFP at") and "refused the recurring run: HTTP 403" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_retrain_on_kfp_submits_the_training_pipeline_with_the_cards_parameters_only_on_drift(
    kfp_api: FakeKfpApi, tmp_path: Path, iris_frame: pd.DataFrame, live_model: Path, capsys
) -> None:
    common = ["--model-dir", str(live_model), "--pipeline-root", str(tmp_path / "root"), "--on-drift", "retrain",
              "--retrain-dataset", "s3://data/new.csv", "--endpoint", kfp_api.base_url]  # fmt: skip
    # a quiet window starts nothing
    assert main(["--log-dir", str(logs(tmp_path / "quiet", iris_frame, shifted=False)), *common]) == 0
    assert kfp_api.runs() == []
    # a drifted one starts the training pipeline through the submitter
    assert main(["--log-dir", str(logs(tmp_path / "drifted", iris_frame, shifted=True)), *common]) == 0
    out = capsys.readouterr().out
    assert "drift: drift in 1 of 4 features: petal length (cm) [distribution]" in out
    assert "retraining: started training run run-1" in out
    (run,) = kfp_api.runs()
    card = json.loads((live_model / "model.json").read_text())
    assert run["runtime_config"]["parameters"] == {
        "dataset": "s3://data/new.csv",
        "model_family": "random_forest",
        "hyperparameters": card["hyperparameters"],
        "label_column": card["label_column"],
        "task": card["task"],
        "model_name": DEFAULT_MODEL_NAME,
    }
    # kfp.Client nests the spec beside a platform spec when the YAML has one (the training pipeline does)
    spec = run["pipeline_spec"].get("pipeline_spec", run["pipeline_spec"])
    assert spec["pipelineInfo"]["name"] == "sklearn-kserve-training"
    assert run["experiment_id"] == kfp_api.experiments["retraining"]


@pytest.mark.slow
def test_retrain_print_only_tells_exactly_what_to_run(
    tmp_path: Path, iris_frame: pd.DataFrame, live_model: Path, capsys
) -> None:
    argv = ["--log-dir", str(logs(tmp_path, iris_frame, shifted=True)), "--model-dir", str(live_model),
            "--pipeline-root", str(tmp_path / "root"), "--on-drift", "retrain", "--retrain-dataset", "iris",
            "--retrain-print-only", "--retrain-request-dir", str(tmp_path / "requests")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    (command,) = [line.strip() for line in out.splitlines() if line.strip().startswith("python pipeline.py run")]
    parsed = pipeline_cli().build_parser().parse_args(shlex.split(command)[2:])  # exactly what a person would paste
    assert (parsed.dataset, parsed.model_family, parsed.model_name) == ("iris", "random_forest", DEFAULT_MODEL_NAME)
    assert json.loads((tmp_path / "requests" / "retrain_request.json").read_text())["drifted_features"] == [
        "petal length (cm)"
    ]


@pytest.mark.slow
def test_retrain_locally_runs_the_training_pipeline_and_deploys_through_the_gate(
    tmp_path: Path, iris_frame: pd.DataFrame, live_model: Path, capsys
) -> None:
    from components.deploy.local_store import current
    from components.model_artifact import read_model_card

    # given: a live model whose card records non-default hyperparameters
    card = json.loads((live_model / "model.json").read_text())
    card["hyperparameters"] = {"n_estimators": 20, "max_depth": 3}
    (live_model / "model.json").write_text(json.dumps(card))
    argv = ["--log-dir", str(logs(tmp_path, iris_frame, shifted=True)), "--model-dir", str(live_model),
            "--pipeline-root", str(tmp_path / "root"), "--on-drift", "retrain", "--retrain-dataset", "iris",
            "--retrain-root", str(tmp_path / "retrain")]  # fmt: skip
    # when a drifted window is checked with --on-drift retrain
    assert main(argv) == 0
    assert "retraining: " in capsys.readouterr().out
    # then: the training pipeline ran with the card's parameters and its gate deployed the new model
    deployed = current(tmp_path / "retrain" / LOCAL_STORE_DIRNAME, DEFAULT_MODEL_NAME)
    retrained = read_model_card(Path(deployed.model_dir))
    assert retrained.model_family == "random_forest"
    assert retrained.hyperparameters["n_estimators"] == 20 and retrained.hyperparameters["max_depth"] == 3
