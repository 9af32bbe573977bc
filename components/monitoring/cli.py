"""Check logged predictions for drift: `pipeline.py monitor --log-dir D --model-dir M` (or `-m components.monitoring`).

Runs `monitoring_pipeline` under `kfp.local` (components as subprocesses of this Python) and prints where the
HTML report and the drift JSON landed. With `--on-drift retrain`, a drifted window starts the training pipeline
with the parameters in the live model's card (`pipeline.py run` here, or a KFP run with `--endpoint`); the whole
configuration is checked before any log is read. With `--schedule CRON --endpoint URL` it instead creates a KFP
recurring run of the monitoring pipeline. Exit status: 0 when the run succeeded (whatever the drift status), 1
when it or the retraining failed (including `--on-drift fail` on drift), 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_IMAGE,
    DEFAULT_KS_ALPHA,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MIN_RECORDS,
    DEFAULT_MISSING_RATE_THRESHOLD,
    DEFAULT_MODEL_NAME,
    DEFAULT_PSI_THRESHOLD,
    DEFAULT_STD_RATIO_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
    DRIFT_STATUS_DRIFT,
    LOG_FORMAT_PAYLOAD,
    LOG_FORMATS,
    ON_DRIFT_ACTIONS,
    ON_DRIFT_REPORT,
    ON_DRIFT_RETRAIN,
)

PIPELINE_SCRIPT = Path(__file__).resolve().parents[2] / "pipeline.py"
"""The project's command line (absent when only the package is installed, as in the image)."""
TRAINING_PACKAGE = PIPELINE_SCRIPT.with_name("pipeline.yaml")
IN_CLUSTER_KFP_ENDPOINT = "http://ml-pipeline.kubeflow:8888"
"""KFP's API as a scheduled run's pods reach it (standalone KFP)."""
CONFIG_ERROR = 2


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0].split(":")[0])
    window = parser.add_argument_group("what to check")
    window.add_argument("--log-dir", required=True, help="payload logs (what the server logged), or s3://")
    window.add_argument("--model-dir", required=True, help="the live model's directory (reference_profile.json)")
    window.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    window.add_argument("--window-hours", type=float, default=24.0)
    window.add_argument("--window-end", default="", help="ISO time (UTC if naive); default now")
    window.add_argument("--log-format", choices=LOG_FORMATS, default=LOG_FORMAT_PAYLOAD)
    window.add_argument("--s3-endpoint", default="", help="S3-compatible endpoint for s3:// locations")
    rule = parser.add_argument_group("the drift rule")
    rule.add_argument("--psi-threshold", type=float, default=DEFAULT_PSI_THRESHOLD)
    rule.add_argument("--ks-alpha", type=float, default=DEFAULT_KS_ALPHA, help="family-wise level (Holm)")
    rule.add_argument("--std-ratio-threshold", type=float, default=DEFAULT_STD_RATIO_THRESHOLD)
    rule.add_argument("--min-records", type=int, default=DEFAULT_MIN_RECORDS)
    rule.add_argument(
        "--missing-rate-threshold", type=float, default=DEFAULT_MISSING_RATE_THRESHOLD,
        help="change of a feature's missing share that counts",
    )  # fmt: skip
    rule.add_argument(
        "--unseen-threshold", type=float, default=DEFAULT_UNSEEN_THRESHOLD,
        help="share of a categorical feature's values in unseen categories that counts",
    )  # fmt: skip
    action = parser.add_argument_group("on drift")
    action.add_argument("--on-drift", choices=ON_DRIFT_ACTIONS, default=ON_DRIFT_REPORT)
    action.add_argument("--retrain-dataset", default="", help="new labelled data to retrain on (path, URL or name)")
    action.add_argument("--retrain-request-dir", default="", help="also record the request (retrain_request.json)")
    action.add_argument(
        "--retrain-print-only", action="store_true", help="print the training command instead of running it"
    )
    action.add_argument(
        "--retrain-root", type=Path, default=Path(DEFAULT_LOCAL_ROOT), help="local outputs of the training run"
    )
    action.add_argument("--endpoint", default="", help="KFP API: retrain there (and where --schedule creates the run)")
    action.add_argument("--training-package", default=str(TRAINING_PACKAGE), help="compiled training pipeline")
    action.add_argument("--training-pipeline-id", default="", help="or an uploaded training pipeline")
    action.add_argument("--experiment", default="", help="KFP experiment (retraining / monitoring)")
    schedule = parser.add_argument_group("schedule on KFP instead of running here")
    schedule.add_argument("--schedule", default="", metavar="CRON", help="KFP cron, six fields: '0 0 6 * * *'")
    schedule.add_argument("--job-name", default="", help="the recurring run's name (default <model>-drift)")
    schedule.add_argument("--image", default=DEFAULT_IMAGE, help="image of the monitoring steps")
    schedule.add_argument(
        "--retrain-endpoint", default=IN_CLUSTER_KFP_ENDPOINT, help="KFP API as the scheduled run reaches it"
    )
    schedule.add_argument("--training-arguments", default="{}", help="JSON training parameters for the retrain step")
    schedule.add_argument("--service-account", default="", help="the scheduled runs' service account")
    parser.add_argument("--pipeline-root", type=Path, default=Path(DEFAULT_LOCAL_ROOT) / "monitoring")
    return parser


def _aliases(parser: argparse.ArgumentParser) -> dict[str, str]:
    """`--on_drift` -> `--on-drift`, for every hyphenated flag: the spellings earlier versions took."""
    flags = [f for action in parser._actions for f in action.option_strings if f.startswith("--")]
    return {f.replace("-", "_").replace("__", "--", 1): f for f in flags if "-" in f[2:]}


def _normalize(argv: Sequence[str], aliases: dict[str, str]) -> list[str]:
    out = []
    for token in argv:
        name, sep, value = token.partition("=")
        out.append(aliases[name] + sep + value if name in aliases else token)
    return out


def parse_args(argv: Sequence[str], prog: str = "pipeline.py monitor") -> argparse.Namespace:
    """Parse the command line; the old underscore spellings (`--on_drift`) still work but are not listed."""
    parser = _parser(prog)
    return parser.parse_args(_normalize(argv, _aliases(parser)))


class ConfigError(ValueError):
    """The command line cannot work; reported in one line before anything runs."""


def _local_path(text: str) -> str:
    return text if "://" in text else str(Path(text).resolve())


def check_config(args: argparse.Namespace) -> dict[str, Any]:
    """Check everything the run will need, before any data is read; returns the retraining arguments (or {})."""
    from components.monitoring.drift import DriftInputError, check_thresholds
    from components.monitoring.retrain import RetrainConfigError, check_retrain_config, training_arguments_from_card
    from components.monitoring.schedule import ScheduleError, check_cron

    try:
        check_thresholds(
            psi_threshold=args.psi_threshold,
            ks_alpha=args.ks_alpha,
            min_records=args.min_records,
            std_ratio_threshold=args.std_ratio_threshold,
            missing_rate_threshold=args.missing_rate_threshold,
            unseen_threshold=args.unseen_threshold,
        )
        if args.schedule:
            check_cron(args.schedule)
            if not args.endpoint:
                raise ConfigError("--schedule needs --endpoint (the KFP API to create the recurring run on)")
            return check_retrain_config(
                args.on_drift,
                kfp_endpoint=args.retrain_endpoint,
                pipeline_id=args.training_pipeline_id,
                training_arguments=args.training_arguments,
            )
        if args.on_drift != ON_DRIFT_RETRAIN:
            return {}
        arguments = training_arguments_from_card(
            Path(args.model_dir), model_name=args.model_name, dataset=args.retrain_dataset
        )
        if args.endpoint:
            check_retrain_config(
                args.on_drift,
                kfp_endpoint=args.endpoint,
                pipeline_id=args.training_pipeline_id,
                pipeline_package="" if args.training_pipeline_id else args.training_package,
            )
        return arguments
    except (DriftInputError, RetrainConfigError, ScheduleError, ValueError) as error:
        raise ConfigError(str(error)) from None


def _schedule(args: argparse.Namespace) -> int:
    from kfp import compiler

    from components.monitoring.pipeline_def import make_monitoring_pipeline
    from components.monitoring.schedule import ScheduleError, create_monitoring_schedule

    parameters = {
        "log_dir": args.log_dir,
        "model_dir": args.model_dir,
        "model_name": args.model_name,
        "window_hours": args.window_hours,
        "psi_threshold": args.psi_threshold,
        "ks_alpha": args.ks_alpha,
        "std_ratio_threshold": args.std_ratio_threshold,
        "missing_rate_threshold": args.missing_rate_threshold,
        "unseen_threshold": args.unseen_threshold,
        "min_records": args.min_records,
        "on_drift": args.on_drift,
        "s3_endpoint": args.s3_endpoint,
        "log_format": args.log_format,
    }
    if args.on_drift == ON_DRIFT_RETRAIN:
        parameters |= {
            "kfp_endpoint": args.retrain_endpoint,
            "training_pipeline_id": args.training_pipeline_id,
            "training_arguments": args.training_arguments,
        }
    with tempfile.TemporaryDirectory() as folder:
        package = Path(folder) / "monitoring_pipeline.yaml"
        compiler.Compiler().compile(make_monitoring_pipeline(args.image), package_path=str(package))
        try:
            recurring_run_id = create_monitoring_schedule(
                package,
                endpoint=args.endpoint,
                cron=args.schedule,
                parameters=parameters,
                job_name=args.job_name or f"{args.model_name}-drift",
                experiment=args.experiment or "monitoring",
                service_account=args.service_account or None,
            )
        except ScheduleError as error:
            print(f"schedule failed: {error}", file=sys.stderr)
            return 1
    print(f"created recurring run {recurring_run_id} on {args.endpoint} ({args.schedule})")
    return 0


def _run_monitoring(args: argparse.Namespace) -> tuple[dict[str, Any] | None, str, Path]:
    """Run the monitoring pipeline here; returns (the report or None, the failure or "", the pipeline root)."""
    from kfp import local

    from components.monitoring.pipeline_def import monitoring_pipeline

    root = args.pipeline_root.resolve()
    before = set(root.glob("*"))
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    # This process starts the training itself (below); the pipeline's retrain step only records the request.
    on_drift = args.on_drift
    if on_drift == ON_DRIFT_RETRAIN and not args.retrain_request_dir:
        on_drift = ON_DRIFT_REPORT
    failure = ""
    try:
        monitoring_pipeline(
            log_dir=_local_path(args.log_dir),
            model_dir=_local_path(args.model_dir),
            model_name=args.model_name,
            window_hours=args.window_hours,
            window_end=args.window_end,
            psi_threshold=args.psi_threshold,
            ks_alpha=args.ks_alpha,
            std_ratio_threshold=args.std_ratio_threshold,
            missing_rate_threshold=args.missing_rate_threshold,
            unseen_threshold=args.unseen_threshold,
            min_records=args.min_records,
            on_drift=on_drift,
            log_format=args.log_format,
            s3_endpoint=args.s3_endpoint,
            retrain_request_dir=_local_path(args.retrain_request_dir) if args.retrain_request_dir else "",
        )
    except RuntimeError as error:  # kfp.local's "pipeline finished with status FAILURE"
        failure = str(error)
    runs = sorted(set(root.glob("*")) - before)
    reports = [p for run in runs for p in run.glob("check-drift/drift_report/drift_report.json")]
    if not reports:
        return None, failure, root
    report = json.loads(reports[-1].read_text(encoding="utf-8"))
    report["html"] = str(reports[-1].parents[1] / "report_html")
    return report, failure, root


def _retrain(args: argparse.Namespace, arguments: dict[str, Any]) -> int:
    from components.monitoring.retrain import (
        RetrainTriggerError,
        describe_command,
        local_training_command,
        trigger_retraining,
    )

    if args.endpoint:
        try:
            run_id = trigger_retraining(
                endpoint=args.endpoint,
                arguments=arguments,
                pipeline_id=args.training_pipeline_id,
                pipeline_package_path="" if args.training_pipeline_id else args.training_package,
                experiment_name=args.experiment or "retraining",
                run_name=f"retrain-{args.model_name}",
            )
        except RetrainTriggerError as error:
            print(f"retraining failed: {error}", file=sys.stderr)
            return 1
        print(f"retraining: started training run {run_id} on {args.endpoint}")
        return 0
    if args.retrain_print_only or not PIPELINE_SCRIPT.is_file():
        command = local_training_command(arguments, pipeline_script=Path("pipeline.py"), root=args.retrain_root)
        print(f"retraining: run this to retrain (the deploy gate decides whether it replaces the model):\n  "
              f"{describe_command(command)}")  # fmt: skip
        return 0
    command = local_training_command(
        arguments, pipeline_script=PIPELINE_SCRIPT, root=args.retrain_root.resolve(), python=sys.executable
    )
    print(f"retraining: {describe_command(command)}", flush=True)
    finished = subprocess.run(command, check=False)  # our own CLI as an argv list, no shell
    if finished.returncode != 0:
        print(f"retraining failed: the training run exited with {finished.returncode}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, check them, then schedule, or run the check here and act on drift; returns the exit status."""
    prog = "pipeline.py monitor" if Path(sys.argv[0]).name == "pipeline.py" else "python -m components.monitoring"
    args = parse_args(list(sys.argv[1:] if argv is None else argv), prog)
    try:
        retrain_arguments = check_config(args)
    except ConfigError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return CONFIG_ERROR
    if args.schedule:
        return _schedule(args)

    report, failure, root = _run_monitoring(args)
    if report is not None:
        print(f"{report['status']}: {report['message']}")
        print(f"HTML report: {report['html']}")
    if failure or report is None:
        print(f"monitoring run failed: {failure or 'no report written'} (outputs in {root})")
        return 1
    if report["status"] == DRIFT_STATUS_DRIFT and args.on_drift == ON_DRIFT_RETRAIN:
        return _retrain(args, retrain_arguments)
    return 0
