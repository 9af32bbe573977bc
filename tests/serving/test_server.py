"""The real server on an ephemeral port: the whole contract over HTTP, V1/V2 agreement, concurrency, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import numpy as np
import pytest
from conftest import Served
from serving_cases import CASES, FEATURES, GOOD_ROW, MAX_BODY_BYTES, Case

from components.constants import (
    METRIC_MODEL_INFO,
    METRIC_PREDICTIONS,
    METRIC_REJECTED,
    MODEL_CARD_FILENAME,
    MODEL_FILENAME,
    ONNX_FILENAME,
    PROBA_PARAMETER,
)


def post(url: str, body: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(url, content=body, headers=headers, timeout=30)


def assert_json_error(reply: httpx.Response, status: int, says: str = "") -> None:
    assert reply.status_code == status, reply.text[:300]
    assert reply.headers["content-type"].startswith("application/json")
    message = reply.json()["error"]
    assert says.lower() in message.lower()
    assert len(message) < 300 and "Traceback" not in message


# --- the contract, case by case ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_client_mistakes_get_a_short_json_4xx(onnx_served: Served, case: Case) -> None:
    reply = post(onnx_served.v2 if case.v2 else onnx_served.v1, case.body, case.content_type)
    assert_json_error(reply, case.status, case.says)


def test_body_over_the_limit_is_413(onnx_served: Served) -> None:
    body = json.dumps({"instances": [GOOD_ROW] * 2000}).encode()
    assert len(body) > MAX_BODY_BYTES
    assert_json_error(post(onnx_served.v1, body), 413, "limit")


def test_chunked_body_over_the_limit_is_413(onnx_served: Served) -> None:
    chunk = json.dumps([GOOD_ROW] * 100).encode()

    def stream():
        yield b'{"instances": ['
        for _ in range(20):
            yield chunk[1:-1] + b","
        yield chunk[1:-1] + b"]}"

    reply = httpx.post(onnx_served.v1, content=stream(), headers={"content-type": "application/json"}, timeout=30)
    assert_json_error(reply, 413, "limit")


def test_chunked_body_under_the_limit_is_served(onnx_served: Served) -> None:
    def stream():
        yield b'{"instances": '
        yield json.dumps([GOOD_ROW]).encode() + b"}"

    reply = httpx.post(onnx_served.v1, content=stream(), headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == 200 and reply.json() == {"predictions": [0]}


@pytest.mark.parametrize("path", ["/v1/models/nope:predict", "/v2/models/nope/infer"], ids=["v1-predict", "v2-infer"])
def test_unknown_model_is_404(onnx_served: Served, path: str) -> None:
    body = json.dumps({"instances": [GOOD_ROW]}).encode()
    assert_json_error(post(onnx_served.server.url + path, body), 404, "nope")


def test_unknown_model_status_and_metadata_are_404(onnx_served: Served) -> None:
    for path in ("/v1/models/nope", "/v2/models/nope", "/v2/models/nope/ready"):
        assert_json_error(httpx.get(onnx_served.server.url + path), 404, "nope")


def test_unknown_route_is_json_404(onnx_served: Served) -> None:
    assert_json_error(httpx.get(onnx_served.server.url + "/predict"), 404)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_on_inference_routes_is_405(onnx_served: Served, method: str) -> None:
    for url in (onnx_served.v1, onnx_served.v2):
        reply = httpx.request(method, url)
        assert_json_error(reply, 405)
        assert "POST" in reply.headers["allow"]


# --- health, metadata, metrics ----------------------------------------------------------------------------


def test_health_and_readiness(onnx_served: Served) -> None:
    url = onnx_served.server.url
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v1/models/iris").json() == {"name": "iris", "ready": True}
    assert httpx.get(f"{url}/v2/models/iris/ready").json() == {"name": "iris", "ready": True}


def test_v2_metadata_comes_from_the_model_card(onnx_served: Served) -> None:
    meta = httpx.get(f"{onnx_served.server.url}/v2/models/iris").json()

    assert [i["name"] for i in meta["inputs"]] == onnx_served.card.feature_names == FEATURES
    assert {(i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {("FP64", (-1,))}
    assert meta["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [-1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(onnx_served.card.class_names)]},
    ]


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_predictions_per_class_rejections_by_reason_and_name_the_model(onnx_served: Served) -> None:
    url = onnx_served.server.url
    before = httpx.get(f"{url}/metrics").text
    rows = [GOOD_ROW, GOOD_ROW, [6.7, 3.0, 5.2, 2.3]]
    assert post(onnx_served.v1, json.dumps({"instances": rows}).encode()).status_code == 200
    assert post(onnx_served.v1, b"{}", "application/json").status_code == 400
    assert post(onnx_served.v1, b"{}", "text/plain").status_code == 415
    after = httpx.get(f"{url}/metrics").text

    def delta(name: str, **labels: str) -> float:
        return _metric(after, name, **labels) - _metric(before, name, **labels)

    assert delta(METRIC_PREDICTIONS, model_name="iris", predicted_class="0") == 2
    assert delta(METRIC_PREDICTIONS, model_name="iris", predicted_class="2") == 1
    assert delta(METRIC_REJECTED, model_name="iris", reason="bad_instances") == 1
    assert delta(METRIC_REJECTED, model_name="iris", reason="content_type") == 1
    info = _metric(after, METRIC_MODEL_INFO, model_sha256=onnx_served.card.model_sha256, backend="onnx")
    assert info == 1
    assert re.search(r"^request_predict_seconds_count\{model_name=\"iris\"\} \d", after, re.MULTILINE)


# --- predictions --------------------------------------------------------------------------------------------


def _v1(served: Served, rows: list, **parameters: object) -> list:
    body = {"instances": rows, **({"parameters": parameters} if parameters else {})}
    reply = post(served.v1, json.dumps(body).encode())
    assert reply.status_code == 200, reply.text
    return reply.json()["predictions"]


def _v2(served: Served, inputs: list, outputs: list[str] | None = None) -> dict:
    body: dict = {"inputs": inputs, "id": "req-1"}
    if outputs:
        body["outputs"] = [{"name": name} for name in outputs]
    reply = post(served.v2, json.dumps(body).encode())
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["model_name"] == served.name and answer["id"] == "req-1"
    return {o["name"]: o for o in answer["outputs"]}


def test_v1_and_v2_agree_with_each_other_and_with_sklearn(onnx_served: Served, iris_rows: np.ndarray) -> None:
    # The shared server caps requests at 50 rows; rows 40..89 span two classes and a decision boundary.
    rows = iris_rows[40:90]
    expected = onnx_served.estimator.predict(rows).tolist()
    assert len(set(expected)) > 1
    objects = [dict(zip(FEATURES, r, strict=True)) for r in rows.tolist()]
    columns = [
        {"name": name, "shape": [len(rows)], "datatype": "FP64", "data": rows[:, j].tolist()}
        for j, name in enumerate(FEATURES)
    ]
    matrix = [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]

    assert _v1(onnx_served, rows.tolist()) == expected
    assert _v1(onnx_served, objects) == expected
    assert _v2(onnx_served, columns)["predict"]["data"] == expected
    assert _v2(onnx_served, matrix)["predict"]["data"] == expected


def test_probabilities_on_request_in_v1_and_v2(onnx_served: Served, iris_rows: np.ndarray) -> None:
    rows = iris_rows[::5]
    expected = onnx_served.estimator.predict_proba(rows)

    v1 = np.array(_v1(onnx_served, rows.tolist(), **{PROBA_PARAMETER: True}))
    v2 = _v2(
        onnx_served,
        [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
        outputs=["predict", "predict_proba"],
    )

    np.testing.assert_allclose(v1, expected, atol=1e-9)
    proba = v2["predict_proba"]
    assert proba["shape"] == list(expected.shape)
    np.testing.assert_allclose(np.reshape(proba["data"], proba["shape"]), expected, atol=1e-9)
    assert v2["predict"]["data"] == onnx_served.estimator.predict(rows).tolist()
    # Labels are the default answer.
    assert _v1(onnx_served, rows.tolist()) == onnx_served.estimator.predict(rows).tolist()


def test_200_concurrent_requests_are_all_answered_correctly(onnx_served: Served, iris_rows: np.ndarray) -> None:
    rows = np.concatenate([iris_rows, iris_rows[:50]])
    expected = onnx_served.estimator.predict(rows).tolist()

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            calls = [client.post(onnx_served.v1, json={"instances": [row]}) for row in rows.tolist()]
            return await asyncio.gather(*calls)

    replies = asyncio.run(fire())

    assert len(replies) == 200
    assert [r.status_code for r in replies] == [200] * 200
    assert [r.json()["predictions"][0] for r in replies] == expected


def test_content_type_with_charset_is_accepted(onnx_served: Served) -> None:
    body = json.dumps({"instances": [GOOD_ROW]}).encode()
    assert post(onnx_served.v1, body, "application/json; charset=utf-8").json() == {"predictions": [0]}


def test_server_wrote_nothing_into_the_model_dir(onnx_served: Served) -> None:
    assert sorted(p.name for p in onnx_served.model_dir.iterdir()) == sorted(
        [MODEL_FILENAME, MODEL_CARD_FILENAME, ONNX_FILENAME]
    )


# --- joblib fallback, probabilities on by default -----------------------------------------------------------


def test_joblib_fallback_serves_sklearn_exactly(joblib_served: Served, iris_rows: np.ndarray) -> None:
    estimator = joblib_served.estimator
    rows = iris_rows.tolist()

    labels = _v1(joblib_served, rows, **{PROBA_PARAMETER: False})
    proba = _v1(joblib_served, rows)  # the server was started with --return_probabilities=true

    assert labels == estimator.predict(iris_rows).tolist()
    np.testing.assert_array_equal(np.array(proba), estimator.predict_proba(iris_rows))
    metrics = httpx.get(f"{joblib_served.server.url}/metrics").text
    assert _metric(metrics, METRIC_MODEL_INFO, model_sha256=joblib_served.card.model_sha256, backend="joblib") == 1


def test_joblib_fallback_rejects_like_the_fast_path(joblib_served: Served) -> None:
    assert_json_error(post(joblib_served.v1, json.dumps({"instances": [[1, 2, "x", 4]]}).encode()), 400, "string")


def test_access_log_is_off_by_default_and_on_when_asked(onnx_served: Served, joblib_served: Served) -> None:
    for served in (onnx_served, joblib_served):
        assert post(served.v1, json.dumps({"instances": [GOOD_ROW]}).encode()).status_code == 200
    request_line = re.compile(r'"POST /v1/models/iris(:|%3A)predict HTTP/1\.1" 200')

    deadline = time.monotonic() + 5
    while not request_line.search(joblib_served.server.output()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the log line is flushed by another process

    assert request_line.search(joblib_served.server.output())  # started with --access_log=true
    assert not request_line.search(onnx_served.server.output())
