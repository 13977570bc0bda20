"""``check``: is another agent already changing these paths, on its branch or in its work tree?

Meant to run before every edit an agent makes, so it must answer in about the
time Python takes to start. Every part of its answer is kept between runs
(``paradev.kept``): what the plan and state say (the *context*), where the
branches point (keyed by the ref files), the paths each branch changed (by
commit ids: ``paradev.commitcache``) and each work tree's uncommitted paths
(``paradev.dirtycache``). When every part is kept and still valid,
``kept_claims`` answers from them alone: no git process, and none of the
modules the other commands need. Otherwise ``claims`` asks git for what
changed and keeps the new answers.
"""

from __future__ import annotations

import os
import time

from paradev.context import Context, FilesRead, keep_context, kept_context
from paradev.errors import ParadevError, PreconditionError
from paradev.kept import load, save
from paradev.layout import STORE_DIR

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from paradev.branches import Heads
    from paradev.workspace import Workspace

HEADS_FILE = "branch-heads.kept"  # the branch heads, keyed by the ref files
BRANCH_PATHS_FILE = "branch-paths.kept"  # each branch's changed paths, by commit ids


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


def repo_relative(toplevel: str, raw: str, cwd: str | None = None) -> str:
    """A user's path (relative to where they stand, or absolute) as a repository path."""
    if not raw.strip():
        raise PreconditionError("an empty PATH names nothing; give a file or directory ('.' = all)")
    here = os.path.realpath(cwd or os.getcwd())
    full = os.path.normpath(os.path.join(here, raw))
    top = os.path.realpath(toplevel)
    if full == top:
        return ""
    inside = top if top.endswith(os.sep) else top + os.sep
    if not full.startswith(inside):
        raise PreconditionError(f"{raw} is outside the repository work tree {top}")
    return full[len(inside) :].replace(os.sep, "/")


def asking_agent(
    explicit: int | None,
    agent_count: int,
    toplevel: str,
    worktree_root: str,
    env: Mapping[str, str] | None = None,
) -> int | None:
    """The agent asking ``check``: ``--agent``, else ``PARADEV_AGENT``, else the worktree it is in.

    An agent that runs ``paradev check`` in its own worktree must not find
    itself: its own branch changes the very files it is about to edit.
    """
    if explicit is not None:
        return explicit
    named = (os.environ if env is None else env).get("PARADEV_AGENT", "").strip()
    if named:
        if not named.isascii() or not named.isdigit() or not 1 <= int(named) <= agent_count:
            raise PreconditionError(
                f"PARADEV_AGENT={named!r} is not an agent of the plan (1..{agent_count}); "
                "unset it or pass --agent N"
            )
        return int(named)
    here = os.path.realpath(toplevel)
    name = os.path.basename(here).removeprefix("agent-")
    if os.path.dirname(here) != os.path.realpath(worktree_root) or name == os.path.basename(here):
        return None
    if not (name.isascii() and name.isdigit()):
        return None
    agent = int(name)
    return agent if 1 <= agent <= agent_count else None


def claims_of(
    paths: Sequence[str],
    agents: Sequence[int],
    committed: Mapping[int, set[str]],
    dirty: Mapping[int, set[str]],
) -> list[Claim]:
    """Per path asked, the agents whose branch or work tree changes it (a folder covers its
    files)."""
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


# -- from kept answers alone -----------------------------------------------------------------


def kept_claims(
    raw_paths: Sequence[str], explicit: int | None, cwd: str | None = None
) -> tuple[list[Claim], tuple[str, ...]] | None:
    """``check``'s answer (and each agent's branch) from kept answers alone; None when any
    part is missing or no longer valid, or the input needs an error: ``claims`` then answers.
    """
    from paradev.gitdir import find_repository

    try:
        here = cwd or os.getcwd()
    except OSError:  # the folder was removed: the full path says so
        return None
    found = find_repository(here)
    context = kept_context(found.common_dir, found.main_root) if found else None
    if found is None or context is None or not raw_paths:
        return None
    if explicit is not None and not 1 <= explicit <= context.agent_count:
        return None
    try:
        paths = [repo_relative(found.toplevel, raw, cwd) for raw in raw_paths]
        exclude = asking_agent(explicit, context.agent_count, found.toplevel, context.worktree_root)
    except ParadevError:
        return None
    agents = [a for a in range(1, context.agent_count + 1) if a != exclude]
    committed = _kept_committed(found.common_dir, context)
    dirty = _kept_dirty(found.common_dir, context, agents, paths)
    if committed is None or dirty is None:
        return None
    return claims_of(paths, agents, committed, dirty), context.branches


def _kept_committed(common_dir: str, context: Context) -> dict[int, set[str]] | None:
    """Each branch's changed paths, when the heads and every branch's paths are kept."""
    from paradev.commitcache import CommitCache
    from paradev.gitdir import refs_key

    key = refs_key(common_dir, _head_refs(context.base, context.branches), time.time_ns())
    kept = _kept_heads(common_dir, key) if key else None
    if kept is None:
        return None
    _, _, _, base_commit, heads, plain = kept
    if plain is not True:
        return None  # history other than commit ids say: branch paths are never kept
    cache = CommitCache(os.path.join(common_dir, STORE_DIR, BRANCH_PATHS_FILE))
    committed: dict[int, set[str]] = {}
    for agent, (_, head, _) in heads.items():
        paths = cache.get(f"{base_commit}...{head}")
        if not _paths_list(paths):
            return None
        if paths:
            committed[agent] = set(paths)
    return committed


def _kept_dirty(
    common_dir: str, context: Context, agents: Sequence[int], paths: Sequence[str]
) -> dict[int, set[str]] | None:
    """Each other agent's uncommitted paths, when every work tree's answer is kept."""
    from paradev.dirtycache import KeptDirt

    kept = KeptDirt(common_dir, paths)
    dirty: dict[int, set[str]] = {}
    for agent in agents:
        tree = context.worktrees[agent - 1]
        if os.path.islink(tree):
            return None  # refused, with its reason, by the full path
        if not os.path.exists(os.path.join(tree, ".git")):
            dirty[agent] = set()  # no work tree (yet): nothing uncommitted
            continue
        known = kept.get(tree)
        if known is None:
            return None
        dirty[agent] = known
    return dirty


# -- asking git for what changed -------------------------------------------------------------


def claims(
    ws: Workspace,
    paths: Sequence[str],
    exclude: int | None = None,
    before: FilesRead | None = None,
) -> list[Claim]:
    """Which other agents change any of ``paths``; a directory covers its files.

    The asking agent (``exclude``, else found by ``asking_agent``) is left out.
    ``before``: the plan and state files before ``ws`` read them; given, the
    context is kept for ``kept_claims``.
    """
    from paradev import git as gitmod
    from paradev.dirtycache import KeptDirt

    exclude = asking_agent(
        exclude,
        ws.plan.agent_count,
        str(ws.repo.toplevel),
        str(ws.plan.worktree_root(ws.repo.main_root)),
    )
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
    if before is not None:
        keep_context(ws, before)
    return claims_of(paths, agents, committed, dirty)


def _committed(ws: Workspace) -> dict[int, set[str]]:
    """The paths each agent's branch changed since it left base (agents with commits only).

    They depend on base's and the branch's commits alone, so they are kept by
    those ids (``paradev.commitcache``): only a branch that moved (or every
    branch, when base moved) is read from git again.
    """
    from paradev.branches import load_branches
    from paradev.commitcache import CommitCache

    heads = find_heads_kept(ws)
    cache = CommitCache(str(ws.store.dir / BRANCH_PATHS_FILE), enabled=heads.plain)
    keys = {agent: f"{heads.base_commit}...{head}" for agent, (_, head, _) in heads.heads.items()}

    def read(missing: list[int]) -> dict[int, list[str]]:
        branches, _ = load_branches(ws.git, heads.only({a: heads.heads[a] for a in missing}))
        return {b.agent: sorted(b.changes.paths) if b.has_work else [] for b in branches}

    changed: dict[int, list[str]] = cache.lookup(keys, _paths_list, read)
    return {agent: set(paths) for agent, paths in changed.items() if paths}


def _paths_list(kept: Any) -> bool:
    return isinstance(kept, list) and all(isinstance(path, str) for path in kept)


def _tree(ws: Workspace, agent: int) -> str | None:
    """The agent's work tree folder; None when it is refused (``_dirty`` says why)."""
    try:
        return str(ws.worktree(agent))
    except ParadevError:
        return None


def _dirty(ws: Workspace, agent: int, within: Sequence[str]) -> set[str] | ParadevError:
    """Uncommitted paths below ``within`` in the agent's work tree (none without one).

    An error is returned, not raised: the branches' own error (no base, say)
    comes first, as when they were asked first.
    """
    from paradev import git as gitmod

    try:
        tree = ws.worktree(agent)
        return set(gitmod.dirty_paths(tree, within=within)) if (tree / ".git").exists() else set()
    except ParadevError as err:
        return err


# -- the branch heads, kept by the ref files -------------------------------------------------


def _head_refs(base: str, branches: Sequence[str]) -> list[str]:
    return [f"refs/heads/{base}", *(f"refs/heads/{branch}" for branch in branches)]


def _kept_heads(common_dir: str, key: str) -> tuple[Any, ...] | None:
    """(key, base, base ref, base commit, {agent: (branch, commit, False)}, plain history),
    kept under exactly ``key`` (``gitdir.refs_key``); None otherwise."""
    kept = load(os.path.join(common_dir, STORE_DIR, HEADS_FILE))
    if not isinstance(kept, tuple) or len(kept) != 6 or kept[0] != key:
        return None
    _, base, base_ref, base_commit, heads, _ = kept
    if not all(isinstance(v, str) for v in (base, base_ref, base_commit)):
        return None
    if not isinstance(heads, dict) or not all(
        isinstance(agent, int) and isinstance(head, tuple) and len(head) == 3
        for agent, head in heads.items()
    ):
        return None
    return kept


def find_heads_kept(ws: Workspace) -> Heads:
    """``find_heads``, without git while no file git keeps these refs in was written since.

    ``check`` runs before every edit; its ``for-each-ref`` answers the same as
    long as the ref files (loose, packed, replace refs, grafts, shallow) are
    the ones it read: their identity is the key, taken before git is asked,
    with the racy rule of ``paradev.kept``. Hosts (remote refs, a git call to
    name this host) are always asked.
    """
    from paradev.branches import Heads, find_heads
    from paradev.gitdir import refs_key

    if ws.plan.hosts:
        return find_heads(ws)
    common = str(ws.repo.common_dir)
    refs = _head_refs(ws.plan.base, [ws.branch(a) for a in range(1, ws.plan.agent_count + 1)])
    key = refs_key(common, refs, time.time_ns())  # before git is asked: a move changes it
    kept = _kept_heads(common, key) if key else None
    if kept is not None:
        _, base, base_ref, base_commit, heads_kept, plain = kept
        return Heads(base, base_ref, base_commit, heads_kept, plain is True)
    heads = find_heads(ws)
    if key:
        value = (key, heads.base, heads.base_ref, heads.base_commit, heads.heads, heads.plain)
        save(os.path.join(common, STORE_DIR, HEADS_FILE), value)
    return heads
