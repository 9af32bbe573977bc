"""The drift policy and the retraining request: act only on drift, exactly as the parameter says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.constants import (
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    ON_DRIFT_ACTIONS,
    RETRAIN_REQUEST_FILENAME,
)
from components.monitoring.retrain import (
    ACTION_NONE,
    RetrainTriggerError,
    decide_on_drift,
    new_retrain_request,
    read_retrain_request,
    trigger_retraining,
    write_retrain_request,
)

pytestmark = pytest.mark.filterwarnings("ignore:This client only works with Kubeflow Pipeline:FutureWarning")


@pytest.mark.parametrize("on_drift", ON_DRIFT_ACTIONS)
def test_only_drift_leads_to_an_action(on_drift: str) -> None:
    assert decide_on_drift(DRIFT_STATUS_DRIFT, on_drift) == on_drift
    assert decide_on_drift(DRIFT_STATUS_OK, on_drift) == ACTION_NONE
    assert decide_on_drift(DRIFT_STATUS_NOT_ENOUGH_DATA, on_drift) == ACTION_NONE


def test_unknown_policy_or_status_is_refused() -> None:
    with pytest.raises(ValueError, match="on_drift"):
        decide_on_drift(DRIFT_STATUS_DRIFT, "page-someone")
    with pytest.raises(ValueError, match="status"):
        decide_on_drift("maybe", "retrain")


def test_retrain_request_round_trip_and_replacement(tmp_path: Path) -> None:
    assert read_retrain_request(tmp_path) is None
    report = {"message": "drift in 1 of 4 features: a", "drifted_features": ["a"]}
    first = new_retrain_request(model_name="iris", model_uri="s3://models/iris/1", report=report)
    write_retrain_request(tmp_path, first)
    assert read_retrain_request(tmp_path) == first
    second = new_retrain_request(model_name="iris", model_uri="s3://models/iris/2", report=report)
    write_retrain_request(tmp_path, second)
    assert read_retrain_request(tmp_path) == second
    assert [p.name for p in tmp_path.iterdir()] == [RETRAIN_REQUEST_FILENAME]  # no temp files left
    assert json.loads((tmp_path / RETRAIN_REQUEST_FILENAME).read_text())["drifted_features"] == ["a"]


def test_trigger_needs_an_endpoint_and_a_pipeline(tmp_path: Path) -> None:
    with pytest.raises(RetrainTriggerError, match="endpoint"):
        trigger_retraining(endpoint="", arguments={}, pipeline_id="p")
    with pytest.raises(RetrainTriggerError, match="pipeline_id"):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={})
    with pytest.raises(RetrainTriggerError, match="not found"):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={}, pipeline_package_path=str(tmp_path / "x.yaml"))


def test_unreachable_backend_gives_a_clear_error(tmp_path: Path) -> None:
    package = tmp_path / "pipeline.yaml"
    package.write_text("pipelineInfo: {name: training}\n")
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    with pytest.raises(RetrainTriggerError, match=r"could not start a training run on http://127\.0\.0\.1:9"):
        trigger_retraining(endpoint="http://127.0.0.1:9", arguments={"dataset": "iris"},
                           pipeline_package_path=str(package))  # fmt: skip
