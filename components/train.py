"""Build and fit the scikit-learn pipeline (scaling + classifier) for a model family."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import MODEL_FAMILIES, ONNX_FILENAME, REFERENCE_PROFILE_FILENAME

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from components.model_artifact import ModelCard

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 100, "max_depth": None, "min_samples_leaf": 1, "n_jobs": 1},
}
"""Hyperparameters each family starts from; the pipeline's `hyperparameters` dict overrides them."""


class TrainingConfigError(ValueError):
    """The model family or a hyperparameter is not valid; the message names it."""


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline and what a server needs to know about it."""

    estimator: Pipeline
    feature_names: list[str]
    class_names: list[str]
    hyperparameters: dict[str, Any]


def resolve_hyperparameters(family: str, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge user overrides onto the family's defaults, typed and checked as the classifier's constraints say.

    A `dict` pipeline parameter crosses KFP as a protobuf `Struct`, whose numbers are doubles: `{"n_estimators":
    200}` reaches the step as `200.0`. So an integral float becomes an `int` wherever the classifier's own
    `_parameter_constraints` accept the int and not the float (`n_estimators`, `max_depth`, `max_iter`, ...), and
    stays a float where the float means something (`max_features=1.0` is "all features").

    Raises:
        TrainingConfigError: An unknown family, a key the classifier does not take, or a value its constraints
            refuse (one line naming the parameter).
    """
    if family not in MODEL_FAMILIES:
        raise TrainingConfigError(f"unknown model_family '{family}'; choose one of: {', '.join(MODEL_FAMILIES)}")
    merged = {**FAMILY_DEFAULTS[family], **(overrides or {})}
    classifier = _classifier_class(family)
    accepted = set(classifier().get_params())
    unknown = sorted(set(merged) - accepted)
    if unknown:
        raise TrainingConfigError(
            f"{family} does not take hyperparameter(s) {', '.join(unknown)}; it takes: {', '.join(sorted(accepted))}"
        )
    constraints = classifier._parameter_constraints
    typed = {name: _as_constrained_int(value, constraints.get(name, [])) for name, value in merged.items()}
    _check_constraints(family, classifier, typed)
    return typed


def _as_constrained_int(value: Any, constraints: list[Any]) -> Any:
    """`value` as an int if it is an integral float that only an integer constraint of the parameter accepts."""
    if not isinstance(value, float) or not value.is_integer():
        return value
    from sklearn.utils._param_validation import make_constraint

    checks = [make_constraint(constraint) for constraint in constraints]
    wants_int = any(check.is_satisfied_by(int(value)) for check in checks)
    takes_float = any(check.is_satisfied_by(value) for check in checks)
    return int(value) if wants_int and not takes_float else value


def _check_constraints(family: str, classifier: Any, params: Mapping[str, Any]) -> None:
    """Check `params` as `fit` would (sklearn's own validation), before any data is read."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        classifier(**params)._validate_params()
    except InvalidParameterError as exc:
        # sklearn's message names the parameter and the accepted range; keep it to one line.
        raise TrainingConfigError(f"invalid hyperparameters for {family}: {' '.join(str(exc).split())}") from None


def _classifier_class(family: str) -> Any:
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression


def build_estimator(family: str, hyperparameters: Mapping[str, Any], *, seed: int) -> Pipeline:
    """A `StandardScaler` + classifier pipeline; the seed goes to the classifier's `random_state`."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    params = resolve_hyperparameters(family, hyperparameters)
    try:
        classifier = _classifier_class(family)(**{"random_state": seed, **params})
    except (TypeError, ValueError) as exc:
        raise TrainingConfigError(f"invalid hyperparameters for {family}: {exc}") from exc
    return Pipeline([("scale", StandardScaler()), ("classify", classifier)])


def train_model(
    train: pd.DataFrame,
    *,
    label_column: str,
    family: str,
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TrainedModel:
    """Fit the family's pipeline on `train` (features = every column but the label)."""
    from sklearn.utils._param_validation import InvalidParameterError

    from components.data import features_and_labels

    params = resolve_hyperparameters(family, hyperparameters)
    estimator = build_estimator(family, params, seed=seed)
    x, y = features_and_labels(train, label_column=label_column)
    try:
        estimator.fit(x.to_numpy(dtype=float), y.to_numpy())
    except InvalidParameterError as exc:
        raise TrainingConfigError(f"invalid hyperparameters for {family}: {exc}") from exc
    return TrainedModel(
        estimator=estimator,
        feature_names=[str(c) for c in x.columns],
        class_names=[str(c) for c in estimator.classes_],
        hyperparameters=params,
    )


def save_trained_model(
    model: TrainedModel,
    directory: Path,
    *,
    family: str,
    label_column: str,
    training_data_fingerprint: str,
    check_features: pd.DataFrame,
    reference_features: pd.DataFrame,
) -> ModelCard:
    """Write the model directory: `model.joblib`, `model.json`, the drift reference and, if it proves equal, ONNX.

    Args:
        model: The fitted model.
        directory: The `Output[Model]` path.
        family: Model family, recorded in the card.
        label_column: Label column name, recorded in the card.
        training_data_fingerprint: sha256 of the training data, recorded in the card.
        check_features: Held-out rows on which the ONNX fast path must reproduce sklearn's predictions.
        reference_features: Training features, summarized as the reference distribution for drift checks.
    """
    from components.model_artifact import save_model
    from components.onnx_export import export_verified_onnx
    from components.reference_profile import build_reference_profile, write_reference_profile

    directory.mkdir(parents=True, exist_ok=True)
    extra_files = {
        REFERENCE_PROFILE_FILENAME: write_reference_profile(directory, build_reference_profile(reference_features))
    }
    onnx_path = directory / ONNX_FILENAME
    report = export_verified_onnx(model.estimator, check_features.to_numpy(dtype=float), onnx_path)
    if report:
        extra_files[ONNX_FILENAME] = onnx_path
    return save_model(
        directory,
        model.estimator,
        feature_names=model.feature_names,
        class_names=model.class_names,
        model_family=family,
        hyperparameters=model.hyperparameters,
        training_data_fingerprint=training_data_fingerprint,
        label_column=label_column,
        extra_files=extra_files,
        onnx=report,
    )
