"""Generate a mixed-type tabular dataset: string categories, missing values, a boolean, a coded category, an ID.

    python benchmarks/make_mixed_data.py customers.csv --rows 5000                       # churn classification
    python benchmarks/make_mixed_data.py spend.csv --rows 5000 --task regression         # a numeric target
    python benchmarks/make_mixed_data.py big.parquet --rows 1000000 --with-id            # Parquet, with an ID column

Everything is drawn from a seeded generator (no download): the same arguments give the same file. The label depends
on numeric and categorical columns alike (the coded `store` column only as a category), so a model that reads the
types right learns it well; missing values are punched in after the label is drawn, as in real data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

CLASSIFICATION_LABEL = "churned"
"""Label column of the classification variant: `yes` / `no`."""
REGRESSION_LABEL = "spend"
"""Label column of the regression variant: monthly spend, a float."""
ID_COLUMN = "customer_id"
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west", "central")
CHANNELS = ("web", "store", "phone")
STORES = 8
"""`store` holds codes 1..8: numbers that mean categories (declare it with feature_types)."""
NULLABLE_COLUMNS = ("age", "income", "plan", "region")
"""Columns that get missing values; the others are complete."""
DEFAULT_MISSING_RATE = 0.05


def make_mixed_data(
    rows: int,
    *,
    task: str = "classification",
    seed: int = 0,
    missing_rate: float = DEFAULT_MISSING_RATE,
    with_id: bool = False,
    label_column: str = "",
) -> pd.DataFrame:
    """A frame of `rows` customers with mixed-type features and a churn class or a spend target.

    Columns: `age` (float, missing), `income` (float, missing), `tenure_months` (int), `plan` (basic/standard/premium,
    missing), `region` (5 names, missing), `channel` (web/store/phone), `autopay` (bool), `store` (int codes 1..8,
    a category in disguise), optionally `customer_id` (a distinct string per row, first), then the label.

    Args:
        rows: Number of rows (at least 10).
        task: `classification` (label `churned`: yes/no) or `regression` (label `spend`: a float).
        seed: Seed of every draw.
        missing_rate: Share of missing values in each of `NULLABLE_COLUMNS`, in [0, 0.5].
        with_id: Add a `customer_id` column (ID-like: the data step refuses it unless dropped).
        label_column: Name of the label column; default `churned` or `spend`.

    Returns:
        The frame, label last.
    """
    import numpy as np
    import pandas as pd

    if rows < 10:
        raise ValueError(f"rows must be at least 10, got {rows}")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    if not 0.0 <= missing_rate <= 0.5:
        raise ValueError(f"missing_rate must be in [0, 0.5], got {missing_rate}")
    rng = np.random.default_rng(seed)
    plan = rng.choice(len(PLANS), size=rows, p=[0.5, 0.3, 0.2])
    region = rng.integers(0, len(REGIONS), size=rows)
    channel = rng.choice(len(CHANNELS), size=rows, p=[0.6, 0.25, 0.15])
    store = rng.integers(1, STORES + 1, size=rows)
    age = np.round(rng.normal(45, 14, size=rows).clip(18, 90))
    income = np.round(rng.lognormal(10.6, 0.45, size=rows), 2)
    tenure = rng.integers(0, 120, size=rows)
    autopay = rng.random(rows) < 0.55
    # Store effects are deliberately not monotonic in the code, so the code is only useful as a category.
    store_effect = np.array([0.0, 1.4, -1.2, 0.6, -0.9, 1.1, -1.5, 0.3])[store - 1]
    plan_effect = np.array([-1.6, 0.0, 1.7])[plan]
    region_effect = np.array([0.5, -0.4, 0.0, 0.9, -1.0])[region]
    signal = (
        plan_effect
        + region_effect
        + store_effect
        + 0.9 * autopay
        + 0.025 * (tenure - 60)
        + 0.03 * (age - 45)
        + 0.6 * (channel == 2)
        + 1.2 * np.log(income / 40_000)
    )
    frame = pd.DataFrame(
        {
            "age": age,
            "income": income,
            "tenure_months": tenure,
            "plan": np.asarray(PLANS, dtype=object)[plan],
            "region": np.asarray(REGIONS, dtype=object)[region],
            "channel": np.asarray(CHANNELS, dtype=object)[channel],
            "autopay": autopay,
            "store": store,
        }
    )
    if task == "classification":
        churn = signal + rng.logistic(scale=0.15, size=rows) < 0
        frame[label_column or CLASSIFICATION_LABEL] = np.where(churn, "yes", "no")
    else:
        frame[label_column or REGRESSION_LABEL] = np.round(90 + 12 * signal + rng.normal(scale=4.0, size=rows), 2)
    for column in NULLABLE_COLUMNS:
        # Each nullable column gets at least one gap, so the schema marks it nullable even in a small frame.
        gaps = rng.random(rows) < missing_rate
        if missing_rate > 0 and not gaps.any():
            gaps[rng.integers(rows)] = True
        frame[column] = frame[column].mask(gaps)
    if with_id:
        frame.insert(0, ID_COLUMN, [f"C{n:08d}" for n in rng.permutation(rows)])
    return frame


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` as CSV or Parquet, chosen by the suffix of `path` (.csv, .parquet, .pq)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"cannot tell the format of '{path}': use a .csv or .parquet file name")
    return path


def main(argv: list[str] | None = None) -> int:
    """Write the dataset the flags describe; print one line saying what was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="file to write: .csv or .parquet")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--task", choices=("classification", "regression"), default="classification")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--missing-rate", type=float, default=DEFAULT_MISSING_RATE)
    parser.add_argument("--with-id", action="store_true", help=f"add a distinct '{ID_COLUMN}' per row")
    parser.add_argument("--label-column", default="", help="default: churned (classification) or spend")
    args = parser.parse_args(argv)
    try:
        frame = make_mixed_data(
            args.rows,
            task=args.task,
            seed=args.seed,
            missing_rate=args.missing_rate,
            with_id=args.with_id,
            label_column=args.label_column,
        )
        write_frame(frame, args.output)
    except (ValueError, OSError) as exc:
        print(f"make_mixed_data: {exc}", file=sys.stderr)
        return 2
    label = frame.columns[-1]
    print(f"wrote {args.output}: {len(frame)} rows, {frame.shape[1] - 1} features, label '{label}' ({args.task})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
