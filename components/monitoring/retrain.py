"""What happens when the drift check says "drift": start retraining, fail loudly, or only report.

`decide_on_drift` is the policy, `write_retrain_request` leaves a durable marker (what `kfp.local` runs and
tests observe; `pipeline.py` can act on it), and `trigger_retraining` starts a run of the training pipeline
on a KFP backend through `kfp.Client`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from components.constants import (
    DRIFT_STATUS_DRIFT,
    DRIFT_STATUS_NOT_ENOUGH_DATA,
    DRIFT_STATUS_OK,
    ON_DRIFT_ACTIONS,
    RETRAIN_REQUEST_FILENAME,
)

ACTION_NONE = "none"


class DriftDetectedError(RuntimeError):
    """Raised by the monitoring pipeline with `on_drift="fail"`: the run fails and alerting picks it up."""


class RetrainTriggerError(RuntimeError):
    """The training run could not be started; the message says what to check."""


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


def write_retrain_request(directory: Path, request: RetrainRequest) -> Path:
    """Write the request as `RETRAIN_REQUEST_FILENAME` in `directory`, atomically (rename over any older one)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / RETRAIN_REQUEST_FILENAME
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".tmp-", suffix=".json", delete=False) as handle:
        json.dump(request.__dict__, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(handle.name, target)
    return target


def read_retrain_request(directory: Path) -> RetrainRequest | None:
    """The pending request in `directory`, or None (what `pipeline.py` checks before starting a training run)."""
    target = directory / RETRAIN_REQUEST_FILENAME
    if not target.is_file():
        return None
    return RetrainRequest(**json.loads(target.read_text(encoding="utf-8")))


def new_retrain_request(*, model_name: str, model_uri: str, report: Mapping[str, Any]) -> RetrainRequest:
    """A request stamped now, with the report's message and drifted features."""
    return RetrainRequest(
        requested_at=datetime.now(UTC).isoformat(),
        model_name=model_name,
        model_uri=model_uri,
        reason=str(report.get("message", "drift detected")),
        drifted_features=list(report.get("drifted_features", [])),
    )


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
    """Start a run of the training pipeline on a KFP backend and return its run id.

    Give either the compiled package (a file inside the component image, e.g. `pipeline.yaml`) or the id of a
    pipeline already uploaded to KFP (`kfp pipeline create`), which is the usual choice on a cluster.

    Args:
        endpoint: KFP API, e.g. `http://ml-pipeline.kubeflow:8888` from inside the cluster.
        arguments: Training pipeline parameters.
        pipeline_package_path: Compiled training pipeline YAML.
        pipeline_id: Uploaded pipeline id (used when set).
        pipeline_version_id: Version of `pipeline_id` (latest when empty).
        experiment_name: Experiment the run goes into.
        run_name: Defaults to `retrain-<UTC time>`.
        namespace: Profile namespace on multi-user Kubeflow.
        service_account: Run service account (KFP sets it per run, not per task).

    Returns:
        The new run's id.

    Raises:
        RetrainTriggerError: Bad arguments, or the backend refused or could not be reached.
    """
    import kfp

    if not endpoint:
        raise RetrainTriggerError("no KFP endpoint given: cannot start a training run (set kfp_endpoint)")
    if not pipeline_id and not pipeline_package_path:
        raise RetrainTriggerError("give pipeline_id (uploaded pipeline) or pipeline_package_path (compiled YAML)")
    if not pipeline_id and not Path(pipeline_package_path).is_file():
        raise RetrainTriggerError(f"training pipeline package {pipeline_package_path} not found")
    name = run_name or f"retrain-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    try:
        client = kfp.Client(host=endpoint, namespace=namespace or "kubeflow")
        if pipeline_id:
            experiment = client.create_experiment(experiment_name, namespace=namespace or None)
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id,
                job_name=name,
                params=dict(arguments),
                pipeline_id=pipeline_id,
                version_id=pipeline_version_id or None,
                service_account=service_account or None,
            )
        else:
            run = client.create_run_from_pipeline_package(
                pipeline_package_path,
                arguments=dict(arguments),
                run_name=name,
                experiment_name=experiment_name,
                namespace=namespace or None,
                service_account=service_account or None,
            )
    except Exception as error:  # kfp raises ApiException, urllib3 and connection errors alike
        raise RetrainTriggerError(f"could not start a training run on {endpoint}: {error}") from error
    return str(run.run_id)
