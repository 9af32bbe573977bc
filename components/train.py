"""Fit the preprocessing + estimator pipeline a model family and a feature schema call for; write the model directory.

Which estimator and hyperparameters: `components.estimators`. Which imputation, scaling and encoding:
`components.preprocessing`. What the directory holds: `components.model_artifact`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import ONNX_FILENAME, REFERENCE_PROFILE_FILENAME
from components.estimators import TrainingConfigError, build_estimator, resolve_estimator, resolve_hyperparameters

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from components.features import FeatureSchema
    from components.model_artifact import ModelCard

__all__ = ["TrainedModel", "TrainingConfigError", "save_trained_model", "train_model"]


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and what a server needs to know about it."""

    estimator: Pipeline
    feature_names: list[str]
    class_names: list[str]
    """Classification: `str` of the estimator's `classes_`, in that order. Regression: empty."""
    hyperparameters: dict[str, Any]
    schema: FeatureSchema | None = None
    family: str = ""
    """What `model_family` resolved to (`auto` becomes the short name it chose)."""
    estimator_path: str = ""
    """Import path of the estimator class."""
    task: str = "classification"


def _numeric_schema(train: pd.DataFrame, label_column: str) -> FeatureSchema:
    """The schema of an all-numeric classification frame (what callers without a schema trained before)."""
    from components.features import Feature, FeatureSchema, infer_feature_schema

    inferred = infer_feature_schema(train, label_column=label_column, task="classification")
    return FeatureSchema(
        task="classification",
        task_reason=inferred.task_reason,
        label_column=label_column,
        features=[Feature(name=name, kind="numeric") for name in inferred.names],
        class_names=inferred.class_names,
    )


def train_model(
    train: pd.DataFrame,
    *,
    schema: FeatureSchema | None = None,
    model_family: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
    label_column: str | None = None,
    family: str | None = None,
) -> TrainedModel:
    """Fit the pipeline `schema` and `model_family` call for on the training split.

    Args:
        train: The training split: the schema's feature columns and its label column (other columns are ignored).
        schema: The feature schema from the data step (task, features, label).
        model_family: `auto`, a short name of `estimators.FAMILIES` or a public sklearn import path.
        hyperparameters: Overrides of the estimator's defaults (JSON values; KFP's doubles are fixed).
        seed: The estimator's `random_state`, where it has one.
        label_column: Only without `schema` (older callers): the label of an all-numeric classification frame.
        family: Older name of `model_family`.

    Raises:
        TrainingConfigError: The family, a hyperparameter, or the data for this estimator is refused; one line.
    """
    import numpy as np

    from components.features import feature_matrix
    from components.preprocessing import build_pipeline

    model_family = model_family or family
    if model_family is None:
        raise TrainingConfigError("train_model needs model_family")
    if schema is None:
        if label_column is None:
            raise TrainingConfigError("train_model needs a feature schema (or, for all-numeric data, label_column)")
        schema = _numeric_schema(train, label_column)
    choice = resolve_estimator(model_family, schema.task)
    params = resolve_hyperparameters(model_family, schema.task, hyperparameters)
    pipeline = build_pipeline(schema, build_estimator(choice, params, seed=seed))
    x = feature_matrix(train, schema)
    _check_categories(x, schema)
    labels = train[schema.label_column]
    y = labels.to_numpy(dtype=np.float64) if schema.task == "regression" else labels.to_numpy()
    _fit(pipeline, x, y, family=choice.family)
    classes = [] if schema.task == "regression" else [str(c) for c in pipeline.classes_]
    return TrainedModel(
        estimator=pipeline,
        feature_names=schema.names,
        class_names=classes,
        hyperparameters=params,
        schema=schema,
        family=choice.family,
        estimator_path=choice.path,
        task=schema.task,
    )


def _check_categories(x: np.ndarray, schema: FeatureSchema) -> None:
    """Refuse training rows whose category the schema does not list (the encoders would treat it as unknown)."""
    import pandas as pd

    for index, feature in enumerate(schema.features):
        if feature.kind != "categorical":
            continue
        seen = pd.unique(pd.Series(x[:, index]).dropna())
        unlisted = sorted(set(map(str, seen)) - set(feature.categories))
        if unlisted:
            shown = ", ".join(repr(value[:40]) for value in unlisted[:3])
            raise TrainingConfigError(
                f"training data has categories of feature '{feature.name}' the feature schema does not list: {shown}; "
                "infer the schema from the data being trained on"
            )


def _fit(pipeline: Any, x: np.ndarray, y: np.ndarray, *, family: str) -> None:
    """Fit, turning sklearn's refusals of this data or these parameters into one line naming the family."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    try:
        with warnings.catch_warnings():
            # A model that did not fully converge is still a model: evaluate and the gate judge it.
            warnings.simplefilter("ignore", ConvergenceWarning)
            # scikit-learn 1.9 deprecates SVC(probability=True) (removal in 1.11); the pinned version still has it and
            # the svm family needs it to serve probabilities (estimators.ESTIMATOR_DEFAULTS).
            warnings.filterwarnings(
                "ignore", message="The `probability` parameter was deprecated", category=FutureWarning
            )
            pipeline.fit(x, y)
    except (ValueError, TypeError) as exc:  # InvalidParameterError is a ValueError too
        message = " ".join(str(exc).split())[:400]
        raise TrainingConfigError(f"cannot train {family} on this data: {message}") from None


def save_trained_model(
    model: TrainedModel,
    directory: Path,
    *,
    training_data_fingerprint: str,
    check_features: pd.DataFrame,
    reference_features: pd.DataFrame,
    family: str | None = None,
    label_column: str | None = None,
) -> ModelCard:
    """Write the model directory: `model.joblib`, `model.json`, the drift reference and, if it proves equal, ONNX.

    Args:
        model: The fitted model from `train_model`.
        directory: The `Output[Model]` path.
        training_data_fingerprint: sha256 of the training data, recorded in the card.
        check_features: Held-out rows (the test split; the label column may stay) on which the ONNX fast path must
            reproduce sklearn's predictions.
        reference_features: The training rows (label may stay), summarized as the reference distribution for drift
            checks (with the model's predictions on them, for regression).
        family: Older callers: the family, which must be what the model was trained as (the model records it).
        label_column: Older callers: the label column, which must be the schema's.

    Returns:
        The card written to `model.json`.
    """
    from components.features import feature_matrix
    from components.model_artifact import save_model
    from components.reference_profile import build_reference_profile, write_reference_profile

    schema = model.schema
    if schema is None:
        raise TrainingConfigError("save_trained_model needs a model from train_model (it carries the schema)")
    if family is not None and family != model.family:
        raise TrainingConfigError(f"the model was trained as {model.family}, not {family}")
    if label_column is not None and label_column != schema.label_column:
        raise TrainingConfigError(f"the model's label is {schema.label_column}, not {label_column}")
    directory.mkdir(parents=True, exist_ok=True)
    x_reference = feature_matrix(reference_features, schema)
    predictions = model.estimator.predict(x_reference) if schema.task == "regression" else None
    profile = build_reference_profile(x_reference, schema, predictions)
    extra_files = {REFERENCE_PROFILE_FILENAME: write_reference_profile(directory, profile)}
    del x_reference, predictions  # a million-row object matrix: not kept while the ONNX check runs
    onnx_path = directory / ONNX_FILENAME
    report = _export_onnx(model.estimator, feature_matrix(check_features, schema), onnx_path, schema)
    if onnx_path.is_file():
        extra_files[ONNX_FILENAME] = onnx_path
    return save_model(
        directory,
        model.estimator,
        feature_names=model.feature_names,
        class_names=model.class_names,
        model_family=model.family,
        hyperparameters=model.hyperparameters,
        training_data_fingerprint=training_data_fingerprint,
        label_column=schema.label_column,
        extra_files=extra_files,
        onnx=report,
        task=schema.task,
        features=schema.features,
        estimator_path=model.estimator_path,
    )


def _export_onnx(estimator: Any, x_check: np.ndarray, path: Path, schema: FeatureSchema) -> dict[str, Any]:
    """The ONNX report (`kept` False and why, when not kept); `path` exists afterwards exactly when ONNX serves."""
    from components.onnx_export import export_verified_onnx

    report = dict(export_verified_onnx(estimator, x_check, path, schema=schema) or {})
    if not report.get("kept", False):
        path.unlink(missing_ok=True)  # never hash or serve a graph the check did not keep
    return report
