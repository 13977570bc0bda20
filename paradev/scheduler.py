"""``paradev run``: which task may start now, and what every other one waits for.

The plan's real shape is a dependency graph. With ``schedule = "flow"`` a
task starts as soon as every task it depends on has landed and its agent is
free (each agent takes its tasks in plan order); with ``"batches"`` a batch
also waits until every earlier batch has landed. This module is the pure
decision, taken again from the state after every event; ``paradev.runloop``
carries it out.

With ``overlap`` (flow, the serial train: ``paradev.lanes``) an agent may
start its next task while its previous one waits in the merge queue, unless
the next depends on it (directly or through others: a dependency must have
landed): the previous task lands from paradev's own lane, never from the
busy branch. One task at most waits so: an agent with two tasks waiting to
land is idle until its branch lands both. Without it an agent starts its
next task only once its previous one has landed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from paradev.plan import Plan, Task
from paradev.state import COMPLETED, DROPPED, FAILED, GATE_FAILED, IN_PROGRESS, MERGED, State

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

LANDED = (MERGED, DROPPED)  # nothing left to do for the task
FLOW, BATCHES = "flow", "batches"


@dataclass(frozen=True)
class Schedule:
    """One decision: what starts now, what waits (and for what), what can never run now."""

    ready: tuple[Task, ...] = ()
    running: tuple[int, ...] = ()  # issues in progress
    landing: tuple[int, ...] = ()  # issues completed, waiting for the merge train
    waiting: dict[int, str] = field(default_factory=dict)  # issue -> what it waits for
    blocked: dict[int, str] = field(default_factory=dict)  # issue -> why it cannot run this run
    elsewhere: tuple[int, ...] = ()  # [agents] hosts: unfinished issues another host runs


def decide(
    plan: Plan,
    state: State,
    *,
    given_up: Collection[int] = (),
    here: Collection[int] | None = None,
    overlap: bool = False,
    held: Collection[int] = (),
) -> Schedule:
    """The tasks that may start now, and for every other unfinished task what it waits for.

    ``given_up``: issues that ended
    unfinished in this run (failed, set aside): a run never starts them again.
    ``here``: with [agents] hosts, the agents this host runs; another host's
    unfinished tasks only wait (their progress comes through the shared state).
    ``overlap``: an agent may start its next task while its previous one waits
    to land; ``held``: completed tasks that land only once their agent is idle.
    """
    schedule = plan.schedule
    blocked = _blocked(plan, state, given_up, schedule, _stuck_issues(plan, state, here))
    ready: list[Task] = []
    running: list[int] = []
    landing: list[int] = []
    waiting: dict[int, str] = {}
    elsewhere: list[int] = []
    for agent in sorted({t.agent for t in plan.tasks()}):
        if here is not None and agent not in here:
            for task in plan.tasks_for(agent):
                status = state.status(task.issue)
                if status in (FAILED, GATE_FAILED) and task.issue not in blocked:
                    blocked[task.issue] = (
                        f"it failed on agent {agent}'s host, whose next 'paradev run' starts it "
                        "again once the cause is fixed"
                    )
                elif status not in LANDED and task.issue not in blocked:
                    waiting[task.issue] = f"agent {agent} runs it on another host"
                    elsewhere.append(task.issue)
            continue
        ahead: Task | None = None  # the agent's first unfinished task (or the one overlapping it)
        overlapping = False
        for task in plan.tasks_for(agent):
            status = state.status(task.issue)
            if status in LANDED or task.issue in blocked:
                continue
            if ahead is not None:
                ahead_status = state.status(ahead.issue)
                started = status in (IN_PROGRESS, COMPLETED)
                may = overlap and not overlapping and ahead_status == COMPLETED
                if not may or (ahead.issue in held and not started):
                    waiting[task.issue] = _behind(ahead, ahead_status)
                    continue
                overlapping = True  # its previous task waits to land: it may go on meanwhile
                if ahead.issue in held and status == IN_PROGRESS:
                    landing.remove(ahead.issue)
                    waiting[ahead.issue] = (
                        f"held: it lands with #{task.issue} once agent {agent} is idle"
                    )
            ahead = task
            if status == IN_PROGRESS:
                running.append(task.issue)
            elif status == COMPLETED:
                landing.append(task.issue)
            elif (why := _waits_for(plan, state, task, schedule)) is not None:
                waiting[task.issue] = why
            else:
                ready.append(task)
    return Schedule(
        tuple(ready), tuple(running), tuple(landing), waiting, blocked, tuple(elsewhere)
    )


def _behind(ahead: Task, status: str) -> str:
    what = {IN_PROGRESS: "is working on", COMPLETED: "waits for the merge train to land"}
    doing = what.get(status, "takes first")
    return f"agent {ahead.agent} {doing} #{ahead.issue}"


def _waits_for(plan: Plan, state: State, task: Task, schedule: str) -> str | None:
    """What keeps ``task`` (its agent's next) from starting now; None: it may start."""
    deps = [d for d in task.depends_on if state.status(d) != MERGED]
    if deps:
        shown = ", ".join(f"#{d} ({state.status(d)})" for d in deps)
        return f"dependency {shown} to land"
    if schedule == BATCHES:
        earlier = _earlier_unlanded(plan, state, task)
        if earlier:
            shown = ", ".join(f"#{t.issue}" for t in earlier)
            return f"batch barrier: batch {earlier[0].batch!r} to land ({shown})"
    return None


def _earlier_unlanded(plan: Plan, state: State, task: Task) -> list[Task]:
    """The tasks of the last earlier batch that has not fully landed."""
    earlier: list[Task] = []
    for batch in plan.batches:
        if batch.name == task.batch:
            break
        left = [t for t in batch.tasks if state.status(t.issue) not in LANDED]
        earlier = left or earlier
    return earlier


def _stuck_issues(plan: Plan, state: State, here: Collection[int] | None) -> dict[int, str]:
    """Other hosts' completed tasks that no train lands until a person acts, each with why: a
    train stopped for a person, or the last train with their agent set it aside. A run that
    waited for them would wait for ever."""
    if here is None:
        return {}
    stopped = _stopped_for_a_person(state.train)
    found: dict[int, str] = {}
    for task in plan.tasks():
        record = state.tasks.get(task.issue)
        if task.agent in here or record is None or record.status != COMPLETED:
            continue
        why = stopped or _set_aside(state.merge_history, task.agent, record.completed_at)
        if why is not None:
            found[task.issue] = why
    return found


def _stopped_for_a_person(train: dict[str, Any] | None) -> str | None:
    """Why nothing lands until a person resolves the train; None while it goes on, or when
    the stopped agent's own host takes it up (a conflict handed back to it)."""
    if train is None or train.get("status") != "stopped":
        return None
    stop = train.get("stop") or {}
    if ((train.get("agents") or {}).get(str(stop.get("agent"))) or {}).get("handed_to"):
        return None
    return f"the merge train {train.get('id')} is stopped until a person resolves it"


def _set_aside(history: list[dict[str, Any]], agent: int, completed_at: str | None) -> str | None:
    """Why the newest train with ``agent`` in it left it out, unless its work completed since."""
    for train in reversed(history):
        if agent not in (train.get("order") or []):
            continue
        if agent not in (train.get("skipped") or []):
            return None
        if str(completed_at or "") > str(train.get("finished_at") or ""):
            return None  # completed again after that train: its next train tries it
        why = (train.get("skip_reasons") or {}).get(str(agent), "skipped")
        return f"the merge train {train.get('id')} set it aside: {why}"
    return None


def _blocked(
    plan: Plan, state: State, given_up: Collection[int], schedule: str, stuck: dict[int, str]
) -> dict[int, str]:
    """Tasks that cannot run in this run, each with why: their own failure, or one upstream;
    ``stuck``: another host's work that waits for a person, and why."""
    blocked: dict[int, str] = dict(stuck)
    for task in plan.tasks():
        if state.status(task.issue) == GATE_FAILED:
            blocked[task.issue] = "its gate failed; it was set aside"
        elif task.issue in given_up:
            blocked[task.issue] = "it failed in this run"
    changed = True
    while changed:  # dependencies may point forward in plan order: repeat until nothing moves
        changed = False
        for task in plan.tasks():
            if task.issue in blocked or state.status(task.issue) in LANDED:
                continue
            why = _upstream(plan, state, task, blocked, schedule)
            if why is not None:
                blocked[task.issue] = why
                changed = True
    return blocked


def _upstream(
    plan: Plan, state: State, task: Task, blocked: dict[int, str], schedule: str
) -> str | None:
    """Why ``task`` can never start in this run because of another task, if it cannot."""
    for dep in task.depends_on:
        if dep in blocked:
            return f"it depends on #{dep}, which cannot land in this run"
        if state.status(dep) == DROPPED:
            return f"it depends on dropped #{dep} (remove it from depends_on, or reopen #{dep})"
    for earlier in _before(plan.tasks_for(task.agent), task):
        if earlier.issue in blocked:
            return f"agent {task.agent}'s earlier task #{earlier.issue} cannot land in this run"
    if schedule == BATCHES:
        for earlier in _before(plan.tasks(), task):
            if earlier.batch != task.batch and earlier.issue in blocked:
                return f"batch {earlier.batch!r} cannot land in this run (#{earlier.issue})"
    return None


def _before(tasks: Iterable[Task], task: Task) -> list[Task]:
    found: list[Task] = []
    for other in tasks:
        if other.issue == task.issue:
            return found
        found.append(other)
    return found
