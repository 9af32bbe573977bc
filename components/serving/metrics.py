"""Prometheus metrics the monitoring stack scrapes from `/metrics` (KServe serves the default registry there)."""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any

import numpy as np
from kserve.metrics import PREDICT_HIST_TIME
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
        _class_counter(model_name, labels[0]).inc()
        return
    # Counter over a short list beats np.unique's sort for request-sized batches.
    for value, count in Tally(labels.tolist()).items():
        _class_counter(model_name, value).inc(count)


NUMERIC_PREDICTION = "(number)"
"""The `predicted_class` label under which a regression model's rows are counted (numbers are no label values)."""


def record_numeric_predictions(model_name: str, rows: int) -> None:
    """Count a regression model's predicted rows (one series: a label per predicted value would be unbounded)."""
    _class_counter(model_name, NUMERIC_PREDICTION).inc(rows)


def observe_predict_seconds(model_name: str, seconds: float) -> None:
    """Feed KServe's own `request_predict_seconds` histogram, so KServe dashboards keep working."""
    child = _PREDICT_SECONDS.get(model_name)
    if child is None:
        child = _PREDICT_SECONDS[model_name] = PREDICT_HIST_TIME.labels(model_name=model_name)
    child.observe(seconds)


# `.labels()` hashes and locks on every call; the label sets are few (one model, a handful of classes), so
# the children are looked up once.
_CLASS_COUNTERS: dict[tuple[str, Any], Any] = {}
_PREDICT_SECONDS: dict[str, Any] = {}


def _class_counter(model_name: str, label: Any) -> Any:
    key = (model_name, label)
    child = _CLASS_COUNTERS.get(key)
    if child is None:
        child = _CLASS_COUNTERS[key] = PREDICTIONS.labels(model_name, str(label))
    return child


def record_rejection(model_name: str, reason: str) -> None:
    """Count one refused request."""
    REJECTED.labels(model_name, reason).inc()
