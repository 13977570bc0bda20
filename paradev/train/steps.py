"""The merge train: land each agent's branch on base, one at a time, never leaving base broken.

For every agent in merge order: keep its old head under a backup ref, rebase
the branch onto base in the agent's own work tree, run the gate there (base +
this work: the combined result), fast-forward base as a compare-and-swap,
push when asked, mark the tasks merged and run the ``on_merge`` hook.

Every step notes in the journal (``state.train``, its own file) when it starts and ends, and
first checks what git already shows, so after a crash or a stop
``merge --continue`` ends in the same refs as a run that never stopped. The
journal is written (locked, fsynced) only where git could not tell afterwards
what happened: before a rebase (to recognise it as ours), before a squash
moves the branch, when tasks are marked merged, after hooks ran, and at stops.
Everything else rides along with the next write.

Reading order: preconditions, what ``skip`` and ``abort`` undo, the serial
loop (``run``, ``land``), then each step in order. The journal is
``paradev.train.journal``, the entry points ``paradev.train.drive``.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from paradev import git as gitmod
from paradev import processes
from paradev.errors import GitError, PreconditionError, Stopped
from paradev.git import Git
from paradev.order import Selection, _missing_dependency, completed_head, select_agents
from paradev.prepare import as_agent, prepare_worktree
from paradev.snapshots import record_train, train_facts
from paradev.state import COMPLETED, MERGED, TaskRecord, now
from paradev.train import gate as gates
from paradev.train import landing
from paradev.train.gate import GateResult, _gate_command, _say_gate, _tail, gate_env, gate_log
from paradev.train.journal import (
    ADVANCE,
    BACKUP,
    BACKUP_PREFIX,
    GATE,
    HOOKS,
    MARK,
    PUSH,
    REBASE,
    SQUASH,
    Output,
    Train,
    _lock_agents,
    _rev,
    backup_ref,
    driver_record,
    remove_stale_locks,
)
from paradev.train.messages import squash_message
from paradev.workspace import Workspace

# Steps of one landing, in order; the journal notes when each starts and ends.
CHECK, TRAILERS, WIP = "check", "trailers", "wip"


# -- the journal ---------------------------------------------------------------------


# -- choosing what lands -----------------------------------------------------------------


def merge_order(ws: Workspace, agents: Sequence[int], save: bool = True) -> list[int]:
    """The order of ``paradev merge-order`` restricted to ``agents`` (kept in state if ``save``)."""
    from paradev.order import compute_merge_order

    chosen = list(compute_merge_order(ws, list(agents), save).order)
    return [a for a in chosen if a in agents] + [a for a in agents if a not in chosen]


# -- preconditions (checked before anything changes) ---------------------------------------


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


def _check_agent_branch(ws: Workspace, agent: int, branch: str) -> Path:
    """The agent's work tree, which must have ``branch`` checked out and no rebase under way.

    ``git rebase`` rewrites whatever is checked out: a work tree switched to
    another branch must never be rebased in its place.
    """
    path = ws.agent_git(agent).cwd
    if gitmod.rebase_in_progress(path) is not None:
        raise PreconditionError(
            f"a rebase is in progress in {path} that this train did not start; "
            f"finish it (git -C {path} rebase --continue) "
            f"or abort it (git -C {path} rebase --abort)"
        )
    if gitmod.current_branch(path) != branch:
        raise PreconditionError(f"{path} does not have {branch} checked out; check it out first")
    return path


def _check_agent_tree(ws: Workspace, agent: int, gating: bool) -> None:
    """The agent's work tree has its branch checked out and no uncommitted changes.

    When a gate will run there, untracked files count too (see ``refuse_extra_files``).
    """
    path = _check_agent_branch(ws, agent, ws.branch(agent))
    tracked, untracked = gitmod.changes(path, untracked=gating)  # one git status for both
    _refuse_uncommitted(
        path, f"agent {agent}'s worktree {path}", "run paradev merge again", changes=tracked
    )
    if gating:
        refuse_extra_files(path, agent, "run paradev merge again", dirty=tracked + untracked)


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
    if peek:
        theirs = gitmod.peek_remote_branch(ws.git, remote, base)
    else:
        gitmod.fetch(ws.git, remote)
        theirs = ws.git.rev(f"refs/remotes/{remote}/{base}")
    ours = _rev(ws.git, f"refs/heads/{base}")
    if theirs is None or gitmod.is_ancestor(ws.git, theirs, ours):
        return None
    if not gitmod.is_ancestor(ws.git, ours, theirs):
        raise PreconditionError(
            f"{base} and {remote}/{base} have diverged; reconcile them "
            f"(e.g. git pull --rebase {remote} {base}) and run paradev merge again"
        )
    return theirs


def _resolve_push(ws: Workspace, push: bool | None) -> bool:
    wanted = ws.plan.push if push is None else push
    if wanted and not ws.plan.remote:
        raise PreconditionError(
            'pushing needs a remote: set project.remote in plan.toml (e.g. "origin")'
        )
    return wanted


# -- entry points ---------------------------------------------------------------------------


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
    if ws.store.read().train is not None:
        raise PreconditionError(
            "a merge train is already in progress; run paradev merge --continue, --skip or --abort"
        )
    pushing = _resolve_push(ws, push)
    remote_tip = _remote_base(ws, peek) if ws.plan.remote else None
    _check_base_tree(ws, ws.plan.base)
    selection = select_agents(ws, remote_tip)
    _lock_agents(ws, selection.agents, locks, note=not peek)
    gating = gate and bool(_gate_command(ws))
    for agent in selection.agents:
        _check_agent_tree(ws, agent, gating)
    return Preflight(selection, pushing, gating, remote_tip)


# -- taking over after a crash -----------------------------------------------------------------


def take_over(train: Train) -> None:
    """Clean up after a dead driver, then journal this process as the driver."""
    for agent in train.queue[:1]:
        wait_for_resolver(train, agent)
    remove_stale_locks(train, train.queue[:1])
    train.journal["driver"] = driver_record()


def _has_landed(train: Train, agent: int) -> bool:
    """Whether base already holds the agent's branch (journaled, or moved just before a crash)."""
    if train.is_done(agent, ADVANCE):
        return True
    base, head = train.tips(agent)
    return gitmod.is_ancestor(train.ws.git, head, base)


def _finish_landed(train: Train, agent: int) -> None:
    """The bookkeeping of an agent already on base; a refused push only warns (abort must end)."""
    step_advance(train, agent)
    after_landing(train, agent, push_may_stop=False)
    train.queue.pop(0)


def _landed_text(train: Train) -> str:
    landed = train.journal["landed"]
    return ", ".join(f"agent {e['agent']}{_issues_text(e)}" for e in landed) or "nothing"


def _issues_text(entry: dict[str, Any]) -> str:
    issues = entry.get("issues") or []
    return f" ({', '.join(f'#{i}' for i in issues)})" if issues else ""


def _note_skip(train: Train, agent: int, why: str) -> None:
    """Leave ``agent`` out of this train, with the reason the summary and the next train give."""
    train.journal["skipped"].append(agent)
    train.journal.setdefault("skip_reasons", {})[str(agent)] = why


def summary(train: Train, status: str) -> str:
    """The train's last words: what landed, what was skipped and why, what did not land and why."""
    lines = [f"merge train {train.id} {status}; landed: {_landed_text(train)}"]
    reasons = train.journal.get("skip_reasons", {})
    for agent in train.journal["skipped"]:
        why = reasons.get(str(agent), "skipped")
        lines.append(
            f"  skipped: agent {agent}: {why}; its branch keeps its commits, "
            "and the next paradev merge tries it again"
        )
    lines += [f"  not landed: agent {a}: the train was {status} before it" for a in train.queue]
    lines += [f"  not landed: {note}" for note in train.journal.get("left_out", [])]
    return "\n".join(lines)


def _say_skipped_last_time(ws: Workspace, order: Sequence[int], out: Output) -> None:
    """Name the agents the last train skipped that this one tries again (never silently)."""
    history = ws.store.read().merge_history
    last = history[-1] if history else {}
    reasons = last.get("skip_reasons") or {}
    for agent in (a for a in last.get("skipped", []) if a in order):
        why = reasons.get(str(agent), "skipped")
        out(f"agent {agent}: skipped by the last train ({why}); trying it again")


def _abort_our_rebase(train: Train, agent: int) -> None:
    path = train.worktree(agent)
    rebase = gitmod.rebase_in_progress(path)
    if rebase is None:
        return
    if not _is_ours(train, agent, rebase):
        raise PreconditionError(
            f"the rebase in progress in {path} was not started by this train; "
            f"paradev leaves it alone (git -C {path} rebase --abort if you want it gone)"
        )
    drop_rebase(train, agent, path)
    train.out(f"agent {agent}: aborted the rebase paradev started in {path}")


def _restore_branch(train: Train, agent: int) -> None:
    """Put the branch back at its backed-up head (a no-op when it never moved).

    The head it leaves is kept under ``<backup>-aborted`` first: it may hold a
    fix committed after a gate failure, which exists nowhere else.
    """
    entry = train.agent(agent)
    old = entry.get("old_head")
    if not old:
        return
    base, current = train.tips(agent)
    if current == old:
        return
    if not gitmod.is_ancestor(train.ws.git, current, base):
        _keep_ref(train.ws.git, f"{entry['backup']}-aborted", current)
    path = train.worktree(agent)
    if gitmod.current_branch(path) == train.branch(agent):
        gitmod.reset_keep(path, old)
    else:
        gitmod.update_ref(train.ws.git, f"refs/heads/{train.branch(agent)}", old, current)
    train.out(f"agent {agent}: {train.branch(agent)} restored to {old[:12]} from {entry['backup']}")


def _keep_ref(git: Git, ref: str, commit: str) -> None:
    """Create ``ref`` at ``commit``; fine when it is there already (a resumed step)."""
    try:
        gitmod.update_ref(git, ref, commit, "")
    except GitError:
        if git.rev(ref) != commit:
            raise PreconditionError(f"{ref} exists and points elsewhere; remove it") from None


# -- the loop ---------------------------------------------------------------------------------


def run(train: Train, follow: Follow | None = None) -> None:
    """Land every agent left in the queue one at a time, then close the train.

    ``follow`` (``merge --follow``, see ``paradev.train.join``) lets each
    landed agent go at once and may refill an empty queue.
    """
    _say_gate(train)
    while train.queue or (follow is not None and follow.join(train)):
        agent = train.queue[0]
        if _skip_for_skipped_dependency(train, agent):
            continue
        land(train, agent)
        train.queue.pop(0)  # written with the next step; a resumed train finds it all done
        if follow is not None:
            train.save()  # the journal no longer names it before anyone else may take it
            follow.landed(agent)
    _end(train, "done")
    train.out(summary(train, "done"))


class Follow(Protocol):
    """What ``merge --follow`` adds to the serial train (``paradev.train.join.Joiner``)."""

    def join(self, train: Train) -> bool: ...

    def landed(self, agent: int) -> None: ...


def _skip_for_skipped_dependency(train: Train, agent: int) -> bool:
    """Leave ``agent`` out when work it depends on was skipped in this train."""
    if not train.journal["skipped"] or train.agent(agent).get("old_head"):
        return False  # nothing skipped: selection checked every dependency; under way: --skip
    state = train.ws.store.read()
    landing = set(train.queue) | {e["agent"] for e in train.journal["landed"]}
    missing = _missing_dependency(train.ws, state, agent, landing)
    if missing is None:
        return False
    train.queue.pop(0)
    why = f"#{missing[0]} depends on #{missing[1]}, which was skipped"
    _note_skip(train, agent, why)
    train.save()
    train.out(f"agent {agent}: skipped: {why}")
    return True


def land(train: Train, agent: int) -> None:
    """Every step of landing one agent; each step skips what git shows is already done."""
    step_backup(train, agent)
    step_rebase(train, agent)
    if train.journal.get("squash", train.ws.plan.squash):
        step_squash(train, agent)
    else:
        step_trailers(train, agent)
    step_check(train, agent)
    step_gate(train, agent)
    step_advance(train, agent)
    after_landing(train, agent)


def after_landing(train: Train, agent: int, *, push_may_stop: bool = True) -> None:
    """Work in progress back on the branch, push, mark merged, hooks: what follows base moving."""
    step_wip(train, agent)
    try:
        step_push(train, agent)
    except Stopped as stop:
        if push_may_stop:
            raise
        train.out(f"paradev: warning: {stop}")
    step_mark(train, agent)
    step_hooks(train, agent)


def _end(train: Train, status: str) -> None:
    record_train(train.ws, train.journal)
    with train.ws.store.update() as state:
        state.train = None
        if any(h.get("id") == train.id for h in state.merge_history):
            return  # killed after the history was written, before the journal was removed
        state.merge_history.append(
            {
                "id": train.id,
                "status": status,
                "base": train.base,
                "started_at": train.journal.get("started_at"),
                "finished_at": now(),
                "order": train.journal.get("order", []),
                "landed": train.journal["landed"],
                "skipped": train.journal["skipped"],
                "skip_reasons": train.journal.get("skip_reasons", {}),
                **train_facts(train.journal),
            }
        )


# -- steps ------------------------------------------------------------------------------------


def step_backup(train: Train, agent: int) -> None:
    """Keep the branch's head under refs/paradev/backup/<branch>/<train id> before rewriting it."""
    if train.is_done(agent, BACKUP):
        return
    entry = train.agent(agent)
    if "old_head" not in entry:
        journal_backup(train, agent)
    _keep_ref(train.ws.git, entry["backup"], entry["old_head"])
    if entry.get("wip") and train.head(agent) == entry["wip"]:
        _set_wip_aside(train, agent)
    train.finish(agent, BACKUP)


def journal_backup(train: Train, agent: int) -> None:
    """Note the branch, its head, what lands (the completed commit) and what does not (wip).

    Written with the next step: until then nothing has changed.
    """
    branch = train.branch(agent)
    head, tracking = _head_and_tracking(train, agent)
    completed = completed_head(train.ws, train.task_view(agent), agent)
    candidate = completed[1] if completed else head
    train.begin(
        agent,
        BACKUP,
        branch=branch,
        old_head=head,
        backup=backup_ref(branch, train.id),
        remote_head=_lease(train, agent, candidate, tracking),
        candidate=candidate,
        wip=head if candidate != head else None,
    )


def _set_wip_aside(train: Train, agent: int) -> None:
    """Cut the branch back to the completed commit: later commits (work in progress) never land.

    They are kept by the backup ref and put back on the branch once it landed.
    """
    entry = train.agent(agent)
    path = _check_agent_branch(train.ws, agent, train.branch(agent))
    train.save()  # the journal knows the cut before the branch moves
    gitmod.reset_keep(path, entry["candidate"])
    count = len(gitmod.commits_between(train.ws.git, entry["candidate"], entry["wip"]))
    train.out(
        f"agent {agent}: landing the completed commit {entry['candidate'][:12]}; "
        f"{count} later commit(s) stay on {train.branch(agent)}, unlanded"
    )


def step_wip(train: Train, agent: int) -> None:
    """Put the commits made after the completed one back on the branch, on top of what landed.

    When they do not rebase cleanly, the branch keeps them as they were.
    """
    entry = train.agent(agent)
    if not entry.get("wip") or train.is_done(agent, WIP):
        return
    path, wip, landed = train.worktree(agent), entry["wip"], entry["landed"]
    train.begin(agent, WIP, flush=True)
    if gitmod.rebase_in_progress(path) is not None:  # ours: a crash during this step
        _abort_or_quit(path)
    gitmod.checkout_force(path, train.branch(agent), wip)
    if gitmod.rebase_onto(path, landed, entry["candidate"]):
        where = f"rebased onto {landed[:12]}"
    else:
        _abort_or_quit(path)
        gitmod.checkout_force(path, train.branch(agent), wip)
        where = "kept as they were (they conflict with what landed; rebase them yourself)"
    train.finish(agent, WIP)
    train.out(
        f"agent {agent}: the commits after the landed one stay on {train.branch(agent)}, {where}"
    )


def _abort_or_quit(path: Path) -> None:
    try:
        gitmod.rebase_abort(path)
    except GitError:
        gitmod.rebase_quit(path)


def _head_and_tracking(train: Train, agent: int) -> tuple[str, str | None]:
    """The branch's commit and its remote-tracking copy's (None: none), one git process."""
    ref, remote = f"refs/heads/{train.branch(agent)}", train.ws.plan.remote
    tracking = f"refs/remotes/{remote}/{train.branch(agent)}" if remote else None
    found = gitmod.resolve_refs(train.ws.git, [ref, *([tracking] if tracking else [])])
    if ref not in found:
        raise PreconditionError(f"{ref} does not exist")
    return found[ref], found.get(tracking or "")


def _lease(train: Train, agent: int, head: str, tracking: str | None) -> str | None:
    """What the remote's copy of the branch may be overwritten from, None: do not push it.

    Only a remote copy our branch already contains may be replaced: commits
    someone else pushed there (after our fetch) are never overwritten.
    ``tracking``: that copy as fetched (its remote-tracking ref).
    """
    remote, branch = train.ws.plan.remote, train.branch(agent)
    if tracking is None:
        return None
    if not gitmod.is_ancestor(train.ws.git, tracking, head):
        train.out(f"agent {agent}: {remote}/{branch} has commits {branch} lacks; not pushing it")
        return None
    return tracking


def _is_ours(train: Train, agent: int, rebase: gitmod.RebaseInProgress) -> bool:
    """Whether the rebase in progress is the one this train journaled before starting it.

    The journal holds the branch, the commit it started from and the onto
    commit; git's own rebase state files must name the same three. A file a
    killed git never wrote (empty here) contradicts nothing: that half-written
    rebase is ours too, and is quit and redone.
    """
    entry = train.agent(agent)
    expected = (f"refs/heads/{train.branch(agent)}", entry.get("onto"), entry.get("rebase_from"))
    found = (rebase.head_name, rebase.onto, rebase.orig_head)
    return entry.get("step") == REBASE and all(
        f in ("", e) for f, e in zip(found, expected, strict=True)
    )


def step_rebase(train: Train, agent: int) -> None:
    """Rebase the branch onto base in its own work tree; stop on a conflict.

    A rebase left in progress is continued only when it is the conflict stop
    this train reported (journaled where it stopped); any other one of ours
    was interrupted, so git's idea of what is done cannot be trusted: it is
    thrown away and the rebase starts again from the journaled commit.
    """
    path = train.ws.agent_git(agent).cwd
    rebase = gitmod.rebase_in_progress(path)
    if rebase is not None:
        if not _is_ours(train, agent, rebase):
            raise PreconditionError(
                f"a rebase is in progress in {path} that this train did not start; "
                f"finish or abort it yourself, then run paradev merge --continue"
            )
        if not _continue_reported_stop(train, agent, path):
            _clear_rebase(train, agent, path)
            rebase = None
    if rebase is None:
        base, head = train.tips(agent)
        if gitmod.is_ancestor(train.ws.git, base, head):
            train.finish(agent, REBASE)
            return
        _check_agent_branch(train.ws, agent, train.branch(agent))
        train.begin(
            agent, REBASE, flush=True, onto=base, rebase_from=head, conflict_at=None, resolved=[]
        )
        _start_rebase(train, agent, path, base)
    train.finish(agent, REBASE)
    train.out(f"agent {agent}: rebased {train.branch(agent)} onto {train.base}")


def drop_rebase(train: Train, agent: int, path: Path) -> str:
    """Abort our rebase (``--quit`` when git cannot abort it); the branch back at its start.

    Returns the start commit (journaled before the rebase began).
    """
    entry = train.agent(agent)
    start = str(entry.get("rebase_from") or entry["old_head"])
    remove_stale_locks(train, [agent])
    _abort_or_quit(path)
    gitmod.checkout_force(path, train.branch(agent), start)
    if entry.get("onto"):
        _remove_checkout_leftovers(train, path, str(entry["onto"]))
    return start


def _remove_checkout_leftovers(train: Train, path: Path, onto: str) -> None:
    """Delete untracked files a killed checkout of ``onto`` wrote (all or part of its content).

    The rebase would refuse to overwrite them; they hold nothing uncommitted.
    """
    untracked = gitmod.untracked_paths(path)
    written = gitmod.paths_as_in(path, onto, untracked, cut_short=True)
    for name in written:
        (path / name).unlink(missing_ok=True)
    if written:
        train.out(
            f"paradev: removed {len(written)} file(s) a killed checkout of {onto[:12]} left in "
            f"{path} ({', '.join(written[:5])})"
        )


def _continue_reported_stop(train: Train, agent: int, path: Path) -> bool:
    """Go on with the rebase when it is where this train reported a conflict; False otherwise.

    A conflict nobody reported yet (git stopped again after someone ran
    ``git rebase --continue``) is reported now rather than thrown away.
    """
    entry = train.agent(agent)
    position = gitmod.rebase_position(path)
    reported = position is not None and entry.get("conflict_at") == position
    if not reported and not gitmod.unmerged_paths(path):
        return False
    if not reported or gitmod.unmerged_paths(path) or not gitmod.rebase_continue(path):
        _on_conflict(train, agent)
    return True


def _clear_rebase(train: Train, agent: int, path: Path) -> None:
    """Throw away an interrupted rebase of ours and put the branch back where it started.

    ``git rebase --abort`` first; when git cannot abort (a half-written rebase
    folder), ``--quit``. Either way the branch is checked out again at the
    journaled start commit (its backup ref holds it too).
    """
    entry = train.agent(agent)
    start = drop_rebase(train, agent, path)
    train.out(
        f"agent {agent}: the rebase in {path} was interrupted, not stopped on a conflict; "
        f"starting it again from {start[:12]} (backup {entry.get('backup')})"
    )


def _start_rebase(train: Train, agent: int, path: Path, onto: str) -> None:
    """``git rebase onto`` there; git itself refuses a dirty tree, said here in plain words."""
    try:
        stopped = not gitmod.rebase(path, onto)
    except GitError:
        _refuse_uncommitted(
            path, f"agent {agent}'s worktree {path}", "run paradev merge --continue"
        )
        raise
    if stopped:
        _on_conflict(train, agent)


def _on_conflict(train: Train, agent: int) -> None:
    """Hand the conflict back to the agent (on_conflict = "agent") or stop the train.

    The conflicted paths are journaled (their resolution may differ from the
    agent's change: the patch check allows that), and so is where the rebase
    stopped: only that stop may later be continued.
    """
    path = train.worktree(agent)
    conflicted = gitmod.unmerged_paths(path)
    if not conflicted:
        _stop_without_conflict(train, agent, path)
    _note_resolved(train, agent, conflicted)
    facts = conflict_facts(train, agent)
    report = "\n".join([*facts, *_conflict_steps(train, agent)])
    if train.ws.plan.on_conflict == "agent":
        train.agent(agent)["conflict_at"] = gitmod.rebase_position(path)
        train.out(f"agent {agent}: rebase conflict; handing it back to the agent")
        hand_back(train, agent, "\n".join(facts))  # what to do: the agent's own prompt says
        resolved = gitmod.rebase_in_progress(path) is None and gitmod.is_ancestor(
            train.ws.git, train.base_tip(), train.head(agent)
        )
        if resolved:
            return
    train.out(report)
    _note_resolved(train, agent, gitmod.unmerged_paths(path))
    train.agent(agent)["conflict_at"] = gitmod.rebase_position(path)
    raise train.stop(
        agent,
        "conflict",
        f"merge train stopped: agent {agent}'s rebase onto {train.base} conflicts "
        f"(rebase left in progress in {path})",
    )


def hand_back(train: Train, agent: int, report: str) -> None:
    """Let the agent resolve (``on_conflict = "agent"``), the journal written first.

    The agent runs in its own process group: when this train is killed it goes
    on, finishes the rebase, and the next run must find the resolution recorded
    (the conflicted paths) and the agent journaled, to wait for it.
    """
    if train.hand_back_to is None:
        raise PreconditionError("this train has no agent launcher to hand the conflict back to")

    def journal_resolver(proc: subprocess.Popen[bytes]) -> None:
        start = processes.start_time(proc.pid)
        train.agent(agent)["resolver"] = {"pid": proc.pid, "start": start}
        train.save()

    train.save()
    train.hand_back_to(train.ws, agent, report, notify=train.out, on_launch=journal_resolver)
    train.agent(agent)["resolver"] = None  # ended: written with the next write


def wait_for_resolver(train: Train, agent: int) -> None:
    """Wait for an agent a killed driver handed a conflict back to: its work is the resolution.

    Until it ends, its git may hold locks and its rebase moves.
    """
    entry = train.journal["agents"].get(str(agent)) or {}
    resolver = entry.get("resolver")
    if not resolver:
        return
    pid, start = int(resolver["pid"]), resolver.get("start")
    deadline = time.monotonic() + train.ws.plan.agent_timeout
    if processes.alive(pid, start):
        train.out(f"agent {agent} is still resolving the conflict handed back to it; waiting")
    while processes.alive(pid, start):
        if time.monotonic() > deadline:
            raise PreconditionError(
                f"agent {agent} (pid {pid}) is still resolving the conflict handed back to it; "
                "wait for it or stop it, then run paradev merge --continue"
            )
        time.sleep(0.1)
    entry["resolver"] = None


def _note_resolved(train: Train, agent: int, paths: Sequence[str]) -> None:
    resolved: list[str] = train.agent(agent).setdefault("resolved", [])
    resolved += [p for p in paths if p not in resolved]


def _stop_without_conflict(train: Train, agent: int, path: Path) -> None:
    """git stopped the rebase with nothing conflicted (e.g. a lock file): never call it a conflict.

    Not journaled as a conflict stop, so ``--continue`` redoes the rebase.
    """
    raise train.stop(
        agent,
        "rebase",
        f"merge train stopped: git stopped rebasing agent {agent}'s branch in {path} "
        "without any conflicted file (an interrupted or blocked rebase); "
        "run paradev merge --continue to start it again",
    )


def conflict_facts(train: Train, agent: int) -> list[str]:
    """What conflicts: paths, hunks and their first lines (all an agent resolving it is given)."""
    path = train.worktree(agent)
    paths = gitmod.unmerged_paths(path)
    stopped_at = gitmod.rebase_stopped_at(path)
    lines = [
        f"agent {agent}: rebasing {train.branch(agent)} onto {train.base} stopped on a conflict",
    ]
    if stopped_at:
        lines.append(f"  while applying {stopped_at}")
    lines.append(f"  the rebase is left in progress in {path}")
    lines.append(
        f"  conflicted files (HEAD side: {train.base} as landed so far; other side: this agent):"
    )
    for name in paths:
        hunks = marker_hunks(path / name)
        where = ", ".join(f"lines {a}-{b}" for a, b in hunks) if hunks else "whole file"
        lines.append(f"    {name}: {where}")
        lines += _hunk_excerpts(path / name, hunks)
    return lines


def _conflict_steps(train: Train, agent: int) -> list[str]:
    path = train.worktree(agent)
    tree = shlex.quote(str(path))
    return next_steps(
        [
            f"edit the files above in {path} and resolve the conflicts, then",
            f"git -C {tree} add -- {shlex.join(gitmod.unmerged_paths(path))}",
            f"git -C {tree} rebase --continue   (or let paradev finish it)",
        ]
    )


def next_steps(fix: Sequence[str]) -> list[str]:
    """How a person goes on after a stop: fix then ``--continue``, or ``--skip``, or ``--abort``.

    Never given to an agent: its hand-back prompt says what it alone should do.
    """
    return [
        "  next steps:",
        *(f"    {line}" for line in fix),
        "    paradev merge --continue",
        "  or leave this agent out: paradev merge --skip",
        "  or end the train (its branch restored): paradev merge --abort",
    ]


def _hunk_excerpts(file: Path, hunks: list[tuple[int, int]], most: int = 12) -> list[str]:
    """The first lines of each conflict hunk, indented, so the report shows what clashes."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    shown: list[str] = []
    for start, end in hunks:
        chunk = text[start - 1 : min(end, start - 1 + most)]
        shown += [f"      | {line}" for line in chunk]
        if end - start + 1 > most:
            shown.append(f"      | ... ({end - start + 1 - most} more lines)")
    return shown


def marker_hunks(file: Path) -> list[tuple[int, int]]:
    """1-based line ranges of the conflict markers (<<<<<<< .. >>>>>>>) in a work tree file."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    hunks: list[tuple[int, int]] = []
    start: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("<<<<<<<") and start is None:
            start = number
        elif line.startswith(">>>>>>>") and start is not None:
            hunks.append((start, number))
            start = None
    return hunks


def step_squash(train: Train, agent: int) -> None:
    """Rewrite the rebased branch as one commit per task (conventional messages from the plan).

    The squashed commit is journaled before the branch moves to it, so a
    resumed train recognises either side of the move and never squashes twice.
    """
    squashed = _rewrite_branch(train, agent, SQUASH, ("squash_from", "squashed"), build_squash)
    if squashed is not None:
        train.out(f"agent {agent}: squashed into {squashed[:12]}")


def _rewrite_branch(
    train: Train,
    agent: int,
    step: str,
    keys: tuple[str, str],
    build: Callable[[Train, int, str, str], str],
) -> str | None:
    """Move the branch to ``build``'s rewrite of it; the new head, None when already done.

    The rewrite is journaled (under ``keys``: from, to) before the branch
    moves, so a resumed train recognises either side of the move and never
    rewrites twice.
    """
    base, head = train.tips(agent)
    entry = train.agent(agent)
    source, target = keys
    if entry.get(target) == head:
        train.hand_on(agent, base, head)
        return None
    if entry.get(source) != head:
        rewritten = build(train, agent, base, head)
        train.begin(agent, step, flush=rewritten != head, **{source: head, target: rewritten})
    rewritten = entry[target]
    if rewritten != head:  # compare-and-swap: the branch is at ``rewritten`` now
        gitmod.update_ref(train.ws.git, f"refs/heads/{train.branch(agent)}", rewritten, head)
    train.finish(agent, step)
    train.hand_on(agent, base, str(rewritten))
    return str(rewritten)


def _landing_tasks(train: Train, agent: int) -> list[tuple[Any, TaskRecord | None]]:
    state = train.task_view(agent)
    return [
        (task, state.tasks.get(task.issue))
        for task in train.ws.tasks_of(agent)
        if state.status(task.issue) == COMPLETED
    ]


def _rebased_tasks(
    train: Train, agent: int, base: str, head: str
) -> tuple[list[str], list[tuple[Any, TaskRecord | None]]] | None:
    """The rebased commits ``base..head`` and the landing tasks; None when either is empty."""
    rebased = gitmod.commits_between(train.ws.git, base, head)
    tasks = _landing_tasks(train, agent)
    return (rebased, tasks) if rebased and tasks else None


def build_squash(train: Train, agent: int, base: str, head: str) -> str:
    """One commit per task on top of ``base`` ending at ``head``'s tree.

    Task boundaries come from each task's recorded head commit, matched to the
    rebased commits by position; when they cannot be matched, the whole branch
    becomes one commit naming every task.
    """
    git = train.ws.git
    found = _rebased_tasks(train, agent, base, head)
    if found is None:
        return head
    rebased, tasks = found
    cuts = _task_cuts(train, agent, tasks, len(rebased))
    parent = base
    if cuts is None:
        message = "".join(squash_message(t.title, t.issue) for t, _ in tasks[:1])
        if len(tasks) > 1:
            message += "\n" + "".join(f"- {squash_message(t.title, t.issue)}" for t, _ in tasks[1:])
        message += landing.issue_trailers([t.issue for t, _ in tasks])
        return _squash_commit(git, rebased[-1], parent, message)
    for (task, _), cut in zip(tasks, cuts, strict=True):
        message = squash_message(task.title, task.issue) + landing.issue_trailers([task.issue])
        parent = _squash_commit(git, rebased[cut], parent, message)
    return parent


def step_trailers(train: Train, agent: int) -> None:
    """Give every rebased commit a ``Paradev-Issue: N`` trailer naming its own task.

    Rewritten with the same trees, authors, committers and dates, so a resumed
    train makes the same commits; journaled before the branch moves, like a squash.
    """
    _rewrite_branch(train, agent, TRAILERS, ("trailers_from", "trailered"), build_trailers)


def build_trailers(train: Train, agent: int, base: str, head: str) -> str:
    """``base..head`` again, each commit's message carrying its task's issue trailer."""
    found = _rebased_tasks(train, agent, base, head)
    if found is None:
        return head
    rebased, tasks = found
    issues = _issues_per_commit(train, agent, tasks, len(rebased))
    return landing.with_issue_trailers(train.ws.git, base, rebased, issues)


def _issues_per_commit(
    train: Train, agent: int, tasks: list[tuple[Any, TaskRecord | None]], count: int
) -> list[list[int]]:
    """The issue of each rebased commit's task; every landing issue when they cannot be told."""
    cuts = _task_cuts(train, agent, tasks, count)
    if cuts is None:
        return [[task.issue for task, _ in tasks]] * count
    owners = []
    for index in range(count):
        owner = next(k for k, cut in enumerate(cuts) if cut >= index)
        owners.append([tasks[owner][0].issue])
    return owners


def _task_cuts(
    train: Train, agent: int, tasks: list[tuple[Any, TaskRecord | None]], count: int
) -> list[int] | None:
    """Index (in the rebased commits) of each task's last commit, or None when unknown."""
    if len(tasks) == 1:
        return [count - 1]
    git = train.ws.git
    entry = train.agent(agent)
    old_head = entry.get("candidate") or entry.get("old_head", "")
    old_base = gitmod.merge_base(git, train.base_tip(), old_head) if old_head else None
    original = gitmod.commits_between(git, old_base, old_head) if old_base else []
    if len(original) != count:
        return None
    cuts: list[int] = []
    for _, record in tasks:
        sha = record.head_commit if record else None
        if sha not in original:
            return None
        cuts.append(original.index(sha))
    cuts[-1] = count - 1  # commits after the last recorded head belong to the last task
    return cuts if cuts == sorted(cuts) and len(set(cuts)) == len(cuts) else None


def _squash_commit(git: Git, source: str, parent: str, message: str) -> str:
    tree = gitmod.tree_of(git, source)
    return gitmod.commit_tree(git, tree, [parent], message, env=gitmod.commit_meta(git, source))


# -- checking what would land -------------------------------------------------------------------


def step_check(train: Train, agent: int) -> None:
    """Before the gate: no unmerged entries, no conflict markers added, all of the agent's work.

    Whatever resolved a conflict (the agent, a person, git), what lands is
    checked here, so nothing half-resolved or missing ever reaches base.
    """
    base, head = train.tips_handed_on(agent)
    entry = train.agent(agent)
    if entry.get("checked") == head:
        train.hand_on(agent, base, head)
        return
    marked = _unresolved_files(train, agent, base, head)
    if marked and train.ws.plan.on_conflict == "agent":
        marked = _hand_back_markers(train, agent, marked)
        base, head = train.tips(agent)
    if marked:
        raise train.stop(agent, "markers", _markers_message(train, agent, marked))
    missing = _missing_work(train, agent, base, head)
    if missing:
        raise train.stop(agent, "patch-check", missing)
    train.finish(agent, CHECK, checked=head)
    train.hand_on(agent, base, head)


def _unresolved_files(train: Train, agent: int, base: str, head: str) -> list[str]:
    """Files unmerged in the agent's index, or with conflict markers the landing adds."""
    unmerged = gitmod.unmerged_paths(train.worktree(agent))
    return sorted(set(unmerged) | set(landing.files_with_markers(train.ws.git, base, head)))


def _markers_message(train: Train, agent: int, files: Sequence[str]) -> str:
    return (
        f"merge train stopped: {_markers_facts(train, agent, files)} ({train.base} unchanged). "
        f"Resolve them in {train.worktree(agent)}, commit on {train.branch(agent)}, "
        "then run paradev merge --continue (or paradev merge --skip)"
    )


def _markers_facts(train: Train, agent: int, files: Sequence[str]) -> str:
    return (
        f"agent {agent}'s rebased branch still holds conflict markers "
        f"or unmerged entries in: {', '.join(files)}"
    )


def _hand_back_markers(train: Train, agent: int, files: list[str]) -> list[str]:
    """Give the agent one chance to remove the markers it left; what is still unresolved after."""
    report = (  # what to do, for the agent alone: no train commands
        f"{_markers_facts(train, agent, files)}. Remove every conflict marker from these "
        f"files in {train.worktree(agent)} and commit the result on {train.branch(agent)}."
    )
    train.out(f"agent {agent}: conflict markers left in {', '.join(files)}; handing it back")
    hand_back(train, agent, report)
    if gitmod.rebase_in_progress(train.worktree(agent)) is not None:
        return files
    base, head = train.tips(agent)
    return _unresolved_files(train, agent, base, head)


def _missing_work(train: Train, agent: int, base: str, head: str) -> str | None:
    """What of the agent's completed work the landing lacks, said for the stop; None if nothing.

    The completed commit is the one the rebase started from (or, when no
    rebase was needed, the completed commit itself).
    """
    entry = train.agent(agent)
    work = str(entry.get("rebase_from") or entry.get("candidate") or entry.get("old_head") or head)
    missing = landing.missing_work(train.ws.git, base, head, work, entry.get("resolved", []))
    if missing is None:
        return None
    return (
        f"merge train stopped: the landing of agent {agent} lacks part of its completed work "
        f"({train.base} unchanged): paths {', '.join(missing.paths)}; from commits "
        f"{'; '.join(missing.commits) or work[:12]}. Its work is kept at {entry.get('backup')}; "
        "run paradev merge --abort to restore the branch, or fix the branch and "
        "run paradev merge --continue"
    )


# -- the gate ---------------------------------------------------------------------------------


def step_gate(train: Train, agent: int) -> None:
    """Run the gate on the rebased branch (base + this work); stop if it fails.

    Neither its start nor its pass is written at once (the next write carries
    them; an interrupt writes them): a crash only runs it once more, and not
    even that when base already holds the head, for then it has landed.
    """
    base, head = train.tips_handed_on(agent)
    entry = train.agent(agent)
    command = _gate_command(train.ws)
    if not train.journal["gate"] or not command or entry.get("gate_passed") == head or base == head:
        entry["gated"] = head  # what advance may land
        return
    _require_only_the_candidate(train, agent, head)
    prepare_worktree(  # the rebase may have changed its lockfiles
        train.ws, train.worktree(agent), agent, notify=as_agent(agent, train.out)
    )
    attempt = int(entry.get("gate_runs", 0)) + 1
    log = gate_log(train, agent, attempt)
    train.begin(agent, GATE, gate_runs=attempt, gate_head=head, gate_log=str(log))
    train.out(f"agent {agent}: gate running ({log})")
    env = gate_env(train, agent, log)
    try:
        result = gates.run_gate(
            command, train.worktree(agent), train.ws.plan.gate_timeout, log, env
        )
    except KeyboardInterrupt:
        train.save()  # the user stopped it: say where
        raise
    if not result.ok:
        entry["gate_exit"] = result.returncode
        train.out(gate_report(train, agent, result))
        raise train.stop(agent, "gate", _gate_failure(train, agent, result))
    train.finish(agent, GATE, gate_passed=head, gated=head)
    train.out(f"agent {agent}: gate passed")


def _require_only_the_candidate(train: Train, agent: int, head: str) -> None:
    """The gate runs in the agent's tree: refuse when it holds anything but ``head`` (exit 2).

    Untracked files count too (ignored ones do not): the gate would test them
    along with what lands. The agent is not running: the train holds its lock.
    """
    path = train.worktree(agent)
    if gitmod.current_branch(path) != train.branch(agent):
        raise PreconditionError(
            f"the gate cannot run in {path}: it does not have {train.branch(agent)} "
            f"({head[:12]}) checked out; check it out, then run paradev merge --continue"
        )
    refuse_extra_files(path, agent, "run paradev merge --continue")


def gate_report(train: Train, agent: int, result: GateResult, lines: int = 20) -> str:
    """A failed gate for a person: the log's tail, then the next steps (as a conflict stop)."""
    tail = _tail(result.log, lines).splitlines()
    path, branch = train.worktree(agent), train.branch(agent)
    report = [
        f"agent {agent}: the gate {_gate_why(train, result)} on {train.base} + this agent's work",
        f"  log: {result.log}" + (f" (last {len(tail)} lines):" if tail else " (empty)"),
        *(f"      | {line}" for line in tail),
        *next_steps([f"fix what the log shows in {path}, commit it on {branch}, then"]),
    ]
    return "\n".join(report)


def _gate_why(train: Train, result: GateResult) -> str:
    timeout = train.ws.plan.gate_timeout
    return (
        f"timed out after {timeout:g}s"
        if result.returncode is None
        else f"exited {result.returncode}"
    )


def _gate_failure(train: Train, agent: int, result: GateResult) -> str:
    why = _gate_why(train, result)
    return (
        f"merge train stopped: the gate {why} for agent {agent} "
        f"({train.base} unchanged); log: {result.log}. Commit a fix on {train.branch(agent)} "
        "and run paradev merge --continue, or paradev merge --skip"
    )


# -- landing ----------------------------------------------------------------------------------


def move_base(
    ws: Workspace,
    base: str,
    old: str,
    new: str,
    *,
    checked: bool = False,
    then: str = "run paradev merge again",
    changes: Sequence[str] | None = None,
) -> None:
    """Fast-forward ``base`` from ``old`` to ``new``, with its checked-out work tree if any.

    Not checked out: ``git update-ref`` compare-and-swap. Checked out (and clean):
    ``git merge --ff-only`` there, which moves ref, index and files together and
    refuses anything but a fast-forward (and untracked files it would overwrite).
    ``checked``: the caller already knows ``new`` contains ``old``; ``then``:
    what to run once the user committed or stashed their changes to base's tree;
    ``changes``: that tree's tracked changes, when the caller just read them.
    """
    if not checked and not gitmod.is_ancestor(ws.git, old, new):
        raise PreconditionError(f"{new[:12]} is not a fast-forward of {base} ({old[:12]})")
    holder = gitmod.branch_holder(ws.repo, base)
    if holder is None:
        gitmod.update_ref(ws.git, f"refs/heads/{base}", new, old, f"paradev merge: {base}")
        return
    _check_base_tree(ws, base, holder, then, changes)
    gitmod.merge_ff_only(holder, new)


def step_advance(train: Train, agent: int) -> None:
    """Move base to the gated head, fast-forward only.

    Not journaled before the move: a resumed train sees in git whether base
    already holds the head (then only the journal is behind).
    """
    if train.is_done(agent, ADVANCE):
        return
    current, new = train.tips(agent)
    if current != new:
        checked_out = gitmod.branch_holder(train.ws.repo, train.base) is not None
        _check_still_landable(train, agent, current, new, ancestry=not checked_out)
        changes = _undo_killed_fast_forward(train, current, new)
        train.begin(agent, ADVANCE, advance_from=current, advance_to=new)
        try:
            move_base(
                train.ws,
                train.base,
                current,
                new,
                checked=True,
                then="run paradev merge --continue",
                changes=changes,
            )
        except GitError:  # git merge --ff-only refused: say why when base moved
            _stop_if_base_moved(train, agent, current, new)
            raise
    train.finish(agent, ADVANCE, landed=new)
    train.out(f"agent {agent}: {train.base} -> {new[:12]}")


def _undo_killed_fast_forward(train: Train, current: str, new: str) -> list[str] | None:
    """Put back the files a killed ``git merge --ff-only`` of base already wrote.

    Killed mid-way, it leaves base's work tree (and maybe index) partly at the
    new commit while the branch is still at the old one: changed paths whose
    files are exactly the new commit's. They hold nothing uncommitted, so they
    go back to base's head and the fast-forward is done again; any other
    change is the user's and still refuses the move. Returns the tracked
    changes left in base's tree (None: not read), so the move reads them once.
    """
    holder = gitmod.branch_holder(train.ws.repo, train.base)
    if holder is None or gitmod.unfinished_operation(holder) is not None:
        return None
    tracked, untracked = gitmod.changes(holder)
    if not tracked and not untracked:
        return []  # nothing written: the usual case needs no diff
    moving = set(gitmod.changed_paths(train.ws.git, current, new))
    dirty = [p for p in tracked + untracked if p in moving]
    written = gitmod.paths_as_in(holder, new, dirty, cut_short=True)
    if not written:
        return tracked
    if set(written) - set(gitmod.paths_as_in(holder, new, written)):
        _keep_cut_short_files(train, holder)
    gitmod.restore_to_head(holder, written)
    train.out(
        f"paradev: {holder}: put back {len(written)} file(s) a killed fast-forward of "
        f"{train.base} had already written ({', '.join(written[:5])})"
    )
    return None  # changed just now: the move reads the tree again


def _keep_cut_short_files(train: Train, holder: Path) -> None:
    """Commit base's work tree under a backup ref before files cut short are put back.

    A file holding the first bytes of the new commit's is what a killed
    checkout leaves, but it could also be someone's edit: kept, nothing is lost.
    """
    message = f"paradev merge: {holder} before putting back files a killed fast-forward cut short\n"
    snapshot = gitmod.snapshot_worktree(holder, message)
    if snapshot is not None:
        ref = f"{BACKUP_PREFIX}/{train.base}/{train.id}-worktree-{snapshot[:12]}"
        if train.ws.git.rev(ref) is None:
            gitmod.update_ref(train.ws.git, ref, snapshot, "")
        train.out(f"paradev: {holder}: its files as they were are kept in {ref}")


def _check_still_landable(
    train: Train, agent: int, base: str, head: str, *, ancestry: bool = True
) -> None:
    """Stop when the branch moved after its gate, or base moved after the rebase.

    ``ancestry=False``: ``git merge --ff-only`` will prove the fast-forward itself.
    """
    if head != train.agent(agent).get("gated"):
        raise train.stop(
            agent,
            "branch-moved",
            f"{train.branch(agent)} moved after its gate ran; "
            "run paradev merge --continue to gate it again",
        )
    if ancestry:
        _stop_if_base_moved(train, agent, base, head)


def _stop_if_base_moved(train: Train, agent: int, base: str, head: str) -> None:
    if not gitmod.is_ancestor(train.ws.git, base, head):
        raise train.stop(
            agent,
            "base-moved",
            f"{train.base} moved while agent {agent} was being landed; "
            "run paradev merge --continue to rebase and gate it again",
        )


def step_push(train: Train, agent: int) -> None:
    """Push base (never forced) and the rewritten agent branch (with a lease).

    Journaled with the next step only: pushing the same commits again is a no-op.
    """
    if not train.journal["push"] or train.is_done(agent, PUSH):
        return
    entry = train.agent(agent)
    git, remote = train.ws.git, train.ws.plan.remote
    landed = entry["landed"]
    train.begin(agent, PUSH)
    try:
        gitmod.push(git, remote, landed, train.base)
    except GitError as err:
        raise train.stop(
            agent,
            "push",
            f"{remote} refused {train.base} at {landed[:12]} ({err}); it landed locally. "
            f"Someone else pushed to {remote}/{train.base}: "
            "reconcile, then paradev merge --continue",
        ) from None
    if entry.get("remote_head") is not None:
        _push_agent_branch(train, agent, landed, entry["remote_head"])
    train.finish(agent, PUSH)
    train.out(f"agent {agent}: pushed {train.base} to {remote}")


def _push_agent_branch(train: Train, agent: int, head: str, lease: str) -> None:
    git, remote, branch = train.ws.git, train.ws.plan.remote, train.branch(agent)
    try:
        gitmod.push(git, remote, head, branch, lease=lease)
    except GitError as err:
        if gitmod.remote_branch(git, remote, branch) != head:  # not a re-run of a done push
            train.out(f"paradev: warning: {branch} not pushed to {remote}: {err}")


def step_mark(train: Train, agent: int) -> None:
    """Mark the agent's completed tasks merged (time, commit); the journal notes it after.

    The state file goes first: a crash before the journal write redoes this
    step, which finds the tasks merged at this very commit and names them again.
    """
    if train.is_done(agent, MARK):
        return
    train.drop_task_view(agent)
    entry = train.agent(agent)
    landed = entry["landed"]
    entry["step"] = MARK
    entry["done"].append(MARK)
    with train.ws.store.update() as state:
        issues: list[int] = []
        for task in train.ws.tasks_of(agent):
            record = state.tasks.get(task.issue)
            if record is not None and record.status == COMPLETED:
                record.status, record.merged_at, record.merged_commit = MERGED, now(), landed
            if record is not None and record.status == MERGED and record.merged_commit == landed:
                issues.append(task.issue)  # also when marked before a crash cut the journal off
        entry["issues"] = issues
        train.journal["landed"].append({"agent": agent, "commit": landed, "issues": issues})
        state.train = train.journal
    merged = ", ".join(f"#{i}" for i in issues) or "no tasks"
    train.out(f"agent {agent}: landed {merged} at {landed[:12]}")


def step_hooks(train: Train, agent: int) -> None:
    """Run on_merge for each task just merged; a failing hook is only a warning."""
    if train.is_done(agent, HOOKS):
        return
    from paradev.hooks import run_hook

    if not train.ws.plan.hook("on_merge").strip():
        train.finish(agent, HOOKS)  # nothing to run: the queue write carries it
        return
    train.begin(agent, HOOKS)  # a crash before they end runs them again
    entry = train.agent(agent)
    state = train.ws.store.read()
    for issue in entry.get("issues", []):
        task = train.ws.plan.task(issue)
        if task is None:
            continue
        result = run_hook(
            train.ws, "on_merge", task, state.tasks.get(issue), commit=entry["landed"]
        )
        if result is not None and not result.ok:
            train.out(f"paradev: warning: {result.describe()}")
    train.finish(agent, HOOKS, flush=True)
