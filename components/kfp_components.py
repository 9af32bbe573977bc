"""The training pipeline's KFP v2 components: thin wrappers that read artifacts, call one function, write outputs.

Each body imports what it needs, because KFP ships only the function's source to the executor; the image
(one per project, see the Dockerfile) already has this package installed, so no pip runs at run time.
Only stdlib and `kfp` are imported at module level, so compiling the pipeline stays cheap.
"""

# No `from __future__ import annotations`: KFP reads the real annotation objects to type inputs and outputs.
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from components.constants import DEFAULT_IMAGE


def load_data(
    train_data: Output[Dataset],
    test_data: Output[Dataset],
    dataset: str,
    label_column: str,
    test_fraction: float,
    seed: int,
):
    """Load and validate the dataset, then write a stratified train/test split as Parquet.

    Args:
        train_data: The training split (Parquet), with the dataset summary and `split_sha256` as metadata.
        test_data: The held-out split (Parquet), with the dataset summary as metadata.
        dataset: `iris`, `wine`, `breast_cancer`, or a path/URL to a .csv/.parquet file.
        label_column: The label column (the name given to a built-in dataset's target).
        test_fraction: Share of rows held out for evaluation (stratified).
        seed: Seed of the split.
    """
    from components.data import load_dataset, split_dataset, validate_dataset

    frame = load_dataset(dataset, label_column=label_column)
    summary = validate_dataset(frame, label_column=label_column, test_fraction=test_fraction)
    train, test = split_dataset(frame, label_column=label_column, test_fraction=test_fraction, seed=seed)
    for artifact, part in ((train_data, train), (test_data, test)):
        part.to_parquet(artifact.path, index=False)
        artifact.metadata.update({**summary.as_metadata(), "rows": len(part), "source": dataset})
    train_data.metadata["split_sha256"] = summary.fingerprint
    print(f"data: {summary.rows} rows, {summary.columns} features, classes {summary.class_names}")
    print(f"data: train {len(train)} / test {len(test)} rows, sha256 {summary.fingerprint[:12]}")


def train(
    model: Output[Model],
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    label_column: str,
    model_family: str,
    hyperparameters: dict,
    seed: int,
):
    """Fit the model family's pipeline; write the model directory (model.joblib + model.json [+ model.onnx]).

    Args:
        model: The model directory KServe loads; its metadata holds `model_sha256` and `model_digest`.
        train_data: The training split from load-data.
        test_data: The held-out split, used only to check the fitted model's ONNX export.
        label_column: The label column.
        model_family: `logistic_regression` or `random_forest`.
        hyperparameters: Overrides of the family's defaults, e.g. {"C": 0.5}.
        seed: Seed of the estimator.
    """
    from pathlib import Path

    import pandas as pd

    from components.data import features_and_labels, fingerprint
    from components.model_artifact import directory_digest
    from components.train import save_trained_model, train_model

    train_frame = pd.read_parquet(train_data.path)
    reference, _ = features_and_labels(train_frame, label_column=label_column)
    check, _ = features_and_labels(pd.read_parquet(test_data.path), label_column=label_column)
    trained = train_model(
        train_frame, label_column=label_column, family=model_family, hyperparameters=hyperparameters, seed=seed
    )
    card = save_trained_model(
        trained,
        Path(model.path),
        family=model_family,
        label_column=label_column,
        training_data_fingerprint=fingerprint(train_frame),
        check_features=check,
        reference_features=reference,
    )
    model.metadata.update(
        {
            "model_sha256": card.model_sha256,
            "model_digest": directory_digest(Path(model.path)),  # the pin deploy checks (README: Security)
            "sklearn": card.sklearn_version,
            "family": model_family,
            "fast_path": bool(card.onnx),
        }
    )
    print(f"train: {model_family} {card.hyperparameters}, sha256 {card.model_sha256[:12]}, onnx={bool(card.onnx)}")


def evaluate(
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    model: Input[Model],
    test_data: Input[Dataset],
    label_column: str,
    min_accuracy: float,
) -> bool:
    """Score the model on the test split, log KFP metrics for the UI, and return the deploy gate's decision.

    Args:
        metrics: Accuracy, F1 and per-class precision and recall (shown in the KFP UI).
        classification: Confusion matrix, and the ROC curve for binary labels.
        report: The evaluation and the gate's reason, as Markdown.
        model: The model directory from train.
        test_data: The held-out split from load-data.
        label_column: The label column.
        min_accuracy: The deploy gate: test accuracy needed to deploy.

    Returns:
        True when the model passes the gate and should be deployed.
    """
    # A single bool output (not a NamedTuple) because kfp.local 2.17 resolves `dsl.If` only on a task's `Output`.
    from pathlib import Path

    import pandas as pd

    from components.evaluate import deploy_gate, evaluate_model, render_markdown_report
    from components.model_artifact import load_estimator

    estimator, _ = load_estimator(Path(model.path))
    evaluation = evaluate_model(estimator, pd.read_parquet(test_data.path), label_column=label_column)
    decision = deploy_gate(evaluation, min_accuracy=min_accuracy)
    for name, value in evaluation.headline().items():
        metrics.log_metric(name, round(value, 6))
    for name, row in evaluation.per_class.items():
        metrics.log_metric(f"precision_{name}", round(row["precision"], 6))
        metrics.log_metric(f"recall_{name}", round(row["recall"], 6))
    classification.log_confusion_matrix(evaluation.class_names, evaluation.confusion_matrix)
    if evaluation.roc_curve is not None:
        roc = evaluation.roc_curve
        classification.log_roc_curve(roc.fpr, roc.tpr, roc.thresholds)
    Path(report.path).write_text(render_markdown_report(evaluation, decision))
    print(f"evaluate: {decision.reason}")
    return decision.deploy


def deploy(
    manifest: Output[Artifact],
    model: Input[Model],
    metrics: Input[Metrics],
    model_name: str,
    namespace: str,
    deploy_target: str,
    local_store: str,
    service_account: str,
    timeout_seconds: int,
    run_id: str,
    payload_logger_url: str,
    run_name: str = "",
    # Literals, not constants: KFP ships only this function's source (values = constants.DEFAULT_*_REPLICAS etc.).
    min_replicas: int = 1,
    max_replicas: int = 3,
    scale_metric: str = "cpu",
    scale_target: int = 80,
    predictor_cpu_request: str = "",
    predictor_memory_request: str = "",
    predictor_cpu_limit: str = "",
    predictor_memory_limit: str = "",
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("status", str)]):  # type: ignore[valid-type]
    """Deploy the model: publish it to the local store, or create/patch a KServe InferenceService and wait.

    Args:
        manifest: The InferenceService YAML applied (kubernetes), or the one that would serve the published
            version from a volume holding the store (local).
        model: The model directory from train; its `model_digest` metadata is checked and pinned.
        metrics: Evaluation metrics, recorded as lineage.
        model_name: InferenceService / V1 model name.
        namespace: Namespace of the InferenceService (kubernetes target).
        deploy_target: `local` (model store read by `pipeline.py serve`) or `kubernetes` (KServe).
        local_store: Model store root for the local target.
        service_account: Predictor service account with the object-store credentials (kubernetes target; empty
            means `kfp-model-reader` from manifests/base).
        timeout_seconds: How long to wait for the InferenceService to be ready (kubernetes target).
        run_id: The run's UUID (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), recorded as lineage.
        payload_logger_url: KServe logger sink for request/response payloads (kubernetes target; empty: none).
        run_name: The run's display name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`), lineage beside the run id.
        min_replicas: Fewest predictor pods (kubernetes target; Standard mode: at least 1).
        max_replicas: Most predictor pods; KServe's HPA scales between the bounds (kubernetes target).
        scale_metric: What the HPA scales on: `cpu` or `memory` (kubernetes target).
        scale_target: Target utilisation of the request, percent (kubernetes target).
        predictor_cpu_request: Model server CPU request, e.g. `500m`; empty keeps the ServingRuntime's.
        predictor_memory_request: Memory request, e.g. `256Mi`; empty keeps the ServingRuntime's.
        predictor_cpu_limit: CPU limit; empty keeps the ServingRuntime's.
        predictor_memory_limit: Memory limit; empty keeps the ServingRuntime's.

    Returns:
        endpoint: The model's V1 predict URL.
        status: What was done: `published <version directory>` (local), `created` or `patched` (kubernetes).
    """
    from collections import namedtuple
    from pathlib import Path

    from components.deploy import deploy_model

    outcome = deploy_model(
        deploy_target,
        Path(model.path),
        model_uri=model.uri,
        model_name=model_name,
        namespace=namespace,
        local_store=Path(local_store),
        run_id=run_id,
        metrics={k: float(v) for k, v in metrics.metadata.items()},
        service_account=service_account or None,
        timeout_seconds=timeout_seconds,
        payload_logger_url=payload_logger_url,
        run_name=run_name,
        # The digest train recorded: deploy checks the directory against it and pins it where the server reads it.
        expected_digest=model.metadata.get("model_digest") or None,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        scale_metric=scale_metric,
        scale_target=scale_target,
        cpu_request=predictor_cpu_request,
        memory_request=predictor_memory_request,
        cpu_limit=predictor_cpu_limit,
        memory_limit=predictor_memory_limit,
    )
    Path(manifest.path).write_text(outcome.manifest_yaml)
    manifest.metadata.update({"target": deploy_target, "endpoint": outcome.endpoint, "status": outcome.status})
    print(f"deploy: {outcome.status} -> {outcome.endpoint}")
    DeployOutputs = namedtuple("DeployOutputs", ["endpoint", "status"])
    return DeployOutputs(outcome.endpoint, outcome.status)


@dataclass(frozen=True)
class Components:
    """The pipeline's components, all built on one image."""

    load_data: Callable
    train: Callable
    evaluate: Callable
    deploy: Callable


def project_component(func: Callable, image: str) -> Callable:
    """A KFP component of `func` that runs `image`, which has this project installed: nothing is pip-installed."""
    return dsl.component(func, base_image=image, install_kfp_package=False)


def build_components(image: str = DEFAULT_IMAGE) -> Components:
    """Wrap the step functions as KFP components that run `image` with the project preinstalled."""
    return Components(
        load_data=project_component(load_data, image),
        train=project_component(train, image),
        evaluate=project_component(evaluate, image),
        deploy=project_component(deploy, image),
    )
