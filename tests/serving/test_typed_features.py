"""The contract per typed feature, against live servers: a mixed-type classifier and a regression model.

Every answer is checked against scikit-learn's own predict on the same rows (the object matrix training used), and
every refusal against its status and a message naming the feature and the type it takes.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from components.serving.metrics import NUMERIC_PREDICTION
from tests.serving.servers import MIXED_FEATURES, Served
from tests.serving.serving_cases import binary_body

ROWS = [
    [12.0, 70.5, "month", "north"],
    [60.0, 25.0, "two_year", "south"],
    [3.0, 99.9, "month", "east"],
    [40.0, 55.0, "one_year", "west"],
]


def sklearn_says(served: Served, rows: list[list]) -> list:
    """The estimator's own answer on the object matrix (None -> NaN, as training saw a missing value)."""
    x = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=object)
    return served.estimator.predict(x).tolist()


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url, json=body, timeout=30)


def refused(reply: httpx.Response, status: int = 400) -> str:
    assert reply.status_code == status, reply.text
    message: str = reply.json()["error"]
    assert len(message) < 300
    return message


# --- mixed types: categorical by string, unknown categories, null ---------------------------------------------


def test_categorical_values_by_string_as_lists_and_as_objects(mixed_served: Served) -> None:
    expected = sklearn_says(mixed_served, ROWS)
    assert len(set(expected)) == 2, "the rows should reach both classes"

    as_lists = post(mixed_served.v1, {"instances": ROWS})
    objects = [dict(reversed(list(zip(MIXED_FEATURES, row, strict=True)))) for row in ROWS]
    as_objects = post(mixed_served.v1, {"instances": objects})

    assert as_lists.status_code == 200, as_lists.text
    assert as_lists.json() == as_objects.json() == {"predictions": expected}


def test_an_unknown_category_is_served_as_no_known_category(mixed_served: Served) -> None:
    rows = [[12.0, 70.5, "monthly-ish", "atlantis"], [3.0, 99.9, "", "north"]]

    reply = post(mixed_served.v1, {"instances": rows})

    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == sklearn_says(mixed_served, rows)


def test_null_is_served_where_the_feature_may_be_missing(mixed_served: Served) -> None:
    rows = [[None, 70.5, "month", None], [None, 25.0, "two_year", "south"]]

    reply = post(mixed_served.v1, {"instances": rows})

    assert reply.status_code == 200, reply.text
    assert reply.json()["predictions"] == sklearn_says(mixed_served, rows)


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ([12.0, None, "month", "north"], "feature 'monthly_charge' (numeric): expected a number"),
        ([12.0, 70.5, None, "north"], "feature 'contract' (categorical): expected a string (a category)"),
        ([12.0, "70.5", "month", "north"], "feature 'monthly_charge' (numeric): expected a number, got a string"),
        (["twelve", 70.5, "month", "north"], "feature 'tenure' (numeric, nullable): expected a number or null"),
        ([12.0, 70.5, ["month"], "north"], "feature 'contract' (categorical): expected a string (a category), got"),
    ],
    ids=["null-numeric", "null-categorical", "string-for-numeric", "string-for-nullable", "list-for-categorical"],
)
def test_a_wrong_value_is_a_400_naming_the_feature_and_its_type(mixed_served: Served, row: list, says: str) -> None:
    message = refused(post(mixed_served.v1, {"instances": [ROWS[0], row]}))
    assert message.startswith("instances[1], ") and says in message, message


def _columns(rows: list[list], **datatypes: str) -> list[dict]:
    kinds = {"tenure": "FP64", "monthly_charge": "FP32", "contract": "BYTES", "region": "BYTES", **datatypes}
    return [
        {"name": name, "shape": [len(rows)], "datatype": kinds[name], "data": [r[j] for r in rows]}
        for j, name in enumerate(MIXED_FEATURES)
    ]


def test_v2_one_input_per_feature_with_bytes_equals_v1(mixed_served: Served) -> None:
    rows = [*ROWS, [None, 25.0, "one_year", None]]

    reply = post(mixed_served.v2, {"inputs": _columns(rows)})

    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    assert (output["name"], output["datatype"]) == ("predict", "BYTES")
    assert output["data"] == sklearn_says(mixed_served, rows)


def test_v2_binary_bytes_inputs_equal_v1(mixed_served: Served) -> None:
    def strings(values: list[str]) -> bytes:
        return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)

    body, length = binary_body(
        [
            ("tenure", [len(ROWS)], "FP64", np.array([r[0] for r in ROWS]).tobytes()),
            ("monthly_charge", [len(ROWS)], "FP64", np.array([r[1] for r in ROWS]).tobytes()),
            ("contract", [len(ROWS)], "BYTES", strings([r[2] for r in ROWS])),
            ("region", [len(ROWS)], "BYTES", strings([r[3] for r in ROWS])),
        ]
    )
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(length)}

    reply = httpx.post(mixed_served.v2, content=body, headers=headers, timeout=30)

    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["data"] == sklearn_says(mixed_served, ROWS)


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (
            _columns(ROWS, contract="FP64"),
            "input 'contract' has datatype FP64; feature 'contract' (categorical) takes BYTES",
        ),
        (_columns(ROWS, monthly_charge="BYTES"), "feature 'monthly_charge' (numeric) takes FP64"),
        (
            [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["1", "2", "month", "north"]}],
            "send one input per feature",
        ),
    ],
    ids=["fp64-for-categorical", "bytes-for-numeric", "one-matrix"],
)
def test_v2_wrong_datatype_is_a_400_naming_the_feature(mixed_served: Served, inputs: list, says: str) -> None:
    message = refused(post(mixed_served.v2, {"inputs": inputs}))
    assert says in message, message


def test_metadata_shows_the_schema(mixed_served: Served) -> None:
    v2 = httpx.get(f"{mixed_served.server.url}/v2/models/{mixed_served.name}", timeout=10).json()
    v1 = httpx.get(f"{mixed_served.server.url}/v1/models/{mixed_served.name}", timeout=10).json()

    assert [(i["name"], i["datatype"]) for i in v2["inputs"]] == [
        ("tenure", "FP64"),
        ("monthly_charge", "FP64"),
        ("contract", "BYTES"),
        ("region", "BYTES"),
    ]
    region = v2["inputs"][3]["parameters"]
    assert region == {"feature_kind": "categorical", "nullable": True, "categories": ["east", "north", "south", "west"]}
    assert v2["inputs"][0]["parameters"] == {"feature_kind": "numeric", "nullable": True}
    assert v2["parameters"] == {"task": "classification"}
    assert (v1["ready"], v1["task"], v1["class_names"]) == (True, "classification", ["no", "yes"])
    assert v1["features"] == [
        f.model_dump(exclude={"categories"} if f.kind == "numeric" else set()) for f in mixed_served.card.features
    ]


# --- regression: numbers, no probabilities ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes_rows() -> np.ndarray:
    from sklearn.datasets import load_diabetes

    return load_diabetes().data[:5]


def test_regression_v1_answers_numbers_even_with_probabilities_on_by_default(
    regression_served: Served, diabetes_rows: np.ndarray
) -> None:
    reply = post(regression_served.v1, {"instances": diabetes_rows.tolist()})

    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    assert all(type(p) is float for p in predictions)
    np.testing.assert_allclose(predictions, regression_served.estimator.predict(diabetes_rows), rtol=1e-12)


def test_regression_v2_answers_fp64_json_and_binary(regression_served: Served, diabetes_rows: np.ndarray) -> None:
    tensor = {
        "name": "x",
        "shape": list(diabetes_rows.shape),
        "datatype": "FP64",
        "data": diabetes_rows.ravel().tolist(),
    }
    expected = regression_served.estimator.predict(diabetes_rows)

    as_json = post(regression_served.v2, {"inputs": [tensor]})
    as_binary = post(regression_served.v2, {"inputs": [tensor], "parameters": {"binary_data_output": True}})

    (output,) = as_json.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP64", [5])
    np.testing.assert_allclose(output["data"], expected, rtol=1e-12)
    json_length = int(as_binary.headers["inference-header-content-length"])
    np.testing.assert_array_equal(np.frombuffer(as_binary.content[json_length:], "<f8"), output["data"])


@pytest.mark.parametrize(
    ("protocol", "extra"),
    [
        ("v1", {"parameters": {"return_probabilities": True}}),
        ("v2", {"parameters": {"return_probabilities": True}}),
        ("v2", {"outputs": [{"name": "predict_proba"}]}),
    ],
    ids=["v1-parameter", "v2-parameter", "v2-output"],
)
def test_asking_a_regression_model_for_probabilities_is_a_400_saying_why(
    regression_served: Served, diabetes_rows: np.ndarray, protocol: str, extra: dict
) -> None:
    if protocol == "v1":
        url, body = regression_served.v1, {"instances": diabetes_rows[:1].tolist(), **extra}
    else:
        tensor = {"name": "x", "shape": [1, 10], "datatype": "FP64", "data": diabetes_rows[0].tolist()}
        url, body = regression_served.v2, {"inputs": [tensor], **extra}

    message = refused(post(url, body))

    assert "regression model: it predicts numbers and has no class probabilities" in message


def test_regression_metadata_and_metrics(regression_served: Served, diabetes_rows: np.ndarray) -> None:
    url = regression_served.server.url
    assert post(regression_served.v1, {"instances": diabetes_rows.tolist()}).status_code == 200
    v2 = httpx.get(f"{url}/v2/models/{regression_served.name}", timeout=10).json()
    v1 = httpx.get(f"{url}/v1/models/{regression_served.name}", timeout=10).json()
    metrics = httpx.get(f"{url}/metrics", timeout=10).text

    assert v2["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert v2["parameters"] == {"task": "regression"}
    assert (v1["task"], v1["class_names"]) == ("regression", [])
    assert {i["datatype"] for i in v2["inputs"]} == {"FP64"}
    # The ONNX regression graph serves when training kept it (and the card says so), else joblib.
    assert f'backend="{regression_served.card.serving_path}"' in metrics
    # Regression rows are counted under one label value, never one series per predicted number.
    counted = [line for line in metrics.splitlines() if line.startswith("kfp_sklearn_predictions_total{")]
    assert counted and all(f'predicted_class="{NUMERIC_PREDICTION}"' in line for line in counted), counted


def test_bodies_are_never_echoed(mixed_served: Served) -> None:
    secret = "s3cr3t-" * 100
    message = refused(post(mixed_served.v1, {"instances": [[12.0, secret, "month", "north"]]}))
    assert "s3cr3t" not in message
    assert json.dumps(message).count("s3cr3t") == 0


def test_the_mixed_model_is_served_by_the_path_its_card_names(mixed_served: Served) -> None:
    assert post(mixed_served.v1, {"instances": ROWS}).status_code == 200
    metrics = httpx.get(f"{mixed_served.server.url}/metrics", timeout=10).text
    assert f'backend="{mixed_served.card.serving_path}"' in metrics


def test_onnx_and_joblib_answer_typed_rows_alike(mixed_served: Served) -> None:
    from components.serving.contract import FeatureSpec, typed_rows_from_v1
    from components.serving.predictor import load_model

    # Given the same model directory loaded with and without its ONNX graph
    onnx = load_model(mixed_served.model_dir)
    joblib = load_model(mixed_served.model_dir, use_onnx=False)
    assert joblib.backend == "joblib" and onnx.backend == mixed_served.card.serving_path
    spec = FeatureSpec.of(mixed_served.card.features, 100)
    # When rows hold unknown categories, missing values and numbers far outside training (ONNX hands those to joblib)
    rows = [
        *ROWS,
        [None, 70.5, "never-seen", None],
        [1e20, 25.0, "month", "mars"],
        [-3.0, -1e16, "", "north"],
    ]
    x = typed_rows_from_v1({"instances": rows}, spec)

    # Then both backends give sklearn's labels and probabilities
    by_onnx, by_joblib = onnx.predict(x, probabilities=True), joblib.predict(x, probabilities=True)
    assert by_onnx.labels.tolist() == by_joblib.labels.tolist() == sklearn_says(mixed_served, rows)
    np.testing.assert_allclose(by_onnx.probabilities, by_joblib.probabilities, atol=1e-6)


def test_the_payload_log_holds_typed_columns(mixed_served: Served) -> None:
    import time

    import pyarrow.parquet as pq

    rows = [[None, 33.3, "one_year", None], [7.0, 44.4, "unheard-of", "west"]]
    assert post(mixed_served.v1, {"instances": rows}).status_code == 200
    log_dir = mixed_served.model_dir.parent / "payloads"
    deadline = time.monotonic() + 30
    logged: list[dict] = []
    # The writer flushes every second: poll (bounded) until these rows are on disk.
    while time.monotonic() < deadline and not any(r["monthly_charge"] == 44.4 for r in logged):
        files = sorted(log_dir.rglob("*.parquet"))
        logged = [r for f in files for r in pq.read_table(f).to_pylist()]
        time.sleep(0.2)

    mine = [r for r in logged if r["monthly_charge"] in (33.3, 44.4)]
    assert [(r["tenure"], r["contract"], r["region"]) for r in mine] == [
        (None, "one_year", None),
        (7.0, "unheard-of", "west"),
    ]
    assert [r["prediction"] for r in mine] == sklearn_says(mixed_served, rows)
