"""What a hyperparameter search costs locally: wall time against the number of candidates (1, 2, 4, 8).

    python benchmarks/search.py                      # kfp.local runs of the pipeline (pipeline.py run), then the
                                                     # search functions alone in this process, on Iris
    python benchmarks/search.py --counts 1 4 --mode functions --rows 20000   # the functions only, bigger data

Candidates are logistic regressions that differ only in `C` (0.1, 0.3, 1, 3, ...), so each costs about the same
and the time grows with their number, not with a slower model. A search of one candidate is not cross-validated
(`components.search`: the only candidate wins anyway), so its row is the pipeline without a search.

- `kfp-local`: `pipeline.py run --search-space ...` in a fresh process per count, exactly as a user runs it; the
  search's wall time is taken from the run's progress lines as they stream (from `> expand-search` to
  `< select-candidate`), beside the whole run's. Every component is a subprocess of its own under kfp.local.
- `functions`: `expand_search_space` + `cross_validate_candidate` per candidate + `select_best` in this process:
  the cross-validation work itself, without KFP's per-step process start and artifact I/O.

Prints a markdown table and writes JSON to benchmarks/results/search-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline.py"
RESULTS = ROOT / "benchmarks" / "results"
C_VALUES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def search_space(count: int) -> list[dict]:
    """`count` logistic-regression candidates differing only in C."""
    if count > len(C_VALUES):
        raise SystemExit(f"at most {len(C_VALUES)} candidates")
    return [{"model_family": "logistic_regression", "hyperparameters": {"C": c}} for c in C_VALUES[:count]]


def dataset(rows: int, directory: Path) -> str:
    """`iris` (rows 0), or `make_classification` with 20 features written as Parquet."""
    if not rows:
        return "iris"
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=10, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(20)])
    frame["target"] = y
    path = directory / f"synthetic-{rows}.parquet"
    frame.to_parquet(path, index=False)
    return str(path)


def run_kfp_local(count: int, data: str, folds: int, workdir: Path) -> dict:
    """One `pipeline.py run` with `count` candidates; wall time of the run and of its search part."""
    command = [
        sys.executable,
        str(PIPELINE),
        "run",
        "--root",
        str(workdir / f"n{count}"),
        "--dataset",
        data,
        "--min-accuracy",
        "0",
        "--cv-folds",
        str(folds),
        "--search-space",
        json.dumps(search_space(count)),
    ]
    started = time.perf_counter()
    marks: dict[str, float] = {}
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            now = time.perf_counter() - started
            text = line.strip()
            if text.startswith("> expand-search"):
                marks.setdefault("search_start", now)
            elif text.startswith("< select-candidate"):
                marks["search_end"] = now
            elif text.startswith("> score-candidate"):
                marks.setdefault("first_score_start", now)
            elif text.startswith("< score-candidate"):
                marks["last_score_end"] = now
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print("\n".join(lines[-20:]), file=sys.stderr)
        raise SystemExit(f"pipeline.py run failed for {count} candidate(s) (exit {proc.returncode})")
    step_times = [float(t.split(" in ")[1].rstrip("s")) for t in (x.strip() for x in lines) if t.startswith("< score-")]
    return {
        "candidates": count,
        "run_s": round(wall, 1),
        "search_s": round(marks["search_end"] - marks["search_start"], 1),
        "score_steps": len(step_times),
        "score_step_sum_s": round(sum(step_times), 1),
    }


def run_functions(count: int, data: str, folds: int) -> dict:
    """The search functions alone, in this process, on the same training split the pipeline would use."""
    from components.data import load_dataset, split_dataset, validate_dataset
    from components.evaluate import default_metric
    from components.search import cross_validate_candidate, expand_search_space, select_best

    frame = load_dataset(data, label_column="target")
    summary = validate_dataset(frame, label_column="target", test_fraction=0.2)
    schema = summary.schema
    train, _ = split_dataset(frame, label_column="target", test_fraction=0.2, seed=42, task=schema.task)
    metric = default_metric(schema.task)
    # Warm up once: the first fit pays scikit-learn's imports, which a long-lived process pays only once.
    warm = expand_search_space(search_space(2), model_family="auto", hyperparameters={}, task=schema.task)[0]
    cross_validate_candidate(train, schema, warm, folds=folds, seed=42, metric=metric)
    started = time.perf_counter()
    candidates = expand_search_space(search_space(count), model_family="auto", hyperparameters={}, task=schema.task)
    scores = [cross_validate_candidate(train, schema, c, folds=folds, seed=42, metric=metric) for c in candidates]
    select_best(scores, metric=metric)
    return {"candidates": count, "search_s": round(time.perf_counter() - started, 2), "train_rows": len(train)}


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--mode", choices=["both", "kfp-local", "functions"], default="both")
    parser.add_argument("--rows", type=int, default=0, help="synthetic rows instead of Iris (0: Iris)")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()

    results: dict = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "dataset": "iris" if not args.rows else f"make_classification {args.rows} rows x 20",
        "folds": args.folds,
    }
    with tempfile.TemporaryDirectory(prefix="search-bench-") as scratch:
        data = dataset(args.rows, Path(scratch))
        if args.mode in ("both", "kfp-local"):
            results["kfp_local"] = [run_kfp_local(n, data, args.folds, Path(scratch)) for n in args.counts]
        if args.mode in ("both", "functions"):
            sys.path.insert(0, str(ROOT))
            results["functions"] = [run_functions(n, data, args.folds) for n in args.counts]

    print(f"\n{results['dataset']}, {args.folds}-fold CV, {results['machine']['cpus']} CPUs\n")
    local = {r["candidates"]: r for r in results.get("kfp_local", [])}
    alone = {r["candidates"]: r for r in results.get("functions", [])}
    print("| candidates | kfp.local run (s) | its search part (s) | score steps' sum (s) | functions alone (s) |")
    print("| --- | --- | --- | --- | --- |")
    for n in args.counts:
        row = local.get(n, {})
        print(
            f"| {n} | {row.get('run_s', '-')} | {row.get('search_s', '-')} | {row.get('score_step_sum_s', '-')} "
            f"| {alone.get(n, {}).get('search_s', '-')} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"search-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
