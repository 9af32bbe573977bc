"""Helpers shared by the monitoring tests (a plain module: conftest.py cannot be imported by name)."""

from __future__ import annotations

import base64
import importlib
import json
from pathlib import Path
from types import ModuleType

import pandas as pd

from components.constants import MODEL_SHA256_ANNOTATION, RETRAIN_REQUEST_FILENAME
from components.payload_log import PayloadLogWriter

IRIS_TRAIN_ROWS = 120
"""What Iris' 80/20 train split leaves for the profile."""


def pipeline_cli() -> ModuleType:
    """The command line of `pipeline.py` (components/cli.py), imported at run time like the script does."""
    return importlib.import_module("components.cli")


def read_retrain_request(directory: Path) -> dict | None:
    """The retraining request a monitoring run recorded in `directory` (nothing in the product reads it back)."""
    target = directory / RETRAIN_REQUEST_FILENAME
    return json.loads(target.read_text(encoding="utf-8")) if target.is_file() else None


def shift_feature(frame: pd.DataFrame, column: str, by: float) -> pd.DataFrame:
    shifted = frame.copy()
    shifted[column] = shifted[column] + by
    return shifted


def write_log(log_dir: Path, frame: pd.DataFrame, *, model_name: str, predictions: list | None = None) -> None:
    with PayloadLogWriter(
        log_dir, model_name=model_name, model_sha256="0" * 64, feature_names=list(frame.columns), batch_size=64
    ) as writer:
        rows = frame.to_numpy()
        labels = predictions if predictions is not None else [0] * len(rows)
        for start in range(0, len(rows), 10):
            writer.record(rows[start : start + 10], labels[start : start + 10])


def log_request(record_id: str, kind: str, body: dict, when: str) -> dict:
    """A LogRequest as Go's encoding/json writes it (kserve pkg/logger/types.go): []byte as base64, *url.URL as
    a struct, time.Time as RFC 3339 with nanoseconds."""
    return {
        "url": {"Scheme": "s3", "Host": "mlpipeline", "Path": "/payload-logs"},
        "bytes": base64.b64encode(json.dumps(body).encode()).decode(),
        "contentType": "application/json",
        "reqType": kind,
        "id": record_id,
        "sourceUri": {"Scheme": "http", "Host": "localhost:8080", "Path": "/"},
        "inferenceService": "sklearn-iris",
        "namespace": "kserve-models",
        "component": "predictor",
        "endpoint": "default",
        "metadata": {},
        "annotations": {MODEL_SHA256_ANNOTATION: "ab" * 32},
        "occurrenceTime": when,
    }
