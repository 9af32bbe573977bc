"""The request contract as pure functions: every client mistake becomes a ClientError with a 4xx and a reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.constants import PROBA_PARAMETER
from components.serving.contract import (
    ClientError,
    FeatureSpec,
    check_content_type,
    parse_json_object,
    rows_from_v1,
    rows_from_v2,
    split_binary,
    want_probabilities,
)
from tests.serving.serving_cases import CASES, FEATURES, GOOD_ROW, MAX_ROWS, Case, binary_body

SPEC = FeatureSpec(tuple(FEATURES), MAX_ROWS)


def apply_contract(case: Case) -> np.ndarray:
    header = None if case.header_length is None else str(case.header_length)
    json_length = check_content_type(case.content_type, header, v2=case.v2)
    binary = None
    if json_length is None:
        payload = parse_json_object(case.body)
    else:
        payload, binary = split_binary(case.body, json_length)
    if case.v2:
        rows = rows_from_v2(payload, SPEC, binary)
        want_probabilities(payload.get("parameters"), False)
        from components.serving.model import _requested_outputs

        _requested_outputs(payload.get("outputs"))
        return rows
    rows = rows_from_v1(payload, SPEC)
    want_probabilities(payload.get("parameters"), False)
    return rows


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_client_mistake_is_a_client_error_naming_the_problem(case: Case) -> None:
    with pytest.raises(ClientError) as caught:
        apply_contract(case)
    assert (caught.value.status, caught.value.reason) == (case.status, case.reason)
    assert case.says.lower() in caught.value.message.lower()
    assert not case.not_says or case.not_says.lower() not in caught.value.message.lower()
    assert len(caught.value.message) < 300


def test_rows_as_lists_and_as_objects_give_the_same_matrix() -> None:
    as_lists = rows_from_v1({"instances": [GOOD_ROW, [6.7, 3.0, 5.2, 2.3]]}, SPEC)
    shuffled = [dict(reversed(list(zip(FEATURES, row, strict=True)))) for row in ([GOOD_ROW, [6.7, 3.0, 5.2, 2.3]])]
    as_objects = rows_from_v1({"instances": shuffled}, SPEC)
    assert as_lists.dtype == np.float64
    np.testing.assert_array_equal(as_lists, as_objects)
    np.testing.assert_array_equal(as_lists[0], GOOD_ROW)


def test_integers_are_numbers() -> None:
    np.testing.assert_array_equal(rows_from_v1({"instances": [[5, 3, 1, 0]]}, SPEC), [[5.0, 3.0, 1.0, 0.0]])


def test_v2_columns_and_v2_matrix_agree_with_v1() -> None:
    rows = [GOOD_ROW, [6.7, 3.0, 5.2, 2.3]]
    columns = {
        "inputs": [
            {"name": name, "shape": [2], "datatype": "FP64", "data": [r[j] for r in rows]}
            for j, name in reversed(list(enumerate(FEATURES)))
        ]
    }
    matrix = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": rows}]}
    expected = rows_from_v1({"instances": rows}, SPEC)
    np.testing.assert_array_equal(rows_from_v2(columns, SPEC), expected)
    np.testing.assert_array_equal(rows_from_v2(matrix, SPEC), expected)


def test_error_messages_never_echo_a_large_input() -> None:
    huge = "A" * 50_000
    bodies = [
        {"instances": [[5.1, 3.5, 1.4, huge]]},
        {"instances": [{huge: 1.0}]},
        {"inputs": [{"name": huge, "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": huge, "data": GOOD_ROW}]},
    ]
    for body in bodies:
        with pytest.raises(ClientError) as caught:
            payload = parse_json_object(json.dumps(body).encode())
            (rows_from_v2 if "inputs" in payload else rows_from_v1)(payload, SPEC)
        assert len(caught.value.message) < 300


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(content_type: str) -> None:
    check_content_type(content_type)


def test_probability_flag_overrides_the_server_default_both_ways() -> None:
    assert want_probabilities(None, True) is True
    assert want_probabilities({}, False) is False
    assert want_probabilities({PROBA_PARAMETER: False}, True) is False
    assert want_probabilities({PROBA_PARAMETER: True}, False) is True


def test_row_limit_is_inclusive() -> None:
    assert rows_from_v1({"instances": [GOOD_ROW] * MAX_ROWS}, SPEC).shape == (MAX_ROWS, 4)


@pytest.mark.parametrize("datatype", ["FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT8", "UINT64"])
def test_binary_tensors_of_every_numeric_datatype_give_the_json_matrix(datatype: str) -> None:
    from components.serving.contract import V2_NUMPY_DTYPES

    rows = np.array([[5, 3, 1, 0], [6, 3, 5, 2]])
    raw = rows.astype(V2_NUMPY_DTYPES[datatype]).tobytes()
    body, length = binary_body([("input-0", [2, 4], datatype, raw)])

    payload, binary = split_binary(body, check_content_type(None, str(length), v2=True) or 0)

    np.testing.assert_array_equal(rows_from_v2(payload, SPEC, binary), rows_from_v1({"instances": rows.tolist()}, SPEC))


def test_binary_columns_mix_with_json_columns() -> None:
    rows = np.array([GOOD_ROW, [6.7, 3.0, 5.2, 2.3]])
    binary_part = [(name, [2], "FP64", rows[:, j].tobytes()) for j, name in enumerate(FEATURES[:2])]
    body, length = binary_body(binary_part)
    payload, binary = split_binary(body, length)
    payload["inputs"] += [
        {"name": name, "shape": [2, 1], "datatype": "FP32", "data": rows[:, j + 2].tolist()}
        for j, name in enumerate(FEATURES[2:])
    ]

    np.testing.assert_array_equal(rows_from_v2(payload, SPEC, binary), rows)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/json; charset=utf-8"])
def test_a_body_without_content_type_is_json(content_type: str | None) -> None:
    assert check_content_type(content_type) is None
    assert check_content_type(content_type, v2=True) is None


def test_a_one_feature_model_takes_a_flat_tensor_under_any_name() -> None:
    spec = FeatureSpec(("x",), MAX_ROWS)
    payload = {"inputs": [{"name": "input-0", "shape": [3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    np.testing.assert_array_equal(rows_from_v2(payload, spec), [[1.0], [2.0], [3.0]])


# --- typed features: categorical and nullable ---------------------------------------------------------------

TYPED = FeatureSpec(
    ("tenure", "monthly_charge", "contract", "region"),
    MAX_ROWS,
    ("numeric", "numeric", "categorical", "categorical"),
    (True, False, False, True),
)
TYPED_ROW = [12.0, 70.5, "month", "north"]


def _typed_v1(*rows: list) -> np.ndarray:
    from components.serving.contract import typed_rows_from_v1

    return typed_rows_from_v1({"instances": list(rows)}, TYPED)


def _typed_v2(payload: dict, binary: memoryview | None = None) -> np.ndarray:
    from components.serving.contract import typed_rows_from_v2

    return typed_rows_from_v2(payload, TYPED, binary)


def test_a_typed_spec_is_typed_and_an_all_numeric_one_is_not() -> None:
    assert TYPED.typed
    assert not SPEC.typed
    assert not FeatureSpec(("a", "b"), 5, ("numeric", "numeric"), (False, False)).typed
    assert FeatureSpec(("a",), 5, ("numeric",), (True,)).typed


def test_typed_rows_become_the_object_matrix_training_used() -> None:
    x = _typed_v1(TYPED_ROW, [None, 30, "two_year", None])

    assert x.dtype == object
    assert x[0].tolist() == [12.0, 70.5, "month", "north"]
    assert x[1, 0] != x[1, 0] and x[1, 3] != x[1, 3]  # NaN: missing where the feature is nullable
    assert type(x[1, 1]) is float and x[1, 1] == 30.0


def test_typed_objects_keyed_by_name_equal_lists() -> None:
    as_object = dict(reversed(list(zip(TYPED.feature_names, TYPED_ROW, strict=True))))
    np.testing.assert_array_equal(_typed_v1(as_object), _typed_v1(TYPED_ROW))


@pytest.mark.parametrize(
    ("value", "text"), [(1, "1"), (3.0, "3"), (2.5, "2.5"), (True, "true"), ("", ""), ("unseen", "unseen")]
)
def test_a_categorical_feature_takes_the_text_training_knows_a_value_by(value: object, text: str) -> None:
    assert _typed_v1([1.0, 2.0, value, "north"])[0, 2] == text


@pytest.mark.parametrize(
    ("row", "says", "reason"),
    [
        (
            [1.0, "70", "month", "north"],
            "feature 'monthly_charge' (numeric): expected a number, got a string",
            "non_numeric",
        ),
        ([1.0, None, "month", "north"], "feature 'monthly_charge' (numeric): expected a number", "null_value"),
        ([1.0, 2.0, None, "north"], "feature 'contract' (categorical): expected a string", "null_value"),
        (
            [1.0, 2.0, ["month"], "north"],
            "feature 'contract' (categorical): expected a string (a category), got a list",
            "non_categorical",
        ),
        (
            [1.0, 2.0, "month", {"a": 1}],
            "feature 'region' (categorical, nullable): expected a string (a category) or null",
            "non_categorical",
        ),
        (
            [True, 2.0, "month", "north"],
            "feature 'tenure' (numeric, nullable): expected a number or null, got a boolean",
            "non_numeric",
        ),
        ([1e39, 2.0, "month", "north"], "feature 'tenure'", "out_of_range"),
        ([10**400, 2.0, "month", "north"], "float64 range", "out_of_range"),
    ],
)
def test_a_wrong_value_names_the_row_the_feature_and_the_expected_type(row: list, says: str, reason: str) -> None:
    with pytest.raises(ClientError) as caught:
        _typed_v1(TYPED_ROW, row)
    assert caught.value.reason == reason
    assert caught.value.message.startswith("instances[1], ")
    assert says in caught.value.message


def test_a_not_nullable_feature_says_it_was_never_missing() -> None:
    with pytest.raises(ClientError, match="never missing in training"):
        _typed_v1([1.0, None, "month", "north"])


def test_typed_error_messages_never_echo_the_value() -> None:
    with pytest.raises(ClientError) as caught:
        _typed_v1([1.0, "A" * 10_000, "month", "north"])
    assert "AAAA" not in caught.value.message and len(caught.value.message) < 300


def _bytes_tensor(name: str, values: list, datatype: str = "BYTES") -> dict:
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}


def _typed_columns(rows: list[list]) -> dict:
    return {
        "inputs": [
            _bytes_tensor("tenure", [r[0] for r in rows], "FP64"),
            _bytes_tensor("monthly_charge", [r[1] for r in rows], "FP32"),
            _bytes_tensor("contract", [r[2] for r in rows]),
            _bytes_tensor("region", [r[3] for r in rows]),
        ]
    }


def test_v2_inputs_per_feature_with_bytes_equal_v1() -> None:
    rows = [TYPED_ROW, [None, 30.0, "two_year", None]]
    got = _typed_v2(_typed_columns(rows))
    expected = _typed_v1(*rows)
    assert got[0].tolist() == expected[0].tolist()
    assert got[1, 1:3].tolist() == expected[1, 1:3].tolist()
    assert got[1, 0] != got[1, 0] and got[1, 3] != got[1, 3]


def test_v2_binary_bytes_are_length_prefixed_utf8() -> None:
    def strings(values: list[str]) -> bytes:
        return b"".join(len(v.encode()).to_bytes(4, "little") + v.encode() for v in values)

    body, length = binary_body(
        [
            ("tenure", [2], "FP64", np.array([12.0, np.nan]).tobytes()),
            ("monthly_charge", [2], "FP64", np.array([70.5, 30.0]).tobytes()),
            ("contract", [2], "BYTES", strings(["month", "twö_year"])),
            ("region", [2], "INT64", np.array([7, 8]).tobytes()),
        ]
    )
    payload, binary = split_binary(body, length)

    x = _typed_v2(payload, binary)

    assert x[:, 2].tolist() == ["month", "twö_year"]
    assert x[:, 3].tolist() == ["7", "8"]  # integers sent for a categorical feature become their text
    assert x[0, 0] == 12.0 and x[1, 0] != x[1, 0]  # NaN in a float tensor is a missing value where nullable


@pytest.mark.parametrize(
    ("tensor", "says", "reason"),
    [
        (("contract", [1], "BYTES", b"\x05\x00\x00\x00mon"), "cut off", "malformed_binary"),
        (("contract", [1], "BYTES", b"\x02\x00\x00\x00\xff\xfe"), "not UTF-8", "bad_value"),
        (("contract", [2], "BYTES", b"\x01\x00\x00\x00a"), "cover 2", "malformed_binary"),
        (("contract", [1], "BYTES", b"\x01\x00\x00\x00ab"), "1 bytes after", "malformed_binary"),
    ],
)
def test_malformed_binary_bytes_are_refused(tensor: tuple, says: str, reason: str) -> None:
    body, length = binary_body([tensor])
    payload, binary = split_binary(body, length)
    payload["inputs"] += [
        _bytes_tensor("tenure", [1.0] * tensor[1][0], "FP64"),
        _bytes_tensor("monthly_charge", [1.0] * tensor[1][0], "FP64"),
        _bytes_tensor("region", ["north"] * tensor[1][0]),
    ]
    with pytest.raises(ClientError) as caught:
        _typed_v2(payload, binary)
    assert (caught.value.reason, says in caught.value.message) == (reason, True), caught.value.message


@pytest.mark.parametrize(
    ("change", "says", "reason"),
    [
        ({"contract": ("FP64", [1.0])}, "feature 'contract' (categorical) takes BYTES", "bad_datatype"),
        ({"tenure": ("BYTES", ["12"])}, "feature 'tenure' (numeric, nullable) takes FP64", "bad_datatype"),
        ({"monthly_charge": ("FP64", [None])}, "input 'monthly_charge', row 0, feature 'monthly_charge'", "null_value"),
        ({"contract": ("BYTES", [None])}, "feature 'contract' (categorical): expected a string", "null_value"),
        ({"tenure": ("FP64", ["12"])}, "expected a number or null, got a string", "non_numeric"),
    ],
)
def test_v2_wrong_datatype_or_value_names_the_feature(change: dict, says: str, reason: str) -> None:
    payload = _typed_columns([TYPED_ROW])
    for tensor in payload["inputs"]:
        if tensor["name"] in change:
            tensor["datatype"], tensor["data"] = change[tensor["name"]]
    with pytest.raises(ClientError) as caught:
        _typed_v2(payload)
    assert caught.value.reason == reason
    assert says in caught.value.message


def test_one_matrix_input_is_refused_when_a_feature_is_categorical() -> None:
    payload = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "BYTES", "data": ["1", "2", "month", "north"]}]}
    with pytest.raises(ClientError) as caught:
        _typed_v2(payload)
    assert caught.value.reason == "feature_names"
    assert "one input per feature" in caught.value.message and "'contract', 'region'" in caught.value.message


def test_one_matrix_input_works_for_numeric_features_with_missing_values() -> None:
    from components.serving.contract import typed_rows_from_v2

    spec = FeatureSpec(("a", "b"), MAX_ROWS, ("numeric", "numeric"), (True, False))
    x = typed_rows_from_v2(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [None, 1, 2, 3]}]}, spec
    )
    assert x[0, 0] != x[0, 0] and x[1].tolist() == [2.0, 3.0]
    with pytest.raises(ClientError, match="feature 'b' \\(numeric\\)"):
        typed_rows_from_v2({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, None]}]}, spec)
