"""The things every command needs at once: the repository, its plan and its state."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from paradev import plan as plan_mod
from paradev.errors import PreconditionError
from paradev.git import Git, Repository, discover
from paradev.landed import LANDED_CACHE, LandedTasks
from paradev.layout import STORE_DIR
from paradev.plan import Plan, Task
from paradev.records import NamedTuple
from paradev.state import StateStore


class Workspace(NamedTuple):
    """A repository with its validated plan and its shared state store."""

    repo: Repository
    plan: Plan
    store: StateStore

    @property
    def git(self) -> Git:
        return self.repo.git

    def branch(self, agent: int) -> str:
        return self.plan.branch(agent)

    def worktree(self, agent: int) -> Path:
        """The agent's work tree folder; never a symbolic link (it could lead anywhere)."""
        path = self.plan.worktree(agent, self.repo.main_root)
        refuse_symlink(path, agent)
        return path

    def agent_git(self, agent: int) -> Git:
        """git inside the agent's work tree; a clear error when it does not exist."""
        path = self.worktree(agent)
        if not (path / ".git").exists():
            raise PreconditionError(
                f"agent {agent} has no worktree at {path}; run 'paradev setup' first"
            )
        return Git(path)

    def check_agent(self, agent: int) -> None:
        if not 1 <= agent <= self.plan.agent_count:
            raise PreconditionError(
                f"unknown agent {agent}: the plan has agents 1..{self.plan.agent_count}"
            )

    def base_ref(self) -> str:
        """The ref new work starts from: the remote's base when a remote is configured."""
        if self.plan.remote:
            return f"refs/remotes/{self.plan.remote}/{self.plan.base}"
        return self.plan.base

    def tasks_of(self, agent: int) -> list[Task]:
        return self.plan.tasks_for(agent)

    def agents_here(self) -> tuple[int, ...] | None:
        """The agents this clone's host runs ([agents] hosts); None: every agent runs here."""
        from paradev.hosts import agents_here

        return agents_here(self.plan, self.git)


def refuse_symlink(path: Path, agent: int) -> None:
    """A link planted at an agent's folder would make setup build, and cleanup delete, elsewhere."""
    if path.is_symlink():
        raise PreconditionError(
            f"agent {agent}'s folder {path} is a symbolic link (to {os.readlink(path)}); "
            f"paradev never follows it: remove the link (rm {path}) and run 'paradev setup'"
        )


def agent_folders(ws: Workspace) -> set[int]:
    """The agent numbers with an ``agent-N`` folder under the worktree root (no git asked)."""
    root = ws.plan.worktree_root(ws.repo.main_root)
    folders = numbered_folders(p.name for p in root.iterdir()) if root.is_dir() else set()
    return {n for n in folders if (root / f"agent-{n}").is_dir()}


def numbered_folders(names: Iterable[str]) -> set[int]:
    """N of every name spelled ``agent-N`` (a folder, or a branch with its prefix swapped)."""
    found = set()
    for name in names:
        match = re.fullmatch(r"agent-([0-9]{1,9})", str(name))
        if match:
            found.add(int(match.group(1)))
    return found


def open_workspace(cwd: Path | None = None, plan_path: str | None = None) -> Workspace:
    """Discover the repository from ``cwd`` (any of its work trees) and load its plan."""
    repo = discover(cwd)
    path = plan_mod.find_plan(repo.main_root, plan_path)
    plan = plan_mod.load(path, repo.main_root, repo.common_dir / STORE_DIR / plan_mod.PARSED_PLAN)
    store = StateStore(repo.common_dir) if not plan.hosts else _shared_store(repo, plan)
    store.recognise = LandedTasks(repo.git, plan, store.dir / LANDED_CACHE)
    return Workspace(repo=repo, plan=plan, store=store)


def _shared_store(repo: Repository, plan: Plan) -> StateStore:
    """With [agents] hosts the state lives on the remote; this clone's files are its cache."""
    from functools import partial

    from paradev.hosts import this_host
    from paradev.shared import SharedState, SharedStateStore

    host = partial(this_host, repo.git)  # asked on a write
    shared = SharedState(repo.git, plan.remote, host, expiry=plan.lease_expiry)
    return SharedStateStore(repo.common_dir, shared)
