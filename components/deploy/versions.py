"""Model versions over a deploy history: which one is live, what each was, where a rollback goes.

Both targets keep the same history: one record per event (a deploy, a promotion, a rollback), oldest first. Locally
it is the store's `history.jsonl` (`local_store`); on a cluster the ConfigMap `<model>-versions` (`cluster_versions`).
The state of a version is derived from that sequence, never stored beside it, so a record cannot disagree with
the history it summarizes:

- `live`: the version the target serves now (the local pointer, or the InferenceService's digest pin);
- `previous`: it was live, then a deploy or a promotion replaced it;
- `rolled-back`: it was live, then a rollback left it. A later rollback skips it, so repeated rollbacks walk
  further back instead of bouncing between two versions; deploying or promoting it makes it live again;
- `failed` (cluster only): every deploy of it failed and was undone, so it never served; a rollback skips it.

Rollback goes to the newest recorded version that is neither live nor rolled back; promote goes to any recorded
version, named by its id or an unambiguous prefix of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from components.constants import (
    ACTION_FAILED,
    ACTION_ROLLBACK,
    VERSION_STATE_FAILED,
    VERSION_STATE_LIVE,
    VERSION_STATE_PREVIOUS,
    VERSION_STATE_ROLLED_BACK,
)

MIN_VERSION_PREFIX = 4
"""Shortest prefix `promote` accepts for a version id (12 hex digits)."""


class VersionError(LookupError):
    """A promote or rollback that cannot be done; the message is one line saying why and what exists."""


class UnknownVersionError(VersionError):
    """`promote` named a version the history does not hold (or a prefix of several)."""


class NothingToRollBackError(VersionError):
    """No recorded version is left to roll back to."""


class Event(Protocol):
    """What the state logic needs of a history record (both targets' records have more)."""

    @property
    def version(self) -> str:
        """The version id (first 12 hex digits of the directory digest)."""
        ...

    @property
    def action(self) -> str:
        """`deploy`, `promote` or `rollback`."""
        ...


E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class VersionSummary(Generic[E]):
    """One version as `pipeline.py models list` shows it."""

    version: str
    state: str
    record: E
    """The newest record of this version: its lineage (digest, metrics, data fingerprint, run) and last event."""
    events: int
    """How many times it went live (deploys, promotions, rollbacks; failed deploys do not count)."""


def summarize(events: Sequence[E], live_version: str | None) -> list[VersionSummary[E]]:
    """Every recorded version with its state, newest event first.

    Args:
        events: The history, oldest first.
        live_version: What the target serves now (None: nothing). It wins over the history's last record, which
            differs only if someone changed the target by hand.

    Returns:
        One summary per version, ordered by their newest event, newest first.
    """
    states: dict[str, str] = {}
    newest: dict[str, E] = {}
    counts: dict[str, int] = {}
    order: list[str] = []
    current: str | None = None
    for event in events:
        newest[event.version] = event
        if event.version in order:
            order.remove(event.version)
        order.append(event.version)
        if event.action == ACTION_FAILED:  # never went live: the live version did not change
            states.setdefault(event.version, VERSION_STATE_FAILED)
            continue
        if current is not None and current != event.version:
            states[current] = VERSION_STATE_ROLLED_BACK if event.action == ACTION_ROLLBACK else VERSION_STATE_PREVIOUS
        current = event.version
        states.pop(event.version, None)  # live now; its state is settled when something replaces it
        counts[event.version] = counts.get(event.version, 0) + 1
    if current is not None and current != live_version:
        states[current] = VERSION_STATE_PREVIOUS
    if live_version is not None:
        states[live_version] = VERSION_STATE_LIVE
    return [
        VersionSummary(v, states.get(v, VERSION_STATE_PREVIOUS), newest[v], counts.get(v, 0)) for v in reversed(order)
    ]


def rollback_target(events: Sequence[E], live_version: str | None, *, model_name: str) -> str:
    """The version a rollback makes live: the newest one that is neither live nor rolled back.

    Raises:
        NothingToRollBackError: Only the live version (or rolled-back ones) recorded.
    """
    for summary in summarize(events, live_version):
        if summary.state == VERSION_STATE_PREVIOUS:
            return summary.version
    rolled = [s.version for s in summarize(events, live_version) if s.state == VERSION_STATE_ROLLED_BACK]
    detail = f"; rolled back already: {', '.join(rolled)} (promote one by name)" if rolled else ""
    raise NothingToRollBackError(
        f"nothing to roll back to: {model_name} has no earlier version that is not rolled back{detail}"
    )


def resolve_version(events: Sequence[E], text: str, *, model_name: str) -> str:
    """The recorded version `text` names: a full version id or an unambiguous prefix of at least 4 characters.

    Raises:
        UnknownVersionError: No such version, or a prefix of several; the message lists the recorded ones.
    """
    known = list(dict.fromkeys(e.version for e in reversed(events)))
    wanted = text.strip().lower()
    matches = [v for v in known if v == wanted] or (
        [v for v in known if v.startswith(wanted)] if len(wanted) >= MIN_VERSION_PREFIX else []
    )
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(known[:10]) + (f" and {len(known) - 10} more" if len(known) > 10 else "") or "none"
    if len(matches) > 1:
        raise UnknownVersionError(f"version '{text}' of {model_name} is ambiguous: {', '.join(matches)}")
    raise UnknownVersionError(f"unknown version '{text}' of {model_name}; recorded versions: {listed}")
