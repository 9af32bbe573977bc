"""The monitoring pipeline: check a window of logged traffic for drift and act on it.

`pipeline.py` compiles `make_monitoring_pipeline(image)` (or `monitoring_pipeline`, the default image) to
`constants.MONITORING_PIPELINE_FILENAME`; it runs under `kfp.local` on a directory of logs and, on a cluster,
as a KFP recurring run.
"""

from collections.abc import Callable
from typing import Any

from kfp import dsl, kubernetes

from components.constants import (
    DEFAULT_IMAGE,
    DEFAULT_KS_ALPHA,
    DEFAULT_MIN_RECORDS,
    DEFAULT_MISSING_RATE_THRESHOLD,
    DEFAULT_MODEL_NAME,
    DEFAULT_PSI_THRESHOLD,
    DEFAULT_STD_RATIO_THRESHOLD,
    DEFAULT_UNSEEN_THRESHOLD,
    KFP_ARTIFACT_SECRET_KEYS,
    KFP_ARTIFACT_SECRET_NAME,
    LOG_FORMAT_PAYLOAD,
    MONITORING_PIPELINE_NAME,
    ON_DRIFT_FAIL,
    ON_DRIFT_RETRAIN,
)
from components.monitoring.kfp_components import MonitoringComponents, build_monitoring_components


def make_monitoring_pipeline(image: str = DEFAULT_IMAGE) -> Callable[..., Any]:
    """Build the monitoring pipeline with every component on `image` (as `pipeline.make_training_pipeline`)."""
    steps: MonitoringComponents = build_monitoring_components(image)

    @dsl.pipeline(name=MONITORING_PIPELINE_NAME, description="Payload-log drift check with a retraining trigger.")
    def monitoring_pipeline(
        log_dir: str,
        model_dir: str,
        model_name: str = DEFAULT_MODEL_NAME,
        window_hours: float = 24.0,
        window_end: str = "",
        psi_threshold: float = DEFAULT_PSI_THRESHOLD,
        ks_alpha: float = DEFAULT_KS_ALPHA,
        min_records: int = DEFAULT_MIN_RECORDS,
        on_drift: str = ON_DRIFT_RETRAIN,
        retrain_request_dir: str = "",
        kfp_endpoint: str = "",
        training_pipeline_id: str = "",
        training_pipeline_package: str = "",
        training_arguments: str = "{}",
        kfp_namespace: str = "",
        s3_endpoint: str = "",
        log_format: str = LOG_FORMAT_PAYLOAD,
        std_ratio_threshold: float = DEFAULT_STD_RATIO_THRESHOLD,
        missing_rate_threshold: float = DEFAULT_MISSING_RATE_THRESHOLD,
        unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD,
    ) -> None:
        """Check logged traffic for data drift and act on it.

        Steps: (1) check-drift checks the whole configuration (retrain settings included), reads the last
        `window_hours` of payload logs, compares every feature with the model's reference profile (numeric: PSI,
        KS and a Brown-Forsythe spread test; categorical: chi-square, PSI over categories and the unseen share;
        every feature's missing rate; a regression model's predictions like a numeric feature; Holm-corrected)
        and writes an HTML report, Metrics and the report JSON;
        (2) only on drift, per `on_drift`: request-retraining (a training run through components.submit and/or a
        request record) or fail-on-drift (the run fails). `report` only reports. Too little data is never drift.

        Args:
            log_dir: Payload log root (`serve --payload_log_dir`, or the sink's `s3://` prefix).
            model_dir: The served model's directory (holds `reference_profile.json`).
            model_name: Model whose logs to read.
            window_hours: Window length, ending at `window_end`.
            window_end: ISO time, empty for the run's start.
            psi_threshold: Smallest PSI that counts as drift.
            ks_alpha: Family-wise false-alarm level over every test of every feature and the predictions (Holm).
            min_records: Fewer rows than this give `not_enough_data`.
            on_drift: `retrain`, `fail` or `report`.
            retrain_request_dir: Where a retraining request record (`retrain_request.json`) is written.
            kfp_endpoint: KFP API for starting the training run (cluster).
            training_pipeline_id: Uploaded training pipeline to run.
            training_pipeline_package: Or a compiled training pipeline YAML path inside the image.
            training_arguments: JSON object of training parameters.
            kfp_namespace: Profile namespace (multi-user Kubeflow).
            s3_endpoint: S3-compatible endpoint for `s3://` locations.
            log_format: `payload-parquet` (serve / sink) or `kserve-json` (KServe's built-in blob logger; then
                `log_dir` is the logger's `url`).
            std_ratio_threshold: Factor the standard deviation must grow or shrink by for a significant spread
                test to count.
            missing_rate_threshold: Change of a feature's missing rate (a share, either way) a significant
                missing-rate test must reach to count.
            unseen_threshold: Share of a categorical feature's logged values in categories training never saw
                that counts as drift.
        """
        check = steps.check_drift(
            log_dir=log_dir,
            model_dir=model_dir,
            model_name=model_name,
            window_hours=window_hours,
            window_end=window_end,
            psi_threshold=psi_threshold,
            ks_alpha=ks_alpha,
            min_records=min_records,
            on_drift=on_drift,
            s3_endpoint=s3_endpoint,
            log_format=log_format,
            std_ratio_threshold=std_ratio_threshold,
            missing_rate_threshold=missing_rate_threshold,
            unseen_threshold=unseen_threshold,
            retrain_request_dir=retrain_request_dir,
            kfp_endpoint=kfp_endpoint,
            training_pipeline_id=training_pipeline_id,
            training_pipeline_package=training_pipeline_package,
            training_arguments=training_arguments,
        )
        # The logs change between runs while the parameters do not: a cached result would hide new drift.
        check.set_caching_options(False).set_display_name("check-drift")
        # On a cluster the logs sit in KFP's object store: read them with KFP's own credentials (pyarrow takes the
        # AWS_* variables). Optional, so logs on a volume need no Secret; kfp.local ignores it.
        kubernetes.use_secret_as_env(
            check, secret_name=KFP_ARTIFACT_SECRET_NAME, secret_key_to_env=dict(KFP_ARTIFACT_SECRET_KEYS), optional=True
        )
        with dsl.If(check.outputs["Output"] == ON_DRIFT_RETRAIN, name="drift-retrain"):
            retrain = steps.request_retraining(
                drift_report=check.outputs["drift_report"],
                model_name=model_name,
                model_dir=model_dir,
                retrain_request_dir=retrain_request_dir,
                kfp_endpoint=kfp_endpoint,
                training_pipeline_id=training_pipeline_id,
                training_pipeline_package=training_pipeline_package,
                training_arguments=training_arguments,
                kfp_namespace=kfp_namespace,
            )
            retrain.set_caching_options(False).set_display_name("request-retraining")
        with dsl.If(check.outputs["Output"] == ON_DRIFT_FAIL, name="drift-fail"):
            fail = steps.fail_on_drift(drift_report=check.outputs["drift_report"], model_name=model_name)
            fail.set_caching_options(False).set_display_name("fail-on-drift")

    return monitoring_pipeline


monitoring_pipeline = make_monitoring_pipeline()
"""The monitoring pipeline on `DEFAULT_IMAGE` (what kfp.local runs and the tests use)."""
