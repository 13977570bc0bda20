"""What the report needs recorded as it happens: conflict snapshots and train step timings.

A report written after everything landed must still show what collided and
how long each landing took; git no longer shows either by then. So every
``conflicts`` scan and every train stop or end keeps a small snapshot of the
pairs and their outcomes in the state (the last ``KEEP`` distinct ones), and
the train stamps when each of its steps starts and ends in its journal.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from paradev.branches import Heads
from paradev.conflicts import Conflict, Report, analyze
from paradev.errors import ParadevError
from paradev.state import State, now
from paradev.workspace import Workspace

KEEP = 50  # snapshots kept in the state; older ones go
HUNKS_KEPT = 5  # hunks kept per conflicted file
LINES_KEPT = 8  # lines kept per side of a hunk
LINE_WIDTH = 200  # characters kept per line
PAIRS_KEPT = 300  # pairs kept per snapshot, conflicts first (every command reads the state)
FILES_KEPT = 20  # overlapping files named per pair
REFRESH = 600  # seconds after which an unchanged scan still refreshes last_seen
SAME = ("source", "train", "base", "agents", "pairs", "against_base")  # alike snapshots


def precise_now() -> str:
    """UTC time to the millisecond: train steps often take less than a second."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def stamp_step(entry: dict[str, Any], step: str, edge: str) -> None:
    """Note in a train journal entry when ``step`` starts or ends (``edge``: start|end)."""
    times: dict[str, dict[str, str]] = entry.setdefault("times", {})
    times.setdefault(step, {})[edge] = precise_now()


def conflict_snapshot(report: Report, source: str, train: str | None = None) -> dict[str, Any]:
    """The pairs that overlap or conflict, with files, types and trimmed hunks."""
    colliding = sorted(
        (pair for pair in report.examined if pair.conflict or pair.overlap),
        key=lambda pair: (not pair.conflict, pair.agents),
    )
    pairs = [
        {
            "agents": list(pair.agents),
            "outcome": "conflict" if pair.conflict else "overlap",
            "overlap": pair.overlap[:FILES_KEPT],
            "conflicts": [_small(c) for c in pair.conflicts[:FILES_KEPT]],
        }
        for pair in colliding[:PAIRS_KEPT]
    ]
    against = [
        {"agent": b.agent, "conflicts": [_small(c) for c in b.conflicts]}
        for b in report.against_base
        if b.conflict
    ]
    stamp = now()
    return {
        "at": stamp,
        "last_seen": stamp,
        "source": source,
        "train": train,
        "base": report.base,
        "base_commit": report.base_commit,
        "agents": sorted(b.agent for b in report.branches),
        "pairs": pairs,
        "against_base": against,
        "pairs_left_out": max(len(colliding) - PAIRS_KEPT, 0),
    }


def _small(conflict: Conflict) -> dict[str, Any]:
    """One conflict with at most a few short hunks: the state is read by every command."""
    hunks = conflict.hunks[:HUNKS_KEPT]
    return {
        "path": conflict.path,
        "type": conflict.type,
        "hunks": [[h.start, h.end] for h in hunks],
        "sides": [{"ours": _lines(h.ours), "theirs": _lines(h.theirs)} for h in hunks],
    }


def _lines(lines: tuple[str, ...]) -> list[str]:
    return [line[:LINE_WIDTH] for line in lines[:LINES_KEPT]]


def remember(state: State, snapshot: dict[str, Any]) -> None:
    """Add ``snapshot``; one alike to the last only refreshes its ``last_seen``."""
    kept = state.conflict_snapshots
    if kept and _alike(kept[-1], snapshot):
        kept[-1]["last_seen"] = snapshot["at"]
        return
    kept.append(snapshot)
    del kept[:-KEEP]


def _alike(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(key) == new.get(key) for key in SAME)


def record_scan(ws: Workspace, report: Report, source: str = "conflicts") -> None:
    """Keep what a scan found (by ``conflicts``, or by ``report`` for its "now").

    A scan alike to the last one, seen within ``REFRESH`` seconds, writes
    nothing: repeated scans (CI, ``--watch``) stay free of the state lock.
    """
    snapshot = conflict_snapshot(report, source)
    kept = ws.store.read(recognise=False).conflict_snapshots  # landed tasks do not matter here
    if kept and _alike(kept[-1], snapshot) and _seconds_since(kept[-1]["last_seen"]) < REFRESH:
        return
    with ws.store.update() as state:
        remember(state, snapshot)


def _seconds_since(stamp: Any) -> float:
    try:
        return (datetime.now(UTC) - datetime.fromisoformat(str(stamp))).total_seconds()
    except ValueError:
        return float("inf")


def record_train(ws: Workspace, journal: dict[str, Any], known: Report | None = None) -> None:
    """Keep what the train's branches did to each other before it rewrote them.

    Best effort: a snapshot the report would show must never stop a train
    (say a backup ref was deleted by hand), so a git failure skips it.
    ``known``: the analysis the train's merge order made (see ``train_snapshot``).
    """
    snapshot = train_snapshot(ws, journal, known)
    if snapshot is not None:
        with ws.store.update() as state:
            remember(state, snapshot)


def train_snapshot(
    ws: Workspace, journal: dict[str, Any], known: Report | None = None
) -> dict[str, Any] | None:
    """``record_train``'s snapshot, for a caller writing the state anyway (None: none).

    ``known``: the analysis this process's merge order made at the train's
    start; when it examined the very heads the snapshot is of, it is reused
    (no second analysis: three git processes and their parsing per train).
    """
    heads = _train_heads(ws, journal)
    if heads is None:
        return None
    try:
        report = (known.for_heads(heads) if known else None) or analyze(ws, heads=heads)
        return conflict_snapshot(report, "train", str(journal["id"]))
    except ParadevError:
        return None


def _train_heads(ws: Workspace, journal: dict[str, Any]) -> Heads | None:
    """Each train agent's head before its rebase, and base where the train started."""
    base_start = journal.get("base_start")
    if not isinstance(base_start, str):
        return None
    heads: dict[int, tuple[str, str, bool]] = {}
    for agent in journal.get("order", []):
        entry = journal.get("agents", {}).get(str(agent), {})
        head = entry.get("old_head") or ws.git.rev(f"refs/heads/{ws.branch(agent)}")
        if head:
            heads[agent] = (entry.get("branch", ws.branch(agent)), head, False)
    base = str(journal["base"])
    return Heads(base, f"refs/heads/{base}", base_start, heads)


def note_stop(ws: Workspace, journal: dict[str, Any], known: Report | None = None) -> None:
    """At a train stop: keep the stop in the journal's list (a resume clears ``stop``)."""
    journal["stop"]["at"] = precise_now()  # step times are to the millisecond too
    journal.setdefault("stops", []).append(dict(journal["stop"]))
    record_train(ws, journal, known)


def train_facts(journal: dict[str, Any]) -> dict[str, Any]:
    """What a finished train's history entry keeps beyond the landed list: timings and stops."""
    keep = (
        "times",
        "gate_log",
        "gate_runs",
        "gate_exit",
        "old_head",
        "landed",
        "branch",
        "resolved",
    )
    agents = {
        key: {name: entry[name] for name in keep if name in entry}
        for key, entry in journal.get("agents", {}).items()
    }
    return {
        "agents": agents,
        "stops": list(journal.get("stops", [])),
        "base_start": journal.get("base_start"),
    }
