"""`pipeline.py monitor` over a typed payload log: one real kfp.local run of the monitoring pipeline for a regression
model on mixed features, the new signals in the report JSON, the HTML page and the KFP Metrics, and the new
thresholds flowing from the command line into the check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.constants import (
    DRIFT_STATUS_DRIFT,
    METRIC_DRIFT_DETECTED,
    METRIC_DRIFT_MAX_UNSEEN_SHARE,
    METRIC_DRIFT_MISSING_RATE_PREFIX,
    METRIC_DRIFT_PREDICTION_DRIFTED,
    METRIC_DRIFT_UNSEEN_SHARE_PREFIX,
)
from components.features import Feature, FeatureSchema, feature_matrix
from components.payload_log import PayloadLogWriter
from components.reference_profile import build_reference_profile, write_reference_profile
from tests.monitoring.monitoring_helpers import pipeline_cli

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*have no effect in the current local runner:UserWarning",
    "ignore:You may be attemping to run a task that uses custom or non-Python base image:RuntimeWarning",
)

MODEL = "house-prices"
SCHEMA = FeatureSchema(
    task="regression",
    task_reason="given",
    label_column="price",
    features=[
        Feature(name="city", kind="categorical", categories=["Lyon", "Oslo", "Rome"]),
        Feature(name="rooms", kind="numeric", nullable=True),
    ],
)


def houses(rng: np.random.Generator, rows: int, *, cities: list[str], rooms_missing: float) -> pd.DataFrame:
    rooms = rng.normal(3, 1, rows)
    rooms[rng.random(rows) < rooms_missing] = np.nan
    return pd.DataFrame({"city": rng.choice(cities, rows), "rooms": rooms})


@pytest.mark.slow
def test_monitor_over_a_typed_log_reports_unseen_categories_missing_values_and_prediction_drift(
    tmp_path: Path, capsys
) -> None:
    # given: a regression model's profile (3 cities, 2% of rooms missing, predictions around 200)
    rng = np.random.default_rng(11)
    train = houses(rng, 1000, cities=["Lyon", "Oslo", "Rome"], rooms_missing=0.02)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    write_reference_profile(model_dir, build_reference_profile(train, SCHEMA, rng.normal(200, 30, 1000)))
    # and a typed log as the server writes it: a new city in ~6% of rows, rooms missing 30%, predictions 40 higher
    window = houses(rng, 400, cities=["Lyon", "Oslo", "Rome", "Kyiv"], rooms_missing=0.3)
    window.loc[window.index[:300], "city"] = rng.choice(["Lyon", "Oslo", "Rome"], 300)  # Kyiv in ~1/16 of rows
    with PayloadLogWriter(tmp_path / "logs", model_name=MODEL, model_sha256="0" * 64, features=SCHEMA.features) as w:
        x = feature_matrix(window, SCHEMA)
        for start in range(0, len(x), 50):
            w.record(x[start : start + 50], rng.normal(240, 30, len(x[start : start + 50])))
    root = tmp_path / "root"

    # when: `pipeline.py monitor` runs the monitoring pipeline under kfp.local, with the unseen threshold lowered
    argv = ["monitor", "--log-dir", str(tmp_path / "logs"), "--model-dir", str(model_dir), "--model-name", MODEL,
            "--pipeline-root", str(root), "--on-drift", "report", "--unseen-threshold", "0.02",
            "--missing-rate-threshold", "0.1"]  # fmt: skip
    assert pipeline_cli().main(argv) == 0

    # then: each signal fired for its feature and is said in the step's output, the JSON, the page and the metrics
    out = capsys.readouterr().out
    assert (
        "drift: drift in 2 of 2 features: city [unseen], rooms [missing]; the predictions drifted [distribution]" in out
    )
    (path,) = root.glob("*/check-drift/drift_report/drift_report.json")
    report = json.loads(path.read_text())
    assert report["status"] == DRIFT_STATUS_DRIFT and report["unseen_threshold"] == 0.02
    city, rooms = report["features"]
    assert city["unseen_categories"][0]["category"] == "Kyiv" and 0.02 <= city["unseen_share"] < 0.15
    assert rooms["missing_rate_window"] == pytest.approx(0.3, abs=0.06) and rooms["reasons"] == ["missing"]
    assert report["prediction"]["reasons"] == ["distribution"] and report["prediction_drifted"] is True
    (html,) = root.glob("*/check-drift/report_html")
    assert "What to do" in html.read_text() and "new: Kyiv" in html.read_text()
    (executor_output,) = root.glob("*/check-drift/executor_output.json")  # where kfp.local records Metrics
    (artifact,) = json.loads(executor_output.read_text())["artifacts"]["metrics"]["artifacts"]
    metrics = artifact["metadata"]
    assert metrics[METRIC_DRIFT_DETECTED] == 1 and metrics[METRIC_DRIFT_PREDICTION_DRIFTED] == 1
    assert metrics[f"{METRIC_DRIFT_UNSEEN_SHARE_PREFIX}city"] == pytest.approx(city["unseen_share"], abs=1e-6)
    assert metrics[METRIC_DRIFT_MAX_UNSEEN_SHARE] == pytest.approx(city["unseen_share"], abs=1e-6)
    assert metrics[f"{METRIC_DRIFT_MISSING_RATE_PREFIX}rooms"] == pytest.approx(rooms["missing_rate_window"], abs=1e-6)
    assert f"{METRIC_DRIFT_MISSING_RATE_PREFIX}city" not in metrics  # nothing missing on either side: no metric
