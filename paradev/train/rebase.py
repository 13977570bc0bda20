"""The rebase step: rebase a branch onto base in its own work tree, and what a conflict does.

A rebase left in progress is recognised as ours by the journal; a conflict
stops the train or is handed back to the agent (``on_conflict = "agent"``),
with the facts an agent or a person needs to resolve it.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from paradev import git as gitmod
from paradev import lanes, processes
from paradev.errors import GitError, PreconditionError, Stopped
from paradev.hosts import host_of
from paradev.train.checks import (
    _check_agent_branch,
    _refuse_uncommitted,
)
from paradev.train.journal import (
    REBASE,
    LaneHeld,
    Train,
    remove_stale_locks,
)


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


def _abort_or_quit(path: Path) -> None:
    try:
        gitmod.rebase_abort(path)
    except GitError:
        gitmod.rebase_quit(path)


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
    path = train.worktree(agent)
    handed = train.handed_on(agent)  # by the backup step, when it read the tips
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
            handed = None  # the branch moved back to where the rebase began
    if rebase is None:
        _remove_leftovers_of_a_killed_start(train, agent, path)
        base, head = handed or train.tips(agent)
        on_base = train.on_base(agent, base, head)
        if on_base is None:
            on_base = gitmod.is_ancestor(train.ws.git, base, head)
        if on_base and not train.agent(agent).get("range_from"):
            train.finish(agent, REBASE)
            train.hand_on(agent, base, head)
            return
        _check_agent_branch(train.ws, agent, train.branch(agent), path)
        train.begin(
            agent, REBASE, flush=True, onto=base, rebase_from=head, conflict_at=None, resolved=[]
        )
        _start_rebase(train, agent, path, base)
        train.hand_on_onto(agent, base)
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


def _remove_leftovers_of_a_killed_start(train: Train, agent: int, path: Path) -> None:
    """A rebase this train began, killed before git kept any state of it (or a restore to
    its start killed half way): the files its checkout wrote are untracked now, and the
    rebase started again would refuse to overwrite them."""
    entry = train.agent(agent)
    if entry.get("step") != REBASE or not entry.get("onto"):
        return
    for commit in (entry["onto"], entry.get("rebase_from")):
        if commit:
            _remove_checkout_leftovers(train, path, str(commit))


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
    """``git rebase onto`` there; git itself refuses a dirty tree, said here in plain words.

    A range (``range_from``: the work after a task that landed from a lane,
    or a lane's own task after the one before it) is replayed exactly.
    """
    start = train.agent(agent).get("range_from")
    try:
        stopped = not (
            gitmod.rebase_range(path, onto, start) if start else gitmod.rebase(path, onto)
        )
    except GitError:
        _refuse_uncommitted(
            path, f"agent {agent}'s worktree {path}", "run paradev merge --continue"
        )
        raise
    if stopped:
        _on_conflict(train, agent)
    else:
        train.note_clean_rebase(agent)


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
        hold_busy_lane(train, agent, "its rebase conflicts")
        owner = _host_elsewhere(train, agent)
        if owner is not None:
            raise _hand_to_host(train, agent, owner)
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


def hold_busy_lane(train: Train, agent: int, why: str) -> None:
    """A lane's task cannot be handed back while its agent works on the next: hold it.

    The lane goes back to the task's head; once the agent is idle its branch
    lands both tasks' work together, and a conflict is handed back then.
    """
    if not train.agent(agent).get("lane_issue"):
        return
    path = train.worktree(agent)
    if gitmod.rebase_in_progress(path) is not None:
        drop_rebase(train, agent, path)
    lanes.hold(train.ws, agent)
    raise LaneHeld(
        f"#{train.agent(agent)['lane_issue']}: {why}; agent {agent} is busy on its next task: "
        "it lands with that task's work once the agent is idle"
    )


def _host_elsewhere(train: Train, agent: int) -> str | None:
    """The host running ``agent`` when it is not this one ([agents] hosts), else None."""
    here, owner = train.ws.store.host, host_of(train.ws.plan, agent)
    return owner if here is not None and owner is not None and owner != here else None


def _hand_to_host(train: Train, agent: int, owner: str) -> Stopped:
    """Stop, the conflict handed back to the host running the agent, through the shared state.

    Its agent resolves it there, in its own work tree: that host's ``merge
    --continue`` (or ``run``) takes the train over and redoes the rebase from
    the pushed backup (``paradev.train.adopt``). This host's copy of the
    branch goes back to where the rebase began.
    """
    drop_rebase(train, agent, train.worktree(agent))
    return handed_to_host(
        train,
        agent,
        owner,
        ("conflict", "rebase conflict", "the conflict", "resolve"),
        f"agent {agent}'s rebase onto {train.base} conflicts",
    )


def handed_to_host(
    train: Train, agent: int, owner: str, words: tuple[str, str, str, str], stopped: str
) -> Stopped:
    """Journal the hand-back to host ``owner`` and stop: its ``merge --continue`` (or ``run``)
    takes it up. ``words``: the stop's reason, what happened, what is handed, the agent's job."""
    reason, happened, handed, job = words
    train.agent(agent)["handed_to"] = owner
    train.out(f"agent {agent}: {happened}; handing it back to host {owner}, which runs it")
    return train.stop(
        agent,
        reason,
        f"merge train stopped: {stopped}; agent {agent} runs on host {owner}: {handed} is "
        "handed back to it through the shared state, and 'paradev merge --continue' (or "
        f"'paradev run') there has the agent {job} it",
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
