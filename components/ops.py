"""KFP v2 components: thin wrappers that read artifacts, call one project function, and write outputs.

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
    """Load and validate the dataset, then write a stratified train/test split as Parquet."""
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
    """Fit the model family's pipeline; write the model directory (model.joblib + model.json [+ model.onnx])."""
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
    """Score the model on the test split, log KFP metrics for the UI, and return the deploy gate's decision."""
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
    """Deploy the model: publish it to the local store, or create/patch a KServe InferenceService and wait."""
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
