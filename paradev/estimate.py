"""``paradev estimate``: what running the plan in parallel saves, from the plan alone.

Batches run one after another (a batch starts once the previous one is
merged). Inside a batch every agent works through its own tasks, all agents at
once, and a task also waits for the tasks of its batch it depends on; the
longest chain of waits is the batch's critical path. Each batch adds the
configured coordination overhead (conflicts, merge train, review).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from paradev.errors import PlanError
from paradev.plan import Batch, Plan, Task


@dataclass(frozen=True)
class BatchEstimate:
    name: str
    hours: float  # from the batch's start to its last task's end
    critical_path: list[int]  # issues, first to last
    agents: dict[int, float]  # agent -> hours of work in this batch


@dataclass(frozen=True)
class Cost:
    tasks: int
    input_tokens: float
    output_tokens: float
    input_price: float  # per million tokens
    output_price: float
    total: float
    currency: str


@dataclass(frozen=True)
class Estimate:
    sequential_hours: float
    parallel_hours: float  # critical paths plus overhead
    overhead_hours: float
    saved_hours: float
    saved_percent: float
    speedup: float
    batches: list[BatchEstimate]
    cost: Cost

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for batch in data["batches"]:
            batch["agents"] = {str(k): v for k, v in batch["agents"].items()}
        return data


def schedule_batch(batch: Batch) -> BatchEstimate:
    """List scheduling: each task starts when its agent is free and its in-batch deps are done."""
    inside = {t.issue for t in batch.tasks}
    finish: dict[int, float] = {}
    waited_for: dict[int, int | None] = {}  # issue -> the task that decided its start
    agent_last: dict[int, Task] = {}
    remaining = list(batch.tasks)
    while remaining:  # plan validation rules out cycles, so a task is always ready
        task = next(t for t in remaining if all(d in finish for d in _deps(t, inside)))
        remaining.remove(task)
        candidates = [d for d in _deps(task, inside)]
        if task.agent in agent_last:
            candidates.append(agent_last[task.agent].issue)
        before = max(candidates, key=lambda issue: finish[issue], default=None)
        start = finish[before] if before is not None else 0.0
        finish[task.issue] = start + task.hours
        waited_for[task.issue] = before
        agent_last[task.agent] = task
    end = max(finish, key=lambda issue: finish[issue], default=None)
    path: list[int] = []
    while end is not None:
        path.append(end)
        end = waited_for[end]
    agents: dict[int, float] = {}
    for task in batch.tasks:
        agents[task.agent] = agents.get(task.agent, 0.0) + task.hours
    return BatchEstimate(
        name=batch.name,
        hours=max(finish.values(), default=0.0),
        critical_path=path[::-1],
        agents=dict(sorted(agents.items())),
    )


def _deps(task: Task, inside: set[int]) -> list[int]:
    return [d for d in task.depends_on if d in inside]


def estimate(plan: Plan) -> Estimate:
    settings = plan.section("estimate")
    batches = [schedule_batch(b) for b in plan.batches if b.tasks]
    sequential = sum(t.hours for t in plan.tasks())
    overhead = float(settings["overhead"]) * len(batches)
    parallel = sum(b.hours for b in batches) + overhead
    saved = sequential - parallel
    cost = _cost(plan, settings)
    if not all(math.isfinite(x) for x in (sequential, parallel, cost.total)):
        raise PlanError(
            f"{plan.path}: the estimate does not add up to a finite number; "
            "lower the [estimate] token and price figures"
        )
    return Estimate(
        sequential_hours=sequential,
        parallel_hours=parallel,
        overhead_hours=overhead,
        saved_hours=saved,
        saved_percent=100.0 * saved / sequential if sequential else 0.0,
        speedup=sequential / parallel if parallel else 1.0,
        batches=batches,
        cost=cost,
    )


def _cost(plan: Plan, settings: dict[str, Any]) -> Cost:
    tasks = sum(1 for _ in plan.tasks())
    input_tokens = float(settings["input_tokens"]) * tasks
    output_tokens = float(settings["output_tokens"]) * tasks
    input_price, output_price = float(settings["input_price"]), float(settings["output_price"])
    total = (input_tokens * input_price + output_tokens * output_price) / 1_000_000
    return Cost(
        tasks=tasks,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        input_price=input_price,
        output_price=output_price,
        total=round(total, 2),
        currency=str(settings["currency"]),
    )


def render(result: Estimate, plan: Plan) -> str:
    """The human view of ``estimate``."""
    lines = [f"{'batch':<20} {'hours':>7}  critical path / agents"]
    for batch in result.batches:
        path = " -> ".join(f"#{issue}" for issue in batch.critical_path)
        agents = ", ".join(f"agent {a}: {h:g}h" for a, h in batch.agents.items())
        lines.append(f"{batch.name:<20} {batch.hours:>6.1f}h  {path}  ({agents})")
    per_batch = float(plan.section("estimate")["overhead"])
    cost = result.cost
    each = max(cost.tasks, 1)
    figures = [
        ("sequential (one task at a time)", f"{result.sequential_hours:.1f}h"),
        (
            "parallel (critical path per batch)",
            f"{result.parallel_hours - result.overhead_hours:.1f}h",
        ),
        (f"coordination overhead ({per_batch:g}h per batch)", f"+{result.overhead_hours:.1f}h"),
        ("parallel total", f"{result.parallel_hours:.1f}h"),
        (
            "time saved",
            f"{result.saved_hours:.1f}h ({result.saved_percent:.0f}%, "
            f"{result.speedup:.2f}x faster)",
        ),
        (
            f"cost ({cost.tasks} tasks x {cost.input_tokens / each:,.0f} in + "
            f"{cost.output_tokens / each:,.0f} out tokens)",
            f"{cost.total:,.2f} {cost.currency}",
        ),
    ]
    width = max(len(label) for label, _ in figures) + 2
    lines.append("")
    lines += [f"{label + ':':<{width}} {value}" for label, value in figures]
    return "\n".join(lines)
