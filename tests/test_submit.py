"""`submit_pipeline` through the real kfp.Client against a fake KFP API over HTTP.

No `from __future__ import annotations` here: KFP reads component annotations as real types.
"""

import socket
from pathlib import Path

import pytest

from components.constants import KFP_RUN_SERVICE_ACCOUNT
from components.submit import SubmitError, submit_pipeline

# kfp.Client warns on every construction that it needs a v2 backend; we are one.
pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(message: str) -> str:
        return message

    @dsl.pipeline(name="submit-probe")
    def probe(message: str = "hi"):
        echo(message=message)

    path = tmp_path_factory.mktemp("pkg") / "pipeline.yaml"
    compiler.Compiler().compile(probe, str(path))
    return path


def test_submit_creates_the_experiment_and_a_run_with_the_service_account(package, kfp_api):
    run_id = submit_pipeline(
        package,
        endpoint=kfp_api.base_url,
        arguments={"message": "hello"},
        service_account=KFP_RUN_SERVICE_ACCOUNT,
        experiment="sklearn-kserve",
        run_name="probe-1",
    )

    (run,) = kfp_api.runs()
    assert run_id == "run-1"
    assert run["service_account"] == KFP_RUN_SERVICE_ACCOUNT
    assert run["runtime_config"]["parameters"] == {"message": "hello"}
    assert run["experiment_id"] == kfp_api.experiments["sklearn-kserve"]
    assert run["display_name"] == "probe-1"
    assert run["pipeline_spec"]["pipelineInfo"]["name"] == "submit-probe"


def test_a_second_submit_reuses_the_experiment(package, kfp_api):
    for _ in range(2):
        submit_pipeline(package, endpoint=kfp_api.base_url, arguments={}, service_account=None, experiment="exp")
    assert len(kfp_api.experiments) == 1
    assert [r["experiment_id"] for r in kfp_api.runs()] == [kfp_api.experiments["exp"]] * 2


def test_a_refused_run_is_a_clear_error(package, kfp_api):
    kfp_api.refuse_runs_with = 403
    with pytest.raises(SubmitError, match="refused the run: HTTP 403"):
        submit_pipeline(package, endpoint=kfp_api.base_url, arguments={}, service_account=None, experiment=None)


def test_an_unreachable_endpoint_suggests_the_port_forward(package, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(SubmitError, match="port-forward"):
        submit_pipeline(
            package, endpoint=f"http://127.0.0.1:{port}", arguments={}, service_account=None, experiment=None
        )


@pytest.mark.parametrize(
    ("path_name", "endpoint", "complaint"),
    [("missing.yaml", "http://x", "compile it first"), ("pipeline.yaml", "localhost:8080", "http")],
)
def test_bad_inputs_fail_before_any_request(package, tmp_path, path_name, endpoint, complaint):
    path = package if path_name == "pipeline.yaml" else tmp_path / path_name
    with pytest.raises(SubmitError, match=complaint):
        submit_pipeline(path, endpoint=endpoint, arguments={}, service_account=None, experiment=None)
