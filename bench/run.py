"""Benchmark: ``paradev run`` makespan, "flow" and "batches", next to the lower bound.

A generated plan of 12 tasks on 4 agents (3 batches of 4) with dependency
chains across agents; scripted agents sleep their task's hours (1 h = 0.2 s)
and commit a real change to a file of their own; the gate sleeps 0.2 s. The
lower bound is the largest of: the longest dependency chain including a gate
per task on it, each agent's own total, and the total gate time divided by
``merge.parallel``. Target: flow <= 1.2x the bound. Beside it, the limit on this
machine: ``bench/plain_run.py``, a plain script running the same plan with raw
git (launch, rebase, gate, fast-forward, and nothing else).

Run: ``.venv/bin/python bench/run.py [--repeat R] [--parallel P] [--timeline]``;
``--timeline`` prints one flow run's events with the second each came (where
the time goes: launches, agents, train start-up, gates, landings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.merge import ENV, git

SCALE = 0.2  # seconds per plan hour
GATE = 0.2  # seconds per gate run
TARGET = 1.2
# (agent, issue, hours, depends_on) in plan order, three batches of four
TASKS = [
    [(1, 1, 2.0, ()), (2, 2, 1.0, ()), (3, 3, 3.0, ()), (4, 4, 1.0, ())],
    [(1, 5, 1.0, ()), (2, 6, 2.0, (1,)), (3, 7, 1.0, (2,)), (4, 8, 2.0, (3,))],
    [(1, 9, 3.0, (6,)), (2, 10, 1.0, (7,)), (3, 11, 2.0, ()), (4, 12, 1.0, (8, 5))],
]

AGENT = r"""
import os, subprocess, sys, time
from pathlib import Path
hours = {hours}
issue = os.environ["PARADEV_ISSUE"]
time.sleep(hours[issue] * {scale})
Path(f"work-{{issue}}.txt").write_text(f"issue {{issue}}\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"feat: work on #{{issue}}"], check=True)
print(f"bench-agent-exit {{time.time()}}", flush=True)
"""


def plan_text(agent: Path, schedule: str, parallel: int, gate: float) -> str:
    batches = ""
    for number, batch in enumerate(TASKS, 1):
        batches += f'[[batches]]\nname = "b{number}"\n'
        for who, issue, hours, deps in batch:
            batches += (
                f'  [[batches.tasks]]\n  agent = {who}\n  issue = {issue}\n  title = "t{issue}"\n'
                f"  hours = {hours}\n  depends_on = {list(deps)}\n"
            )
    command = json.dumps([sys.executable, str(agent)])
    return (
        f'[project]\nbase = "main"\nschedule = "{schedule}"\n\n'
        f"[agents]\ncount = 4\ncommand = {command}\ntimeout = 120\n\n"
        f'[gate]\ncommand = "sleep {gate}"\n\n'
        f"[merge]\nparallel = {parallel}\n\n{batches}"
    )


def build(root: Path, schedule: str, parallel: int, work: bool = True, plain: bool = False) -> Path:
    """The project; without ``work`` agents do not sleep and the gate is instant. ``plain``:
    set up for ``bench/plain_run.py`` (a worktree per agent, made by git) instead of paradev."""
    repo = root / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    hours = {str(issue): h for batch in TASKS for _, issue, h, _ in batch}
    agent = root / "agent.py"
    agent.write_text(AGENT.format(hours=hours, scale=SCALE if work else 0.0))
    (repo / "plan.toml").write_text(plan_text(agent, schedule, parallel, GATE if work else 0.0))
    (repo / "README.md").write_text("bench\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    if not plain:
        paradev(repo, "setup")
        return repo
    for who in (1, 2, 3, 4):
        git(repo, "worktree", "add", "-q", "-b", f"plain-{who}", f"../plain-agent-{who}", "main")
    spec = {
        "tasks": [(who, issue, list(deps)) for batch in TASKS for who, issue, _, deps in batch],
        "agent": [sys.executable, str(agent)],
        "gate": ["sh", "-c", f"sleep {GATE if work else 0.0}"],
        "parallel": parallel,
    }
    (root / "spec.json").write_text(json.dumps(spec))
    return repo


RUN_ENV = {k: v for k, v in ENV.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed


CPU: dict[str, list[float]] = {}  # schedule -> per run: CPU seconds of paradev run and all it ran


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def paradev(cwd: Path, *args: str) -> float:
    """Run ``paradev ARGS`` in a process of its own; its wall time (its CPU time, with every
    process it waited for, is the last figure ``_children_cpu`` gained)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        env=RUN_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"paradev {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}")
    return elapsed


def timeline(parallel: int, work: bool) -> None:
    """One flow run, written down per task: where each task's time went, in seconds since the
    run started (the run's ``--json`` events, the agents' own exit stamps, the train's journal)."""
    with tempfile.TemporaryDirectory(prefix="paradev-bench-run-") as tmp:
        repo = build(Path(tmp), "flow", parallel, work)
        start = time.time()
        argv = [sys.executable, "-u", "-m", "paradev", "run", "--json"]
        proc = subprocess.run(
            argv, cwd=repo, env=RUN_ENV, capture_output=True, text=True, check=False
        )
        end = time.time()
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        state = json.loads((repo / ".git" / "paradev" / "state.json").read_text())
        logs = repo / ".git" / "paradev" / "logs"
        rows = _timeline_rows(events, state, logs, start)
    print(
        "issue agent  start   exit noticed picked   prep   gate     ff landed   next\n"
        "  (seconds since the run started; prep: backup to gate start, gate and ff: durations;"
        " landed: after the hooks; next: the agent's next task started)"
    )
    for issue in sorted(rows):
        r = rows[issue]
        print(
            f"#{issue:<4} {r.get('agent', 0):>5.0f} "
            + " ".join(_t(r, k) for k in ("start", "exit", "noticed", "picked", "prep"))
            + " "
            + " ".join(_t(r, k) for k in ("gate", "ff", "landed", "next"))
        )
    print(f"run exit {proc.returncode} after {end - start:.2f}s")


def _t(row: dict[str, float], key: str) -> str:
    return f"{row[key]:6.2f}" if key in row else "     -"


def _timeline_rows(
    events: list[dict[str, object]], state: dict[str, object], logs: Path, start: float
) -> dict[int, dict[str, float]]:
    from datetime import datetime

    def at(stamp: object) -> float:
        return datetime.fromisoformat(str(stamp)).timestamp() - start

    rows: dict[int, dict[str, float]] = {}
    for event in events:
        text = str(event.get("text", ""))
        if (m := re.match(r"agent (\d+): started #(\d+)", text)) is not None:
            row = rows.setdefault(int(m[2]), {"agent": int(m[1])})
            row["start"] = at(event["at"])
        elif (m := re.match(r"agent \d+: #(\d+) completed", text)) is not None:
            rows.setdefault(int(m[1]), {})["noticed"] = at(event["at"])
    for issue, row in rows.items():
        log = logs / f"issue-{issue}.log"
        found = re.findall(r"bench-agent-exit ([0-9.]+)", log.read_text() if log.exists() else "")
        if found:
            row["exit"] = float(found[-1]) - start
    history = state.get("merge_history")
    for train in history if isinstance(history, list) else []:
        for landed in train.get("landed", []):
            times = landed.get("times")  # an agent landing again in the train: its earlier one's
            if times is None:
                times = train.get("agents", {}).get(str(landed["agent"]), {}).get("times", {})
            for issue in landed.get("issues", []):
                row = rows.setdefault(issue, {})
                steps = {name: {k: at(v) for k, v in edge.items()} for name, edge in times.items()}
                if "start" in steps.get("backup", {}):
                    row["picked"] = steps["backup"]["start"]
                gate = steps.get("gate", {})
                if "start" in gate and "picked" in row:
                    row["prep"] = gate["start"] - row["picked"]  # backup, rebase, trailers, check
                if "start" in gate and "end" in gate:
                    row["gate"] = gate["end"] - gate["start"]
                edge = steps.get("advance", {})
                if "start" in edge and "end" in edge:
                    row["ff"] = edge["end"] - edge["start"]
                if "end" in steps.get("hooks", {}):
                    row["landed"] = steps["hooks"]["end"]
    for batch in TASKS:  # the agent's next task: when it started
        for who, issue, _, _ in batch:
            later = [i for b in TASKS for w, i, _, _ in b if w == who and i > issue]
            if later and issue in rows and "start" in rows.get(later[0], {}):
                rows[issue]["next"] = rows[later[0]]["start"]
    return rows


OVERLAPS: dict[str, list[int]] = {}  # schedule -> per run: next tasks started before the landing
TRAINS: dict[str, list[int]] = {}  # schedule -> per run: merge trains that landed the plan


def makespan(schedule: str, parallel: int, work: bool = True) -> float:
    with tempfile.TemporaryDirectory(prefix="paradev-bench-run-") as tmp:
        repo = build(Path(tmp), schedule, parallel, work)
        cpu = _children_cpu()
        elapsed = paradev(repo, "run")
        CPU.setdefault(schedule if work else "instant", []).append(_children_cpu() - cpu)
        landed = git(repo, "ls-tree", "--name-only", "main").split()
        assert all(f"work-{i}.txt" in landed for i in range(1, 13)), landed
        _check_dependencies_present(repo, _paradev_starts(repo))
        if work:
            OVERLAPS.setdefault(schedule, []).append(_overlapped(repo))
            history = json.loads((repo / ".git" / "paradev" / "state.json").read_text())
            TRAINS.setdefault(schedule, []).append(len(history["merge_history"]))
        return elapsed


def plain_makespan(parallel: int) -> float:
    """The same plan run by ``bench/plain_run.py`` (raw git): its wall time, checked as
    paradev's is (every task's work on main, each started after its dependencies)."""
    with tempfile.TemporaryDirectory(prefix="paradev-bench-run-") as tmp:
        repo = build(Path(tmp), "flow", parallel, plain=True)
        argv = [sys.executable, str(Path(__file__).with_name("plain_run.py")), "../spec.json"]
        cpu = _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(
            argv, cwd=repo, env=RUN_ENV, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        CPU.setdefault("plain", []).append(_children_cpu() - cpu)
        if proc.returncode != 0:
            raise SystemExit(f"bench/plain_run.py failed ({proc.returncode}):\n{proc.stderr}")
        landed = git(repo, "ls-tree", "--name-only", "main").split()
        assert all(f"work-{i}.txt" in landed for i in range(1, 13)), landed
        _check_dependencies_present(repo, json.loads(proc.stdout.splitlines()[-1]))
        return elapsed


def _paradev_starts(repo: Path) -> dict[str, str]:
    tasks = json.loads((repo / ".git" / "paradev" / "state.json").read_text())["tasks"]
    return {issue: task["start_commit"] for issue, task in tasks.items()}


def _check_dependencies_present(repo: Path, starts: dict[str, str]) -> None:
    """Every task started on a tree holding the work of each task it depends on (a fast
    makespan that starts dependents without their dependencies would be no result)."""
    for batch in TASKS:
        for _, issue, _, deps in batch:
            start = starts[str(issue)]
            files = git(repo, "ls-tree", "--name-only", start).split()
            missing = [d for d in deps if f"work-{d}.txt" not in files]
            assert not missing, f"#{issue} started without the work of {missing}"


def _overlapped(repo: Path) -> int:
    """How many of an agent's next tasks started before its previous task had landed (the
    previous task's landed commit not under the next one's start), from the refs."""
    tasks = json.loads((repo / ".git" / "paradev" / "state.json").read_text())["tasks"]
    count = 0
    for agent in (1, 2, 3, 4):
        mine = [i for batch in TASKS for who, i, _, _ in batch if who == agent]
        for earlier, later in itertools.pairwise(mine):
            merged, start = tasks[str(earlier)]["merged_commit"], tasks[str(later)]["start_commit"]
            argv = ["git", "merge-base", "--is-ancestor", merged, start]
            ancestor = subprocess.run(argv, cwd=repo, env=ENV, check=False).returncode == 0
            count += not ancestor
    return count


def lower_bound(parallel: int) -> tuple[float, dict[str, float]]:
    tasks = {issue: (who, h, deps) for batch in TASKS for who, issue, h, deps in batch}
    chain: dict[int, float] = {}

    def finish(issue: int) -> float:  # the longest chain ending with ``issue`` landed
        if issue not in chain:
            _, hours, deps = tasks[issue]
            chain[issue] = max((finish(d) for d in deps), default=0.0) + hours * SCALE + GATE
        return chain[issue]

    parts = {
        "longest chain with gates": max(finish(i) for i in tasks),
        "busiest agent": max(
            sum(h for who, h, _ in tasks.values() if who == agent) * SCALE for agent in (1, 2, 3, 4)
        ),
        "gates / merge.parallel": len(tasks) * GATE / parallel,
    }
    return max(parts.values()), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per schedule (best is shown)")
    parser.add_argument("--parallel", type=int, default=1, help="merge.parallel")
    parser.add_argument("--timeline", action="store_true", help="one flow run's events, timed")
    parser.add_argument("--instant", action="store_true", help="timeline: 0 s tasks and gates")
    options = parser.parse_args()
    if options.timeline:
        timeline(options.parallel, work=not options.instant)
        return
    bound, parts = lower_bound(options.parallel)
    print(f"12 tasks, 4 agents, 1 h = {SCALE}s, gate {GATE}s, merge.parallel {options.parallel}")
    print(
        "load average before: {:.1f} {:.1f} {:.1f} (on {} cores)".format(
            *os.getloadavg(), os.cpu_count()
        )
    )
    for name, value in parts.items():
        print(f"  {name:26} {value:6.2f}s")
    print(f"lower bound                  {bound:6.2f}s (target: flow <= {TARGET}x)")
    plain = min(plain_makespan(options.parallel) for _ in range(options.repeat))
    print(
        f"plain script (raw git)       {plain:6.2f}s  = {plain / bound:.2f}x the bound (the limit)"
    )
    print(f"  CPU per run, every process: {_seconds(CPU['plain'])}")
    for schedule in ("flow", "batches"):
        best = min(makespan(schedule, options.parallel) for _ in range(options.repeat))
        print(
            f"{schedule:8} makespan           {best:6.2f}s  = {best / bound:.2f}x the bound,"
            f" {best / plain:.2f}x the plain script"
        )
        shown = ", ".join(str(n) for n in OVERLAPS.get(schedule, []))
        print(f"  next tasks started while the previous one waited to land: {shown} (of 8)")
        trains = ", ".join(str(n) for n in TRAINS.get(schedule, []))
        print(f"  merge trains per run (each starts and ends at a cost): {trains}")
        print(f"  CPU per run, every process (load-robust): {_seconds(CPU[schedule])}")
    idle = min(makespan("flow", options.parallel, work=False) for _ in range(options.repeat))
    print(f"flow, 0 s tasks and gates    {idle:6.2f}s  (paradev's own cost on this machine now)")
    print(f"  CPU per run, every process: {_seconds(CPU['instant'])}")
    print("load average after: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}s" for v in values)


if __name__ == "__main__":
    main()
