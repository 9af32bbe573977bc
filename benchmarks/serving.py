"""Throughput and latency of the project's predictor against a stock-KServe-sklearnserver baseline, in one run.

Run: .venv/bin/python benchmarks/serving.py [--duration 5] [--repeat 3] [--workers 1 2] [--protocols v1 v2-binary]
Needs `wrk` (Debian: apt-get install -y wrk). Prints a markdown table and writes benchmarks/results/serving-<ts>.json.

Both servers run on this machine, one at a time, on the same model directories (a model trained here, never
committed): Iris StandardScaler+LogisticRegression, RandomForest(100 trees) over make_classification(100_000, 20),
and two typed models trained by the pipeline's own data/train/save code on `benchmarks/make_mixed_data.py` (50,000
rows: string categories, missing values, a coded `store` declared categorical): `mixed-hgb`, HistGradientBoosting
classifier with native categorical splits, and `mixed-ridge`, the Ridge regression `model_family=auto` picks for a
numeric target (one-hot + scaling). Typed models are measured on V1 and V2 JSON (one input per feature, BYTES for
categories, `parameters.content_type: "pd"` so the stock server reads every input), on rows without missing values
(the stock server turns a JSON null in a category into None, which its imputer does not treat as missing).
The baseline mirrors KServe's sklearnserver: a `kserve.Model` that joblib-loads `model.joblib` and calls `predict`
on `np.asarray(instances)` behind the stock `kserve.ModelServer` with its defaults (1 worker).
Protocols: V1 JSON `instances`, V2 JSON (one [N, features] FP64 tensor) and V2 with the binary tensor extension
(raw FP64 input bytes, `binary_data_output`), each against the same stock server on the same body.
Before loading, the run checks that our server returns sklearn's predictions on every row of each test split.
One-worker servers are pinned to core 1 (taskset). At concurrency 16 wrk runs on core 0, so the load generator does
not steal the server's core. At concurrency 1 wrk shares core 1: client and server strictly take turns, and on a VM
a wake-up across cores costs ~0.1-1 ms (the run measures this with a bare HTTP responder, `loopback_floor`), which
would time the hypervisor rather than the server. Each measurement is the best of --repeat runs, because other
load on a shared machine only ever slows a run down. Our server runs with its defaults
(access log off); one extra row measures it with --access_log=true.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODEL_NAME = "bench"
BASELINE, OURS, OURS_WITH_LOG = "baseline", "ours", "ours+access-log"
RATIOS, SCALING = "ratios", "worker-scaling"
SERVER_CPU, CLIENT_CPU = "1", "0"
"""One-worker servers get core 1; wrk gets core 0 under concurrent load and shares core 1 at concurrency 1."""
CONCURRENCIES = (1, 16)
BATCH_SIZES = (1, 100)
V1, V2_JSON, V2_BINARY = "v1", "v2-json", "v2-binary"
PROTOCOLS = (V1, V2_JSON, V2_BINARY)
TYPED_PROTOCOLS = (V1, V2_JSON)
"""What the typed models are measured on: the stock server cannot read binary BYTES as categories."""
MODELS = ("iris-lr", "rf100", "mixed-hgb", "mixed-ridge")
MIXED_ROWS = 50_000
MIXED_FEATURE_TYPES = {"store": "categorical"}


@dataclass
class Bench:
    """A trained benchmark model: its directory, held-out rows, sklearn's answers and how to send them."""

    directory: Path
    x_test: np.ndarray
    expected: np.ndarray
    features: list[tuple[str, str]] | None = None
    """Typed models: (name, kind) per feature, the V2 inputs to send; None: one [N, features] FP64 tensor."""
    tolerance: float = 0.0
    """Regression: largest |difference| to sklearn accepted (the ONNX check's documented tolerance)."""
    body_rows: np.ndarray | None = None
    """Rows the load bodies are cut from (typed models: held-out rows without a missing value)."""

    @property
    def protocols(self) -> tuple[str, ...]:
        return TYPED_PROTOCOLS if self.features else PROTOCOLS


@dataclass(frozen=True)
class Body:
    """One request: the file wrk sends, its path and extra headers."""

    file: Path
    path: str
    headers: dict[str, str]


def json_rows(x: np.ndarray) -> list[list]:
    """Rows as JSON values: NaN (a missing value in the object matrix) becomes null."""
    return [[None if isinstance(v, float) and v != v else v for v in row] for row in x.tolist()]


def write_body(
    protocol: str, rows: np.ndarray, directory: Path, label: str, features: list[tuple[str, str]] | None = None
) -> Body:
    """The request body for `protocol` (the same rows for every protocol)."""
    target = directory / f"{label}-{protocol}.body"
    if protocol == V1:
        target.write_text(json.dumps({"instances": json_rows(rows)}))
        return Body(target, f"/v1/models/{MODEL_NAME}:predict", {"Content-Type": "application/json"})
    path = f"/v2/models/{MODEL_NAME}/infer"
    if features:
        columns = [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": "BYTES" if kind == "categorical" else "FP64",
                "data": [row[j] for row in json_rows(rows)],
            }
            for j, (name, kind) in enumerate(features)
        ]
        # content_type "pd": stock KServe reads every input into a DataFrame (else only the first); ours ignores it.
        target.write_text(json.dumps({"inputs": columns, "parameters": {"content_type": "pd"}}))
        return Body(target, path, {"Content-Type": "application/json"})
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    if protocol == V2_JSON:
        target.write_text(json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}))
        return Body(target, path, {"Content-Type": "application/json"})
    raw = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    target.write_bytes(header + raw)
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return Body(target, path, headers)


def check_body(port: int, body: Body, expected: np.ndarray, tolerance: float = 0.0) -> None:
    """Both servers must answer the benchmark body, with sklearn's labels or numbers (binary answers decoded)."""
    reply = httpx.post(f"http://127.0.0.1:{port}{body.path}", content=body.file.read_bytes(), headers=body.headers)
    if reply.status_code != 200:
        raise SystemExit(f"{body.file.name} got {reply.status_code}: {reply.text[:300]}")
    json_length = reply.headers.get("inference-header-content-length")
    if json_length is not None:
        labels = np.frombuffer(reply.content[int(json_length) :], "<i8").tolist()
    else:
        answer = reply.json()
        labels = answer["predictions"] if "predictions" in answer else answer["outputs"][0]["data"]
    if not same_answers(labels, expected, tolerance):
        raise SystemExit(f"{body.file.name}: answer differs from sklearn on port {port}")


def same_answers(got: list, expected: np.ndarray, tolerance: float) -> bool:
    """Labels exactly; regression numbers within `tolerance` (ONNX's documented one; 0 means bit-equal)."""
    if expected.dtype.kind == "f":
        return len(got) == len(expected) and bool(
            np.all(np.abs(np.asarray(got, dtype=np.float64) - expected) <= tolerance)
        )
    return [str(v) for v in got] == [str(v) for v in expected.tolist()]


@dataclass
class Run:
    phase: str
    model: str
    server: str
    workers: int
    pinned: bool
    rows: int
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    protocol: str = V1


@dataclass
class Startup:
    phase: str
    model: str
    server: str
    workers: int
    pinned: bool
    cold_start_s: float
    idle_rss_mb: float


# --- the baseline: what KServe's stock sklearnserver does --------------------------------------------------


def run_baseline(model_dir: Path, port: int, grpc_port: int | None = None) -> None:
    """KServe's sklearnserver path: joblib model, get_predict_input/get_predict_response (gRPC when given a port)."""
    import joblib
    import kserve
    from kserve.utils.utils import get_predict_input, get_predict_response

    from components.constants import MODEL_FILENAME

    class StockSklearnModel(kserve.Model):
        def load(self) -> bool:
            self._model = joblib.load(model_dir / MODEL_FILENAME)
            self.ready = True
            return True

        def predict(self, payload, headers=None):
            instances = get_predict_input(payload)
            return get_predict_response(payload, self._model.predict(np.asarray(instances)), self.name)

    model = StockSklearnModel(MODEL_NAME)
    model.load()
    if grpc_port is None:
        kserve.ModelServer(http_port=port, workers=1, enable_grpc=False).start([model])
    else:
        kserve.ModelServer(http_port=port, grpc_port=grpc_port, workers=1, enable_grpc=True).start([model])


def run_floor_server(port: int) -> None:
    """A bare HTTP responder on uvloop: the round trip every server pays, whatever it does with the request."""
    import asyncio

    import uvloop

    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"

    class Responder(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport, self.buffer = transport, b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                length = re.search(rb"(?i)content-length: *(\d+)", self.buffer[:end])
                size = end + 4 + (int(length.group(1)) if length else 0)
                if len(self.buffer) < size:
                    return
                self.buffer = self.buffer[size:]
                self.transport.write(reply)

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Responder, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


def loopback_floor(body: Path, work: Path, duration: float) -> dict[str, float]:
    """req/s of the bare responder at concurrency 1, with wrk on the server's core and on the other core."""
    port = free_port()
    argv = ["taskset", "-c", SERVER_CPU, sys.executable, __file__, "--floor-server", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.perf_counter() + 30
        while True:
            try:
                httpx.post(url, content=b"{}", timeout=1)
                break
            except httpx.HTTPError:
                if time.perf_counter() > deadline:
                    raise
                time.sleep(0.05)
        floor = {
            "same_core_req_per_s": wrk(url, body, 1, duration, work, SERVER_CPU)[0],
            "cross_core_req_per_s": wrk(url, body, 1, duration, work, CLIENT_CPU)[0],
        }
    finally:
        stop_server(proc)
    print(f"loopback floor at concurrency 1 (bare responder): {floor}", flush=True)
    return floor


# --- models -------------------------------------------------------------------------------------------------


def train_models(base: Path, wanted: list[str]) -> dict[str, Bench]:
    """Train the benchmark models asked for; returns name -> what the run needs of each."""
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from components.constants import ONNX_FILENAME
    from components.model_artifact import save_model
    from components.onnx_export import export_verified_onnx

    specs = {}
    if "iris-lr" in wanted:
        iris = load_iris()
        specs["iris-lr"] = (
            iris.data,
            iris.target,
            make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
            "logistic_regression",
            list(iris.feature_names),
        )
    if "rf100" in wanted:
        xc, yc = make_classification(n_samples=100_000, n_features=20, random_state=0)
        specs["rf100"] = (
            xc,
            yc,
            RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1),
            "random_forest",
            [f"f{i}" for i in range(20)],
        )
    out = {}
    for name, (x, y, estimator, family, features) in specs.items():
        x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
        started = time.perf_counter()
        estimator.fit(x_train, y_train)
        if hasattr(estimator, "n_jobs"):
            estimator.set_params(n_jobs=None)  # serve like a default-configured estimator: one thread per call
        directory = base / name
        directory.mkdir()
        report = export_verified_onnx(estimator, x_test, directory / ONNX_FILENAME)
        save_model(
            directory,
            estimator,
            feature_names=features,
            class_names=[str(c) for c in estimator.classes_],
            model_family=family,
            hyperparameters={},
            training_data_fingerprint="benchmark",
            label_column="target",
            extra_files={ONNX_FILENAME: directory / ONNX_FILENAME} if report else None,
            onnx=report,
        )
        print(f"trained {name} in {time.perf_counter() - started:.1f}s; onnx report: {report}", flush=True)
        out[name] = Bench(directory, x_test, estimator.predict(x_test))
    for name, task, family in (
        ("mixed-hgb", "classification", "hist_gradient_boosting"),
        ("mixed-ridge", "regression", "auto"),
    ):
        if name in wanted:
            out[name] = train_typed(base / name, task=task, family=family)
    return out


def train_typed(directory: Path, *, task: str, family: str) -> Bench:
    """A typed model through the pipeline's own code: schema inference, split, train_model, save_trained_model."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from make_mixed_data import make_mixed_data

    from components.data import split_dataset
    from components.features import feature_matrix, infer_feature_schema
    from components.train import save_trained_model, train_model

    started = time.perf_counter()
    frame = make_mixed_data(MIXED_ROWS, task=task, seed=0)
    label = str(frame.columns[-1])
    schema = infer_feature_schema(frame, label_column=label, task=task, feature_types=MIXED_FEATURE_TYPES)
    train, test = split_dataset(frame, label_column=label, test_fraction=0.25, seed=0, task=task)
    model = train_model(train, schema=schema, model_family=family, seed=0)
    card = save_trained_model(
        model, directory, training_data_fingerprint="benchmark", check_features=test, reference_features=train
    )
    x_test = feature_matrix(test, schema)
    complete = x_test[~test[schema.names].isna().any(axis=1).to_numpy()]
    print(
        f"trained {directory.name} ({card.estimator}) in {time.perf_counter() - started:.1f}s; serving path "
        f"{card.serving_path}; onnx report: {card.onnx}",
        flush=True,
    )
    return Bench(
        directory,
        x_test,
        model.estimator.predict(x_test),
        features=[(f.name, f.kind) for f in schema.features],
        tolerance=float(card.onnx.get("tolerance", 0.0)) if task == "regression" else 0.0,
        body_rows=complete,
    )


def predict_rows(directory: Path, rows: np.ndarray) -> np.ndarray:
    """sklearn's own answer for `rows`, from the model directory (the typed bodies' reference)."""
    import joblib

    from components.constants import MODEL_FILENAME

    return np.asarray(joblib.load(directory / MODEL_FILENAME).predict(rows))


# --- servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    kind: str, model_dir: Path, port: int, workers: int, log: Path, cpus: str | None
) -> tuple[subprocess.Popen, float]:
    if kind == BASELINE:
        argv = [sys.executable, __file__, "--baseline-server", str(model_dir), "--port", str(port)]
    else:
        argv = [
            sys.executable,
            "-m",
            "components.serving",
            f"--model_dir={model_dir}",
            f"--model_name={MODEL_NAME}",
            f"--http_port={port}",
            "--host=127.0.0.1",
            f"--workers={workers}",
            f"--max_rows={10_000}",
            f"--max_body_bytes={64 << 20}",
            f"--access_log={'true' if kind == OURS_WITH_LOG else 'false'}",
        ]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    deadline = started + 300
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}", timeout=1).status_code == 200:
                return proc, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    stop_server(proc)
    raise RuntimeError(f"{kind} server not ready after 300 s; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tree_rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


# --- load ---------------------------------------------------------------------------------------------------

_LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(
    url: str,
    body_file: Path,
    concurrency: int,
    duration: float,
    script_dir: Path,
    cpus: str | None,
    headers: dict[str, str] | None = None,
) -> tuple[float, float, float, int]:
    """Run wrk; returns (req/s, p50 ms, p99 ms, non-2xx + socket errors)."""
    script = script_dir / "post.lua"
    sent = headers or {"Content-Type": "application/json"}
    script.write_text(
        'local f = io.open("' + str(body_file) + '", "rb")\n'
        "wrk.method = 'POST'\nwrk.body = f:read('*a')\nf:close()\n"
        + "".join(f"wrk.headers['{k}'] = '{v}'\n" for k, v in sent.items())
    )
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {m[0]: float(m[1]) * _LATENCY_UNITS[m[2]] for m in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)\b", text)}
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return rps, pct["50"], pct["99"], errors


def check_equivalence(port: int, bench: Bench, batch: int = 1000) -> None:
    """Our server answers every held-out row (missing values included) as sklearn does."""
    got: list = []
    with httpx.Client(timeout=120) as client:
        for start in range(0, len(bench.x_test), batch):
            rows = json_rows(bench.x_test[start : start + batch])
            reply = client.post(f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}:predict", json={"instances": rows})
            reply.raise_for_status()
            got.extend(reply.json()["predictions"])
    if not same_answers(got, bench.expected, bench.tolerance):
        raise SystemExit(f"server predictions differ from sklearn on the {len(bench.expected)} test rows")
    how = f"within {bench.tolerance:.3g}" if bench.expected.dtype.kind == "f" else "identical"
    print(f"  predictions {how} to sklearn on all {len(bench.expected)} test rows", flush=True)


# --- report -------------------------------------------------------------------------------------------------


class Servers:
    """Start several servers (one after another, so each cold start is measured alone) and stop them all."""

    def __init__(
        self, wanted: list[tuple[str, int]], model: str, directory: Path, work: Path, cpus: str | None
    ) -> None:
        self.wanted, self.model, self.directory, self.work, self.cpus = wanted, model, directory, work, cpus
        self.started: dict[tuple[str, int], tuple[int, float, float]] = {}
        self._procs: list[subprocess.Popen] = []

    def __enter__(self) -> Servers:
        try:
            for kind, workers in self.wanted:
                port = free_port()
                log = self.work / f"{self.model}-{kind}-{workers}.log"
                cpus = self.cpus if workers == 1 else None
                proc, cold = start_server(kind, self.directory, port, workers, log, cpus)
                self._procs.append(proc)
                time.sleep(1.0)
                self.started[(kind, workers)] = (port, cold, tree_rss_mb(proc.pid))
                print(f"{self.model} {kind} x{workers}: ready in {cold:.1f}s", flush=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def port(self, kind: str, workers: int) -> int:
        return self.started[(kind, workers)][0]

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            stop_server(proc)


def measure(
    live: Servers,
    phase: str,
    model: str,
    bodies: dict[tuple[str, int], Body],
    servers: list[tuple[str, int]],
    pinned: bool,
    args,
    work: Path,
    protocols: list[str],
) -> list[Run]:
    """Load each server in turn, --repeat rounds per scenario, and keep each server's best round."""
    runs = []
    for protocol, rows, conc in ((p, r, c) for p in protocols for r in BATCH_SIZES for c in CONCURRENCIES):
        body = bodies[(protocol, rows)]
        same_core = conc == 1 and not args.c1_cross_core
        client_cpus = (SERVER_CPU if same_core else CLIENT_CPU) if pinned else None
        # The access log costs the same per request whatever the batch; worker scaling needs concurrency.
        targets = [
            (kind, w)
            for kind, w in servers
            if not (kind == OURS_WITH_LOG and (rows != 1 or protocol != V1))
            and not (phase == SCALING and (conc == 1 or protocol != V1))
        ]
        urls = {t: f"http://127.0.0.1:{live.port(*t)}{body.path}" for t in targets}
        for target in targets:
            wrk(urls[target], body.file, 4, 1.0, work, client_cpus, body.headers)  # warm-up
        # Rounds alternate between servers, so load from elsewhere on the machine hits them alike.
        attempts: dict[tuple[str, int], list] = {t: [] for t in targets}
        for _ in range(args.repeat):
            for target in targets:
                attempts[target].append(
                    wrk(urls[target], body.file, conc, args.duration, work, client_cpus, body.headers)
                )
        for (kind, workers), tries in attempts.items():
            rps, p50, p99, _ = max(tries)
            errors = sum(t[3] for t in tries)
            runs.append(Run(phase, model, kind, workers, pinned, rows, conc, rps, p50, p99, errors, protocol))
            print(
                f"  {protocol} {kind} x{workers} rows={rows} c={conc}: {rps:,.0f} req/s p50={p50:.2f}ms "
                f"p99={p99:.2f}ms "
                f"errors={errors} (rounds: {[round(t[0]) for t in tries]})",
                flush=True,
            )
    return runs


def markdown(runs: list[Run], startups: list[Startup], workers: list[int]) -> str:
    lines = [
        "| model | protocol | rows/req | conc. | baseline req/s | ours req/s (1 worker) | ratio | "
        "baseline p50 / p99 ms | ours p50 / p99 ms | p99 ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    index = {(r.model, r.server, r.workers, r.rows, r.concurrency, r.protocol): r for r in runs if r.phase == RATIOS}
    scaling = {(r.model, r.workers, r.rows, r.concurrency): r for r in runs if r.phase == SCALING}
    for model in dict.fromkeys(r.model for r in runs):
        for protocol, rows, conc in ((p, r, c) for p in PROTOCOLS for r in BATCH_SIZES for c in CONCURRENCIES):
            base = index.get((model, BASELINE, 1, rows, conc, protocol))
            ours = index.get((model, OURS, 1, rows, conc, protocol))
            if not base or not ours:
                continue
            lines.append(
                f"| {model} | {protocol} | {rows} | {conc} | {base.requests_per_s:,.0f} | "
                f"{ours.requests_per_s:,.0f} | "
                f"**{ours.requests_per_s / base.requests_per_s:.1f}x** | {base.p50_ms:.2f} / {base.p99_ms:.2f} | "
                f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f} | {ours.p99_ms / base.p99_ms:.2f} |"
            )
    lines += ["", "| model | server | workers | cold start s | idle RSS MiB |", "|---|---|---:|---:|---:|"]
    lines += [
        f"| {s.model} | {s.server} | {s.workers} | {s.cold_start_s:.1f} | {s.idle_rss_mb:.0f} |"
        for s in startups
        if s.phase == RATIOS or s.workers > 1
    ]
    if len(workers) > 1:
        lines += [
            "",
            "| model | rows/req | conc. | " + " | ".join(f"ours req/s, {w} worker(s)" for w in workers) + " |",
        ]
        lines.append("|---|---:|---:|" + "---:|" * len(workers))
        for model in dict.fromkeys(r.model for r in runs):
            for rows in BATCH_SIZES:
                cells = [scaling.get((model, w, rows, CONCURRENCIES[-1])) for w in workers]
                if all(cells):
                    values = " | ".join(f"{c.requests_per_s:,.0f}" for c in cells if c)
                    lines.append(f"| {model} | {rows} | {CONCURRENCIES[-1]} | {values} |")
    logged = [r for r in runs if r.server == OURS_WITH_LOG]
    if logged:
        lines += [
            "",
            "| model | rows/req | conc. | ours req/s | ours + access log req/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for r in logged:
            plain = index.get((r.model, OURS, 1, r.rows, r.concurrency, r.protocol))
            if plain:
                cells = f"{plain.requests_per_s:,.0f} | {r.requests_per_s:,.0f}"
                lines.append(f"| {r.model} | {r.rows} | {r.concurrency} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts for our server")
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=["iris-lr", "rf100"], help="default: the all-numeric pair"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported")
    parser.add_argument(
        "--protocols", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS), help="request formats to measure"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin 1-worker servers and wrk to cores")
    parser.add_argument(
        "--c1-cross-core", action="store_true", help="at concurrency 1 too, run wrk on the other core than the server"
    )
    parser.add_argument("--baseline-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline(args.baseline_server, args.port)
        return
    if args.floor_server:
        run_floor_server(args.port)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    models = train_models(work, args.models)
    runs: list[Run] = []
    startups: list[Startup] = []
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2 and not args.no_pin
    floor_body = work / "floor.json"
    floor_body.write_text("{}")
    floor = loopback_floor(floor_body, work, args.duration) if pin else {}
    for model, bench in models.items():
        directory = bench.directory
        body_rows = bench.body_rows if bench.body_rows is not None else bench.x_test
        body_expected = bench.expected if bench.body_rows is None else None
        protocols = [p for p in args.protocols if p in bench.protocols]
        bodies = {
            (protocol, rows): write_body(protocol, body_rows[:rows], work, f"{model}-{rows}", bench.features)
            for protocol in protocols
            for rows in BATCH_SIZES
        }
        # Phase A, the ratios: baseline and ours side by side on one pinned core, measured in turn.
        phase_a = [(BASELINE, 1), (OURS, 1), (OURS_WITH_LOG, 1)]
        # Phase B, worker scaling: ours with 1 and N workers, free to use every core.
        phase_b = [(OURS, w) for w in args.workers] if len(args.workers) > 1 else []
        for name, phase, pinned in ((RATIOS, phase_a, pin), (SCALING, phase_b, False)):
            if not phase:
                continue
            with Servers(phase, model, directory, work, SERVER_CPU if pinned else None) as live:
                startups += [
                    Startup(name, model, kind, w, pinned, cold, rss)
                    for (kind, w), (_, cold, rss) in live.started.items()
                ]
                if name == RATIOS:
                    check_equivalence(live.port(OURS, 1), bench)
                    for (_, rows), body in bodies.items():
                        want = body_expected[:rows] if body_expected is not None else None
                        if want is None:
                            want = predict_rows(directory, body_rows[:rows])
                        for kind in (BASELINE, OURS):
                            check_body(live.port(kind, 1), body, want, bench.tolerance)
                runs += measure(live, name, model, bodies, phase, pinned, args, work, protocols)
    table = markdown(runs, startups, args.workers)
    if floor:
        table += (
            f"\n\nLoopback floor at concurrency 1 (a bare uvloop HTTP responder): "
            f"{floor['same_core_req_per_s']:,.0f} req/s with wrk on the server's core, "
            f"{floor['cross_core_req_per_s']:,.0f} req/s with wrk on the other core."
        )
    print("\n" + table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serving-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "command": " ".join(["benchmarks/serving.py", *sys.argv[1:]]),
                "cpus": os.cpu_count(),
                "duration_s": args.duration,
                "repeat": args.repeat,
                "pinned": pin,
                "loopback_floor": floor,
                "runs": [asdict(r) for r in runs],
                "startups": [asdict(s) for s in startups],
                "markdown": table,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
