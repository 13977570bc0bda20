"""What ``status`` must not hide: failed tasks, a stopped train, a stale merge order, strays.

Every fact comes from what status reads anyway (the state, the refs it
resolves in one ``for-each-ref``, the one ``git status`` per worktree, files
in git dirs): none of this starts a git process of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from paradev import processes
from paradev.git import rebase_in_progress
from paradev.labels import WORKING, AgentLabel, landing_candidates, numbered, who
from paradev.state import COMPLETED, DROPPED, MERGED, RESTARTABLE, State, TaskRecord
from paradev.text import printable
from paradev.workspace import Workspace, agent_folders

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

SHOWN_PATHS = 5  # untracked paths named in a warning; the rest are counted

# -- failed and interrupted tasks -------------------------------------------------------------


def task_error(record: TaskRecord) -> dict[str, Any] | None:
    """Why a failed or interrupted task ended, and its log; None for every other task."""
    if record.status not in RESTARTABLE:
        return None
    return {
        "reason": record.error or "no reason was recorded",
        "log": record.log,
        "at": record.failed_at,
    }


def restart_advice(issues: Sequence[int]) -> str:
    """How a failed or interrupted task goes on: again, by hand, or not at all."""
    them, first = ("it", issues[0]) if len(issues) == 1 else ("them", "ISSUE")
    return (
        f"'paradev run-batch' or 'paradev run' starts {them} again once the cause is fixed; "
        f"'paradev reopen {first}' to work on it by hand, 'paradev drop {first}' to give it up"
    )


# -- a stopped train ---------------------------------------------------------------------------

# What to fix before ``--continue``, by the stop reason the train journals.
STOP_FIXES = {
    "conflict": "resolve the conflicted files in {worktree} and 'git add' them",
    "markers": "remove the conflict markers in {worktree} and commit on {branch}",
    "patch-check": "put the missing work back on {branch} ('paradev merge --continue' names it)",
    "gate": "fix what the gate log shows and commit the fix on {branch}",
    "push": "bring the local {base} and {remote}/{base} together",
}


def train_view(ws: Workspace, state: State) -> dict[str, Any] | None:
    """The journal as status shows it: a stop also says its log, issues and the next step."""
    train = state.train
    stop = train.get("stop") if train else None
    if train is not None and train.get("status") == "running" and not ws.plan.hosts:
        return {**train, "interrupted": not _driver_alive(train.get("driver"))}
    if train is None or not isinstance(stop, dict) or train.get("status") != "stopped":
        return train
    if type(stop.get("agent")) is not int:  # a hand-edited journal: show it as it is
        return train
    return {**train, "stop": {**stop, **stop_advice(ws, state, train, stop)}}


def _driver_alive(driver: Any) -> bool:
    """Whether the paradev process the journal names as the train's driver still runs.

    A SIGKILLed ``merge`` leaves its train journaled as running; only a live
    driver (same pid, same start) makes that true.
    """
    pid = driver.get("pid") if isinstance(driver, dict) else None
    if type(pid) is not int:
        return False
    start = str(driver.get("start") or "")
    return processes.alive(pid, int(start) if start.isdigit() else None)


def stop_advice(
    ws: Workspace, state: State, train: Mapping[str, Any], stop: Mapping[str, Any]
) -> dict[str, Any]:
    """``next`` (what to do, then how to go on), ``log`` (a gate's) and the issues being landed."""
    agent: int = stop["agent"]
    entry = train.get("agents", {}).get(str(agent), {})
    issues = entry.get("issues") or [
        t.issue for t in ws.tasks_of(agent) if state.status(t.issue) == COMPLETED
    ]
    branch = entry.get("branch") or ws.branch(agent)
    log = entry.get("gate_log") if stop.get("reason") == "gate" else None
    fix = STOP_FIXES.get(str(stop.get("reason")), "")
    fix = fix.format(
        worktree=ws.worktree(agent),
        branch=branch,
        base=train.get("base", ws.plan.base),
        remote=ws.plan.remote or "the remote",
    )
    go_on = "then 'paradev merge --continue'" if fix else "'paradev merge --continue' tries again"
    others = (
        f"or 'paradev merge --skip' to land the others without agent {agent}, "
        "or 'paradev merge --abort' to stop the train"
    )
    return {
        "next": f"{fix + ', ' if fix else ''}{go_on}; {others}",
        "log": log,
        "issues": list(issues),
    }


# -- the saved merge order -----------------------------------------------------------------


def order_staleness(state: State, base_tip: str | None, tips: Mapping[int, str]) -> str | None:
    """Why the saved merge order no longer holds (None while it does).

    An order holds while base, the branch of every agent in it and the set of
    agents with completed work are as they were when it was computed.
    """
    if not state.merge_order:
        return None
    source = state.merge_order_from
    if not source:
        return "it was computed by an older paradev"
    if source.get("base") != base_tip:
        return "base moved since it was computed"
    recorded = source.get("tips", {})
    moved = [a for a in state.merge_order if recorded.get(str(a)) != tips.get(a)]
    if moved:
        return "the branch of agent(s) " + ", ".join(map(str, moved)) + " moved since"
    if source.get("completed") != landing_candidates(state):
        return "the agents with completed work changed since"
    return None


# -- warnings --------------------------------------------------------------------------------


def warnings(
    ws: Workspace,
    state: State,
    labels: Mapping[int, AgentLabel],
    facts: Mapping[int, Mapping[str, Any]],
    untracked: Mapping[int, Sequence[str]],
) -> list[dict[str, Any]]:
    """Agents beyond agents.count, worktrees on a foreign branch, leftover untracked files."""
    found = beyond_count(ws, state)
    landing = set(state.train.get("queue", [])) if state.train else set()
    for agent, info in facts.items():
        if agent in landing:  # the train owns the worktree and says what it does
            continue
        on = info.get("checked_out", ws.branch(agent))
        if info["exists"] and not info.get("broken") and on != ws.branch(agent):
            found += _foreign(ws, agent, on)
        if untracked.get(agent) and labels[agent].label != WORKING:
            found.append(_leftovers(ws, agent, untracked[agent]))
    return found


def beyond_count(ws: Workspace, state: State) -> list[dict[str, Any]]:
    """Agent numbers above agents.count with a worktree folder, an agent or a task record."""
    count = ws.plan.agent_count
    what: dict[int, list[str]] = {}
    for agent in sorted(agent_folders(ws)):
        if agent > count:
            what.setdefault(agent, []).append(
                f"a worktree {ws.plan.worktree(agent, ws.repo.main_root)}"
            )
    for agent in sorted(a for a in state.agents if a > count):
        what.setdefault(agent, []).append("an agent record in the state")
    tasks: dict[int, list[int]] = {}
    for record in state.tasks.values():
        if record.agent > count and record.status != MERGED:
            tasks.setdefault(record.agent, []).append(record.issue)
    for agent, issues in tasks.items():
        numbers = ", ".join(f"#{i}" for i in sorted(issues))
        what.setdefault(agent, []).append(f"task record(s) {numbers}")
    return [
        {
            "kind": "beyond-count",
            "agent": agent,
            "message": f"agent {agent} is beyond agents.count ({count}) but has "
            f"{' and '.join(what[agent])}; 'paradev doctor' says how to keep or remove it",
        }
        for agent in sorted(what)
    ]


def _foreign(ws: Workspace, agent: int, on: str | None) -> list[dict[str, Any]]:
    worktree, branch = ws.worktree(agent), ws.branch(agent)
    if rebase_in_progress(worktree) is not None:  # a rebase shows a detached HEAD: not foreign
        return []
    return [
        {
            "kind": "foreign-branch",
            "agent": agent,
            "branch": on,
            "message": f"agent {agent}'s worktree {worktree} is on {on or 'a detached HEAD'}, "
            f"not {branch}: work there is neither counted nor landed; "
            f"'git -C {worktree} switch {branch}' ('paradev doctor' checks it is safe)",
        }
    ]


def _leftovers(ws: Workspace, agent: int, paths: Sequence[str]) -> dict[str, Any]:
    shown = ", ".join(paths[:SHOWN_PATHS])
    more = f" and {len(paths) - SHOWN_PATHS} more" if len(paths) > SHOWN_PATHS else ""
    return {
        "kind": "untracked",
        "agent": agent,
        "paths": list(paths[:SHOWN_PATHS]),
        "count": len(paths),
        "message": f"agent {agent} has no task in progress but its worktree holds "
        f"{len(paths)} untracked file(s) no task will commit: {shown}{more}; commit them on "
        f"{ws.branch(agent)} or remove them (the merge train refuses a worktree with them)",
    }


# -- the human view --------------------------------------------------------------------------


def render_tasks(info: Mapping[str, Any]) -> list[str]:
    """An agent's landed and unlanded work, and each failed, interrupted or dropped task."""
    lines: list[str] = []
    if info.get("merged_issues"):
        lines.append(f"    merged:     {numbered(info['merged_issues'])}")
    if info.get("not_landed_issues"):
        lines.append(
            f"    not landed: {numbered(info['not_landed_issues'])} "
            "(completed; 'paradev merge' lands it)"
        )
    ended = [t for t in info.get("tasks", []) if t.get("error")]
    for task in ended:
        error = task["error"]
        lines.append(f"  {task['status']}: #{task['issue']} {printable(error['reason'])}")
        if error.get("log"):
            lines.append(f"    log: {error['log']}")
    if ended:
        lines.append(f"    next: {restart_advice([t['issue'] for t in ended])}")
    lines += [
        f"  dropped:  #{t['issue']}"
        + (f" (its commits kept at {t['backup_ref']})" if t.get("backup_ref") else "")
        for t in info.get("tasks", [])
        if t["status"] == DROPPED
    ]
    return lines


def render(report: Mapping[str, Any]) -> list[str]:
    """The lines under the agents: merge order, train, warnings."""
    lines: list[str] = []
    if report.get("merge_order"):
        lines += ["", "merge order: " + " -> ".join(str(a) for a in report["merge_order"])]
    elif report.get("merge_order_stale"):
        lines += [
            "",
            f"merge order: stale ({report['merge_order_stale']}): run paradev merge-order",
        ]
    if report.get("train"):
        lines += render_train(report["train"])
    if report.get("warnings"):
        lines += ["", "warnings:"]
        lines += [f"  {printable(w['message'])}" for w in report["warnings"]]
    return lines


def render_train(train: Mapping[str, Any]) -> list[str]:
    stop = train.get("stop")
    if train.get("interrupted") is True:
        return [
            "",
            "merge train interrupted (no paradev merge drives it): "
            "run paradev merge --continue to resume it (or paradev merge --abort to end it)",
        ]
    if train.get("status") != "stopped" or not isinstance(stop, dict) or "next" not in stop:
        return [f"merge train in progress: {train.get('status', 'running')}"]
    agent = who(stop["agent"], stop.get("issues", []))
    lines = [f"merge train stopped at {agent}: {stop.get('reason', 'unknown reason')}"]
    if stop.get("log"):
        lines.append(f"  log:  {stop['log']}")
    lines.append(f"  next: {stop['next']}")
    return ["", *lines]
