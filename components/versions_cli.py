"""`python pipeline.py models list | promote VERSION | rollback`: the deployed versions of a model, on either target.

    python pipeline.py models list [--json]              every recorded version, the live one marked with `*`
    python pipeline.py models promote VERSION            make a recorded version live (an id or a prefix of one)
    python pipeline.py models rollback                   go back to the newest earlier version not rolled back

`--target local` (default) works on the model store under `--root`; `--target kubernetes` on the InferenceService
and its version record in `--namespace`, through the kubeconfig (or the in-cluster config), and promote/rollback
there wait for the new pods and smoke-test them exactly as the deploy step does. Errors are one line, exit status 1.

This module imports only the standard library and the constants at load time: `components/cli.py` calls
`add_models_command` for every `pipeline.py` invocation.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from components.constants import (
    DEFAULT_DEPLOY_TIMEOUT_SECONDS,
    DEFAULT_LOCAL_ROOT,
    DEFAULT_MODEL_NAME,
    DEFAULT_NAMESPACE,
    DEPLOY_TARGET_KUBERNETES,
    DEPLOY_TARGET_LOCAL,
    DEPLOY_TARGETS,
    LOCAL_STORE_DIRNAME,
    VERSION_STATE_LIVE,
)

ACTION_LIST = "list"
ACTION_PROMOTE = "promote"
ACTION_ROLLBACK = "rollback"


def add_models_command(commands: Any) -> argparse.ArgumentParser:
    """Register `models` (with `list`, `promote VERSION`, `rollback`) on `pipeline.py`'s sub-command parsers.

    Args:
        commands: What `ArgumentParser.add_subparsers()` returned; each parser sets `handler=models_command`.

    Returns:
        The `models` parser.
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--model-name",
        default=None,
        help=f"the model (default: local: the model deployed last; kubernetes: {DEFAULT_MODEL_NAME})",
    )
    common.add_argument("--target", choices=DEPLOY_TARGETS, default=DEPLOY_TARGET_LOCAL, help="(default: %(default)s)")
    common.add_argument(
        "--namespace", default=DEFAULT_NAMESPACE, help="the InferenceService's namespace (kubernetes; %(default)s)"
    )
    common.add_argument(
        "--root", type=Path, default=Path(DEFAULT_LOCAL_ROOT), help="local outputs holding the model store (local)"
    )
    switching = argparse.ArgumentParser(add_help=False)
    switching.add_argument(
        "--timeout-seconds",
        type=float,
        default=DEFAULT_DEPLOY_TIMEOUT_SECONDS,
        help="how long to wait for the new pods (kubernetes; %(default)g)",
    )
    switching.add_argument(
        "--smoke-url",
        default=None,
        help="base URL of the predictor for the smoke predict (kubernetes; default: the URL the InferenceService "
        "reports, reachable inside the cluster)",
    )
    switching.add_argument(
        "--mlflow-tracking-uri",
        default="",
        help="also move the MLflow registry alias `champion` to the version now live (needs the `mlflow` extra)",
    )
    models = commands.add_parser("models", help="list, promote or roll back the deployed versions of a model")
    actions = models.add_subparsers(dest="models_action", metavar="{list,promote,rollback}")
    listing = actions.add_parser(ACTION_LIST, parents=[common], help="every recorded version; * marks the live one")
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    promote = actions.add_parser(
        ACTION_PROMOTE, parents=[common, switching], help="make a recorded version live (and record it)"
    )
    promote.add_argument("version", help="a version id from `models list` (or an unambiguous prefix, 4+ characters)")
    actions.add_parser(
        ACTION_ROLLBACK,
        parents=[common, switching],
        help="make the newest earlier version that was not rolled back live again (and record it)",
    )
    models.set_defaults(handler=models_command, models_action=None)
    return models


def models_command(args: argparse.Namespace) -> int:
    """Run `models <action>`; returns the exit status (0 done, 1 refused or failed with one line on stderr)."""
    action = getattr(args, "models_action", None)
    if action is None:
        print("pipeline.py models: choose one of list, promote VERSION, rollback", file=sys.stderr)
        return 2
    try:
        if args.target == DEPLOY_TARGET_KUBERNETES:
            return _kubernetes(args, action)
        return _local(args, action)
    except Exception as exc:  # refusals become one line; anything else is re-raised
        if not _is_refusal(exc):
            raise
        print(f"pipeline.py models {action}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _is_refusal(exc: Exception) -> bool:
    """A user-facing refusal (bad name, unknown version, store or cluster problem), not a bug."""
    from components.deploy.cluster import DeployError
    from components.deploy.inference_service import InferenceServiceSpecError
    from components.deploy.local_store import LocalStoreError
    from components.deploy.versions import VersionError
    from components.model_artifact import ModelIntegrityError
    from components.names import InvalidNameError
    from components.tracking import TrackingError

    refusals: tuple[type[Exception], ...] = (
        TrackingError,
        VersionError,
        LocalStoreError,
        ModelIntegrityError,
        InvalidNameError,
        DeployError,
        InferenceServiceSpecError,
    )
    if isinstance(exc, refusals):
        return True
    from kubernetes.config import ConfigException

    return isinstance(exc, ConfigException)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _local(args: argparse.Namespace, action: str) -> int:
    from components.deploy import local_store

    store = args.root.resolve() / LOCAL_STORE_DIRNAME
    name = args.model_name or local_store.latest(store).model_name
    if action == ACTION_LIST:
        summaries = local_store.versions(store, name)
        _print_list(args, name, f"model store {store}", summaries)
        return 0
    if action == ACTION_PROMOTE:
        live, changed = local_store.promote(store, name, args.version)
    else:
        live, changed = local_store.rollback(store, name)
    _print_switch(action, name, live.version, changed, where=f"{live.model_dir}; restart `pipeline.py serve`")
    _move_champion_alias(args, name, live.digest)
    return 0


def _kubernetes(args: argparse.Namespace, action: str) -> int:
    from components.deploy import cluster_versions
    from components.names import check_model_name

    name = check_model_name(args.model_name or DEFAULT_MODEL_NAME)
    if action == ACTION_LIST:
        summaries = cluster_versions.list_versions(args.namespace, name)
        _print_list(args, name, f"InferenceService {args.namespace}/{name}", summaries)
        return 0
    options = {"timeout_seconds": args.timeout_seconds, "smoke_base_url": args.smoke_url}
    if action == ACTION_PROMOTE:
        record, changed = cluster_versions.promote(args.namespace, name, args.version, **options)
    else:
        record, changed = cluster_versions.rollback(args.namespace, name, **options)
    _print_switch(action, name, record.version, changed, where=f"{record.storage_uri}, ready and smoke-tested")
    _move_champion_alias(args, name, record.digest)
    return 0


def _move_champion_alias(args: argparse.Namespace, name: str, digest: str) -> None:
    """With `--mlflow-tracking-uri`: the registry's `champion` follows what is live (nothing imported otherwise)."""
    if not args.mlflow_tracking_uri:
        return
    from components.tracking import CHAMPION_ALIAS, champion_for_digest

    version = champion_for_digest(args.mlflow_tracking_uri, model_name=name, digest=digest)
    if version is None:
        print(f"MLflow: no registered version of {name} holds {digest[:19]}...; {CHAMPION_ALIAS} not moved")
    else:
        print(f"MLflow: {name}@{CHAMPION_ALIAS} -> version {version}")


def _print_switch(action: str, name: str, version: str, changed: bool, *, where: str) -> None:
    if not changed:
        print(f"{name}: version {version} is live already; nothing changed")
        return
    verb = "promoted" if action == ACTION_PROMOTE else "rolled back to"
    print(f"{name}: {verb} version {version} ({where})")


def _print_list(args: argparse.Namespace, name: str, where: str, summaries: Sequence[Any]) -> None:
    if args.json:
        records = [
            {"version": s.version, "state": s.state, "times_live": s.events, **asdict(s.record)} for s in summaries
        ]
        print(json.dumps(records, indent=2, sort_keys=True))
        return
    print(f"{name} ({where}): {len(summaries)} version{'s' if len(summaries) != 1 else ''}, * = live")
    # The version is the digest's first 12 hex digits; `--json` has the whole digest and every field.
    header = ("", "VERSION", "STATE", "SINCE (UTC)", "BY", "RUN", "METRICS", "DATA")
    rows: list[tuple[str, ...]] = [header]
    for summary in summaries:
        record = summary.record
        run = record.run_name or record.run_id or "-"
        if record.run_name and record.run_id:
            run = f"{record.run_name} ({record.run_id[:8]})"
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(record.metrics.items())) or "-"
        rows.append(
            (
                "*" if summary.state == VERSION_STATE_LIVE else "",
                summary.version,
                summary.state,
                record.deployed_at.replace("+00:00", "Z"),
                record.action,
                run,
                metrics,
                (record.training_data_fingerprint or "-")[:12],
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    """`models ...` on its own (what `pipeline.py models ...` runs once components/cli.py registers it)."""
    parser = argparse.ArgumentParser(prog="pipeline.py")
    add_models_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    return int(args.handler(args)) if hasattr(args, "handler") else 2


if __name__ == "__main__":
    sys.exit(main())
