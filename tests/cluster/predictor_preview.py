"""The Deployment KServe's Standard mode will run for an InferenceService, for scanners that only know built-in kinds.

Approximation of the controller's merge (runtime container + `predictor.model` overrides + pod fields of the
predictor), enough for checkov to judge the security of the pod that actually runs. KServe also injects a
storage-initializer init container, which is KServe's, not ours, and is left out.
"""

from __future__ import annotations

import copy
from typing import Any

_POD_FIELDS = ("serviceAccountName", "automountServiceAccountToken", "securityContext", "nodeSelector", "tolerations")


def predictor_deployments(isvc: dict[str, Any], runtime: dict[str, Any]) -> list[dict[str, Any]]:
    """One Deployment per predictor (the primary, and each Standard-mode canary)."""
    name = isvc["metadata"]["name"]
    predictors = [("", isvc["spec"]["predictor"])]
    predictors += [(f"-{c['predictor'].get('name', 'canary')}", c["predictor"]) for c in isvc["spec"].get("canary", [])]
    return [_deployment(f"{name}{suffix}-predictor", isvc, predictor, runtime) for suffix, predictor in predictors]


def _deployment(deploy_name: str, isvc: dict[str, Any], predictor: dict[str, Any], runtime: dict[str, Any]) -> dict:
    container = copy.deepcopy(runtime["spec"]["containers"][0])
    model = predictor.get("model", {})
    if "resources" in model:
        container["resources"] = copy.deepcopy(model["resources"])
    container["args"] = [a.replace("{{.Name}}", isvc["metadata"]["name"]) for a in container.get("args", [])]
    pod: dict[str, Any] = {"containers": [container], "volumes": copy.deepcopy(runtime["spec"].get("volumes", []))}
    pod.update({k: copy.deepcopy(predictor[k]) for k in _POD_FIELDS if k in predictor})
    labels = {"app": deploy_name, "serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deploy_name, "namespace": isvc["metadata"]["namespace"], "labels": labels},
        "spec": {
            "replicas": predictor.get("minReplicas", 1),
            "selector": {"matchLabels": {"app": deploy_name}},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }
