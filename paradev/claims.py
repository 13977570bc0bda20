"""``check``: is another agent already changing these paths, on its branch or in its work tree?

Meant to run before every edit an agent makes, so it loads only what it
needs: the branches' changed paths and a path-limited ``git status`` of
each other agent's work tree (kept between runs while nothing it depends on
changed: ``paradev.dirtycache``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from paradev import git as gitmod
from paradev.branches import find_heads_kept, load_branches
from paradev.dirtycache import KeptDirt
from paradev.errors import ParadevError, PreconditionError
from paradev.workspace import Workspace


class Claim:
    """An agent already changing a path: on its branch, in its work tree, or both.

    A plain class: a ``typing.NamedTuple`` costs ~0.2 ms of every ``check``.
    """

    __slots__ = ("agent", "path", "where")

    def __init__(self, path: str, agent: int, where: str) -> None:
        self.path = path
        self.agent = agent
        self.where = where  # "branch", "worktree" or "branch+worktree"


def check_json(paths: list[str], claims: list[Claim]) -> dict[str, Any]:
    """``check --json``: per path asked, the agents already changing it."""
    return {
        "paths": paths,
        "claimed": bool(claims),
        "claims": [
            {"path": claim.path, "agent": claim.agent, "where": claim.where} for claim in claims
        ],
        "agents": sorted({claim.agent for claim in claims}),
    }


def repo_relative(ws: Workspace, raw: str, cwd: Path | None = None) -> str:
    """A user's path (relative to where they stand, or absolute) as a repository path."""
    if not raw.strip():
        raise PreconditionError("an empty PATH names nothing; give a file or directory ('.' = all)")
    here = (cwd or Path.cwd()).resolve()
    full = Path(os.path.normpath(here / raw))
    top = ws.repo.toplevel.resolve()
    try:
        relative = full.relative_to(top)
    except ValueError:
        raise PreconditionError(f"{raw} is outside the repository work tree {top}") from None
    return relative.as_posix() if str(relative) != "." else ""


def asking_agent(
    ws: Workspace, explicit: int | None = None, env: Mapping[str, str] | None = None
) -> int | None:
    """The agent asking ``check``: ``--agent``, else ``PARADEV_AGENT``, else the worktree it is in.

    An agent that runs ``paradev check`` in its own worktree must not find
    itself: its own branch changes the very files it is about to edit.
    """
    if explicit is not None:
        return explicit
    named = (os.environ if env is None else env).get("PARADEV_AGENT", "").strip()
    if named:
        if not named.isascii() or not named.isdigit() or not 1 <= int(named) <= ws.plan.agent_count:
            raise PreconditionError(
                f"PARADEV_AGENT={named!r} is not an agent of the plan (1..{ws.plan.agent_count}); "
                "unset it or pass --agent N"
            )
        return int(named)
    return _worktree_agent(ws)


def _worktree_agent(ws: Workspace) -> int | None:
    """The agent whose worktree is the one paradev runs in, if it is one."""
    here = ws.repo.toplevel.resolve()
    root = ws.plan.worktree_root(ws.repo.main_root).resolve()
    name = here.name.removeprefix("agent-")
    if here.parent != root or name == here.name or not (name.isascii() and name.isdigit()):
        return None
    agent = int(name)
    return agent if 1 <= agent <= ws.plan.agent_count else None


def claims(ws: Workspace, paths: Sequence[str], exclude: int | None = None) -> list[Claim]:
    """Which other agents change any of ``paths``; a directory covers its files.

    The asking agent (``exclude``, else found by ``asking_agent``) is left out.
    """
    exclude = asking_agent(ws, exclude)
    agents = [a for a in range(1, ws.plan.agent_count + 1) if a != exclude]
    kept = KeptDirt(ws.repo.common_dir, paths)
    dirty: dict[int, set[str]] = {}
    for agent in agents:
        tree = _tree(ws, agent)
        known = kept.get(tree) if tree else None
        if known is not None:
            dirty[agent] = known
    missing = [agent for agent in agents if agent not in dirty]
    # "Agent" 0 stands for the branches (git calls one after another): every work
    # tree's status runs alongside them rather than after.
    asked: list[Any] = gitmod.side_by_side(
        lambda agent: _dirty(ws, agent, paths) if agent else _committed(ws), [0, *missing]
    )
    committed: dict[int, set[str]] = asked[0]
    for agent, paths_or_error in zip(missing, asked[1:], strict=True):
        if isinstance(paths_or_error, ParadevError):
            raise paths_or_error
        dirty[agent] = paths_or_error
        tree = _tree(ws, agent)
        if tree:
            kept.learn(tree, paths_or_error)
    kept.save()
    found: list[Claim] = []
    for path in paths:
        for agent in agents:
            places = [
                name
                for name, changed in (
                    ("branch", committed.get(agent, set())),
                    ("worktree", dirty.get(agent, set())),
                )
                if any(_covers(path, c) for c in changed)
            ]
            if places:
                found.append(Claim(path, agent, "+".join(places)))
    return found


def _covers(query: str, changed: str) -> bool:
    return not query or changed == query or changed.startswith(query.rstrip("/") + "/")


BRANCH_PATHS_CACHE = "branch-paths.json"  # under <common>/paradev: see paradev.commitcache


def _committed(ws: Workspace) -> dict[int, set[str]]:
    """The paths each agent's branch changed since it left base (agents with commits only).

    They depend on base's and the branch's commits alone, so they are kept by
    those ids (``paradev.commitcache``): only a branch that moved (or every
    branch, when base moved) is read from git again.
    """
    from paradev.commitcache import CommitCache

    heads = find_heads_kept(ws)
    cache = CommitCache(ws.store.dir / BRANCH_PATHS_CACHE, enabled=heads.plain)
    keys = {agent: f"{heads.base_commit}...{head}" for agent, (_, head, _) in heads.heads.items()}

    def read(missing: list[int]) -> dict[int, list[str]]:
        branches, _ = load_branches(ws.git, heads.only({a: heads.heads[a] for a in missing}))
        return {b.agent: sorted(b.changes.paths) if b.has_work else [] for b in branches}

    changed: dict[int, list[str]] = cache.lookup(keys, _paths_list, read)
    return {agent: set(paths) for agent, paths in changed.items() if paths}


def _paths_list(kept: Any) -> bool:
    return isinstance(kept, list) and all(isinstance(path, str) for path in kept)


def _tree(ws: Workspace, agent: int) -> Path | None:
    """The agent's work tree folder; None when it is refused (``_dirty`` says why)."""
    try:
        return ws.worktree(agent)
    except ParadevError:
        return None


def _dirty(ws: Workspace, agent: int, within: Sequence[str]) -> set[str] | ParadevError:
    """Uncommitted paths below ``within`` in the agent's work tree (none without one).

    An error is returned, not raised: the branches' own error (no base, say)
    comes first, as when they were asked first.
    """
    try:
        tree = ws.worktree(agent)
        return set(gitmod.dirty_paths(tree, within=within)) if (tree / ".git").exists() else set()
    except ParadevError as err:
        return err
