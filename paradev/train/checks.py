"""Checks made before a train changes anything (exit 2 when one fails), and the merge order.

``preflight`` is what ``paradev merge`` and its dry run both check; the
tree checks here are reused by later steps that must refuse alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.order import Selection, select_agents
from paradev.train.gate import _gate_command
from paradev.train.journal import (
    _lock_agents,
    _rev,
    ref_tips,
)
from paradev.workspace import Workspace

if TYPE_CHECKING:
    from paradev.conflicts import Report


def merge_order(ws: Workspace, agents: Sequence[int], save: bool = True) -> list[int]:
    """The order of ``paradev merge-order`` restricted to ``agents`` (kept in state if ``save``)."""
    return ordered(ws, agents, save)[0]


def ordered(
    ws: Workspace, agents: Sequence[int], save: bool = True
) -> tuple[list[int], Report | None]:
    """``merge_order``, and the conflict analysis it came from (for the train's snapshot)."""
    from paradev.order import compute_merge_order

    found = compute_merge_order(ws, list(agents), save)
    chosen = list(found.order)
    return [a for a in chosen if a in agents] + [a for a in agents if a not in chosen], (
        found.analysis
    )


def _refuse_uncommitted(
    path: Path,
    what: str,
    then: str,
    allowed: Sequence[str] = (),
    changes: Sequence[str] | None = None,
) -> None:
    """Exit 2 when ``path`` has uncommitted changes to tracked files (untracked do not count).

    ``allowed`` paths do not count (git itself still refuses a fast-forward
    that would overwrite them); ``changes``: the tracked changes, when the caller has them.
    """
    found = gitmod.dirty_paths(path, untracked=False) if changes is None else changes
    changes = [p for p in found if p not in allowed]
    if changes:
        raise PreconditionError(
            f"{what} has uncommitted changes ({', '.join(changes[:5])}); "
            f"commit or stash them, then {then}"
        )


def _check_base_tree(
    ws: Workspace,
    base: str,
    holder: Path | None = None,
    then: str = "run paradev merge again",
    changes: Sequence[str] | None = None,
) -> None:
    """Refuse when base is checked out with a merge under way or changes to tracked files.

    The plan file is paradev's own (``assign`` edits it), so its uncommitted
    edits do not block the train. ``changes``: its tracked changes, when known.
    """
    holder = holder or gitmod.branch_holder(ws.repo, base)
    if holder is None:
        return
    _refuse_unfinished(holder, base, then)
    plan = ws.plan.path.resolve()
    own = (
        [plan.relative_to(holder.resolve()).as_posix()] if holder.resolve() in plan.parents else []
    )
    _refuse_uncommitted(
        holder, f"{base}, checked out in {holder},", then, allowed=own, changes=changes
    )


def _refuse_unfinished(holder: Path, base: str, then: str) -> None:
    """Exit 2 when a merge, rebase or cherry-pick is under way where base is checked out."""
    operation = gitmod.unfinished_operation(holder)
    if operation is not None:
        raise PreconditionError(
            f"a {operation} is in progress in {holder}, where {base} is checked out; "
            f"finish it (git -C {holder} {operation} --continue) "
            f"or abort it yourself (git -C {holder} {operation} --abort), "
            f"then {then}"
        )


def _check_agent_branch(ws: Workspace, agent: int, branch: str, path: Path | None = None) -> Path:
    """The agent's work tree, which must have ``branch`` checked out and no rebase under way.

    ``git rebase`` rewrites whatever is checked out: a work tree switched to
    another branch must never be rebased in its place.
    """
    path = path or ws.agent_git(agent).cwd
    if gitmod.rebase_in_progress(path) is not None:
        raise PreconditionError(
            f"a rebase is in progress in {path} that this train did not start; "
            f"finish it (git -C {path} rebase --continue) "
            f"or abort it (git -C {path} rebase --abort)"
        )
    if gitmod.current_branch(path) != branch:
        raise PreconditionError(f"{path} does not have {branch} checked out; check it out first")
    return path


def _check_agent_trees(ws: Workspace, agents: Sequence[int], gating: bool) -> None:
    """Each agent's work tree has its branch checked out and no uncommitted changes.

    When a gate will run there, untracked files count too (see ``refuse_extra_files``).
    One ``git status`` per tree, the trees side by side.
    """
    paths = [_check_agent_branch(ws, agent, ws.branch(agent)) for agent in agents]
    found = gitmod.side_by_side(lambda path: gitmod.changes(path, untracked=gating), paths)
    for agent, path, (tracked, untracked) in zip(agents, paths, found, strict=True):
        _refuse_uncommitted(
            path, f"agent {agent}'s worktree {path}", "run paradev merge again", changes=tracked
        )
        if gating:
            refuse_extra_files(path, agent, "run paradev merge again", dirty=tracked + untracked)


def _check_agent_tree(ws: Workspace, agent: int, gating: bool) -> None:
    _check_agent_trees(ws, [agent], gating)


def refuse_extra_files(
    path: Path, agent: int, then: str, dirty: Sequence[str] | None = None
) -> None:
    """Exit 2 when the agent's tree holds files beyond its commit (ignored ones aside).

    The gate runs there: it would test them along with what lands.
    """
    dirty = gitmod.dirty_paths(path) if dirty is None else dirty
    if dirty:
        raise PreconditionError(
            f"the gate cannot run in agent {agent}'s worktree {path}: it holds more than the "
            f"commit to land ({', '.join(dirty[:5])}); commit, stash or remove them, then {then}"
        )


def _remote_base(ws: Workspace, peek: bool = False) -> str | None:
    """Fetch; the remote's base when local base must fast-forward to it first, else None.

    Refuses (exit 2) when they diverged. Nothing local moves here: the caller
    fast-forwards only once every other check passed. ``peek`` (the dry run):
    ask the remote without writing any ref.
    """
    remote, base = ws.plan.remote, ws.plan.base
    ours_ref, theirs_ref = f"refs/heads/{base}", f"refs/remotes/{remote}/{base}"
    if peek:
        theirs = gitmod.peek_remote_branch(ws.git, remote, base)
        ours = _rev(ws.git, ours_ref)
    else:
        gitmod.fetch(ws.git, remote)
        found = ref_tips(ws, [ours_ref, theirs_ref])  # no git process as a rule
        theirs, ours = found.get(theirs_ref), found.get(ours_ref) or _rev(ws.git, ours_ref)
    if theirs is None or theirs == ours or gitmod.is_ancestor(ws.git, theirs, ours):
        return None
    if not gitmod.is_ancestor(ws.git, ours, theirs):
        raise PreconditionError(
            f"{base} and {remote}/{base} have diverged; reconcile them "
            f"(e.g. git pull --rebase {remote} {base}) and run paradev merge again"
        )
    return theirs


def _resolve_push(ws: Workspace, push: bool | None) -> bool:
    if push is False and ws.plan.hosts:
        raise PreconditionError(
            "with [agents] hosts every landing is pushed (the other hosts see landed work "
            "only on the remote): run paradev merge without --no-push"
        )
    wanted = ws.plan.push if push is None else push
    if wanted and not ws.plan.remote:
        raise PreconditionError(
            'pushing needs a remote: set project.remote in plan.toml (e.g. "origin")'
        )
    return wanted


@dataclass(frozen=True)
class Preflight:
    """What the checks before a train found: who lands, whether it pushes, the remote's base."""

    selection: Selection
    pushing: bool
    gating: bool  # a gate will run in the agents' trees
    remote_tip: str | None  # base must fast-forward to it first; None: base is current


def preflight(
    ws: Workspace, locks: ExitStack, *, push: bool | None, gate: bool, peek: bool = False
) -> Preflight:
    """Every check ``paradev merge`` makes before its first change (exit 2 when one fails).

    The dry run calls it too (``peek``: the remote asked without writing
    refs, no lock holder noted), so both refuse alike.
    """
    if ws.store.view(recognise=False).train is not None:
        raise PreconditionError(
            "a merge train is already in progress; run paradev merge --continue, --skip or --abort"
        )
    pushing = _resolve_push(ws, push)
    remote_tip = _remote_base(ws, peek) if ws.plan.remote else None
    _check_base_tree(ws, ws.plan.base)
    selection = select_agents(ws, remote_tip)
    _lock_agents(ws, selection.agents, locks, note=not peek)
    gating = gate and bool(_gate_command(ws))
    _check_agent_trees(ws, selection.agents, gating)
    return Preflight(selection, pushing, gating, remote_tip)
