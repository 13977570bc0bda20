"""doctor's checks of the task flow: records, commits, agents and worktrees nothing accounts for.

Each finding names its repair, which ``doctor --repair`` performs, or starts
with ``manual:`` and gives the exact steps, because the right answer depends on
what a person meant (a renamed issue, commits made outside any task).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import NamedTuple

from paradev import coverage
from paradev.git import (
    Git,
    current_branch,
    dirty_paths,
    is_ancestor,
    local_branches,
    rebase_in_progress,
    switch,
    unfinished_operation,
)
from paradev.state import ASSIGNED, DROPPED, MERGED, PLANNED, State, TaskRecord
from paradev.workspace import Workspace, agent_folders, numbered_folders


class Check(NamedTuple):
    ok: bool
    text: str


def flow_checks(ws: Workspace, repair: bool) -> list[Check]:
    """Every check of this module, repairing what is safe when ``repair`` is set."""
    reading: AbstractContextManager[State] = nullcontext(ws.store.read())
    with ws.store.update() if repair else reading as state:
        found = _unplanned_records(ws, state, repair)
        found += _agent_branches(ws, state, repair)
        found += _extra_agents(ws, state, repair)
        found += _foreign_branches(ws, state, repair)
    return found or [Check(True, "tasks: every record, commit and worktree is accounted for")]


# -- records of tasks no longer in the plan ----------------------------------------------------


def _unplanned_records(ws: Workspace, state: State, repair: bool) -> list[Check]:
    found: list[Check] = []
    for issue, record in sorted(state.tasks.items()):
        if ws.plan.task(issue) is not None:
            continue
        if record.status == MERGED:
            found.append(Check(True, f"state: merged #{issue} is no longer in the plan (history)"))
        elif _workless(ws, record):
            found.append(_removable(state, record, repair))
        else:
            found.append(Check(False, "manual: " + coverage.unplanned_message(ws, record)))
    return found


def _workless(ws: Workspace, record: TaskRecord) -> bool:
    """Planned, assigned, or dropped with its commits already off the branch."""
    if record.status in (PLANNED, ASSIGNED):
        return True
    return record.status == DROPPED and not coverage.drop_on_branch(ws, record)


def _removable(state: State, record: TaskRecord, repair: bool) -> Check:
    what = f"state: #{record.issue} ({record.status}, agent {record.agent}) is not in the plan"
    kept = f"; its commits stay at {record.backup_ref}" if record.backup_ref else ""
    if repair:
        del state.tasks[record.issue]
        return Check(True, f"{what}: record removed{kept}")
    return Check(False, f"{what} (repair: remove the record{kept})")


# -- agent branches: dropped commits still there, commits no task covers -------------------------


def _agent_branches(ws: Workspace, state: State, repair: bool) -> list[Check]:
    found: list[Check] = []
    for agent in range(1, ws.plan.agent_count + 1):
        stray = coverage.stray_work(ws, state, agent)
        if stray is None or stray.kind == "unplanned":  # reported with its record
            continue
        if stray.kind == "dropped":
            found += _pending_drops(ws, state, agent, repair)
        else:
            found.append(Check(False, "manual: " + stray.message))
    return found


def _pending_drops(ws: Workspace, state: State, agent: int, repair: bool) -> list[Check]:
    found: list[Check] = []
    for record in coverage.pending_drops(ws, state, agent):
        why = coverage.drop_obstacle(ws, state, record)
        if why is not None:
            found.append(Check(False, "manual: " + coverage.held_drop(ws, record, why)))
        elif repair:
            coverage.take_off(ws, record)
            found.append(
                Check(
                    True,
                    f"agent {agent}: dropped #{record.issue}'s commits taken off its "
                    f"branch (kept at {record.backup_ref})",
                )
            )
        else:
            found.append(
                Check(False, coverage.held_drop(ws, record, "repair: take them off the branch"))
            )
    return found


# -- agents beyond agents.count ------------------------------------------------------------------


def _extra_agents(ws: Workspace, state: State, repair: bool) -> list[Check]:
    count = ws.plan.agent_count
    folders = agent_folders(ws)
    prefix = ws.plan.branch(1).removesuffix("1")
    branches = numbered_folders(
        "agent-" + b.removeprefix(prefix) for b in local_branches(ws.git) if b.startswith(prefix)
    )
    found: list[Check] = []
    for agent in sorted(n for n in folders | branches | set(state.agents) if n > count):
        where = f"agent {agent} is beyond agents.count ({count})"
        if agent in folders or agent in branches:
            found.append(Check(False, f"manual: {where}: {_extra_agent_steps(ws, agent, count)}"))
        elif repair:
            del state.agents[agent]
            found.append(Check(True, f"state: {where}: its record removed"))
        else:
            found.append(Check(False, f"state: {where} (repair: remove its record)"))
    return found


def _extra_agent_steps(ws: Workspace, agent: int, count: int) -> str:
    path = ws.plan.worktree(agent, ws.repo.main_root)
    branch = ws.plan.branch(agent)
    return (
        f"set agents.count = {agent} in plan.toml to keep it, or land what {branch} holds "
        f"and remove it ('git worktree remove {path}', then 'git branch -d {branch}')"
    )


# -- worktrees on a foreign branch -------------------------------------------------------------


def _foreign_branches(ws: Workspace, state: State, repair: bool) -> list[Check]:
    found: list[Check] = []
    landing = set(state.train.get("queue", [])) if state.train else set()
    for agent in range(1, ws.plan.agent_count + 1):
        worktree, branch = ws.worktree(agent), ws.branch(agent)
        if not (worktree / ".git").exists() or agent in landing:
            continue
        on = current_branch(worktree)
        if on == branch or rebase_in_progress(worktree) is not None:
            continue
        found.append(_foreign(ws, agent, on, repair))
    return found


def _foreign(ws: Workspace, agent: int, on: str | None, repair: bool) -> Check:
    worktree, branch = ws.worktree(agent), ws.branch(agent)
    where = f"agent {agent}: {worktree} is on {on or 'a detached HEAD'}, not {branch}"
    switch_step = f"'git -C {worktree} switch {branch}'"
    if unfinished_operation(worktree) or dirty_paths(worktree):
        return Check(
            False,
            f"manual: {where}; finish or commit what is there (on {on or 'HEAD'}), "
            f"then {switch_step}",
        )
    head = Git(worktree).rev("HEAD")
    if on is None and head and not _kept(ws, head):
        return Check(
            False,
            f"manual: {where}; its commits are on no branch: 'git -C {worktree} branch NAME' "
            f"to keep them, then {switch_step}",
        )
    if not repair:
        return Check(False, f"{where} (repair: {switch_step})")
    switch(worktree, branch)
    return Check(True, f"agent {agent}: {worktree} switched back to {branch}")


def _kept(ws: Workspace, commit: str) -> bool:
    """Whether a detached HEAD is on a branch an agent or base keeps."""
    refs = [f"refs/heads/{ws.plan.base}"]
    refs += [f"refs/heads/{ws.branch(a)}" for a in range(1, ws.plan.agent_count + 1)]
    return any(ws.git.rev(ref) and is_ancestor(ws.git, commit, ref) for ref in refs)
