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
    # KServe merges the InferenceService's container into the runtime's (strategic merge: requests/limits key by
    # key, env by name; the InferenceService wins): inferenceservice/utils/utils.go, MergeRuntimeContainers.
    resources = container.setdefault("resources", {})
    for section, values in (model.get("resources") or {}).items():
        resources[section] = {**resources.get(section, {}), **values}
    env = {e["name"]: e for e in container.get("env", [])}
    env.update({e["name"]: copy.deepcopy(e) for e in model.get("env", [])})
    if env:
        container["env"] = list(env.values())
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


AGENT_PORT = 9081
"""KServe's agent port (pkg/constants, InferenceServiceDefaultAgentPort)."""


def service_ports(isvc: dict[str, Any], runtime: dict[str, Any]) -> list[dict[str, Any]]:
    """The ports of the predictor Service KServe's Standard mode creates (reconcilers/service/service_reconciler.go,
    createDefaultSvc): the first container port as port 80, every further one under its own number (appProtocol
    kubernetes.io/h2c when its name contains "grpc" or "h2c"); a batcher or logger points port 80 at the agent."""
    container_ports = runtime["spec"]["containers"][0].get("ports") or [{"containerPort": 8080}]
    ports = []
    for index, port in enumerate(container_ports):
        name = port.get("name", "")
        entry = {"name": name, "port": 80 if index == 0 else port["containerPort"], "targetPort": port["containerPort"]}
        if "grpc" in name or "h2c" in name:
            entry["appProtocol"] = "kubernetes.io/h2c"
        ports.append(entry)
    predictor = isvc["spec"]["predictor"]
    if predictor.get("logger") or predictor.get("batcher"):
        ports[0]["targetPort"] = AGENT_PORT
    return ports
