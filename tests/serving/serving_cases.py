"""Client mistakes and the answer each must get; shared by the unit tests and the live-server tests."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

GOOD_ROW = [5.1, 3.5, 1.4, 0.2]
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
MAX_ROWS = 50
"""The shared live server runs with --max_rows=50 (and --max_body_bytes=20000)."""
MAX_BODY_BYTES = 20_000
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    id: str
    body: bytes
    status: int
    reason: str
    says: str
    """A fragment the error message must contain (case-insensitive)."""
    content_type: str | None = JSON
    v2: bool = False
    header_length: int | None = None
    """Inference-Header-Content-Length (the binary tensor extension), when set."""
    not_says: str = ""
    """A fragment the message must NOT contain (misleading hints), when set."""


def _v1(instances: object, **extra: object) -> bytes:
    return json.dumps({"instances": instances, **extra}).encode()


def _v2(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def _tensor(data: list, shape: list[int], name: str = "input-0", datatype: str = "FP64") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def binary_body(tensors: list[tuple[str, list[int], str, bytes]], **extra: object) -> tuple[bytes, int]:
    """A binary-extension body (JSON header + raw bytes) and its Inference-Header-Content-Length."""
    inputs = [
        {"name": n, "shape": shape, "datatype": dt, "parameters": {"binary_data_size": len(raw)}}
        for n, shape, dt, raw in tensors
    ]
    header = json.dumps({"inputs": inputs, **extra}).encode()
    return header + b"".join(raw for *_, raw in tensors), len(header)


def _binary_case(id: str, tensors: list, status: int, reason: str, says: str, *, cut: int = 0, **extra: object) -> Case:
    body, length = binary_body(tensors, **extra)
    return Case(id, body[: len(body) - cut], status, reason, says, "application/octet-stream", True, length)


_ROW_F8 = struct.pack("<4d", *GOOD_ROW)


CASES = [
    Case(
        "truncated-json",
        b'{"instances": [[5.1, 3.5, 1.4, 0.2]',
        400,
        "malformed_json",
        "not valid json",
        not_says="NaN",
    ),
    Case("xml-content-type", b"<instances/>", 415, "content_type", "application/json", content_type="text/xml"),
    Case("wrong-content-type", _v1([GOOD_ROW]), 415, "content_type", "content-type", content_type="text/plain"),
    Case(
        "form-content-type",
        _v1([GOOD_ROW]),
        415,
        "content_type",
        "application/json",
        content_type="application/x-www-form-urlencoded",
    ),
    Case("empty-body", b"", 400, "malformed_json", "empty"),
    Case("null-body", b"null", 400, "malformed_json", "json object"),
    Case("list-body", b"[[5.1, 3.5, 1.4, 0.2]]", 400, "malformed_json", "json object"),
    Case("missing-instances", b"{}", 400, "bad_instances", "no 'instances'"),
    Case("empty-instances", _v1([]), 400, "bad_instances", "empty"),
    Case("string-instances", _v1("5.1,3.5"), 400, "bad_instances", "must be a list"),
    Case("object-instances", _v1({"a": 1}), 400, "bad_instances", "must be a list"),
    Case("flat-instances", _v1(GOOD_ROW), 400, "bad_instances", "instances[0] must be a list"),
    Case("ragged-rows", _v1([GOOD_ROW, GOOD_ROW[:3]]), 400, "feature_count", "instances[1] has 3 values"),
    Case("too-few-features", _v1([GOOD_ROW[:3]]), 400, "feature_count", "expects 4"),
    Case("too-many-features", _v1([[*GOOD_ROW, 1.0]]), 400, "feature_count", "expects 4"),
    Case(
        "unknown-feature-name",
        _v1([{**dict(zip(FEATURES, GOOD_ROW, strict=True)), "colour": 1.0}]),
        400,
        "feature_names",
        "unknown feature(s) 'colour'",
    ),
    Case(
        "missing-feature-name",
        _v1([dict(zip(FEATURES[:3], GOOD_ROW[:3], strict=True))]),
        400,
        "feature_names",
        "missing feature(s) 'petal width (cm)'",
    ),
    Case(
        "mixed-row-kinds",
        _v1([dict(zip(FEATURES, GOOD_ROW, strict=True)), GOOD_ROW]),
        400,
        "bad_instances",
        "do not mix",
    ),
    Case("string-value", _v1([[5.1, 3.5, 1.4, "0.2"]]), 400, "non_numeric", "got a string"),
    Case("null-value", _v1([[5.1, 3.5, None, 0.2]]), 400, "non_numeric", "got null"),
    Case("boolean-value", _v1([[5.1, True, 1.4, 0.2]]), 400, "non_numeric", "got a boolean"),
    Case("nested-value", _v1([[5.1, 3.5, 1.4, [0.2]]]), 400, "non_numeric", "got a list"),
    Case("nan", b'{"instances": [[5.1, 3.5, 1.4, NaN]]}', 400, "malformed_json", "nan"),
    Case("infinity", b'{"instances": [[5.1, 3.5, 1.4, Infinity]]}', 400, "malformed_json", "infinity"),
    Case("extreme-finite", _v1([[1.7e308] * 4]), 400, "out_of_range", "feature 'sepal length (cm)'"),
    Case("extreme-negative", _v1([[5.1, 3.5, 1.4, -1e39]]), 400, "out_of_range", "feature 'petal width (cm)'"),
    Case("float-overflow", b'{"instances": [[5.1, 3.5, 1.4, 1e400]]}', 400, "out_of_range", "float64 range"),
    Case("int-overflow", b'{"instances": [[5.1, 3.5, 1.4, 1' + b"0" * 400 + b"]]}", 400, "out_of_range", "range"),
    Case("too-many-rows", _v1([GOOD_ROW] * (MAX_ROWS + 1)), 400, "too_many_rows", f"limit is {MAX_ROWS}"),
    Case(
        "bad-probability-flag",
        _v1([GOOD_ROW], parameters={"return_probabilities": "yes"}),
        400,
        "bad_parameters",
        "true or false",
    ),
    Case("parameters-not-object", _v1([GOOD_ROW], parameters=[1]), 400, "bad_parameters", "must be an object"),
    # --- V2 / Open Inference Protocol -------------------------------------------------------------------
    Case("v2-no-inputs", b"{}", 400, "bad_inputs", "'inputs'", v2=True),
    Case("v2-zero-rows", _v2(_tensor([], [0, 4])), 400, "bad_inputs", "0 rows", v2=True, not_says="instances"),
    Case(
        "v2-matrix-column-count",
        _v2(_tensor(GOOD_ROW[:3], [1, 3])),
        400,
        "feature_count",
        "shape [N, 4]",
        v2=True,
        not_says="unknown feature",
    ),
    Case(
        "v2-bool-datatype", _v2(_tensor([True] * 4, [1, 4], datatype="BOOL")), 400, "bad_datatype", "input-0", v2=True
    ),
    Case("v2-extreme-value", _v2(_tensor([1.7e308] * 4, [1, 4])), 400, "out_of_range", "sepal length", v2=True),
    Case("v2-bytes-datatype", _v2(_tensor(GOOD_ROW, [1, 4], datatype="BYTES")), 400, "bad_datatype", "FP64", v2=True),
    Case("v2-shape-mismatch", _v2(_tensor(GOOD_ROW, [2, 4])), 400, "bad_shape", "needs 8", v2=True),
    Case("v2-negative-shape", _v2(_tensor(GOOD_ROW, [-1, 4])), 400, "bad_shape", "non-negative", v2=True),
    Case("v2-string-value", _v2(_tensor([5.1, 3.5, "x", 0.2], [1, 4])), 400, "non_numeric", "string", v2=True),
    Case(
        "v2-unknown-feature",
        _v2(*[_tensor([v], [1], name=n) for n, v in zip([*FEATURES[:3], "colour"], GOOD_ROW, strict=True)]),
        400,
        "feature_names",
        "unknown feature(s) 'colour'",
        v2=True,
    ),
    Case(
        "v2-too-many-rows",
        _v2(_tensor(GOOD_ROW * (MAX_ROWS + 1), [MAX_ROWS + 1, 4])),
        400,
        "too_many_rows",
        "limit",
        v2=True,
    ),
    Case(
        "v2-unknown-output",
        _v2(_tensor(GOOD_ROW, [1, 4]), outputs=[{"name": "logits"}]),
        400,
        "bad_outputs",
        "unknown output",
        v2=True,
    ),
    Case("v2-wrong-content-type", _v2(_tensor(GOOD_ROW, [1, 4])), 415, "content_type", "", "text/plain", v2=True),
    # --- V2 binary tensor extension --------------------------------------------------------------------
    Case(
        "binary-without-header-length",
        _ROW_F8,
        400,
        "malformed_binary",
        "Inference-Header-Content-Length",
        "application/octet-stream",
        True,
    ),
    _binary_case("binary-truncated", [("input-0", [1, 4], "FP64", _ROW_F8)], 400, "malformed_binary", "left", cut=8),
    _binary_case(
        "binary-wrong-size",
        [("input-0", [2, 4], "FP64", _ROW_F8)],
        400,
        "malformed_binary",
        "binary_data_size must be 64",
    ),
    _binary_case("binary-bytes-datatype", [("words", [1, 4], "BYTES", b"abcd")], 400, "bad_datatype", "'words'"),
    _binary_case("binary-bool-datatype", [("flags", [1, 4], "BOOL", b"\1\0\1\0")], 400, "bad_datatype", "'flags'"),
    _binary_case(
        "binary-nan",
        [("input-0", [1, 4], "FP32", struct.pack("<4f", 5.1, float("nan"), 1.4, 0.2))],
        400,
        "out_of_range",
        "sepal width",
    ),
    Case(
        "binary-extra-bytes",
        binary_body([("input-0", [1, 4], "FP64", _ROW_F8)])[0] + b"xx",
        400,
        "malformed_binary",
        "2 bytes",
        "application/octet-stream",
        True,
        binary_body([("input-0", [1, 4], "FP64", _ROW_F8)])[1],
    ),
]


SLOW_ROWS = 7
"""A request with exactly this many rows makes the `slow_identity` model pause (see test_shutdown.py)."""


def slow_identity(x, marker: str = ""):
    """Identity transform that, for a SLOW_ROWS-row request, signals it started (marker file) then pauses.

    Lives here so a server subprocess with this folder on PYTHONPATH can unpickle it.
    """
    import time
    from pathlib import Path

    if marker and len(x) == SLOW_ROWS:
        Path(marker).write_text("in flight")
        time.sleep(2.0)
    return x


def large_bad_bodies() -> list[tuple[str, bytes]]:
    """~0.9 MB bodies (under the default 1 MiB limit) that each fail the contract (issue 12 item 3)."""
    size = 900_000
    numbers = ",".join(["5.1"] * (size // 4))
    many = [{"name": f"f{i}", "shape": [1], "datatype": "FP64", "data": [1]} for i in range(size // 60)]
    return [
        ("wrong-shape", f'{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP64","data":[{numbers}]}}]}}'.encode()),
        ("huge-name", json.dumps({"inputs": [{"name": "A" * size, "shape": [1, 4], "datatype": "FP64"}]}).encode()),
        ("deep-nesting", b'{"inputs":' + b"[" * (size // 2) + b"]" * (size // 2) + b"}"),
        ("many-inputs", json.dumps({"inputs": many}).encode()),
        ("truncated", f'{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP64","data":[{numbers}'.encode()),
    ]


def attack(url: str, seconds: float) -> None:
    """Post `large_bad_bodies()` to `url` in a loop for `seconds` (run in its own process by a test)."""
    import time

    import httpx

    bodies = large_bad_bodies()
    deadline = time.monotonic() + seconds
    sent = 0
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < deadline:
            for _, body in bodies:
                client.post(url, content=body, headers={"content-type": "application/json"})
                sent += 1
                print(f"attack requests: {sent}", flush=True)
