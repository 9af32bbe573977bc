"""Wall time and peak memory of the local pipeline (kfp.local), on Iris and on growing synthetic data.

    python benchmarks/pipeline.py                   # Iris, 100k and 1M rows (make_classification, 20 features)
    python benchmarks/pipeline.py --sizes 100000    # a subset

Each case runs `pipeline.py run` in a fresh process, exactly as a user would, and reads:
- wall time of the whole run, and per step (from the run's progress lines);
- peak RSS of the largest process in the run (getrusage of the waited-for children: every component
  runs in its own subprocess, so this is the peak of the heaviest step, not a sum).
Prints a markdown table (the README's) and writes JSON to benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
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


def run_case(label: str, dataset: str, workdir: Path, min_accuracy: float) -> dict:
    """Run the pipeline once in a child process; measure wall time and the children's peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(PIPELINE),
            "run",
            "--root",
            str(workdir / label),
            "--dataset",
            dataset,
            "--min-accuracy",
            str(min_accuracy),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode != 0:
        raise SystemExit(f"{label}: pipeline failed\n{proc.stdout}\n{proc.stderr}")
    steps = {name: float(seconds) for name, seconds in STEP.findall(proc.stdout)}
    return {
        "case": label,
        "wall_s": round(wall, 2),
        # ru_maxrss only grows: a peak below an earlier case's shows up as that earlier peak; cases run small first.
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "peak_is_lower_bound_of_previous": peak_kib == before,
        "steps_s": steps,
    }


def main() -> int:
    """Run the cases and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results.append(run_case("iris", "iris", work, min_accuracy=0.9))
        for rows in sorted(args.sizes):
            path = synthetic_dataset(rows, work)
            results.append(
                run_case(
                    f"{rows // 1000}k rows" if rows < 1_000_000 else f"{rows // 1_000_000}M rows",
                    str(path),
                    work,
                    min_accuracy=0.5,
                )
            )
    print(f"\nMachine: {platform.machine()}, Python {platform.python_version()}\n")
    print("| data | whole run (s) | load-data | train | evaluate | deploy | peak RSS of a step (MiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = r["steps_s"]
        cells = [f"{s.get(step, float('nan')):.1f}" for step in ("load-data", "train", "evaluate", "deploy")]
        print(f"| {r['case']} | {r['wall_s']:.1f} | " + " | ".join(cells) + f" | {r['peak_rss_mib']:.0f} |")
    (RESULTS / "pipeline.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
