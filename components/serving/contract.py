"""The request contract: turn a V1 or V2 JSON body into the model's input matrix, or say precisely what is wrong.

Pure functions over bytes and decoded JSON; the HTTP layer maps `ClientError` to a 4xx JSON response.
Messages stay short and never echo the client's payload back (a 1 MB row must not become a 1 MB log line).

Two representations, chosen once per model (`FeatureSpec.typed`), as `components.features.feature_matrix` builds
them for training: a float64 matrix when every feature is numeric and never missing (the fast path), otherwise an
object matrix with numeric values as floats, categorical values as str and `np.nan` for a missing value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from components.constants import PROBA_PARAMETER
from components.features import category_value

JSON_MEDIA_TYPE = "application/json"
BINARY_MEDIA_TYPE = "application/octet-stream"
INFERENCE_HEADER_LENGTH = "inference-header-content-length"
"""Open Inference Protocol binary tensor extension: the length of the JSON part before the raw tensor bytes."""
BINARY_DATA_SIZE = "binary_data_size"
V2_FP64 = "FP64"
V2_BYTES = "BYTES"
V2_BOOL = "BOOL"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
"""Feature kinds, as `components.features.Feature.kind` spells them."""
_LENGTH_PREFIX = 4
"""Binary extension BYTES: each element is a 4-byte little-endian length, then that many bytes."""
V2_NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "FP64": np.dtype("<f8"),
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "INT64": np.dtype("<i8"),
    "INT32": np.dtype("<i4"),
    "INT16": np.dtype("<i2"),
    "INT8": np.dtype("i1"),
    "UINT64": np.dtype("<u8"),
    "UINT32": np.dtype("<u4"),
    "UINT16": np.dtype("<u2"),
    "UINT8": np.dtype("u1"),
}
"""V2 numeric datatypes and their little-endian layout in the binary extension; all become float64."""
V2_NUMERIC_DATATYPES = frozenset(V2_NUMPY_DTYPES)
V2_INTEGER_DATATYPES = frozenset(d for d in V2_NUMPY_DTYPES if d[0] in "IU")
V2_TYPED_DATATYPES = V2_NUMERIC_DATATYPES | {V2_BYTES, V2_BOOL}
"""What a model with categorical or nullable features reads; each feature then checks its own."""
MAX_FEATURE_MAGNITUDE = float(np.finfo(np.float32).max)
"""Largest |value| accepted: the float32 range the ONNX graphs and sklearn's trees compute in, so both backends
answer the same rows (sklearn's forests refuse anything larger; linear models overflow to NaN near 1e308)."""
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
    """What the model expects, from `model.json`: names in column order and, per feature, its kind and nullability.

    `kinds` and `nullable` may be empty: every feature numeric and never missing (schema_version 1 cards).
    """

    feature_names: tuple[str, ...]
    max_rows: int
    kinds: tuple[str, ...] = ()
    """`numeric` or `categorical` per feature (empty: all numeric)."""
    nullable: tuple[bool, ...] = ()
    """Whether `null` is allowed per feature (empty: nowhere)."""

    @classmethod
    def of(cls, features: Sequence[Any], max_rows: int) -> FeatureSpec:
        """The spec for typed features (anything with `name`, `kind`, `nullable` and `categories`)."""
        return cls(
            tuple(f.name for f in features),
            max_rows,
            tuple(f.kind for f in features),
            tuple(bool(f.nullable) for f in features),
        )

    @property
    def n_features(self) -> int:
        """Number of input columns."""
        return len(self.feature_names)

    @property
    def typed(self) -> bool:
        """Whether requests need the typed (object matrix) path: a categorical or a nullable feature."""
        return CATEGORICAL in self.kinds or any(self.nullable)

    @property
    def categorical_names(self) -> list[str]:
        """The categorical features, in column order."""
        return [n for n, k in zip(self.feature_names, self.kinds, strict=False) if k == CATEGORICAL]

    def kind(self, column: int) -> str:
        """`numeric` or `categorical`."""
        return self.kinds[column] if self.kinds else NUMERIC

    def may_be_null(self, column: int) -> bool:
        """Whether this feature accepts a missing value."""
        return bool(self.nullable) and self.nullable[column]

    def describe(self, column: int) -> str:
        """`feature 'x' (categorical, nullable)`: the name and what it takes, for messages."""
        kind = self.kind(column) + (", nullable" if self.may_be_null(column) else "")
        return f"feature '{_short(self.feature_names[column])}' ({kind})"


def check_content_type(content_type: str | None, header_length: str | None = None, *, v2: bool = False) -> int | None:
    """Check the media type; returns None for a JSON body, or the JSON length of a V2 binary-extension body.

    A body without Content-Type is read as JSON (tritonclient sends none, also with binary tensors, where the
    `Inference-Header-Content-Length` header says it is binary). Anything else but JSON or, on V2, the binary
    extension's `application/octet-stream` is a 415.
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if v2 and header_length is not None and media_type in ("", BINARY_MEDIA_TYPE, JSON_MEDIA_TYPE):
        if not header_length.isdigit():
            raise ClientError(
                "Inference-Header-Content-Length must be a byte count", reason="malformed_binary", status=400
            )
        return int(header_length)
    if media_type == JSON_MEDIA_TYPE or not media_type:
        return None
    if v2 and media_type == BINARY_MEDIA_TYPE:
        raise ClientError(
            f"an {BINARY_MEDIA_TYPE} body needs the Inference-Header-Content-Length header (the JSON part's length)",
            reason="malformed_binary",
        )
    allowed = f"{JSON_MEDIA_TYPE} or {BINARY_MEDIA_TYPE}" if v2 else JSON_MEDIA_TYPE
    raise ClientError(f"Content-Type must be {allowed} (got {_short(media_type)})", reason="content_type", status=415)


def split_binary(body: bytes, header_length: int) -> tuple[dict[str, Any], memoryview]:
    """Split a binary-extension body into its JSON object and the raw tensor bytes that follow it."""
    if header_length == 0 or header_length > len(body):
        raise ClientError(
            f"Inference-Header-Content-Length is {header_length} but the body has {len(body)} bytes",
            reason="malformed_binary",
        )
    view = memoryview(body)
    return parse_json_object(view[:header_length]), view[header_length:]


def parse_json_object(body: bytes | memoryview) -> dict[str, Any]:
    """Decode a request body that must be one JSON object."""
    if not body:
        raise ClientError("request body is empty; send a JSON object", reason="malformed_json")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        text = str(exc)
        if "infinity" in text:
            raise ClientError(f"a number is out of float64 range ({_short(text)})", reason="out_of_range") from None
        # Name NaN/Infinity only when that is what the parser stopped at, not for a truncated or mangled body.
        at = bytes(body[exc.pos : exc.pos + 9]).lstrip(b"-+")
        hint = " (NaN and Infinity are not JSON numbers)" if at.startswith((b"NaN", b"Infinity")) else ""
        raise ClientError(f"body is not valid JSON{hint}: {_short(text)}", reason="malformed_json") from None
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
    _check_list_rows(instances, spec, values="numbers")
    return _matrix(instances, spec)


def _single_tensor_shape(name: str, shape: list[int], spec: FeatureSpec) -> list[int]:
    """The [N, n_features] shape of a request's one all-feature tensor ([N] for a one-feature model), rows checked."""
    if spec.n_features == 1 and len(shape) == 1:
        shape = [shape[0], 1]
    if len(shape) != 2 or shape[1] != spec.n_features:
        raise ClientError(
            f"input '{_short(name)}' has shape {shape}; a single input needs shape [N, {spec.n_features}] "
            f"(columns {_names(spec.feature_names)}), or send one input per feature, named as in the metadata",
            reason="feature_count",
        )
    _check_row_count(shape[0], spec, v2=True)
    return shape


def _check_list_rows(rows: list[Any], spec: FeatureSpec, *, values: str) -> None:
    """Every V1 row is a list of the model's feature count; the message names the first row that is not."""
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ClientError(
                f"instances[{i}] must be a list of {spec.n_features} {values} or an object keyed by feature name, "
                f"got {_json_type(row)}",
                reason="bad_instances",
            )
        if len(row) != spec.n_features:
            raise ClientError(
                f"instances[{i}] has {len(row)} values; the model expects {spec.n_features} "
                f"({_names(spec.feature_names)})",
                reason="feature_count",
            )


def rows_from_v2(payload: Mapping[str, Any], spec: FeatureSpec, binary: memoryview | None = None) -> np.ndarray:
    """Validate an Open Inference Protocol request.

    Accepts either one tensor per feature (named as in the model metadata, shape [N] or [N, 1]) or a single
    tensor of shape [N, n_features] in feature order. With the binary tensor extension, a tensor whose
    `parameters.binary_data_size` is set takes its values from `binary` (little-endian, in input order).
    """
    tensors = _v2_tensors(payload, spec, binary, typed=False)
    if len(tensors) == 1 and tensors[0][0] not in spec.feature_names:
        name, shape, data, _ = tensors[0]
        shape = _single_tensor_shape(name, shape, spec)
        return _matrix_from_flat(name, data, shape, spec)
    rows = _check_feature_inputs(tensors, spec)
    columns: dict[str, np.ndarray] = {}
    for name, _, data, _ in tensors:
        columns[name] = _matrix_from_flat(name, data, [rows, 1], FeatureSpec((name,), spec.max_rows))[:, 0]
    return np.column_stack([columns[name] for name in spec.feature_names])


def _check_feature_inputs(tensors: list[tuple[str, list[int], Any, str]], spec: FeatureSpec) -> int:
    """One input per feature, each named as a feature, all with the same rows; returns the row count."""
    names = [name for name, _, _, _ in tensors]
    _check_feature_names(set(names), spec, where="inputs")
    if len(set(names)) != len(names):
        raise ClientError("two inputs share a name", reason="feature_names")
    rows = tensors[0][1][0]
    _check_row_count(rows, spec, v2=True)
    for name, shape, _, _ in tensors:
        if shape[0] != rows or (len(shape) == 2 and shape[1] != 1) or len(shape) > 2:
            raise ClientError(
                f"input '{_short(name)}' has shape {shape}; feature inputs need shape [{rows}] or [{rows}, 1]",
                reason="bad_shape",
            )
    return rows


def typed_rows_from_v1(payload: Mapping[str, Any], spec: FeatureSpec) -> np.ndarray:
    """V1 `instances` for a model with categorical or nullable features: the object matrix training used.

    Strings are accepted exactly where the feature is categorical; a number or boolean sent for a categorical
    feature becomes the text training knew it by (`components.features.category_value`: 3 -> "3", true -> "true").
    `null` is accepted exactly where the feature is nullable.
    """
    if "instances" not in payload:
        raise ClientError("body has no 'instances' key; send {\"instances\": [[...], ...]}", reason="bad_instances")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise ClientError(f"'instances' must be a list of rows, got {_json_type(instances)}", reason="bad_instances")
    _check_row_count(len(instances), spec)
    if isinstance(instances[0], dict):
        rows = [_row_from_mapping(i, row, spec) for i, row in enumerate(instances)]
    else:
        rows = instances
        _check_list_rows(rows, spec, values="values")
    convert = _converters(spec)
    matrix = np.empty((len(rows), spec.n_features), dtype=object)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            try:
                matrix[i, j] = convert[j](value)
            except _Refused as exc:
                raise exc.at(f"instances[{i}], {spec.describe(j)}") from None
    return matrix


def typed_rows_from_v2(payload: Mapping[str, Any], spec: FeatureSpec, binary: memoryview | None = None) -> np.ndarray:
    """Open Inference Protocol inputs for a model with categorical or nullable features (object matrix).

    One input per feature, named as in the metadata: a numeric datatype for a numeric feature, `BYTES` (or an
    integer datatype) for a categorical one. When no feature is categorical, one `[N, n_features]` numeric input
    works too. `null` in JSON data, or NaN in a floating-point tensor, is a missing value where the feature is
    nullable.
    """
    tensors = _v2_tensors(payload, spec, binary, typed=True)
    convert = _converters(spec)
    if len(tensors) == 1 and tensors[0][0] not in spec.feature_names:
        name, shape, data, datatype = tensors[0]
        if spec.categorical_names:
            raise ClientError(
                f"input '{_short(name)}' is not a feature; this model has categorical features "
                f"({_names(spec.categorical_names)}): send one input per feature, named as in the metadata, "
                f"{V2_BYTES} for the categorical ones",
                reason="feature_names",
            )
        shape = _single_tensor_shape(name, shape, spec)
        if datatype not in V2_NUMERIC_DATATYPES:
            raise ClientError(
                f"input '{_short(name)}' has datatype {datatype}; the features are numeric: use {V2_FP64}",
                reason="bad_datatype",
            )
        flat = data.tolist() if isinstance(data, np.ndarray) else data
        matrix = np.empty((shape[0], spec.n_features), dtype=object)
        for k, value in enumerate(flat):
            i, j = divmod(k, spec.n_features)
            try:
                matrix[i, j] = convert[j](_missing_if_nan(value))
            except _Refused as exc:
                raise exc.at(f"input '{_short(name)}', row {i}, {spec.describe(j)}") from None
        return matrix
    rows = _check_feature_inputs(tensors, spec)
    index = {name: j for j, name in enumerate(spec.feature_names)}
    matrix = np.empty((rows, spec.n_features), dtype=object)
    for name, _, data, datatype in tensors:
        j = index[name]
        _check_feature_datatype(name, datatype, spec, j)
        if isinstance(data, np.ndarray):
            # Binary integers arrive as float64 (exact below 2**53); a category needs the integer's digits.
            categorical_ints = datatype in V2_INTEGER_DATATYPES and spec.kind(j) == CATEGORICAL
            values = (data.astype(np.int64) if categorical_ints else data).tolist()
        else:
            values = data
        for i, value in enumerate(values):
            try:
                matrix[i, j] = convert[j](_missing_if_nan(value))
            except _Refused as exc:
                raise exc.at(f"input '{_short(name)}', row {i}, {spec.describe(j)}") from None
    return matrix


def _check_feature_datatype(name: str, datatype: str, spec: FeatureSpec, column: int) -> None:
    if spec.kind(column) == CATEGORICAL:
        allowed = datatype in (V2_BYTES, V2_BOOL) or datatype in V2_INTEGER_DATATYPES
        expected = f"{V2_BYTES} (strings)"
    else:
        allowed = datatype in V2_NUMERIC_DATATYPES
        expected = f"{V2_FP64} or another numeric datatype"
    if not allowed:
        raise ClientError(
            f"input '{_short(name)}' has datatype {datatype}; {spec.describe(column)} takes {expected}",
            reason="bad_datatype",
        )


def _missing_if_nan(value: Any) -> Any:
    # A binary or gRPC float tensor cannot carry null: NaN is how numpy clients say "missing".
    return None if type(value) is float and value != value else value


class _Refused(Exception):
    """A value a feature does not take; `at()` turns it into the ClientError naming where it was."""

    def __init__(self, expected: str, got: Any, reason: str) -> None:
        super().__init__(expected)
        self.expected, self.got, self.reason = expected, got, reason

    def at(self, where: str) -> ClientError:
        return ClientError(f"{where}: {self.expected}, got {self.got}", reason=self.reason)


def _converters(spec: FeatureSpec) -> list[Callable[[Any], Any]]:
    """One function per feature turning a JSON value into the matrix cell, or raising `_Refused`."""
    return [
        _categorical(spec.may_be_null(j)) if spec.kind(j) == CATEGORICAL else _numeric(spec.may_be_null(j))
        for j in range(spec.n_features)
    ]


def _numeric(nullable: bool) -> Callable[[Any], Any]:
    expected = "expected a number" + (" or null" if nullable else "")

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is float or kind is int:
            try:
                number = float(value)
            except OverflowError:
                raise _Refused("a number within float64 range", "a larger integer", "out_of_range") from None
            if not -MAX_FEATURE_MAGNITUDE <= number <= MAX_FEATURE_MAGNITUDE:
                raise _Refused(
                    f"|x| <= {MAX_FEATURE_MAGNITUDE:.3g} (the range this model computes in)",
                    f"{number:.3g}",
                    "out_of_range",
                )
            return number
        if value is None:
            if nullable:
                return np.nan
            raise _Refused(expected + " (this feature was never missing in training)", "null", "null_value")
        raise _Refused(expected, _json_type(value), "non_numeric")

    return convert


def _categorical(nullable: bool) -> Callable[[Any], Any]:
    expected = "expected a string (a category)" + (" or null" if nullable else "")

    def convert(value: Any) -> Any:
        kind = type(value)
        if kind is str:
            return value
        if kind is int or kind is bool or kind is float:
            # The text training knows the value by: 3 and 3.0 -> "3", true -> "true" (a bool or int column).
            return category_value(value)
        if value is None:
            if nullable:
                return np.nan
            raise _Refused(expected + " (this feature was never missing in training)", "null", "null_value")
        raise _Refused(expected, _json_type(value), "non_categorical")

    return convert


def _v2_tensors(
    payload: Mapping[str, Any], spec: FeatureSpec, binary: memoryview | None, *, typed: bool
) -> list[tuple[str, list[int], Any, str]]:
    """The request's tensors as (name, shape, values, datatype), binary data consumed exactly."""
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ClientError("'inputs' must be a non-empty list of tensors", reason="bad_inputs")
    if len(inputs) > spec.n_features:
        # Bounded work: one tensor per feature at most, whatever else the body holds.
        raise ClientError(
            f"{len(inputs)} inputs; the model takes one [N, {spec.n_features}] input or one input per feature",
            reason="bad_inputs",
        )
    raw = binary if binary is not None else memoryview(b"")
    tensors = []
    offset = 0
    for i, tensor in enumerate(inputs):
        name, shape, data, used = _tensor(i, tensor, raw, offset, typed=typed)
        tensors.append((name, shape, data, tensor["datatype"]))
        offset += used
    if offset != len(raw):
        raise ClientError(
            f"the body has {len(raw) - offset} bytes of binary data that no input's binary_data_size claims",
            reason="malformed_binary",
        )
    return tensors


def _tensor(
    index: int, raw: Any, binary: memoryview, offset: int, *, typed: bool = False
) -> tuple[str, list[int], Any, int]:
    """(name, shape, values, binary bytes used): values are a flat list (JSON) or an array (binary).

    Binary numeric values come as float64, binary BOOL as bool and binary BYTES as a list of str.
    """
    if not isinstance(raw, dict):
        raise ClientError(f"inputs[{index}] must be an object", reason="bad_inputs")
    name, shape, datatype, data = raw.get("name"), raw.get("shape"), raw.get("datatype"), raw.get("data")
    if not isinstance(name, str):
        raise ClientError(f"inputs[{index}] needs a string 'name'", reason="bad_inputs")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise ClientError(f"input '{_short(name)}' needs a 'shape' of non-negative integers", reason="bad_shape")
    if typed and datatype in V2_TYPED_DATATYPES:
        pass  # each feature checks its own datatype once the inputs are matched to features
    elif datatype not in V2_NUMERIC_DATATYPES:
        raise ClientError(
            f"input '{_short(name)}' has datatype {_short(str(datatype))}; use {V2_FP64} or another numeric "
            "datatype (features are numbers)",
            reason="bad_datatype",
        )
    size = math.prod(shape)
    if data is None:
        values, used = _binary_values(name, raw.get("parameters"), datatype, size, binary, offset)
        return name, shape, values, used
    if not isinstance(data, list):
        raise ClientError(f"input '{_short(name)}' needs 'data' as a list", reason="bad_inputs")
    if data and isinstance(data[0], list):
        data = [v for row in data for v in (row if isinstance(row, list) else [row])]
    if len(data) != size:
        raise ClientError(
            f"input '{_short(name)}' has {len(data)} values but shape {shape} needs {size}", reason="bad_shape"
        )
    return name, shape, data, 0


def _binary_values(
    name: str, parameters: Any, datatype: str, size: int, binary: memoryview, offset: int
) -> tuple[Any, int]:
    nbytes = parameters.get(BINARY_DATA_SIZE) if isinstance(parameters, dict) else None
    if nbytes is None:
        raise ClientError(
            f"input '{_short(name)}' has neither 'data' nor parameters.{BINARY_DATA_SIZE}", reason="bad_inputs"
        )
    if datatype == V2_BYTES:
        return _binary_strings(name, nbytes, size, binary, offset), nbytes
    dtype = V2_NUMPY_DTYPES[datatype] if datatype != V2_BOOL else np.dtype("?")
    if type(nbytes) is not int or nbytes != size * dtype.itemsize:
        raise ClientError(
            f"input '{_short(name)}': {BINARY_DATA_SIZE} must be {size * dtype.itemsize} "
            f"({size} {datatype} values), got {_short(str(nbytes))}",
            reason="malformed_binary",
        )
    if offset + nbytes > len(binary):
        raise ClientError(
            f"input '{_short(name)}' needs {nbytes} bytes of binary data; only {len(binary) - offset} are left",
            reason="malformed_binary",
        )
    values = np.frombuffer(binary, dtype=dtype, count=size, offset=offset)
    return (values.copy() if datatype == V2_BOOL else values.astype(np.float64)), nbytes


def _binary_strings(name: str, nbytes: Any, size: int, binary: memoryview, offset: int) -> list[str]:
    """Decode `size` length-prefixed UTF-8 elements that fill exactly `nbytes` bytes at `offset`."""
    if type(nbytes) is not int or nbytes < size * _LENGTH_PREFIX or offset + nbytes > len(binary):
        raise ClientError(
            f"input '{_short(name)}': {BINARY_DATA_SIZE} must cover {size} length-prefixed BYTES elements "
            f"within the {len(binary) - offset} bytes left",
            reason="malformed_binary",
        )
    chunk = bytes(binary[offset : offset + nbytes])
    values, at = [], 0
    for i in range(size):
        if at + _LENGTH_PREFIX > nbytes:
            raise ClientError(f"input '{_short(name)}': BYTES element {i} is cut off", reason="malformed_binary")
        length = int.from_bytes(chunk[at : at + _LENGTH_PREFIX], "little")
        at += _LENGTH_PREFIX
        if at + length > nbytes:
            raise ClientError(f"input '{_short(name)}': BYTES element {i} is cut off", reason="malformed_binary")
        try:
            values.append(chunk[at : at + length].decode())
        except UnicodeDecodeError:
            raise ClientError(f"input '{_short(name)}': BYTES element {i} is not UTF-8", reason="bad_value") from None
        at += length
    if at != nbytes:
        raise ClientError(
            f"input '{_short(name)}': {nbytes - at} bytes after its {size} BYTES elements", reason="malformed_binary"
        )
    return values


def _matrix_from_flat(name: str, data: Any, shape: Sequence[int], spec: FeatureSpec) -> np.ndarray:
    where = f"input '{_short(name)}'"
    if isinstance(data, np.ndarray):
        return _checked_range(data.reshape(shape[0], spec.n_features), where=where, names=spec.feature_names)
    _check_values(data, where=where)
    return _to_float64(data, where=where, names=spec.feature_names).reshape(shape[0], spec.n_features)


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


def _check_row_count(rows: int, spec: FeatureSpec, *, v2: bool = False) -> None:
    if rows == 0:
        if v2:
            raise ClientError("no rows to predict: the inputs have 0 rows", reason="bad_inputs")
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
    return _to_float64(flat, where="instances", names=spec.feature_names).reshape(len(rows), spec.n_features)


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


def _to_float64(values: list[Any], *, where: str, names: Sequence[str]) -> np.ndarray:
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except OverflowError:
        raise ClientError(f"{where}: a number is out of float64 range", reason="out_of_range") from None
    # JSON numbers are never NaN or infinite (the parser refuses them), so the bounds are all there is to check,
    # and on a short list Python's max/min cost a fraction of a numpy pass.
    if values and (max(values) > MAX_FEATURE_MAGNITUDE or min(values) < -MAX_FEATURE_MAGNITUDE):
        _checked_range(matrix.reshape(-1, len(names)), where=where, names=names)
    return matrix


def _checked_range(matrix: np.ndarray, *, where: str, names: Sequence[str]) -> np.ndarray:
    """Refuse NaN, infinities and values beyond MAX_FEATURE_MAGNITUDE, naming the row and feature."""
    # One vectorised pass; NaN compares false, so it fails too.
    if (np.abs(matrix) <= MAX_FEATURE_MAGNITUDE).all():
        return matrix
    row, column = (int(i) for i in np.argwhere(~(np.abs(matrix) <= MAX_FEATURE_MAGNITUDE))[0])
    value = float(matrix[row, column])
    shown = "NaN" if math.isnan(value) else f"{value:.3g}"
    raise ClientError(
        f"{where}, row {row}, feature '{_short(names[column])}': {shown} is outside the range this model computes "
        f"in (|x| <= {MAX_FEATURE_MAGNITUDE:.3g})",
        reason="out_of_range",
    )


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
