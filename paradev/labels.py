"""What each agent is doing, in one word, with the issues behind it.

``status``, ``conflicts`` and ``merge-order`` all name agents by state, so
the word comes from one place: an agent whose work has landed is "merged",
never "no work yet", and a failed one says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from paradev.plan import Plan, Task
from paradev.records import NamedTuple
from paradev.state import (
    COMPLETED,
    DROPPED,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MERGED,
    State,
)

WORKING, IDLE = "working", "idle"
# The label of an agent is its most pressing task state, in this order.
PRECEDENCE = (
    (IN_PROGRESS, WORKING),
    (FAILED, FAILED),
    (INTERRUPTED, INTERRUPTED),
    (COMPLETED, COMPLETED),
    (MERGED, MERGED),
    (DROPPED, DROPPED),
)
LABELS = (*(label for _, label in PRECEDENCE), IDLE)
WORKLESS = (IDLE, MERGED, DROPPED)  # labels under which an agent has nothing to land
ON_BRANCH = (IN_PROGRESS, COMPLETED, FAILED, INTERRUPTED)  # work begun and not landed


class AgentLabel(NamedTuple):
    """An agent's state word and the issues it stands for (in plan order).

    ``issues``: the tasks whose work is on the branch and not landed; for an
    agent with none, the tasks of its label (merged or dropped ones).
    """

    label: str
    issues: list[int]

    def to_json(self) -> dict[str, object]:
        return {"state": self.label, "issues": self.issues}


def agent_label(state: State, tasks: Sequence[Task]) -> AgentLabel:
    """The label of an agent with these ``tasks`` (its tasks of the plan, in plan order)."""
    statuses = [(task.issue, state.status(task.issue)) for task in tasks]
    present = {status for _, status in statuses}
    label = next((word for status, word in PRECEDENCE if status in present), IDLE)
    on_branch = [issue for issue, status in statuses if status in ON_BRANCH]
    if on_branch or label == IDLE:
        return AgentLabel(label, on_branch)
    wanted = MERGED if label == MERGED else DROPPED
    return AgentLabel(label, [issue for issue, status in statuses if status == wanted])


def agent_labels(plan: Plan, state: State) -> dict[int, AgentLabel]:
    """Every agent of the plan (1..agents.count) and its label, in one pass over the plan."""
    tasks: dict[int, list[Task]] = {agent: [] for agent in range(1, plan.agent_count + 1)}
    for task in plan.tasks():
        if task.agent in tasks:
            tasks[task.agent].append(task)
    return {agent: agent_label(state, own) for agent, own in tasks.items()}


def numbered(issues: Sequence[int]) -> str:
    """``#105, #107``."""
    return ", ".join(f"#{issue}" for issue in issues)


def who(agent: int, issues: Sequence[int] = ()) -> str:
    """``agent 2 (#105, #107)``: an agent with the issues it stands for."""
    numbers = numbered(issues)
    return f"agent {agent} ({numbers})" if numbers else f"agent {agent}"


def landing_candidates(state: State) -> list[int]:
    """The agents with a completed task not landed: the set a merge order is chosen among."""
    return sorted({r.agent for r in state.tasks.values() if r.status == COMPLETED})
