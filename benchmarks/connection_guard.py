"""What the slow-client guard costs: V1 throughput with `GuardedHttpToolsProtocol` against uvicorn's plain protocol.

Run: .venv/bin/python benchmarks/connection_guard.py [--duration 5] [--repeat 3]
Needs `wrk`. Trains the Iris model, starts the server twice on it (the same code, once with the guard replaced by
uvicorn's `HttpToolsProtocol`), pins each to core 1 and wrk to core 0, and loads both with 1-row V1 predicts at
concurrency 16 over keep-alive connections and, separately, with a new connection per request (`Connection:
close`), where the guard's per-connection work (timer, cap check) is paid every time. Rounds alternate between the
two servers; each number is the best round. Prints the ratio guarded / plain.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving as rest_bench  # noqa: E402  (benchmarks/serving.py: models, wrk, process helpers)

PLAIN = (
    "import sys\n"
    "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\n"
    "import components.serving.slow_clients as guard\n"
    "class Plain(HttpToolsProtocol):\n"
    "    def __init__(self, *args, limits, **kwargs):\n"
    "        super().__init__(*args, **kwargs)\n"
    "guard.GuardedHttpToolsProtocol = Plain\n"
    "from components.serving.__main__ import main\n"
    "sys.exit(main())\n"
)


def start(kind: str, model_dir: Path, work: Path) -> tuple[subprocess.Popen, int]:
    port = rest_bench.free_port()
    flags = [f"--model_dir={model_dir}", f"--model_name={rest_bench.MODEL_NAME}", f"--http_port={port}"]
    flags += ["--host=127.0.0.1"]
    head = [sys.executable, "-c", PLAIN, *flags] if kind == "plain" else [sys.executable, "-m", "components.serving"]
    argv = ["taskset", "-c", rest_bench.SERVER_CPU, *head, *([] if kind == "plain" else flags)]
    log = work / f"{kind}.log"
    proc = subprocess.Popen(
        argv, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=rest_bench.ROOT, start_new_session=True
    )
    import time

    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} server exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models/{rest_bench.MODEL_NAME}", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{kind} server not ready; see {log}")


def wrk(url: str, body: Path, work: Path, duration: float, close: bool) -> float:
    script = work / ("close.lua" if close else "keep.lua")
    script.write_text(
        f'local f = io.open("{body}", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*a")\nf:close()\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        + ('wrk.headers["Connection"] = "close"\n' if close else "")
    )
    argv = ["taskset", "-c", rest_bench.CLIENT_CPU, "wrk", "-t1", "-c16", f"-d{round(duration)}s", "-s", str(script)]
    text = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    return float(text.split("Requests/sec:")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="guard-bench-") as tmp:
        work = Path(tmp)
        directory, x_test, _ = rest_bench.train_models(work, ["iris-lr"])["iris-lr"]
        body = work / "body.json"
        body.write_text(json.dumps({"instances": x_test[:1].tolist()}))
        servers = {kind: start(kind, directory, work) for kind in ("plain", "guarded")}
        results = {}
        try:
            for close in (False, True):
                best = {kind: 0.0 for kind in servers}
                for _ in range(args.repeat):
                    for kind, (_, port) in servers.items():
                        url = f"http://127.0.0.1:{port}/v1/models/{rest_bench.MODEL_NAME}:predict"
                        best[kind] = max(best[kind], wrk(url, body, work, args.duration, close))
                name = "new connection per request" if close else "keep-alive"
                results[name] = best
                print(
                    f"{name}: plain {best['plain']:,.0f} req/s, guarded {best['guarded']:,.0f} req/s, "
                    f"ratio {best['guarded'] / best['plain']:.3f}",
                    flush=True,
                )
        finally:
            for proc, _ in servers.values():
                rest_bench.stop_server(proc)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
