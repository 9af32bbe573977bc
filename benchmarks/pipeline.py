"""Wall time and peak memory of the local pipeline (kfp.local), on Iris and on growing synthetic data.

    python benchmarks/pipeline.py                   # Iris, 100k and 1M rows (make_classification, 20 features),
                                                    # and 1M rows of mixed-type data (make_mixed_data.py)
    python benchmarks/pipeline.py --sizes 100000 --mixed-rows   # a subset: Iris and 100k rows
    python benchmarks/pipeline.py --skip-iris --sizes --mixed-rows 1000000   # only the 1M-row mixed-type run

The mixed-type case is `benchmarks/make_mixed_data.py` (string categories, missing values, a boolean, a coded
category declared with `--feature-types`), label `churned`, written as Parquet, trained with the default
`--model-family` (auto: logistic regression on one-hot categories) unless `--mixed-model-family` says otherwise.

Each case runs `pipeline.py run` in a fresh process, exactly as a user would, and reads:
- wall time of the whole run, and per step (from the run's progress lines);
- peak RSS of the largest process in the run (getrusage of the waited-for children, read by a small wrapper
  process per case: every component runs in its own subprocess, so this is the peak of the heaviest step, not a sum).
Prints a markdown table (the README's) and writes JSON to benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline.py"
RESULTS = ROOT / "benchmarks" / "results"
STEP = re.compile(r"< ([\w-]+) ok in ([\d.]+)s")


def synthetic_dataset(rows: int, directory: Path) -> Path:
    """`make_classification` with 20 features, written as Parquet (the pipeline's file input)."""
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(20)])
    frame["target"] = y
    path = directory / f"synthetic-{rows}.parquet"
    frame.to_parquet(path, index=False)
    return path


def mixed_dataset(rows: int, directory: Path) -> Path:
    """`make_mixed_data` classification rows (categories, missing values), written as Parquet."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.make_mixed_data import make_mixed_data, write_frame

    return write_frame(make_mixed_data(rows, seed=0), directory / f"mixed-{rows}.parquet")


# Runs the pipeline as its child and reports the peak RSS of its own children: per case, not since the benchmark began.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], check=False).returncode\n"
    "print(f'PEAK_RSS_KIB={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)
PEAK = re.compile(r"PEAK_RSS_KIB=(\d+)")


def run_case(label: str, dataset: str, workdir: Path, min_accuracy: float, extra: tuple[str, ...] = ()) -> dict:
    """Run the pipeline once in a child process; measure wall time and the peak RSS of its largest process."""
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            sys.executable,
            str(PIPELINE),
            "run",
            "--root",
            str(workdir / label),
            "--dataset",
            dataset,
            "--min-accuracy",
            str(min_accuracy),
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{label}: pipeline failed\n{proc.stdout}\n{proc.stderr}")
    peak = PEAK.findall(proc.stderr)
    steps = {name: float(seconds) for name, seconds in STEP.findall(proc.stdout)}
    return {
        "case": label,
        "wall_s": round(wall, 2),
        # The largest single process among the run's (every step is its own process), not a sum.
        "peak_rss_mib": round(int(peak[-1]) / 1024, 1) if peak else float("nan"),
        "steps_s": steps,
        "output": proc.stdout.splitlines()[-40:],
    }


def _rows(rows: int) -> str:
    return f"{rows // 1000}k rows" if rows < 1_000_000 else f"{rows // 1_000_000}M rows"


def main() -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--mixed-rows", type=int, nargs="*", default=[1_000_000], help="mixed-type cases (rows)")
    parser.add_argument("--mixed-model-family", default="", help="model family of the mixed cases (default: auto)")
    parser.add_argument("--skip-iris", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_iris:
            results.append(run_case("iris", "iris", work, min_accuracy=0.9))
        for rows in sorted(args.sizes):
            path = synthetic_dataset(rows, work)
            results.append(
                run_case(
                    _rows(rows),
                    str(path),
                    work,
                    min_accuracy=0.5,
                )
            )
        for rows in sorted(args.mixed_rows):
            family = ("--model-family", args.mixed_model_family) if args.mixed_model_family else ()
            results.append(
                run_case(
                    f"{_rows(rows)} mixed" + (f" {args.mixed_model_family}" if args.mixed_model_family else ""),
                    str(mixed_dataset(rows, work)),
                    work,
                    min_accuracy=0.5,
                    extra=("--label-column", "churned", "--feature-types", '{"store": "categorical"}', *family),
                )
            )
    print(f"\nMachine: {platform.machine()}, Python {platform.python_version()}\n")
    main_steps = ("load-data", "train", "evaluate", "deploy")
    print(
        "| data | whole run (s) | load-data | train | evaluate | deploy | other steps (search, champion) "
        "| peak RSS of a step (MiB) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = r["steps_s"]
        cells = [f"{s.get(step, float('nan')):.1f}" for step in main_steps]
        cells.append(f"{sum(v for k, v in s.items() if k not in main_steps):.1f}")
        print(f"| {r['case']} | {r['wall_s']:.1f} | " + " | ".join(cells) + f" | {r['peak_rss_mib']:.0f} |")
    (RESULTS / "pipeline.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
