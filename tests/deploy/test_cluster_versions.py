"""Versions on the kubernetes target, through the real `kubernetes` client against the fake API over HTTP: the deploy
step records each version in a ConfigMap; promote and rollback patch the InferenceService back to a recorded
immutable storageUri and wait, smoke-test and restore exactly as deploy does."""

from __future__ import annotations

import json

import pytest

from components.constants import (
    ACTION_DEPLOY,
    ACTION_PROMOTE,
    ACTION_ROLLBACK,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    MODEL_DIGEST_ENV,
    MODEL_VERSION_ENV,
    VERSIONS_CONFIGMAP_KEY,
)
from components.deploy import cluster_versions, deploy_model
from components.deploy.cluster import DeployForbiddenError, ModelLoadFailedError
from components.deploy.cluster_versions import ClusterVersion, config_map_name
from components.deploy.inference_service import LINEAGE_ROLLOUT_ID, LINEAGE_RUN_ID, LINEAGE_RUN_NAME
from components.deploy.versions import NothingToRollBackError, UnknownVersionError, VersionError
from components.model_artifact import directory_digest, version_id
from components.versions_cli import main as models_main
from tests.fakes.fake_kube_api import FakeKubeApi, Outcome

CONFIG_MAP = config_map_name(DEFAULT_MODEL_NAME)
FAST = {"poll_interval_seconds": 0.01, "smoke_retry_interval_seconds": 0.01}


def artifact(run: str) -> str:
    """KFP's layout: <pipeline root>/<pipeline>/<run id>/<task>/<uuid>/<output>: one immutable directory per run."""
    return f"minio://mlpipeline/v2/artifacts/sklearn-kserve-training/{run}/train/5d0e1f3a/model"


def deploy_run(model_dir, run: str) -> None:
    deploy_model(
        "kubernetes",
        model_dir,
        model_uri=artifact(run),
        model_name=DEFAULT_MODEL_NAME,
        namespace=DEFAULT_NAMESPACE,
        local_store=model_dir.parent / "unused-store",
        run_id=run,
        run_name=f"training {run}",
        metrics={"accuracy": 0.95 if run == "run-a" else 0.97},
        timeout_seconds=30,
        poll_interval_seconds=0.01,
    )


def records(fake_api: FakeKubeApi) -> list[dict]:
    stored = fake_api.config_map(DEFAULT_NAMESPACE, CONFIG_MAP)
    assert stored is not None
    return [json.loads(line) for line in stored["data"][VERSIONS_CONFIGMAP_KEY].splitlines()]


def served(fake_api: FakeKubeApi) -> tuple[str, dict[str, str], dict[str, str]]:
    """storageUri, container env and annotations of the InferenceService as stored."""
    stored = fake_api.stored(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    model = stored["spec"]["predictor"]["model"]
    return model["storageUri"], {e["name"]: e["value"] for e in model["env"]}, stored["metadata"]["annotations"]


@pytest.fixture
def two_runs(kubeconfig, fake_api: FakeKubeApi, make_model_dir):
    """Run a deployed a logistic regression, then run b a random forest: b is live, a recorded before it."""
    dir_a, _ = make_model_dir(name="model-a")
    dir_b, _ = make_model_dir(family="random_forest", name="model-b")
    deploy_run(dir_a, "run-a")
    deploy_run(dir_b, "run-b")
    return {"run-a": version_id(directory_digest(dir_a)), "run-b": version_id(directory_digest(dir_b))}


def test_the_deploy_step_records_every_version_in_a_config_map(two_runs, fake_api: FakeKubeApi):
    history = records(fake_api)
    assert [(r["run_id"], r["action"]) for r in history] == [("run-a", ACTION_DEPLOY), ("run-b", ACTION_DEPLOY)]
    first = history[0]
    assert first["version"] == two_runs["run-a"] and first["digest"].startswith(f"sha256:{two_runs['run-a']}")
    assert first["storage_uri"] == artifact("run-a").replace("minio://", "s3://")
    assert first["metrics"] == {"accuracy": 0.95} and first["run_name"] == "training run-a"
    assert first["training_data_fingerprint"] and first["sklearn_version"] and first["model_sha256"]
    assert first["smoke_instances"] == [[0.0, 0.0, 0.0, 0.0]]
    assert first["annotations"][LINEAGE_RUN_ID] == "run-a" and LINEAGE_ROLLOUT_ID not in first["annotations"]
    config_map = fake_api.config_map(DEFAULT_NAMESPACE, CONFIG_MAP)
    assert config_map["metadata"]["labels"]["serving.kserve.io/inferenceservice"] == DEFAULT_MODEL_NAME

    summaries = cluster_versions.list_versions(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert [(s.version, s.state) for s in summaries] == [(two_runs["run-b"], "live"), (two_runs["run-a"], "previous")]
    live = cluster_versions.live_version(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)
    assert live is not None and (live.version, live.run_id) == (two_runs["run-b"], "run-b")
    assert live.storage_uri == artifact("run-b").replace("minio://", "s3://") and live.metrics == {"accuracy": 0.97}
    assert cluster_versions.live_version(DEFAULT_NAMESPACE, "no-such-model") is None


def test_rollback_patches_back_to_the_earlier_storage_uri_waits_smoke_tests_and_records(
    two_runs, fake_api: FakeKubeApi, api_client, predictor
):
    uri_b, _, annotations_b = served(fake_api)
    fake_api.controller = lambda obj: Outcome("ready", after_reads=3)
    seen_at_smoke: list[list[str]] = []
    deployment = f"{DEFAULT_MODEL_NAME}-predictor"
    predictor.on_call = lambda: seen_at_smoke.append(
        [p["metadata"]["annotations"][LINEAGE_RUN_ID] for p in fake_api.pods(DEFAULT_NAMESPACE, deployment)]
    )
    calls_before = predictor.calls

    record, changed = cluster_versions.rollback(
        DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, api_client=api_client, smoke_base_url=predictor.base_url, **FAST
    )

    assert changed and record.version == two_runs["run-a"] and record.action == ACTION_ROLLBACK
    uri, env, annotations = served(fake_api)
    assert uri == artifact("run-a").replace("minio://", "s3://") != uri_b
    assert env[MODEL_DIGEST_ENV] == record.digest and env[MODEL_VERSION_ENV] == two_runs["run-a"]
    assert (annotations[LINEAGE_RUN_ID], annotations[LINEAGE_RUN_NAME]) == ("run-a", "training run-a")
    assert annotations[LINEAGE_ROLLOUT_ID] != annotations_b[LINEAGE_ROLLOUT_ID]
    # Smoke-tested as deploy does: once, after every pod behind the Service ran the rolled-back model.
    assert predictor.calls > calls_before and all(pods == ["run-a"] for pods in seen_at_smoke)
    assert [(r["run_id"], r["action"]) for r in records(fake_api)][-1] == ("run-a", ACTION_ROLLBACK)
    states = {s.version: s.state for s in cluster_versions.list_versions(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME)}
    assert states == {two_runs["run-a"]: "live", two_runs["run-b"]: "rolled-back"}

    patches = len([m for m in fake_api.methods() if m == "PATCH"])
    with pytest.raises(NothingToRollBackError, match="rolled back already: " + two_runs["run-b"]):
        cluster_versions.rollback(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, api_client=api_client, **FAST)
    assert len([m for m in fake_api.methods() if m == "PATCH"]) == patches  # refused before any write

    record, changed = cluster_versions.promote(
        DEFAULT_NAMESPACE,
        DEFAULT_MODEL_NAME,
        two_runs["run-b"][:5],
        api_client=api_client,
        smoke_base_url=predictor.base_url,
        **FAST,
    )
    assert changed and record.action == ACTION_PROMOTE and served(fake_api)[0] == uri_b
    assert served(fake_api)[2][LINEAGE_RUN_ID] == "run-b"
    assert [r["action"] for r in records(fake_api)] == [ACTION_DEPLOY, ACTION_DEPLOY, ACTION_ROLLBACK, ACTION_PROMOTE]


def test_a_rollback_whose_pods_fail_restores_the_live_version_and_records_nothing(
    two_runs, fake_api: FakeKubeApi, api_client, predictor
):
    uri_b, env_b, _ = served(fake_api)
    old_uri = artifact("run-a").replace("minio://", "s3://")
    # The bucket lost run a's artifact: the storage-initializer of the rolled-back pods cannot fetch it.
    fake_api.controller = lambda obj: (
        Outcome("fail", after_reads=1, message="NoSuchKey")
        if obj["spec"]["predictor"]["model"]["storageUri"] == old_uri
        else Outcome("ready", after_reads=1)
    )
    before = records(fake_api)

    with pytest.raises(ModelLoadFailedError, match=r"NoSuchKey.*rolled back: restored the previous spec") as caught:
        cluster_versions.rollback(
            DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, api_client=api_client, smoke_base_url=predictor.base_url, **FAST
        )
    assert caught.value.rolled_back
    uri, env, _ = served(fake_api)
    assert (uri, env) == (uri_b, env_b)
    assert records(fake_api) == before


def test_a_deploy_that_fails_is_recorded_as_failed_and_is_no_rollback_target(
    kubeconfig, fake_api: FakeKubeApi, make_model_dir, api_client
):
    dir_a, _ = make_model_dir(name="model-a")
    deploy_run(dir_a, "run-a")
    fake_api.controller = lambda obj: Outcome("crash", after_reads=1, message="cannot load the model")
    dir_b, _ = make_model_dir(family="random_forest", name="model-b")
    with pytest.raises(ModelLoadFailedError, match="rolled back"):
        deploy_run(dir_b, "run-b")

    assert [(r["run_id"], r["action"]) for r in records(fake_api)] == [("run-a", ACTION_DEPLOY), ("run-b", "failed")]
    summaries = cluster_versions.list_versions(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, api_client=api_client)
    assert [(s.record.run_id, s.state) for s in summaries] == [("run-b", "failed"), ("run-a", "live")]
    with pytest.raises(NothingToRollBackError):
        cluster_versions.rollback(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, api_client=api_client)


def test_promote_names_unknown_versions_and_a_missing_inference_service(two_runs, api_client):
    with pytest.raises(UnknownVersionError, match=f"unknown version 'feedface' of {DEFAULT_MODEL_NAME}; recorded"):
        cluster_versions.promote(DEFAULT_NAMESPACE, DEFAULT_MODEL_NAME, "feedface", api_client=api_client)
    with pytest.raises(VersionError, match="no InferenceService kserve-models/other: nothing is deployed"):
        cluster_versions.promote(DEFAULT_NAMESPACE, "other", two_runs["run-a"], api_client=api_client)


def test_concurrent_writers_of_the_record_both_keep_their_line(kubeconfig, fake_api: FakeKubeApi, make_model_dir):
    """Another deploy writes the ConfigMap between this one's read and write: a real 409, read again, append."""
    dir_a, _ = make_model_dir(name="model-a")
    deploy_run(dir_a, "run-a")
    other = ClusterVersion.from_line(json.dumps({**records(fake_api)[0], "run_id": "other-writer"}))
    raced: list[bool] = []

    def another_writer() -> None:
        if not raced:
            raced.append(True)
            existing = fake_api.config_map(DEFAULT_NAMESPACE, CONFIG_MAP)["data"][VERSIONS_CONFIGMAP_KEY]
            fake_api.put_config_map(
                DEFAULT_NAMESPACE, CONFIG_MAP, {VERSIONS_CONFIGMAP_KEY: existing + other.to_line() + "\n"}
            )

    fake_api.before_config_map_write = another_writer
    dir_b, _ = make_model_dir(family="random_forest", name="model-b")
    deploy_run(dir_b, "run-b")

    assert [r["run_id"] for r in records(fake_api)] == ["run-a", "other-writer", "run-b"]
    conflicts = [r for r in fake_api.requests if r[0] == "PUT" and "configmaps" in r[1]]
    assert len(conflicts) == 2  # the stale write, then the one after reading again


def test_the_record_keeps_its_newest_lines_within_the_config_map_limit(kubeconfig, fake_api, make_model_dir):
    dir_a, _ = make_model_dir(name="model-a")
    deploy_run(dir_a, "run-a")
    line = json.dumps({**records(fake_api)[0], "run_name": "x" * 4000})
    fake_api.put_config_map(DEFAULT_NAMESPACE, CONFIG_MAP, {VERSIONS_CONFIGMAP_KEY: (line + "\n") * 300})  # 1.2 MB

    deploy_run(dir_a, "run-c")

    kept = records(fake_api)
    assert kept[-1]["run_id"] == "run-c" and 100 < len(kept) < 300
    assert len(fake_api.config_map(DEFAULT_NAMESPACE, CONFIG_MAP)["data"][VERSIONS_CONFIGMAP_KEY]) <= 512 * 1024


def test_without_the_config_map_rule_the_deploy_step_names_it(kubeconfig, fake_api: FakeKubeApi, model_dir):
    fake_api.rbac = {k: v for k, v in fake_api.rbac.items() if k != "configmaps"}
    with pytest.raises(DeployForbiddenError, match="may not get configmaps in namespace kserve-models") as caught:
        deploy_run(model_dir, "run-a")
    assert str(caught.value).startswith(f"kserve-models/{DEFAULT_MODEL_NAME} now serves version ")
    assert "kubectl auth can-i get configmaps -n kserve-models" in str(caught.value)


def test_models_command_on_the_kubernetes_target(two_runs, fake_api: FakeKubeApi, predictor, capsys):
    common = ["--target", "kubernetes", "--namespace", DEFAULT_NAMESPACE]
    assert models_main(["models", "list", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"{DEFAULT_MODEL_NAME} (InferenceService {DEFAULT_NAMESPACE}/{DEFAULT_MODEL_NAME}): 2 versions"
    )
    live = next(line for line in out.splitlines() if line.startswith("*"))
    assert two_runs["run-b"] in live and "training run-b" in live

    assert models_main(["models", "rollback", *common, "--smoke-url", predictor.base_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{DEFAULT_MODEL_NAME}: rolled back to version {two_runs['run-a']} (s3://mlpipeline/")
    assert served(fake_api)[1][MODEL_VERSION_ENV] == two_runs["run-a"]

    assert models_main(["models", "promote", "0000aaaa", *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pipeline.py models promote: unknown version '0000aaaa'") and err.count("\n") == 1
