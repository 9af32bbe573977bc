"""Prometheus metrics the monitoring stack scrapes from `/metrics` (KServe serves the default registry there)."""

from __future__ import annotations

import numpy as np
from prometheus_client import Counter, Gauge

from components.constants import METRIC_MODEL_INFO, METRIC_PREDICTIONS, METRIC_REJECTED

PREDICTIONS = Counter(
    METRIC_PREDICTIONS.removesuffix("_total"),
    "Rows predicted, by predicted class.",
    ["model_name", "predicted_class"],
)
REJECTED = Counter(
    METRIC_REJECTED.removesuffix("_total"),
    "Requests refused with a 4xx, by reason (content_type, malformed_json, feature_count, body_too_large, ...).",
    ["model_name", "reason"],
)
MODEL_INFO = Gauge(
    METRIC_MODEL_INFO,
    "Always 1; labels identify the model being served.",
    ["model_name", "model_sha256", "sklearn_version", "backend"],
)


def record_model(model_name: str, *, model_sha256: str, sklearn_version: str, backend: str) -> None:
    """Publish which model (by sha256) this server answers with."""
    MODEL_INFO.labels(model_name, model_sha256, sklearn_version, backend).set(1)


def record_predictions(model_name: str, labels: np.ndarray) -> None:
    """Count predicted rows per class."""
    if labels.shape[0] == 1:
        PREDICTIONS.labels(model_name, str(labels[0])).inc()
        return
    values, counts = np.unique(labels, return_counts=True)
    for value, count in zip(values.tolist(), counts.tolist(), strict=True):
        PREDICTIONS.labels(model_name, str(value)).inc(count)


def record_rejection(model_name: str, reason: str) -> None:
    """Count one refused request."""
    REJECTED.labels(model_name, reason).inc()
