"""The monitoring pipeline end to end under kfp.local (components run as subprocesses of this venv).

Logs are written by the real PayloadLogWriter into tmp_path; the model directory holds a real reference profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from components.constants import (
    DEFAULT_IMAGE,
    DEFAULT_MIN_RECORDS,
    DEFAULT_MISSING_RATE_THRESHOLD,
    DEFAULT_MODEL_NAME,
    DEFAULT_STD_RATIO_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    KFP_ARTIFACT_SECRET_KEYS,
    KFP_ARTIFACT_SECRET_NAME,
    METRIC_DRIFT_STD_RATIO_PREFIX,
    ON_DRIFT_FAIL,
    RETRAIN_REQUEST_FILENAME,
)
from components.monitoring.pipeline_def import monitoring_pipeline
from tests.monitoring.monitoring_helpers import log_request, read_retrain_request, shift_feature, write_log

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*have no effect in the current local runner:UserWarning",
    "ignore:You may be attemping to run a task that uses custom or non-Python base image:RuntimeWarning",
)


@pytest.fixture
def local_kfp(tmp_path: Path) -> Path:
    from kfp import local

    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def run(log_dir: Path, model_dir: Path, request_dir: Path, **kwargs) -> None:
    monitoring_pipeline(log_dir=str(log_dir), model_dir=str(model_dir), retrain_request_dir=str(request_dir), **kwargs)


def only_report(root: Path) -> dict:
    (path,) = root.glob("*/check-drift/drift_report/drift_report.json")
    return json.loads(path.read_text())


def resample(frame: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    return frame.iloc[np.random.default_rng(seed).integers(0, len(frame), rows)].reset_index(drop=True)


@pytest.mark.slow
def test_in_distribution_traffic_reports_ok_and_requests_nothing(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    write_log(tmp_path / "logs", resample(iris_frame, 400, seed=1), model_name=DEFAULT_MODEL_NAME)
    run(tmp_path / "logs", iris_model_dir, tmp_path / "requests")
    report = only_report(local_kfp)
    assert report["status"] == DRIFT_STATUS_OK and report["records"] == 400
    assert not (tmp_path / "requests" / RETRAIN_REQUEST_FILENAME).exists()
    (html,) = local_kfp.glob("*/check-drift/report_html")
    assert html.read_text().count("<svg") == 4


@pytest.mark.slow
def test_shifted_traffic_writes_a_retraining_request(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    column = "petal width (cm)"
    window = shift_feature(resample(iris_frame, 400, seed=2), column, 0.5 * iris_frame[column].std())
    write_log(tmp_path / "logs", window, model_name=DEFAULT_MODEL_NAME)
    run(tmp_path / "logs", iris_model_dir, tmp_path / "requests")
    assert only_report(local_kfp)["status"] == DRIFT_STATUS_DRIFT
    request = read_retrain_request(tmp_path / "requests")
    assert request is not None and request["drifted_features"] == [column]
    assert request["model_uri"] == str(iris_model_dir) and request["model_name"] == DEFAULT_MODEL_NAME


@pytest.mark.slow
def test_too_few_records_is_not_enough_data_even_when_shifted(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    window = shift_feature(resample(iris_frame, DEFAULT_MIN_RECORDS // 4, seed=3), "sepal length (cm)", 3.0)
    write_log(tmp_path / "logs", window, model_name=DEFAULT_MODEL_NAME)
    run(tmp_path / "logs", iris_model_dir, tmp_path / "requests")
    assert only_report(local_kfp)["status"] == DRIFT_STATUS_NOT_ENOUGH_DATA
    assert not (tmp_path / "requests").exists()


@pytest.mark.slow
def test_on_drift_fail_fails_the_run(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:

    window = shift_feature(
        resample(iris_frame, 400, seed=4), "sepal width (cm)", 0.5 * iris_frame["sepal width (cm)"].std()
    )
    write_log(tmp_path / "logs", window, model_name=DEFAULT_MODEL_NAME)
    with pytest.raises(RuntimeError, match="fail-on-drift"):
        run(tmp_path / "logs", iris_model_dir, tmp_path / "requests", on_drift=ON_DRIFT_FAIL)
    assert not (tmp_path / "requests").exists()


def test_compiled_pipeline_has_the_check_and_both_branches(tmp_path: Path) -> None:
    from kfp import compiler

    package = tmp_path / "monitoring_pipeline.yaml"
    compiler.Compiler().compile(monitoring_pipeline, str(package))
    spec, platform = yaml.safe_load_all(package.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"check-drift", "condition-1", "condition-2"}
    conditions = {t["triggerPolicy"]["condition"] for n, t in tasks.items() if n.startswith("condition")}
    assert conditions == {
        "inputs.parameter_values['pipelinechannel--check-drift-Output'] == 'retrain'",
        "inputs.parameter_values['pipelinechannel--check-drift-Output'] == 'fail'",
    }
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE}
    assert tasks["check-drift"]["cachingOptions"] == {}  # caching off: new logs, same parameters
    # the check gets the retrain settings too, so a wrong one fails before any log is read
    check_inputs = tasks["check-drift"]["inputs"]["parameters"]
    for name in ("retrain_request_dir", "kfp_endpoint", "training_pipeline_id", "training_arguments"):
        assert check_inputs[name] == {"componentInputParameter": name}
    declared = spec["root"]["inputDefinitions"]["parameters"]
    import inspect

    from components.monitoring.kfp_components import check_drift

    for name, value in (("std_ratio_threshold", DEFAULT_STD_RATIO_THRESHOLD),
                        ("missing_rate_threshold", DEFAULT_MISSING_RATE_THRESHOLD),
                        ("unseen_threshold", DEFAULT_UNSEEN_THRESHOLD)):  # fmt: skip
        default = inspect.signature(check_drift).parameters[name].default
        assert default == value  # a literal there: KFP executes the function's source alone
        threshold = declared[name]
        assert (threshold["defaultValue"], threshold["parameterType"]) == (value, "NUMBER_DOUBLE")
        assert check_inputs[name] == {"componentInputParameter": name}
    # on a cluster the check reads the object store with KFP's own Secret
    (secret,) = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-check-drift"]["secretAsEnv"]
    assert secret["secretName"] == KFP_ARTIFACT_SECRET_NAME and secret["optional"] is True
    assert {k["secretKey"]: k["envVar"] for k in secret["keyToEnv"]} == KFP_ARTIFACT_SECRET_KEYS


@pytest.mark.slow
def test_command_line_runs_locally_and_exits_nonzero_only_on_failure(
    tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path, capsys
) -> None:
    from components.monitoring.cli import main

    column = "petal length (cm)"
    shifted = shift_feature(resample(iris_frame, 400, seed=5), column, 0.5 * iris_frame[column].std())
    write_log(tmp_path / "logs", shifted, model_name=DEFAULT_MODEL_NAME)
    common = ["--log_dir", str(tmp_path / "logs"), "--model_dir", str(iris_model_dir)]
    common += ["--pipeline_root", str(tmp_path / "root")]
    assert main(common) == 0  # default on_drift=report: drift is reported, the run succeeds
    assert f"drift: drift in 1 of 4 features: {column}" in capsys.readouterr().out
    assert main([*common, "--on_drift", "fail"]) == 1
    assert "monitoring run failed" in capsys.readouterr().out


def test_the_image_is_chosen_in_one_place(tmp_path: Path) -> None:
    from kfp import compiler

    from components.monitoring.pipeline_def import make_monitoring_pipeline

    package = tmp_path / "monitoring_pipeline.yaml"
    compiler.Compiler().compile(make_monitoring_pipeline("registry.example/kfp-sklearn-kserve:9.9"), str(package))
    spec, _ = yaml.safe_load_all(package.read_text())
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example/kfp-sklearn-kserve:9.9"}


@pytest.mark.slow
def test_kserve_blob_logs_are_checked_the_same_way(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    from datetime import UTC, datetime

    from components.constants import CE_TYPE_INFERENCE_REQUEST, CE_TYPE_INFERENCE_RESPONSE, LOG_FORMAT_KSERVE_JSON

    column = "sepal length (cm)"
    window = shift_feature(resample(iris_frame, 300, seed=6), column, 0.5 * iris_frame[column].std())
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    records = []
    for i, row in enumerate(window.to_numpy().tolist()):
        records.append(log_request(f"id{i}", CE_TYPE_INFERENCE_REQUEST, {"instances": [row]}, now))
        records.append(log_request(f"id{i}", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [1]}, now))
    folder = tmp_path / "kserve-logs" / "kserve-models" / DEFAULT_MODEL_NAME / "predictor"
    folder.mkdir(parents=True)
    (folder / "id0-request.json").write_text(json.dumps(records))
    run(tmp_path / "kserve-logs", iris_model_dir, tmp_path / "requests", log_format=LOG_FORMAT_KSERVE_JSON)
    report = only_report(local_kfp)
    assert report["status"] == DRIFT_STATUS_DRIFT and report["records"] == 300
    request = read_retrain_request(tmp_path / "requests")
    assert request is not None and request["drifted_features"] == [column]


@pytest.mark.slow
def test_a_wrong_retrain_configuration_fails_the_first_run_even_on_a_quiet_window(
    local_kfp: Path, tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    write_log(tmp_path / "logs", resample(iris_frame, 400, seed=7), model_name=DEFAULT_MODEL_NAME)
    # on_drift=retrain with neither a request directory nor an endpoint: nothing could act on a drift
    with pytest.raises(RuntimeError, match="check-drift"):
        monitoring_pipeline(log_dir=str(tmp_path / "logs"), model_dir=str(iris_model_dir), on_drift="retrain")
    assert not list(local_kfp.glob("*/check-drift/drift_report/drift_report.json"))  # failed before the check


def test_a_change_of_spread_alone_is_reported_with_a_std_ratio_metric_per_feature(
    tmp_path: Path, iris_frame: pd.DataFrame, iris_model_dir: Path
) -> None:
    from kfp import dsl

    from components.constants import METRIC_DRIFT_DETECTED, METRIC_DRIFT_MIN_SPREAD_PVALUE
    from components.monitoring.kfp_components import check_drift

    # given: logged traffic whose sepal width is twice as spread out, the same mean
    column = "sepal width (cm)"
    window = resample(iris_frame, 400, seed=8)
    mean = iris_frame[column].mean()
    window[column] = mean + (window[column] - mean) * 2.0
    write_log(tmp_path / "logs", window, model_name=DEFAULT_MODEL_NAME)
    html, metrics, report = (kind(uri=str(tmp_path / name)) for kind, name in
                             ((dsl.HTML, "html"), (dsl.Metrics, "metrics"), (dsl.Artifact, "report")))  # fmt: skip
    # when the check-drift step's function runs (what the component wraps) on real artifacts
    action = check_drift(
        report_html=html, metrics=metrics, drift_report=report, log_dir=str(tmp_path / "logs"),
        model_dir=str(iris_model_dir), model_name=DEFAULT_MODEL_NAME, window_hours=24.0, window_end="",
        psi_threshold=0.15, ks_alpha=0.05, min_records=200, on_drift="report",
    )  # fmt: skip
    # then: a drift (its spread among the reasons), with the std ratio in the JSON, the page and one metric per feature
    document = json.loads((Path(report.path) / "drift_report.json").read_text())
    (feature,) = [f for f in document["features"] if f["name"] == column]
    assert action == "report" and document["status"] == DRIFT_STATUS_DRIFT and "spread" in feature["reasons"]
    assert feature["std_ratio"] == pytest.approx(2.0, rel=0.15)
    per_feature = {k: v for k, v in metrics.metadata.items() if k.startswith(METRIC_DRIFT_STD_RATIO_PREFIX)}
    assert set(per_feature) == {f"{METRIC_DRIFT_STD_RATIO_PREFIX}{name}" for name in iris_frame.columns}
    assert per_feature[f"{METRIC_DRIFT_STD_RATIO_PREFIX}{column}"] == pytest.approx(feature["std_ratio"], abs=1e-6)
    assert metrics.metadata[METRIC_DRIFT_DETECTED] == 1 and metrics.metadata[METRIC_DRIFT_MIN_SPREAD_PVALUE] < 0.01
    assert "std ratio" in Path(html.path).read_text()
