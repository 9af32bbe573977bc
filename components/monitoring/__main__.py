"""Run the monitoring pipeline on a laptop: `python -m components.monitoring --log_dir ... --model_dir ...`.

Runs `monitoring_pipeline` under `kfp.local` (components as subprocesses of this Python) and prints where the
HTML report and the drift JSON landed. Exit status: 0 when the run succeeded (whatever the drift status), 1 when
it failed (including `--on_drift fail` on drift).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from components.constants import (
    DEFAULT_KS_ALPHA,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MIN_RECORDS,
    DEFAULT_MODEL_NAME,
    DEFAULT_PSI_THRESHOLD,
    LOG_FORMAT_PAYLOAD,
    LOG_FORMATS,
    ON_DRIFT_ACTIONS,
    ON_DRIFT_REPORT,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the pipeline locally, print the outcome; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m components.monitoring", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--log_dir", required=True, type=Path, help="what `serve --payload_log_dir` wrote (or KServe's)"
    )
    parser.add_argument("--model_dir", required=True, type=Path, help="model directory with reference_profile.json")
    parser.add_argument("--model_name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--window_hours", type=float, default=24.0)
    parser.add_argument("--window_end", default="", help="ISO time (UTC if naive); default now")
    parser.add_argument("--psi_threshold", type=float, default=DEFAULT_PSI_THRESHOLD)
    parser.add_argument("--ks_alpha", type=float, default=DEFAULT_KS_ALPHA)
    parser.add_argument("--min_records", type=int, default=DEFAULT_MIN_RECORDS)
    parser.add_argument("--on_drift", choices=ON_DRIFT_ACTIONS, default=ON_DRIFT_REPORT)
    parser.add_argument("--retrain_request_dir", type=Path, default=None, help="where on_drift=retrain writes")
    parser.add_argument("--log_format", choices=LOG_FORMATS, default=LOG_FORMAT_PAYLOAD)
    parser.add_argument("--pipeline_root", type=Path, default=Path(DEFAULT_LOCAL_ROOT) / "monitoring")
    args = parser.parse_args(argv)

    from kfp import local

    from components.monitoring.pipeline_def import monitoring_pipeline

    root = args.pipeline_root.resolve()
    before = set(root.glob("*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    failure = ""
    try:
        monitoring_pipeline(
            log_dir=str(args.log_dir.resolve()),
            model_dir=str(args.model_dir.resolve()),
            model_name=args.model_name,
            window_hours=args.window_hours,
            window_end=args.window_end,
            psi_threshold=args.psi_threshold,
            ks_alpha=args.ks_alpha,
            min_records=args.min_records,
            on_drift=args.on_drift,
            log_format=args.log_format,
            retrain_request_dir=str(args.retrain_request_dir.resolve()) if args.retrain_request_dir else "",
        )
    except RuntimeError as error:  # kfp.local's "pipeline finished with status FAILURE"
        failure = str(error)
    runs = sorted(set(root.glob("*")) - before)
    reports = [p for run in runs for p in run.glob("check-drift/drift_report/drift_report.json")]
    if reports:
        report = json.loads(reports[-1].read_text(encoding="utf-8"))
        print(f"{report['status']}: {report['message']}")
        print(f"HTML report: {reports[-1].parents[1] / 'report_html'}")
    if failure or not reports:
        print(f"monitoring run failed: {failure or 'no report written'} (outputs in {root})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
