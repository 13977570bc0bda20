"""Which commits of an agent branch are whose work, and the commits no task will ever land.

A task's work is the range from the commit its branch stood at when it
started (the previous task's head, or the fork point from base) to its own
head. Commits outside every such range, commits of a dropped task still on the
branch, and work recorded for an issue that left the plan would otherwise
strand an agent: merge would not land them and run-batch would not start on
top of them. Every command that meets them says the same thing, from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from paradev.git import (
    commit_count,
    commit_subjects,
    current_branch,
    dirty_paths,
    is_ancestor,
    merge_base,
    reset_keep,
    unfinished_operation,
)
from paradev.records import NamedTuple
from paradev.state import (
    ASSIGNED,
    DROPPED,
    IN_PROGRESS,
    MERGED,
    PLANNED,
    RESTARTABLE,
    State,
    TaskRecord,
)
from paradev.workspace import Workspace

# Statuses whose commits are all still to come or already elsewhere: no work on the branch.
NO_WORK = (PLANNED, ASSIGNED, MERGED, DROPPED)
# A task in these statuses owns every commit beyond the previous task's head (its work so far).
OPEN_WORK = (IN_PROGRESS, *RESTARTABLE, "gate_failed")  # gate_failed: when the train has it


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def branch_tip(ws: Workspace, agent: int) -> str | None:
    return ws.git.rev(f"refs/heads/{ws.branch(agent)}")


def _contains(ws: Workspace, ancestor: str, descendant: str) -> bool:
    return ancestor == descendant or is_ancestor(ws.git, ancestor, descendant)


def _nearest(ws: Workspace, commits: Iterable[str | None], end: str) -> str | None:
    """Of ``commits``, the one closest below ``end`` (each of the others is its ancestor)."""
    reachable = [c for c in dict.fromkeys(commits) if c and _contains(ws, c, end)]
    best = reachable[0] if reachable else None
    for commit in reachable[1:]:
        if best is not None and is_ancestor(ws.git, best, commit):
            best = commit
    return best


def work_start(ws: Workspace, state: State, record: TaskRecord, end: str) -> str | None:
    """Where the task's work on its branch begins (the commit before its first one).

    The commit recorded when it started, else the head of the agent's previous
    task in plan order, else the fork point from base: whichever is closest
    below ``end`` (a rebase by the merge train leaves older records behind).
    """
    if record.start_commit and _contains(ws, record.start_commit, end):
        return record.start_commit
    earlier: list[str | None] = []
    for task in ws.tasks_of(record.agent):
        if task.issue == record.issue:
            break
        other = state.tasks.get(task.issue)
        if other is not None and other.status != DROPPED:
            earlier.append(other.head_commit)
    fork = merge_base(ws.git, f"refs/heads/{ws.plan.base}", end)
    return _nearest(ws, [*earlier, record.base_commit, fork], end)


def count_commits(ws: Workspace, start: str | None, end: str) -> int:
    return commit_count(ws.git, f"{start}..{end}" if start else end)


# -- dropped tasks ---------------------------------------------------------------------------


def drop_on_branch(ws: Workspace, record: TaskRecord) -> bool:
    """Whether a dropped task's commits are still on its agent's branch."""
    if record.status != DROPPED or not record.backup_ref or not record.head_commit:
        return False
    tip = branch_tip(ws, record.agent)
    return (
        tip is not None
        and record.head_commit != record.start_commit
        and _contains(ws, record.head_commit, tip)
    )


def pending_drops(ws: Workspace, state: State, agent: int) -> list[TaskRecord]:
    return [r for r in state.tasks.values() if r.agent == agent and drop_on_branch(ws, r)]


def drop_obstacle(ws: Workspace, state: State, record: TaskRecord) -> str | None:
    """Why a dropped task's commits cannot come off its branch now (None: they can).

    Only the branch's newest commits can go, by resetting the branch in its
    own worktree, and only while nothing else rests on them and no agent
    could be writing there.
    """
    agent, branch = record.agent, ws.branch(record.agent)
    worktree = ws.worktree(agent)
    tip = branch_tip(ws, agent)
    start = record.start_commit or ""
    if tip != record.head_commit:
        return (
            f"newer commits rest on them; manual: 'git -C {worktree} rebase --onto {start[:12]} "
            f"{(record.head_commit or '')[:12]} {branch}', then 'paradev reopen' and "
            "'paradev complete' each later task"
        )
    busy = [
        r.issue
        for r in state.tasks.values()
        if r.agent == agent and r.status == IN_PROGRESS and r.issue != record.issue
    ]
    if busy:
        return f"agent {agent} is working on #{busy[0]}; 'paradev complete {agent}' it first"
    if not (worktree / ".git").exists():
        return f"agent {agent} has no worktree at {worktree}; run 'paradev setup'"
    if current_branch(worktree) != branch or unfinished_operation(worktree):
        return f"{worktree} is not plainly on {branch}; finish what is in progress there first"
    if dirty_paths(worktree):
        return (
            f"{worktree} has uncommitted changes; commit or remove them, then run "
            "'paradev doctor --repair' (or start the agent's next task)"
        )
    return None


def take_off(ws: Workspace, record: TaskRecord) -> None:
    """Reset the agent branch (in its worktree) to the commit before the dropped work."""
    assert record.start_commit is not None  # drop records it
    reset_keep(ws.worktree(record.agent), record.start_commit)


def settle_drops(ws: Workspace, state: State, agent: int) -> list[str]:
    """Take every dropped task's commits off the agent's branch; say which could not go, and why."""
    held = []
    for record in pending_drops(ws, state, agent):
        why = drop_obstacle(ws, state, record)
        if why is None:
            take_off(ws, record)
        else:
            held.append(held_drop(ws, record, why))
    return held


def held_drop(ws: Workspace, record: TaskRecord, why: str) -> str:
    return (
        f"agent {record.agent}'s branch {ws.branch(record.agent)} still holds the commits of "
        f"dropped #{record.issue} (kept at {record.backup_ref}): {why}"
    )


# -- work no task will land ------------------------------------------------------------------


class Stray(NamedTuple):
    """Commits on an agent branch that nothing will land as they are, and the way out."""

    kind: str  # "dropped", "unplanned" (work of an issue no longer in the plan), "uncovered"
    message: str


def stray_work(
    ws: Workspace, state: State, agent: int, *, uncovered: bool = True, tip: str | None = None
) -> Stray | None:
    """The first reason the agent's branch holds commits no planned task will land, if any.

    ``uncovered=False`` skips looking for commits outside every task's work; ``tip``: the
    branch's commit when the caller read it already.
    """
    tip = tip or branch_tip(ws, agent)
    if tip is None:
        return None
    drops = pending_drops(ws, state, agent)
    if drops:
        why = drop_obstacle(ws, state, drops[0]) or (
            "they come off before the agent's next task, or now with 'paradev doctor --repair'"
        )
        return Stray("dropped", held_drop(ws, drops[0], why))
    unplanned = _unplanned_work(ws, state, agent, tip)
    if unplanned is not None:
        return unplanned
    return _uncovered(ws, state, agent, tip) if uncovered else None


def _unplanned_work(ws: Workspace, state: State, agent: int, tip: str) -> Stray | None:
    """Work recorded for an issue that is no longer in the plan (renamed or removed)."""
    for record in state.tasks.values():
        if record.agent != agent or record.status in NO_WORK or ws.plan.task(record.issue):
            continue
        end = record.head_commit or tip
        if not _contains(ws, end, tip) or count_commits(ws, f"refs/heads/{ws.plan.base}", end) == 0:
            continue
        return Stray("unplanned", unplanned_message(ws, record))
    return None


def unplanned_message(ws: Workspace, record: TaskRecord) -> str:
    """What to do with the work of an issue that left the plan (one text, every command)."""
    return (
        f"agent {record.agent}'s branch {ws.branch(record.agent)} holds the work of "
        f"#{record.issue} ({record.status}), which is no longer in plan.toml (renamed or "
        f"removed?): put #{record.issue} back in the plan to land it, or run "
        f"'paradev drop {record.issue}' to set its commits aside"
    )


def covered_tip(ws: Workspace, state: State, agent: int, tip: str) -> str | None:
    """The newest commit of the branch some task's work ends at (None: nothing is covered).

    A task with open work (in progress, failed, ...) owns everything up to the tip.
    """
    records = [r for r in state.tasks.values() if r.agent == agent]
    if any(r.status in OPEN_WORK for r in records):
        return tip
    heads = [r.head_commit for r in records if r.status not in (DROPPED, PLANNED, ASSIGNED)]
    return _nearest(ws, heads, tip)


def uncovered_commits(ws: Workspace, state: State, agent: int, tip: str) -> list[str]:
    """``<sha> <subject>`` of the branch's commits beyond base and every task's work."""
    covered = covered_tip(ws, state, agent, tip)
    if covered == tip:
        return []
    return commit_subjects(ws.git, covered or f"refs/heads/{ws.plan.base}", tip)


def _uncovered(ws: Workspace, state: State, agent: int, tip: str) -> Stray | None:
    subjects = uncovered_commits(ws, state, agent, tip)
    if not subjects:
        return None
    shown = ", ".join(subjects[:3]) + (
        f" and {len(subjects) - 3} more" if len(subjects) > 3 else ""
    )
    worktree = ws.worktree(agent)
    keep = covered_tip(ws, state, agent, tip) or merge_base(
        ws.git, f"refs/heads/{ws.plan.base}", tip
    )
    return Stray(
        "uncovered",
        f"agent {agent}'s branch {ws.branch(agent)} has {len(subjects)} commit(s) no task covers "
        f"({shown}): make them a task's work ('paradev start {agent}', then "
        f"'paradev complete {agent}'), or move them away ('git -C {worktree} branch NAME' "
        f"then 'git -C {worktree} reset --keep {(keep or '')[:12]}')",
    )
