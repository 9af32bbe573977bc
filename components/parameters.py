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

from components.constants import BUILTIN_DATASETS, DEPLOY_TARGETS, MODEL_FAMILIES
from components.names import MAX_MODEL_NAME_LENGTH, InvalidNameError, check_dns_label, check_model_name

MODEL_NAME_PREFIX: Final = "sklearn-"
"""Default model names are `sklearn-<dataset>`: `sklearn-iris` for the default dataset."""
MAX_SEED: Final = 2**32 - 1
"""numpy's (and so scikit-learn's `random_state`) largest seed."""


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

    Args:
        arguments: Every parameter of the run (the pipeline's defaults merged with what the user gave).
        accepted: The pipeline's parameters and their defaults; any other key is refused (a typo in `--arg`).

    Raises:
        ParameterError: The first problem found, in one line.
    """
    from components.data import DataValidationError, check_dataset_source
    from components.train import TrainingConfigError, resolve_hyperparameters

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
    _check_choice(args, "model_family", MODEL_FAMILIES)
    _check_choice(args, "deploy_target", DEPLOY_TARGETS)
    try:
        check_model_name(args["model_name"])
        check_dns_label("namespace", args["namespace"])
        if args["predictor_service_account"]:
            check_dns_label("predictor_service_account", args["predictor_service_account"])
    except InvalidNameError as exc:
        raise ParameterError(str(exc)) from None
    url = args["payload_logger_url"]
    if not isinstance(url, str) or (url and urlparse(url).scheme not in ("http", "https")):
        raise ParameterError(f"payload_logger_url must be empty or an http(s):// URL, got {url!r}")
    if not isinstance(args["local_store"], str) or not args["local_store"]:
        raise ParameterError("local_store must be a non-empty path")
    _check_scaling(args)
    hyperparameters = args["hyperparameters"]
    if not isinstance(hyperparameters, dict):
        raise ParameterError('hyperparameters must be a JSON object, e.g. {"C": 0.5}')
    try:
        resolved = resolve_hyperparameters(args["model_family"], hyperparameters)
        # KFP delivers every number of a dict as a double; refuse an int whose meaning that would change.
        as_doubles = {k: float(v) if _is_int(v) else v for k, v in hyperparameters.items()}
        delivered = resolve_hyperparameters(args["model_family"], as_doubles)
    except TrainingConfigError as exc:
        raise ParameterError(str(exc)) from None
    for key, value in hyperparameters.items():
        if type(delivered[key]) is not type(resolved[key]):
            raise ParameterError(
                f"hyperparameter {key}={value!r} would reach the step as {float(value)!r} (KFP passes the numbers "
                f"of a dict as doubles), which {args['model_family']} reads differently; choose a value whose "
                "meaning survives that (e.g. a fraction)"
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
