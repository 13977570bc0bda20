"""Work that completes while a train runs joins its end (``paradev merge --follow``).

``paradev run`` lands continuously: without this, a task completed a moment
after a train started waited for that train to end and a new one to start
(half a second or more of the train's own start-up, per train, while the
gate stood idle). When the train's queue empties (the serial train's, or
the merge queue's with ``[merge] parallel``/``batch``), it asks once more
which agents have completed work and lands them too.

Each agent is let go as soon as it has landed, so that its next task starts
while the train goes on with the others; its next completed task joins the
same train again (``rejoin``: its journal entry starts afresh, the landing
before it kept in the train's landed list), instead of waiting for this
train to end and another to start (its start-up, per round of tasks).

An agent joins only if the train can hold it (an agent still at work is
held by ``paradev run``) and its tree passes the same checks a new train
makes; an agent this train skipped, or still lands, waits for the next
train. Anything that refuses is simply left for the next train: joining
never stops the train.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from paradev import git as gitmod
from paradev import lanes
from paradev.errors import ParadevError
from paradev.order import busy_note, compute_merge_order, select_agents
from paradev.plan import Task
from paradev.state import ASSIGNED, COMPLETED, PLANNED, State
from paradev.train.checks import _check_agent_branch, _check_agent_tree
from paradev.train.gate import _gate_command
from paradev.train.journal import AgentLocks, Train, _lock_agents
from paradev.train.steps import Follow
from paradev.workspace import Workspace


class Joiner:
    """``steps.Follow`` for a train started in this process, whose agents ``locks`` holds."""

    def __init__(self, locks: AgentLocks) -> None:
        self.locks = locks

    def landed(self, agent: int) -> None:
        """The train is done with ``agent``: ``paradev run`` may start its next task at once."""
        self.locks.release(agent)

    def join(self, train: Train) -> bool:
        """Add the agents whose work completed meanwhile to the empty queue; whether any came.

        Told by ``paradev run`` (``listen``), the empty train waits for its word that
        work may have completed, until it says no more comes: a train per landing
        costs its start-up and end (a conflict scan) while the gate stands idle.
        """
        while not self._join_now(train):
            if train.journal.get("stop") is not None or not _NEWS:
                return False
            if _run_idle_after(len(train.journal["landed"])):
                return False
            train.save()  # the run counts its landings there before it says it is idle
            _wait_for_news()
        return True

    def _join_now(self, train: Train) -> bool:
        if train.journal.get("stop") is not None:
            return False
        ws = train.ws
        handled = set(train.journal["order"]) - set(landed_here(train))
        if not _completed_beyond(ws, ws.store.view(), handled):
            return False  # the word meant work that is here already: no selection round
        gating = bool(train.journal.get("gate")) and bool(_gate_command(ws))
        ready = [a for a in select_agents(ws).agents if a not in handled]
        state = ws.store.read()
        from_lanes = [a for a in lanes_to_land(ws, state) if a not in handled]
        joined = [a for a in ready if a not in from_lanes and self._take(train, a, gating)]
        joined += [a for a in from_lanes if _lane_ready(ws, a, gating)]
        if not joined:
            return False
        if len(joined) > 1:  # one agent needs no order, nor the conflict scan it costs
            joined = order(ws, state, joined, save=False)
        for agent in joined:
            rejoin(train, agent)
        prepare(ws, state, train.journal, joined, from_lanes)
        train.journal["order"] += [a for a in joined if a not in train.journal["order"]]
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


def _completed_beyond(ws: Workspace, state: State, handled: set[int]) -> bool:
    """Whether an agent the train does not hold yet has a completed task: only such work may
    join (``select_agents`` and a lane's landing both start from one), read with no git."""
    return any(
        state.status(task.issue) == COMPLETED
        for agent in range(1, ws.plan.agent_count + 1)
        if agent not in handled
        for task in ws.tasks_of(agent)
    )


def order(ws: Workspace, state: State, agents: Sequence[int], save: bool) -> list[int]:
    """The merge order of the agents a train following ``paradev run`` lands (kept in state
    if ``save``); where it costs no conflicting rebase, the one whose landing lets the
    longest chain of waiting tasks start goes first (stable).

    The train lands one agent at a time: an agent idle until a dependency lands
    waits for every landing queued ahead of it, and the makespan with it.
    """
    found = compute_merge_order(ws, list(agents), save)
    chosen = [a for a in found.order if a in agents] + [a for a in agents if a not in found.order]
    landing = {a: [t for t in ws.tasks_of(a) if state.status(t.issue) == COMPLETED] for a in chosen}
    owners = {t.issue: a for a, tasks in landing.items() for t in tasks}
    depends = any(
        owners.get(d, a) != a for a, tasks in landing.items() for t in tasks for d in t.depends_on
    )
    if found.conflicting_rebases or depends:
        return chosen  # fewer conflicting rebases, and dependencies, come first
    waiting = _waiting_chains(ws, state)
    unblocks = {
        a: max((waiting[t.issue] for t in tasks), default=0.0) for a, tasks in landing.items()
    }
    return sorted(chosen, key=lambda agent: -unblocks[agent])


def _waiting_chains(ws: Workspace, state: State) -> dict[int, float]:
    """Per task: the hours of the longest chain of tasks not yet started that wait for it
    (its dependents, and its agent's next task), one after the other."""
    tasks = list(ws.plan.tasks())
    later: dict[int, list[Task]] = {t.issue: [] for t in tasks}
    for task in tasks:
        for dependency in task.depends_on:
            later.setdefault(dependency, []).append(task)
    for agent in {t.agent for t in tasks}:
        mine = ws.tasks_of(agent)
        for earlier, after in pairwise(mine):
            later[earlier.issue].append(after)
    chains: dict[int, float] = {}

    def chain(issue: int) -> float:  # the plan is acyclic (validated), plan order included
        if issue not in chains:
            chains[issue] = 0.0  # a guard, should a cycle slip through
            chains[issue] = max(
                (t.hours + chain(t.issue) for t in later.get(issue, []) if _not_started(state, t)),
                default=0.0,
            )
        return chains[issue]

    return {task.issue: chain(task.issue) for task in tasks}


def _not_started(state: State, task: Task) -> bool:
    return state.status(task.issue) in (PLANNED, ASSIGNED)


# -- word from ``paradev run`` (``paradev.warm`` passes its pipe on) ---------------------------

_NEWS: list[int] = []  # the descriptor of the run's pipe, while it is open
_WORD: list[str] = [""]  # the run's last word: "busy", or "idle N"

IDLE = "idle"  # no agent at work, N landings of this train seen: nothing more comes
BUSY = "busy"  # a task ended while agents work: its work may join


def listen(fd: int) -> None:
    """Take ``paradev run``'s word from ``fd``, a line whenever a task ended or it has no
    agent at work (``word``); end of input once no more comes (it ended, or was killed)."""
    _NEWS[:] = [fd]


def word(idle_after: int | None) -> bytes:
    """The run's line: idle once it saw ``idle_after`` landings of the train (None: busy)."""
    return f"{BUSY}\n".encode() if idle_after is None else f"{IDLE} {idle_after}\n".encode()


def _run_idle_after(landed: int) -> bool:
    """Whether the run said it has no agent at work having seen all ``landed`` landings:
    then none of them started a dependent that could join."""
    return _WORD[0] == f"{IDLE} {landed}"


def _wait_for_news() -> None:
    """Wait for the run's next word; at its end stop listening (the agents it let go
    last may still join: the caller looks once more)."""
    try:
        data = os.read(_NEWS[0], 4096)
    except OSError:
        data = b""
    if data:  # whole lines (each write is one short line): the last one counts
        lines = data.decode(errors="replace").strip().splitlines()
        _WORD[0] = lines[-1].strip() if lines else _WORD[0]
        return
    os.close(_NEWS.pop())


def listening() -> bool:
    """Whether ``paradev run``'s pipe is open: a word may still come."""
    return bool(_NEWS)


def news(timeout: float) -> bool:
    """Whether the run said something within ``timeout`` seconds (its word is taken)."""
    if not _NEWS or not select.select(_NEWS, [], [], timeout)[0]:
        return False
    _wait_for_news()  # ready: it does not block
    return True


def take_now(
    train: Train, follow: Follow | None, back_up: Callable[[Train, Sequence[int]], None]
) -> bool:
    """The work completed meanwhile joins the queue now, while its gates run (the merge
    queue's pipeline, ``paradev.train.candidates``); whether any came."""
    if not isinstance(follow, Joiner) or not follow._join_now(train):
        return False
    back_up(train, train.queue)
    train.save()
    return True


def landed_here(train: Train) -> list[int]:
    """The agents this train has landed and let go (not queued, not skipped): their next
    completed work may land in it too."""
    landed = {e["agent"] for e in train.journal["landed"]}
    out = set(train.queue) | set(train.journal["skipped"])
    return [a for a in train.journal["order"] if a in landed and a not in out]


def rejoin(train: Train, agent: int) -> None:
    """Start the journal entry of an agent landing again in this train afresh.

    Its last landing is over (journaled in ``landed``, with its step times):
    every step of the new one must run again, from where the branch is now,
    under a backup ref of its own.
    """
    entry = train.journal["agents"].get(str(agent))
    if entry is None or agent not in landed_here(train):
        return
    last = [e for e in train.journal["landed"] if e["agent"] == agent][-1]
    last.setdefault("times", entry.get("times", {}))
    again = int(entry.get("again", 0)) + 1
    train.journal["agents"][str(agent)] = {"done": [], "again": again}


# -- lanes (``paradev.lanes``): a task landing while its agent works on the next ------------


def lanes_to_land(ws: Workspace, state: State) -> list[int]:
    """The agents whose completed task waits to land from its lane."""
    if not lanes.allowed(ws):
        return []
    return [a for a in range(1, ws.plan.agent_count + 1) if lanes.landable(ws, state, a)]


def lane_notes(ws: Workspace, notes: Sequence[str], from_lanes: Sequence[int]) -> list[str]:
    """The train's start notes, where an agent's completed task lands from its lane while
    its next one is in progress said so (not "not landed")."""
    known = lanes.read(ws)
    said: dict[str, str] = {}
    for agent in from_lanes:
        if agent not in known:
            continue
        for task in ws.tasks_of(agent):  # the note's task may have completed since it was made
            said[busy_note(agent, task.issue)] = (
                f"agent {agent}: #{known[agent].issue} lands from its lane while "
                f"#{task.issue} is in progress"
            )
    return [said.get(note, note) for note in notes]


def _lane_ready(ws: Workspace, agent: int, gating: bool) -> bool:
    """The lane's tree has its branch checked out and holds nothing else (no agent lock:
    its agent works elsewhere, on its next task)."""
    path = lanes.tree(ws, agent)
    try:
        _check_agent_branch(ws, agent, lanes.branch(agent), path)
        dirty = gitmod.dirty_paths(path, untracked=gating)
    except ParadevError:
        return False
    return not dirty


def prepare(
    ws: Workspace,
    state: State,
    journal: dict[str, Any],
    agents: Sequence[int],
    from_lanes: Sequence[int],
) -> None:
    """Journal, before the train first writes them, where each agent's work lands from and
    where its range starts: a lane's task from its lane, other work after what a lane landed."""
    known = lanes.read(ws)
    for agent in agents:
        entry = journal["agents"].setdefault(str(agent), {"done": []})
        lane = known.get(agent)
        if agent in from_lanes and lane is not None:
            entry.update(
                branch=lanes.branch(agent),
                worktree=str(lanes.tree(ws, agent)),
                lane_issue=lane.issue,
                range_from=lane.start,
            )
            continue
        if lane is None:
            continue  # no lane landed under this branch: no range (``lanes.range_start``)
        tip = ws.git.rev(f"refs/heads/{ws.branch(agent)}")
        start = lanes.range_start(ws, state, agent, tip) if tip else None
        if start is not None:
            entry["range_from"] = start


def lockable(train: Train, agents: Sequence[int]) -> list[int]:
    """The agents a resumed train holds: not those landing from a lane (their agent works)."""
    return [a for a in agents if not train.agent(a).get("lane_issue")]


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
