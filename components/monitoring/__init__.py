"""Production monitoring: payload logs, the training-time reference profile, drift checks and the retrain trigger.

Modules, each one concept:

- `payload_log`: the Parquet record schema, `PayloadLogWriter` (background batching) and `read_payload_window`.
- `sink`: decodes KServe logger CloudEvents into the same records; `logger_spec` for the InferenceService.
- `kserve_blob`: the alternative, KServe's built-in blob logger (`kserve_blob_logger_spec`, a window reader).
- `reference`: `build_reference_profile` (written beside the model at training time).
- `drift`: `detect_drift` (PSI, two-sample KS and a Brown-Forsythe spread test, Holm-corrected) and `DriftReport`.
- `report`: `render_drift_report_html` (inline SVG, no plotting dependency).
- `retrain`: what to do on drift: `decide_on_drift`, `check_retrain_config`, `trigger_retraining` (through
  `components.submit`), `training_arguments_from_card` / `local_training_command` (local retraining).
- `schedule`: `create_monitoring_schedule`, a KFP recurring run with parameters typed as the pipeline declares.
- `ops` / `pipeline_def`: the thin KFP components and `monitoring_pipeline` / `make_monitoring_pipeline(image)`.
- `__main__`: `pipeline.py monitor ...` runs the pipeline under kfp.local and acts on drift, or schedules it.
"""
