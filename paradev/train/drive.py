"""Start, continue, skip or abort a train (``paradev merge``): the serial train or the queue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from paradev import git as gitmod
from paradev.errors import PreconditionError
from paradev.train import join, steps
from paradev.train.advance import _undo_killed_fast_forward, move_base, push_landed
from paradev.train.backup import _restore_branch
from paradev.train.checks import Preflight, _resolve_push, ordered, preflight
from paradev.train.journal import (
    AgentLocks,
    HandBack,
    Output,
    Train,
    _lock_agents,
    _new_journal,
    _rev,
    driving,
    journaled_committer,
    load_train,
)
from paradev.train.rebase import _abort_our_rebase
from paradev.train.steps import (
    _end,
    _finish_landed,
    _has_landed,
    _note_skip,
    _say_skipped_last_time,
    summary,
    take_over,
)
from paradev.workspace import Workspace


@dataclass(frozen=True)
class Options:
    """``--push``/``--no-push`` (None: as the plan says), ``--no-gate``, and the hand-back.

    ``hand_back`` launches an agent on its stopped rebase (``on_conflict =
    "agent"``): the runner's, passed in, since the runner sits above the train.
    """

    push: bool | None = None
    gate: bool = True
    hand_back: HandBack | None = None
    follow: bool = False  # work completed meanwhile joins the train (paradev.train.join)


def merge(ws: Workspace, out: Output, options: Options) -> None:
    """Start a train over every agent with completed, unmerged work (``paradev merge``).

    Every refusal (exit 2) comes before the first change.
    """
    with driving(ws), AgentLocks() as locks:
        checked = preflight(ws, locks, push=options.push, gate=options.gate)
        selection = checked.selection
        _bring_base_up(ws, out, checked)
        state = ws.store.view()  # read only
        from_lanes = join.lanes_to_land(ws, state) if options.follow else []
        notes = join.lane_notes(ws, selection.notes, from_lanes)
        for note in notes:
            out(note)
        agents = [*selection.agents, *(a for a in from_lanes if a not in selection.agents)]
        if not agents:
            out("nothing to land")
            return
        chosen, analysis = (
            (join.order(ws, state, agents, True), None) if options.follow else ordered(ws, agents)
        )
        journal = _new_journal(ws, chosen, checked.pushing, options.gate)
        if options.follow:  # paradev run: the queue's gates run back to back (candidates.py)
            journal["mq"] = ws.plan.queue_settings
        join.prepare(ws, state, journal, agents, from_lanes)
        journal["left_out"] = notes  # the summary names them again
        _say_skipped_last_time(ws, journal["order"], out, state)
        if not ws.store.begin_train(journal):
            raise PreconditionError("another paradev merge started a train meanwhile")
        train = Train(ws, journal, out, options.hand_back)
        train.analysis = analysis
        order = " -> ".join(f"agent {a}" for a in journal["order"])
        out(f"merge train {train.id}: {order} onto {train.base}")
        _run(train, join.Joiner(locks) if options.follow else None)


def _bring_base_up(ws: Workspace, out: Output, checked: Preflight) -> None:
    """Every check passed: base fast-forwards to the remote (the first change)."""
    base, tip = ws.plan.base, checked.remote_tip
    if tip is not None:
        move_base(ws, base, _rev(ws.git, f"refs/heads/{base}"), tip)
        out(f"{base}: fast-forwarded to {ws.plan.remote}/{base} ({tip[:12]})")


def resume(ws: Workspace, out: Output, options: Options) -> None:
    """``merge --continue``: finish a resolved rebase, re-run a failed gate, go on."""
    with _taken(ws, out, options.hand_back) as train:
        _go_on(train, options)


@contextmanager
def _taken(ws: Workspace, out: Output, hand_back: HandBack | None) -> Iterator[Train]:
    """The train in progress, driven by this process, its queued agents locked."""
    with driving(ws), ExitStack() as locks:
        train = load_train(ws, out, hand_back)
        _lock_agents(ws, join.lockable(train, train.queue), locks)
        _adopt_if_begun_elsewhere(train)
        yield train


def _adopt_if_begun_elsewhere(train: Train) -> None:
    """A train begun on another host: its refs are on the remote (``paradev.train.adopt``,
    imported only for a resumed train: a new one never needs it)."""
    from paradev.train import adopt

    if adopt.needs_adoption(train):
        adopt.adopt(train)


def _go_on(train: Train, options: Options) -> None:
    """Clear the stop, apply ``--push/--no-push/--no-gate`` and run the rest of the queue."""
    if options.push is not None:
        train.journal["push"] = _resolve_push(train.ws, options.push)
    if not options.gate:
        train.journal["gate"] = False
    take_over(train)
    train.journal["status"] = "running"
    train.journal["stop"] = None
    train.save()
    train.out(f"continuing merge train {train.id}")
    _run(train)


def skip(ws: Workspace, out: Output, options: Options) -> None:
    """``merge --skip``: leave the stopped agent out (its rebase aborted) and go on."""
    with _taken(ws, out, options.hand_back) as train:
        if not train.queue:
            raise PreconditionError(
                "the train has no agent left to skip; run paradev merge --continue"
            )
        agent = train.queue[0]
        stop = train.journal.get("stop") or {}
        if stop.get("reason") == "push" and stop.get("agent") not in train.queue:
            agent = stop["agent"]  # its push was refused while the next landing was under way
        if agent != train.queue[0] or _has_landed(train, agent):
            raise PreconditionError(
                f"agent {agent} has already landed on {train.base}; run paradev merge --continue"
            )
        take_over(train)
        _abort_our_rebase(train, agent)
        if train.agent(agent).get("wip") or _rewritten(train, agent):
            # what the train did to the branch is undone (its rebase and trailers, the commits
            # set aside): it holds the completed commit again, which the next train lands
            _restore_branch(train, agent)
        train.queue.pop(0)
        _note_skip(
            train, agent, f"left out with --skip after its {stop.get('reason', 'stop')} stop"
        )
        backup = train.agent(agent).get("backup")
        out(f"agent {agent}: skipped (its branch keeps its commits; backup {backup})")
        _go_on(train, options)  # its write carries the skip


def _rewritten(train: Train, agent: int) -> bool:
    """Whether the train rewrote the agent's branch (a rebase done in its work tree): its head
    no longer holds the one it had when the train began. Commits added on top are not that."""
    old = str(train.agent(agent).get("old_head") or "")
    current = train.head(agent)
    return bool(old) and current != old and not gitmod.is_ancestor(train.ws.git, old, current)


def abort(ws: Workspace, out: Output) -> None:
    """``merge --abort``: undo the current agent's rebase, restore its branch, end the train.

    What already landed stays: it passed its gate. The merge queue may have
    been stopped in the middle of landing several agents by one fast-forward:
    see ``_abort_queue``.
    """
    with driving(ws), ExitStack() as locks:
        train = load_train(ws, out)
        queued = bool(train.journal.get("mq"))
        _lock_agents(ws, join.lockable(train, train.queue if queued else train.queue[:1]), locks)
        _adopt_if_begun_elsewhere(train)
        take_over(train)
        if queued:
            _abort_queue(train)
        elif train.queue:
            agent = train.queue[0]
            if _has_landed(train, agent):
                _finish_landed(train, agent)
            else:
                _abort_our_rebase(train, agent)
                _restore_branch(train, agent)
        if not queued:
            push_landed(train, may_stop=False)  # what landed goes out, as a done train's did
        _end(train, "aborted")
        out(summary(train, "aborted"))


def _abort_queue(train: Train) -> None:
    """End a queue's unfinished landing, then put every agent left back at its backup.

    Base never moves back: when it already holds the landing (a gated
    candidate), the landed agents' bookkeeping is finished as ``--continue``
    would; when it does not, it stays where it is (files a killed
    fast-forward wrote in its work tree put back) and every agent of the
    landing is restored with the rest. An agent going through the serial
    steps (its work did not replay) is aborted as the serial train aborts it.
    """
    from paradev.train import candidates, eject

    mq = eject.settings(train)
    pending = mq.get("landing")
    if pending:
        current, target = train.base_tip(), str(pending["to"])
        agents = ", ".join(str(a) for a, _ in pending["agents"])
        if current != pending["from"] and gitmod.is_ancestor(train.ws.git, target, current):
            train.out(
                f"{train.base} already holds the landing of agents {agents} ({target[:12]}, "
                "gated): finishing it"
            )
            for agent, commit in pending["agents"]:
                if agent in train.queue:
                    candidates._after_advance(train, int(agent), str(commit), push_may_stop=False)
        else:
            if current == pending["from"]:
                _undo_killed_fast_forward(train, current, target)
            train.out(
                f"the landing of agents {agents} ({target[:12]}) was not made; "
                f"{train.base} stays at {current[:12]}"
            )
        mq["landing"] = None
        train.save()
    for agent in list(train.queue):
        entry = train.agent(agent)
        if entry.get("serial") and agent == train.queue[0] and _has_landed(train, agent):
            _finish_landed(train, agent)  # rebased in its worktree, then base moved
            continue
        _abort_our_rebase(train, agent)
        _restore_branch(train, agent)
        if entry.get("backup"):
            train.out(
                f"agent {agent}: not landed; {train.branch(agent)} at "
                f"{str(entry['old_head'])[:12]} (backup {entry['backup']})"
            )


def _run(train: Train, follow: steps.Follow | None = None) -> None:
    """The serial train, or the merge queue when ``[merge]`` asks for parallel/batch/eject;
    with ``follow`` either one is joined by work completed meanwhile."""
    with journaled_committer(train):
        if train.journal.get("mq"):
            from paradev.train import candidates  # the queue's modules: a serial train needs none

            candidates.run_queue(train, follow)
        else:
            steps.run(train, follow)
