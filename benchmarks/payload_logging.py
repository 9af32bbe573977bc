"""What does payload logging cost a prediction, and reading it back a drift check? Times record() and the reader.

Run: .venv/bin/python benchmarks/payload_logging.py [--calls 50000]

Measures, with the background writer flushing Parquet files to a temp directory meanwhile:
1. record() alone, per call, for 1-row and 32-row requests (p50 / p99 / mean, microseconds);
2. a real Iris LogisticRegression predict() on one row, with and without record() after it (interleaved);
3. read_payload_window over a week of logs (a file per 15 minutes, 250 rows each): a 24 h window and the whole
   week (median and min of 7 reads, milliseconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from components.monitoring.payload_reader import read_payload_window
from components.payload_log import PayloadLogWriter


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[int(len(ordered) * 0.99)] / 1000,
        "p99.9_us": ordered[int(len(ordered) * 0.999)] / 1000,
        "max_us": ordered[-1] / 1000,
        "mean_us": statistics.fmean(ordered) / 1000,
    }


def time_record(directory: Path, rows: int, calls: int, feature_names: list[str]) -> dict[str, float]:
    batch = np.random.default_rng(0).normal(size=(rows, len(feature_names)))
    predictions = [1] * rows
    samples: list[int] = []
    writer = PayloadLogWriter(directory, model_name=f"bench-{rows}", model_sha256="0" * 64,
                              feature_names=feature_names, batch_size=1000, flush_interval_s=1.0)  # fmt: skip
    for _ in range(calls):
        started = time.perf_counter_ns()
        writer.record(batch, predictions)
        samples.append(time.perf_counter_ns() - started)
    close_started = time.perf_counter()
    writer.close()
    stats = writer.stats()
    assert stats.written == rows * calls and stats.dropped == 0, stats
    return {**percentiles(samples), "close_s": time.perf_counter() - close_started, "files": stats.files}


def time_predict(directory: Path, calls: int) -> dict[str, dict[str, float]]:
    iris = load_iris()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(iris.data, iris.target)
    row = iris.data[:1]
    writer = PayloadLogWriter(directory, model_name="bench-predict", model_sha256="0" * 64,
                              feature_names=list(iris.feature_names))  # fmt: skip
    # Interleaved, so both variants see the same background load (this VM is shared).
    plain: list[int] = []
    logged: list[int] = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        model.predict(row)
        plain.append(time.perf_counter_ns() - started)
        started = time.perf_counter_ns()
        prediction = model.predict(row)
        writer.record(row, prediction)
        logged.append(time.perf_counter_ns() - started)
    results = {"predict": percentiles(plain), "predict+record": percentiles(logged)}
    writer.close()
    return results


def time_read(directory: Path, feature_names: list[str]) -> dict[str, dict[str, float]]:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with PayloadLogWriter(directory, model_name="bench-read", model_sha256="0" * 64, feature_names=feature_names,
                          batch_size=1000, flush_interval_s=60) as writer:  # fmt: skip
        for quarter in range(7 * 24 * 4):
            rows = np.random.default_rng(quarter).normal(size=(250, len(feature_names)))
            writer.record(rows, [1] * 250, timestamp=start + timedelta(minutes=15 * quarter))
    windows = {"window_24h": (start + timedelta(days=3), start + timedelta(days=4)), "whole_week": (None, None)}
    results = {}
    for label, (begin, end) in windows.items():
        seconds = []
        for _ in range(7):
            started = time.perf_counter()
            frame = read_payload_window(directory, model_name="bench-read", start=begin, end=end)
            seconds.append(time.perf_counter() - started)
        results[label] = {"rows": len(frame), "median_ms": statistics.median(seconds) * 1000,
                          "min_ms": min(seconds) * 1000}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    args = parser.parse_args()
    names = load_iris().feature_names
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "record_1_row": time_record(Path(tmp), 1, args.calls, names),
            "record_32_rows": time_record(Path(tmp), 32, args.calls, names),
            "predict_1_row": time_predict(Path(tmp), min(args.calls, 20_000)),
            "read_payload_window": time_read(Path(tmp), list(names)),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
