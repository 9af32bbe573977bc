"""How much of the payload log does a kill -9 of the server lose? Measures the loss window of PayloadLogWriter.

A child process records one row every `--period-ms` with the writer's defaults (as `serve --payload_log_dir` does)
and prints each row's number once recorded; the parent SIGKILLs it at a random moment, then reads what reached the
disk. Per trial it reports the rows recorded but lost and the age of the newest lost row at the kill.

Run: .venv/bin/python benchmarks/payload_kill_window.py [--trials 10] [--period-ms 5]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = """
import sys, time
import numpy as np
from components.payload_log import PayloadLogWriter
writer = PayloadLogWriter(sys.argv[1], model_name="bench", model_sha256="0" * 64, feature_names=["i", "t"])
period = float(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    writer.record(np.array([[float(i), time.time()]]), [0])
    print(i, flush=True)
    i += 1
    time.sleep(period)
"""


def trial(directory: Path, period_s: float, rng: random.Random) -> tuple[int, int, float]:
    """One kill: (rows recorded, rows lost, seconds between the newest persisted row and the kill)."""
    from components.monitoring.payload_reader import read_payload_window

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(directory), str(period_s)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    started = time.time()
    time.sleep(rng.uniform(1.5, 4.0))
    child.kill()
    killed_at = time.time()
    recorded = [int(line) for line in child.stdout.read().split() if line.isdigit()]
    child.wait()
    frame = read_payload_window(directory, model_name="bench", start=None, end=None)
    written = set(frame["i"].astype(int)) if len(frame) else set()
    lost = [i for i in recorded if i not in written]
    # Everything recorded after the newest persisted row is what a kill costs: its age is the loss window.
    newest = float(frame["t"].max()) if len(frame) else started
    window = killed_at - newest if lost else 0.0
    return len(recorded), len(lost), window


def main() -> None:
    """Run the trials and print one line each, then the worst case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--period-ms", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    worst_rows, worst_window = 0, 0.0
    for n in range(args.trials):
        with tempfile.TemporaryDirectory() as tmp:
            recorded, lost, window = trial(Path(tmp), args.period_ms / 1000, rng)
        worst_rows, worst_window = max(worst_rows, lost), max(worst_window, window)
        print(f"trial {n}: recorded {recorded} rows, lost {lost}, newest persisted row {window:.3f} s before the kill")
    print(
        f"worst: {worst_rows} rows lost, {worst_window:.3f} s window ({args.trials} kills, 1 row / {args.period_ms} ms)"
    )


if __name__ == "__main__":
    main()
