"""``paradev report``: one self-contained HTML page of conflicts, schedule and merge train.

The page carries its own CSS, SVG and a few lines of plain script: it opens
from ``file://`` with no network (its Content-Security-Policy forbids any).
Jinja2 renders it with autoescaping on, since titles, paths and log lines
can hold anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paradev import git as gitmod
from paradev.atomic import write_atomic
from paradev.conflicts import analyze
from paradev.errors import PreconditionError
from paradev.estimate import estimate
from paradev.report.data import (
    Landing,
    TrainView,
    actuals,
    conflict_matrix,
    timeline,
    trains,
)
from paradev.snapshots import record_scan
from paradev.workspace import Workspace

if TYPE_CHECKING:
    from jinja2 import Environment

REPORT_FILE = "report.html"


def default_output(ws: Workspace) -> Path:
    """Beside the state, never inside a work tree: it must not show up as an untracked file."""
    return ws.repo.common_dir / "paradev" / REPORT_FILE


def build_report(ws: Workspace, moment: datetime | None = None) -> str:
    """The report's HTML, from the plan, the state and git."""
    when = moment or datetime.now(UTC)
    state = ws.store.read()
    plan = ws.plan
    result = estimate(plan)
    critical = [issue for batch in result.batches for issue in batch.critical_path]
    agents = list(range(1, plan.agent_count + 1))
    views = trains(state)
    _add_stats(ws, views)
    context: dict[str, Any] = {
        "project": ws.repo.name,
        "base": plan.base,
        "generated": when.isoformat(timespec="seconds"),
        "agents": agents,
        "branches": {agent: plan.branch(agent) for agent in agents},
        "matrix": conflict_matrix(agents, state.conflict_snapshots),
        "timeline": timeline(plan, state, critical, when),
        "trains": views,
        "actuals": actuals(plan, state, result),
    }
    html: str = _environment().get_template("report.html.j2").render(context)
    return html


def write_report(ws: Workspace, output: Path | None = None) -> Path:
    """Scan the branches, then write the report (default: ``<git common dir>/paradev/report.html``).

    The scan is recorded like any other, so the page shows what collides now
    beside the worst ever seen; with hosts, it reads the remote's agent
    branches, as ``conflicts`` does.
    """
    from paradev.hosts import fetch_pushed

    path = (output or default_output(ws)).resolve()
    fetch_pushed(ws.plan, ws.git)  # [agents] hosts: every host's agents, as pushed
    record_scan(ws, analyze(ws), "report")
    html = build_report(ws)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, html, durable=False)
    except OSError as exc:
        raise PreconditionError(
            f"cannot write the report to {path}: {exc.strerror or exc}; "
            "pick another place with --output FILE"
        ) from None
    return path


def _add_stats(ws: Workspace, views: list[TrainView]) -> None:
    """Each landing's commits and diff stats: from the previous landing (or base) to its commit."""
    wanted: list[tuple[Landing, tuple[str, str]]] = []
    for view in views:
        previous = view.base_start
        for landing in view.landings:
            if landing.commit and previous:
                wanted.append((landing, (previous, landing.commit)))
            previous = landing.commit or previous
    if not wanted:
        return
    found = gitmod.range_stats(ws.repo.main_root, [pair for _, pair in wanted])
    for (landing, _), stats in zip(wanted, found, strict=True):
        landing.stats = stats


def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("paradev.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = duration
    env.filters["hours"] = hours
    return env


def hours(value: float | None) -> str:
    """Hours with two decimals; under six minutes, the duration itself (demo runs take seconds)."""
    if value is None:
        return "-"
    return f"{value:.2f}h" if value >= 0.1 else duration(value * 3600)


def duration(seconds: float | None) -> str:
    """``75.0`` -> ``1m 15s``; a missing figure is a dash."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
