"""Schedule the monitoring pipeline on KFP as a recurring run, with parameters typed as the pipeline declares.

`kfp recurring-run create ... window_hours=24` (kfp 2.17) sends every parameter as a string, and the API server
refuses a string for a `double` parameter (kubeflow/pipelines#11607). Here the values are converted to the types
in the compiled spec's `root.inputDefinitions` before `kfp.Client.create_recurring_run` sends them, so a double
stays a JSON number.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

KFP_CRON_FIELDS = 6
"""KFP's cron expressions have a seconds field first: `0 0 6 * * *` is 06:00 every day."""


class ScheduleError(RuntimeError):
    """The recurring run could not be created; the message says why."""


def check_cron(expression: str) -> str:
    """The expression, if it has KFP's six fields; else `ScheduleError` with an example."""
    if len(expression.split()) != KFP_CRON_FIELDS:
        raise ScheduleError(
            f"cron expression {expression!r} has {len(expression.split())} fields; KFP's have six, seconds first, "
            "e.g. '0 0 6 * * *' (06:00 daily) or '0 0 * * * *' (hourly)"
        )
    return expression


def declared_parameter_types(package_path: Path) -> dict[str, str]:
    """Parameter name -> KFP type (`NUMBER_DOUBLE`, `NUMBER_INTEGER`, `STRING`, ...) from a compiled pipeline."""
    import yaml

    spec = next(iter(yaml.safe_load_all(package_path.read_text(encoding="utf-8"))))
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return {name: entry["parameterType"] for name, entry in declared.items()}


def typed_parameters(types: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` converted to the declared types; refuses names the pipeline does not have, in one line."""
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ScheduleError(f"the monitoring pipeline has no parameter(s) {', '.join(unknown)}")
    converters = {"NUMBER_DOUBLE": float, "NUMBER_INTEGER": int, "STRING": str, "BOOLEAN": bool}
    typed: dict[str, Any] = {}
    for name, value in values.items():
        convert = converters.get(types[name])
        try:
            typed[name] = convert(value) if convert else value
        except (TypeError, ValueError):
            raise ScheduleError(f"parameter {name}={value!r} is not a {types[name]}") from None
    return typed


def create_monitoring_schedule(
    package_path: Path,
    *,
    endpoint: str,
    cron: str,
    parameters: Mapping[str, Any],
    job_name: str,
    experiment: str,
    max_concurrency: int = 1,
    service_account: str | None = None,
    namespace: str | None = None,
) -> str:
    """Create a recurring run of the compiled monitoring pipeline; returns its id.

    Args:
        package_path: The compiled monitoring pipeline.
        endpoint: KFP API base URL (e.g. a port-forward of `ml-pipeline-ui`).
        cron: KFP cron expression (six fields).
        parameters: Pipeline parameters; converted to the types the package declares.
        job_name: The recurring run's display name.
        experiment: Experiment it runs in (created when missing).
        max_concurrency: Runs of it at the same time.
        service_account: Run service account (None: KFP's default).
        namespace: Profile namespace on multi-user Kubeflow.

    Raises:
        ScheduleError: A bad cron expression or parameter, an unreachable endpoint or a refused request.
    """
    from components.submit import PORT_FORWARD_HINT

    check_cron(cron)
    if not endpoint.startswith(("http://", "https://")):
        raise ScheduleError(f"endpoint {endpoint!r} must be an http(s):// URL, e.g. after {PORT_FORWARD_HINT}")
    params = typed_parameters(declared_parameter_types(package_path), parameters)

    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        client = kfp.Client(host=endpoint.rstrip("/"), namespace=namespace or "kubeflow")
        experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
        created = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=True,  # a missed window is not worth a burst of catch-up runs over the same logs
            params=params,
            pipeline_package_path=str(package_path),
            service_account=service_account,
        )
    except ApiException as exc:
        raise ScheduleError(f"KFP at {endpoint} refused the recurring run: HTTP {exc.status} {exc.reason}") from exc
    except (urllib3.exceptions.HTTPError, TimeoutError) as exc:  # kfp.Client: TimeoutError when healthz fails
        raise ScheduleError(f"could not reach KFP at {endpoint} ({exc}); {PORT_FORWARD_HINT}") from exc
    return str(created.recurring_run_id)
