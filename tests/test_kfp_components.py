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
from components.features import read_schema
from components.kfp_components import build_components

LABEL = DEFAULT_LABEL_COLUMN
OPS = build_components()


def artifact(kind, tmp_path, name):
    return kind(uri=str(tmp_path / name))


@pytest.fixture
def split(tmp_path):
    train, test = artifact(dsl.Dataset, tmp_path, "train"), artifact(dsl.Dataset, tmp_path, "test")
    schema = artifact(dsl.Artifact, tmp_path, "schema.json")
    OPS.load_data.python_func(
        train_data=train,
        test_data=test,
        feature_schema=schema,
        dataset="iris",
        label_column=LABEL,
        test_fraction=0.2,
        seed=1,
    )
    return train, test, schema


@pytest.fixture
def model(tmp_path, split):
    train, test, schema = split
    out = artifact(dsl.Model, tmp_path, "model")
    OPS.train.python_func(
        model=out,
        train_data=train,
        test_data=test,
        feature_schema=schema,
        model_family="logistic_regression",
        hyperparameters={"C": 2.0},
        seed=1,
    )
    return out


def evaluated(tmp_path, split, model, name, **gate):
    _, test, schema = split
    outputs = {
        "metrics": artifact(dsl.Metrics, tmp_path, f"{name}-metrics"),
        "classification": artifact(dsl.ClassificationMetrics, tmp_path, f"{name}-cls"),
        "report": artifact(dsl.Markdown, tmp_path, f"{name}-report.md"),
        "gate": artifact(dsl.Artifact, tmp_path, f"{name}-gate.json"),
    }
    passed = OPS.evaluate.python_func(
        **outputs, model=model, test_data=test, feature_schema=schema, **{"min_accuracy": 0.5, **gate}
    )
    return passed, outputs


def champion_step(tmp_path, split, model, gate_outputs, store, name, **overrides):
    _, test, schema = split
    outputs = {
        "decision": artifact(dsl.Artifact, tmp_path, f"{name}-decision.json"),
        "metrics": artifact(dsl.Metrics, tmp_path, f"{name}-metrics"),
        "report": artifact(dsl.Markdown, tmp_path, f"{name}-report.md"),
    }
    arguments = dict(
        model=model,
        test_data=test,
        feature_schema=schema,
        evaluation=gate_outputs["metrics"],
        gate=gate_outputs["gate"],
        candidates=[],
        model_name="iris-test",
        deploy_target="local",
        local_store=str(store),
        namespace="models",
        gate_metric="",
        min_improvement=0.0,
        mlflow_tracking_uri="",
        run_name="nightly",
    )
    deploy = OPS.champion_vs_challenger.python_func(**outputs, **{**arguments, **overrides})
    return deploy, outputs


def test_load_data_writes_parquet_splits_with_lineage_metadata_and_the_schema(split):
    train, test, schema = split
    train_frame, test_frame = pd.read_parquet(train.path), pd.read_parquet(test.path)
    assert (len(train_frame), len(test_frame)) == (120, 30)
    assert train.metadata["rows"] == 120 and test.metadata["rows"] == 30
    assert train.metadata["feature_names"] == [c for c in train_frame.columns if c != LABEL]
    assert train.metadata["class_names"] == ["0", "1", "2"]
    assert len(train.metadata["sha256"]) == 64 and train.metadata["source"] == "iris"
    written = read_schema(schema.path)
    assert written.task == "classification" and written.names == train.metadata["feature_names"]
    assert schema.metadata["task"] == "classification" and "3 distinct values" in schema.metadata["task_reason"]


def test_load_data_fails_with_the_validation_message(tmp_path):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], LABEL: [1, 1, 1]}).to_csv(bad, index=False)
    with pytest.raises(DataValidationError, match="at least two classes"):
        OPS.load_data.python_func(
            train_data=artifact(dsl.Dataset, tmp_path, "tr"),
            test_data=artifact(dsl.Dataset, tmp_path, "te"),
            feature_schema=artifact(dsl.Artifact, tmp_path, "schema"),
            dataset=str(bad),
            label_column=LABEL,
            test_fraction=0.2,
            seed=0,
        )


def test_the_search_steps_expand_score_and_select_the_better_candidate(tmp_path, split):
    train, _, schema = split
    space = [{"model_family": "logistic_regression"}, {"model_family": "sklearn.dummy.DummyClassifier"}]
    candidates = OPS.expand_search.python_func(search_space=space, model_family="auto", hyperparameters={})
    assert [c["candidate_id"] for c in candidates] == [0, 1]
    scores = []
    for candidate in candidates:
        metrics = artifact(dsl.Metrics, tmp_path, f"cv-{candidate['candidate_id']}")
        scores.append(
            OPS.score_candidate.python_func(
                metrics=metrics,
                train_data=train,
                feature_schema=schema,
                candidate=candidate,
                cv_folds=3,
                seed=0,
                gate_metric="",
            )
        )
        assert metrics.metadata["candidate_id"] == candidate["candidate_id"]
        assert 0.0 <= metrics.metadata["cv_accuracy_mean"] <= 1.0
    assert len(scores[0]["folds"]) == 3 and scores[0]["mean"] > scores[1]["mean"] + 0.3, "dummy guesses one class"
    report = artifact(dsl.Markdown, tmp_path, "search.md")
    family, hyperparameters, ordered = OPS.select_candidate.python_func(
        metrics=artifact(dsl.Metrics, tmp_path, "sel"), report=report, scores=list(reversed(scores))
    )
    assert (family, hyperparameters) == ("logistic_regression", {})
    assert [s["candidate_id"] for s in ordered] == [0, 1]
    assert "DummyClassifier" in (tmp_path / "search.md").read_text()


def test_the_only_candidate_is_not_cross_validated_and_its_score_is_a_plain_dict(tmp_path, split):
    train, _, schema = split
    (only,) = OPS.expand_search.python_func(search_space=[], model_family="auto", hyperparameters={"C": 0.5})
    score = OPS.score_candidate.python_func(
        metrics=artifact(dsl.Metrics, tmp_path, "m"),
        train_data=train,
        feature_schema=schema,
        candidate=only,
        cv_folds=5,
        seed=0,
        gate_metric="",
    )
    assert "not cross-validated" in score["note"] and "mean" not in score, "no NaN crosses KFP"
    assert json.loads(json.dumps(score, allow_nan=False)) == score


def test_train_writes_a_model_directory_and_records_it(model):
    card = json.loads((Path(model.path) / MODEL_CARD_FILENAME).read_text())
    assert card["hyperparameters"]["C"] == 2.0
    assert model.metadata["model_sha256"] == card["files"][MODEL_FILENAME]
    assert model.metadata["fast_path"] is True and model.metadata["task"] == "classification"


def test_evaluate_logs_metrics_for_the_ui_and_writes_the_gate(tmp_path, split, model):
    passed, outputs = evaluated(tmp_path, split, model, "a")
    metrics = outputs["metrics"]
    assert passed is True
    assert 0.5 <= metrics.metadata[METRIC_ACCURACY] <= 1.0
    matrix = outputs["classification"].metadata["confusionMatrix"]
    assert sum(sum(row["row"]) for row in matrix["rows"]) == 30
    assert "Deploy gate:** accuracy" in (tmp_path / "a-report.md").read_text()
    gate = json.loads((tmp_path / "a-gate.json").read_text())
    assert gate["deploy"] is True and gate["reason"].startswith("accuracy ")
    blocked, _ = evaluated(tmp_path, split, model, "b", gate_metric="f1_macro", gate_threshold=1.0)
    assert blocked is (metrics.metadata["f1_macro"] >= 1.0)
    assert "f1_macro" in json.loads((tmp_path / "b-gate.json").read_text())["reason"]


def test_the_champion_step_deploys_without_a_champion_and_not_after_a_failed_gate(tmp_path, split, model):
    _, passed = evaluated(tmp_path, split, model, "a")
    deploy, outputs = champion_step(tmp_path, split, model, passed, tmp_path / "store", "first")
    decision = json.loads((tmp_path / "first-decision.json").read_text())
    assert deploy is True and decision["deploy"] is True and "no champion" in decision["reason"]
    assert outputs["metrics"].metadata["champion_decision_deploy"] == 1.0
    assert "Champion vs challenger" in (tmp_path / "first-report.md").read_text()
    _, refused = evaluated(tmp_path, split, model, "b", gate_metric="accuracy", gate_threshold=1.0)
    deploy, outputs = champion_step(tmp_path, split, model, refused, tmp_path / "store", "second")
    decision = json.loads((tmp_path / "second-decision.json").read_text())
    assert deploy is False and "the absolute gate refused it" in decision["reason"]
    assert decision["gate"]["deploy"] is False and "champion_score" not in outputs["metrics"].metadata


def test_deploy_local_publishes_and_writes_the_manifest_it_would_apply(tmp_path, model):
    metrics = artifact(dsl.Metrics, tmp_path, "metrics")
    metrics.log_metric(METRIC_ACCURACY, 0.95)
    manifest = artifact(dsl.Artifact, tmp_path, "isvc.yaml")
    endpoint, status = OPS.deploy.python_func(
        manifest=manifest,
        model=model,
        metrics=metrics,
        decision=artifact(dsl.Artifact, tmp_path, "decision"),
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
            decision=artifact(dsl.Artifact, tmp_path, "d"),
            model_name="iris",
            namespace="models",
            deploy_target="cloud",
            local_store=str(tmp_path / "s"),
            service_account="",
            timeout_seconds=5,
            run_id="r",
            payload_logger_url="",
        )
