"""Fixtures for the cluster path: a fake Kubernetes API and a predictor endpoint, both over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from components.constants import DEFAULT_MODEL_NAME, DEPLOYER_ROLE_NAME
from tests.fakes.fake_kube_api import FakeKubeApi, FakePredictor, Outcome
from tests.fakes.kserve_webhook import webhook_errors
from tests.manifests.kube_schemas import MANIFESTS, SHARED_SCHEMAS, crd_errors


def deployer_role_rules() -> dict[str, set[str]]:
    """What the project's Role grants (manifests/base/rbac.yaml), as the API server reads it: resource -> verbs."""
    documents = yaml.safe_load_all((MANIFESTS / "base" / "rbac.yaml").read_text())
    (role,) = [d for d in documents if d and d["kind"] == "Role" and d["metadata"]["name"] == DEPLOYER_ROLE_NAME]
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault(f"{resource}.{group}" if group else resource, set()).update(rule["verbs"])
    return granted


@pytest.fixture
def fake_api() -> Iterator[FakeKubeApi]:
    """A running fake API server that enforces the project's Role for the caller and rejects what KServe's webhook
    and CRD schema (made strict; when ../shared/schemas is present, as on team machines and CI) would reject."""
    schemas = SHARED_SCHEMAS if SHARED_SCHEMAS.is_dir() else None
    api = FakeKubeApi(
        validator=(lambda obj: crd_errors(obj, schemas)) if schemas else None,
        webhook=webhook_errors,
        rbac=deployer_role_rules(),
    )
    api.start()
    yield api
    api.stop()


@pytest.fixture
def api_client(fake_api: FakeKubeApi):
    """A real `kubernetes.client.ApiClient` pointed at the fake server."""
    from kubernetes import client

    configuration = client.Configuration(host=fake_api.base_url)
    with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
def predictor(make_model_dir) -> Iterator[FakePredictor]:
    """A V1 predict endpoint serving a real Iris model under the default model name."""
    directory, _ = make_model_dir(name="served-model")
    server = FakePredictor(directory, DEFAULT_MODEL_NAME)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch, fake_api: FakeKubeApi, predictor):
    """Point the kubernetes client at the fake API, and the fake's predictor address at a real endpoint."""
    fake_api.address_template = predictor.base_url
    # The step polls every 5 s; pods that are ready on the first reconcile keep these tests short.
    fake_api.controller = lambda obj: Outcome("ready", after_reads=1)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": fake_api.base_url}}],
        "users": [{"name": "runner", "user": {"token": "fake"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "runner"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # The client reads $KUBECONFIG once, at import time.
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path
