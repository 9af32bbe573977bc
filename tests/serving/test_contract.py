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
