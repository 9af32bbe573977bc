"""The training pipeline's KFP v2 components: thin wrappers that read artifacts, call one function, write outputs.

load_data -> expand_search -> score_candidate (one per candidate, `dsl.ParallelFor`) -> select_candidate
(`dsl.Collected`) -> train -> evaluate -> champion_vs_challenger -> deploy.

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
    feature_schema: Output[Artifact],
    dataset: str,
    label_column: str,
    test_fraction: float,
    seed: int,
    task: str = "",
    feature_types: dict = {},  # noqa: B006  # KFP reads the literal default into the component spec
):
    """Load and validate the dataset, infer its feature schema and task, then write the train/test split as Parquet.

    Args:
        train_data: The training split (Parquet), with the dataset summary and `split_sha256` as metadata.
        test_data: The held-out split (Parquet), with the dataset summary as metadata.
        feature_schema: Every feature's kind (numeric or categorical), known categories and whether it may be
            missing, and the task (JSON); train, search, evaluate and the champion step read it.
        dataset: `iris`, `wine`, `breast_cancer`, `diabetes`, or a path/URL to a .csv/.parquet file.
        label_column: The label column (the name given to a built-in dataset's target).
        test_fraction: Share of rows held out for evaluation (stratified for classification).
        seed: Seed of the split.
        task: `classification`, `regression`, or empty to infer it from the label.
        feature_types: Overrides of the inferred kinds, e.g. {"zip": "categorical", "id": "drop"}.
    """
    from components.data import load_dataset, split_dataset, validate_dataset
    from components.features import write_schema

    frame = load_dataset(dataset, label_column=label_column)
    summary = validate_dataset(
        frame, label_column=label_column, test_fraction=test_fraction, task=task, feature_types=feature_types
    )
    schema = summary.schema
    train, test = split_dataset(
        frame, label_column=label_column, test_fraction=test_fraction, seed=seed, task=schema.task
    )
    for artifact, part in ((train_data, train), (test_data, test)):
        part.to_parquet(artifact.path, index=False)
        artifact.metadata.update({**summary.as_metadata(), "rows": len(part), "source": dataset})
    train_data.metadata["split_sha256"] = summary.fingerprint
    write_schema(schema, feature_schema.path)
    feature_schema.metadata.update({"task": schema.task, "task_reason": schema.task_reason, "features": schema.names})
    for line in summary.describe():
        print(line)


def expand_search(search_space: list, model_family: str, hyperparameters: dict) -> list:
    """Turn the search space into the candidates the pipeline fans out over (one per configuration).

    Args:
        search_space: `[]` (train `model_family` with `hyperparameters`, no search), or a list of configurations
            `{"model_family": ..., "hyperparameters": {...}}` and grids `{"model_family": ..., "grid": {"p": [..]}}`.
        model_family: The run's model family (the empty search space's only candidate, and an entry's default).
        hyperparameters: The run's hyperparameters (the empty search space's only candidate).

    Returns:
        The candidates, each `{"candidate_id", "model_family", "hyperparameters", "search_size"}`.
    """
    from components.search import expand_search_space

    candidates = expand_search_space(search_space, model_family=model_family, hyperparameters=hyperparameters)
    print(f"search: {len(candidates)} candidate(s)")
    return candidates


def score_candidate(
    metrics: Output[Metrics],
    train_data: Input[Dataset],
    feature_schema: Input[Artifact],
    candidate: dict,
    cv_folds: int,
    seed: int,
    gate_metric: str,
) -> dict:
    """Cross-validate one candidate on the training split (the test split is never read).

    Args:
        metrics: The candidate's id and its mean and standard deviation over the folds.
        train_data: The training split from load-data.
        feature_schema: The feature schema from load-data.
        candidate: One item of expand-search's list.
        cv_folds: Number of cross-validation folds.
        seed: Seed of the folds and of the estimator.
        gate_metric: The metric to compare on; empty: accuracy (classification) or r2 (regression).

    Returns:
        The candidate with its score: `{"candidate_id", "model_family", "hyperparameters", "metric", "mean", "std",
        "folds", "note"}`.
    """
    import math

    import pandas as pd

    from components.evaluate import default_metric
    from components.features import read_schema
    from components.search import cross_validate_candidate

    schema = read_schema(feature_schema.path)
    metric = gate_metric or default_metric(schema.task)
    result = cross_validate_candidate(
        pd.read_parquet(train_data.path), schema, candidate, folds=cv_folds, seed=seed, metric=metric
    )
    metrics.log_metric("candidate_id", result["candidate_id"])
    for stat in ("mean", "std"):
        if math.isfinite(result[stat]):
            metrics.log_metric(f"cv_{metric}_{stat}", round(result[stat], 6))
    how = result["note"] or f"{metric} {result['mean']:.4f} +/- {result['std']:.4f} over {len(result['folds'])} folds"
    print(f"search: candidate {result['candidate_id']} {result['model_family']} {result['hyperparameters']}: {how}")
    # The dict travels as JSON (a protobuf Struct): no NaN, and kfp.local takes no null; an unscored mean is left out.
    return {k: v for k, v in result.items() if not (isinstance(v, float) and not math.isfinite(v))}


def select_candidate(
    metrics: Output[Metrics],
    report: Output[Markdown],
    scores: list[dict],
) -> NamedTuple("Selection", [("model_family", str), ("hyperparameters", dict), ("candidates", list)]):  # type: ignore[valid-type]
    """Pick the candidate with the best cross-validated score; report every candidate's score.

    Args:
        metrics: Every candidate's mean and standard deviation, and the selected candidate's id.
        report: The candidates and their scores as a Markdown table, the winner marked.
        scores: Every score-candidate output (`dsl.Collected`).

    Returns:
        model_family: The winner's model family.
        hyperparameters: The winner's hyperparameters.
        candidates: Every candidate's score, in candidate order.
    """
    from collections import namedtuple
    from pathlib import Path

    from components.search import render_search_report, search_metrics, select_best

    best = select_best(scores, metric=scores[0]["metric"])
    for name, value in search_metrics(scores, best).items():
        metrics.log_metric(name, round(value, 6))
    Path(report.path).write_text(render_search_report(scores, best))
    print(f"select: candidate {int(best['candidate_id'])} of {len(scores)}: {best['model_family']}")
    Selection = namedtuple("Selection", ["model_family", "hyperparameters", "candidates"])
    return Selection(best["model_family"], best["hyperparameters"], sorted(scores, key=lambda s: s["candidate_id"]))


def train(
    model: Output[Model],
    train_data: Input[Dataset],
    test_data: Input[Dataset],
    feature_schema: Input[Artifact],
    model_family: str,
    hyperparameters: dict,
    seed: int,
):
    """Fit the estimator and its preprocessing; write the model directory (model.joblib + model.json [+ model.onnx]).

    Args:
        model: The model directory KServe loads; its metadata holds `model_sha256` and `model_digest`.
        train_data: The training split from load-data.
        test_data: The held-out split, used only to check the fitted model's ONNX export.
        feature_schema: The feature schema from load-data (the columns, their kinds, the task).
        model_family: The selected candidate's family: a short name or a `sklearn.*` estimator path.
        hyperparameters: The selected candidate's hyperparameters (overrides of the family's defaults).
        seed: Seed of the estimator.
    """
    import json
    from pathlib import Path

    import pandas as pd

    from components.data import fingerprint
    from components.features import read_schema
    from components.model_artifact import directory_digest
    from components.train import save_trained_model, train_model

    schema = read_schema(feature_schema.path)
    train_frame = pd.read_parquet(train_data.path)
    trained = train_model(
        train_frame, schema=schema, model_family=model_family, hyperparameters=hyperparameters, seed=seed
    )
    card = save_trained_model(
        trained,
        Path(model.path),
        training_data_fingerprint=fingerprint(train_frame),
        check_features=pd.read_parquet(test_data.path),
        reference_features=train_frame,
    )
    model.metadata.update(
        {
            "model_sha256": card.model_sha256,
            "model_digest": directory_digest(Path(model.path)),  # the pin deploy checks (README: Security)
            "sklearn": card.sklearn_version,
            "family": card.model_family,
            "hyperparameters": json.dumps(card.hyperparameters, sort_keys=True),  # JSON: a value may be None
            "estimator": card.estimator,
            "task": card.task,
            "fast_path": card.serving_path == "onnx",
        }
    )
    print(
        f"train: {card.model_family} {card.hyperparameters}, sha256 {card.model_sha256[:12]}, "
        f"serving path {card.serving_path}"
    )


def evaluate(
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    gate: Output[Artifact],
    model: Input[Model],
    test_data: Input[Dataset],
    feature_schema: Input[Artifact],
    min_accuracy: float,
    gate_metric: str = "",
    gate_threshold: float = 0.0,
) -> bool:
    """Score the model on the test split, log KFP metrics for the UI, and apply the absolute deploy gate.

    Args:
        metrics: Classification: accuracy, F1, balanced accuracy, ROC AUC, per-class precision and recall.
            Regression: RMSE, MAE and R².
        classification: Confusion matrix, and the ROC curve for binary labels (empty for regression).
        report: The evaluation (residual summary for regression) and the gate's reason, as Markdown.
        gate: The gate's decision and reason (JSON), which the champion step reads.
        model: The model directory from train.
        test_data: The held-out split from load-data.
        feature_schema: The feature schema from load-data.
        min_accuracy: The classification gate when `gate_metric` is empty: test accuracy needed.
        gate_metric: The gated metric (accuracy, f1_macro, balanced_accuracy, roc_auc; r2, rmse, mae); empty:
            accuracy >= min_accuracy for classification, r2 >= gate_threshold for regression.
        gate_threshold: The threshold `gate_metric` must reach, in its direction (rmse and mae: at most).

    Returns:
        True when the model passes the absolute gate (the champion step still has to agree).
    """
    import json
    from pathlib import Path

    import pandas as pd

    from components.evaluate import deploy_gate, evaluate_model, render_markdown_report
    from components.features import read_schema
    from components.model_artifact import load_estimator

    estimator, _ = load_estimator(Path(model.path))
    evaluation = evaluate_model(estimator, pd.read_parquet(test_data.path), schema=read_schema(feature_schema.path))
    decision = deploy_gate(
        evaluation, gate_metric=gate_metric, gate_threshold=gate_threshold, min_accuracy=min_accuracy
    )
    for name, value in evaluation.headline().items():
        metrics.log_metric(name, round(value, 6))
    for name, row in evaluation.per_class.items():
        metrics.log_metric(f"precision_{name}", round(row["precision"], 6))
        metrics.log_metric(f"recall_{name}", round(row["recall"], 6))
    if evaluation.confusion_matrix:
        classification.log_confusion_matrix(evaluation.class_names, evaluation.confusion_matrix)
    if evaluation.roc_curve is not None:
        roc = evaluation.roc_curve
        classification.log_roc_curve(roc.fpr, roc.tpr, roc.thresholds)
    Path(report.path).write_text(render_markdown_report(evaluation, decision))
    Path(gate.path).write_text(json.dumps({"deploy": decision.deploy, "reason": decision.reason}))
    gate.metadata.update({"deploy": decision.deploy, "reason": decision.reason})
    print(f"evaluate: {evaluation.task}, gate: {decision.reason}")
    return decision.deploy


def champion_vs_challenger(
    decision: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[Markdown],
    model: Input[Model],
    test_data: Input[Dataset],
    feature_schema: Input[Artifact],
    evaluation: Input[Metrics],
    gate: Input[Artifact],
    candidates: list,
    model_name: str,
    deploy_target: str,
    local_store: str,
    namespace: str,
    gate_metric: str,
    min_improvement: float,
    mlflow_tracking_uri: str,
    run_name: str,
    s3_endpoint: str = "",
) -> bool:
    """Decide whether to deploy: the absolute gate, then the challenger against the live model on the same rows.

    Args:
        decision: The decision (JSON): gate, both scores, deploy or not and why; metadata `mlflow_model_version`
            when the run was logged to MLflow.
        metrics: The challenger's and the champion's score and the decision (1 deploy, 0 keep the champion).
        report: The comparison and its reason, as Markdown.
        model: The challenger: the model directory from train.
        test_data: The held-out split: both models are scored on these rows.
        feature_schema: The feature schema from load-data (a champion with another schema is not compared).
        evaluation: The challenger's evaluation metrics (logged to MLflow).
        gate: The absolute gate's decision from evaluate.
        candidates: Every search candidate's score (logged to MLflow).
        model_name: The model whose live version is the champion.
        deploy_target: Where the champion lives: `local` (the model store) or `kubernetes` (the InferenceService).
        local_store: Model store root for the local target.
        namespace: Namespace of the InferenceService (kubernetes target).
        gate_metric: The metric to compare on; empty: accuracy (classification) or r2 (regression).
        min_improvement: How much better than the champion the challenger must be, in the metric's direction.
        mlflow_tracking_uri: MLflow tracking URI; empty: nothing is logged to MLflow.
        run_name: The run's display name (`dsl.PIPELINE_JOB_NAME_PLACEHOLDER`), the MLflow run's name.
        s3_endpoint: KFP's object store, where the live model is read from (kubernetes target).

    Returns:
        True when the challenger is to be deployed.
    """
    import json
    import math
    from pathlib import Path

    import pandas as pd

    from components.champion import ChampionDecision, compare_with_champion, find_champion, render_champion_report
    from components.constants import GATE_METRIC_ROC_AUC, METRIC_ROC_AUC
    from components.evaluate import default_metric
    from components.features import read_schema

    schema = read_schema(feature_schema.path)
    metric = gate_metric or default_metric(schema.task)
    gate_result = json.loads(Path(gate.path).read_text())
    if gate_result["deploy"]:
        champion = find_champion(
            deploy_target=deploy_target,
            model_name=model_name,
            local_store=local_store,
            namespace=namespace,
            s3_endpoint=s3_endpoint,
        )
        outcome = compare_with_champion(
            Path(model.path),
            champion,
            pd.read_parquet(test_data.path),
            schema,
            metric=metric,
            min_improvement=min_improvement,
            challenger_digest=model.metadata.get("model_digest") or None,
        )
    else:  # the live model is not even loaded for a challenger that cannot deploy anyway
        reason = f"not compared with the live model: the absolute gate refused it ({gate_result['reason']})"
        own = evaluation.metadata.get(METRIC_ROC_AUC if metric == GATE_METRIC_ROC_AUC else metric, math.nan)
        outcome = ChampionDecision(False, reason, metric, float(own), None, min_improvement)
    scores = {name: value for name, value in outcome.metrics().items() if math.isfinite(value)}
    for name, value in scores.items():
        metrics.log_metric(name, round(value, 6))
    Path(report.path).write_text(render_champion_report(outcome))
    record = {
        "deploy": outcome.deploy,
        "reason": outcome.reason,
        "gate": gate_result,
        "metric": metric,
        "challenger_score": scores.get("challenger_score"),
        "champion_score": scores.get("champion_score"),
        "champion_version": outcome.champion_version,
        "min_improvement": min_improvement,
    }
    if mlflow_tracking_uri:
        from components.tracking import log_training_run

        record["mlflow_model_version"] = log_training_run(
            mlflow_tracking_uri,
            model_name=model_name,
            run_name=run_name,
            params={
                **{key: model.metadata.get(key, "") for key in ("family", "estimator", "task", "hyperparameters")},
                "metric": metric,
                "min_improvement": min_improvement,
            },
            metrics={**{k: float(v) for k, v in evaluation.metadata.items()}, **scores},
            candidates=candidates,
            model_dir=Path(model.path),
            digest=model.metadata.get("model_digest", ""),
        )
        print(f"champion: logged to MLflow as {model_name} version {record['mlflow_model_version']}")
    Path(decision.path).write_text(json.dumps(record, indent=2))
    decision.metadata.update({"deploy": outcome.deploy, "mlflow_model_version": record.get("mlflow_model_version", "")})
    print(f"champion: {outcome.reason}")
    return outcome.deploy


def deploy(
    manifest: Output[Artifact],
    model: Input[Model],
    metrics: Input[Metrics],
    decision: Input[Artifact],
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
    mlflow_tracking_uri: str = "",
) -> NamedTuple("DeployOutputs", [("endpoint", str), ("status", str)]):  # type: ignore[valid-type]
    """Deploy the model: publish it to the local store, or create/patch a KServe InferenceService and wait.

    Args:
        manifest: The InferenceService YAML applied (kubernetes), or the one that would serve the published
            version from a volume holding the store (local).
        model: The model directory from train; its `model_digest` metadata is checked and pinned.
        metrics: Evaluation metrics, recorded as lineage.
        decision: The champion step's decision; its `mlflow_model_version` gets MLflow's `champion` alias.
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
        mlflow_tracking_uri: MLflow tracking URI; when set, the deployed version gets the registry alias
            `champion`.

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
    mlflow_version = decision.metadata.get("mlflow_model_version")
    if mlflow_tracking_uri and mlflow_version:
        from components.tracking import set_champion_alias

        set_champion_alias(mlflow_tracking_uri, model_name=model_name, version=str(mlflow_version))
        print(f"deploy: MLflow alias 'champion' -> {model_name} version {mlflow_version}")
    DeployOutputs = namedtuple("DeployOutputs", ["endpoint", "status"])
    return DeployOutputs(outcome.endpoint, outcome.status)


@dataclass(frozen=True)
class Components:
    """The pipeline's components, all built on one image."""

    load_data: Callable
    expand_search: Callable
    score_candidate: Callable
    select_candidate: Callable
    train: Callable
    evaluate: Callable
    champion_vs_challenger: Callable
    deploy: Callable


def project_component(func: Callable, image: str) -> Callable:
    """A KFP component of `func` that runs `image`, which has this project installed: nothing is pip-installed."""
    return dsl.component(func, base_image=image, install_kfp_package=False)


def build_components(image: str = DEFAULT_IMAGE) -> Components:
    """Wrap the step functions as KFP components that run `image` with the project preinstalled."""
    return Components(
        load_data=project_component(load_data, image),
        expand_search=project_component(expand_search, image),
        score_candidate=project_component(score_candidate, image),
        select_candidate=project_component(select_candidate, image),
        train=project_component(train, image),
        evaluate=project_component(evaluate, image),
        champion_vs_challenger=project_component(champion_vs_challenger, image),
        deploy=project_component(deploy, image),
    )
