"""Gathering the report: the plan, the state, git's diff stats, laid out for the template.

Everything here is plain data (numbers, strings, lists); the template only
places it. Positions for the SVG timeline are computed here so the page
needs no script to draw.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from paradev.estimate import Estimate
from paradev.git import RangeStats
from paradev.plan import Plan, Task
from paradev.state import State, hours_between, parse_time, task_end
from paradev.text import log_line

RANK = {"none": 0, "clean": 1, "overlap": 2, "conflict": 3}
LABELS = {"none": "-", "clean": "clean", "overlap": "overlap", "conflict": "CONFLICT"}
TAIL_LINES = 20  # lines of a gate log shown
TAIL_BYTES = 64 * 1024  # read from a gate log's end for them


# -- conflict matrix --------------------------------------------------------------------------


@dataclass
class Cell:
    """One pair of the heat map: its worst outcome ever seen, and what it was."""

    key: str  # "1-2", or "1-base"
    outcome: str  # none | clean | overlap | conflict
    files: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    first_seen: str = ""
    last_seen: str = ""
    source: str = ""
    now: str = "none"  # the outcome in the latest snapshot

    @property
    def now_label(self) -> str:
        """``now: clean`` where the latest snapshot differs from the worst one."""
        if self.now == self.outcome:
            return ""
        return "now: " + (LABELS[self.now] if self.now != "none" else "no work")

    @property
    def label(self) -> str:
        return LABELS[self.outcome]

    @property
    def has_details(self) -> bool:
        return self.outcome in ("overlap", "conflict")


@dataclass
class Matrix:
    agents: list[int]
    cells: dict[str, Cell]
    snapshots: list[dict[str, Any]]

    def cell(self, left: int, right: int | str) -> Cell:
        key = _key(left, right)
        return self.cells.get(key) or Cell(key, "none")

    @property
    def details(self) -> list[Cell]:
        return [c for c in self.cells.values() if c.has_details]


def _key(left: int, right: int | str) -> str:
    if isinstance(right, str):
        return f"{left}-{right}"
    return f"{min(left, right)}-{max(left, right)}"


def conflict_matrix(agents: list[int], snapshots: Sequence[dict[str, Any]]) -> Matrix:
    """Per pair (and per agent against base) the worst outcome over every snapshot, and now."""
    cells: dict[str, Cell] = {}
    for snap in snapshots:
        for found in _cells_of(snap):
            _see(cells, found, snap)
    latest = {cell.key: cell.outcome for cell in _cells_of(snapshots[-1])} if snapshots else {}
    for cell in cells.values():
        cell.now = latest.get(cell.key, "none")
    return Matrix(agents, cells, list(snapshots))


def _cells_of(snap: Mapping[str, Any]) -> list[Cell]:
    """What one snapshot says of each pair; a later cell of the same key overrides (clean first)."""
    seen = sorted(snap.get("agents", []))
    found = [Cell(_key(a, b), "clean") for a in seen for b in seen if a < b]
    found += [Cell(_key(a, "base"), "clean") for a in seen]
    for pair in snap.get("pairs", []):
        found.append(
            Cell(
                _key(*pair["agents"]),
                pair["outcome"],
                files=list(pair.get("overlap", [])),
                conflicts=list(pair.get("conflicts", [])),
            )
        )
    for entry in snap.get("against_base", []):
        found.append(
            Cell(
                _key(entry["agent"], "base"),
                "conflict",
                files=[c["path"] for c in entry.get("conflicts", [])],
                conflicts=list(entry.get("conflicts", [])),
            )
        )
    return found


def _see(cells: dict[str, Cell], found: Cell, snap: Mapping[str, Any]) -> None:
    """Keep the worse of what ``cells`` holds and ``found``; the latest details of the worst."""
    found.first_seen = found.last_seen = str(snap.get("at", ""))
    found.last_seen = str(snap.get("last_seen", found.first_seen))
    found.source = str(snap.get("source", ""))
    known = cells.get(found.key)
    if known is None or RANK[found.outcome] > RANK[known.outcome]:
        cells[found.key] = found
    elif RANK[found.outcome] == RANK[known.outcome]:
        found.first_seen = known.first_seen
        cells[found.key] = found


# -- timeline ---------------------------------------------------------------------------------

LANE = 56  # px per agent lane
LEFT = 90  # px for lane labels
WIDTH = 1000  # px of the time axis
RIGHT = 40  # px after the axis: half of its last tick's label
TOP = 30  # px for the axis labels
CHAR = 6.2  # px a character of a 10px label takes, at most (digits, DejaVu Sans)
CRITICAL_SHOWN = 12  # issues of the critical path named in the text; more are counted


@dataclass
class Bar:
    issue: int
    agent: int
    title: str
    planned: float
    x: float
    work_width: float
    land_width: float
    y: float
    critical: bool
    status: str
    actual: float | None
    caption: str = ""  # the text under the bar: as much as fits before the next bar

    @property
    def end(self) -> float:
        return self.x + self.work_width + self.land_width

    @property
    def label(self) -> str:
        actual = f", {self.actual:.2f}h actual" if self.actual is not None else ""
        star = " (critical path)" if self.critical else ""
        return f"#{self.issue} {self.title} ({self.planned:g}h planned{actual}){star}"


@dataclass
class Arrow:
    path: str
    critical: bool
    text: str


@dataclass
class Timeline:
    agents: list[int]
    bars: list[Bar]
    arrows: list[Arrow]
    ticks: list[tuple[float, str]]
    height: float
    width: float
    critical_path: list[int]
    unstarted: list[Task]

    @property
    def lanes(self) -> list[tuple[int, float]]:
        return [(agent, TOP + index * LANE) for index, agent in enumerate(self.agents)]

    @property
    def critical_text(self) -> str:
        """``#1 → #2 → #3``; a long path names its first issues and counts the rest."""
        shown = " → ".join(f"#{issue}" for issue in self.critical_path[:CRITICAL_SHOWN])
        left = len(self.critical_path) - CRITICAL_SHOWN
        return f"{shown} → … ({left} more)" if left > 0 else shown


def timeline(plan: Plan, state: State, critical: Iterable[int], moment: datetime) -> Timeline:
    """One lane per agent on one wall-clock axis; bars from the state's timestamps."""
    agents = list(range(1, plan.agent_count + 1))
    critical_set = set(critical)
    spans: dict[int, tuple[datetime, datetime, datetime]] = {}
    unstarted: list[Task] = []
    for task in plan.tasks():
        record = state.tasks.get(task.issue)
        start = parse_time(record.started_at) if record else None
        if record is None or start is None:
            unstarted.append(task)
            continue
        done = parse_time(task_end(record)) or moment
        landed = parse_time(record.merged_at) or done
        spans[task.issue] = (start, max(done, start), max(landed, done, start))
    if not spans:
        return Timeline(
            agents, [], [], [], TOP + LANE * len(agents), LEFT + WIDTH + RIGHT, [], unstarted
        )
    first = min(s[0] for s in spans.values())
    last = max(s[2] for s in spans.values())
    total = max((last - first).total_seconds(), 1.0)

    def x_of(moment_: datetime) -> float:
        return LEFT + WIDTH * (moment_ - first).total_seconds() / total

    lane_y = {agent: TOP + index * LANE for index, agent in enumerate(agents)}
    bars: dict[int, Bar] = {}
    for task in plan.tasks():
        if task.issue not in spans:
            continue
        start, done, landed = spans[task.issue]
        record = state.tasks[task.issue]
        bars[task.issue] = Bar(
            issue=task.issue,
            agent=task.agent,
            title=task.title,
            planned=task.hours,
            x=round(x_of(start), 1),
            work_width=round(max(x_of(done) - x_of(start), 2.0), 1),
            land_width=round(x_of(landed) - x_of(done), 1),
            y=lane_y.get(task.agent, TOP) + 8,
            critical=task.issue in critical_set,
            status=record.status,
            actual=hours_between(record.started_at, task_end(record)),
        )
    arrows = _arrows(plan, bars, critical_set)
    _fit_captions(list(bars.values()), LEFT + WIDTH + RIGHT)
    return Timeline(
        agents=agents,
        bars=list(bars.values()),
        arrows=arrows,
        ticks=_ticks(first, last, x_of),
        height=TOP + LANE * len(agents) + 10,
        width=LEFT + WIDTH + RIGHT,
        critical_path=list(critical),
        unstarted=unstarted,
    )


def _fit_captions(bars: list[Bar], right: float) -> None:
    """Each bar's caption, as long as fits before the next bar of its lane starts.

    Many short tasks on one lane would otherwise print their labels over one
    another; the bar's tooltip always holds everything.
    """
    lanes: dict[float, list[Bar]] = {}
    for bar in bars:
        lanes.setdefault(bar.y, []).append(bar)
    for lane in lanes.values():
        lane.sort(key=lambda bar: bar.x)
        ends = [after.x for after in lane[1:]] + [right]
        for bar, end in zip(lane, ends, strict=True):
            room = end - bar.x - 6
            star = " ★" if bar.critical else ""
            texts = (
                f"#{bar.issue} {bar.planned:g}h planned{' ★ critical' if bar.critical else ''}",
                f"#{bar.issue} {bar.planned:g}h{star}",
                f"#{bar.issue}",
            )
            bar.caption = next((text for text in texts if len(text) * CHAR <= room), "")


def _arrows(plan: Plan, bars: Mapping[int, Bar], critical: set[int]) -> list[Arrow]:
    """depends_on: from the end of the dependency's bar to the start of the dependent's."""
    arrows: list[Arrow] = []
    for task in plan.tasks():
        target = bars.get(task.issue)
        if target is None:
            continue
        for dep in task.depends_on:
            source = bars.get(dep)
            if source is None:
                continue
            x1, y1 = source.end, source.y + 10
            x2, y2 = target.x, target.y + 10
            middle = (x1 + x2) / 2
            arrows.append(
                Arrow(
                    path=f"M{x1:.1f},{y1:.1f} C{middle:.1f},{y1:.1f} "
                    f"{middle:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
                    critical=dep in critical and task.issue in critical,
                    text=f"#{task.issue} depends on #{dep}",
                )
            )
    return arrows


def _ticks(
    first: datetime, last: datetime, x_of: Callable[[datetime], float]
) -> list[tuple[float, str]]:
    """About six round-numbered wall-clock ticks."""
    span = max((last - first).total_seconds(), 1.0)
    steps = (1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)
    step = next((s for s in steps if span / s <= 6), 86400 * math.ceil(span / 86400 / 6))
    tick = datetime.fromtimestamp(math.ceil(first.timestamp() / step) * step, UTC)
    shown = "%H:%M:%S" if step < 60 else ("%H:%M" if step < 86400 else "%Y-%m-%d")
    ticks = []
    while tick <= last:
        ticks.append((round(x_of(tick), 1), tick.strftime(shown)))
        tick += timedelta(seconds=step)
    return ticks


# -- the merge train --------------------------------------------------------------------------


@dataclass
class Landing:
    """One agent in one train: how long each step took and how it ended."""

    agent: int
    outcome: str  # landed | skipped | stopped | waiting
    why: str
    rebase: float | None
    gate: float | None
    landing: float | None
    commit: str
    issues: list[int]
    gate_log: str
    gate_exit: int | None
    gate_tail: str
    resolved: list[str] = field(default_factory=list)  # paths whose rebase conflict was resolved
    stats: RangeStats | None = None  # filled in from git by the report


@dataclass
class TrainView:
    id: str
    status: str
    base: str
    base_start: str
    started_at: str
    finished_at: str
    landings: list[Landing]
    stops: list[dict[str, Any]]


def trains(state: State) -> list[TrainView]:
    """Every finished train, then the one in progress (stopped or running), newest last."""
    views = [_train_view(entry, entry.get("status", "done")) for entry in state.merge_history]
    if state.train is not None:
        views.append(_train_view(state.train, str(state.train.get("status", "running"))))
    return views


def _train_view(journal: Mapping[str, Any], status: str) -> TrainView:
    agents: Mapping[str, Any] = journal.get("agents", {})
    landed = {e["agent"]: e for e in journal.get("landed", [])}
    skipped = set(journal.get("skipped", []))
    stop = journal.get("stop") if status == "stopped" else None
    stops = list(journal.get("stops", []))
    if stop and stop not in stops:
        stops.append(stop)
    landings = [
        _landing(agent, agents.get(str(agent), {}), landed.get(agent), agent in skipped, stop)
        for agent in journal.get("order", [])
    ]
    return TrainView(
        id=str(journal.get("id", "")),
        status=status,
        base=str(journal.get("base", "")),
        base_start=str(journal.get("base_start") or ""),
        started_at=str(journal.get("started_at") or ""),
        finished_at=str(journal.get("finished_at") or ""),
        landings=landings,
        stops=stops,
    )


def _landing(
    agent: int,
    entry: Mapping[str, Any],
    landed: Mapping[str, Any] | None,
    skipped: bool,
    stop: Mapping[str, Any] | None,
) -> Landing:
    times: Mapping[str, Mapping[str, str]] = entry.get("times", {})
    stopped_here = stop is not None and stop.get("agent") == agent
    if landed is not None:
        outcome, why = "landed", ""
    elif stopped_here:
        assert stop is not None
        outcome, why = "stopped", str(stop.get("reason", ""))
    elif skipped:
        outcome, why = "skipped", ""
    else:
        outcome, why = "waiting", ""
    gate_end = _end_of(times, "gate", stop if stopped_here else None)
    log = str(entry.get("gate_log", ""))
    return Landing(
        agent=agent,
        outcome=outcome,
        why=why,
        rebase=_seconds(times, "rebase", _end_of(times, "rebase", stop if stopped_here else None)),
        gate=_seconds(times, "gate", gate_end),
        landing=_span(times.get("backup", {}).get("start"), times.get("advance", {}).get("end")),
        commit=str((landed or {}).get("commit", "")),
        issues=list((landed or {}).get("issues", [])),
        gate_log=log,
        gate_exit=entry.get("gate_exit"),
        gate_tail=gate_tail(Path(log)) if log else "",
        resolved=[str(path) for path in entry.get("resolved", [])],
    )


def _end_of(
    times: Mapping[str, Mapping[str, str]], step: str, stop: Mapping[str, Any] | None
) -> str | None:
    end = times.get(step, {}).get("end")
    if end is None and stop is not None:
        return str(stop.get("at"))
    return end


def _seconds(times: Mapping[str, Mapping[str, str]], step: str, end: str | None) -> float | None:
    return _span(times.get(step, {}).get("start"), end)


def _span(start: str | None, end: str | None) -> float | None:
    hours = hours_between(start, end)
    return None if hours is None else hours * 3600


def gate_tail(log: Path, lines: int = TAIL_LINES) -> str:
    """The log's last lines as a page shows them; only its end is read (logs grow large)."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - TAIL_BYTES, 0))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(log_line(line) for line in text.rstrip("\n").split("\n")[-lines:])


# -- estimate against actual ------------------------------------------------------------------


@dataclass
class TaskRow:
    issue: int
    agent: int
    title: str
    status: str
    planned: float
    actual: float | None
    cost: float | None
    tokens: str
    critical: bool


@dataclass
class Actuals:
    rows: list[TaskRow]
    planned_hours: float
    actual_hours: float
    wall_clock_hours: float | None
    estimate: Estimate
    actual_cost: float | None


def actuals(plan: Plan, state: State, estimate: Estimate) -> Actuals:
    """Per task: planned against actual hours and cost; the totals beside the estimate's."""
    critical = {issue for batch in estimate.batches for issue in batch.critical_path}
    rows: list[TaskRow] = []
    starts: list[datetime] = []
    ends: list[datetime] = []
    for task in plan.tasks():
        record = state.tasks.get(task.issue)
        actual = hours_between(record.started_at, task_end(record)) if record else None
        if record is not None:
            starts += [t for t in [parse_time(record.started_at)] if t]
            ends += [t for t in [parse_time(record.merged_at or task_end(record))] if t]
        rows.append(
            TaskRow(
                issue=task.issue,
                agent=task.agent,
                title=task.title,
                status=record.status if record else "planned",
                planned=task.hours,
                actual=actual,
                cost=record.cost_usd if record else None,
                tokens=_tokens(record.tokens if record else None),
                critical=task.issue in critical,
            )
        )
    costs = [row.cost for row in rows if row.cost is not None]
    return Actuals(
        rows=rows,
        planned_hours=sum(row.planned for row in rows),
        actual_hours=sum(row.actual or 0.0 for row in rows),
        wall_clock_hours=(max(ends) - min(starts)).total_seconds() / 3600
        if starts and ends
        else None,
        estimate=estimate,
        actual_cost=sum(costs) if costs else None,
    )


def _tokens(value: Any) -> str:
    if not isinstance(value, Mapping):
        return ""
    return f"{value.get('input', 0):,} in / {value.get('output', 0):,} out"
