"""gRPC (Open Inference Protocol) throughput: the project's predictor against stock KServe's gRPC server, in one run.

Run: .venv/bin/python benchmarks/grpc_serving.py [--duration 5] [--repeat 3] [--models iris-lr rf100]
     [--concurrencies 1 16] [--c1-cross-core]
Prints a markdown table and writes benchmarks/results/grpc-<ts>.json.

Same models as benchmarks/serving.py (trained here, never committed): Iris StandardScaler+LogisticRegression and
RandomForest(100 trees) over make_classification(100_000, 20). The baseline is what KServe's sklearnserver does for
a V2 request: a `kserve.Model` that joblib-loads `model.joblib` and predicts `get_predict_input(request)` behind the
stock `kserve.ModelServer(enable_grpc=True)` (KServe's InferenceServicer, its interceptors and the dataplane). Both
get the same `ModelInferRequest`: one FP64 input `[1, n_features]` in `raw_input_contents`, as tritonclient.grpc
sends it. The load generator is a grpc.aio client in its own process that sends pre-serialized bytes and does not
decode answers (only the first answer of each run is decoded and checked against sklearn), so the client costs as
little Python as possible. Servers are pinned to core 1; at concurrency 1 the client shares that core (strict
turns, no cross-core wake-ups; `--c1-cross-core` puts it on core 0), at concurrency 16 it runs on core 0. Each
number is the best of --repeat rounds, rounds alternating between the two servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import serving as rest_bench  # noqa: E402  (benchmarks/serving.py: the shared models and process helpers)

MODEL_NAME = "bench"
STOCK, OURS = "stock-kserve-grpc", "ours-grpc"
SERVER_CPU, CLIENT_CPU = "1", "0"
CONCURRENCIES = (1, 16)
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


# --- servers ------------------------------------------------------------------------------------------------


def run_stock(model_dir: Path, http_port: int, grpc_port: int) -> None:
    """KServe's sklearnserver path for V2 over gRPC: benchmarks/serving.py's baseline with gRPC enabled."""
    rest_bench.run_baseline(model_dir, http_port, grpc_port)


def start(kind: str, model_dir: Path, work: Path) -> tuple[subprocess.Popen, int]:
    http_port, grpc_port = rest_bench.free_port(), rest_bench.free_port()
    if kind == STOCK:
        argv = [sys.executable, __file__, "--stock-server", str(model_dir), f"--ports={http_port},{grpc_port}"]
    else:
        argv = [sys.executable, "-m", "components.serving", f"--model_dir={model_dir}", f"--model_name={MODEL_NAME}"]
        argv += [f"--http_port={http_port}", f"--grpc_port={grpc_port}", "--host=127.0.0.1", "--max_rows=10000"]
    log = work / f"{model_dir.name}-{kind}.log"
    proc = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *argv],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}; see {log}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                if stub.ModelReady(pb.ModelReadyRequest(name=MODEL_NAME), timeout=1).ready:
                    return proc, grpc_port
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    rest_bench.stop_server(proc)
    raise RuntimeError(f"{kind} not ready after 300 s; see {log}")


def request_bytes(row: np.ndarray) -> bytes:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    message = pb.ModelInferRequest(model_name=MODEL_NAME)
    message.inputs.add(name="input-0", datatype="FP64", shape=[1, row.size])
    message.raw_input_contents.append(np.ascontiguousarray(row, dtype=np.float64).tobytes())
    return message.SerializeToString()


def check_answer(grpc_port: int, payload: bytes, expected: int) -> None:
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        call = channel.unary_unary(INFER_METHOD)
        reply = pb.ModelInferResponse.FromString(call(payload, timeout=30))
    output = reply.outputs[0]
    if reply.raw_output_contents:
        label = np.frombuffer(reply.raw_output_contents[0], dtype="<i8")[0]
    else:
        label = output.contents.int64_contents[0]
    if int(label) != int(expected):
        raise AssertionError(f"server on {grpc_port} answered {label}, sklearn says {expected}")


# --- load ---------------------------------------------------------------------------------------------------


async def _load(target: str, payload: bytes, concurrency: int, duration: float) -> dict[str, float]:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(INFER_METHOD)
        for _ in range(50):  # warm-up: connection, server caches
            await call(payload)
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    await call(payload)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    ms = np.asarray(latencies) * 1e3
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def load(
    grpc_port: int, payload_file: Path, concurrency: int, duration: float, cross_core: bool = False
) -> dict[str, float]:
    cpus = SERVER_CPU if concurrency == 1 and not cross_core else CLIENT_CPU
    argv = ["taskset", "-c", cpus, sys.executable, __file__, "--load", f"127.0.0.1:{grpc_port}", str(payload_file)]
    argv += [f"--concurrency={concurrency}", f"--duration={duration}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, float] = json.loads(done.stdout)
    return result


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per measurement")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per measurement; the best is reported")
    parser.add_argument("--models", nargs="+", default=["iris-lr", "rf100"])
    parser.add_argument("--concurrencies", type=int, nargs="+", default=list(CONCURRENCIES))
    parser.add_argument(
        "--c1-cross-core", action="store_true", help="at concurrency 1 too, run the client on the other core"
    )
    parser.add_argument("--stock-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ports", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stock_server:
        http_port, grpc_port = (int(p) for p in args.ports.split(","))
        run_stock(args.stock_server, http_port, grpc_port)
        return
    if args.load:
        target, payload_file = args.load
        print(json.dumps(asyncio.run(_load(target, Path(payload_file).read_bytes(), args.concurrency, args.duration))))
        return

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        work = Path(tmp)
        models = rest_bench.train_models(work, args.models)
        for model, (directory, x_test, expected) in models.items():
            payload_file = work / f"{model}.bin"
            payload_file.write_bytes(request_bytes(x_test[0]))
            procs = {}
            try:
                for kind in (STOCK, OURS):
                    procs[kind] = start(kind, directory, work)
                    check_answer(procs[kind][1], payload_file.read_bytes(), expected[0])
                    print(f"{model} {kind}: ready, answer checked", flush=True)
                for concurrency in args.concurrencies:
                    tries: dict[str, list[dict[str, float]]] = {STOCK: [], OURS: []}
                    for _ in range(args.repeat):
                        for kind in (STOCK, OURS):
                            tries[kind].append(
                                load(procs[kind][1], payload_file, concurrency, args.duration, args.c1_cross_core)
                            )
                    best = {kind: max(t, key=lambda r: r["requests_per_s"]) for kind, t in tries.items()}
                    rows.append({"model": model, "concurrency": concurrency, **{k: best[k] for k in best}})
                    print(
                        f"  {model} c={concurrency}: "
                        + "; ".join(f"{k} {[round(t['requests_per_s']) for t in v]} req/s" for k, v in tries.items()),
                        flush=True,
                    )
            finally:
                for proc, _ in procs.values():
                    rest_bench.stop_server(proc)
    lines = [
        "| model | rows/req | conc. | stock KServe gRPC req/s | ours gRPC req/s | ratio | stock p50 / p99 ms | "
        "ours p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        stock, ours = row[STOCK], row[OURS]
        lines.append(
            f"| {row['model']} | 1 | {row['concurrency']} | {stock['requests_per_s']:,.0f} | "
            f"{ours['requests_per_s']:,.0f} | **{ours['requests_per_s'] / stock['requests_per_s']:.1f}x** | "
            f"{stock['p50_ms']:.2f} / {stock['p99_ms']:.2f} | {ours['p50_ms']:.2f} / {ours['p99_ms']:.2f} |"
        )
    print("\n".join(lines))
    rest_bench.RESULTS.mkdir(exist_ok=True)
    out = rest_bench.RESULTS / f"grpc-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
