"""Production monitoring: reading payload logs, drift checks and the retrain trigger.

A leaf: it imports the core, the core (train, serve, deploy) never imports it. What they share lives in the core:
`components.payload_log` (the log's schema, `PayloadLogWriter`, KServe's `logger_spec`) and
`components.reference_profile` (the training data's profile, written beside the model at training time).

Modules, each one concept:

- `payload_reader`: `read_payload_window` (one model's rows in a time window); re-exports `open_filesystem` /
  `s3_filesystem` from the core's `components.object_store`.
- `sink`: decodes KServe logger CloudEvents (the `cloudevents` SDK) into the payload log's records.
- `kserve_blob`: the alternative, KServe's built-in blob logger (`kserve_blob_logger_spec`, a window reader).
- `drift`: `detect_drift` (PSI, two-sample KS and a Brown-Forsythe spread test, Holm-corrected) and `DriftReport`.
- `report`: `render_drift_report_html` (inline SVG, no plotting dependency).
- `retrain`: what to do on drift: `decide_on_drift`, `check_retrain_config`, `trigger_retraining` (through
  `components.submit`), `training_arguments_from_card` / `local_training_command` (local retraining).
- `schedule`: `create_monitoring_schedule`, a KFP recurring run with parameters typed as the pipeline declares.
- `kfp_components` / `pipeline_def`: the thin KFP components, `monitoring_pipeline` / `make_monitoring_pipeline(image)`.
- `__main__`: `pipeline.py monitor ...` runs the pipeline under kfp.local and acts on drift, or schedules it.
"""
