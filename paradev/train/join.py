"""Work that completes while a train runs joins its end (``paradev merge --follow``).

``paradev run`` lands continuously: without this, a task completed a moment
after a train started waited for that train to end and a new one to start
(half a second or more of the train's own start-up, per train, while the
gate stood idle). When the train's queue empties (the serial train's, or
the merge queue's with ``[merge] parallel``/``batch``), it asks once more
which agents have completed work and lands them too.

Each agent is let go as soon as it has landed, so that its next task starts
while the train goes on with the others.

An agent joins only if the train can hold it (an agent still at work is
held by ``paradev run``) and its tree passes the same checks a new train
makes; an agent this train already handled waits for the next train, since
the journal keeps one landing per agent. Anything that refuses is simply
left for the next train: joining never stops the train.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from paradev.errors import ParadevError
from paradev.order import select_agents
from paradev.train.checks import _check_agent_tree, merge_order
from paradev.train.gate import _gate_command
from paradev.train.journal import AgentLocks, Train, _lock_agents
from paradev.train.steps import Follow


class Joiner:
    """``steps.Follow`` for a train started in this process, whose agents ``locks`` holds."""

    def __init__(self, locks: AgentLocks) -> None:
        self.locks = locks

    def landed(self, agent: int) -> None:
        """The train is done with ``agent``: ``paradev run`` may start its next task at once."""
        self.locks.release(agent)

    def join(self, train: Train) -> bool:
        """Add the agents whose work completed meanwhile to the empty queue; whether any came."""
        if train.journal.get("stop") is not None:
            return False
        ws = train.ws
        gating = bool(train.journal.get("gate")) and bool(_gate_command(ws))
        handled = set(train.journal["order"])
        ready = [a for a in select_agents(ws).agents if a not in handled]
        joined = [a for a in ready if self._take(train, a, gating)]
        if not joined:
            return False
        if len(joined) > 1:  # one agent needs no order, nor the conflict scan it costs
            joined = merge_order(ws, joined, save=False)
        train.journal["order"] += joined
        train.queue.extend(joined)
        train.save()
        train.out(f"merge train {train.id}: joined by " + ", ".join(f"agent {a}" for a in joined))
        return True

    def _take(self, train: Train, agent: int, gating: bool) -> bool:
        """Hold ``agent`` and check its tree; a refusal leaves it for the next train."""
        try:
            _lock_agents(train.ws, [agent], self.locks)
            _check_agent_tree(train.ws, agent, gating)
        except ParadevError:
            self.locks.release(agent)
            return False
        return True


# -- the merge queue (``[merge] parallel/batch/eject``) ---------------------------------------


def refill(
    train: Train, follow: Follow | None, back_up: Callable[[Train, Sequence[int]], None]
) -> bool:
    """The merge queue's empty queue takes the work completed meanwhile, backed up as the
    queue's own agents are before their first round; whether any came."""
    if follow is None or not follow.join(train):
        return False
    back_up(train, train.queue)
    train.save()
    return True


def let_go(train: Train, follow: Follow | None, queued: Sequence[int]) -> None:
    """Each agent a round of the merge queue was done with (landed, set aside) is let go, the
    journal no longer naming it first, as the serial train lets each landed agent go."""
    left = [agent for agent in queued if agent not in train.queue]
    if follow is None or not left:
        return
    train.save()
    for agent in left:
        follow.landed(agent)
