"""Pre-flight: every training-pipeline parameter checked before the first step starts, on `run` and `submit` alike.

Without it a bad `min_accuracy` is found after the data is loaded and the model trained, and on a cluster after a
pod was scheduled. The messages are one line and name the parameter; `pipeline.py` prints them and exits 2.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Final
from urllib.parse import urlparse

from components.constants import BUILTIN_DATASETS, DEPLOY_TARGETS
from components.names import MAX_MODEL_NAME_LENGTH, InvalidNameError, check_dns_label, check_model_name

MODEL_NAME_PREFIX: Final = "sklearn-"
"""Default model names are `sklearn-<dataset>`: `sklearn-iris` for the default dataset."""
MAX_SEED: Final = 2**32 - 1
"""numpy's (and so scikit-learn's `random_state`) largest seed."""
MAX_CV_FOLDS: Final = 20
"""Each search candidate trains this many times; more folds than this buy no accuracy worth the cost."""
MLFLOW_URI_SCHEMES: Final = ("http", "https", "sqlite", "file", "postgresql", "mysql")
"""MLflow tracking URIs a run can log to: a server, or a database / directory the step itself opens."""


class ParameterError(ValueError):
    """A pipeline parameter the run would fail on; the one-line message names it and what is accepted."""


def default_model_name(dataset: str) -> str:
    """The model name a run on `dataset` deploys under when none is given: `sklearn-<dataset name>`.

    A run on a user's CSV must not replace the Iris model that `sklearn-iris` serves, so the name follows the data:
    `iris` -> `sklearn-iris`, `data/churn.csv` -> `sklearn-churn`, `s3://b/Sales_2024.parquet` -> `sklearn-sales-2024`,
    made a valid model name (lowercase letters, digits and '-', at most `MAX_MODEL_NAME_LENGTH` characters).
    """
    stem = dataset if dataset in BUILTIN_DATASETS else PurePosixPath(urlparse(dataset).path or dataset).stem
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    slug = slug[: MAX_MODEL_NAME_LENGTH - len(MODEL_NAME_PREFIX)].rstrip("-") or "model"
    return check_model_name(f"{MODEL_NAME_PREFIX}{slug}")


def validate_parameters(arguments: Mapping[str, Any], *, accepted: Mapping[str, Any]) -> None:
    """Check the training pipeline's parameters as the steps will receive them.

    What needs the data (a column named in `feature_types`, a metric that fits the inferred task, a family without
    an estimator for it) is checked by the steps; with `task` given, the task-specific checks run here too.

    Args:
        arguments: Every parameter of the run (the pipeline's defaults merged with what the user gave).
        accepted: The pipeline's parameters and their defaults; any other key is refused (a typo in `--arg`).

    Raises:
        ParameterError: The first problem found, in one line.
    """
    from components.data import DataValidationError, check_dataset_source

    unknown = sorted(set(arguments) - set(accepted))
    if unknown:
        raise ParameterError(f"unknown pipeline parameter(s) {', '.join(unknown)}; known: {', '.join(accepted)}")
    args = {**accepted, **arguments}
    for name in ("dataset", "label_column"):
        if not isinstance(args[name], str) or not args[name].strip():
            raise ParameterError(f"{name} must be a non-empty string")
    try:  # the location's form only: a path may name a file inside the image on a cluster
        check_dataset_source(args["dataset"])
    except DataValidationError as exc:
        raise ParameterError(str(exc)) from None
    _check_number(args, "test_fraction", low=0.0, high=1.0, closed=False)
    _check_number(args, "min_accuracy", low=0.0, high=1.0, closed=True)
    _check_integer(args, "seed", low=0, high=MAX_SEED)
    _check_integer(args, "deploy_timeout_seconds", low=1, high=None)
    _check_choice(args, "deploy_target", DEPLOY_TARGETS)
    try:
        check_model_name(args["model_name"])
        check_dns_label("namespace", args["namespace"])
        if args["predictor_service_account"]:
            check_dns_label("predictor_service_account", args["predictor_service_account"])
    except InvalidNameError as exc:
        raise ParameterError(str(exc)) from None
    for name in ("payload_logger_url", "s3_endpoint"):
        url = args.get(name, "")
        if not isinstance(url, str) or (url and urlparse(url).scheme not in ("http", "https")):
            raise ParameterError(f"{name} must be empty or an http(s):// URL, got {url!r}")
    if not isinstance(args["local_store"], str) or not args["local_store"]:
        raise ParameterError("local_store must be a non-empty path")
    _check_scaling(args)
    task = _check_data_typing(args)
    _check_model_choice(args, task)
    _check_comparison(args, task)


def _check_data_typing(args: Mapping[str, Any]) -> str:
    """`task` and `feature_types` (the columns they name are checked against the data by load-data); the task."""
    from components.features import check_feature_types, check_task

    if not isinstance(args["task"], str):
        raise ParameterError(f"task must be a string, got {args['task']!r}")
    if not isinstance(args["feature_types"], dict):
        raise ParameterError('feature_types must be a JSON object, e.g. {"zip_code": "categorical"}')
    try:
        check_task(args["task"])
        check_feature_types(args["feature_types"])
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    return str(args["task"])


def _check_model_choice(args: Mapping[str, Any], task: str) -> None:
    """The model family, its hyperparameters and the search space, as training would check them."""
    from components.estimators import check_training_config
    from components.search import expand_search_space

    if not isinstance(args["model_family"], str):
        raise ParameterError(f"model_family must be a string, got {args['model_family']!r}")
    hyperparameters = args["hyperparameters"]
    if not isinstance(hyperparameters, dict):
        raise ParameterError('hyperparameters must be a JSON object, e.g. {"C": 0.5}')
    if not isinstance(args["search_space"], list):
        raise ParameterError('search_space must be a JSON list, e.g. [{"model_family": "random_forest"}]')
    _check_integer(args, "cv_folds", low=2, high=MAX_CV_FOLDS)
    try:
        candidates = expand_search_space(
            args["search_space"], model_family=args["model_family"], hyperparameters=hyperparameters, task=task
        )
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    for candidate in candidates:  # with task "" the search space's own check does not know which estimator
        try:
            check_training_config(candidate["model_family"], task, candidate["hyperparameters"])
        except ValueError as exc:
            where = f"search_space candidate {candidate['candidate_id']}: " if args["search_space"] else ""
            raise ParameterError(f"{where}{exc}") from None
    for candidate in candidates:
        _check_survives_doubles(candidate["model_family"], task, candidate["hyperparameters"])


def _check_survives_doubles(model_family: str, task: str, hyperparameters: Mapping[str, Any]) -> None:
    """Refuse an int that KFP's doubles would turn into a value the estimator reads differently (`max_features=1`)."""
    from components.estimators import TrainingConfigError, resolve_hyperparameters
    from components.features import TASKS

    if not any(_is_int(v) for v in hyperparameters.values()):
        return
    as_doubles = {k: float(v) if _is_int(v) else v for k, v in hyperparameters.items()}
    for candidate_task in (task,) if task else TASKS:
        try:
            resolved = resolve_hyperparameters(model_family, candidate_task, hyperparameters)  # type: ignore[arg-type]
            delivered = resolve_hyperparameters(model_family, candidate_task, as_doubles)  # type: ignore[arg-type]
        except TrainingConfigError:
            continue  # the family has no estimator for this task (or refuses the doubles: training says so)
        for key, value in hyperparameters.items():
            if type(delivered[key]) is not type(resolved[key]) and not _same_meaning(
                model_family, candidate_task, key, resolved[key], delivered[key]
            ):
                raise ParameterError(
                    f"hyperparameter {key}={value!r} would reach the step as {float(value)!r} (KFP passes the "
                    f"numbers of a dict as doubles), which {model_family} reads differently; choose a value whose "
                    "meaning survives that (e.g. a fraction)"
                )


def _same_meaning(model_family: str, task: str, key: str, exact: Any, double: Any) -> bool:
    """Whether one of the estimator's own constraints on `key` takes both the int and its double.

    C=1 and C=1.0 fall in one Real interval: the same value. max_features=1 (an Integral count) and 1.0 (a RealNotInt
    fraction, "all features") satisfy different constraints: different meanings.
    """
    from sklearn.utils._param_validation import make_constraint

    from components.estimators import resolve_estimator

    estimator = resolve_estimator(model_family, task).cls  # type: ignore[arg-type]
    constraints = getattr(estimator, "_parameter_constraints", {}).get(key, [])
    return any(c.is_satisfied_by(exact) and c.is_satisfied_by(double) for c in map(make_constraint, constraints))


def _check_comparison(args: Mapping[str, Any], task: str) -> None:
    """The gate, the champion comparison and MLflow."""
    from components.champion import check_min_improvement
    from components.evaluate import check_gate

    if not isinstance(args["gate_metric"], str):
        raise ParameterError(f"gate_metric must be a string, got {args['gate_metric']!r}")
    threshold = args["gate_threshold"]
    if not (_is_int(threshold) or isinstance(threshold, float)):
        raise ParameterError(f"gate_threshold must be a number, got {threshold!r}")
    try:
        check_gate(gate_metric=args["gate_metric"], gate_threshold=float(threshold), task=task)
        check_min_improvement(args["min_improvement"])
    except ValueError as exc:
        raise ParameterError(str(exc)) from None
    uri = args["mlflow_tracking_uri"]
    if not isinstance(uri, str) or (uri and urlparse(uri).scheme not in MLFLOW_URI_SCHEMES):
        raise ParameterError(
            f"mlflow_tracking_uri must be empty or a URI of scheme {', '.join(MLFLOW_URI_SCHEMES)} "
            f"(e.g. http://127.0.0.1:5000, sqlite:///mlflow.db), got {uri!r}"
        )


def check_writable(directory: Path, *, what: str) -> None:
    """Refuse, in one line, a directory this process cannot create or write (`--root`, the local store)."""
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ParameterError(f"{what} {directory} cannot be created: {probe} is not a directory")
    # A real write, not os.access: root passes every mode-bit check, yet read-only mounts and sysfs refuse it.
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ParameterError(f"{what} {directory} is not writable ({probe}: {reason}); choose another") from None


_SCALING_PARAMETERS: Final = {
    "min_replicas": "min_replicas",
    "max_replicas": "max_replicas",
    "scale_metric": "scale_metric",
    "scale_target": "scale_target",
    "predictor_cpu_request": "cpu_request",
    "predictor_memory_request": "memory_request",
    "predictor_cpu_limit": "cpu_limit",
    "predictor_memory_limit": "memory_limit",
}
"""Pipeline parameter -> keyword of `inference_service.check_scaling_options`, for the pipelines that have them."""


def _check_scaling(args: Mapping[str, Any]) -> None:
    """The predictor's scaling and resources, checked by the builder's own rules (only the parameters present)."""
    given = {keyword: args[name] for name, keyword in _SCALING_PARAMETERS.items() if name in args}
    if not given:
        return
    from components.deploy.inference_service import check_scaling_options

    try:
        check_scaling_options(**given)
    except ValueError as exc:
        raise ParameterError(str(exc)) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_number(args: Mapping[str, Any], name: str, *, low: float, high: float, closed: bool) -> None:
    value = args[name]
    number_ok = (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    inside = number_ok and ((low <= value <= high) if closed else (low < value < high))
    if not inside:
        interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
        raise ParameterError(f"{name} must be a number in {interval}, got {value!r}")


def _check_integer(args: Mapping[str, Any], name: str, *, low: int, high: int | None) -> None:
    value = args[name]
    if not _is_int(value) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ParameterError(f"{name} must be an integer {bound}, got {value!r}")


def _check_choice(args: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> None:
    if args[name] not in choices:
        raise ParameterError(f"unknown {name} {args[name]!r}; choose one of: {', '.join(choices)}")
