"""The task lifecycle: assign -> start -> complete, and the status report.

Which task an agent works on comes from the plan (its order) and the state
(each task's status); per-agent totals are derived, never stored twice.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from paradev import plan as plan_mod
from paradev import processes
from paradev.errors import GitError, PreconditionError
from paradev.git import (
    Git,
    ahead_behind_if_any,
    changed_paths,
    current_branch,
    dirty_paths,
    side_by_side,
)
from paradev.limits import MAX_ISSUE, shown
from paradev.plan import Task
from paradev.state import (
    ASSIGNED,
    COMPLETED,
    DONE_STATUSES,
    IN_PROGRESS,
    MERGED,
    OPEN_STATUSES,
    RESTARTABLE,
    State,
    TaskRecord,
    now,
)
from paradev.text import printable
from paradev.workspace import Workspace

_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(
    r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?(nan|inf|infinity)", re.I
)


def parse_hours(text: str | float) -> float:
    """Hours from the command line: a finite number >= 0, written as plain decimal digits.

    ``float`` alone would also take ``1_0`` (ten) or ``٣`` (Arabic three).
    """
    if isinstance(text, str) and not _DECIMAL.fullmatch(text.strip()):
        raise PreconditionError(f"hours must be a number, got {text!r}")
    try:
        hours = float(text)
    except (TypeError, ValueError):
        raise PreconditionError(f"hours must be a number, got {text!r}") from None
    if not math.isfinite(hours) or hours < 0:
        raise PreconditionError(f"hours must be a finite number >= 0, got {text!r}")
    if hours > plan_mod.MAX_HOURS:
        raise PreconditionError(f"hours must be at most {plan_mod.MAX_HOURS}, got {text!r}")
    return hours + 0.0  # -0 becomes 0


def parse_int(text: str | int, what: str) -> int:
    """A positive whole number from the command line, in plain ASCII digits."""
    if isinstance(text, str) and not _WHOLE.fullmatch(text.strip()):
        raise PreconditionError(f"{what} must be a whole number, got {shown(text)}")
    if isinstance(text, str) and len(text.strip().lstrip("-0")) > len(str(MAX_ISSUE)):
        raise PreconditionError(f"{what} must be at most {MAX_ISSUE:,}, got {shown(text)}")
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise PreconditionError(f"{what} must be a whole number, got {shown(text)}") from None
    if value <= 0:
        raise PreconditionError(f"{what} must be > 0, got {text!r}")
    if value > MAX_ISSUE:  # agents stop at 1,000 and issues at 10^9 (paradev.limits)
        raise PreconditionError(f"{what} must be at most {MAX_ISSUE:,}, got {text!r}")
    return value


def _same_task(task: Task, title: str, hours: float, batch: str | None) -> bool:
    return task.title == title and task.hours == hours and batch in (None, task.batch)


def current_task(ws: Workspace, state: State, agent: int) -> Task | None:
    """The agent's task in progress, if any."""
    return next((t for t in ws.tasks_of(agent) if state.status(t.issue) == IN_PROGRESS), None)


def next_task(ws: Workspace, state: State, agent: int) -> Task | None:
    """The agent's first planned or assigned task, in plan order."""
    return next((t for t in ws.tasks_of(agent) if state.status(t.issue) in OPEN_STATUSES), None)


def waiting_for_dependencies(state: State, task: Task) -> str | None:
    """Why ``task`` cannot start yet: a depends_on issue has not landed (None when none).

    start and run-batch both ask this, so they agree on what may start and say it alike.
    """
    waiting = [d for d in task.depends_on if state.status(d) != MERGED]
    if not waiting:
        return None
    deps = ", ".join(f"#{d}" for d in waiting)
    return f"#{task.issue} (agent {task.agent}) waits for {deps} to be merged"


def assign(
    ws: Workspace, agent: int, issue: int, title: str, hours: float, batch: str | None = None
) -> Task:
    """Add the task to plan.toml (layout kept) and mark it assigned.

    The plan is read again under the state lock, so concurrent ``assign`` runs
    never lose each other's tasks. An issue already in the plan for this
    agent is only marked assigned.
    """
    ws.check_agent(agent)
    if not title.strip():
        raise PreconditionError("TITLE must not be empty; say what the task is")
    if batch is not None and not batch.strip():
        raise PreconditionError("--batch must name a batch, not only spaces")
    with ws.store.update() as state:
        if state.status(issue) not in OPEN_STATUSES:
            raise PreconditionError(
                f"issue #{issue} is already {state.status(issue)}; nothing to assign"
            )
        plan = plan_mod.load(ws.plan.path, ws.repo.main_root)
        task = plan.task(issue)
        if task is None:
            plan = plan_mod.add_task(
                ws.plan.path,
                ws.repo.main_root,
                agent=agent,
                issue=issue,
                title=title,
                hours=hours,
                batch=batch,
            )
            task = plan.task(issue)
            assert task is not None  # just added
        elif task.agent != agent:
            raise PreconditionError(
                f"issue #{issue} is already planned for agent {task.agent}; "
                "edit plan.toml to move it, or pick another issue number"
            )
        elif not _same_task(task, title, hours, batch):
            raise PreconditionError(
                f"issue #{issue} is already in the plan as {task.title!r} ({task.hours:g}h, "
                f"batch {task.batch!r}); edit plan.toml to change it, or pick another issue number"
            )
        record = state.task(issue, agent)
        record.status, record.assigned_at = ASSIGNED, now()
    return task


def require_own_branch(ws: Workspace, agent: int) -> Git:
    """git in the agent's worktree, which must have the agent's branch checked out.

    Work committed on another branch would never be counted, merged or seen
    by the conflict checks: say so before recording anything.
    """
    agent_git = ws.agent_git(agent)
    branch = ws.branch(agent)
    current = current_branch(agent_git.cwd)
    if current != branch:
        raise PreconditionError(
            f"agent {agent}'s worktree {agent_git.cwd} is on {current or 'a detached HEAD'}, "
            f"not {branch}; finish what is in progress there and run "
            f"'git -C {agent_git.cwd} switch {branch}' first"
        )
    return agent_git


def start(ws: Workspace, agent: int, issue: int | None = None) -> tuple[Task, TaskRecord]:
    """Mark the agent's next task (or ``issue``) in progress and record its base commit."""
    ws.check_agent(agent)
    require_own_branch(ws, agent)
    with ws.store.update() as state:
        busy = current_task(ws, state, agent)
        if busy is not None:
            raise PreconditionError(
                f"agent {agent} is already working on #{busy.issue}; "
                f"run 'paradev complete {agent}' first"
            )
        task = next_task(ws, state, agent) if issue is None else ws.plan.task(issue)
        if task is None and issue is not None:
            raise PreconditionError(
                f"issue #{issue} is not in the plan; add it with 'paradev assign'"
            )
        if task is None:
            raise PreconditionError(
                f"agent {agent} has no planned or assigned task left; add one with 'paradev assign'"
            )
        if task.agent != agent or state.status(task.issue) not in (*OPEN_STATUSES, *RESTARTABLE):
            raise PreconditionError(
                f"issue #{task.issue} is {state.status(task.issue)} for agent {task.agent}; "
                f"agent {agent} cannot start it"
            )
        waiting = waiting_for_dependencies(state, task)
        if waiting:
            raise PreconditionError(
                f"{waiting}; finish and land that work first ('paradev merge'), then start again"
            )
        record = state.task(task.issue, agent)
        record.status, record.started_at = IN_PROGRESS, now()
        record.assigned_at = record.assigned_at or record.started_at
        record.base_commit = ws.git.rev(ws.plan.base)
        record.error = None
        record.left_uncommitted = []
    return task, record


@dataclass(frozen=True)
class Completion:
    task: Task
    record: TaskRecord
    uncommitted: list[str]


def complete(ws: Workspace, agent: int) -> Completion:
    """Mark the task in progress completed, with files from the branch's real diff."""
    ws.check_agent(agent)
    agent_git = require_own_branch(ws, agent)
    with ws.store.update() as state:
        task = current_task(ws, state, agent)
        if task is None:
            raise PreconditionError(
                f"agent {agent} has no task in progress; run 'paradev start {agent}'"
            )
        record = state.task(task.issue, agent)
        branch = ws.branch(agent)
        record.files_modified = changed_paths(ws.git, ws.plan.base, branch)
        record.head_commit = ws.git.rev(branch)
        record.status, record.completed_at = COMPLETED, now()
        uncommitted = sorted(dirty_paths(agent_git.cwd))
        record.left_uncommitted = uncommitted
    return Completion(task=task, record=record, uncommitted=uncommitted)


# -- status --------------------------------------------------------------------------


def _task_json(task: Task, record: TaskRecord | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "issue": task.issue,
        "title": task.title,
        "hours": task.hours,
        "batch": task.batch,
        "status": record.status if record else "planned",
    }
    if record:
        for key in ("started_at", "completed_at", "merged_at", "base_commit", "head_commit", "log"):
            if getattr(record, key):
                data[key] = getattr(record, key)
        if record.files_modified:
            data["files_modified"] = record.files_modified
        if record.left_uncommitted:
            data["left_uncommitted"] = record.left_uncommitted
        if record.status == IN_PROGRESS and record.agent_pid is not None:
            data["agent_pid"] = record.agent_pid
            data["agent_running"] = processes.alive(record.agent_pid, record.agent_started)
    return data


def _branch_facts(ws: Workspace, agent: int) -> dict[str, Any]:
    """Ahead/behind base and dirtiness: the git work of status, run per agent in parallel.

    Each call runs in its own thread with its own ``Git``: nothing is shared but paths.
    """
    path = ws.worktree(agent)
    exists = (path / ".git").exists()
    counts = ahead_behind_if_any(Git(ws.git.cwd), ws.plan.base, ws.branch(agent))
    dirty: bool | None = None
    broken = False
    if exists:
        try:
            dirty = bool(dirty_paths(path))
        except GitError:  # one broken worktree must not hide every other agent
            broken = True
    return {
        "exists": exists,
        "broken": broken,
        "ahead": counts[0] if counts else None,
        "behind": counts[1] if counts else None,
        "dirty": dirty,
    }


def tasks_by_agent(ws: Workspace) -> dict[int, list[Task]]:
    """agent -> its tasks in plan order, built in one pass (not one scan of the plan per agent)."""
    index: dict[int, list[Task]] = {a: [] for a in range(1, ws.plan.agent_count + 1)}
    for task in ws.plan.tasks():
        index.setdefault(task.agent, []).append(task)
    return index


def _agent_json(
    ws: Workspace, state: State, agent: int, tasks: list[Task], facts: dict[str, Any]
) -> dict[str, Any]:
    """One agent's entry of the status report."""
    current = next((t for t in tasks if state.status(t.issue) == IN_PROGRESS), None)
    done = [t for t in tasks if state.status(t.issue) in DONE_STATUSES]
    return {
        "branch": ws.branch(agent),
        "worktree": str(ws.worktree(agent)),
        "current_task": _task_json(current, state.tasks.get(current.issue)) if current else None,
        "completed_tasks": [_task_json(t, state.tasks.get(t.issue)) for t in done],
        "total_hours": sum(t.hours for t in done),
        "tasks": [_task_json(t, state.tasks.get(t.issue)) for t in tasks],
        **facts,
    }


def status(ws: Workspace) -> dict[str, Any]:
    """The status report as JSON-ready data (the design's stable keys)."""
    state = ws.store.read()
    agents = range(1, ws.plan.agent_count + 1)
    base_ref = f"refs/heads/{ws.plan.base}"
    found: list[Any] = side_by_side(  # "agent" 0: whether base exists, asked alongside
        lambda agent: _branch_facts(ws, agent) if agent else ws.git.rev(base_ref), [0, *agents]
    )
    facts: dict[int, dict[str, Any]] = dict(zip(agents, found[1:], strict=True))
    index = tasks_by_agent(ws)
    return {
        "base": ws.plan.base,
        "base_exists": found[0] is not None,
        "agents": {
            str(agent): _agent_json(ws, state, agent, index[agent], facts[agent])
            for agent in agents
        },
        "merge_order": state.merge_order,
        "train": state.train,
    }


def _agent_process(task: dict[str, Any]) -> str:
    """Whether the agent run-batch launched for a task in progress still runs."""
    if "agent_pid" not in task:
        return ""
    if task.get("agent_running"):
        return f"; agent pid {task['agent_pid']} running"
    return f"; agent pid {task['agent_pid']} gone: 'paradev run-batch' starts the task again"


def render_status(report: dict[str, Any]) -> str:
    """The human view of ``status``."""
    lines = [f"paradev status (base: {report['base']})", ""]
    if not report.get("base_exists", True):
        lines[1:] = [
            f"base branch {report['base']!r} does not exist: create it or set project.base",
            "",
        ]
    for agent, info in report["agents"].items():
        if info["ahead"] is None:
            position = "branch missing" if report.get("base_exists", True) else "no base to compare"
        else:
            position = f"{info['ahead']} ahead, {info['behind']} behind"
        tree = "missing" if not info["exists"] else ("dirty" if info["dirty"] else "clean")
        if info.get("broken"):
            tree = "broken (run 'paradev setup' to repair it)"
        lines.append(f"Agent {agent}  {info['branch']}  ({position}; worktree {tree})")
        lines.append(f"  worktree: {info['worktree']}")
        current = info["current_task"]
        if current:
            lines.append(
                f"  current:  #{current['issue']} {printable(current['title'])} "
                f"({current['hours']:g}h{_agent_process(current)})"
            )
        else:
            lines.append("  current:  none")
        done = ", ".join(f"#{t['issue']}" for t in info["completed_tasks"]) or "none"
        lines.append(f"  done:     {done}  (total {info['total_hours']:g}h)")
        stopped = [
            f"#{t['issue']} {t['status']}"
            for t in info.get("tasks", [])
            if t["status"] in RESTARTABLE
        ]
        if stopped:
            again = "'paradev run-batch' starts them again"
            lines.append(f"  stopped:  {', '.join(stopped)} ({again})")
        lines += [
            f"  left uncommitted by #{t['issue']}: "
            + ", ".join(printable(p) for p in t["left_uncommitted"])
            for t in info["completed_tasks"]
            if t.get("left_uncommitted")
        ]
    if report["merge_order"]:
        lines.append("")
        lines.append("merge order: " + " -> ".join(str(a) for a in report["merge_order"]))
    if report["train"]:
        lines.append(f"merge train in progress: {report['train'].get('status', 'running')}")
    return "\n".join(lines)
