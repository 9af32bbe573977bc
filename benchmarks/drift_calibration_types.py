"""Measure the typed drift signals over many seeded windows: false alarms, and what each kind of change catches.

Run: .venv/bin/python benchmarks/drift_calibration_types.py [--seeds 400] [--windows 200,500] [--markdown]

Populations (training data and traffic come from the same one; 2000 training rows):
- mixed: `age` ~ N(40, 10) with 2% missing; `colour` in red/green/blue/grey at 50/30/15/5% with 5% missing;
  a regression model's predictions ~ N(100, 15).
- many-categories: `city` with 40 categories at Zipf-like shares (1/k), so most categories expect fewer than 5
  rows in a window and the chi-square test pools them.

Changes (mixed population unless said):
- shares-10: 10 points move from the largest category to the third (50/30/15/5 -> 40/30/25/5; PSI 0.07, under
  the 0.15 threshold: a change this small is not meant to alarm).
- shares-20: 20 points move the same way (50/30/15/5 -> 30/30/35/5; PSI 0.27).
- unseen: 10% of the colour values are a category training never saw.
- missing: colour missing 5% -> 15%.
- prediction: the predictions move by half a standard deviation (the inputs do not).
- city-shares (many-categories): the five largest categories lose a quarter of their share to the next five.

Per population/change and window size: the share of windows flagged as drift (for "unchanged": the false-alarm
rate), at the default thresholds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.features import Feature, FeatureSchema
from components.monitoring.drift import detect_drift
from components.reference_profile import build_reference_profile

TRAIN_ROWS = 2000
COLOURS = {"red": 0.5, "green": 0.3, "blue": 0.15, "grey": 0.05}
CITIES = [f"city{k:02d}" for k in range(40)]
RESULTS = Path(__file__).resolve().parent / "results" / "monitoring_drift_calibration_types.json"
CASES = (
    ("mixed", "unchanged"), ("mixed", "shares-10"), ("mixed", "shares-20"), ("mixed", "unseen"),
    ("mixed", "missing"), ("mixed", "prediction"),
    ("many-categories", "unchanged"), ("many-categories", "city-shares"),
)  # fmt: skip


def _zipf(count: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1)
    return weights / weights.sum()


def _mixed(rng: np.random.Generator, rows: int, change: str) -> pd.DataFrame:
    age = rng.normal(40, 10, rows)
    age[rng.random(rows) < 0.02] = np.nan
    shares = dict(COLOURS)
    if change.startswith("shares-"):
        moved = int(change.removeprefix("shares-")) / 100
        shares = {"red": 0.5 - moved, "green": 0.3, "blue": 0.15 + moved, "grey": 0.05}
    colour = rng.choice(list(shares), p=list(shares.values()), size=rows).astype(object)
    if change == "unseen":
        colour[rng.random(rows) < 0.1] = "purple"
    colour[rng.random(rows) < (0.15 if change == "missing" else 0.05)] = None
    shift = 7.5 if change == "prediction" else 0.0
    return pd.DataFrame({"age": age, "colour": colour, "prediction": rng.normal(100 + shift, 15, rows)})


def _cities(rng: np.random.Generator, rows: int, change: str) -> pd.DataFrame:
    shares = _zipf(len(CITIES))
    if change == "city-shares":
        moved = shares[:5] * 0.25
        shares = shares.copy()
        shares[:5] -= moved
        shares[5:10] += moved
    return pd.DataFrame({"city": rng.choice(CITIES, p=shares, size=rows)})


def _schema(population: str) -> FeatureSchema:
    if population == "mixed":
        features = [Feature(name="age", kind="numeric", nullable=True),
                    Feature(name="colour", kind="categorical", categories=sorted(COLOURS), nullable=True)]  # fmt: skip
        return FeatureSchema(task="regression", task_reason="given", label_column="y", features=features)
    features = [Feature(name="city", kind="categorical", categories=CITIES)]
    return FeatureSchema(task="classification", task_reason="given", label_column="y", features=features,
                         class_names=["0", "1"])  # fmt: skip


def flagged_share(population: str, change: str, seeds: int, window_rows: int) -> float:
    """Share of seeded windows the check flags as drift."""
    draw = _mixed if population == "mixed" else _cities
    schema = _schema(population)
    alarms = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        train = draw(rng, TRAIN_ROWS, "unchanged")
        predictions = train.pop("prediction") if "prediction" in train else None
        profile = build_reference_profile(train, schema, predictions, seed=seed)
        alarms += detect_drift(profile, draw(rng, window_rows, change)).drift_detected
    return alarms / seeds


def main() -> None:
    """Measure every case and print (and save) the flagged shares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=400)
    parser.add_argument("--windows", default="200,500")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    started = time.perf_counter()
    rows = [{"population": p, "change": c, **{str(w): flagged_share(p, c, args.seeds, w) for w in windows}}
            for p, c in CASES]  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seeds": args.seeds, "train_rows": TRAIN_ROWS, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        print("| population | change | " + " | ".join(f"flagged, {w} rows" for w in windows) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in windows) + " |")
    for row in rows:
        shares = [f"{row[str(w)]:.1%}" for w in windows]
        print(f"| {row['population']} | {row['change']} | " + " | ".join(shares) + " |" if args.markdown else
              f"{row['population']:16} {row['change']:12} " + "  ".join(shares))  # fmt: skip
    print(f"({args.seeds} seeds per case, {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
