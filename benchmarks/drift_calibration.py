"""Measure the drift check over many seeded windows: PSI noise, false alarms, and what each kind of change catches.

Run: .venv/bin/python benchmarks/drift_calibration.py [--seeds 400] [--windows 200,500] [--markdown]

Populations ("population" = where both the training data and the traffic come from; no change = same population):
- iris-rounded: the profile is built on all 150 Iris rows; traffic is Iris rows resampled (values on the data's
  0.1 cm grid, so many ties with the bin edges).
- iris-jitter: the same traffic plus uniform noise of +-0.05 (half the grid step): what real measurements of the
  same flowers look like; rounding it to the grid gives iris-rounded back.
- iris-gauss: a Gaussian per Iris class fitted to Iris; the profile is built on 120 drawn rows (Iris' train split).
- make-classification: sklearn.datasets.make_classification, 8 continuous features, 1000 training rows.

Changes, applied to the first feature only, relative to the training mean m and standard deviation s:
- mean: x + 0.5 s (a half-std shift).
- variance: m + (x - m) * sqrt(2) (twice the variance, the same mean).
- tail: 10% of the rows replaced by draws from N(m, (3 s)^2) (a contaminated normal: the centre and the mean stay,
  the tails grow; the std rises ~1.3x).

Per population and window size: the share of unchanged feature-windows with PSI >= the threshold ("PSI
false-flag"), the share of unchanged windows flagged as drift ("false alarms"), and the share of changed windows
flagged ("detected"), at the given PSI threshold and family-wise alpha.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_iris, make_classification

from components.constants import DEFAULT_KS_ALPHA, DEFAULT_PSI_THRESHOLD
from components.monitoring.drift import detect_drift
from components.reference_profile import build_reference_profile

POPULATIONS = ("iris-rounded", "iris-jitter", "iris-gauss", "make-classification")
CHANGES = ("mean", "variance", "tail")
IRIS_GRID_STEP = 0.1
TAIL_SHARE = 0.1
TAIL_WIDTH_IN_STD = 3.0
RESULTS = Path(__file__).resolve().parent / "results" / "monitoring_drift_calibration.json"


def _iris_gauss(rng: np.random.Generator, n: int) -> np.ndarray:
    x, y = load_iris(return_X_y=True)
    labels = rng.integers(0, 3, size=n)
    out = np.empty((n, x.shape[1]))
    for k in range(3):
        rows = x[y == k]
        idx = labels == k
        out[idx] = rng.multivariate_normal(rows.mean(axis=0), np.cov(rows, rowvar=False), size=idx.sum())
    return out


def unchanged_samples(name: str, seed: int, window_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows and a window of traffic from the same population."""
    rng = np.random.default_rng(seed)
    iris = load_iris()
    if name in ("iris-rounded", "iris-jitter"):
        train = iris.data
        window = train[rng.integers(0, len(train), size=window_rows)]
        if name == "iris-jitter":
            window = window + rng.uniform(-IRIS_GRID_STEP / 2, IRIS_GRID_STEP / 2, size=window.shape)
        columns = iris.feature_names
    elif name == "iris-gauss":
        data = _iris_gauss(rng, 120 + window_rows)
        train, window, columns = data[:120], data[120:], iris.feature_names
    elif name == "make-classification":
        data, _ = make_classification(n_samples=1000 + window_rows, n_features=8, n_informative=4, random_state=seed)
        train, window, columns = data[:1000], data[1000:], [f"f{i}" for i in range(8)]
    else:
        raise ValueError(f"unknown population {name!r}; choose from {POPULATIONS}")
    return pd.DataFrame(train, columns=columns), pd.DataFrame(window, columns=columns)


def changed(window: pd.DataFrame, change: str, mean: float, std: float, rng: np.random.Generator) -> pd.DataFrame:
    """The window with its first feature changed as `change` says."""
    out = window.copy()
    first = out.columns[0]
    x = out[first].to_numpy()
    if change == "mean":
        x = x + 0.5 * std
    elif change == "variance":
        x = mean + (x - mean) * np.sqrt(2.0)
    elif change == "tail":
        x = x.copy()
        rows = rng.random(len(x)) < TAIL_SHARE
        x[rows] = rng.normal(mean, TAIL_WIDTH_IN_STD * std, size=int(rows.sum()))
    else:
        raise ValueError(f"unknown change {change!r}")
    out[first] = x
    return out


def rates(name: str, *, seeds: int, window_rows: int, psi_threshold: float, alpha: float) -> dict[str, float]:
    """PSI false-flag, false-alarm and per-change detection rates over `seeds` windows."""
    detect: Callable[..., object] = detect_drift
    kw = {"psi_threshold": psi_threshold, "ks_alpha": alpha, "min_records": window_rows}
    psi_flags = feature_windows = alarms = 0
    detections = dict.fromkeys(CHANGES, 0)
    for seed in range(seeds):
        train, window = unchanged_samples(name, seed, window_rows)
        profile = build_reference_profile(train, seed=seed)
        report = detect(profile, window, **kw)
        psi_flags += sum(f.psi >= psi_threshold for f in report.features)  # type: ignore[attr-defined]
        feature_windows += len(report.features)  # type: ignore[attr-defined]
        alarms += report.drift_detected  # type: ignore[attr-defined]
        reference = profile["features"][train.columns[0]]
        rng = np.random.default_rng(10_000 + seed)
        for change in CHANGES:
            moved = changed(window, change, reference["mean"], reference["std"], rng)
            detections[change] += detect(profile, moved, **kw).drift_detected  # type: ignore[attr-defined]
    return {
        "psi_false_flag_rate": psi_flags / feature_windows,
        "false_alarm_rate": alarms / seeds,
        **{f"detected_{change}": detections[change] / seeds for change in CHANGES},
    }


def markdown_table(results: list[dict]) -> str:
    """The README's table: one row per population and window size."""
    lines = [
        "| population (training rows) | window | PSI false-flag | false alarms "
        "| mean 0.5 std | variance x2 | tail 10% |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results:
        r = row["rates"]
        cells = [f"{r[k]:.1%}" for k in ("psi_false_flag_rate", "false_alarm_rate")]
        cells += [f"{r[f'detected_{c}']:.1%}" for c in CHANGES]
        lines.append(
            f"| {row['population']} ({row['train_rows']}) | {row['window_rows']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every population at every window size; print a line per cell, then the table or the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=400, help="windows per cell (default: %(default)s)")
    parser.add_argument("--windows", default="200,500", help="window sizes in rows (default: %(default)s)")
    parser.add_argument("--populations", default=",".join(POPULATIONS))
    parser.add_argument("--psi-threshold", type=float, default=DEFAULT_PSI_THRESHOLD)
    parser.add_argument("--alpha", type=float, default=DEFAULT_KS_ALPHA, help="family-wise false-alarm level")
    parser.add_argument("--markdown", action="store_true", help="print the README table instead of the JSON")
    args = parser.parse_args()
    train_rows = {"iris-rounded": 150, "iris-jitter": 150, "iris-gauss": 120, "make-classification": 1000}
    results = []
    for name in args.populations.split(","):
        for window_rows in (int(w) for w in args.windows.split(",")):
            started = time.perf_counter()
            cell = rates(
                name, seeds=args.seeds, window_rows=window_rows, psi_threshold=args.psi_threshold, alpha=args.alpha
            )
            results.append(
                {"population": name, "train_rows": train_rows[name], "window_rows": window_rows,
                 "seeds": args.seeds, "psi_threshold": args.psi_threshold, "alpha": args.alpha, "rates": cell}
            )  # fmt: skip
            took = time.perf_counter() - started
            print(f"{name:20s} window={window_rows:4d} ({took:.0f}s) " + json.dumps(cell), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(markdown_table(results) if args.markdown else json.dumps(results))


if __name__ == "__main__":
    main()
