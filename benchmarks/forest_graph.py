"""ONNX Runtime time of skl2onnx's forest graph against the rebuilt one (components/onnx_forest.py), in one run.

Run: .venv/bin/python benchmarks/forest_graph.py [--rounds 6]   (~3 min; pin it with `taskset -c 1` on a shared box)

The forest is the serving benchmark's rf100: RandomForest(100 trees) on make_classification(100_000, 20). Both
graphs run single-threaded on the same rows, interleaved round by round; the best and median round are reported.
Writes benchmarks/results/forest_graph.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
BATCH_SIZES = (1, 100)
CALLS = {1: 400, 100: 60}


def main() -> None:
    import onnxruntime
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    from components.onnx_export import _convert

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    x, y = make_classification(n_samples=100_000, n_features=20, random_state=0)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1).fit(x_train, y_train)
    forest.set_params(n_jobs=None)
    print("trained; converting both graphs (~1 min)", flush=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = {}
    for name, rebuild in (("skl2onnx", False), ("rebuilt", True)):
        model_bytes, _ = _convert(forest, n_features=20, dtype=np.float64, rebuild_forest=rebuild)
        sessions[name] = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        labels = sessions[name].run(["label"], {"X": x_test})[0]
        if labels.tolist() != forest.predict(x_test).tolist():
            raise SystemExit(f"{name} graph differs from sklearn")
    rng = np.random.default_rng(0)
    times: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.rounds):
        for rows in BATCH_SIZES:
            starts = rng.integers(0, len(x_test) - rows, size=CALLS[rows])
            for name, session in sessions.items():
                started = time.perf_counter()
                for i in starts:
                    session.run(["label", "probabilities"], {"X": x_test[i : i + rows]})
                times.setdefault((rows, name), []).append((time.perf_counter() - started) / CALLS[rows] * 1e3)
    report = []
    print("\n| rows | graph | best ms | median ms |\n|---:|---|---:|---:|")
    for (rows, name), values in times.items():
        best, median = min(values), statistics.median(values)
        report.append({"rows": rows, "graph": name, "best_ms": best, "median_ms": median})
        print(f"| {rows} | {name} | {best:.3f} | {median:.3f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forest_graph.json").write_text(json.dumps({"rounds": args.rounds, "runs": report}, indent=2))


if __name__ == "__main__":
    main()
