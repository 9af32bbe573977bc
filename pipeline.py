"""The training pipeline (data -> train -> evaluate -> gated deploy) and its compilation.

`training_pipeline` is a module-level pipeline object, so KFP's own `kfp dsl compile --py pipeline.py --output
pipeline.yaml` writes the same file as `python pipeline.py compile`. The commands (compile, run, serve, submit,
monitor) live in components/cli.py; `python pipeline.py` with no arguments compiles, like every KFP example.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real annotation objects.

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl
from kfp.dsl import ClassificationMetrics, Markdown, Metrics, Model
from kfp.dsl.graph_component import GraphComponent

from components.constants import (
    DEFAULT_DATASET,
    DEFAULT_DEPLOY_TIMEOUT_SECONDS,
    DEFAULT_IMAGE,
    DEFAULT_LABEL_COLUMN,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_MODEL_FAMILY,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEFAULT_SCALE_METRIC,
    DEFAULT_SCALE_TARGET,
    DEPLOY_TARGET_LOCAL,
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
    """What a run hands back: the model, its metrics and report, and the gate's decision."""

    model: Model
    metrics: Metrics
    classification: ClassificationMetrics
    report: Markdown
    deploy: bool


def make_training_pipeline(image: str = DEFAULT_IMAGE) -> GraphComponent:
    """Build the training pipeline with every component on `image` (the one place the image is chosen)."""
    steps: Components = build_components(image)

    @dsl.pipeline(name=PIPELINE_NAME, description="Train a scikit-learn classifier and serve it with KServe.")
    def training_pipeline(
        dataset: str = DEFAULT_DATASET,
        label_column: str = DEFAULT_LABEL_COLUMN,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        seed: int = DEFAULT_SEED,
        model_family: str = DEFAULT_MODEL_FAMILY,
        hyperparameters: dict = {},  # noqa: B006  # KFP reads the literal default into the pipeline spec
        min_accuracy: float = DEFAULT_MIN_ACCURACY,
        model_name: str = DEFAULT_MODEL_NAME,
        namespace: str = DEFAULT_NAMESPACE,
        deploy_target: str = DEPLOY_TARGET_LOCAL,
        local_store: str = f"{DEFAULT_LOCAL_ROOT}/{LOCAL_STORE_DIRNAME}",
        predictor_service_account: str = "",
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
        """Steps: load_data (validate, stratified split) -> train -> evaluate -> deploy, only if the gate passes.

        Args:
            dataset: `iris`, `wine`, `breast_cancer`, or a path/URL to a .csv/.parquet file.
            label_column: The label column (the name given to a built-in dataset's target).
            test_fraction: Share of rows held out for evaluation (stratified).
            seed: Seed of the split and of the classifier.
            model_family: `logistic_regression` or `random_forest`.
            hyperparameters: Overrides of the family's defaults, e.g. {"C": 0.5}.
            min_accuracy: The deploy gate: test accuracy needed to deploy.
            model_name: InferenceService / V1 model name.
            namespace: Namespace of the InferenceService (kubernetes target).
            deploy_target: `local` (model store read by `pipeline.py serve`) or `kubernetes` (KServe).
            local_store: Model store root for the local target.
            predictor_service_account: Predictor service account with the object-store credentials (kubernetes
                target; empty means `kfp-model-reader` from manifests/base).
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
        data = steps.load_data(dataset=dataset, label_column=label_column, test_fraction=test_fraction, seed=seed)
        data.set_display_name("load and split data")
        trained = steps.train(
            train_data=data.outputs["train_data"],
            test_data=data.outputs["test_data"],
            label_column=label_column,
            model_family=model_family,
            hyperparameters=hyperparameters,
            seed=seed,
        )
        trained.set_display_name("train")
        scored = steps.evaluate(
            model=trained.outputs["model"],
            test_data=data.outputs["test_data"],
            label_column=label_column,
            min_accuracy=min_accuracy,
        )
        scored.set_display_name("evaluate")
        with dsl.If(scored.outputs["Output"] == True, name="accuracy-gate"):  # noqa: E712  # KFP builds a condition
            deployed = steps.deploy(
                model=trained.outputs["model"],
                metrics=scored.outputs["metrics"],
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
            )
            deployed.set_display_name("deploy")
            # The cluster changes while the inputs do not: a cached deploy would skip a needed rollout.
            deployed.set_caching_options(False)
            deployed.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
        return TrainingOutputs(
            model=trained.outputs["model"],
            metrics=scored.outputs["metrics"],
            classification=scored.outputs["classification"],
            report=scored.outputs["report"],
            deploy=scored.outputs["Output"],
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
