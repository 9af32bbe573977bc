"""Drive a gRPC server with tritonclient.grpc in its own process and print what it saw as JSON.

tritonclient.grpc and kserve both register the protobuf package `inference` in protobuf's default descriptor
pool, so the two cannot be imported into one Python process ("duplicate symbol 'inference.ServerLiveRequest'").
The test process imports kserve; this script is run by tests/serving/test_grpc.py with
`python grpc_triton_client.py TARGET MODEL '<json: rows, int_rows, features>'` (or `'<json: columns>'`: one
[name, datatype, values] per feature of a typed model).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def _error(call: Any) -> dict[str, str]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": str(exc.message())}
    return {"status": "OK", "message": ""}


def _infer(client: triton.InferenceServerClient, model: str, rows: np.ndarray, datatype: str) -> dict[str, Any]:
    tensor = triton.InferInput("input-0", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)  # tritonclient.grpc always sends raw_input_contents
    outputs = [triton.InferRequestedOutput("predict"), triton.InferRequestedOutput("predict_proba")]
    result = client.infer(model, [tensor], outputs=outputs)
    return {
        "predict": result.as_numpy("predict").tolist(),
        "predict_proba": result.as_numpy("predict_proba").tolist(),
        "raw_outputs": len(result.get_response().raw_output_contents),
    }


def typed(target: str, model: str, columns: list[tuple[str, str, list[Any]]]) -> dict[str, Any]:
    """One input per feature (BYTES for categorical ones, sent raw as tritonclient.grpc always does)."""
    client = triton.InferenceServerClient(target)
    tensors = []
    for name, datatype, values in columns:
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(np.array(values, dtype=object if datatype == "BYTES" else np.float64))
        tensors.append(tensor)
    labels = client.infer(model, tensors).as_numpy("predict").tolist()
    wrong = triton.InferInput(columns[-1][0], [len(columns[-1][2])], "FP64")
    wrong.set_data_from_numpy(np.zeros(len(columns[-1][2])))
    return {
        "metadata": client.get_model_metadata(model, as_json=True),
        "predict": [v.decode() if isinstance(v, bytes) else v for v in labels],
        "wrong_datatype": _error(lambda: client.infer(model, [*tensors[:-1], wrong])),
    }


def main(target: str, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Every call the test checks, in one process."""
    if "columns" in spec:
        return typed(target, model, spec["columns"])
    client = triton.InferenceServerClient(target)
    rows = np.array(spec["rows"], dtype=np.float64)
    seen: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": _error(lambda: client.is_model_ready("nope")),
        "metadata": client.get_model_metadata(model, as_json=True),
        "server_metadata": client.get_server_metadata(as_json=True),
        "infer": {
            "FP32": _infer(client, model, rows.astype(np.float32), "FP32"),
            "FP64": _infer(client, model, rows, "FP64"),
            "INT64": _infer(client, model, np.array(spec["int_rows"], dtype=np.int64), "INT64"),
        },
    }
    per_feature = []
    for j, name in enumerate(spec["features"]):
        tensor = triton.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, j]))
        per_feature.append(tensor)
    seen["per_feature"] = client.infer(model, per_feature).as_numpy("predict").tolist()
    short = triton.InferInput("input-0", [1, 3], "FP64")
    short.set_data_from_numpy(rows[:1, :3].copy())
    seen["wrong_shape"] = _error(lambda: client.infer(model, [short]))
    full = triton.InferInput("input-0", [1, rows.shape[1]], "FP64")
    full.set_data_from_numpy(rows[:1].copy())
    seen["unknown_model"] = _error(lambda: client.infer("nope", [full]))
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))))
