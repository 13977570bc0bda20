"""The things every command needs at once: the repository, its plan and its state."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from paradev import plan as plan_mod
from paradev.errors import PreconditionError
from paradev.git import Git, Repository, discover, landed_issues
from paradev.plan import Plan, Task
from paradev.state import MERGED, State, StateStore, TaskRecord


@dataclass(frozen=True)
class Workspace:
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


def refuse_symlink(path: Path, agent: int) -> None:
    """A link planted at an agent's folder would make setup build, and cleanup delete, elsewhere."""
    if path.is_symlink():
        raise PreconditionError(
            f"agent {agent}'s folder {path} is a symbolic link (to {os.readlink(path)}); "
            f"paradev never follows it: remove the link (rm {path}) and run 'paradev setup'"
        )


def open_workspace(cwd: Path | None = None, plan_path: str | None = None) -> Workspace:
    """Discover the repository from ``cwd`` (any of its work trees) and load its plan."""
    repo = discover(cwd)
    path = plan_mod.find_plan(repo.main_root, plan_path)
    plan = plan_mod.load(path, repo.main_root)
    store = StateStore(repo.common_dir, recognise=LandedTasks(repo.git, plan))
    return Workspace(repo=repo, plan=plan, store=store)


class LandedTasks:
    """Marks as merged the plan's tasks that git shows landed but the state has no record of.

    After a reset (or a lost state) the ``Paradev-Issue`` trailers on base say
    what landed, so run-batch, status and merge never run it again; the next
    write records it. A task with a record is left as the record says.
    """

    def __init__(self, git: Git, plan: Plan) -> None:
        self.git, self.plan = git, plan
        self._cache: tuple[str | None, dict[int, tuple[str, str]]] | None = None

    def __call__(self, state: State) -> None:
        unknown = [t for t in self.plan.tasks() if t.issue not in state.tasks]
        if not unknown:
            return
        landed = self._landed()
        for task in unknown:
            if task.issue in landed:
                commit, date = landed[task.issue]
                state.tasks[task.issue] = TaskRecord(
                    issue=task.issue,
                    agent=task.agent,
                    status=MERGED,
                    merged_at=date,
                    merged_commit=commit,
                )

    def _landed(self) -> dict[int, tuple[str, str]]:
        """The landed issues, read once per base commit (a read per state read is too many)."""
        ref = f"refs/heads/{self.plan.base}"
        head = self.git.rev(ref)
        if self._cache is None or self._cache[0] != head:
            self._cache = (head, landed_issues(self.git, ref) if head else {})
        return self._cache[1]
