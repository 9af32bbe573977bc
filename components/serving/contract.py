"""The request contract: turn a V1 or V2 JSON body into a float64 matrix, or say precisely what is wrong.

Pure functions over bytes and decoded JSON; the HTTP layer maps `ClientError` to a 4xx JSON response.
Messages stay short and never echo the client's payload back (a 1 MB row must not become a 1 MB log line).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from components.constants import PROBA_PARAMETER

JSON_MEDIA_TYPE = "application/json"
V2_FP64 = "FP64"
V2_NUMERIC_DATATYPES = frozenset({"FP64", "FP32", "FP16", "INT64", "INT32", "INT16", "INT8", "UINT64", "UINT32"})
"""V2 datatypes whose values are plain JSON numbers; all become float64 (what the model computes in)."""
_MAX_NAMES_IN_MESSAGE = 5
_LIST_TYPE = {list}
_NUMBER_TYPES = {float, int}
"""Exact types: bool is a subclass of int, and JSON true must not become 1.0."""


class ClientError(ValueError):
    """A request the client must fix: carries the HTTP status and a metric-friendly reason."""

    def __init__(self, message: str, *, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class FeatureSpec:
    """What the model expects, from `model.json`."""

    feature_names: tuple[str, ...]
    max_rows: int

    @property
    def n_features(self) -> int:
        """Number of input columns."""
        return len(self.feature_names)


def check_content_type(content_type: str | None) -> None:
    """Accept only JSON bodies (`application/json`, optionally with a charset)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE:
        shown = _short(media_type) if media_type else "none"
        raise ClientError(f"Content-Type must be {JSON_MEDIA_TYPE} (got {shown})", reason="content_type", status=415)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not body:
        raise ClientError("request body is empty; send a JSON object", reason="malformed_json")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "infinity" in text:
            raise ClientError(f"a number is out of float64 range ({_short(text)})", reason="out_of_range") from None
        raise ClientError(
            f"body is not valid JSON (NaN and Infinity are not JSON numbers): {_short(text)}",
            reason="malformed_json",
        ) from None
    if not isinstance(decoded, dict):
        raise ClientError(f"body must be a JSON object, got {_json_type(decoded)}", reason="malformed_json")
    return decoded


def want_probabilities(parameters: Any, default: bool) -> bool:
    """Read the `return_probabilities` flag from a `parameters` object, falling back to the server default."""
    if parameters is None:
        return default
    if not isinstance(parameters, dict):
        raise ClientError(f"'parameters' must be an object, got {_json_type(parameters)}", reason="bad_parameters")
    value = parameters.get(PROBA_PARAMETER, default)
    if not isinstance(value, bool):
        raise ClientError(f"parameter '{PROBA_PARAMETER}' must be true or false", reason="bad_parameters")
    return value


def rows_from_v1(payload: Mapping[str, Any], spec: FeatureSpec) -> np.ndarray:
    """Validate V1 `instances` (rows as lists in feature order, or objects keyed by feature name)."""
    if "instances" not in payload:
        raise ClientError("body has no 'instances' key; send {\"instances\": [[...], ...]}", reason="bad_instances")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise ClientError(f"'instances' must be a list of rows, got {_json_type(instances)}", reason="bad_instances")
    _check_row_count(len(instances), spec)
    if isinstance(instances[0], dict):
        return _matrix([_row_from_mapping(i, row, spec) for i, row in enumerate(instances)], spec)
    # The common case checked with C-level set/map passes; the loop below only runs to name the bad row.
    if set(map(type, instances)) == _LIST_TYPE and set(map(len, instances)) == {spec.n_features}:
        return _matrix(instances, spec)
    for i, row in enumerate(instances):
        if not isinstance(row, list):
            raise ClientError(
                f"instances[{i}] must be a list of {spec.n_features} numbers or an object keyed by feature name, "
                f"got {_json_type(row)}",
                reason="bad_instances",
            )
        if len(row) != spec.n_features:
            raise ClientError(
                f"instances[{i}] has {len(row)} values; the model expects {spec.n_features} "
                f"({_names(spec.feature_names)})",
                reason="feature_count",
            )
    return _matrix(instances, spec)


def rows_from_v2(payload: Mapping[str, Any], spec: FeatureSpec) -> np.ndarray:
    """Validate an Open Inference Protocol request.

    Accepts either one tensor per feature (named as in the model metadata, shape [N] or [N, 1]) or a single
    tensor of shape [N, n_features] in feature order.
    """
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError("'inputs' must be a non-empty list of tensors", reason="bad_inputs")
    tensors = [_tensor(i, raw) for i, raw in enumerate(inputs)]
    if len(tensors) == 1 and len(tensors[0][1]) == 2 and tensors[0][1][1] == spec.n_features != 1:
        name, shape, data = tensors[0]
        _check_row_count(shape[0], spec)
        return _matrix_from_flat(name, data, shape, spec)
    names = [name for name, _, _ in tensors]
    _check_feature_names(set(names), spec, where="inputs")
    if len(set(names)) != len(names):
        raise ClientError("two inputs share a name", reason="feature_names")
    rows = tensors[0][1][0]
    _check_row_count(rows, spec)
    columns: dict[str, np.ndarray] = {}
    for name, shape, data in tensors:
        if shape[0] != rows or (len(shape) == 2 and shape[1] != 1) or len(shape) > 2:
            raise ClientError(
                f"input '{_short(name)}' has shape {shape}; feature inputs need shape [{rows}] or [{rows}, 1]",
                reason="bad_shape",
            )
        columns[name] = _matrix_from_flat(name, data, [rows, 1], FeatureSpec((name,), spec.max_rows))[:, 0]
    return np.column_stack([columns[name] for name in spec.feature_names])


def _tensor(index: int, raw: Any) -> tuple[str, list[int], list[Any]]:
    if not isinstance(raw, dict):
        raise ClientError(f"inputs[{index}] must be an object", reason="bad_inputs")
    name, shape, datatype, data = raw.get("name"), raw.get("shape"), raw.get("datatype"), raw.get("data")
    if not isinstance(name, str):
        raise ClientError(f"inputs[{index}] needs a string 'name'", reason="bad_inputs")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise ClientError(f"input '{_short(name)}' needs a 'shape' of non-negative integers", reason="bad_shape")
    if datatype not in V2_NUMERIC_DATATYPES:
        raise ClientError(
            f"input '{_short(name)}' has datatype {_short(str(datatype))}; use {V2_FP64} (features are numbers)",
            reason="bad_datatype",
        )
    if not isinstance(data, list):
        raise ClientError(f"input '{_short(name)}' needs 'data' as a list", reason="bad_inputs")
    if data and isinstance(data[0], list):
        data = [v for row in data for v in (row if isinstance(row, list) else [row])]
    if len(data) != math.prod(shape):
        raise ClientError(
            f"input '{_short(name)}' has {len(data)} values but shape {shape} needs {math.prod(shape)}",
            reason="bad_shape",
        )
    return name, shape, data


def _matrix_from_flat(name: str, data: list[Any], shape: Sequence[int], spec: FeatureSpec) -> np.ndarray:
    _check_values(data, where=f"input '{_short(name)}'")
    return _to_float64(data, where=f"input '{_short(name)}'").reshape(shape[0], spec.n_features)


def _row_from_mapping(index: int, row: Any, spec: FeatureSpec) -> list[Any]:
    if not isinstance(row, dict):
        raise ClientError(
            f"instances[{index}] is {_json_type(row)}; do not mix objects and lists in one request",
            reason="bad_instances",
        )
    if len(row) != spec.n_features or any(name not in row for name in spec.feature_names):
        _check_feature_names(set(row), spec, where=f"instances[{index}]")
    return [row[name] for name in spec.feature_names]


def _check_feature_names(given: set[str], spec: FeatureSpec, *, where: str) -> None:
    expected = set(spec.feature_names)
    unknown = sorted(given - expected)
    missing = [n for n in spec.feature_names if n not in given]
    parts = []
    if unknown:
        parts.append(f"unknown feature(s) {_names(unknown)}")
    if missing:
        parts.append(f"missing feature(s) {_names(missing)}")
    if parts:
        raise ClientError(f"{where}: {'; '.join(parts)}", reason="feature_names")


def _check_row_count(rows: int, spec: FeatureSpec) -> None:
    if rows == 0:
        raise ClientError("no rows to predict: 'instances' is empty", reason="bad_instances")
    if rows > spec.max_rows:
        raise ClientError(
            f"{rows} rows in one request; the limit is {spec.max_rows} (split the batch)", reason="too_many_rows"
        )


def _matrix(rows: list[list[Any]], spec: FeatureSpec) -> np.ndarray:
    # One pass over the value types before numpy: np.asarray would quietly turn true into 1.0, "2" into 2.0
    # and null into NaN. A flat list converts in about half the time of a list of rows.
    flat = list(chain.from_iterable(rows))
    if not set(map(type, flat)) <= _NUMBER_TYPES:
        for i, row in enumerate(rows):
            _check_values(row, where=f"instances[{i}]", names=spec.feature_names)
    return _to_float64(flat, where="instances").reshape(len(rows), spec.n_features)


def _check_values(values: Sequence[Any], *, where: str, names: Sequence[str] | None = None) -> None:
    for j, value in enumerate(values):
        kind = type(value)
        if kind is float or kind is int:
            continue
        column = f"feature '{_short(names[j])}'" if names is not None else f"value {j}"
        raise ClientError(
            f"{where}, {column}: expected a number, got {_json_type(value)}",
            reason="non_numeric",
        )


def _to_float64(values: list[Any], *, where: str) -> np.ndarray:
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except OverflowError:
        raise ClientError(f"{where}: a number is out of float64 range", reason="out_of_range") from None
    if not np.isfinite(matrix).all():
        raise ClientError(f"{where}: a number is out of float64 range", reason="out_of_range")
    return matrix


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "a number"


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(repr(_short(n)) for n in list(names)[:_MAX_NAMES_IN_MESSAGE])
    extra = len(names) - _MAX_NAMES_IN_MESSAGE
    return shown + (f" and {extra} more" if extra > 0 else "")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
