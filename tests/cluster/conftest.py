"""Fixtures for the cluster path: a fake Kubernetes API and a predictor endpoint, both over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_kube_api import FakeKubeApi, FakePredictor
from kserve_webhook import webhook_errors
from kube_schemas import crd_errors

from components.constants import DEFAULT_MODEL_NAME


@pytest.fixture
def fake_api(shared_schemas: Path) -> Iterator[FakeKubeApi]:
    """A running fake API server that rejects what KServe's CRD schema (made strict) and webhook would reject."""
    api = FakeKubeApi(validator=lambda obj: crd_errors(obj, shared_schemas), webhook=webhook_errors)
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
