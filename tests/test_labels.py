"""One word per agent: the most pressing state of its tasks, with the issues behind it."""

from __future__ import annotations

import pytest

from paradev.labels import AgentLabel, agent_label, landing_candidates, who
from paradev.plan import Task
from paradev.state import State, TaskRecord

TASKS = [Task(agent=1, issue=issue, title=f"t{issue}", hours=1, batch="b") for issue in (1, 2, 3)]


def state_with(**statuses: str) -> State:
    """A state whose tasks #1..#3 have the given statuses (``s1="merged"``...)."""
    state = State()
    for key, status in statuses.items():
        issue = int(key[1:])
        state.tasks[issue] = TaskRecord(issue=issue, agent=1, status=status)
    return state


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ({}, AgentLabel("idle", [])),
        ({"s1": "assigned"}, AgentLabel("idle", [])),
        ({"s1": "merged", "s2": "in_progress"}, AgentLabel("working", [2])),
        ({"s1": "completed", "s2": "failed"}, AgentLabel("failed", [1, 2])),
        ({"s1": "interrupted", "s2": "completed"}, AgentLabel("interrupted", [1, 2])),
        ({"s1": "merged", "s2": "completed"}, AgentLabel("completed", [2])),
        ({"s1": "merged", "s2": "merged", "s3": "planned"}, AgentLabel("merged", [1, 2])),
        ({"s1": "dropped", "s2": "merged"}, AgentLabel("merged", [2])),
        ({"s1": "dropped"}, AgentLabel("dropped", [1])),
    ],
)
def test_the_label_is_the_most_pressing_state(
    statuses: dict[str, str], expected: AgentLabel
) -> None:
    assert agent_label(state_with(**statuses), TASKS) == expected


def test_landing_candidates_are_agents_with_completed_work() -> None:
    state = state_with(s1="completed", s2="merged")
    state.tasks[9] = TaskRecord(issue=9, agent=4, status="completed")
    assert landing_candidates(state) == [1, 4]


def test_who_names_the_issues_beside_the_agent() -> None:
    assert who(2, [105, 107]) == "agent 2 (#105, #107)"
    assert who(3) == "agent 3"
