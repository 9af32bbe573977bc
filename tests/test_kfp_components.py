"""Each component's Python function, called with real KFP artifacts whose files live in tmp_path."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kfp import dsl

from components.constants import (
    DEFAULT_LABEL_COLUMN,
    KSERVE_API_VERSION,
    METRIC_ACCURACY,
    MODEL_CARD_FILENAME,
    MODEL_FILENAME,
)
from components.data import DataValidationError
from components.deploy.inference_service import LINEAGE_RUN_NAME
from components.deploy.local_store import current
from components.kfp_components import build_components

LABEL = DEFAULT_LABEL_COLUMN
OPS = build_components()


def artifact(kind, tmp_path, name):
    return kind(uri=str(tmp_path / name))


@pytest.fixture
def split(tmp_path):
    train, test = artifact(dsl.Dataset, tmp_path, "train"), artifact(dsl.Dataset, tmp_path, "test")
    OPS.load_data.python_func(
        train_data=train, test_data=test, dataset="iris", label_column=LABEL, test_fraction=0.2, seed=1
    )
    return train, test


@pytest.fixture
def model(tmp_path, split):
    train, test = split
    out = artifact(dsl.Model, tmp_path, "model")
    OPS.train.python_func(
        model=out,
        train_data=train,
        test_data=test,
        label_column=LABEL,
        model_family="logistic_regression",
        hyperparameters={"C": 2.0},
        seed=1,
    )
    return out


def test_load_data_writes_parquet_splits_with_lineage_metadata(split):
    train, test = split
    train_frame, test_frame = pd.read_parquet(train.path), pd.read_parquet(test.path)
    assert (len(train_frame), len(test_frame)) == (120, 30)
    assert train.metadata["rows"] == 120 and test.metadata["rows"] == 30
    assert train.metadata["feature_names"] == [c for c in train_frame.columns if c != LABEL]
    assert train.metadata["class_names"] == ["0", "1", "2"]
    assert len(train.metadata["sha256"]) == 64 and train.metadata["source"] == "iris"


def test_load_data_fails_with_the_validation_message(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], LABEL: [1, 1, 1]}).to_csv(bad, index=False)
    with pytest.raises(DataValidationError, match="at least two classes"):
        OPS.load_data.python_func(
            train_data=artifact(dsl.Dataset, tmp_path, "tr"),
            test_data=artifact(dsl.Dataset, tmp_path, "te"),
            dataset=str(bad),
            label_column=LABEL,
            test_fraction=0.2,
            seed=0,
        )


def test_train_writes_a_model_directory_and_records_it(model):
    card = json.loads((Path(model.path) / MODEL_CARD_FILENAME).read_text())
    assert card["hyperparameters"]["C"] == 2.0
    assert model.metadata["model_sha256"] == card["files"][MODEL_FILENAME]
    assert model.metadata["fast_path"] is True


def test_evaluate_logs_metrics_for_the_ui_and_returns_the_gate(tmp_path, split, model):
    _, test = split
    metrics = artifact(dsl.Metrics, tmp_path, "metrics")
    classification = artifact(dsl.ClassificationMetrics, tmp_path, "cls")
    report = artifact(dsl.Markdown, tmp_path, "report.md")
    passed = OPS.evaluate.python_func(
        metrics=metrics,
        classification=classification,
        report=report,
        model=model,
        test_data=test,
        label_column=LABEL,
        min_accuracy=0.5,
    )
    assert passed is True
    assert 0.5 <= metrics.metadata[METRIC_ACCURACY] <= 1.0
    matrix = classification.metadata["confusionMatrix"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 30
    assert "Deploy gate:** accuracy" in (tmp_path / "report.md").read_text()
    blocked = OPS.evaluate.python_func(
        metrics=artifact(dsl.Metrics, tmp_path, "m2"),
        classification=artifact(dsl.ClassificationMetrics, tmp_path, "c2"),
        report=artifact(dsl.Markdown, tmp_path, "r2"),
        model=model,
        test_data=test,
        label_column=LABEL,
        min_accuracy=1.0,
    )
    assert blocked is (metrics.metadata[METRIC_ACCURACY] >= 1.0)


def test_deploy_local_publishes_and_writes_the_manifest_it_would_apply(tmp_path, model):
    metrics = artifact(dsl.Metrics, tmp_path, "metrics")
    metrics.log_metric(METRIC_ACCURACY, 0.95)
    manifest = artifact(dsl.Artifact, tmp_path, "isvc.yaml")
    endpoint, status = OPS.deploy.python_func(
        manifest=manifest,
        model=model,
        metrics=metrics,
        model_name="iris-test",
        namespace="models",
        deploy_target="local",
        local_store=str(tmp_path / "store"),
        service_account="",
        timeout_seconds=5,
        run_id="run-42",
        payload_logger_url="",
        run_name="nightly-retrain",
    )
    live = current(tmp_path / "store", "iris-test")
    assert endpoint.endswith("/v1/models/iris-test:predict")
    assert status == f"published {live.model_dir}"
    assert live.run_id == "run-42" and live.metrics == {METRIC_ACCURACY: 0.95}
    assert live.run_name == "nightly-retrain", "the component hands the run's display name on as lineage"
    isvc = yaml.safe_load((tmp_path / "isvc.yaml").read_text())
    assert isvc["metadata"]["annotations"][LINEAGE_RUN_NAME] == "nightly-retrain"
    assert isvc["apiVersion"] == KSERVE_API_VERSION
    assert isvc["spec"]["predictor"]["model"]["storageUri"].endswith(f"/iris-test/{live.version}")
    assert live.model_sha256 in isvc["metadata"]["annotations"].values()
    assert manifest.metadata["target"] == "local"


def test_deploy_refuses_an_unknown_target(tmp_path, model):
    with pytest.raises(ValueError, match="unknown deploy_target 'cloud'; choose one of: local, kubernetes"):
        OPS.deploy.python_func(
            manifest=artifact(dsl.Artifact, tmp_path, "m"),
            model=model,
            metrics=artifact(dsl.Metrics, tmp_path, "x"),
            model_name="iris",
            namespace="models",
            deploy_target="cloud",
            local_store=str(tmp_path / "s"),
            service_account="",
            timeout_seconds=5,
            run_id="r",
            payload_logger_url="",
        )
