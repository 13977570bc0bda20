"""Benchmark: the report of 30 agents and 300 tasks: its size and how fast Chromium renders it.

A real repository with a plan of 300 tasks (10 per agent, each depending on
another agent's task of the batch before), a state where every task started,
completed and landed over a working day, 50 conflict snapshots of many
colliding pairs, and 10 trains of 30 landings each. Limits (issue 13): the
file is at most 2 MB and Chromium renders it (navigation start to the load
event, layout and paint included) within 1 s.

Run: ``.venv/bin/python bench/report.py [--agents N] [--tasks-per-agent K]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paradev.git import git_env  # noqa: E402
from paradev.report import write_report  # noqa: E402
from paradev.state import MERGED, State, TaskRecord  # noqa: E402
from paradev.workspace import open_workspace  # noqa: E402
from tests.browser import chromium, missing_reason  # noqa: E402

SIZE_LIMIT = 2 * 1024 * 1024
RENDER_LIMIT = 1.0
START = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def git(cwd: Path, *args: str) -> str:
    env = {**git_env(), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@paradev.invalid"]
    return subprocess.run(
        ["git", *identity, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def plan_text(agents: int, per_agent: int) -> str:
    lines = [
        "[project]",
        'base = "main"',
        "[agents]",
        f"count = {agents}",
        "[gate]",
        'command = ""',
    ]
    for batch in range(per_agent):
        lines += ["[[batches]]", f'name = "batch-{batch}"']
        for agent in range(1, agents + 1):
            issue = 1000 + batch * agents + agent
            lines += [
                "  [[batches.tasks]]",
                f"  agent = {agent}",
                f"  issue = {issue}",
                f'  title = "Task {issue}: change module {agent} <with> & \\"quotes\\""',
                f"  hours = {1 + (issue % 4) * 0.5}",
            ]
            if batch > 0:  # on another agent's task of the batch before, landed by then
                lines.append(f"  depends_on = [{issue - agents - 1 if agent > 1 else issue - 1}]")
    return "\n".join(lines) + "\n"


def stamp(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def fill_state(agents: int, per_agent: int, commit: str) -> State:
    state = State()
    for batch in range(per_agent):
        for agent in range(1, agents + 1):
            issue = 1000 + batch * agents + agent
            begin = batch * 50 + agent * 0.7
            state.tasks[issue] = TaskRecord(
                issue=issue,
                agent=agent,
                status=MERGED,
                started_at=stamp(begin),
                completed_at=stamp(begin + 30 + agent % 7),
                merged_at=stamp(begin + 45),
                base_commit=commit,
                head_commit=commit,
                merged_commit=commit,
            )
    state.conflict_snapshots = [snapshot(agents, n) for n in range(50)]
    state.merge_history = [train(agents, n, commit) for n in range(10)]
    return state


def snapshot(agents: int, n: int) -> dict[str, Any]:
    side = {"ours": [f"line {i} of ours" for i in range(8)], "theirs": ["theirs"] * 8}
    pairs = [
        {
            "agents": [a, a + step],
            "outcome": "conflict" if (a + n) % 3 == 0 else "overlap",
            "overlap": [f"src/module_{a}.py", "src/shared.py"],
            "conflicts": [
                {"path": "src/shared.py", "type": "content", "hunks": [[10, 30]], "sides": [side]}
            ]
            if (a + n) % 3 == 0
            else [],
        }
        for step in (1, 2)
        for a in range(1, agents + 1 - step)
    ]
    return {
        "at": stamp(n * 10),
        "last_seen": stamp(n * 10 + 5),
        "source": "train" if n % 5 == 0 else "conflicts",
        "train": None,
        "base": "main",
        "base_commit": "0" * 40,
        "agents": list(range(1, agents + 1)),
        "pairs": pairs,
        "against_base": [],
    }


def train(agents: int, n: int, commit: str) -> dict[str, Any]:
    def times(offset: float) -> dict[str, dict[str, str]]:
        return {
            step: {"start": stamp(offset + i), "end": stamp(offset + i + 0.5)}
            for i, step in enumerate(("backup", "rebase", "gate", "advance"))
        }

    order = list(range(1, agents + 1))
    return {
        "id": f"2026110{n}T120000Z",
        "status": "done",
        "base": "main",
        "base_start": commit,
        "started_at": stamp(n * 50),
        "finished_at": stamp(n * 50 + 40),
        "order": order,
        "landed": [{"agent": a, "commit": commit, "issues": [1000 + a]} for a in order],
        "skipped": [],
        "agents": {str(a): {"times": times(n * 50 + a)} for a in order},
        "stops": [],
    }


def build(root: Path, agents: int, per_agent: int) -> Path:
    repo = root / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "plan.toml").write_text(plan_text(agents, per_agent), encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "plan")
    ws = open_workspace(repo)
    with ws.store.update() as state:
        filled = fill_state(agents, per_agent, git(repo, "rev-parse", "HEAD"))
        state.tasks, state.conflict_snapshots = filled.tasks, filled.conflict_snapshots
        state.merge_history = filled.merge_history
    return repo


def render_seconds(report: Path, repeat: int) -> list[tuple[float, float]]:
    """(wall, busy) per load: navigation start to the load event, as Chromium's own timing
    reports it, and the renderer main thread's busy time (parse, style, layout, paint,
    script) from the DevTools performance metrics, which a loaded machine inflates less."""
    found = []
    with chromium() as browser:
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            devtools = page.context.new_cdp_session(page)
            devtools.send("Performance.enable")
            page.goto(report.as_uri(), wait_until="load")
            timing = json.loads(page.evaluate("JSON.stringify(performance.timing)"))
            metrics = devtools.send("Performance.getMetrics")["metrics"]
            busy = next(m["value"] for m in metrics if m["name"] == "TaskDuration")
            found.append(((timing["loadEventEnd"] - timing["navigationStart"]) / 1000, busy))
            page.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=30)
    parser.add_argument("--tasks-per-agent", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradev-bench-report-") as tmp:
        repo = build(Path(tmp), args.agents, args.tasks_per_agent)
        started = time.perf_counter()
        report = write_report(open_workspace(repo), Path(tmp) / "report.html")
        built = time.perf_counter() - started
        size = report.stat().st_size
        tasks = args.agents * args.tasks_per_agent
        print(f"report of {args.agents} agents, {tasks} tasks, 50 snapshots, 10 trains")
        print(f"  written by paradev in {built:.2f}s")
        print(f"  size:   {size / 1024 / 1024:.2f} MB (limit {SIZE_LIMIT / 1024 / 1024:.0f} MB)")
        reason = missing_reason()
        if reason is not None:
            print(f"  render: not measured: {reason}")
            return 1
        times = render_seconds(report, args.repeat)
        wall = statistics.median(t for t, _ in times)
        busy = statistics.median(b for _, b in times)
        load = os.getloadavg()[0]
        print(
            f"  render: {wall:.3f}s in Chromium, navigation to load event (limit {RENDER_LIMIT}s); "
            f"main thread busy {busy:.3f}s up to the first paint after it; median of {len(times)}"
        )
        print(
            f"  machine load average {load:.1f} on {os.cpu_count()} CPUs (wall time grows with it)"
        )
        return 0 if size <= SIZE_LIMIT and wall <= RENDER_LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
