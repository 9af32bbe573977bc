"""Champion vs challenger: the live model found through the deploy lineage, verified, scored on the same rows.

Local target: real model directories published to a real local store. Kubernetes target: the InferenceService is
created through the real `kubernetes` client on the fake Kubernetes API over HTTP (tests/fakes/fake_kube_api.py);
its `storageUri` is an `s3://` URI whose bucket is a local folder, read either through pyarrow's own S3 client
(`components.object_store`) from a fake S3 server over HTTP (tests/fakes/fake_s3.py), or as a local pyarrow
filesystem laid out like the bucket.
"""

from __future__ import annotations

import pickle
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.champion import (
    ChampionError,
    ChampionIntegrityError,
    ChampionLookup,
    check_min_improvement,
    compare_with_champion,
    find_champion,
    render_champion_report,
)
from components.constants import (
    DEFAULT_NAMESPACE,
    METRIC_CHALLENGER_SCORE,
    METRIC_CHAMPION_DEPLOY,
    METRIC_CHAMPION_SCORE,
    MODEL_DIGEST_ENV,
    MODEL_FILENAME,
    MODEL_VERSION_ENV,
)
from components.features import FeatureSchema, feature_matrix, infer_feature_schema
from components.model_artifact import directory_digest, save_model, version_id
from tests.fakes.fake_kube_api import FakeKubeApi
from tests.fakes.fake_s3 import FakeS3

MODEL = "sklearn-iris"
LABEL = "target"
ARTIFACT = "mlpipeline/v2/artifacts/training/run-1/train/model"


@pytest.fixture(scope="module")
def iris_split() -> tuple[pd.DataFrame, pd.DataFrame, FeatureSchema]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    frame = load_iris(as_frame=True).frame
    train, test = train_test_split(frame, test_size=0.3, stratify=frame[LABEL], random_state=0)
    return train, test, infer_feature_schema(train, label_column=LABEL)


def good_model() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))


def weak_model() -> Any:
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=1, random_state=0)  # a stump: separates one class of three


def save(directory: Path, estimator: Any, train: pd.DataFrame, schema: FeatureSchema) -> Path:
    """Fit `estimator` on `train` as the train step would (the `feature_matrix` input) and write a model dir."""
    estimator.fit(feature_matrix(train, schema), train[schema.label_column].to_numpy())
    save_model(
        directory,
        estimator,
        feature_names=schema.names,
        class_names=[str(c) for c in getattr(estimator, "classes_", [])],
        model_family="ridge" if schema.task == "regression" else "logistic_regression",
        hyperparameters={},
        training_data_fingerprint="0" * 64,
        label_column=schema.label_column,
        task=schema.task,
        features=schema.features,
    )
    return directory


def publish(directory: Path, store: Path) -> str:
    from components.deploy.local_store import publish as store_publish

    return store_publish(directory, store, model_name=MODEL, run_id="run-0", run_name="first").version


def decide(challenger: Path, lookup: ChampionLookup, test: pd.DataFrame, schema: FeatureSchema, **kw: Any):
    return compare_with_champion(challenger, lookup, test, schema, metric="accuracy", **kw)


# --- local target -----------------------------------------------------------------------------------------


def test_a_better_champion_keeps_its_place(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    publish(save(tmp_path / "champion", good_model(), train, schema), tmp_path / "store")
    challenger = save(tmp_path / "challenger", weak_model(), train, schema)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = decide(challenger, lookup, test, schema)

    assert lookup.champion is not None and "run first" in lookup.reason
    assert decision.champion_score is not None and decision.champion_score > decision.challenger_score
    assert not decision.deploy
    assert "keep the live model" in decision.reason and f"{len(test)} held-out rows" in decision.reason
    assert decision.metrics()[METRIC_CHAMPION_DEPLOY] == 0.0
    assert decision.metrics()[METRIC_CHAMPION_SCORE] == decision.champion_score


def test_a_better_challenger_is_deployed(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    live = publish(save(tmp_path / "champion", weak_model(), train, schema), tmp_path / "store")
    challenger = save(tmp_path / "challenger", good_model(), train, schema)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = decide(challenger, lookup, test, schema)

    assert decision.deploy and decision.champion_version == live
    assert decision.challenger_score > decision.champion_score  # type: ignore[operator]
    # The two scores are each model's own accuracy on the same rows, not numbers made up by the comparison.
    x, y = feature_matrix(test, schema), test[LABEL].to_numpy()
    refit = good_model().fit(feature_matrix(train, schema), train[LABEL].to_numpy())
    assert decision.challenger_score == pytest.approx(float(np.mean(refit.predict(x) == y)))
    report = render_champion_report(decision)
    assert f"{decision.challenger_score:.4f}" in report and f"{decision.champion_score:.4f}" in report
    assert "**Decision:** deploy" in report


def test_min_improvement_demands_a_margin_in_the_metrics_direction(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    publish(save(tmp_path / "champion", weak_model(), train, schema), tmp_path / "store")
    challenger = save(tmp_path / "challenger", good_model(), train, schema)
    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    plain = decide(challenger, lookup, test, schema)
    margin = plain.challenger_score - plain.champion_score  # type: ignore[operator]
    assert margin > 0

    assert decide(challenger, lookup, test, schema, min_improvement=margin).deploy  # exactly the margin: deploy
    above = decide(challenger, lookup, test, schema, min_improvement=margin + 0.01)
    assert not above.deploy and "< min_improvement" in above.reason


def test_no_champion_means_deploy_and_says_so(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    challenger = save(tmp_path / "challenger", weak_model(), train, schema)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "empty-store")
    decision = decide(challenger, lookup, test, schema)

    assert lookup.champion is None and "no version of 'sklearn-iris' is live" in lookup.reason
    assert decision.deploy and decision.champion_score is None and "no champion" in decision.reason
    assert METRIC_CHAMPION_SCORE not in decision.metrics() and METRIC_CHALLENGER_SCORE in decision.metrics()


def test_a_champion_with_other_features_is_not_compared_and_the_challenger_deploys(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    publish(save(tmp_path / "champion", good_model(), train, schema), tmp_path / "store")
    fewer = infer_feature_schema(train.drop(columns=["petal width (cm)"]), label_column=LABEL)
    challenger = save(tmp_path / "challenger", weak_model(), train, fewer)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = decide(challenger, lookup, test, fewer)

    assert decision.deploy and decision.champion_score is None
    assert "not comparable" in decision.reason and "the features differ" in decision.reason


def test_a_champion_for_another_task_is_not_compared(tmp_path: Path, iris_split) -> None:
    from sklearn.linear_model import Ridge

    train, test, schema = iris_split
    publish(save(tmp_path / "champion", good_model(), train, schema), tmp_path / "store")
    regression = infer_feature_schema(train, label_column=LABEL, task="regression")
    challenger = save(tmp_path / "challenger", Ridge(), train, regression)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = compare_with_champion(challenger, lookup, test, regression, metric="r2")

    assert decision.deploy and "does classification, this run does regression" in decision.reason


@pytest.mark.parametrize(("live_is_better", "metric"), [(True, "rmse"), (False, "rmse"), (True, "r2"), (False, "mae")])
def test_regression_compares_in_the_metrics_direction(tmp_path: Path, live_is_better: bool, metric: str) -> None:
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    frame = pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=2 * x[:, 0] - x[:, 1] + rng.normal(scale=0.1, size=200))
    train, test = frame.iloc[:150], frame.iloc[150:]
    schema = infer_feature_schema(train, label_column="y")
    good, mean_only = Ridge(), DummyRegressor()
    live, new = (good, mean_only) if live_is_better else (mean_only, good)
    publish(save(tmp_path / "champion", live, train, schema), tmp_path / "store")
    challenger = save(tmp_path / "challenger", new, train, schema)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = compare_with_champion(challenger, lookup, test, schema, metric=metric)

    assert decision.deploy is not live_is_better
    challenger, champion = decision.challenger_score, decision.champion_score
    assert champion is not None
    challenger_better = challenger > champion if metric == "r2" else challenger < champion  # rmse, mae: lower
    assert challenger_better is not live_is_better


class _Marker:
    """A pickle that, if ever loaded, creates a file: proof of whether anything was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_tampered_champion_is_refused_before_anything_is_unpickled(tmp_path: Path, iris_split) -> None:
    train, _, schema = iris_split
    version = publish(save(tmp_path / "champion", good_model(), train, schema), tmp_path / "store")
    version_dir = tmp_path / "store" / MODEL / version
    version_dir.chmod(stat.S_IRWXU)
    (version_dir / MODEL_FILENAME).chmod(stat.S_IRUSR | stat.S_IWUSR)
    marker = tmp_path / "unpickled"
    (version_dir / MODEL_FILENAME).write_bytes(pickle.dumps(_Marker(marker)))

    with pytest.raises(ChampionIntegrityError) as refused:
        find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")

    assert not marker.exists()
    message = str(refused.value)
    assert "fails its integrity check" in message and "pinned digest" in message and "\n" not in message


def test_a_champion_pickled_by_another_scikit_learn_is_not_unpickled(
    tmp_path: Path, iris_split, monkeypatch: pytest.MonkeyPatch
) -> None:
    import components.model_artifact as model_artifact

    train, test, schema = iris_split
    real = model_artifact.runtime_versions
    monkeypatch.setattr(model_artifact, "runtime_versions", lambda: {**real(), "scikit-learn": "1.5.2"})
    publish(save(tmp_path / "champion", good_model(), train, schema), tmp_path / "store")
    monkeypatch.undo()

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")

    assert lookup.champion is None and "scikit-learn 1.5.2" in lookup.reason
    decision = decide(save(tmp_path / "challenger", weak_model(), train, schema), lookup, test, schema)
    assert decision.deploy and "scikit-learn 1.5.2" in decision.reason


def test_the_challenger_that_is_already_live_is_deployed_again(tmp_path: Path, iris_split) -> None:
    train, test, schema = iris_split
    model = save(tmp_path / "model", good_model(), train, schema)
    version = publish(model, tmp_path / "store")

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = decide(model, lookup, test, schema)

    assert decision.deploy and f"live version {version} itself" in decision.reason


def test_an_old_schema_1_champion_is_compared_with_a_challenger_from_todays_train(tmp_path: Path, iris_split) -> None:
    import json

    from components.constants import MODEL_CARD_FILENAME
    from components.train import train_model

    train, test, schema = iris_split
    # A card as the project wrote it before typed features: no task, features, estimator or serving_path.
    old = save(tmp_path / "old", weak_model(), train, schema)
    card = json.loads((old / MODEL_CARD_FILENAME).read_text())
    for key in ("task", "features", "estimator", "serving_path"):
        card.pop(key, None)
    card["schema_version"] = 1
    (old / MODEL_CARD_FILENAME).write_text(json.dumps(card))
    publish(old, tmp_path / "store")
    fitted = train_model(train, schema=schema, model_family="logistic_regression", hyperparameters={}, seed=0)
    challenger = save(tmp_path / "challenger", fitted.estimator, train, schema)

    lookup = find_champion(deploy_target="local", model_name=MODEL, local_store=tmp_path / "store")
    decision = decide(challenger, lookup, test, schema)

    assert lookup.champion is not None and lookup.champion.card.schema_version == 1
    assert decision.champion_score is not None and 0.5 < decision.champion_score < decision.challenger_score
    assert decision.deploy


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf"), "0.1", True])
def test_bad_min_improvement_is_refused_in_one_line(value: Any) -> None:
    with pytest.raises(ValueError, match=r"^min_improvement must be") as refused:
        check_min_improvement(value)
    assert "\n" not in str(refused.value)


# --- kubernetes target ------------------------------------------------------------------------------------


@pytest.fixture
def kube() -> Iterator[tuple[FakeKubeApi, Any]]:
    from kubernetes import client

    api = FakeKubeApi()
    api.start()
    with client.ApiClient(client.Configuration(host=api.base_url)) as api_client:
        yield api, api_client
    api.stop()


def bucket_filesystem(root: Path) -> Any:
    """A pyarrow filesystem in which `s3://bucket/key` is `root/bucket/key`, as S3FileSystem sees `bucket/key`."""
    import pyarrow.fs as pafs

    root.mkdir(parents=True, exist_ok=True)
    return pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem())


def deploy_to_cluster(api_client: Any, model_dir: Path, storage_uri: str, *, canary: Path | None = None) -> None:
    """Create the InferenceService exactly as the deploy step builds it (builder, lineage, digest pin); with
    `canary`, that model directory goes out as a Standard-mode canary beside `model_dir`, as deploy does it."""
    from kubernetes import client

    from components.deploy.inference_service import with_standard_canary

    manifest = built_manifest(model_dir, storage_uri)
    if canary is not None:
        manifest = with_standard_canary(
            built_manifest(canary, "s3://mlpipeline/v2/artifacts/training/run-2/train/model"),
            stable_predictor=manifest["spec"]["predictor"],
            traffic_percent=10,
            stable_annotations=manifest["metadata"]["annotations"],
        )
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", DEFAULT_NAMESPACE, "inferenceservices", manifest
    )


def built_manifest(model_dir: Path, storage_uri: str) -> dict[str, Any]:
    from components.deploy.inference_service import build_inference_service, lineage_annotations
    from components.model_artifact import read_model_card

    digest = directory_digest(model_dir)
    return build_inference_service(
        name=MODEL,
        namespace=DEFAULT_NAMESPACE,
        storage_uri=storage_uri,
        annotations=lineage_annotations(read_model_card(model_dir), run_id="run-1", run_name="nightly", metrics={}),
        env={MODEL_DIGEST_ENV: digest, MODEL_VERSION_ENV: version_id(digest)},
    )


def upload(model_dir: Path, bucket_root: Path) -> str:
    shutil.copytree(model_dir, bucket_root / ARTIFACT)
    return f"s3://{ARTIFACT}"


def test_kubernetes_champion_is_read_through_the_inference_service_and_beats_a_weaker_challenger(
    tmp_path: Path, iris_split, kube
) -> None:
    api, api_client = kube
    train, test, schema = iris_split
    champion_dir = save(tmp_path / "champion", good_model(), train, schema)
    deploy_to_cluster(api_client, champion_dir, upload(champion_dir, tmp_path / "bucket"))
    challenger = save(tmp_path / "challenger", weak_model(), train, schema)

    lookup = find_champion(
        deploy_target="kubernetes",
        model_name=MODEL,
        namespace=DEFAULT_NAMESPACE,
        api_client=api_client,
        filesystem=bucket_filesystem(tmp_path / "bucket"),
    )
    decision = decide(challenger, lookup, test, schema)

    assert lookup.champion is not None and lookup.champion.digest == directory_digest(champion_dir)
    assert f"s3://{ARTIFACT}" in lookup.reason and "nightly" in lookup.reason
    assert not decision.deploy and decision.champion_score > decision.challenger_score  # type: ignore[operator]
    # The step only read: one GET of the InferenceService, nothing written.
    assert api.methods() == ["POST", "GET"]


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeS3]:
    """An S3 endpoint over HTTP serving `tmp_path/bucket`; the step's credentials in the env, as KFP's Secret maps."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "minio")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "minio123")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookups from the AWS SDK
    server = FakeS3(tmp_path / "bucket", access_key="minio")
    server.start()
    yield server
    server.stop()


def test_kubernetes_champion_is_downloaded_over_s3_with_the_steps_credentials(
    tmp_path: Path, iris_split, kube, s3: FakeS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, api_client = kube
    train, test, schema = iris_split
    champion_dir = save(tmp_path / "champion", weak_model(), train, schema)
    deploy_to_cluster(api_client, champion_dir, upload(champion_dir, tmp_path / "bucket"))

    def lookup() -> ChampionLookup:
        return find_champion(
            deploy_target="kubernetes",
            model_name=MODEL,
            namespace=DEFAULT_NAMESPACE,
            api_client=api_client,
            s3_endpoint=s3.endpoint,
        )

    found = lookup()
    assert found.champion is not None and found.champion.digest == directory_digest(champion_dir)
    fetched = {path.rsplit("/", 1)[-1] for method, path in s3.requests if method == "GET" and "?" not in path}
    assert MODEL_FILENAME in fetched
    decision = decide(save(tmp_path / "challenger", good_model(), train, schema), found, test, schema)
    assert decision.deploy and decision.champion_score is not None

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone-else")
    with pytest.raises(ChampionError, match="could not list the live model's directory") as refused:
        lookup()
    assert "\n" not in str(refused.value)


def test_kubernetes_champion_is_the_stable_predictor_while_a_canary_is_in_flight(
    tmp_path: Path, iris_split, kube
) -> None:
    _, api_client = kube
    train, _, schema = iris_split
    stable = save(tmp_path / "stable", good_model(), train, schema)
    canary = save(tmp_path / "canary", weak_model(), train, schema)
    deploy_to_cluster(api_client, stable, upload(stable, tmp_path / "bucket"), canary=canary)

    lookup = find_champion(
        deploy_target="kubernetes",
        model_name=MODEL,
        namespace=DEFAULT_NAMESPACE,
        api_client=api_client,
        filesystem=bucket_filesystem(tmp_path / "bucket"),
    )

    assert lookup.champion is not None and lookup.champion.digest == directory_digest(stable)


def test_kubernetes_no_inference_service_means_no_champion(tmp_path: Path, kube) -> None:
    _, api_client = kube
    lookup = find_champion(
        deploy_target="kubernetes", model_name=MODEL, namespace=DEFAULT_NAMESPACE, api_client=api_client
    )
    assert lookup.champion is None and f"InferenceService {DEFAULT_NAMESPACE}/{MODEL}" in lookup.reason


def test_kubernetes_champion_tampered_in_the_bucket_is_refused(tmp_path: Path, iris_split, kube) -> None:
    _, api_client = kube
    train, _, schema = iris_split
    champion_dir = save(tmp_path / "champion", good_model(), train, schema)
    deploy_to_cluster(api_client, champion_dir, upload(champion_dir, tmp_path / "bucket"))
    marker = tmp_path / "unpickled"
    (tmp_path / "bucket" / ARTIFACT / MODEL_FILENAME).write_bytes(pickle.dumps(_Marker(marker)))

    with pytest.raises(ChampionIntegrityError, match="fails its integrity check"):
        find_champion(
            deploy_target="kubernetes",
            model_name=MODEL,
            namespace=DEFAULT_NAMESPACE,
            api_client=api_client,
            filesystem=bucket_filesystem(tmp_path / "bucket"),
        )
    assert not marker.exists()


def test_kubernetes_champion_on_storage_the_step_cannot_read_is_said(tmp_path: Path, iris_split, kube) -> None:
    _, api_client = kube
    train, _, schema = iris_split
    champion_dir = save(tmp_path / "champion", good_model(), train, schema)
    deploy_to_cluster(api_client, champion_dir, "pvc://model-store/sklearn-iris/abc")

    lookup = find_champion(
        deploy_target="kubernetes", model_name=MODEL, namespace=DEFAULT_NAMESPACE, api_client=api_client
    )
    assert lookup.champion is None and "pvc://model-store/sklearn-iris/abc" in lookup.reason


def test_kubernetes_champion_without_object_store_access_is_an_error_not_a_silent_skip(
    tmp_path: Path, iris_split, kube
) -> None:
    _, api_client = kube
    train, _, schema = iris_split
    champion_dir = save(tmp_path / "champion", good_model(), train, schema)
    deploy_to_cluster(api_client, champion_dir, upload(champion_dir, tmp_path / "bucket"))

    with pytest.raises(ChampionError, match="s3_endpoint"):
        find_champion(deploy_target="kubernetes", model_name=MODEL, namespace=DEFAULT_NAMESPACE, api_client=api_client)


def test_kubernetes_rbac_denial_names_the_role(tmp_path: Path, kube) -> None:
    api, api_client = kube
    api.forbidden_verbs = {"get"}
    with pytest.raises(ChampionError) as refused:
        find_champion(deploy_target="kubernetes", model_name=MODEL, namespace=DEFAULT_NAMESPACE, api_client=api_client)
    assert "403" in str(refused.value) and "kfp-isvc-deployer" in str(refused.value)
