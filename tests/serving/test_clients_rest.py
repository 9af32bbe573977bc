"""Real REST clients nobody here wrote, against the live server: tritonclient.http and KServe's InferenceRESTClient.

Every client's labels must equal what V1 answers for the same rows (and sklearn's own predict).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.servers import Served

MODEL = "iris"


@pytest.fixture(params=["onnx_served", "joblib_served"])
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    """The ONNX fast path (logistic regression) and the joblib path (random forest, probabilities by default)."""
    yield request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def rows(iris_rows: np.ndarray) -> np.ndarray:
    # 50 rows (the shared server's --max_rows) spanning all three classes.
    return iris_rows[::3]


def v1_labels(served: Served, rows: np.ndarray) -> list[int]:
    """What the plain V1 JSON route answers: the reference every client must match."""
    body = {"instances": rows.tolist(), "parameters": {"return_probabilities": False}}
    reply = httpx.post(served.v1, json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    labels = reply.json()["predictions"]
    assert labels == served.estimator.predict(rows).tolist()
    assert len(set(labels)) == 3
    return labels


def _host(served: Served) -> str:
    return served.server.url.removeprefix("http://")


# --- tritonclient.http ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64"])
def test_tritonclient_http_infer(served: Served, rows: np.ndarray, datatype: str, binary: bool) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import triton_to_np_dtype

    values = rows if datatype.startswith("FP") else np.rint(rows)
    values = values.astype(triton_to_np_dtype(datatype))
    expected = v1_labels(served, values.astype(np.float64))
    client = triton.InferenceServerClient(_host(served))
    try:
        tensor = triton.InferInput("input-0", list(values.shape), datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        outputs = [triton.InferRequestedOutput("predict", binary_data=binary)]

        result = client.infer(MODEL, [tensor], outputs=outputs)
    finally:
        client.close()

    assert result.as_numpy("predict").tolist() == expected


def test_tritonclient_http_default_calls(served: Served, rows: np.ndarray) -> None:
    """No outputs named: tritonclient asks for every output in binary, and sends no Content-Type."""
    import tritonclient.http as triton

    expected = v1_labels(served, rows)
    client = triton.InferenceServerClient(_host(served))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
        metadata = client.get_model_metadata(MODEL)
        version = metadata["versions"][0]
        assert client.is_model_ready(MODEL, model_version=version)
        assert not client.is_model_ready(MODEL, model_version="0")
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows)

        result = client.infer(MODEL, [tensor])
        versioned = client.infer(MODEL, [tensor], model_version=version)
    finally:
        client.close()

    assert [i["name"] for i in metadata["inputs"]] == served.card.feature_names
    assert metadata["platform"] == "sklearn"
    assert result.as_numpy("predict").tolist() == expected
    assert versioned.as_numpy("predict").tolist() == expected
    assert result.get_response()["model_version"] == version
    if result.as_numpy("predict_proba") is not None:  # the joblib server answers probabilities by default
        np.testing.assert_allclose(result.as_numpy("predict_proba"), served.estimator.predict_proba(rows))


def test_tritonclient_http_one_input_per_feature(served: Served, rows: np.ndarray) -> None:
    import tritonclient.http as triton

    expected = v1_labels(served, rows)
    client = triton.InferenceServerClient(_host(served))
    try:
        tensors = []
        for j, name in enumerate(served.card.feature_names):
            tensor = triton.InferInput(name, [len(rows)], "FP32")
            tensor.set_data_from_numpy(rows[:, j].astype(np.float32), binary_data=j % 2 == 0)
            tensors.append(tensor)
        result = client.infer(MODEL, tensors, outputs=[triton.InferRequestedOutput("predict")])
    finally:
        client.close()

    assert result.as_numpy("predict").tolist() == expected


def test_tritonclient_http_errors_name_the_problem(served: Served, rows: np.ndarray) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(_host(served))
    try:
        tensor = triton.InferInput("words", [1, 4], "BYTES")
        tensor.set_data_from_numpy(np.array([["a", "b", "c", "d"]], dtype=object))
        with pytest.raises(InferenceServerException, match="input 'words' has datatype BYTES"):
            client.infer(MODEL, [tensor])
        good = triton.InferInput("input-0", list(rows[:1].shape), "FP64")
        good.set_data_from_numpy(rows[:1])
        with pytest.raises(InferenceServerException, match="no version '9'"):
            client.infer(MODEL, [good], model_version="9")
    finally:
        client.close()


# --- kserve.InferenceRESTClient ---------------------------------------------------------------------------------


def _kserve(protocol: str, call: Any) -> Any:
    from kserve import InferenceRESTClient, RESTConfig

    async def run() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=30))
        try:
            return await call(client)
        finally:
            await client.close()

    return asyncio.run(run())


def test_kserve_rest_client_v1(served: Served, rows: np.ndarray) -> None:
    expected = v1_labels(served, rows)
    body = {"instances": rows.tolist(), "parameters": {"return_probabilities": False}}

    answer = _kserve("v1", lambda c: c.infer(served.server.url, body, model_name=MODEL))

    assert answer["predictions"] == expected
    assert _kserve("v1", lambda c: c.is_model_ready(served.server.url, MODEL)) is True


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client_v2(served: Served, rows: np.ndarray, binary: bool) -> None:
    from kserve import InferInput, InferRequest
    from kserve.protocol.infer_type import RequestedOutput

    expected = v1_labels(served, rows)
    tensor = InferInput("input-0", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    request = InferRequest(
        model_name=MODEL,
        infer_inputs=[tensor],
        request_outputs=[RequestedOutput("predict", parameters={"binary_data": binary})],
    )

    answer = _kserve("v2", lambda c: c.infer(served.server.url, request, model_name=MODEL))

    assert answer.outputs[0].name == "predict"
    assert answer.outputs[0].as_numpy().tolist() == expected
    assert _kserve("v2", lambda c: c.is_server_ready(served.server.url)) is True
    assert _kserve("v2", lambda c: c.is_model_ready(served.server.url, MODEL)) is True


def test_kserve_rest_client_v2_error_reads_our_message(served: Served, rows: np.ndarray) -> None:
    from kserve import InferInput, InferRequest

    tensor = InferInput("input-0", [1, 3], "FP64")
    tensor.set_data_from_numpy(rows[:1, :3], binary_data=True)
    request = InferRequest(model_name=MODEL, infer_inputs=[tensor])

    with pytest.raises(httpx.HTTPStatusError, match=r"shape \[N, 4\]"):
        _kserve("v2", lambda c: c.infer(served.server.url, request, model_name=MODEL))


def test_v2_json_without_content_type_matches_v1(served: Served, rows: np.ndarray) -> None:
    body = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]}
    body["outputs"] = [{"name": "predict"}]
    reply = httpx.post(served.v2, content=json.dumps(body).encode(), timeout=30)
    assert reply.json()["outputs"][0]["data"] == v1_labels(served, rows)


# --- the same clients on a mixed-type model: BYTES for categorical features --------------------------------------

MIXED_ROWS = [
    [12.0, 70.5, "month", "north"],
    [60.0, 25.0, "two_year", "south"],
    [3.0, 99.9, "month", "east"],
    [40.0, 55.0, "one_year", "atlantis"],
]


def _mixed_expected(mixed_served: Served) -> list[str]:
    expected = mixed_served.estimator.predict(np.array(MIXED_ROWS, dtype=object)).tolist()
    reply = httpx.post(mixed_served.v1, json={"instances": MIXED_ROWS}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == expected and len(set(expected)) == 2
    return expected


def _text(value: bytes | str) -> str:
    """A BYTES element: bytes from a binary answer, str from a JSON one."""
    return value.decode() if isinstance(value, bytes) else value


def _mixed_columns(mixed_served: Served) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, values) per feature, as the V2 metadata describes them."""
    columns = []
    for j, feature in enumerate(mixed_served.card.features):
        values = [row[j] for row in MIXED_ROWS]
        if feature.kind == "categorical":
            columns.append((feature.name, "BYTES", np.array(values, dtype=object)))
        else:
            columns.append((feature.name, "FP64", np.array(values, dtype=np.float64)))
    return columns


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_bytes_inputs_on_a_mixed_type_model(mixed_served: Served, binary: bool) -> None:
    import tritonclient.http as triton

    expected = _mixed_expected(mixed_served)
    client = triton.InferenceServerClient(mixed_served.server.url.removeprefix("http://"))
    try:
        metadata = client.get_model_metadata(mixed_served.name)
        tensors = []
        for name, datatype, values in _mixed_columns(mixed_served):
            tensor = triton.InferInput(name, [len(values)], datatype)
            tensor.set_data_from_numpy(values, binary_data=binary)
            tensors.append(tensor)
        outputs = [triton.InferRequestedOutput("predict", binary_data=binary)]
        result = client.infer(mixed_served.name, tensors, outputs=outputs)
    finally:
        client.close()

    assert [i["datatype"] for i in metadata["inputs"]] == ["FP64", "FP64", "BYTES", "BYTES"]
    assert [_text(v) for v in result.as_numpy("predict").tolist()] == expected


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_rest_client_v2_bytes_inputs_on_a_mixed_type_model(mixed_served: Served, binary: bool) -> None:
    from kserve import InferInput, InferRequest

    expected = _mixed_expected(mixed_served)
    tensors = []
    for name, datatype, values in _mixed_columns(mixed_served):
        tensor = InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    request = InferRequest(model_name=mixed_served.name, infer_inputs=tensors)

    answer = _kserve("v2", lambda c: c.infer(mixed_served.server.url, request, model_name=mixed_served.name))

    assert [_text(v) for v in answer.outputs[0].as_numpy().tolist()] == expected


def test_kserve_rest_client_v1_on_a_mixed_type_model(mixed_served: Served) -> None:
    expected = _mixed_expected(mixed_served)
    rows = [dict(zip(mixed_served.card.feature_names, row, strict=True)) for row in MIXED_ROWS]

    answer = _kserve(
        "v1", lambda c: c.infer(mixed_served.server.url, {"instances": rows}, model_name=mixed_served.name)
    )

    assert answer["predictions"] == expected
