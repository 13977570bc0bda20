"""Create and repair the agents' work trees and branches.

``setup`` first decides what to do for every agent and refuses before
changing anything if one agent cannot be set up, so a refused run leaves the
repository as it was. Stale worktree records (their folder is gone) are
ignored while deciding and pruned just before the changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from paradev.errors import PreconditionError
from paradev.git import (
    Worktree,
    adding_worktrees,
    local_branches,
    rebase_in_progress,
    repair_worktree,
    worktree_link_ok,
    worktree_list,
)
from paradev.state import AgentRecord, State
from paradev.workspace import Workspace


@dataclass(frozen=True)
class Step:
    """What setup does (or found done) for one agent."""

    agent: int
    branch: str
    worktree: Path
    action: str  # "exists" | "repair" (broken .git link) | "add" (existing branch) | "create"

    def describe(self) -> str:
        verbs = {
            "exists": "ok",
            "repair": "repaired the broken .git link of",
            "add": "added worktree for existing branch",
            "create": "created branch and worktree",
        }
        return f"agent {self.agent}: {verbs[self.action]} {self.branch} at {self.worktree}"


def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def setup(ws: Workspace, agents: int | None = None) -> list[Step]:
    """Create or repair the worktrees of agents 1..``agents`` (default: all). Idempotent."""
    count = ws.plan.agent_count if agents is None else agents
    if not 1 <= count <= ws.plan.agent_count:
        raise PreconditionError(
            f"--agents {count}: the plan has agents 1..{ws.plan.agent_count}; "
            "raise agents.count in plan.toml to add agents"
        )
    git = ws.git
    ws.store.read()  # a corrupt state stops us before anything changes
    _plan_steps(ws, count, _live_worktrees(ws))  # refuse before fetching
    if ws.plan.remote:  # outside the lock: the network may be slow
        git.run("fetch", "--quiet", "--", ws.plan.remote)
    start = ws.base_ref()
    with ws.store.locked():
        state = ws.store.read()
        steps = _plan_steps(ws, count, _live_worktrees(ws))
        if any(step.action == "create" for step in steps) and git.rev(start) is None:
            raise PreconditionError(
                f"base {start!r} does not exist; create it or set project.base in plan.toml"
            )
        git.run("worktree", "prune")
        done: list[Step] = []
        try:
            for step in steps:
                _apply(ws, step, start)
                done.append(step)
        finally:  # the state records what exists, also when one agent failed
            _record(ws, state, done)
    return steps


def _record(ws: Workspace, state: State, steps: list[Step]) -> None:
    """Save the agents' worktrees and branches in the state, unless nothing changed."""
    records = {s.agent: AgentRecord(s.agent, s.branch, str(s.worktree)) for s in steps}
    if any(state.agents.get(agent) != record for agent, record in records.items()):
        state.agents.update(records)
        ws.store.write(state)


def _live_worktrees(ws: Workspace) -> list[Worktree]:
    """git's worktree records, without the stale ones (their folder is gone; prune drops them)."""
    return [r for r in worktree_list(ws.git) if not r.prunable]


def _rebasing(path: Path) -> str | None:
    """The branch a rebase in progress at ``path`` rewrites (meanwhile git shows no branch)."""
    rebase = rebase_in_progress(path)
    return rebase.head_name.removeprefix("refs/heads/") if rebase else None


def _plan_steps(ws: Workspace, count: int, records: list[Worktree]) -> list[Step]:
    by_path = {_real(r.path): r for r in records}
    by_branch = {r.branch: r for r in records if r.branch}
    branches = set(local_branches(ws.git))
    steps: list[Step] = []
    problems: list[str] = []
    mine = ws.agents_here()  # with [agents] hosts, only this host's agents get a worktree
    for agent in range(1, count + 1):
        if mine is not None and agent not in mine:
            continue
        branch, path = ws.branch(agent), ws.worktree(agent)
        record = by_path.get(_real(path))
        if record is not None:
            if (record.branch or _rebasing(path)) != branch:
                problems.append(
                    f"{path} is a worktree on {record.branch or 'a detached HEAD'}, not {branch}; "
                    f"check out {branch} there or remove it with 'git worktree remove'"
                )
            action = "exists" if worktree_link_ok(path) else "repair"
            steps.append(Step(agent, branch, path, action))
            continue
        if path.exists() and not (path.is_dir() and not any(path.iterdir())):
            problems.append(
                f"{path} exists and is not agent {agent}'s worktree; "
                "move it away or change project.worktrees"
            )
        elif blocker := _blocked_parent(path):
            problems.append(
                f"{blocker} is not a folder, so no agent worktree can be created in it; "
                "move it away or change project.worktrees"
            )
        elif branch in by_branch:
            problems.append(
                f"branch {branch} is checked out in {by_branch[branch].path}; "
                "switch that worktree to another branch first"
            )
        elif branch not in branches and (clash := _name_clash(branch, branches)):
            problems.append(
                f"branch {clash} exists, so git cannot also create {branch}; "
                "change project.branch_prefix"
            )
        steps.append(Step(agent, branch, path, "add" if branch in branches else "create"))
    if problems:  # one blocked folder is said once, not once per agent
        raise PreconditionError("; ".join(dict.fromkeys(problems)))
    return steps


def _blocked_parent(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` when it is a file or a dangling symlink."""
    for parent in path.parents:
        if os.path.lexists(parent):
            return None if parent.is_dir() else parent
    return None


def _name_clash(branch: str, branches: set[str]) -> str | None:
    """An existing branch that is a folder of ``branch`` (``a`` for ``a/b``), or inside it."""
    parts = branch.split("/")
    parents = ("/".join(parts[:i]) for i in range(1, len(parts)))
    return next((p for p in parents if p in branches), None) or next(
        (b for b in sorted(branches) if b.startswith(branch + "/")), None
    )


def _apply(ws: Workspace, step: Step, start: str) -> None:
    if step.action == "exists":
        return
    if step.action == "repair":
        repair_worktree(ws.git, step.worktree)
        return
    add_worktree(ws, step.worktree, step.branch, None if step.action == "add" else start)


def add_worktree(ws: Workspace, path: Path, branch: str, start: str | None) -> None:
    """A new work tree at ``path`` on ``branch``: the existing branch, or created at ``start``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with adding_worktrees(ws.repo.common_dir):  # a merge train may add a gate slot
        if start is None:
            ws.git.run("worktree", "add", "--quiet", "--", str(path), branch)
        else:
            argv = ["worktree", "add", "--quiet", "--no-track", "-b", branch, "--", str(path)]
            ws.git.run(*argv, start)
