"""The local deploy target: a content-addressed model store that `pipeline.py serve` reads.

Layout, under the store root:

    <model_name>/<sha256[:16]>/          a read-only copy of the model directory (one per model version)
    <model_name>/deployment.json         which version is live, with its lineage (replaced atomically)
    <model_name>/history.jsonl           every deployment, oldest first (nothing is lost on re-deploy)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from components.model_artifact import ModelCard, verify_model_dir

DEPLOYMENT_FILENAME = "deployment.json"
HISTORY_FILENAME = "history.jsonl"
_VERSION_DIGITS = 16
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


class NothingDeployedError(LookupError):
    """No model has been deployed to the local store under that name."""


@dataclass(frozen=True)
class LocalDeployment:
    """One deployment of a model version to the local store."""

    model_name: str
    version: str
    model_dir: str
    model_sha256: str
    deployed_at: str
    run_id: str
    metrics: dict[str, float]
    source_uri: str


def publish(
    model_dir: Path,
    store_root: Path,
    *,
    model_name: str,
    run_id: str = "",
    metrics: Mapping[str, float] | None = None,
    expected_sklearn: str | None = None,
) -> LocalDeployment:
    """Verify `model_dir`, copy it into the store (once per version) and make it the live version.

    Re-publishing the same model is idempotent: the version directory is reused and only the pointer changes.
    """
    _check_name(model_name)
    card: ModelCard = verify_model_dir(model_dir, expected_sklearn=expected_sklearn)
    model_root = store_root / model_name
    model_root.mkdir(parents=True, exist_ok=True)
    version = card.model_sha256[:_VERSION_DIGITS]
    target = model_root / version
    if not target.is_dir():
        _copy_read_only(model_dir, target)
    verify_model_dir(target, expected_sklearn=expected_sklearn)
    deployment = LocalDeployment(
        model_name=model_name,
        version=version,
        model_dir=str(target.resolve()),
        model_sha256=card.model_sha256,
        deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        source_uri=str(model_dir),
    )
    record = json.dumps(asdict(deployment), sort_keys=True)
    _atomic_write(model_root / DEPLOYMENT_FILENAME, record + "\n")
    with (model_root / HISTORY_FILENAME).open("a") as history:
        history.write(record + "\n")
    return deployment


def current(store_root: Path, model_name: str) -> LocalDeployment:
    """The live deployment of `model_name`, or `NothingDeployedError` saying how to make one."""
    _check_name(model_name)
    pointer = store_root / model_name / DEPLOYMENT_FILENAME
    if not pointer.is_file():
        known = sorted(p.parent.name for p in store_root.glob(f"*/{DEPLOYMENT_FILENAME}"))
        hint = f" Deployed models here: {', '.join(known)}." if known else ""
        raise NothingDeployedError(
            f"no model named '{model_name}' has been deployed to {store_root}; run `python pipeline.py run` first."
            + hint
        )
    return LocalDeployment(**json.loads(pointer.read_text()))


def _check_name(model_name: str) -> None:
    # The name becomes a directory and a URL path segment: keep it to what KServe accepts (DNS-1035 label).
    if not _DNS1035.fullmatch(model_name):
        raise ValueError(
            f"model name '{model_name}' must be a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter, at most 63 characters"
        )


def _copy_read_only(source: Path, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
                os.chmod(staging / item.name, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        os.chmod(staging, 0o555)  # noqa: S103  # readable by the server user, writable by nobody
        # A rename is atomic: a concurrent reader sees no version or a whole one, never half a copy.
        os.rename(staging, target)
    except BaseException:
        os.chmod(staging, 0o755)  # noqa: S103  # make the failed copy removable again
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _atomic_write(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the server may run as another user
    os.replace(tmp, path)
