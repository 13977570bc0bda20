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
moves the branch, when tasks are marked merged and hooks run next, after hooks
ran, at stops and at the end. Everything else rides along with the next write
(a landing's marks too: a crash before it redoes the mark, as git shows it landed).

This module is the serial loop (``run``, ``land``) and the train's closing
words; the steps live in ``checks`` (preconditions), ``backup``, ``rebase``
(with conflict hand-back), ``rewrite`` (squash, trailers, the check before
the gate) and ``advance`` (gate, fast-forward, push, mark, hooks). The
journal is ``paradev.train.journal``, the entry points ``paradev.train.drive``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from paradev import git as gitmod
from paradev.errors import Stopped
from paradev.order import drop_dependents
from paradev.snapshots import remember, train_facts, train_snapshot
from paradev.state import State, now
from paradev.train.advance import (
    push_landed,
    settle_push,
    step_advance,
    step_gate,
    step_hooks,
    step_mark,
    step_push,
    wait_for_push,
)
from paradev.train.backup import (
    back_up_queue,
    step_backup,
    step_wip,
)
from paradev.train.gate import _say_gate
from paradev.train.journal import (
    ADVANCE,
    LaneHeld,
    Output,
    Train,
    driver_record,
    remove_stale_locks,
)
from paradev.train.rebase import (
    step_rebase,
    wait_for_resolver,
)
from paradev.train.rewrite import (
    step_check,
    step_squash,
    step_trailers,
)
from paradev.workspace import Workspace


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
    landed = {f"agent {e['agent']}: #{i} " for e in train.journal["landed"] for i in e["issues"]}
    left = [n for n in train.journal.get("left_out", []) if not n.startswith(tuple(landed))]
    lines += [f"  not landed: {note}" for note in left]  # but what landed later, as it joined
    return "\n".join(lines)


def _say_skipped_last_time(
    ws: Workspace, order: Sequence[int], out: Output, state: State | None = None
) -> None:
    """Name the agents the last train skipped that this one tries again (never silently).

    ``state``: the state, when the caller just read it.
    """
    history = (state or ws.store.read()).merge_history
    last = history[-1] if history else {}
    reasons = last.get("skip_reasons") or {}
    for agent in (a for a in last.get("skipped", []) if a in order):
        why = reasons.get(str(agent), "skipped")
        out(f"agent {agent}: skipped by the last train ({why}); trying it again")


def run(train: Train, follow: Follow | None = None) -> None:
    """Land every agent left in the queue one at a time, then close the train.

    ``follow`` (``merge --follow``, see ``paradev.train.join``) lets each
    landed agent go at once and may refill an empty queue.
    """
    _say_gate(train)
    back_up_queue(train)
    try:
        push_landed(train)  # a push a crash or a stop left unsettled
        while train.queue or (follow is not None and follow.join(train)):
            agent = train.queue[0]
            if _skip_for_skipped_dependency(train, agent):
                continue
            try:
                land(train, agent, push_behind=follow is None)
            except LaneHeld as held:
                _note_skip(train, agent, str(held))
                train.out(f"agent {agent}: {held}")
            train.queue.pop(0)  # written with the next step; a resumed train finds it all done
            if follow is not None:
                train.save()  # the journal no longer names it before anyone else may take it
                follow.landed(agent)
        settle_push(train)
    except Exception:  # a refusal (exit 2): the landings marked so far are written first
        settle_push(train, may_stop=False)
        train.save()
        raise
    except BaseException:  # interrupted: the push started finishes first, journaled or not
        wait_for_push(train)
        raise
    train.save()  # the last landing's mark rides on it: the end reads the journal's file
    _end(train, "done")
    train.out(summary(train, "done"))


class Follow(Protocol):
    """What ``merge --follow`` adds to the serial train (``paradev.train.join.Joiner``)."""

    def join(self, train: Train) -> bool: ...

    def landed(self, agent: int) -> None: ...


def _skip_for_skipped_dependency(train: Train, agent: int) -> bool:
    """Leave ``agent`` out when work it depends on was skipped in this train."""
    entry = train.agent(agent)
    if not train.journal["skipped"] or (entry.get("old_head") and not entry.get("backed_up_early")):
        return False  # nothing skipped: selection checked every dependency; under way: --skip
    dropped = drop_skipped_dependents(train, "which was skipped", keep=lambda other: other != agent)
    if dropped:
        train.save()
    return bool(dropped)


def drop_skipped_dependents(
    train: Train, which: str, keep: Callable[[int], bool] = lambda agent: False
) -> list[int]:
    """Skip every queued agent whose work depends on work no longer landing (the reason
    journaled and said); the agents skipped. ``keep``: agents never skipped (under way)."""
    landed = [e["agent"] for e in train.journal["landed"]]
    dropped = drop_dependents(
        train.ws,
        train.ws.store.view(),
        train.queue,
        landed,
        lambda m: f"#{m[0]} depends on #{m[1]}, {which}",
        keep,
    )
    for skipped, why in dropped:
        _note_skip(train, skipped, why)
        train.out(f"agent {skipped}: skipped: {why}")
    return [skipped for skipped, _ in dropped]


def land(train: Train, agent: int, *, push_behind: bool = False) -> None:
    """Every step of landing one agent; each step skips what git shows is already done.

    ``push_behind``: its push may run on while the next landing starts (``step_push``).
    """
    step_backup(train, agent)
    step_rebase(train, agent)
    if train.journal.get("squash", train.ws.plan.squash):
        step_squash(train, agent)
    else:
        step_trailers(train, agent)
    step_check(train, agent)
    step_gate(train, agent)
    step_advance(train, agent)
    after_landing(train, agent, ride_along=True, push_behind=push_behind)


def after_landing(
    train: Train,
    agent: int,
    *,
    push_may_stop: bool = True,
    ride_along: bool = False,
    push_behind: bool = False,
) -> None:
    """Work in progress back on the branch, push, mark merged, hooks: what follows base moving.

    ``ride_along``: the mark is written with the next write (``step_mark``);
    ``push_behind``: the push may be settled later (``step_push``).
    """
    step_wip(train, agent)
    try:
        step_push(train, agent, background=push_behind)
    except Stopped as stop:
        if push_may_stop:
            raise
        train.out(f"paradev: warning: {stop}")
    step_mark(train, agent, ride_along=ride_along)
    step_hooks(train, agent)


def _end(train: Train, status: str) -> None:
    """Keep the train's snapshot and history and remove its journal: one state write."""
    snapshot = train_snapshot(train.ws, train.journal, train.analysis)
    with train.ws.store.update() as state:
        if snapshot is not None:
            remember(state, snapshot)
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
