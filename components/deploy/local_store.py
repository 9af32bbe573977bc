"""The local deploy target: a content-addressed model store that `pipeline.py serve` reads.

Layout, under the store root:

    <model_name>/<version>/              a read-only copy of the model directory; <version> = version_id(digest)
    <model_name>/deployment.json         which version is live, its digest and lineage (replaced atomically)
    <model_name>/history.jsonl           every deployment, promotion and rollback, oldest first (nothing is lost)
    <model_name>/.lock                   serializes publishes of one model (flock), across threads and processes

The version is named after the directory digest (every file, `model.json` included), so a retrain whose card
differs (renamed columns, another training set) is a new version even if `model.joblib` is byte-identical. The
pointer records the full digest; `pipeline.py serve` passes it to the server, which refuses a directory that does
not match it.

Crash safety: the version is staged under a hidden name and renamed into place; the pointer is written with an
atomic, fsynced replace, then the history line is appended and fsynced; a publish reports success only after both
are on disk. A publish killed at any point leaves the previous live version intact; the next publish removes its
staging leftovers and appends a history line the killed one wrote to the pointer but not to the history.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path

from components.atomic import append_line, atomic_write_text, fsync_directory
from components.constants import ACTION_DEPLOY, ACTION_PROMOTE, ACTION_ROLLBACK
from components.deploy.versions import VersionSummary, resolve_version, rollback_target, summarize
from components.model_artifact import (
    ModelFiles,
    ModelIntegrityError,
    check_digest,
    check_sklearn_version,
    load_model_files,
    version_id,
)
from components.names import check_model_name

DEPLOYMENT_FILENAME = "deployment.json"
HISTORY_FILENAME = "history.jsonl"
LOCK_FILENAME = ".lock"
STAGING_PREFIX = ".staging-"
"""Hidden prefix of a version being copied; anything left with it is debris of a killed publish."""
_TEMP_PREFIXES = (STAGING_PREFIX, f".{DEPLOYMENT_FILENAME}-")


class LocalStoreError(RuntimeError):
    """The store cannot be read or written (permissions, a full disk, a damaged entry); one line says which."""


class NothingDeployedError(LocalStoreError, LookupError):
    """No model has been deployed to the local store under that name."""


@dataclass(frozen=True)
class LocalDeployment:
    """One deployment of a model version to the local store."""

    model_name: str
    version: str
    digest: str
    """`sha256:<hex>` over every file of the version directory: the pin the server checks before loading."""
    model_dir: str
    model_sha256: str
    deployed_at: str
    run_id: str
    run_name: str
    metrics: dict[str, float]
    source_uri: str
    training_data_fingerprint: str = ""
    """The card's fingerprint of the training data (empty in records written before it was recorded)."""
    action: str = ACTION_DEPLOY
    """What made this version live: `deploy` (a pipeline run), `promote` or `rollback` (`pipeline.py models`)."""


_REQUIRED = [f.name for f in fields(LocalDeployment) if f.default is MISSING]


def publish(
    model_dir: Path,
    store_root: Path,
    *,
    model_name: str,
    run_id: str = "",
    run_name: str = "",
    metrics: Mapping[str, float] | None = None,
    expected_sklearn: str | None = None,
    expected_digest: str | None = None,
) -> LocalDeployment:
    """Verify `model_dir`, copy it into the store (once per version) and make it the live version.

    Re-publishing the same directory is idempotent, also concurrently: one version directory, one pointer, one
    history line per call.

    Args:
        model_dir: The trained model directory.
        store_root: Root of the store (created if missing).
        model_name: A model name (`components.names.check_model_name`).
        run_id: The pipeline run, recorded as lineage.
        run_name: The pipeline run's name, recorded as lineage.
        metrics: Evaluation metrics, recorded as lineage.
        expected_sklearn: Refuse a model trained with another scikit-learn version.
        expected_digest: Refuse a directory whose digest is not this pin (e.g. the train step's `model_digest`).

    Raises:
        InvalidNameError: A bad model name.
        ModelIntegrityError: The directory does not verify, or the store holds a damaged copy of this version.
        LocalStoreError: The store cannot be written (read-only root, permissions, full disk).
    """
    check_model_name(model_name)
    # The copy is written from these in-memory bytes: what lands in the store is exactly what was verified.
    files = load_model_files(model_dir, expected_digest=expected_digest)
    check_sklearn_version(files.card, expected_sklearn)
    model_root = store_root / model_name
    try:
        model_root.mkdir(parents=True, exist_ok=True)
        with _locked(model_root):
            _remove_leftovers(model_root)
            target = _ensure_version(model_root, files)
            deployment = LocalDeployment(
                model_name=model_name,
                version=target.name,
                digest=files.digest,
                model_dir=str(target.resolve()),
                model_sha256=files.card.model_sha256,
                deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                run_id=run_id,
                run_name=run_name,
                metrics={k: float(v) for k, v in (metrics or {}).items()},
                source_uri=str(model_dir),
                training_data_fingerprint=files.card.training_data_fingerprint,
            )
            _go_live(model_root, deployment)
    except OSError as exc:
        raise LocalStoreError(_os_error(exc, store_root)) from None
    return deployment


def _go_live(model_root: Path, deployment: LocalDeployment) -> None:
    """Point at `deployment` and record it: the pointer first (atomic), then the history line (under the lock)."""
    record = json.dumps(asdict(deployment), sort_keys=True)
    _repair_history(model_root)
    atomic_write_text(model_root / DEPLOYMENT_FILENAME, record + "\n")
    append_line(model_root / HISTORY_FILENAME, record)


Chooser = Callable[[Sequence[LocalDeployment], LocalDeployment], str]
"""Given the history (oldest first) and the live deployment, the version to make live (raises to refuse)."""


def switch(store_root: Path, model_name: str, choose: Chooser, *, action: str) -> tuple[LocalDeployment, bool]:
    """Make an earlier version live again (promote, rollback): the pointer flips atomically and the flip is recorded.

    `choose` runs under the model's lock on the history as it is then, so two switches (or a switch and a publish)
    never decide on a stale history. The chosen version's directory is verified against its digest before the
    pointer moves: a damaged copy is refused, never served.

    Args:
        store_root: Root of the store.
        model_name: The model.
        choose: Picks the version (see `Chooser`); its exceptions pass through unchanged.
        action: Recorded as the new pointer's `action` (`promote` or `rollback`).

    Returns:
        The live deployment afterwards, and whether it changed (False: the chosen version was already live).

    Raises:
        NothingDeployedError: Nothing deployed under that name.
        ModelIntegrityError: The chosen version's directory does not match its recorded digest.
        LocalStoreError: The store cannot be read or written.
    """
    live = current(store_root, model_name)
    model_root = store_root / model_name
    try:
        with _locked(model_root):
            _repair_history(model_root)
            live = current(store_root, model_name)
            records = history(store_root, model_name)
            version = choose(records, live)
            if version == live.version:
                return live, False
            source = next(r for r in reversed(records) if r.version == version)
            target = model_root / version
            # The same check the server makes at start: every file against the digest recorded at publish time.
            load_model_files(target, expected_digest=source.digest)
            deployment = replace(
                source,
                model_dir=str(target.resolve()),
                deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
                action=action,
            )
            _go_live(model_root, deployment)
    except OSError as exc:
        raise LocalStoreError(_os_error(exc, store_root)) from None
    return deployment, True


def versions(store_root: Path, model_name: str) -> list[VersionSummary[LocalDeployment]]:
    """Every version of `model_name` the store recorded, newest first, the live one marked (`versions.summarize`).

    Raises:
        NothingDeployedError: Nothing deployed under that name.
    """
    live = current(store_root, model_name)
    return summarize(history(store_root, model_name), live.version)


def promote(store_root: Path, model_name: str, version: str) -> tuple[LocalDeployment, bool]:
    """Make the recorded `version` (an id or an unambiguous prefix) live; see `switch`.

    Raises:
        UnknownVersionError: No recorded version matches.
    """
    return switch(
        store_root,
        model_name,
        lambda records, _live: resolve_version(records, version, model_name=model_name),
        action=ACTION_PROMOTE,
    )


def rollback(store_root: Path, model_name: str) -> tuple[LocalDeployment, bool]:
    """Make the newest earlier version that was not rolled back live again; see `switch`.

    Raises:
        NothingToRollBackError: No such version.
    """
    return switch(
        store_root,
        model_name,
        lambda records, live: rollback_target(records, live.version, model_name=model_name),
        action=ACTION_ROLLBACK,
    )


def history(store_root: Path, model_name: str) -> list[LocalDeployment]:
    """Every deployment, promotion and rollback of `model_name`, oldest first (a torn last line is skipped)."""
    check_model_name(model_name)
    path = store_root / model_name / HISTORY_FILENAME
    try:
        text = path.read_text() if path.is_file() else ""
    except OSError as exc:
        raise LocalStoreError(_os_error(exc, store_root)) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(_parse_record(json.loads(line), f"{path}:{number}"))
        except (json.JSONDecodeError, RecursionError):
            if number == len(text.splitlines()) and not text.endswith("\n"):
                continue  # a line torn by a crash; the next publish truncates it
            raise LocalStoreError(
                f"{path}:{number} is not valid JSON; move the file away to start a new history"
            ) from None
    return records


def current(store_root: Path, model_name: str) -> LocalDeployment:
    """The live deployment of `model_name`, or `NothingDeployedError` saying how to make one."""
    check_model_name(model_name)
    pointer = store_root / model_name / DEPLOYMENT_FILENAME
    try:
        if not pointer.is_file():
            known = sorted(p.parent.name for p in store_root.glob(f"*/{DEPLOYMENT_FILENAME}"))
            hint = f" Deployed models here: {', '.join(known)}." if known else ""
            raise NothingDeployedError(
                f"no model named '{model_name}' has been deployed to {store_root}; run `python pipeline.py run` "
                "first." + hint
            )
        text = pointer.read_text()
    except OSError as exc:
        raise LocalStoreError(_os_error(exc, store_root)) from None
    return _parse_pointer(pointer, text)


def latest(store_root: Path) -> LocalDeployment:
    """The deployment made last, over every model in the store (what `pipeline.py serve` serves by default)."""
    try:
        pointers = [(p.stat().st_mtime_ns, p) for p in store_root.glob(f"*/{DEPLOYMENT_FILENAME}") if p.is_file()]
    except OSError as exc:
        raise LocalStoreError(_os_error(exc, store_root)) from None
    if not pointers:
        raise NothingDeployedError(f"nothing has been deployed to {store_root}; run `python pipeline.py run` first.")
    # deployed_at has whole seconds; the pointer's mtime breaks ties within one second.
    newest = max(pointers, key=lambda item: (current(store_root, item[1].parent.name).deployed_at, item[0]))
    return current(store_root, newest[1].parent.name)


def _parse_pointer(pointer: Path, text: str) -> LocalDeployment:
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise LocalStoreError(f"{pointer} is not valid JSON; publish the model again") from None
    return _parse_record(raw, str(pointer))


def _parse_record(raw: object, where: str) -> LocalDeployment:
    """A pointer or history record; fields added later (fingerprint, action) take their defaults when absent."""
    if not isinstance(raw, dict) or any(name not in raw for name in _REQUIRED):
        missing = [name for name in _REQUIRED if not isinstance(raw, dict) or name not in raw]
        raise LocalStoreError(
            f"{where} has no {', '.join(missing[:3])} (written by an older version of this project?); "
            "publish the model again"
        )
    try:
        check_digest(raw["digest"])
    except ModelIntegrityError as exc:
        raise LocalStoreError(f"{where}: {exc}") from None
    return LocalDeployment(**{f.name: raw[f.name] for f in fields(LocalDeployment) if f.name in raw})


@contextlib.contextmanager
def _locked(model_root: Path) -> Iterator[None]:
    # flock, not a lock object: publishes come from threads, KFP step processes and parallel runs alike. Each
    # call opens its own descriptor, so threads of one process exclude each other too.
    fd = os.open(model_root / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock, also when the process is killed


def _remove_leftovers(model_root: Path) -> None:
    """Delete what killed publishes left behind (only ever called under the lock, so nobody is still writing)."""
    for entry in model_root.iterdir():
        if not entry.name.startswith(_TEMP_PREFIXES):
            continue
        if entry.is_dir() and not entry.is_symlink():
            os.chmod(entry, 0o755)  # noqa: S103  # staging dirs are made read-only before the rename
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _ensure_version(model_root: Path, files: ModelFiles) -> Path:
    """The version directory for `files`, copied now unless an identical one is already there."""
    target = model_root / version_id(files.digest)
    if target.exists():
        try:
            load_model_files(target, expected_digest=files.digest)
        except ModelIntegrityError as exc:
            # 12 hex digits can collide, and a version directory can be damaged by hand: never serve either.
            raise ModelIntegrityError(
                f"the store already holds version {target.name} but it does not match this model ({exc}); "
                f"move {target} away and publish again"
            ) from None
        return target
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{target.name}-", dir=model_root))
    for name, data in files.contents.items():
        path = staging / name
        with path.open("xb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
            os.fsync(out.fileno())
    os.chmod(staging, 0o555)  # noqa: S103  # readable by the server user, writable by nobody
    fsync_directory(staging)
    # A rename is atomic: a concurrent reader sees no version or a whole one, never half a copy.
    os.rename(staging, target)
    fsync_directory(model_root)
    return target


def _repair_history(model_root: Path) -> None:
    """Make the history end with the live pointer's record (a publish killed between the two writes)."""
    pointer, history = model_root / DEPLOYMENT_FILENAME, model_root / HISTORY_FILENAME
    if not pointer.is_file():
        return
    live = pointer.read_text().strip()
    data = history.read_bytes() if history.is_file() else b""
    if data and not data.endswith(b"\n"):  # a torn last line (power loss mid-append): drop it
        keep = data.rfind(b"\n") + 1
        os.truncate(history, keep)
        data = data[:keep]
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode(errors="replace")
    if live and live != last:
        append_line(history, live)


def _os_error(exc: OSError, store_root: Path) -> str:
    where = exc.filename or store_root
    reason = exc.strerror or type(exc).__name__
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EROFS):
        return (
            f"cannot write the model store {store_root}: {reason} ({where}); choose a writable --root or fix the "
            "directory's permissions"
        )
    return f"model store {store_root}: {reason} ({where})"
