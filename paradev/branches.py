"""Each agent's work as git sees it: its head (or a snapshot), fork point, commits and paths.

``conflicts`` compares these; ``check`` only asks which paths each branch
changes, so it loads this module without the conflict machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.git import Git
from paradev.records import NamedTuple
from paradev.workspace import Workspace

T = TypeVar("T")


class Changes(NamedTuple):
    """A side's changed paths, and the directories the prefilter must compare too."""

    paths: Mapping[str, str]  # path -> A/M/D/T (renames as delete + add)
    dirs: frozenset[str] = frozenset()  # every parent directory of a changed path
    added_dirs: frozenset[str] = frozenset()  # parents of added paths (directory renames)
    gone_dirs: frozenset[str] = frozenset()  # parents of deleted paths (directory renames)

    @classmethod
    def of(cls, paths: Mapping[str, str]) -> Changes:
        dirs: set[str] = set()
        added: set[str] = set()
        gone: set[str] = set()
        for path, status in paths.items():
            parents = _parents(path)
            dirs.update(parents)
            if status == "A":
                added.update(parents)
            elif status == "D":
                gone.update(parents)
        return cls(paths, frozenset(dirs), frozenset(added), frozenset(gone))


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class Branch(NamedTuple):
    """One agent's work as a commit: its branch head, or a snapshot of its work tree."""

    agent: int
    branch: str
    head: str
    fork: str  # where it left base (its merge-base with base)
    changes: Changes  # from fork to head
    commits: frozenset[str]  # commits not in base
    uncommitted: bool = False
    # How many merge bases the branch has with base: 1 as a rule; several when
    # base merged into it criss-cross (the prefilter cannot reason about it, so
    # it is always merged); 0 when it shares no commit with base at all.
    fork_bases: int = 1

    @property
    def fork_is_unique(self) -> bool:
        return self.fork_bases == 1

    @property
    def files(self) -> list[str]:
        return sorted(self.changes.paths)

    @property
    def has_work(self) -> bool:
        return bool(self.commits)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "branch": self.branch,
            "head": self.head,
            "files": self.files,
            "uncommitted": self.uncommitted,
        }


class Heads:
    """Where base is and the commit standing for each agent's work.

    A plain class: a ``typing.NamedTuple`` costs ~0.2 ms of every ``check``.
    """

    __slots__ = ("base", "base_commit", "base_ref", "heads", "plain")

    def __init__(
        self,
        base: str,
        base_ref: str,
        base_commit: str,
        heads: dict[int, tuple[str, str, bool]],  # agent -> (branch, commit, uncommitted)
        plain: bool = True,  # no replace refs, grafts or shallow boundary (commitcache may be used)
    ) -> None:
        self.base = base
        self.base_ref = base_ref
        self.base_commit = base_commit
        self.heads = heads
        self.plain = plain

    def only(self, agents: dict[int, tuple[str, str, bool]]) -> Heads:
        """The same base with only these heads."""
        return Heads(self.base, self.base_ref, self.base_commit, agents, self.plain)


def find_heads(ws: Workspace, uncommitted: bool = False, remote: bool = False) -> Heads:
    """The base commit and every agent's head (remote-tracking or snapshot when asked)."""
    git = ws.git
    agents = range(1, ws.plan.agent_count + 1)
    prefix = "refs/heads/"
    if remote:
        if not ws.plan.remote:
            raise PreconditionError(
                '--remote needs project.remote in plan.toml (e.g. remote = "origin")'
            )
        gitmod.fetch(git, ws.plan.remote)
        prefix = f"refs/remotes/{ws.plan.remote}/"
    base_refs = [f"{prefix}{ws.plan.base}", f"refs/heads/{ws.plan.base}"]
    from paradev.hosts import elsewhere  # not imported by a check that keeps its heads

    away = {} if remote else elsewhere(ws.plan, git)  # other hosts' agents: as pushed
    pushed = f"refs/remotes/{ws.plan.remote}/"
    wanted = [f"{pushed if a in away else prefix}{ws.branch(a)}" for a in agents]
    refs, plain = gitmod.resolve_refs_of_plain_history(
        git, [*base_refs, *wanted], ws.repo.common_dir
    )
    base_ref = next((ref for ref in base_refs if ref in refs), None)
    if base_ref is None:
        raise PreconditionError(f"base branch {ws.plan.base!r} does not exist")
    heads: dict[int, tuple[str, str, bool]] = {}
    for agent in agents:
        head = refs.get(f"{pushed if agent in away else prefix}{ws.branch(agent)}")
        if head:
            heads[agent] = (ws.branch(agent), head, False)
    if uncommitted:
        heads.update(_snapshots(ws, agents))
    return Heads(ws.plan.base, base_ref, refs[base_ref], heads, plain)


def _snapshots(ws: Workspace, agents: Iterable[int]) -> dict[int, tuple[str, str, bool]]:
    """A snapshot of every existing agent work tree (never touching its index or files)."""
    shots = _in_worktrees(ws, agents, gitmod.snapshot_work)
    return {
        agent: (ws.branch(agent), snapshot, snapshot != head)
        for agent, (head, snapshot) in shots.items()
    }


def _in_worktrees(ws: Workspace, agents: Iterable[int], look: Callable[[Path], T]) -> dict[int, T]:
    """``look`` at every agent work tree that exists, side by side (one git process each)."""
    present = [a for a in agents if (ws.worktree(a) / ".git").exists()]
    if not present:
        return {}
    found = gitmod.side_by_side(lambda agent: look(ws.worktree(agent)), present)
    return dict(zip(present, found, strict=True))


def load_branches(git: Git, heads: Heads) -> tuple[list[Branch], dict[str, Changes]]:
    """Each agent's fork point, commits and changed paths; and base's changes since each fork.

    One ``rev-list`` finds every branch's commits beyond base; one
    ``diff-tree --stdin`` lists the changes of every branch and of base.
    """
    shas = sorted({commit for _, commit, _ in heads.heads.values()})
    parents, boundary = gitmod.commits_beyond(git, heads.base_commit, shas)
    owned = {
        agent: _walk(commit, parents, boundary) for agent, (_, commit, _) in heads.heads.items()
    }
    forks = _forks(git, heads, {agent: reached for agent, (_, reached) in owned.items()})
    agents = sorted(heads.heads)
    base_forks = sorted({fork for fork, bases in forks.values() if bases} - {heads.base_commit})
    diffs = gitmod.diff_trees(
        git,
        [(forks[a][0], heads.heads[a][1]) for a in agents]
        + [(fork, heads.base_commit) for fork in base_forks],
    )
    branches = [
        Branch(
            agent=agent,
            branch=heads.heads[agent][0],
            head=heads.heads[agent][1],
            fork=forks[agent][0],
            changes=Changes.of(diff),
            commits=frozenset(owned[agent][0]),
            uncommitted=heads.heads[agent][2],
            fork_bases=forks[agent][1],
        )
        for agent, diff in zip(agents, diffs[: len(agents)], strict=True)
    ]
    base_changes = {
        fork: Changes.of(diff) for fork, diff in zip(base_forks, diffs[len(agents) :], strict=True)
    }
    return branches, base_changes


def _forks(git: Git, heads: Heads, reached: Mapping[int, set[str]]) -> dict[int, tuple[str, int]]:
    """agent -> (its merge-base with base, how many merge bases it has with base).

    A branch that grew from one base commit forked there; one that merged base
    in (or shares no history with it) asks git, which may find several or none.
    With none, the head stands for the fork: the branch then shows no files.
    """
    forks: dict[int, tuple[str, int]] = {}
    tangled = sorted(agent for agent, grown in reached.items() if len(grown) != 1)
    asked = gitmod.merge_bases(git, [(heads.base_commit, heads.heads[a][1]) for a in tangled])
    for agent, bases in zip(tangled, asked, strict=True):
        forks[agent] = (bases[0] if bases else heads.heads[agent][1], len(bases))
    for agent, grown in reached.items():
        if len(grown) == 1:
            forks[agent] = (next(iter(grown)), 1)
    return forks


def _walk(
    head: str, parents: Mapping[str, list[str]], boundary: set[str]
) -> tuple[set[str], set[str]]:
    """The commits of ``head`` beyond base, and the base commits they grow from."""
    commits: set[str] = set()
    reached: set[str] = set()
    todo = [head]
    while todo:
        commit = todo.pop()
        if commit in commits or commit in reached:
            continue
        if commit in parents:
            commits.add(commit)
            todo.extend(parents[commit])
        elif commit in boundary or commit == head:
            reached.add(commit)
    return commits, reached
