"""Names shared by training, serving, deploy, monitoring and the tests: each magic string lives here once."""

from typing import Final

# --- Model directory (what train writes, what every server loads) ---------------------------------
MODEL_FILENAME: Final = "model.joblib"
"""The one pickle in a model directory; KServe's sklearnserver refuses zero or several."""
MODEL_CARD_FILENAME: Final = "model.json"
"""Metadata beside the model: features, classes, versions, hashes, lineage."""
ONNX_FILENAME: Final = "model.onnx"
"""Optional fast path, written only when it reproduces sklearn's predictions on held-out data."""
MODEL_CARD_SCHEMA_VERSION: Final = 2
"""2: typed features, task, estimator import path, serving path (1: all-numeric classification; still loads)."""
REFERENCE_PROFILE_FILENAME: Final = "reference_profile.json"
"""Training-time feature distribution beside the model; the drift check compares live traffic with it."""
REFERENCE_PROFILE_SCHEMA_VERSION: Final = 3
"""3: feature kinds (categorical shares), missing rates, a regression model's predictions. 2: PSI bin edges halfway
between distinct training values. 1: edges on quantiles. Older versions are upgraded when read."""

# --- Data -----------------------------------------------------------------------------------------
DEFAULT_DATASET: Final = "iris"
DEFAULT_LABEL_COLUMN: Final = "target"
BUILTIN_DATASETS: Final = ("iris", "wine", "breast_cancer", "diabetes")
"""Bundled with scikit-learn (no download); `diabetes` is the regression one (a numeric target)."""

# --- Model families -------------------------------------------------------------------------------
# The families themselves (short names, import paths, defaults) live in components/estimators.py (FAMILIES).
DEFAULT_MODEL_FAMILY: Final = "auto"
"""`estimators.AUTO_FAMILY`: logistic_regression for classification, ridge for regression."""

# --- Evaluation metrics (keys in KFP Metrics and in the evaluation JSON) --------------------------
METRIC_ACCURACY: Final = "accuracy"
METRIC_F1_MACRO: Final = "f1_macro"
METRIC_ROC_AUC: Final = "roc_auc_ovr"

# --- Image ----------------------------------------------------------------------------------------
DEFAULT_IMAGE: Final = "localhost/kfp-sklearn-kserve:0.1.0"
"""Used by every component and by the ServingRuntime; `pipeline.py compile --image` overrides it."""

# --- ONNX fast path (components/onnx_export.py writes it, components/serving reads it) ------------
ONNX_TARGET_OPSET: Final = 18
"""Default-domain opset for skl2onnx; onnxruntime 1.32 runs it and every converter we use supports it."""
ONNX_ML_TARGET_OPSET: Final = 3
"""`ai.onnx.ml` opset 3: the TreeEnsemble operators ONNX Runtime runs (see components/onnx_forest.py)."""
ONNX_LABEL_OUTPUT: Final = "label"
ONNX_PROBA_OUTPUT: Final = "probabilities"
ONNX_PROBA_TOLERANCE: Final = 1e-6
"""Max absolute probability difference to sklearn accepted at export (trees emit float32 probabilities)."""

# --- Model server (components/serving): address, limits, request keys, Prometheus metrics, pinned model ---
DEFAULT_MODEL_NAME: Final = "sklearn-iris"
DEFAULT_HOST: Final = "127.0.0.1"
CONTAINER_HOST: Final = "0.0.0.0"  # noqa: S104 - inside a pod the predictor must listen on the pod IP
"""`kfp-sklearn-serve` binds all interfaces by default (it runs in the container); `serve()` defaults to loopback."""
DEFAULT_HTTP_PORT: Final = 8080
DEFAULT_MAX_BODY_BYTES: Final = 1 << 20
"""Largest request body the server reads (413 above it); 1 MiB holds ~10k Iris rows of JSON."""
DEFAULT_MAX_ROWS: Final = 1000
"""Most instances per request (400 above it): bounds latency and memory per call."""
PROBA_PARAMETER: Final = "return_probabilities"
"""V1 body key / V2 `parameters` key that asks for class probabilities instead of labels."""
METRIC_PREDICTIONS: Final = "kfp_sklearn_predictions_total"
METRIC_REJECTED: Final = "kfp_sklearn_rejected_requests_total"
METRIC_MODEL_INFO: Final = "kfp_sklearn_model_info"
MODEL_DIGEST_ENV: Final = "MODEL_DIGEST"
"""Predictor container env: the model directory digest the server must find (set by deploy, read by the server)."""
MODEL_VERSION_ENV: Final = "MODEL_VERSION"
"""Predictor container env: the version id the server reports (first 12 hex digits of the digest)."""

# --- Deploy targets (components/deploy/__init__.py) --------------------------------------------------------
DEPLOY_TARGET_LOCAL: Final = "local"
DEPLOY_TARGET_KUBERNETES: Final = "kubernetes"
DEPLOY_TARGETS: Final = (DEPLOY_TARGET_LOCAL, DEPLOY_TARGET_KUBERNETES)
DEFAULT_DEPLOY_TIMEOUT_SECONDS: Final = 600.0

# --- Local target: the model store `pipeline.py run` writes and `serve` reads ---------------------
DEFAULT_LOCAL_ROOT: Final = "local_outputs"
"""Where `pipeline.py run` keeps KFP's local pipeline root and the model store (relative to the working dir)."""
LOCAL_STORE_DIRNAME: Final = "model_store"
LOCAL_STORE_PVC: Final = "model-store"
"""PVC name in the manifest the local target writes: the same store layout, served from a volume."""

# --- KServe: API, ServingRuntime, InferenceService (manifests/, deploy/inference_service.py, deploy/cluster.py) ---
KSERVE_GROUP: Final = "serving.kserve.io"
KSERVE_VERSION: Final = "v1beta1"
KSERVE_API_VERSION: Final = f"{KSERVE_GROUP}/{KSERVE_VERSION}"
INFERENCE_SERVICE_KIND: Final = "InferenceService"
INFERENCE_SERVICE_PLURAL: Final = "inferenceservices"
SERVING_RUNTIME_NAME: Final = "kfp-sklearn-kserve"
SKLEARN_MODEL_FORMAT: Final = "sklearn"
SKLEARN_MODEL_FORMAT_VERSION: Final = "1"
DEFAULT_NAMESPACE: Final = "kserve-models"
DEPLOYMENT_MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
DEPLOYMENT_MODE_STANDARD: Final = "Standard"
"""Plain Deployment + Service (was RawDeployment): needs only cert-manager, fits kind/minikube."""
DEPLOYMENT_MODE_KNATIVE: Final = "Knative"
"""Serverless (was Serverless): needs Knative + Istio; the only mode that honours canaryTrafficPercent."""
DEPLOYMENT_MODES: Final = (DEPLOYMENT_MODE_STANDARD, DEPLOYMENT_MODE_KNATIVE)
PROTOCOL_VERSIONS: Final = ("v1", "v2")
STORAGE_URI_SCHEMES: Final = ("s3", "gs", "pvc", "http", "https", "hf", "oci")
"""URI schemes KServe's storage initializer can fetch (`minio://` is rewritten to `s3://` first)."""
MODEL_MOUNT_PATH: Final = "/mnt/models"
"""Where KServe's storage initializer puts the model directory inside the predictor pod."""
PREDICTOR_COMMAND: Final = "kfp-sklearn-serve"
PREDICTOR_UID: Final = 1000
PREDICTOR_CONTAINER_NAME: Final = "kserve-container"
"""KServe merges `predictor.model` into the runtime container of this name (the canary schema requires it)."""
MODEL_READER_SERVICE_ACCOUNT: Final = "kfp-model-reader"
"""Predictor service account whose Secret lets the storage initializer read KFP's object store."""
LINEAGE_ANNOTATION_PREFIX: Final = "kfp-sklearn-kserve/"
"""Prefix of the lineage annotations on every InferenceService the pipeline deploys."""
MODEL_SHA256_ANNOTATION: Final = "kfp-sklearn-kserve/model-sha256"
"""InferenceService annotation the KServe logger copies into each event (logger.metadataAnnotations)."""
CANARY_ANNOTATION: Final = f"{LINEAGE_ANNOTATION_PREFIX}canary-traffic-percent"
"""Asks deploy for a Standard-mode canary (`spec.canary`) beside the live predictor."""
CANARY_PREDICTOR_NAME: Final = "canary"

# --- KServe autoscaling (kubernetes target) -------------------------------------------------------
DEFAULT_MIN_REPLICAS: Final = 1
"""Standard mode has no scale-from-zero; KServe's HPA raises anything below 1 to 1 (hpa_reconciler.go)."""
DEFAULT_MAX_REPLICAS: Final = 3
"""Room to grow on one kind/minikube node; KServe's HPA scales between the two bounds."""
SCALE_METRICS_STANDARD: Final = ("cpu", "memory")
"""What KServe's HPA understands (constants.AutoscalerAllowedHPAMetricsList)."""
SCALE_METRICS_KNATIVE: Final = ("concurrency", "rps")
"""What Knative's autoscaler understands (constants.AutoscalerAllowedKPAMetricsList)."""
DEFAULT_SCALE_METRIC: Final = "cpu"
DEFAULT_SCALE_TARGET: Final = 80
"""Percent of the CPU request, KServe's own default (constants.DefaultCPUUtilization)."""

# --- Kubeflow Pipelines on the cluster (manifests/, submit.py) ------------------------------------
KFP_NAMESPACE: Final = "kubeflow"
KFP_RUN_SERVICE_ACCOUNT: Final = "pipeline-runner"
"""The run service account of standalone KFP; the deploy step's RBAC is granted to it."""
KFP_PIPELINE_ROOT: Final = "minio://mlpipeline/v2/artifacts"
KFP_ARTIFACT_SECRET_NAME: Final = "mlpipeline-minio-artifact"  # noqa: S105  # a Secret's name, not a credential
"""KFP's object-store Secret (keys accesskey/secretkey) in the run's namespace; the drift check reads logs with it."""
KFP_ARTIFACT_SECRET_KEYS: Final = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}
DEPLOYER_ROLE_NAME: Final = "kfp-isvc-deployer"
"""Role in the models namespace that lets the run service account manage InferenceServices."""
DEPLOYER_ROLE_BINDING_NAME: Final = "kfp-isvc-deployer"

# --- Payload logs (components/payload_log.py writes them; the sink and KServe's logger feed them) ---
PAYLOAD_LOG_SUFFIX: Final = ".parquet"
PAYLOAD_LOG_DATE_PREFIX: Final = "date="
"""Hive-style day partition under `<log_dir>/<model_name>/`, so a window reads only the days it spans."""
PAYLOAD_COLUMN_REQUEST_ID: Final = "request_id"
PAYLOAD_COLUMN_TIMESTAMP: Final = "timestamp"
PAYLOAD_COLUMN_MODEL_NAME: Final = "model_name"
PAYLOAD_COLUMN_MODEL_SHA256: Final = "model_sha256"
PAYLOAD_COLUMN_PREDICTION: Final = "prediction"
PAYLOAD_COLUMN_SOURCE: Final = "source"
PAYLOAD_SOURCE_LOCAL: Final = "local-server"
PAYLOAD_SOURCE_KSERVE_LOGGER: Final = "kserve-logger"
PAYLOAD_SOURCE_KSERVE_BLOB: Final = "kserve-blob-logger"
KSERVE_LOGGER_MODES: Final = ("all", "request", "response")
CE_TYPE_INFERENCE_REQUEST: Final = "org.kubeflow.serving.inference.request"
CE_TYPE_INFERENCE_RESPONSE: Final = "org.kubeflow.serving.inference.response"
"""CloudEvent types KServe's logger agent sends (kserve pkg/logger/worker.go)."""
DEFAULT_SINK_PORT: Final = 8080
LOG_FORMAT_PAYLOAD: Final = "payload-parquet"
"""Logs from `serve --payload_log_dir` or the sink (components.payload_log)."""
LOG_FORMAT_KSERVE_JSON: Final = "kserve-json"
"""Logs from KServe's built-in blob logger, format json (components.monitoring.kserve_blob)."""
LOG_FORMATS: Final = (LOG_FORMAT_PAYLOAD, LOG_FORMAT_KSERVE_JSON)

# --- Drift check and retraining (components/monitoring/) ------------------------------------------
DEFAULT_PSI_THRESHOLD: Final = 0.15
DEFAULT_KS_ALPHA: Final = 0.05
"""Family-wise over every feature's KS and spread tests (Holm). Measured false-alarm and detection rates:
components/monitoring/README.md (benchmarks/drift_calibration.py)."""
DEFAULT_MIN_RECORDS: Final = 200
DEFAULT_STD_RATIO_THRESHOLD: Final = 1.2
"""A significant spread test counts only when the standard deviation grew or shrank by at least this factor."""
DRIFT_STATUS_OK: Final = "ok"
DRIFT_STATUS_DRIFT: Final = "drift"
DRIFT_STATUS_NOT_ENOUGH_DATA: Final = "not_enough_data"
ON_DRIFT_RETRAIN: Final = "retrain"
ON_DRIFT_FAIL: Final = "fail"
ON_DRIFT_REPORT: Final = "report"
ON_DRIFT_ACTIONS: Final = (ON_DRIFT_RETRAIN, ON_DRIFT_FAIL, ON_DRIFT_REPORT)
RETRAIN_REQUEST_FILENAME: Final = "retrain_request.json"
METRIC_DRIFT_RECORDS: Final = "drift_records"
METRIC_DRIFT_FEATURES_DRIFTED: Final = "drift_features_drifted"
METRIC_DRIFT_MAX_PSI: Final = "drift_max_psi"
METRIC_DRIFT_MIN_KS_PVALUE: Final = "drift_min_ks_pvalue"
METRIC_DRIFT_MIN_SPREAD_PVALUE: Final = "drift_min_spread_pvalue"
METRIC_DRIFT_STD_RATIO_PREFIX: Final = "drift_std_ratio: "
"""Followed by the feature name: one metric per feature, the report's std-ratio column in the KFP UI."""
METRIC_DRIFT_DETECTED: Final = "drift_detected"
MONITORING_PIPELINE_NAME: Final = "sklearn-monitoring"
MONITORING_PIPELINE_FILENAME: Final = "monitoring_pipeline.yaml"

# --- Tasks, regression metrics and the deploy gate (components/evaluate.py; search and champion compare on them) ---
TASK_CLASSIFICATION: Final = "classification"
TASK_REGRESSION: Final = "regression"
METRIC_BALANCED_ACCURACY: Final = "balanced_accuracy"
METRIC_R2: Final = "r2"
METRIC_RMSE: Final = "rmse"
METRIC_MAE: Final = "mae"
GATE_METRIC_ROC_AUC: Final = "roc_auc"
"""`gate_metric` name of the binary ROC AUC; KFP `Metrics` logs it under METRIC_ROC_AUC."""

# --- Model search and champion/challenger (components/search.py, components/champion.py) ----------
MAX_SEARCH_CANDIDATES: Final = 64
"""Most candidates a search space may expand to: each one trains `cv_folds` times (a pod each on a cluster)."""
DEFAULT_CV_FOLDS: Final = 5
DEFAULT_MIN_IMPROVEMENT: Final = 0.0
"""How much better than the live model (in the compared metric's direction) a challenger must be to deploy."""
METRIC_CHALLENGER_SCORE: Final = "challenger_score"
METRIC_CHAMPION_SCORE: Final = "champion_score"
METRIC_CHAMPION_DEPLOY: Final = "champion_decision_deploy"
"""1.0 when the challenger is to be deployed, 0.0 when the live model stays (KFP Metrics hold numbers only)."""

# --- Model versions: promote and rollback (components/deploy/versions.py, `pipeline.py models`) -------
ACTION_DEPLOY: Final = "deploy"
"""A version went live because a pipeline run deployed it."""
ACTION_PROMOTE: Final = "promote"
"""A version went live because `pipeline.py models promote VERSION` chose it."""
ACTION_ROLLBACK: Final = "rollback"
"""A version went live because `pipeline.py models rollback` moved back to it."""
ACTION_FAILED: Final = "failed"
"""A deploy of this version to the cluster failed and was undone (the version never served)."""
VERSION_STATE_LIVE: Final = "live"
VERSION_STATE_PREVIOUS: Final = "previous"
"""Was live, then replaced by a deploy or a promotion: a rollback can return to it."""
VERSION_STATE_ROLLED_BACK: Final = "rolled-back"
"""Was live, then left by a rollback: a later rollback skips it (promote or deploy it to make it live again)."""
VERSION_STATE_FAILED: Final = "failed"
"""Every deploy of it failed and was undone: it never served (kubernetes target)."""
VERSIONS_CONFIGMAP_SUFFIX: Final = "-versions"
"""On a cluster, ConfigMap `<model>-versions` in the model's namespace holds its version history."""
VERSIONS_CONFIGMAP_KEY: Final = "history.jsonl"
"""The ConfigMap key (and the local store's file name): one JSON record per line, oldest first."""
VERSIONS_CONFIGMAP_MAX_BYTES: Final = 512 * 1024
"""The record keeps its newest lines within this size (a ConfigMap holds at most 1 MiB)."""

# --- Estimators and preprocessing (components/estimators.py, components/preprocessing.py, model cards) --------
SERVING_PATH_ONNX: Final = "onnx"
SERVING_PATH_JOBLIB: Final = "joblib"
"""`ModelCard.serving_path`: which file answers predictions (the verified ONNX graph, or the pickled pipeline)."""
MISSING_CATEGORY: Final = "__missing__"
"""What a missing categorical value becomes before encoding: a category of its own when the feature is nullable."""
FINAL_STEP_NAME: Final = "model"
"""Name of the estimator step in every pipeline train builds (models from before typed features call it
`classify`)."""

# --- Drift of typed features and of a regression model's predictions (components/monitoring/drift.py) ---
DEFAULT_MISSING_RATE_THRESHOLD: Final = 0.05
"""A significant change of a feature's missing rate counts only when it moved by at least 5 percentage points."""
DEFAULT_UNSEEN_THRESHOLD: Final = 0.05
"""A categorical feature drifts when at least 5% of its logged values are categories training never saw."""
METRIC_DRIFT_MIN_CHI2_PVALUE: Final = "drift_min_chi2_pvalue"
METRIC_DRIFT_MAX_UNSEEN_SHARE: Final = "drift_max_unseen_share"
METRIC_DRIFT_MAX_MISSING_RATE_CHANGE: Final = "drift_max_missing_rate_change"
METRIC_DRIFT_PSI_PREFIX: Final = "drift_psi: "
METRIC_DRIFT_UNSEEN_SHARE_PREFIX: Final = "drift_unseen_share: "
METRIC_DRIFT_MISSING_RATE_PREFIX: Final = "drift_missing_rate: "
"""Each followed by the feature name: the report's PSI, unseen-share and window missing-rate columns in the KFP UI."""
METRIC_DRIFT_PREDICTION_PSI: Final = "drift_prediction_psi"
METRIC_DRIFT_PREDICTION_KS_PVALUE: Final = "drift_prediction_ks_pvalue"
METRIC_DRIFT_PREDICTION_DRIFTED: Final = "drift_prediction_drifted"
"""A regression model's predictions against those on its training rows (only logged for regression models)."""

# --- ONNX fast path for typed features and regression (components/onnx_export.py; the server feeds it) ---
ONNX_NUMERIC_INPUT: Final = "numeric"
"""Mixed-type graphs: the float64 `[N, numeric features]` input, columns in schema order."""
ONNX_CATEGORICAL_INPUT: Final = "categorical"
"""Mixed-type graphs: the string `[N, categorical features]` input; a missing value is fed as MISSING_CATEGORY."""
ONNX_VALUE_OUTPUT: Final = "variable"
"""A regression graph's prediction output (skl2onnx's name), shape `[N, 1]`."""
ONNX_REGRESSION_RTOL: Final = 1e-5
"""A regression graph is kept when |onnx - sklearn| <= this x the largest |sklearn prediction| on the check rows."""

# --- Training pipeline wiring (pipeline.py, components/kfp_components.py) ----------------------------------
KFP_OBJECT_STORE_ENDPOINT: Final = "http://seaweedfs.kubeflow:9000"
"""KFP's object store (SeaweedFS since KFP 2.15): where the champion step reads the live model on a cluster."""
