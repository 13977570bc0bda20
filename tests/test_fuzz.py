"""Fuzzing the plan, state and merge-journal readers through the real command line.

Whatever the damage, a command exits 0 or 2, never with a traceback, and
an exit 2 starts with one line that says what is wrong (several problems:
that line counts them and the rest follow indented). The example count is
bounded and derandomized so CI runs the same few seconds every time; set
HYPOTHESIS_PROFILE=paradev-long for a deeper search.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzzing import FULL_PLAN, plan_inputs, state_inputs
from tests.helpers import Result, run_process

Cli = Callable[..., Result]

settings.register_profile(
    "paradev-ci",
    max_examples=20,
    derandomize=True,  # the same examples on every run: CI never flakes on a new one
    database=None,  # nothing written under the repository
    deadline=None,  # timing is bench/fuzz.py's business, never a test's
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "paradev-long", parent=settings.get_profile("paradev-ci"), max_examples=500
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "paradev-ci"))

PLAN_COMMANDS = (["status", "--json"], ["estimate"], ["start", "1"])
STATE_COMMANDS = (["status"], ["merge", "--dry-run"])
_COUNTED = re.compile(r"\d+ problems:$")


def assert_clean_outcome(result: Result, what: str) -> None:
    """Exit 0, or exit 2 with one first line saying what is wrong; never a traceback."""
    assert "Traceback" not in result.err, (what, result.err[-2000:])
    assert result.code in (0, 2), (what, result)
    if result.code == 0:
        return
    first, *rest = result.err.splitlines() or [""]
    assert first.startswith("paradev: ") and len(first) > len("paradev: ") + 10, (what, first)
    assert len(first) < 600, (what, first[:600])
    if rest:
        assert _COUNTED.search(first), (what, result.err[:2000])
        assert all(line.startswith("  - ") for line in rest), (what, result.err[:2000])


@pytest.fixture
def plan_file(repo: Path) -> Path:
    path = repo / "plan.toml"
    path.write_text(FULL_PLAN, encoding="utf-8")
    return path


@given(damaged=plan_inputs())
def test_a_damaged_plan_never_crashes_a_command(
    plan_file: Path, cli: Cli, damaged: tuple[str, bytes]
) -> None:
    kind, data = damaged
    plan_file.write_bytes(data)
    for command in PLAN_COMMANDS:
        assert_clean_outcome(cli(*command), f"{kind} plan, {command}")


@given(damaged=state_inputs())
def test_a_damaged_state_or_journal_never_crashes_a_command(
    plan_file: Path, repo: Path, cli: Cli, damaged: tuple[str, bytes]
) -> None:
    kind, data = damaged
    path = repo / ".git" / "paradev" / "state.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    for command in STATE_COMMANDS:
        assert_clean_outcome(cli(*command), f"{kind} state, {command}")


# The worst of each family, as a real process: exit code and stderr exactly as a user sees them.
WORST_PLANS = {
    "nesting": FULL_PLAN.replace("timeout = 600", "timeout = " + "[" * 6000),
    "huge-int": FULL_PLAN.replace("count = 3", "count = 1" + "0" * 5000),
    "billion-agents": FULL_PLAN.replace("count = 3", "count = 1_000_000_000"),
    "nul": FULL_PLAN.replace("echo started", "echo \0started"),
    "long-issue": FULL_PLAN.replace("issue = 13", "issue = " + "7" * 261),
}
WORST_STATES = {
    "nesting": '{"version": 1, "train": ' + "[" * 6000 + "]" * 6000 + "}",
    "huge-int": '{"version": 1, "merge_order": [' + "9" * 5000 + "]}",
    "nul-bytes": '{"version": 1, "updated_at": "\0\0"}',
}


@pytest.mark.parametrize("name", WORST_PLANS)
def test_the_worst_plans_as_real_processes(repo: Path, name: str) -> None:
    (repo / "plan.toml").write_text(WORST_PLANS[name], encoding="utf-8")
    result = run_process(repo, "status", timeout=60)
    assert result.code == 2
    assert_clean_outcome(result, name)


@pytest.mark.parametrize("name", WORST_STATES)
def test_the_worst_states_as_real_processes(repo: Path, name: str) -> None:
    path = repo / ".git" / "paradev" / "state.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(WORST_STATES[name], encoding="utf-8")
    result = run_process(repo, "status", timeout=60)
    assert result.code == 2
    assert_clean_outcome(result, name)
    assert "is corrupt" in result.err
