"""Champion vs challenger: find the live model through the deploy lineage, score both on the same rows, decide.

The champion is what serves now: the local store's live version (its pointer, `deploy.local_store.current`), or
the model the InferenceService's stable predictor serves on the cluster (its `storageUri`, read from KFP's object
store, and its digest pin `MODEL_DIGEST`, both written by the deploy step). It is loaded with the same integrity
checks as every loader (`model_artifact.load_model_files`: per-file sha256s and the pinned directory digest, before
anything is unpickled).

Decision rules, each said in the decision's `reason`:
- no champion (nothing deployed yet, or nothing this step can read and verify as ours): deploy;
- a champion that is not comparable (other task, label, feature names, kinds or missing-value rules, or pickled by
  another scikit-learn than this image has): deploy, because the absolute gate already passed and the two models
  answer different questions (or cannot both be loaded here);
- otherwise both are scored on the same held-out rows with the same metric, and the challenger deploys only if it
  is at least `min_improvement` better in the metric's direction (`challenger >= champion + min_improvement` for a
  higher-is-better metric, as MLflow's `MetricThreshold.min_absolute_change`); a tie deploys when it is 0.
A champion that fails its integrity check is not a decision but an error: the run stops, nothing is unpickled, and
a human looks at the store.
"""

from __future__ import annotations

import io
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.constants import (
    DEFAULT_MIN_IMPROVEMENT,
    DEPLOY_TARGET_KUBERNETES,
    DEPLOY_TARGET_LOCAL,
    DEPLOY_TARGETS,
    METRIC_CHALLENGER_SCORE,
    METRIC_CHAMPION_DEPLOY,
    METRIC_CHAMPION_SCORE,
    MODEL_DIGEST_ENV,
    MODEL_FILENAME,
)
from components.model_artifact import ModelCard, ModelFiles, ModelIntegrityError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.fs as pafs

    from components.features import FeatureSchema

READABLE_STORAGE_SCHEMES = ("s3",)
"""Where this step can read a live model from on the cluster: KFP's object store (the deploy step writes s3://)."""
MAX_REMOTE_MODEL_FILES = 16
"""A model directory holds a handful of files; more is not one of ours and is not downloaded."""


class ChampionError(RuntimeError):
    """The live model could not be looked up (API access, object store); the message says what to fix."""


class ChampionIntegrityError(ChampionError):
    """The live model failed its integrity check; nothing of it was unpickled."""


@dataclass(frozen=True)
class ChampionModel:
    """The live model, verified and loaded."""

    estimator: Any
    card: ModelCard
    digest: str
    """`sha256:<hex>` of the model directory, as the deploy pinned it."""
    version: str
    """The version id (first 12 hex digits of the digest)."""
    source: str
    """Where it was found, for messages: the store's version folder or the InferenceService and its storageUri."""
    run_id: str = ""
    run_name: str = ""


@dataclass(frozen=True)
class ChampionLookup:
    """The result of `find_champion`: the champion, or None and why there is none."""

    champion: ChampionModel | None
    reason: str
    """Which model is live (when found) or why there is no comparable champion."""


@dataclass(frozen=True)
class ChampionDecision:
    """Whether the challenger replaces the live model, and why."""

    deploy: bool
    reason: str
    metric: str
    challenger_score: float
    champion_score: float | None
    """None when there was no comparable champion to score."""
    min_improvement: float
    champion_version: str = ""
    """The live version compared with (or found but not comparable); empty when there is none."""

    def metrics(self) -> dict[str, float]:
        """Scalars for KFP's `Metrics` (the champion's score only when there was one)."""
        values = {METRIC_CHALLENGER_SCORE: self.challenger_score, METRIC_CHAMPION_DEPLOY: float(self.deploy)}
        if self.champion_score is not None:
            values[METRIC_CHAMPION_SCORE] = self.champion_score
        return values


def render_champion_report(decision: ChampionDecision) -> str:
    """The decision as Markdown for KFP's viewer: both scores, the threshold, the decision and its reason."""
    champion = f"{decision.champion_score:.4f}" if decision.champion_score is not None else "n/a"
    live = f" {decision.champion_version}" if decision.champion_version else ""
    lines = [
        "# Champion vs challenger",
        "",
        f"| model | {decision.metric} |",
        "| --- | --- |",
        f"| challenger (this run) | {decision.challenger_score:.4f} |",
        f"| champion (live{live}) | {champion} |",
        "",
        f"min_improvement: {decision.min_improvement:g}",
        "",
        f"**Decision:** {'deploy' if decision.deploy else 'keep the live model'}: {decision.reason}",
    ]
    return "\n".join(lines) + "\n"


def check_min_improvement(min_improvement: float) -> float:
    """Return `min_improvement` as a float if it is a finite number >= 0 (pre-flight calls this too).

    Raises:
        ValueError: One line naming the parameter.
    """
    if isinstance(min_improvement, bool) or not isinstance(min_improvement, int | float):
        raise ValueError(f"min_improvement must be a number, not {min_improvement!r}")
    value = float(min_improvement)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"min_improvement must be a finite number of at least 0 (the metric's units), not {min_improvement!r}"
        )
    return value


# --- finding the champion -------------------------------------------------------------------------------


def find_champion(
    *,
    deploy_target: str,
    model_name: str,
    local_store: Path | str = "",
    namespace: str = "",
    api_client: Any = None,
    s3_endpoint: str = "",
    filesystem: pafs.FileSystem | None = None,
) -> ChampionLookup:
    """Find, verify and load the model that serves `model_name` now.

    Args:
        deploy_target: `local` or `kubernetes`, as the deploy step's.
        model_name: The model (and InferenceService) name.
        local_store: Root of the local model store (local target).
        namespace: Namespace of the InferenceService (kubernetes target).
        api_client: A `kubernetes.client.ApiClient` (kubernetes target; None: in-cluster config, else kubeconfig).
            The step only needs `get` on `inferenceservices`.
        s3_endpoint: KFP's object store, e.g. `http://seaweedfs.kubeflow:9000` (kubernetes target): the live
            model's `s3://` directory is read with `components.object_store` (credentials from `AWS_ACCESS_KEY_ID` /
            `AWS_SECRET_ACCESS_KEY`, e.g. KFP's Secret `mlpipeline-minio-artifact` mapped into the step's env).
        filesystem: A ready pyarrow filesystem in which `s3://bucket/key` is the path `bucket/key`; it wins over
            `s3_endpoint` (tests pass a local folder laid out like the bucket).

    Returns:
        The champion, or None with the reason.

    Raises:
        ChampionIntegrityError: The live model's files do not match their pin or their card.
        ChampionError: The Kubernetes API or the object store could not be read (RBAC, network, credentials).
    """
    from components.names import check_model_name

    check_model_name(model_name)
    if deploy_target == DEPLOY_TARGET_LOCAL:
        return _local_champion(Path(local_store), model_name)
    if deploy_target == DEPLOY_TARGET_KUBERNETES:
        return _cluster_champion(model_name, namespace, api_client, filesystem, s3_endpoint)
    raise ValueError(f"unknown deploy_target '{deploy_target}'; choose one of: {', '.join(DEPLOY_TARGETS)}")


def _local_champion(store_root: Path, model_name: str) -> ChampionLookup:
    from components.deploy.local_store import LocalStoreError, NothingDeployedError, current

    try:
        live = current(store_root, model_name)
    except NothingDeployedError:
        return ChampionLookup(None, f"no version of '{model_name}' is live in the local store {store_root}")
    except LocalStoreError as exc:
        # The deploy step writes a fresh pointer, so a damaged one must not block the run; it is said.
        return ChampionLookup(None, f"the local store's pointer cannot be read ({exc})")
    source = f"local store version {live.version} ({live.model_dir})"
    return _load(
        lambda: _read_files(Path(live.model_dir), live.digest, source),
        source=source,
        run_id=live.run_id,
        run_name=live.run_name,
    )


def _read_files(directory: Path, digest: str | None, source: str) -> ModelFiles:
    from components.model_artifact import load_model_files

    try:
        return load_model_files(directory, expected_digest=digest)
    except ModelIntegrityError as exc:
        raise ChampionIntegrityError(
            f"the live model ({source}) fails its integrity check, so it was not loaded: {exc}. Investigate who "
            "changed it; then promote or roll back to a verified version (`python pipeline.py models`)"
        ) from None


def _other_sklearn(source: str, version: str) -> str:
    import sklearn

    return (
        f"the live model ({source}) was pickled by scikit-learn {version} and this image has {sklearn.__version__}: "
        "it is not unpickled here, so it cannot be compared"
    )


def _load(read: Any, *, source: str, run_id: str, run_name: str) -> ChampionLookup:
    """Verify (via `read`), check the scikit-learn version, then unpickle the very bytes that were verified."""
    import joblib
    import sklearn

    from components.model_artifact import version_id

    files: ModelFiles = read()
    if files.card.sklearn_version != sklearn.__version__:
        return ChampionLookup(None, _other_sklearn(source, files.card.sklearn_version))
    estimator = joblib.load(io.BytesIO(files.contents[MODEL_FILENAME]))
    champion = ChampionModel(
        estimator=estimator,
        card=files.card,
        digest=files.digest,
        version=version_id(files.digest),
        source=source,
        run_id=run_id,
        run_name=run_name,
    )
    run = f", from run {run_name or run_id}" if run_id or run_name else ""
    return ChampionLookup(champion, f"the live model is {source}{run}")


def _cluster_champion(
    model_name: str, namespace: str, api_client: Any, filesystem: Any, s3_endpoint: str
) -> ChampionLookup:
    import sklearn

    from components.deploy.cluster import DeployError
    from components.deploy.cluster_versions import live_version
    from components.object_store import open_filesystem

    where = f"InferenceService {namespace}/{model_name}"
    try:
        live = live_version(namespace, model_name, api_client=api_client)
    except DeployError as exc:  # RBAC (the message names the Role to apply) or an unreachable API server
        raise ChampionError(f"cannot look up the live model: {exc}") from None
    if live is None:
        return ChampionLookup(
            None, f"there is no {where} carrying the {MODEL_DIGEST_ENV} pin this pipeline's deploy writes"
        )
    source = f"{where} version {live.version} ({live.storage_uri})"
    if live.sklearn_version and live.sklearn_version != sklearn.__version__:
        return ChampionLookup(None, _other_sklearn(source, live.sklearn_version))
    scheme = live.storage_uri.partition("://")[0]
    if scheme not in READABLE_STORAGE_SCHEMES:
        return ChampionLookup(
            None,
            f"{where} serves {live.storage_uri or 'no storageUri'}; this step reads live models only from KFP's "
            f"object store ({', '.join(s + '://' for s in READABLE_STORAGE_SCHEMES)}), so it cannot be compared",
        )
    path = live.storage_uri.partition("://")[2]  # `bucket/key`, as S3FileSystem names objects
    if filesystem is None and s3_endpoint:
        filesystem, path = open_filesystem(live.storage_uri, s3_endpoint=s3_endpoint)
    if filesystem is None:
        raise ChampionError(
            f"the live model of {where} is at {live.storage_uri}; reading it needs the object store's endpoint "
            "(s3_endpoint, e.g. http://seaweedfs.kubeflow:9000) and its credentials (AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY)"
        )
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        local = Path(scratch) / "model"
        _download(filesystem, path.rstrip("/"), local, source)
        return _load(
            lambda: _read_files(local, live.digest, source), source=source, run_id=live.run_id, run_name=live.run_name
        )


def _download(filesystem: Any, path: str, target: Path, source: str) -> None:
    """Copy the model directory's regular files from the object store into `target` (no sub-directories)."""
    import pyarrow.fs as pafs

    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise ChampionError(f"could not list the live model's directory ({source}): {exc}") from None
    if not infos:
        raise ChampionIntegrityError(f"the live model's directory ({source}) is empty or missing in the object store")
    if len(infos) > MAX_REMOTE_MODEL_FILES or any(info.type != pafs.FileType.File for info in infos):
        raise ChampionIntegrityError(
            f"the live model's directory ({source}) is not a model directory (sub-folders or more than "
            f"{MAX_REMOTE_MODEL_FILES} entries)"
        )
    target.mkdir()
    for info in infos:
        try:
            with filesystem.open_input_stream(info.path) as stream:
                (target / info.base_name).write_bytes(stream.read())
        except OSError as exc:
            raise ChampionError(f"could not read {info.base_name} of the live model ({source}): {exc}") from None


# --- deciding ---------------------------------------------------------------------------------------------


def schema_difference(card: ModelCard, schema: FeatureSchema) -> str:
    """Why the champion's card and the challenger's schema describe different problems ("" when they do not).

    Categories may differ (a newly seen category is encoded as unknown by the champion); names, order, kinds,
    the task, the label and whether a feature may be missing may not.
    """
    if card.task != schema.task:
        return f"the live model does {card.task}, this run does {schema.task}"
    if card.label_column != schema.label_column:
        return f"the live model predicts '{card.label_column}', this run predicts '{schema.label_column}'"
    live = [(f.name, f.kind) for f in card.features]
    new = [(f.name, f.kind) for f in schema.features]
    if live != new:
        return f"the features differ: live {_features(live)}, this run {_features(new)}"
    gained = [f.name for f, old in zip(schema.features, card.features, strict=True) if f.nullable and not old.nullable]
    if gained:
        return (
            f"feature(s) {', '.join(gained[:5])} may now be missing; the live model was trained without missing values"
        )
    return ""


def _features(pairs: Sequence[tuple[str, str]]) -> str:
    text = ", ".join(f"{name}:{kind}" for name, kind in pairs[:6])
    return f"[{text}{', ...' if len(pairs) > 6 else ''}] ({len(pairs)})"


def compare_with_champion(
    challenger_dir: Path,
    champion: ChampionLookup,
    test_frame: pd.DataFrame,
    schema: FeatureSchema,
    *,
    metric: str,
    min_improvement: float = DEFAULT_MIN_IMPROVEMENT,
    challenger_digest: str | None = None,
) -> ChampionDecision:
    """Score the challenger and the champion on the same held-out rows and decide whether the challenger deploys.

    Args:
        challenger_dir: This run's model directory (verified before it is unpickled).
        champion: What `find_champion` returned.
        test_frame: The held-out rows (this run's test split) both models are scored on.
        schema: This run's feature schema.
        metric: A key of `components.evaluate.GATE_METRICS` (its direction decides what "better" is).
        min_improvement: How much better, in the metric's units, the challenger must be (>= 0).
        challenger_digest: The digest train recorded for `challenger_dir` (None: checked against its card only).

    Returns:
        The decision, with both scores and a reason a run's reader understands.
    """
    from components.evaluate import GATE_METRICS, score
    from components.features import feature_matrix
    from components.model_artifact import load_verified

    if metric not in GATE_METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(GATE_METRICS)}")
    threshold = check_min_improvement(min_improvement)
    estimator, files = load_verified(challenger_dir, expected_digest=challenger_digest)
    x = feature_matrix(test_frame, schema)
    y = test_frame[schema.label_column].to_numpy()
    challenger_score = float(score(estimator, x, y, metric=metric, task=schema.task))

    def decided(deploy: bool, reason: str, champion_score: float | None = None, version: str = "") -> ChampionDecision:
        return ChampionDecision(deploy, reason, metric, challenger_score, champion_score, threshold, version)

    live = champion.champion
    mine = f"challenger {metric} {challenger_score:.4f}"
    if live is None:
        return decided(True, f"no champion to compare with ({champion.reason}); {mine}")
    if live.digest == files.digest:
        return decided(True, f"the challenger is the live version {live.version} itself; {mine}", version=live.version)
    difference = schema_difference(live.card, schema)
    if difference:
        return decided(
            True, f"the champion (version {live.version}) is not comparable: {difference}; {mine}", version=live.version
        )
    champion_score = float(score(live.estimator, x, y, metric=metric, task=schema.task))
    higher = GATE_METRICS[metric] == "higher"
    improvement = challenger_score - champion_score if higher else champion_score - challenger_score
    deploy = improvement >= threshold
    verdict = ">=" if deploy else "<"
    action = "deploy" if deploy else "keep the live model"
    return decided(
        deploy,
        f"{mine} vs champion {champion_score:.4f} (version {live.version}, {len(y)} held-out rows): improvement "
        f"{improvement:+.4f} {verdict} min_improvement {threshold:g}: {action}",
        champion_score,
        live.version,
    )
