"""MLflow tracking and registry, optional: nothing here imports MLflow until a tracking URI is given.

A training run with `mlflow_tracking_uri` set logs one MLflow run per pipeline run (parameters, metrics, every
search candidate, the model directory), registers the model directory as a new version of the registered model
named like the deployed model, and tags that version with the model directory's digest. A deploy, a promotion or
a rollback then moves the registry alias `champion` to the version holding the live digest, so the registry
agrees with what serves.

Install the client with the extra: `pip install '.[mlflow]'` (mlflow-skinny). Any tracking URI MLflow's client
takes works: `http(s)://` (a tracking server; on a cluster, the server's Service), `sqlite:///path.db` (no server;
needs SQLAlchemy, see README) or a local directory. Only `MlflowClient` is used, never the fluent API's global state,
so two calls with different URIs in one process do not mix.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CHAMPION_ALIAS = "champion"
"""The registry alias that names the live version (MLflow's own term for the serving model)."""
DIGEST_TAG = "model_digest"
"""Model version tag: the directory digest (`sha256:...`), how a version of ours is found again."""
MODEL_ARTIFACT_PATH = "model"
"""Where the model directory goes inside the run's artifacts (and what the registered version points at)."""
CANDIDATES_ARTIFACT = "candidates.json"
_MAX_PARAM_LENGTH = 6000
_SQLITE_PREFIX = "sqlite:///"
"""MLflow refuses longer parameter values (MAX_PARAM_VAL_LENGTH in mlflow.utils.validation, 3.x)."""


class TrackingError(RuntimeError):
    """MLflow is missing or refused a call; one line says which and how to fix it."""


def _client(tracking_uri: str) -> Any:
    if not tracking_uri.strip():
        raise TrackingError("no MLflow tracking URI given")
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise TrackingError(
            "an MLflow tracking URI was given but MLflow is not installed: pip install '.[mlflow]'"
        ) from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def _artifact_location(tracking_uri: str) -> str | None:
    """Beside the database for a server-less `sqlite:///` URI; None lets a server choose (its artifact proxy).

    MLflow's own default for a database URI is `./mlruns` in whatever directory the step runs in.
    """
    if not tracking_uri.startswith(_SQLITE_PREFIX):
        return None
    database = Path(tracking_uri[len(_SQLITE_PREFIX) :]).resolve()
    return (database.parent / f"{database.stem}-artifacts").as_uri()


def _experiment_id(client: Any, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=_artifact_location(tracking_uri)))
    except MlflowException:  # another run created it between the two calls
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_training_run(
    tracking_uri: str,
    *,
    model_name: str,
    run_name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    candidates: Sequence[Mapping[str, Any]],
    model_dir: Path,
    digest: str = "",
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one training run and register its model directory as a new version of `model_name`.

    Args:
        tracking_uri: The MLflow tracking (and registry) URI.
        model_name: Experiment and registered model name (the deployed model's name).
        run_name: The MLflow run's name (the KFP run's display name).
        params: Pipeline parameters; non-string values are logged as JSON.
        metrics: Evaluation metrics; values that are not finite numbers (None, NaN) are skipped.
        candidates: The search candidates' scores (`search.cross_validate_candidate` results): logged as
            `candidates.json` and as metrics `candidate_mean`/`candidate_std` with the candidate id as step.
        model_dir: The model directory (model.joblib, model.json, ...), logged under `model/`.
        digest: The model directory digest, tagged on the version (what `set_champion_alias` finds it by).
        tags: Extra run tags (e.g. the KFP run id).

    Returns:
        The registered model version (MLflow numbers them "1", "2", ...).

    Raises:
        TrackingError: MLflow missing, unreachable, or refusing a call.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        run = client.create_run(
            _experiment_id(client, model_name, tracking_uri), run_name=run_name or None, tags=dict(tags or {})
        )
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        try:
            client.log_batch(
                run_id,
                params=[Param(str(k), _param_value(v)) for k, v in sorted(params.items())],
                metrics=[Metric(str(k), v, now, 0) for k, v in sorted(_numbers(metrics).items())],
                tags=[RunTag("model_digest", digest)] if digest else [],
            )
            scored: list[Any] = []
            for candidate in candidates:
                step = int(candidate.get("candidate_id", len(scored)))
                for key, value in _numbers({k: candidate.get(k) for k in ("mean", "std")}).items():
                    scored.append(Metric(f"candidate_{key}", value, now, step))
            if scored:
                client.log_batch(run_id, metrics=scored)
            client.log_text(run_id, json.dumps(list(candidates), indent=2, default=str), CANDIDATES_ARTIFACT)
            client.log_artifacts(run_id, str(model_dir), artifact_path=MODEL_ARTIFACT_PATH)
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id, "FINISHED")
        try:
            client.create_registered_model(model_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        version = client.create_model_version(
            model_name,
            source=f"{run.info.artifact_uri}/{MODEL_ARTIFACT_PATH}",
            run_id=run_id,
            tags={DIGEST_TAG: digest} if digest else None,
        )
    except MlflowException as exc:
        raise TrackingError(f"MLflow at {tracking_uri} refused the run of {model_name}: {_first_line(exc)}") from exc
    return str(version.version)


def set_champion_alias(tracking_uri: str, *, model_name: str, version: str) -> None:
    """Point the registry alias `champion` of `model_name` at `version` (after a deploy, promotion or rollback).

    Raises:
        TrackingError: MLflow missing, unreachable, or no such version.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, str(version))
    except MlflowException as exc:
        raise TrackingError(
            f"MLflow at {tracking_uri} could not set {model_name}@{CHAMPION_ALIAS} to version {version}: "
            f"{_first_line(exc)}"
        ) from exc


def version_for_digest(tracking_uri: str, *, model_name: str, digest: str) -> str | None:
    """The newest registered version of `model_name` tagged with `digest`, or None when there is none."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        found = client.search_model_versions(f"name = '{_quoted(model_name)}' and tag.{DIGEST_TAG} = '{digest}'")
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise TrackingError(f"MLflow at {tracking_uri} could not search {model_name}: {_first_line(exc)}") from exc
    versions = sorted((int(v.version) for v in found), reverse=True)
    return str(versions[0]) if versions else None


def champion_for_digest(tracking_uri: str, *, model_name: str, digest: str) -> str | None:
    """Move `champion` to the version holding `digest` (promote, rollback); returns it, or None if none has it."""
    version = version_for_digest(tracking_uri, model_name=model_name, digest=digest)
    if version is not None:
        set_champion_alias(tracking_uri, model_name=model_name, version=version)
    return version


def _numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among `values` (MLflow stores numbers only; a missing champion score is None, NaN, ...)."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        if math.isfinite(number):
            kept[str(key)] = number
    return kept


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
