"""Reading KServe's built-in blob logger output (format json) as payload-log records."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from components.constants import (
    CE_TYPE_INFERENCE_REQUEST,
    CE_TYPE_INFERENCE_RESPONSE,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_SOURCE,
    PAYLOAD_SOURCE_KSERVE_BLOB,
)
from components.monitoring.drift import detect_drift
from components.monitoring.kserve_blob import kserve_blob_logger_spec, read_kserve_blob_window
from components.reference_profile import build_reference_profile
from tests.monitoring.monitoring_helpers import log_request

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


def write_object(root: Path, name: str, content: object, mtime: datetime | None = None) -> Path:
    path = root / "kserve-models" / "sklearn-iris" / "predictor" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    if mtime is not None:
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
    return path


def test_requests_and_responses_from_different_objects_are_paired(tmp_path: Path) -> None:
    when = "2026-11-27T09:00:00.123456789Z"
    batch = [
        log_request("a", CE_TYPE_INFERENCE_REQUEST, {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}, when),
        log_request("b", CE_TYPE_INFERENCE_REQUEST, {"instances": [[5.9, 3.0, 4.2, 1.5]]}, when),
        log_request("a", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [0, 2]}, when),
        log_request("x", CE_TYPE_INFERENCE_REQUEST, {"instances": [[1.0, 1.0, 1.0, 1.0]]}, when),  # answered 4xx
    ]
    write_object(tmp_path, "a-request.json", batch)
    # a single-record batch is one object, not a list (kserve's json marshaller)
    write_object(tmp_path, "b-response.json", log_request("b", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [1]}, when))
    frame = read_kserve_blob_window(tmp_path, feature_names=FEATURES, model_name="sklearn-iris", start=None, end=None)
    assert frame[PAYLOAD_COLUMN_REQUEST_ID].tolist() == ["a", "a", "b"]
    assert frame[PAYLOAD_COLUMN_PREDICTION].tolist() == ["0", "2", "1"]
    assert frame[FEATURES].to_numpy().tolist() == [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    assert (frame[PAYLOAD_COLUMN_SOURCE] == PAYLOAD_SOURCE_KSERVE_BLOB).all()
    assert (frame[PAYLOAD_COLUMN_MODEL_SHA256] == "ab" * 32).all()
    assert frame.attrs["skipped"] == 1  # the unanswered request
    assert str(frame["timestamp"].iloc[0]) == "2026-11-27 09:00:00.123456+00:00"


def test_window_uses_event_times_and_skips_objects_older_than_the_window(tmp_path: Path, iris_frame) -> None:
    old, new = "2026-11-20T12:00:00Z", "2026-11-27T12:00:00Z"
    records = []
    for i, row in enumerate(iris_frame.to_numpy().tolist()):
        when = old if i < 50 else new
        records.append(log_request(f"r{i}", CE_TYPE_INFERENCE_REQUEST, {"instances": [row]}, when))
        records.append(log_request(f"r{i}", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [0]}, when))
    write_object(tmp_path, "old-request.json", records[:100], mtime=datetime(2026, 11, 20, 12, 5, tzinfo=UTC))
    write_object(tmp_path, "new-request.json", records[100:], mtime=datetime(2026, 11, 27, 12, 5, tzinfo=UTC))
    start, end = datetime(2026, 11, 27, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)
    frame = read_kserve_blob_window(tmp_path, feature_names=FEATURES, model_name="sklearn-iris", start=start, end=end)
    assert len(frame) == 100 and frame.attrs["skipped"] == 0
    # the records read this way feed the drift check like any other log
    assert list(iris_frame.columns) == FEATURES
    report = detect_drift(build_reference_profile(iris_frame), frame, min_records=50)
    assert report.records == 100
    with pytest.raises(FileNotFoundError):
        read_kserve_blob_window(tmp_path / "nothing", feature_names=FEATURES, model_name=None, start=None, end=None)


def test_blob_logger_spec_validates_against_the_kserve_crd(shared_schemas: Path) -> None:
    import jsonschema

    crd = json.loads((shared_schemas / "kserve-inferenceservice-v1beta1.json").read_text())
    schema = crd["properties"]["spec"]["properties"]["predictor"]["properties"]["logger"]
    spec = kserve_blob_logger_spec("s3://mlpipeline/kserve-logs", service_account="kfp-model-reader")
    jsonschema.validate(spec, schema)
    assert spec["storage"]["parameters"] == {"type": "s3", "format": "json"}
    assert spec["batchSize"] == 100 and spec["batchInterval"] == "60s"
    with pytest.raises(ValueError, match="s3://"):
        kserve_blob_logger_spec("http://sink", service_account="sa")


def test_a_typed_model_s_blob_records_keep_category_texts_and_skip_bad_numbers(tmp_path: Path) -> None:
    # given: blob-logger records of a model with a categorical 'city' (rows as objects, a null, a bad number)
    when = "2026-11-27T10:15:30.123456789Z"
    records = [
        log_request("a", CE_TYPE_INFERENCE_REQUEST, {"instances": [{"city": "Lyon", "rooms": 3}, {"city": None,
                                                                                                 "rooms": 2}]}, when),
        log_request("a", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [200.0, 150.0]}, when),
        log_request("b", CE_TYPE_INFERENCE_REQUEST, {"instances": [["Oslo", "many"]]}, when),
        log_request("b", CE_TYPE_INFERENCE_RESPONSE, {"predictions": [1.0]}, when),
    ]  # fmt: skip
    write_object(tmp_path, "sklearn-iris/records.json", records)
    # when: read with the profile's kinds, then: 'city' as text (null kept), the bad record skipped and counted
    window = read_kserve_blob_window(tmp_path, feature_names=["city", "rooms"], model_name="sklearn-iris", start=None,
                                     end=None, categorical=["city"])  # fmt: skip
    assert window["city"].tolist() == ["Lyon", None] and window["rooms"].tolist() == [3.0, 2.0]
    assert window.attrs["skipped"] == 1
