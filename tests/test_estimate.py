"""estimate: sequential vs parallel hours with the critical path, overhead, savings and cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from paradev import plan as plan_mod
from paradev.errors import PlanError
from paradev.estimate import estimate, render
from tests.helpers import Result

PLAN = """
[agents]
count = 2

[estimate]
overhead = 0.25
input_tokens = 1000000
output_tokens = 100000
input_price = 2.0
output_price = 10.0
currency = "EUR"

[[batches]]
name = "a"
  [[batches.tasks]]
  agent = 2
  issue = 3
  title = "waits for #1, on another agent"
  hours = 1.5
  depends_on = [1]
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "first"
  hours = 2.0
  [[batches.tasks]]
  agent = 1
  issue = 2
  title = "second, same agent"
  hours = 1.0

[[batches]]
name = "b"
  [[batches.tasks]]
  agent = 1
  issue = 4
  title = "later"
  hours = 1.0
"""


def parse(text: str) -> plan_mod.Plan:
    return plan_mod.parse(text, Path("plan.toml"))


def test_parallel_schedule_follows_agents_and_dependencies() -> None:
    result = estimate(parse(PLAN))

    first, second = result.batches
    # agent 1: #1 0-2h, #2 2-3h; agent 2: #3 waits for #1, 2-3.5h
    assert (first.name, first.hours, first.critical_path) == ("a", 3.5, [1, 3])
    assert first.agents == {1: 3.0, 2: 1.5}
    assert (second.hours, second.critical_path) == (1.0, [4])
    assert result.sequential_hours == 5.5
    assert result.overhead_hours == 0.5
    assert result.parallel_hours == 5.0
    assert result.saved_hours == 0.5
    assert result.saved_percent == pytest.approx(100 * 0.5 / 5.5)
    assert result.speedup == pytest.approx(1.1)


def test_cost_uses_the_configured_tokens_and_prices() -> None:
    cost = estimate(parse(PLAN)).cost
    assert cost.tasks == 4
    assert cost.input_tokens == 4_000_000
    assert cost.output_tokens == 400_000
    assert cost.total == 12.0  # 4M x 2/M + 0.4M x 10/M
    assert cost.currency == "EUR"


def test_an_empty_plan_saves_nothing() -> None:
    result = estimate(parse("[agents]\ncount = 1\n"))
    assert result.batches == []
    assert (result.sequential_hours, result.parallel_hours, result.saved_percent) == (0, 0, 0)
    assert result.speedup == 1.0


def test_render_names_every_figure() -> None:
    parsed = parse(PLAN)
    text = render(estimate(parsed), parsed)
    assert "#1 -> #3" in text
    assert "sequential (one task at a time):" in text
    assert "+0.5h" in text
    assert "0.5h (9%, 1.10x faster)" in text
    assert "12.00 EUR" in text


def test_estimate_settings_are_validated() -> None:
    with pytest.raises(PlanError) as caught:
        parse("[estimate]\noverhead = -1\ninput_price = 'free'\nspeed = 2\n")
    message = str(caught.value)
    assert "estimate.overhead: expected a finite number >= 0" in message
    assert "estimate.input_price: expected a finite number >= 0" in message
    assert "estimate.speed: unknown key" in message


def test_figures_too_large_to_add_up_are_a_plan_error_never_infinity_in_json(
    repo: Path, cli: Callable[..., Result]
) -> None:
    text = (repo / "plan.toml").read_text(encoding="utf-8")
    (repo / "plan.toml").write_text(
        "[estimate]\ninput_tokens = 1e308\ninput_price = 1e308\n" + text, encoding="utf-8"
    )
    result = cli("estimate", "--json")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        f"paradev: {repo / 'plan.toml'}: the estimate does not add up to a finite number; "
        "lower the [estimate] token and price figures\n"
    )


def test_estimate_command_prints_json_with_stable_keys(
    repo: Path, cli: Callable[..., Result]
) -> None:
    result = cli("estimate", "--json")

    assert result.code == 0, result.err
    data = result.json()
    assert data["sequential_hours"] == 6.5
    assert data["parallel_hours"] == 5.0  # 2h + 2h + 2 x 0.5h overhead
    assert data["saved_hours"] == 1.5
    assert [b["critical_path"] for b in data["batches"]] == [[11], [21]]
    assert data["batches"][0]["agents"] == {"1": 2.0, "2": 1.5, "3": 1.0}
    assert set(data["cost"]) >= {"tasks", "total", "currency"}
    human = cli("estimate")
    assert human.code == 0
    assert "time saved:" in human.out


def record_runs(repo: Path) -> None:
    """#11 ran 3h and reported $1.50; #12 ran 30 min and reported tokens only; #13 never ran."""
    from paradev.state import COMPLETED, FAILED
    from paradev.workspace import open_workspace

    with open_workspace(repo).store.update() as state:
        done = state.task(11, 1)
        done.status, done.started_at = COMPLETED, "2026-01-01T10:00:00+00:00"
        done.completed_at = "2026-01-01T13:00:00+00:00"
        done.cost_usd, done.tokens = 1.5, {"input": 1000, "output": 10}
        failed = state.task(12, 2)
        failed.status, failed.started_at = FAILED, "2026-01-01T10:00:00+00:00"
        failed.failed_at = "2026-01-01T10:30:00+00:00"
        failed.tokens = {"input": 500, "output": 5}


def test_estimate_sets_measured_hours_and_reported_cost_against_the_estimate(
    repo: Path, cli: Callable[..., Result]
) -> None:
    record_runs(repo)

    data = cli("estimate", "--json").json()

    first, second = data["actual"]["batches"]
    assert first == {
        "name": "first",
        "tasks": 3,
        "estimated_hours": 4.5,
        "actual_hours": 3.5,
        "measured": 2,
        "estimated_cost": round(data["cost"]["total"] / 4 * 3, 2),
        "actual_cost_usd": 1.5,
        "reported": 1,
        "tokens": {"input": 1500, "output": 15},
    }
    assert (second["measured"], second["actual_cost_usd"], second["reported"]) == (0, None, 0)
    total = data["actual"]["total"]
    assert (total["tasks"], total["estimated_hours"], total["actual_hours"]) == (4, 6.5, 3.5)
    assert (total["actual_cost_usd"], total["estimated_cost"]) == (1.5, data["cost"]["total"])


def test_estimate_prints_estimated_against_actual_per_batch_and_in_total(
    repo: Path, cli: Callable[..., Result]
) -> None:
    record_runs(repo)

    result = cli("estimate")

    assert result.code == 0, result.err
    table = result.out.split("estimated against actual")[1].splitlines()
    first = next(line for line in table if line.startswith("first "))
    second = next(line for line in table if line.startswith("second "))
    total = next(line for line in table if line.startswith("total "))
    assert first.split()[1:4] == ["4.5h", "3.5h", "(2/3)"]
    assert first.split()[-3:] == ["1.50", "USD", "(1/3)"]
    assert second.split()[1:4] == ["2.0h", "-", "(0/1)"]
    assert second.split()[-2:] == ["-", "(0/1)"]
    assert total.split()[1:4] == ["6.5h", "3.5h", "(2/4)"]
    assert "tokens reported: 1,500 in, 15 out" in result.out


def test_estimate_before_any_run_says_nothing_was_measured(
    repo: Path, cli: Callable[..., Result]
) -> None:
    data = cli("estimate", "--json").json()

    total = data["actual"]["total"]
    assert (total["measured"], total["actual_hours"], total["actual_cost_usd"]) == (0, 0, None)
