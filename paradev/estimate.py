"""``paradev estimate``: what running the plan in parallel saves, and what it really took.

Batches run one after another (a batch starts once the previous one is
merged). Inside a batch every agent works through its own tasks, all agents at
once, and a task also waits for the tasks of its batch it depends on; the
longest chain of waits is the batch's critical path. Each batch adds the
configured coordination overhead (conflicts, merge train, review).

Beside the estimate, ``actuals`` sets what the state measured (each task's
hours from start to completion) and what the agents reported they cost,
per batch and in total, against the same figures estimated.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from paradev.errors import PlanError
from paradev.plan import Batch, Plan, Task
from paradev.state import State, hours_between, task_end


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


# -- estimated against actual ----------------------------------------------------------------


@dataclass(frozen=True)
class Actual:
    """One batch (or the total): estimated against measured hours and reported cost."""

    name: str
    tasks: int
    estimated_hours: float  # the tasks' own estimates, summed (work, not elapsed)
    actual_hours: float  # the measured tasks, start to completion (or failure), summed
    measured: int  # tasks with a measured duration
    estimated_cost: float  # in the [estimate] currency
    actual_cost_usd: float | None  # as the agents reported it; None when none did
    reported: int  # tasks whose agent reported a cost
    tokens: dict[str, int]  # reported tokens, summed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def actuals(plan: Plan, state: State, cost: Cost) -> list[Actual]:
    """Each batch's estimated and actual figures; the last entry is the total ("total")."""
    each = cost.total / cost.tasks if cost.tasks else 0.0
    rows = [_actual(b.name, b.tasks, state, each) for b in plan.batches if b.tasks]
    return [*rows, _actual("total", tuple(plan.tasks()), state, each)]


def _actual(name: str, tasks: tuple[Task, ...], state: State, each: float) -> Actual:
    hours: list[float] = []
    costs: list[float] = []
    tokens = {"input": 0, "output": 0}
    for task in tasks:
        record = state.tasks.get(task.issue)
        if record is None:
            continue
        measured = hours_between(record.started_at, task_end(record))
        hours += [measured] if measured is not None else []
        costs += [record.cost_usd] if record.cost_usd is not None else []
        for key in tokens:
            tokens[key] += (record.tokens or {}).get(key, 0)
    return Actual(
        name=name,
        tasks=len(tasks),
        estimated_hours=sum(t.hours for t in tasks),
        actual_hours=sum(hours),
        measured=len(hours),
        estimated_cost=round(each * len(tasks), 2),
        actual_cost_usd=round(sum(costs), 4) if costs else None,
        reported=len(costs),
        tokens=tokens,
    )


def render_actuals(rows: list[Actual], currency: str) -> str:
    """The human table of ``actuals``: hours and cost, estimated against actual."""
    lines = [
        "estimated against actual (work hours run-batch measured; cost as agents reported it):",
        f"{'batch':<20} {'est. hours':>10} {'actual':>14} {'est. cost':>14} {'actual cost':>16}",
    ]
    for row in rows:
        actual = f"{row.actual_hours:.1f}h" if row.measured else "-"
        paid = f"{row.actual_cost_usd:,.2f} USD" if row.actual_cost_usd is not None else "-"
        lines.append(
            f"{row.name[:20]:<20} {row.estimated_hours:>9.1f}h "
            f"{actual + f' ({row.measured}/{row.tasks})':>14} "
            f"{row.estimated_cost:>10,.2f} {currency:<3} "
            f"{paid + f' ({row.reported}/{row.tasks})':>16}"
        )
    total = rows[-1] if rows else None
    if total is not None and any(total.tokens.values()):
        lines.append(
            f"tokens reported: {total.tokens['input']:,} in, {total.tokens['output']:,} out"
        )
    return "\n".join(lines)
