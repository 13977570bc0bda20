"""Machine-readable outcomes: ``merge --json`` and ``run-batch --json``.

Progress lines of a train go to stderr under ``--json``; stdout carries one
JSON object, built from the state after the train ran, so a stopped,
finished or resumed train all answer in the same shape.
"""

from __future__ import annotations

from typing import Any

from paradev import git as gitmod
from paradev.runner import Outcome, Row, Started
from paradev.snapshots import precise_now
from paradev.train.rebase import marker_hunks
from paradev.workspace import Workspace


def merge_json(ws: Workspace, history_before: int) -> dict[str, Any]:
    """The train just run: landed, skipped, status and, when it stopped, why and where.

    ``history_before`` is the length of merge_history before the command: a
    longer one means the train ended (done or aborted) during it.
    """
    state = ws.store.read()
    journal = state.train
    if journal is None:
        if len(state.merge_history) <= history_before:
            return {"status": "nothing", "landed": [], "skipped": [], "stop": None}
        journal = state.merge_history[-1]
    stop = journal.get("stop") if journal.get("status") == "stopped" else None
    return {
        "id": journal.get("id"),
        "status": journal.get("status"),
        "base": journal.get("base"),
        "order": journal.get("order", []),
        "landed": journal.get("landed", []),
        "skipped": journal.get("skipped", []),
        "stop": _stop_json(ws, journal, stop) if stop else None,
    }


def _stop_json(ws: Workspace, journal: dict[str, Any], stop: dict[str, Any]) -> dict[str, Any]:
    """Where the train stopped: the conflicted files and hunks, or the gate's exit and log."""
    agent = int(stop["agent"])
    entry = journal.get("agents", {}).get(str(agent), {})
    files: list[str] = []
    hunks: dict[str, list[list[int]]] = {}
    if stop.get("reason") == "conflict":
        tree = ws.worktree(agent)
        if (tree / ".git").exists():
            files = gitmod.unmerged_paths(tree)
            hunks = {name: [list(h) for h in marker_hunks(tree / name)] for name in files}
    gate = stop.get("reason") == "gate"
    return {
        "agent": agent,
        "reason": stop.get("reason"),
        "at": stop.get("at"),
        "branch": entry.get("branch", ws.branch(agent)),
        "worktree": str(ws.worktree(agent)),
        "files": files,
        "hunks": hunks,
        "gate_exit": entry.get("gate_exit") if gate else None,
        "gate_log": entry.get("gate_log") if gate else None,
    }


# -- run-batch --json: one JSON object per event, one per line -------------------------------


def emit_event(event: str, **fields: Any) -> None:
    """One event as one compact JSON line, flushed at once (readers follow it live)."""
    import json
    import sys

    line = json.dumps({"event": event, "at": precise_now(), **fields}, separators=(",", ":"))
    print(line, flush=True)
    sys.stdout.flush()


class JsonProgress:
    """run-batch's progress as events: its messages, and each change of an agent's state."""

    def __init__(self, rows: bool = True) -> None:
        self.states: dict[int, tuple[int, str]] = {}
        self.rows = rows  # False: the caller tells state changes itself (paradev run)

    def event(self, text: str) -> None:
        emit_event("message", text=text)

    def show(self, rows: list[Row]) -> None:
        for row in rows if self.rows else ():
            if self.states.get(row.agent) != (row.issue, row.state):
                self.states[row.agent] = (row.issue, row.state)
                emit_event("state", agent=row.agent, issue=row.issue, state=row.state)


def started_event(started: Started) -> None:
    emit_event(
        "started",
        agent=started.task.agent,
        issue=started.task.issue,
        title=started.task.title,
        worktree=str(started.worktree),
        branch=started.branch,
        prompt=str(started.prompt),
        queued=[task.issue for task in started.queued],
    )


def outcome_events(batch: str, outcomes: list[Outcome]) -> None:
    """Each task's end, then the batch's totals."""
    for outcome in outcomes:
        emit_event(
            "task",
            agent=outcome.task.agent,
            issue=outcome.task.issue,
            status=outcome.status,
            detail=outcome.detail,
            log=str(outcome.log) if outcome.log else None,
        )
    done = sum(1 for o in outcomes if o.status == "completed")
    emit_event("batch", batch=batch, completed=done, not_completed=len(outcomes) - done)
