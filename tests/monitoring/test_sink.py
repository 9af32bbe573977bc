"""The KServe logger sink: real-shaped CloudEvents in, the local server's Parquet records out."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from components.constants import (
    CE_TYPE_INFERENCE_REQUEST,
    CE_TYPE_INFERENCE_RESPONSE,
    MODEL_SHA256_ANNOTATION,
    PAYLOAD_COLUMN_MODEL_SHA256,
    PAYLOAD_COLUMN_PREDICTION,
    PAYLOAD_COLUMN_REQUEST_ID,
    PAYLOAD_COLUMN_SOURCE,
    PAYLOAD_COLUMN_TIMESTAMP,
    PAYLOAD_SOURCE_KSERVE_LOGGER,
)
from components.features import Feature
from components.monitoring.payload_reader import read_payload_window
from components.monitoring.sink import (
    CloudEventError,
    PayloadEventSink,
    build_app,
    decode_cloudevent,
    parse_feature_names,
    parse_features,
)
from components.payload_log import PayloadLogWriter, logger_spec

with warnings.catch_warnings():
    # starlette asks for httpx2 in its test client; the project pins httpx, which works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
SHA = "f" * 64


def kserve_headers(event_id: str, kind: str, *, time: str = "2026-11-27T10:15:30.123456789Z") -> dict[str, str]:
    """Headers as kserve's agent sends them: cloudevents sdk-go, binary content mode (pkg/logger/worker.go)."""
    return {
        "Ce-Id": event_id,
        "Ce-Source": "http://sklearn-iris-predictor-00001-deployment-5d8f9c-abcde/",
        "Ce-Specversion": "1.0",
        "Ce-Type": kind,
        "Ce-Time": time,
        "Ce-Inferenceservicename": "sklearn-iris",
        "Ce-Namespace": "kserve-models",
        "Ce-Component": "predictor",
        "Ce-Endpoint": "default",
        "Ce-Metadata": "{}",
        "Ce-Recordedtime": "2026-11-27T10:15:30.2Z",
        "Ce-Annotations": json.dumps({MODEL_SHA256_ANNOTATION: SHA}),
        "Content-Type": "application/json",
    }


def request_body(rows: list[list[float]]) -> bytes:
    return json.dumps({"instances": rows}).encode()


def response_body(predictions: list) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


@pytest.fixture
def sink(tmp_path: Path):
    def factory(model_name: str, model_sha256: str) -> PayloadLogWriter:
        return PayloadLogWriter(
            tmp_path,
            model_name=model_name,
            model_sha256=model_sha256,
            feature_names=FEATURES,
            batch_size=100,
            flush_interval_s=60,
            source=PAYLOAD_SOURCE_KSERVE_LOGGER,
        )

    return PayloadEventSink(factory, pairing_ttl_s=30)


def test_request_and_response_are_paired_into_records_in_either_order(sink, tmp_path: Path) -> None:
    with TestClient(build_app(sink)) as client:
        # request first
        rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
        assert client.post("/", content=request_body(rows), headers=kserve_headers("a", CE_TYPE_INFERENCE_REQUEST))
        assert client.post("/", content=response_body([0, 2]), headers=kserve_headers("a", CE_TYPE_INFERENCE_RESPONSE))
        # response first: the agent's workers send concurrently, order is not guaranteed
        client.post("/", content=response_body([1]), headers=kserve_headers("b", CE_TYPE_INFERENCE_RESPONSE))
        client.post(
            "/", content=request_body([[5.9, 3.0, 4.2, 1.5]]), headers=kserve_headers("b", CE_TYPE_INFERENCE_REQUEST)
        )
        stats = client.get("/stats").json()
    # leaving the client runs the app's shutdown, which flushes the writers
    assert stats["records"] == 3 and stats["events"] == 4
    frame = read_payload_window(tmp_path, model_name="sklearn-iris", start=None, end=None)
    assert frame[PAYLOAD_COLUMN_REQUEST_ID].tolist() == ["a", "a", "b"]
    assert frame[PAYLOAD_COLUMN_PREDICTION].tolist() == ["0", "2", "1"]
    assert frame[FEATURES].to_numpy().tolist() == [*rows, [5.9, 3.0, 4.2, 1.5]]
    assert (frame[PAYLOAD_COLUMN_MODEL_SHA256] == SHA).all()
    assert (frame[PAYLOAD_COLUMN_SOURCE] == PAYLOAD_SOURCE_KSERVE_LOGGER).all()
    assert str(frame[PAYLOAD_COLUMN_TIMESTAMP].iloc[0]) == "2026-11-27 10:15:30.123456+00:00"


def test_a_request_without_response_is_counted_not_logged(sink, tmp_path: Path) -> None:
    # KServe sends no response event when the model answered 400/500: such requests are not traffic to learn from
    sink.handle(kserve_headers("bad", CE_TYPE_INFERENCE_REQUEST), request_body([[1.0, 2.0, 3.0, 4.0]]))
    sink.close()
    assert sink.stats.unanswered_requests == 1 and sink.stats.records == 0
    assert read_payload_window(tmp_path, model_name="sklearn-iris", start=None, end=None).empty


def test_expired_halves_are_dropped(tmp_path: Path) -> None:
    sink = PayloadEventSink(lambda n, s: PayloadLogWriter(tmp_path, model_name=n, model_sha256=s,
                                                          feature_names=FEATURES), pairing_ttl_s=0.0)  # fmt: skip
    sink.handle(kserve_headers("late", CE_TYPE_INFERENCE_REQUEST), request_body([[1.0, 2.0, 3.0, 4.0]]))
    sink.expire()
    sink.handle(kserve_headers("late", CE_TYPE_INFERENCE_RESPONSE), response_body([0]))
    sink.expire()
    sink.close()
    assert sink.stats.unanswered_requests == 1 and sink.stats.orphan_responses == 1 and sink.stats.records == 0


def test_v2_payloads_and_structured_mode(sink, tmp_path: Path) -> None:
    v2_request = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64",
                              "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}  # fmt: skip
    structured = {
        "specversion": "1.0", "id": "v2", "type": CE_TYPE_INFERENCE_REQUEST, "source": "test",
        "time": "2026-11-27T10:00:00Z", "inferenceservicename": "sklearn-iris", "data": v2_request,
    }  # fmt: skip
    sink.handle({"content-type": "application/cloudevents+json"}, json.dumps(structured).encode())
    v2_response = {"outputs": [{"name": "output-0", "shape": [2], "datatype": "INT64", "data": [0, 2]}]}
    sink.handle(kserve_headers("v2", CE_TYPE_INFERENCE_RESPONSE), json.dumps(v2_response).encode())
    sink.close()
    frame = read_payload_window(tmp_path, model_name="sklearn-iris", start=None, end=None)
    assert frame[FEATURES].to_numpy().tolist() == [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    assert frame[PAYLOAD_COLUMN_PREDICTION].tolist() == ["0", "2"]
    assert (frame[PAYLOAD_COLUMN_MODEL_SHA256] == "").all()  # no annotation on that event, no default


def test_request_only_mode_logs_inputs_without_predictions(tmp_path: Path) -> None:
    sink = PayloadEventSink(lambda n, s: PayloadLogWriter(tmp_path, model_name=n, model_sha256=s,
                                                          feature_names=FEATURES), mode="request")  # fmt: skip
    sink.handle(kserve_headers("r", CE_TYPE_INFERENCE_REQUEST), request_body([[1.0, 2.0, 3.0, 4.0]]))
    sink.close()
    frame = read_payload_window(tmp_path, model_name="sklearn-iris", start=None, end=None)
    assert len(frame) == 1 and frame[PAYLOAD_COLUMN_PREDICTION].isna().all()


def test_malformed_events_get_400_and_are_counted(sink) -> None:
    with TestClient(build_app(sink)) as client:
        no_ce = client.post("/", content=b"{}", headers={"content-type": "application/json"})
        wrong_type = client.post("/", content=b"{}", headers={**kserve_headers("x", "com.example.other")})
        not_json = client.post("/", content=b"\xff\xfe", headers=kserve_headers("y", CE_TYPE_INFERENCE_REQUEST))
        no_instances = client.post("/", content=b'{"rows": []}', headers=kserve_headers("z", CE_TYPE_INFERENCE_REQUEST))
        health = client.get("/healthz")
    for response in (no_ce, wrong_type, not_json, no_instances):
        assert response.status_code == 400 and response.json()["error"]
    assert health.status_code == 200
    assert sink.stats.rejected_events == 4 and sink.stats.records == 0


def test_decode_keeps_nanosecond_times_and_annotations() -> None:
    event = decode_cloudevent(kserve_headers("n", CE_TYPE_INFERENCE_REQUEST), request_body([[1, 2, 3, 4]]))
    assert event.inference_service == "sklearn-iris" and event.namespace == "kserve-models"
    assert event.time.isoformat() == "2026-11-27T10:15:30.123456+00:00"
    assert event.annotations == {MODEL_SHA256_ANNOTATION: SHA}
    with pytest.raises(CloudEventError, match="RFC 3339"):
        decode_cloudevent(kserve_headers("n", CE_TYPE_INFERENCE_REQUEST, time="yesterday"), b"{}")


def test_logger_spec_validates_against_the_kserve_crd(shared_schemas: Path) -> None:
    import jsonschema

    crd = json.loads((shared_schemas / "kserve-inferenceservice-v1beta1.json").read_text())
    schema = crd["properties"]["spec"]["properties"]["predictor"]["properties"]["logger"]
    spec = logger_spec("http://payload-logger.kserve-models.svc.cluster.local")
    jsonschema.validate(spec, schema)
    assert spec == {"url": "http://payload-logger.kserve-models.svc.cluster.local", "mode": "all",
                    "metadataAnnotations": [MODEL_SHA256_ANNOTATION]}  # fmt: skip
    jsonschema.validate(logger_spec("http://sink", "request", metadata_annotations=()), schema)
    with pytest.raises(ValueError, match="response"):
        logger_spec("http://sink", "response")
    with pytest.raises(ValueError, match="http"):
        logger_spec("s3://bucket/logs")


def test_feature_names_argument_forms() -> None:
    assert parse_feature_names('["a (cm)", "b"]') == ["a (cm)", "b"]
    assert parse_feature_names("a, b ,c") == ["a", "b", "c"]


def test_the_sha256_annotation_is_the_one_deploy_writes() -> None:
    # deploy annotates the InferenceService with the model's sha256; logger.metadataAnnotations copies that key
    from components.deploy.inference_service import LINEAGE_MODEL_SHA256

    assert LINEAGE_MODEL_SHA256 == MODEL_SHA256_ANNOTATION
    assert MODEL_SHA256_ANNOTATION in logger_spec("http://sink")["metadataAnnotations"]


def test_oversized_events_get_413(sink) -> None:
    with TestClient(build_app(sink, max_body_bytes=100)) as client:
        big = request_body([[1.0, 2.0, 3.0, 4.0]] * 20)
        response = client.post("/", content=big, headers=kserve_headers("big", CE_TYPE_INFERENCE_REQUEST))
    assert response.status_code == 413 and sink.stats.events == 0


def test_typed_requests_as_objects_and_per_feature_v2_inputs_are_logged_with_string_categories(
    tmp_path: Path,
) -> None:
    # given: a sink for a model with a categorical feature, configured from the card's features as the CLI does
    features = parse_features(json.dumps([
        {"name": "city", "kind": "categorical", "categories": ["Lyon", "Oslo"], "nullable": True},
        {"name": "rooms", "kind": "numeric", "nullable": True},
    ]))  # fmt: skip
    assert features == [Feature(name="city", kind="categorical", categories=["Lyon", "Oslo"], nullable=True),
                        Feature(name="rooms", kind="numeric", nullable=True)]  # fmt: skip

    def factory(model_name: str, model_sha256: str) -> PayloadLogWriter:
        return PayloadLogWriter(tmp_path, model_name=model_name, model_sha256=model_sha256, features=features)

    sink = PayloadEventSink(factory, feature_names=["city", "rooms"], categorical=["city"])
    # when: a V1 request with rows as objects (a null, an unseen city) and a V2 request with one input per feature
    v1 = {"instances": [{"city": "Lyon", "rooms": 3}, {"city": "Kyiv", "rooms": None}, {"rooms": 2.5}]}
    v2 = {"inputs": [{"name": "rooms", "datatype": "FP64", "shape": [2], "data": [4.0, 1.0]},
                     {"name": "city", "datatype": "BYTES", "shape": [2, 1], "data": [["Oslo"], ["Lyon"]]}]}  # fmt: skip
    for event_id, request, predictions in (("a", v1, [210.0, 180.5, 99.0]), ("b", v2, [250.0, 120.0])):
        sink.handle(kserve_headers(event_id, CE_TYPE_INFERENCE_REQUEST), json.dumps(request).encode())
        sink.handle(kserve_headers(event_id, CE_TYPE_INFERENCE_RESPONSE), response_body(predictions))
    sink.close()
    # then: the log has the categories as strings, nulls as nulls, numbers as numbers, in the features' order
    frame = read_payload_window(tmp_path, model_name="sklearn-iris", start=None, end=None)
    assert frame["city"].tolist() == ["Lyon", "Kyiv", None, "Oslo", "Lyon"]
    assert frame["rooms"].fillna(-1).tolist() == [3.0, -1, 2.5, 4.0, 1.0]
    assert frame[PAYLOAD_COLUMN_PREDICTION].astype(float).tolist() == [210.0, 180.5, 99.0, 250.0, 120.0]
    assert sink.stats.records == 5 and sink.stats.mismatched_pairs == 0


def test_a_numeric_feature_sent_as_text_is_skipped_and_objects_need_the_feature_names(tmp_path: Path) -> None:
    def factory(model_name: str, model_sha256: str) -> PayloadLogWriter:
        return PayloadLogWriter(tmp_path, model_name=model_name, model_sha256=model_sha256,
                                features=parse_features('[{"name": "city", "kind": "categorical"},'
                                                        ' {"name": "rooms", "kind": "numeric"}]'))  # fmt: skip

    sink = PayloadEventSink(factory, feature_names=["city", "rooms"], categorical=["city"])
    sink.handle(kserve_headers("x", CE_TYPE_INFERENCE_REQUEST), request_body([["Lyon", "three"]]))
    sink.handle(kserve_headers("x", CE_TYPE_INFERENCE_RESPONSE), response_body([1.0]))
    sink.close()
    assert sink.stats.records == 0 and sink.stats.mismatched_pairs == 1
    untyped = PayloadEventSink(factory)
    with pytest.raises(CloudEventError, match="--features"):
        untyped.handle(kserve_headers("y", CE_TYPE_INFERENCE_REQUEST), json.dumps({"instances": [{"a": 1}]}).encode())
    with pytest.raises(ValueError, match="model card's features"):
        parse_features('[{"name": "x", "kind": "text"}]')
