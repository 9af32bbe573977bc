"""What happens when the drift check says "drift": start retraining, fail loudly, or only report.

`decide_on_drift` is the policy. `check_retrain_config` checks a retrain configuration whole, before any data is
read. On KFP, `trigger_retraining` starts a run of the training pipeline through `components.submit` (the
submitter `pipeline.py submit` uses). Locally, `training_arguments_from_card` rebuilds the training parameters
from the live model's card and `local_training_command` is the `pipeline.py run` command that retrains it
(`pipeline.py monitor --on-drift retrain` runs it). `write_retrain_request` leaves a record of a request
(`retrain_request.json`); nothing polls for it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.atomic import atomic_write_text
from components.constants import (
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    MODEL_CARD_FILENAME,
    ON_DRIFT_ACTIONS,
    ON_DRIFT_RETRAIN,
    RETRAIN_REQUEST_FILENAME,
)

ACTION_NONE = "none"
CARD_TRAINING_FIELDS = {
    "model_family": "model_family",
    "hyperparameters": "hyperparameters",
    "label_column": "label_column",
    "task": "task",
}
"""model.json field -> training pipeline parameter: what the card records about how the model was trained. The task
is pinned so a retrained regression model stays one, whatever the new data's label looks like."""
CARD_PARAMETER_KEYS = ("training_parameters", "pipeline_parameters")
"""Card fields that, when a newer train step writes them, hold the run's pipeline parameters (dataset, seed, ...)."""


class DriftDetectedError(RuntimeError):
    """Raised by the monitoring pipeline with `on_drift="fail"`: the run fails and alerting picks it up."""


class RetrainTriggerError(RuntimeError):
    """The training run could not be started; the message says what to check."""


class RetrainConfigError(ValueError):
    """The retrain configuration cannot work; raised before any data is read."""


@dataclass(frozen=True)
class RetrainRequest:
    """What a retraining request records (the marker file's content)."""

    requested_at: str
    model_name: str
    model_uri: str
    reason: str
    drifted_features: list[str]
    run_id: str = ""


def decide_on_drift(status: str, on_drift: str) -> str:
    """The action for a drift status under a policy: `none` unless the status is `drift`.

    Args:
        status: `DriftReport.status`.
        on_drift: `retrain`, `fail` or `report`.

    Returns:
        `none`, or `on_drift` itself when the status is `drift`.

    Raises:
        ValueError: Unknown policy or status.
    """
    if on_drift not in ON_DRIFT_ACTIONS:
        raise ValueError(f"on_drift must be one of {list(ON_DRIFT_ACTIONS)}, got {on_drift!r}")
    if status not in (DRIFT_STATUS_OK, DRIFT_STATUS_DRIFT, DRIFT_STATUS_NOT_ENOUGH_DATA):
        raise ValueError(f"unknown drift status {status!r}")
    return on_drift if status == DRIFT_STATUS_DRIFT else ACTION_NONE


def check_retrain_config(
    on_drift: str,
    *,
    request_dir: str = "",
    kfp_endpoint: str = "",
    pipeline_id: str = "",
    pipeline_package: str = "",
    training_arguments: str = "{}",
) -> dict[str, Any]:
    """Check the monitoring pipeline's retrain settings whole; return the parsed training arguments.

    With `on_drift` other than `retrain` the settings are not used, but the arguments must still parse.

    Raises:
        RetrainConfigError: No target (neither a request directory nor an endpoint), an endpoint that is not
            http(s), an endpoint without a pipeline id or package, a missing package, or arguments that are not
            a JSON object. One line each.
    """
    decide_on_drift(DRIFT_STATUS_OK, on_drift)
    try:
        arguments = json.loads(training_arguments or "{}")
    except json.JSONDecodeError as error:
        raise RetrainConfigError(f"training_arguments is not valid JSON: {error.msg}") from None
    if not isinstance(arguments, dict):
        raise RetrainConfigError("training_arguments must be a JSON object of training pipeline parameters")
    if on_drift != ON_DRIFT_RETRAIN:
        return arguments
    if not request_dir and not kfp_endpoint:
        raise RetrainConfigError(
            "on_drift='retrain' needs kfp_endpoint (start a training run) or retrain_request_dir (record a request)"
        )
    if kfp_endpoint:
        if not kfp_endpoint.startswith(("http://", "https://")):
            raise RetrainConfigError(f"kfp_endpoint {kfp_endpoint!r} must be an http(s):// URL")
        if not pipeline_id and not pipeline_package:
            raise RetrainConfigError(
                "on_drift='retrain' with kfp_endpoint needs training_pipeline_id (uploaded pipeline) "
                "or training_pipeline_package (compiled YAML)"
            )
        if not pipeline_id and not Path(pipeline_package).is_file():
            raise RetrainConfigError(f"training pipeline package {pipeline_package} not found")
    return arguments


def write_retrain_request(directory: Path, request: RetrainRequest) -> Path:
    """Write the request as `RETRAIN_REQUEST_FILENAME` in `directory`, atomically (rename over any older one)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / RETRAIN_REQUEST_FILENAME
    atomic_write_text(target, json.dumps(asdict(request), indent=2, sort_keys=True) + "\n")
    return target


def new_retrain_request(*, model_name: str, model_uri: str, report: Mapping[str, Any]) -> RetrainRequest:
    """A request stamped now, with the report's message and drifted features."""
    return RetrainRequest(
        requested_at=datetime.now(UTC).isoformat(),
        model_name=model_name,
        model_uri=model_uri,
        reason=str(report.get("message", "drift detected")),
        drifted_features=list(report.get("drifted_features", [])),
    )


def training_arguments_from_card(model_dir: Path, *, model_name: str, dataset: str = "") -> dict[str, Any]:
    """The training pipeline parameters that retrain the model in `model_dir` on new data.

    From the card (`model.json`): `model_family`, `hyperparameters`, `label_column`, `task`, and every pipeline
    parameter a `training_parameters` field records; then `model_name`, and `dataset` (the new data) when given.

    Raises:
        RetrainConfigError: No readable card, or no dataset known (neither given nor recorded in the card).
    """
    card_path = model_dir / MODEL_CARD_FILENAME
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RetrainConfigError(f"cannot read the live model's card {card_path}: {error}") from None
    if not isinstance(card, dict):
        raise RetrainConfigError(f"{card_path} does not hold a JSON object")
    arguments: dict[str, Any] = {}
    for key in CARD_PARAMETER_KEYS:
        if isinstance(card.get(key), dict):
            arguments.update(card[key])
    arguments.update({parameter: card[field] for field, parameter in CARD_TRAINING_FIELDS.items() if field in card})
    arguments["model_name"] = model_name
    if dataset:
        arguments["dataset"] = dataset
    if not arguments.get("dataset"):
        raise RetrainConfigError(
            f"{card_path} does not record the training data; give the new labelled data with --retrain-dataset"
        )
    return arguments


_RUN_FLAGS = ("dataset", "label_column", "test_fraction", "seed", "task", "feature_types", "model_family",
              "hyperparameters", "min_accuracy", "gate_metric", "gate_threshold", "model_name")  # fmt: skip
"""Training parameters `pipeline.py run` takes as flags (`--label-column` for `label_column`, ...)."""


def local_training_command(
    arguments: Mapping[str, Any], *, pipeline_script: Path, root: Path | None = None, python: str = "python"
) -> list[str]:
    """The `pipeline.py run` command that trains with `arguments` (parameters it has no flag for are left out).

    Returns:
        The argv list; `shlex.join` of it is what a person would type.
    """
    command = [python, str(pipeline_script), "run"]
    if root is not None:
        command += ["--root", str(root)]
    for name in _RUN_FLAGS:
        if name in arguments:
            value = arguments[name]
            text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
            command += [f"--{name.replace('_', '-')}", text]
    return command


def describe_command(command: list[str]) -> str:
    """The command as a person would type it."""
    return shlex.join(command)


def trigger_retraining(
    *,
    endpoint: str,
    arguments: Mapping[str, Any],
    pipeline_package_path: str = "",
    pipeline_id: str = "",
    pipeline_version_id: str = "",
    experiment_name: str = "retraining",
    run_name: str = "",
    namespace: str = "",
    service_account: str = "",
) -> str:
    """Start a run of the training pipeline on a KFP backend through `components.submit.submit_pipeline`.

    Give either the id of a pipeline already uploaded to KFP (`kfp pipeline create`; the usual choice on a
    cluster, where the component image holds no YAML) or the compiled package.

    Args:
        endpoint: KFP API, e.g. `http://ml-pipeline.kubeflow:8888` from inside the cluster.
        arguments: Training pipeline parameters.
        pipeline_package_path: Compiled training pipeline YAML.
        pipeline_id: Uploaded pipeline id (used when set).
        pipeline_version_id: Version of `pipeline_id` (the newest when empty).
        experiment_name: Experiment the run goes into.
        run_name: Defaults to `retrain-<UTC time>`.
        namespace: Profile namespace on multi-user Kubeflow.
        service_account: Run service account (KFP sets it per run, not per task).

    Returns:
        The new run's id.

    Raises:
        RetrainTriggerError: Bad arguments, or the backend refused or could not be reached.
    """
    from components.submit import SubmitError, submit_pipeline

    if not endpoint:
        raise RetrainTriggerError("no KFP endpoint given: cannot start a training run (set kfp_endpoint)")
    if not pipeline_id and not pipeline_package_path:
        raise RetrainTriggerError("give pipeline_id (uploaded pipeline) or pipeline_package_path (compiled YAML)")
    if not pipeline_id and not Path(pipeline_package_path).is_file():
        raise RetrainTriggerError(f"training pipeline package {pipeline_package_path} not found")
    try:
        return submit_pipeline(
            None if pipeline_id else Path(pipeline_package_path),
            endpoint=endpoint,
            arguments=arguments,
            service_account=service_account or None,
            experiment=experiment_name,
            run_name=run_name or f"retrain-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
            namespace=namespace or None,
            pipeline_id=pipeline_id or None,
            pipeline_version_id=pipeline_version_id or None,
        )
    except SubmitError as error:
        raise RetrainTriggerError(f"could not start a training run on {endpoint}: {error}") from error
