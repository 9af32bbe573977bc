"""Rules KServe's validating webhook applies (canaries, KServe >= 0.20; deployment-mode changes), written from its
documented behaviour, so the fake API server can deny what the real cluster denies.

A webhook denial reaches the client as HTTP 403 with reason Forbidden (controller-runtime's `Denied`), the same
status code as an RBAC denial; only the message tells them apart.
"""

from __future__ import annotations

from typing import Any

from components.constants import DEPLOYMENT_MODE_ANNOTATION, DEPLOYMENT_MODE_STANDARD

WEBHOOK_NAME = "inferenceservice.kserve-webhook-server.validator"


def canary_errors(obj: dict[str, Any]) -> list[str]:
    """Why KServe would refuse this InferenceService's canaries (empty: it would accept them)."""
    canaries = obj.get("spec", {}).get("canary") or []
    if not canaries:
        return []
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if annotations.get(DEPLOYMENT_MODE_ANNOTATION) != DEPLOYMENT_MODE_STANDARD:
        return [f"canary is only supported in {DEPLOYMENT_MODE_STANDARD} deployment mode"]
    stable = obj["spec"]["predictor"]
    errors: list[str] = []
    seen: set[str] = set()
    for index, canary in enumerate(canaries):
        predictor = canary.get("predictor") or {}
        name = predictor.get("name", "")
        if not name:
            errors.append(f"canary[{index}] predictor.name is required")
            continue
        if name in seen:
            errors.append(f'canary predictor.name "{name}" is duplicated')
        seen.add(name)
        if name == stable.get("name"):
            errors.append(f'canary predictor.name "{name}" conflicts with stable predictor name')
        for field in ("maxReplicas", "scaleTarget", "scaleMetric", "autoScaling", "workerSpec"):
            if predictor.get(field):
                errors.append(f'canary "{name}" must not set {field}')
        if predictor.get("minReplicas", 0) > stable.get("minReplicas", 1):
            errors.append(f'canary "{name}" minReplicas must not exceed stable predictor minReplicas')
    total = sum(int(c.get("trafficPercent", 0)) for c in canaries)
    if total > 100:
        errors.append(f"sum of canary trafficPercent values ({total}) must be <= 100")
    return errors


def webhook_errors(new: dict[str, Any], old: dict[str, Any] | None) -> list[str]:
    """Everything the fake's webhook checks: canary rules, and on update the deployment mode."""
    errors = canary_errors(new)
    if old is not None:
        recorded = (old.get("status") or {}).get("deploymentMode")
        wanted = (new.get("metadata", {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
        if recorded and wanted is not None and wanted != recorded:
            errors.append(f"update rejected: deploymentMode cannot be changed from '{recorded}' to '{wanted}'")
    return errors
