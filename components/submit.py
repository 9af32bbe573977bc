"""Submit the compiled pipeline to a Kubeflow Pipelines endpoint (the cluster path's `pipeline.py submit`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

PORT_FORWARD_HINT = "kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80, then --endpoint http://127.0.0.1:8080"


class SubmitError(RuntimeError):
    """The run could not be submitted; the message says why and what to try."""


def submit_pipeline(
    package_path: Path | None,
    *,
    endpoint: str,
    arguments: Mapping[str, Any],
    service_account: str | None,
    experiment: str | None,
    run_name: str | None = None,
    enable_caching: bool | None = None,
    namespace: str | None = None,
    existing_token: str | None = None,
    pipeline_id: str | None = None,
    pipeline_version_id: str | None = None,
) -> str:
    """Create a run of a compiled pipeline package on KFP and return its run id.

    Args:
        package_path: The compiled pipeline (`pipeline.yaml`).
        endpoint: KFP API base URL, e.g. `http://127.0.0.1:8080` through a port-forward of `ml-pipeline-ui`.
        arguments: Pipeline parameters.
        service_account: Kubernetes service account the run's pods use (None: KFP's default, `pipeline-runner`
            on standalone KFP). The deploy step's RBAC (Role `kfp-isvc-deployer`) must be bound to it.
        experiment: Experiment name (None: KFP's `Default`).
        run_name: Display name of the run (None: KFP derives one).
        enable_caching: Override the pipeline's caching for this run (None: keep what each task says).
        namespace: Kubeflow profile namespace on multi-user installs (None: single-user).
        existing_token: Bearer token for installs behind authentication.
        pipeline_id: Run a pipeline already uploaded to KFP instead of a package (then `package_path` is None).
        pipeline_version_id: Its version (None: the newest one).

    Returns:
        The new run's id.

    Raises:
        SubmitError: Missing package, malformed endpoint, unreachable endpoint or a refused request.
    """
    if pipeline_id:
        package_path = None
    elif package_path is None:
        raise SubmitError("give a compiled pipeline package or the id of an uploaded pipeline")
    elif not package_path.is_file():
        raise SubmitError(
            f"pipeline package {package_path} does not exist; compile it first: python pipeline.py compile"
        )
    if package_path is not None and package_path.suffix not in (".yaml", ".yml", ".json"):
        raise SubmitError(f"pipeline package {package_path} must be the compiled .yaml (or .json)")
    if not endpoint.startswith(("http://", "https://")):
        raise SubmitError(f"endpoint {endpoint!r} must be an http(s):// URL, e.g. after {PORT_FORWARD_HINT}")

    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        client = kfp.Client(host=endpoint.rstrip("/"), namespace=namespace or "kubeflow", existing_token=existing_token)
        if pipeline_id:
            # kfp.Client.run_pipeline needs the version too; the newest one is what `kfp pipeline create` made.
            version = pipeline_version_id
            if not version:
                listed = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
                if not listed.pipeline_versions:
                    raise SubmitError(f"pipeline {pipeline_id} on {endpoint} has no versions")
                version = listed.pipeline_versions[0].pipeline_version_id
            experiment_id = client.create_experiment(experiment or "Default", namespace=namespace).experiment_id
            run = client.run_pipeline(
                experiment_id, run_name or f"{pipeline_id}-run", params=dict(arguments), pipeline_id=pipeline_id,
                version_id=version, enable_caching=enable_caching, service_account=service_account,
            )  # fmt: skip
            return str(run.run_id)
        result = client.create_run_from_pipeline_package(
            str(package_path),
            arguments=dict(arguments),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            enable_caching=enable_caching,
            service_account=service_account,
        )
    except ApiException as exc:
        raise SubmitError(f"KFP at {endpoint} refused the run: HTTP {exc.status} {exc.reason}: {exc.body}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise SubmitError(
            f"could not reach KFP at {endpoint} ({exc}); is it port-forwarded? {PORT_FORWARD_HINT}"
        ) from exc
    return str(result.run_id)
