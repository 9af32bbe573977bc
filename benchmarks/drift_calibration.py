"""Measure the drift check's false-alarm and detection rates over many seeded windows.

Run: .venv/bin/python benchmarks/drift_calibration.py [--seeds 500]

Scenarios ("population" = where both training data and traffic come from):
- iris-gauss: a Gaussian per Iris class fitted to Iris, equal class shares; 120 training rows (Iris' train split).
- iris-bootstrap: rows resampled from Iris itself; the profile is built on all 150 rows.
- make-classification: sklearn.datasets.make_classification, 8 features, 1000 training rows.
Drift = one feature (the first) moved by 0.5 of its training standard deviation.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris, make_classification

from components.monitoring.drift import detect_drift
from components.monitoring.reference import build_reference_profile


def iris_gauss(rng: np.random.Generator, n: int) -> np.ndarray:
    x, y = load_iris(return_X_y=True)
    labels = rng.integers(0, 3, size=n)
    out = np.empty((n, x.shape[1]))
    for k in range(3):
        rows = x[y == k]
        idx = labels == k
        out[idx] = rng.multivariate_normal(rows.mean(axis=0), np.cov(rows, rowvar=False), size=idx.sum())
    return out


def scenario_samples(name: str, seed: int, train_rows: int, window_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    if name == "iris-gauss":
        data = iris_gauss(rng, train_rows + window_rows)
        cols = load_iris().feature_names
    elif name == "iris-bootstrap":
        x = load_iris().data
        data = np.vstack([x, x[rng.integers(0, len(x), size=window_rows)]])
        train_rows = len(x)
        cols = load_iris().feature_names
    else:
        data, _ = make_classification(
            n_samples=train_rows + window_rows, n_features=8, n_informative=4, random_state=seed
        )
        cols = [f"f{i}" for i in range(8)]
    frame = pd.DataFrame(data, columns=cols)
    return frame.iloc[:train_rows].reset_index(drop=True), frame.iloc[train_rows:].reset_index(drop=True)


def rates(name: str, *, seeds: int, train_rows: int, window_rows: int, grid: list[tuple[float, float]]) -> dict:
    alarms = {g: 0 for g in grid}
    detections = {g: 0 for g in grid}
    for seed in range(seeds):
        train, window = scenario_samples(name, seed, train_rows, window_rows)
        profile = build_reference_profile(train, seed=seed)
        shifted = window.copy()
        first = shifted.columns[0]
        shifted[first] = shifted[first] + 0.5 * profile["features"][first]["std"]
        for psi_threshold, ks_alpha in grid:
            kw = {"psi_threshold": psi_threshold, "ks_alpha": ks_alpha, "min_records": window_rows}
            alarms[(psi_threshold, ks_alpha)] += detect_drift(profile, window, **kw).drift_detected
            detections[(psi_threshold, ks_alpha)] += detect_drift(profile, shifted, **kw).drift_detected
    return {
        f"psi>={p},alpha={a}": {
            "false_alarm_rate": alarms[(p, a)] / seeds,
            "detection_rate": detections[(p, a)] / seeds,
        }
        for p, a in grid
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--windows", default="100,200,500")
    parser.add_argument("--grid", default="0.1:0.01,0.2:0.01,0.1:0.05,0.2:0.05", help="psi_threshold:ks_alpha,...")
    args = parser.parse_args()
    grid = [(float(p), float(a)) for p, a in (item.split(":") for item in args.grid.split(","))]
    results = []
    for name, train_rows in (("iris-gauss", 120), ("iris-bootstrap", 150), ("make-classification", 1000)):
        for window_rows in (int(w) for w in args.windows.split(",")):
            started = time.perf_counter()
            result = rates(name, seeds=args.seeds, train_rows=train_rows, window_rows=window_rows, grid=grid)
            results.append(
                {
                    "scenario": name,
                    "train_rows": train_rows,
                    "window_rows": window_rows,
                    "seeds": args.seeds,
                    "rates": result,
                }
            )
            print(
                f"{name:20s} train={train_rows:5d} window={window_rows:4d} ({time.perf_counter() - started:.0f}s)",
                flush=True,
            )
            for key, value in result.items():
                rates_text = f"false alarms {value['false_alarm_rate']:.3f}  detected {value['detection_rate']:.3f}"
                print(f"    {key:22s} {rates_text}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
