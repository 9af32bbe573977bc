"""KFP components of the monitoring pipeline: thin wrappers over components.monitoring.

Only stdlib and kfp are imported at module level (compiling stays cheap); each body imports the logic it calls
from the `components` package baked into the image. As in components/kfp_components.py, the step functions are plain and
`build_monitoring_components(image)` wraps them for one image (pipeline_def.py builds the pipeline from them).
"""

# No `from __future__ import annotations`: KFP reads the real annotation objects to type inputs and outputs.
from collections.abc import Callable
from dataclasses import dataclass

from kfp.dsl import HTML, Artifact, Input, Metrics, Output

from components.constants import DEFAULT_IMAGE
from components.kfp_components import project_component


def check_drift(
    report_html: Output[HTML],
    metrics: Output[Metrics],
    drift_report: Output[Artifact],
    log_dir: str,
    model_dir: str,
    model_name: str,
    window_hours: float,
    window_end: str,
    psi_threshold: float,
    ks_alpha: float,
    min_records: int,
    on_drift: str,
    s3_endpoint: str = "",
    log_format: str = "payload-parquet",
    std_ratio_threshold: float = 1.2,  # constants.DEFAULT_STD_RATIO_THRESHOLD: KFP runs this source alone
    retrain_request_dir: str = "",
    kfp_endpoint: str = "",
    training_pipeline_id: str = "",
    training_pipeline_package: str = "",
    training_arguments: str = "{}",
    missing_rate_threshold: float = 0.05,  # constants.DEFAULT_MISSING_RATE_THRESHOLD
    unseen_threshold: float = 0.05,  # constants.DEFAULT_UNSEEN_THRESHOLD
) -> str:
    """Compare a window of logged inputs (and a regression model's predictions) with the model's reference profile.

    Args:
        report_html: Per-feature plots and the decision (shown in the KFP UI).
        metrics: Record count, drifted features, max PSI, min KS, spread and chi-square p-values, max unseen
            share and missing-rate change, per feature its PSI, std ratio (numeric), unseen share (categorical) and
            window missing rate (where anything is missing); for a regression model the predictions' PSI, KS p and
            drift flag; the drift flag.
        drift_report: The `DriftReport` as JSON (`drift_report.json` inside the artifact directory).
        log_dir: Payload log root (local path or `s3://bucket/prefix`).
        model_dir: Model directory holding `reference_profile.json` (path, `s3://` or `minio://` URI).
        model_name: Which model's logs to read.
        window_hours: Length of the window ending at `window_end`.
        window_end: ISO time (UTC if naive); empty for now.
        psi_threshold: Smallest PSI that counts.
        ks_alpha: Family-wise false-alarm level over every test of every feature and the predictions (Holm).
        min_records: Fewer rows give `not_enough_data`.
        on_drift: `retrain`, `fail` or `report` (checked here so a typo fails on the first run, drift or not).
        s3_endpoint: S3-compatible endpoint for `s3://` locations (e.g. `http://seaweedfs.kubeflow:9000`).
        log_format: `payload-parquet` (local server, sink) or `kserve-json` (KServe's built-in blob logger).
        std_ratio_threshold: Factor the standard deviation must change by for a significant spread test to count.
        retrain_request_dir: As for request-retraining; checked here, before any data is read.
        kfp_endpoint: As for request-retraining; checked here.
        training_pipeline_id: As for request-retraining; checked here.
        training_pipeline_package: As for request-retraining; checked here.
        training_arguments: As for request-retraining; checked here.
        missing_rate_threshold: Change of a feature's missing rate (a share) a significant test must reach.
        unseen_threshold: Share of a categorical feature's values in unseen categories that counts as drift.

    Returns:
        The action to take: `none` unless the status is `drift`, else `on_drift`. (One plain output on purpose:
        kfp.local 2.17 cannot branch on a named output of a multi-output task.)
    """
    import json
    import math
    from datetime import datetime
    from pathlib import Path

    from components.constants import (
        LOG_FORMAT_KSERVE_JSON,
        LOG_FORMATS,
        METRIC_DRIFT_DETECTED,
        METRIC_DRIFT_FEATURES_DRIFTED,
        METRIC_DRIFT_MAX_MISSING_RATE_CHANGE,
        METRIC_DRIFT_MAX_PSI,
        METRIC_DRIFT_MAX_UNSEEN_SHARE,
        METRIC_DRIFT_MIN_CHI2_PVALUE,
        METRIC_DRIFT_MIN_KS_PVALUE,
        METRIC_DRIFT_MIN_SPREAD_PVALUE,
        METRIC_DRIFT_MISSING_RATE_PREFIX,
        METRIC_DRIFT_PREDICTION_DRIFTED,
        METRIC_DRIFT_PREDICTION_KS_PVALUE,
        METRIC_DRIFT_PREDICTION_PSI,
        METRIC_DRIFT_PSI_PREFIX,
        METRIC_DRIFT_RECORDS,
        METRIC_DRIFT_STD_RATIO_PREFIX,
        METRIC_DRIFT_UNSEEN_SHARE_PREFIX,
    )
    from components.monitoring.drift import check_thresholds, detect_drift
    from components.monitoring.kserve_blob import read_kserve_blob_window
    from components.monitoring.payload_reader import open_filesystem, read_payload_window, window_bounds
    from components.monitoring.report import render_drift_report_html
    from components.monitoring.retrain import check_retrain_config, decide_on_drift
    from components.reference_profile import load_reference_profile

    # The whole configuration is checked before any data is read: a typo fails the first run, drift or not.
    decide_on_drift("ok", on_drift)
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {list(LOG_FORMATS)}, got {log_format!r}")
    check_thresholds(
        psi_threshold=psi_threshold, ks_alpha=ks_alpha, min_records=min_records,
        std_ratio_threshold=std_ratio_threshold, missing_rate_threshold=missing_rate_threshold,
        unseen_threshold=unseen_threshold,
    )  # fmt: skip
    check_retrain_config(
        on_drift,
        request_dir=retrain_request_dir,
        kfp_endpoint=kfp_endpoint,
        pipeline_id=training_pipeline_id,
        pipeline_package=training_pipeline_package,
        training_arguments=training_arguments,
    )
    model_filesystem, model_location = open_filesystem(model_dir, s3_endpoint=s3_endpoint)
    profile = load_reference_profile(model_location, filesystem=model_filesystem)
    start, end = window_bounds(datetime.fromisoformat(window_end) if window_end else None, window_hours)
    filesystem, location = open_filesystem(log_dir, s3_endpoint=s3_endpoint)
    if log_format == LOG_FORMAT_KSERVE_JSON:
        categorical = [name for name in profile.feature_names if profile.features[name].kind == "categorical"]
        window = read_kserve_blob_window(
            location, feature_names=profile.feature_names, model_name=model_name, start=start, end=end,
            filesystem=filesystem, categorical=categorical,
        )  # fmt: skip
    else:
        window = read_payload_window(location, model_name=model_name, start=start, end=end, filesystem=filesystem)
    report = detect_drift(
        profile,
        window,
        psi_threshold=psi_threshold,
        ks_alpha=ks_alpha,
        min_records=min_records,
        std_ratio_threshold=std_ratio_threshold,
        missing_rate_threshold=missing_rate_threshold,
        unseen_threshold=unseen_threshold,
    )

    Path(report_html.path).write_text(render_drift_report_html(report, profile, window), encoding="utf-8")
    Path(drift_report.path).mkdir(parents=True, exist_ok=True)
    document = {**report.to_dict(), "window_start": start.isoformat(), "window_end": end.isoformat()}
    (Path(drift_report.path) / "drift_report.json").write_text(json.dumps(document, indent=2), encoding="utf-8")
    drift_report.metadata.update({"status": report.status, "records": report.records, "model_name": model_name})
    metrics.log_metric(METRIC_DRIFT_RECORDS, report.records)
    metrics.log_metric(METRIC_DRIFT_FEATURES_DRIFTED, len(report.drifted_features))
    metrics.log_metric(METRIC_DRIFT_MAX_PSI, round(report.max_psi, 6))
    metrics.log_metric(METRIC_DRIFT_MIN_KS_PVALUE, report.min_ks_pvalue)
    metrics.log_metric(METRIC_DRIFT_MIN_SPREAD_PVALUE, report.min_spread_pvalue)
    metrics.log_metric(METRIC_DRIFT_MIN_CHI2_PVALUE, report.min_chi2_pvalue)
    metrics.log_metric(METRIC_DRIFT_MAX_UNSEEN_SHARE, round(report.max_unseen_share, 6))
    metrics.log_metric(METRIC_DRIFT_MAX_MISSING_RATE_CHANGE, round(report.max_missing_rate_change, 6))
    for feature in report.features:  # the report's columns, one metric per feature (NaN is not valid JSON)
        metrics.log_metric(f"{METRIC_DRIFT_PSI_PREFIX}{feature.name}", round(feature.psi, 6))
        if math.isfinite(feature.std_ratio):
            metrics.log_metric(f"{METRIC_DRIFT_STD_RATIO_PREFIX}{feature.name}", round(feature.std_ratio, 6))
        if feature.kind == "categorical":
            metrics.log_metric(f"{METRIC_DRIFT_UNSEEN_SHARE_PREFIX}{feature.name}", round(feature.unseen_share, 6))
        if math.isfinite(feature.missing_rate_window) and (
            feature.missing_rate_window or feature.missing_rate_reference
        ):
            rate = round(feature.missing_rate_window, 6)
            metrics.log_metric(f"{METRIC_DRIFT_MISSING_RATE_PREFIX}{feature.name}", rate)
    if report.prediction is not None:
        metrics.log_metric(METRIC_DRIFT_PREDICTION_PSI, round(report.prediction.psi, 6))
        metrics.log_metric(METRIC_DRIFT_PREDICTION_KS_PVALUE, report.prediction.ks_pvalue_adjusted)
        metrics.log_metric(METRIC_DRIFT_PREDICTION_DRIFTED, int(report.prediction_drifted))
    metrics.log_metric(METRIC_DRIFT_DETECTED, int(report.drift_detected))
    print(report.message)  # the step log is what a person reads first
    return decide_on_drift(report.status, on_drift)


def request_retraining(
    drift_report: Input[Artifact],
    model_name: str,
    model_dir: str,
    retrain_request_dir: str,
    kfp_endpoint: str,
    training_pipeline_id: str,
    training_pipeline_package: str,
    training_arguments: str,
    kfp_namespace: str,
) -> str:
    """Record a retraining request and, with a KFP endpoint, start the training pipeline (as `pipeline.py submit`).

    Args:
        drift_report: From `check_drift`.
        model_name: The drifted model.
        model_dir: Its model directory (written into the request).
        retrain_request_dir: Where to write `retrain_request.json` (empty: no marker).
        kfp_endpoint: KFP API to start the run on (empty: marker only).
        training_pipeline_id: Uploaded training pipeline id (preferred on a cluster).
        training_pipeline_package: Compiled training pipeline YAML inside the image (alternative).
        training_arguments: JSON object of training pipeline parameters.
        kfp_namespace: Profile namespace on multi-user Kubeflow.

    Returns:
        The started run id, or the marker path when no endpoint was given.
    """
    import json
    from dataclasses import replace
    from pathlib import Path

    from components.constants import ON_DRIFT_RETRAIN
    from components.monitoring.retrain import (
        check_retrain_config,
        new_retrain_request,
        trigger_retraining,
        write_retrain_request,
    )

    arguments = check_retrain_config(
        ON_DRIFT_RETRAIN,
        request_dir=retrain_request_dir,
        kfp_endpoint=kfp_endpoint,
        pipeline_id=training_pipeline_id,
        pipeline_package=training_pipeline_package,
        training_arguments=training_arguments,
    )
    report = json.loads((Path(drift_report.path) / "drift_report.json").read_text(encoding="utf-8"))
    request = new_retrain_request(model_name=model_name, model_uri=model_dir, report=report)
    outcome = ""
    if kfp_endpoint:
        outcome = trigger_retraining(
            endpoint=kfp_endpoint,
            arguments=arguments,
            pipeline_id=training_pipeline_id,
            pipeline_package_path=training_pipeline_package,
            namespace=kfp_namespace,
            run_name=f"retrain-{model_name}",
        )
        request = replace(request, run_id=outcome)
    if retrain_request_dir:
        marker = write_retrain_request(Path(retrain_request_dir), request)
        outcome = outcome or str(marker)
    print(f"retraining requested for {model_name}: {request.reason} -> {outcome}")
    return outcome


def fail_on_drift(drift_report: Input[Artifact], model_name: str) -> None:
    """Fail the run on purpose so alerting on failed runs fires (on_drift='fail').

    Args:
        drift_report: From `check_drift`.
        model_name: The drifted model.
    """
    import json
    from pathlib import Path

    from components.monitoring.retrain import DriftDetectedError

    report = json.loads((Path(drift_report.path) / "drift_report.json").read_text(encoding="utf-8"))
    raise DriftDetectedError(f"data drift for model {model_name}: {report['message']}")


@dataclass(frozen=True)
class MonitoringComponents:
    """The monitoring steps as KFP components on one image."""

    check_drift: Callable
    request_retraining: Callable
    fail_on_drift: Callable


def build_monitoring_components(image: str = DEFAULT_IMAGE) -> MonitoringComponents:
    """Wrap the monitoring steps as KFP components that run `image` with the project preinstalled."""
    return MonitoringComponents(
        check_drift=project_component(check_drift, image),
        request_retraining=project_component(request_retraining, image),
        fail_on_drift=project_component(fail_on_drift, image),
    )
