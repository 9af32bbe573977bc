"""The training pipeline (data -> search -> train -> evaluate -> champion vs challenger -> deploy) and its compilation.

`training_pipeline` is a module-level pipeline object, so KFP's own `kfp dsl compile --py pipeline.py --output
pipeline.yaml` writes the same file as `python pipeline.py compile`. The commands (compile, run, serve, submit,
monitor) live in components/cli.py; `python pipeline.py` with no arguments compiles, like every KFP example.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real annotation objects.

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import Artifact, ClassificationMetrics, Markdown, Metrics, Model
from kfp.dsl.graph_component import GraphComponent

from components.constants import (
    DEFAULT_CV_FOLDS,
    DEFAULT_DATASET,
    DEFAULT_DEPLOY_TIMEOUT_SECONDS,
    DEFAULT_IMAGE,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_IMPROVEMENT,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_MODEL_FAMILY,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEFAULT_SCALE_METRIC,
    DEFAULT_SCALE_TARGET,
    DEPLOY_TARGET_LOCAL,
    KFP_ARTIFACT_SECRET_KEYS,
    KFP_ARTIFACT_SECRET_NAME,
    KFP_OBJECT_STORE_ENDPOINT,
    LOCAL_STORE_DIRNAME,
    MONITORING_PIPELINE_FILENAME,
)
from components.kfp_components import Components, build_components

PIPELINE_NAME = "sklearn-kserve-training"
REPO = Path(__file__).resolve().parent
PIPELINE_FILE = REPO / "pipeline.yaml"
MONITORING_PIPELINE_FILE = PIPELINE_FILE.with_name(MONITORING_PIPELINE_FILENAME)
PIPELINE_MANIFESTS_DIR = REPO / "manifests" / "pipelines"
"""`Pipeline` + `PipelineVersion` objects for `kubectl apply -k` (KFP in Kubernetes-native API mode)."""
BUILD_DIR = REPO / "build"
"""Where `compile --image OTHER` writes (git-ignored): the committed YAMLs always name the default image."""
DEFAULT_MIN_ACCURACY = 0.9
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SEED = 42


class TrainingOutputs(NamedTuple):
    """What a run hands back: the schema, the search, the model, its evaluation and the deploy decision."""

    feature_schema: Artifact
    search_report: Markdown
    model: Model
    metrics: Metrics
    classification: ClassificationMetrics
    report: Markdown
    decision: Artifact
    champion_report: Markdown
    deploy: bool


def make_training_pipeline(image: str = DEFAULT_IMAGE) -> GraphComponent:
    """Build the training pipeline with every component on `image` (the one place the image is chosen)."""
    steps: Components = build_components(image)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Search, train and evaluate a scikit-learn model; serve it on KServe if it beats the live one.",
    )
    def training_pipeline(
        dataset: str = DEFAULT_DATASET,
        label_column: str = DEFAULT_LABEL_COLUMN,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        seed: int = DEFAULT_SEED,
        task: str = "",
        feature_types: dict = {},  # noqa: B006  # KFP reads the literal default into the pipeline spec
        model_family: str = DEFAULT_MODEL_FAMILY,
        hyperparameters: dict = {},  # noqa: B006
        search_space: list = [],  # noqa: B006
        cv_folds: int = DEFAULT_CV_FOLDS,
        min_accuracy: float = DEFAULT_MIN_ACCURACY,
        gate_metric: str = "",
        gate_threshold: float = 0.0,
        min_improvement: float = DEFAULT_MIN_IMPROVEMENT,
        mlflow_tracking_uri: str = "",
        model_name: str = DEFAULT_MODEL_NAME,
        namespace: str = DEFAULT_NAMESPACE,
        deploy_target: str = DEPLOY_TARGET_LOCAL,
        local_store: str = f"{DEFAULT_LOCAL_ROOT}/{LOCAL_STORE_DIRNAME}",
        predictor_service_account: str = "",
        s3_endpoint: str = KFP_OBJECT_STORE_ENDPOINT,
        deploy_timeout_seconds: int = int(DEFAULT_DEPLOY_TIMEOUT_SECONDS),
        payload_logger_url: str = "",
        min_replicas: int = DEFAULT_MIN_REPLICAS,
        max_replicas: int = DEFAULT_MAX_REPLICAS,
        scale_metric: str = DEFAULT_SCALE_METRIC,
        scale_target: int = DEFAULT_SCALE_TARGET,
        predictor_cpu_request: str = "",
        predictor_memory_request: str = "",
        predictor_cpu_limit: str = "",
        predictor_memory_limit: str = "",
    ) -> TrainingOutputs:
        """Steps: load_data -> search -> train -> evaluate (gate) -> champion vs challenger -> deploy if it wins.

        The search expands `search_space` into candidates, cross-validates each on the training split in parallel
        (`dsl.ParallelFor`) and selects the best (`dsl.Collected`); only the winner is trained and touches the test
        split. It deploys only if it passes the absolute gate and beats the live model by `min_improvement`.

        Args:
            dataset: `iris`, `wine`, `breast_cancer`, `diabetes` (regression), or a path/URL to a .csv/.parquet file.
            label_column: The label column (the name given to a built-in dataset's target).
            test_fraction: Share of rows held out for evaluation (stratified for classification).
            seed: Seed of the split, the cross-validation folds and the estimator.
            task: `classification`, `regression`, or empty to infer it from the label (the run's output says how).
            feature_types: Overrides of the inferred feature kinds, e.g. {"zip": "categorical", "id": "drop"}
                (`numeric`, `categorical` or `drop`).
            model_family: `auto` (logistic_regression / ridge by task), a short name (e.g. random_forest,
                hist_gradient_boosting, svm) or a scikit-learn estimator path (`sklearn.ensemble.ExtraTreesClassifier`).
            hyperparameters: Overrides of the family's defaults, e.g. {"C": 0.5}.
            search_space: Candidates to cross-validate on the training split; the best is trained. A list of
                {"model_family": ..., "hyperparameters": {...}} and grids
                {"model_family": ..., "grid": {"C": [0.1, 1]}}; empty: train `model_family` with `hyperparameters`,
                no cross-validation.
            cv_folds: Cross-validation folds per search candidate.
            min_accuracy: The classification gate when `gate_metric` is empty: test accuracy needed to deploy.
            gate_metric: The gated metric: accuracy, f1_macro, balanced_accuracy, roc_auc (binary) for
                classification; r2, rmse, mae for regression. Empty: accuracy >= min_accuracy (classification),
                r2 >= gate_threshold (regression). Search and champion compare on it too (empty: accuracy or r2).
            gate_threshold: The threshold gate_metric must reach in its direction (rmse, mae: at most).
            min_improvement: How much the challenger must beat the live model (champion) by to deploy, on the same
                held-out rows and metric.
            mlflow_tracking_uri: MLflow tracking URI (e.g. http://mlflow:5000, sqlite:///mlflow.db): log the run,
                register a model version, set the `champion` alias on deploy. Empty: no MLflow.
            model_name: InferenceService / V1 model name.
            namespace: Namespace of the InferenceService (kubernetes target).
            deploy_target: `local` (model store read by `pipeline.py serve`) or `kubernetes` (KServe).
            local_store: Model store root for the local target.
            predictor_service_account: Predictor service account with the object-store credentials (kubernetes
                target; empty means `kfp-model-reader` from manifests/base).
            s3_endpoint: KFP's object store, where the champion step reads the live model (kubernetes target) with
                KFP's own credentials (Secret `mlpipeline-minio-artifact`).
            deploy_timeout_seconds: How long deploy waits for the InferenceService to be ready.
            payload_logger_url: KServe logger sink for payloads, e.g. the one `manifests/monitoring` deploys
                (`http://payload-logger.kserve-models.svc.cluster.local`); empty: no payload logging.
            min_replicas: Fewest predictor pods (kubernetes; Standard mode: at least 1).
            max_replicas: Most predictor pods; KServe's HPA scales between the bounds (kubernetes).
            scale_metric: What the HPA scales on: `cpu` or `memory` (kubernetes).
            scale_target: Target utilisation of the request, percent (kubernetes).
            predictor_cpu_request: Model server CPU request, e.g. `500m`; empty keeps the ServingRuntime's.
            predictor_memory_request: Memory request, e.g. `256Mi`; empty keeps the ServingRuntime's.
            predictor_cpu_limit: CPU limit; empty keeps the ServingRuntime's.
            predictor_memory_limit: Memory limit; empty keeps the ServingRuntime's.
        """
        data = steps.load_data(
            dataset=dataset,
            label_column=label_column,
            test_fraction=test_fraction,
            seed=seed,
            task=task,
            feature_types=feature_types,
        )
        data.set_display_name("load and split data")
        schema = data.outputs["feature_schema"]
        expanded = steps.expand_search(
            search_space=search_space, model_family=model_family, hyperparameters=hyperparameters
        )
        expanded.set_display_name("expand search space")
        with dsl.ParallelFor(expanded.output, name="candidates") as candidate:
            scored = steps.score_candidate(
                train_data=data.outputs["train_data"],
                feature_schema=schema,
                candidate=candidate,
                cv_folds=cv_folds,
                seed=seed,
                gate_metric=gate_metric,
            )
            scored.set_display_name("cross-validate candidate")
        selected = steps.select_candidate(scores=dsl.Collected(scored.outputs["Output"]))
        selected.set_display_name("select best candidate")
        trained = steps.train(
            train_data=data.outputs["train_data"],
            test_data=data.outputs["test_data"],
            feature_schema=schema,
            model_family=selected.outputs["model_family"],
            hyperparameters=selected.outputs["hyperparameters"],
            seed=seed,
        )
        trained.set_display_name("train")
        evaluated = steps.evaluate(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],
            feature_schema=schema,
            min_accuracy=min_accuracy,
            gate_metric=gate_metric,
            gate_threshold=gate_threshold,
        )
        evaluated.set_display_name("evaluate and gate")
        # Runs whatever the gate said (it reads the gate's result): every run is logged to MLflow and the run's
        # `deploy` output is the final decision, which a step inside a condition could not give.
        decided = steps.champion_vs_challenger(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],
            feature_schema=schema,
            evaluation=evaluated.outputs["metrics"],
            gate=evaluated.outputs["gate"],
            candidates=selected.outputs["candidates"],
            model_name=model_name,
            deploy_target=deploy_target,
            local_store=local_store,
            namespace=namespace,
            gate_metric=gate_metric,
            min_improvement=min_improvement,
            mlflow_tracking_uri=mlflow_tracking_uri,
            run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            s3_endpoint=s3_endpoint,
        )
        decided.set_display_name("champion vs challenger")
        # On a cluster the live model sits in KFP's object store: read it with KFP's own credentials (pyarrow takes
        # the AWS_* variables). Optional, so the local target needs no Secret; kfp.local ignores it.
        kubernetes.use_secret_as_env(
            decided,
            secret_name=KFP_ARTIFACT_SECRET_NAME,
            secret_key_to_env=dict(KFP_ARTIFACT_SECRET_KEYS),
            optional=True,
        )
        # The live model changes while this step's inputs do not: a cached decision would compare with a stale one.
        decided.set_caching_options(False)
        with dsl.If(decided.outputs["Output"] == True, name="deploy-decision"):  # noqa: E712  # KFP builds a condition
            deployed = steps.deploy(
                model=trained.outputs["model"],
                metrics=evaluated.outputs["metrics"],
                decision=decided.outputs["decision"],
                model_name=model_name,
                namespace=namespace,
                deploy_target=deploy_target,
                local_store=local_store,
                service_account=predictor_service_account,
                timeout_seconds=deploy_timeout_seconds,
                # The run's UUID (what the API and the UI's URL use) and its display name, both for lineage.
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                payload_logger_url=payload_logger_url,
                min_replicas=min_replicas,
                max_replicas=max_replicas,
                scale_metric=scale_metric,
                scale_target=scale_target,
                predictor_cpu_request=predictor_cpu_request,
                predictor_memory_request=predictor_memory_request,
                predictor_cpu_limit=predictor_cpu_limit,
                predictor_memory_limit=predictor_memory_limit,
                mlflow_tracking_uri=mlflow_tracking_uri,
            )
            deployed.set_display_name("deploy")
            # The cluster changes while the inputs do not: a cached deploy would skip a needed rollout.
            deployed.set_caching_options(False)
            deployed.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
        return TrainingOutputs(
            feature_schema=schema,
            search_report=selected.outputs["report"],
            model=trained.outputs["model"],
            metrics=evaluated.outputs["metrics"],
            classification=evaluated.outputs["classification"],
            report=evaluated.outputs["report"],
            decision=decided.outputs["decision"],
            champion_report=decided.outputs["report"],
            deploy=decided.outputs["Output"],
        )

    return training_pipeline


training_pipeline = make_training_pipeline()
"""The training pipeline on `DEFAULT_IMAGE`: what `kfp dsl compile --py pipeline.py` finds (the only one here)."""


def compile_pipeline(output: Path = PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the pipeline YAML that `kfp run create` and the KFP UI accept."""
    pipeline_func = training_pipeline if image == DEFAULT_IMAGE else make_training_pipeline(image)
    compiler.Compiler().compile(pipeline_func, package_path=str(output))
    return output


def compile_monitoring_pipeline(output: Path = MONITORING_PIPELINE_FILE, *, image: str = DEFAULT_IMAGE) -> Path:
    """Write the monitoring (drift check + retraining trigger) pipeline's YAML, for a KFP recurring run."""
    from components.monitoring.pipeline_def import make_monitoring_pipeline

    compiler.Compiler().compile(make_monitoring_pipeline(image), package_path=str(output))
    return output


def compile_manifests(directory: Path = PIPELINE_MANIFESTS_DIR, *, image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write both pipelines as Kubernetes-native `Pipeline` + `PipelineVersion` objects, with a kustomization."""
    from components.monitoring.pipeline_def import make_monitoring_pipeline
    from components.pipeline_manifests import write_kustomization, write_pipeline_manifest

    pipeline_funcs: tuple[Any, ...] = (make_training_pipeline(image), make_monitoring_pipeline(image))
    written = [write_pipeline_manifest(func, directory / f"{func.name}.yaml") for func in pipeline_funcs]
    return [*written, write_kustomization(directory, written)]


def compile_all(output: Path | None = None, *, image: str = DEFAULT_IMAGE) -> list[Path]:
    """Write the training YAML at `output`, the monitoring YAML beside it and the manifests below it.

    Without `output`: the committed files (`pipeline.yaml`, ...) for the default image; for any other image the
    same layout under `build/` (git-ignored), so a custom image never silently replaces the committed YAMLs.
    """
    if output is None:
        output = PIPELINE_FILE if image == DEFAULT_IMAGE else BUILD_DIR / PIPELINE_FILE.name
    output.parent.mkdir(parents=True, exist_ok=True)
    return [
        compile_pipeline(output, image=image),
        compile_monitoring_pipeline(output.with_name(MONITORING_PIPELINE_FILENAME), image=image),
        *compile_manifests(output.parent / PIPELINE_MANIFESTS_DIR.relative_to(REPO), image=image),
    ]


def pipeline_defaults() -> dict[str, Any]:
    """The training pipeline's parameters and their defaults, as the compiled spec declares them."""
    return {name: spec.default for name, spec in training_pipeline.component_spec.inputs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python pipeline.py`: the command line in components/cli.py."""
    from components.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
