"""Remove agent worktrees (and optionally branches) once their work is on base.

A worktree goes only when its branch is fully merged into base and its tree
is clean. ``--force`` removes the others too, but first keeps every unmerged
commit and every uncommitted change under ``refs/paradev/backup/``, so nothing
a user or an agent wrote is ever lost. Base, and any branch checked out in
another work tree, is never deleted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.git import Worktree
from paradev.state import IN_PROGRESS
from paradev.train import BACKUP_PREFIX
from paradev.workspace import Workspace


@dataclass
class CleanupReport:
    """What cleanup did and what it refused (refusals make the command exit 1)."""

    removed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"removed worktree {p}" for p in self.removed]
        lines += [f"deleted branch {b}" for b in self.deleted]
        lines += [f"kept {b}" for b in self.backups]
        lines += [f"refused: {r}" for r in self.refused]
        return lines or ["nothing to clean up"]


@dataclass(frozen=True)
class AgentFacts:
    """Why an agent's worktree or branch may not simply be removed."""

    agent: int
    branch: str
    path: Path
    record: Worktree | None
    head: str | None
    dirty: list[str]
    unmerged: int
    busy: list[int]
    operation: str | None  # a rebase, merge or cherry-pick under way in the worktree

    def problems(self, base: str) -> list[str]:
        found: list[str] = []
        if self.record is not None and self.record.branch != self.branch:
            found.append(f"it has {self.record.branch or 'a detached HEAD'} checked out")
        if self.record is not None and self.record.locked:
            found.append("the worktree is locked")
        if self.dirty:
            shown = ", ".join(self.dirty[:5]) + (" ..." if len(self.dirty) > 5 else "")
            found.append(f"{len(self.dirty)} uncommitted path(s): {shown}")
        if self.unmerged:
            found.append(f"{self.unmerged} commit(s) not in {base}")
        if self.busy:
            found.append("task(s) in progress: " + ", ".join(f"#{i}" for i in self.busy))
        return found


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _facts(ws: Workspace, agent: int, records: dict[str, Worktree], busy: list[int]) -> AgentFacts:
    branch, path = ws.branch(agent), ws.worktree(agent)
    record = records.get(os.path.realpath(path))
    head = ws.git.rev(f"refs/heads/{branch}")
    unmerged = gitmod.ahead_behind(ws.git, ws.plan.base, branch)[0] if head else 0
    dirty = gitmod.dirty_paths(path) if record is not None else []
    operation = gitmod.unfinished_operation(path) if record is not None else None
    return AgentFacts(agent, branch, path, record, head, dirty, unmerged, busy, operation)


def cleanup(ws: Workspace, *, force: bool = False, delete_branches: bool = False) -> CleanupReport:
    """Remove merged, clean agent worktrees; with ``force`` the rest too, after backing them up."""
    state = ws.store.read()
    if state.train is not None:
        raise PreconditionError(
            "a merge train is in progress; finish it (paradev merge --continue/--skip) "
            "or end it (paradev merge --abort) before cleaning up"
        )
    agents = range(1, ws.plan.agent_count + 1)
    for agent in agents:  # a symlinked agent folder stops us before anything is removed
        ws.worktree(agent)
    git = ws.git
    gitmod.prune_worktrees(git)
    records = {os.path.realpath(r.path): r for r in gitmod.worktree_list(git)}
    report = CleanupReport()
    stamp = _stamp()
    removed_agents: list[int] = []
    for agent in agents:
        busy = [t.issue for t in ws.tasks_of(agent) if state.status(t.issue) == IN_PROGRESS]
        facts = _facts(ws, agent, records, busy)
        if facts.record is None and not (delete_branches and facts.head):
            continue
        problems = facts.problems(ws.plan.base)
        if facts.operation is not None:  # never end a rebase or merge someone else started
            report.refused.append(
                f"agent {agent} ({facts.path}): a {facts.operation} is in progress there; "
                f"finish or abort it yourself (git -C {facts.path} {facts.operation} --abort), "
                "even --force keeps it"
            )
            continue
        if problems and not force:
            report.refused.append(f"agent {agent} ({facts.path}): " + "; ".join(problems))
            continue
        _back_up(ws, facts, stamp, report)
        if facts.record is not None:
            gitmod.remove_worktree(git, facts.path, force=bool(problems))
            report.removed.append(str(facts.path))
            removed_agents.append(agent)
        if delete_branches and facts.head:
            _delete_branch(ws, facts, report)
    if removed_agents:
        with ws.store.update() as state:
            for agent in removed_agents:
                state.agents.pop(agent, None)
    return report


def _back_up(ws: Workspace, facts: AgentFacts, stamp: str, report: CleanupReport) -> None:
    """Keep unmerged commits and uncommitted changes under refs/paradev/backup/<branch>/."""
    prefix = f"{BACKUP_PREFIX}/{facts.branch}/cleanup-{stamp}"
    if facts.dirty:
        snapshot = gitmod.snapshot_worktree(
            facts.path, f"paradev cleanup: uncommitted work of agent {facts.agent}\n"
        )
        if snapshot:
            gitmod.update_ref(ws.git, f"{prefix}-uncommitted", snapshot, "")
            report.backups.append(f"{prefix}-uncommitted (uncommitted changes of {facts.path})")
    if facts.unmerged and facts.head:
        gitmod.update_ref(ws.git, prefix, facts.head, "")
        report.backups.append(f"{prefix} ({facts.unmerged} unmerged commit(s) of {facts.branch})")
    detached = (
        facts.record.head if facts.record is not None and facts.record.branch is None else None
    )
    if detached and not gitmod.is_ancestor(ws.git, detached, f"refs/heads/{ws.plan.base}"):
        # commits made on a detached HEAD live only in that work tree's HEAD and reflog
        gitmod.update_ref(ws.git, f"{prefix}-detached", detached, "")
        report.backups.append(f"{prefix}-detached (the detached HEAD of {facts.path})")


def _delete_branch(ws: Workspace, facts: AgentFacts, report: CleanupReport) -> None:
    if facts.branch == ws.plan.base:
        report.refused.append(f"branch {facts.branch}: it is the base branch; never deleted")
        return
    holders = [r.path for r in gitmod.worktree_list(ws.git) if r.branch == facts.branch]
    if holders:
        report.refused.append(f"branch {facts.branch}: checked out in {holders[0]}; kept")
        return
    assert facts.head is not None
    gitmod.delete_ref(ws.git, f"refs/heads/{facts.branch}", facts.head)
    report.deleted.append(facts.branch)
