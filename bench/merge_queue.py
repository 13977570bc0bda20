"""Benchmark: the merge queue against the serial train, 8 branches, a gate that sleeps 1 s.

The gate stands in for a test suite (sleeping costs no CPU, so gates overlap
even on a busy machine). Rows: the serial train (one gate run per branch),
``parallel = 4`` (four candidates gated at once) and ``batch = 8`` (one gate
run for all, bisection on failure); then the same with one branch whose gate
fails, ejected (``on_gate_failure = "eject"``; the serial row is the queue
with ``parallel = 1, batch = 1``, the serial train itself stops there).
Each row checks what landed: every passing branch, never the failing one
(no commit of main ever holds its file).

Targets (issue 11): all passing, batch 8 needs 1 gate run and <= 0.25x the
serial wall time, parallel 4 <= 0.35x; one failing, the 7 others land and
batch 8 uses <= 5 gate runs.

Run: ``.venv/bin/python bench/merge_queue.py [--branches N] [--sleep S]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from merge import ENV, compile_paradev, git  # noqa: E402  (bench/merge.py: the same isolated git)

BAD = "bad.txt"  # the failing branch adds it; the gate fails when it is there


def paradev(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"paradev {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def plan_text(branches: int, gate: str, merge: dict[str, object]) -> str:
    tasks = "".join(
        f'  [[batches.tasks]]\n  agent = {a}\n  issue = {a}\n  title = "task {a}"\n  hours = 1.0\n'
        for a in range(1, branches + 1)
    )
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in merge.items())
    return (
        '[project]\nbase = "main"\n\n'
        f"[agents]\ncount = {branches}\n\n"
        f"[gate]\ncommand = {json.dumps(gate)}\n\n"
        f"[merge]\n{settings}\n"
        f'[[batches]]\nname = "bench"\n{tasks}'
    )


def build(root: Path, branches: int, sleep: float, merge: dict[str, object], bad: int) -> Path:
    """``branches`` agents with one commit each on their own file; agent ``bad`` adds BAD too."""
    repo = root / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("bench\n")
    gate = f"echo run >> {root / 'runs.txt'}; sleep {sleep}; ! test -e {BAD}"
    (repo / "plan.toml").write_text(plan_text(branches, gate, merge))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    paradev(repo, "setup")
    trees = root / "project-worktrees"
    for agent in range(1, branches + 1):
        paradev(repo, "start", str(agent))
        tree = trees / f"agent-{agent}"
        (tree / f"feature_{agent}.py").write_text(f"Y = {agent}\n")
        if agent == bad:
            (tree / BAD).write_text("fails the gate\n")
        git(tree, "add", "-A")
        git(tree, "commit", "-q", "-m", f"feat: agent {agent}")
        paradev(repo, "complete", str(agent))
    return repo


Row = tuple[float, float, int, int]


def measure(branches: int, sleep: float, merge: dict[str, object], bad: int) -> Row:
    """(wall and CPU seconds of ``paradev merge``, gate runs, branches landed).

    CPU counts paradev and every process it waited for (git, the gates): on a
    busy machine it moves far less than wall time. Checks BAD never landed.
    """
    with tempfile.TemporaryDirectory(prefix="paradev-bench-queue-") as tmp:
        repo = build(Path(tmp), branches, sleep, merge, bad)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        paradev(repo, "merge")
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        runs = len((Path(tmp) / "runs.txt").read_text().splitlines())
        landed = sum(1 for a in range(1, branches + 1) if (repo / f"feature_{a}.py").exists())
        for sha in git(repo, "rev-list", "main").split():
            if git(repo, "ls-tree", "--name-only", sha, "--", BAD):
                raise SystemExit(f"{merge}: main holds the failing branch at {sha}")
        if landed != branches - (1 if bad else 0):
            raise SystemExit(f"{merge}: {landed} branches landed")
        return elapsed, cpu, runs, landed


def table(title: str, rows: dict[str, Row], targets: dict[str, str], sleep: float) -> None:
    """Wall time, its ratio to serial, gate runs, what landed, CPU time."""
    print(title)
    serial = rows["serial"][0]
    for name, (seconds, cpu, runs, landed) in rows.items():
        target = targets.get(name, "")
        print(
            f"  {name:<12} {seconds:6.2f}s  {seconds / serial:5.2f}x serial  "
            f"{runs:2d} gate run(s)  {landed} landed  cpu {cpu:5.2f}s  {target}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=1.0)
    args = parser.parse_args()
    n, sleep = args.branches, args.sleep
    compile_paradev()
    eject = {"on_gate_failure": "eject"}
    passing = {
        "serial": measure(n, sleep, {}, 0),
        "parallel 4": measure(n, sleep, {"parallel": 4}, 0),
        f"batch {n}": measure(n, sleep, {"batch": n}, 0),
    }
    table(
        f"merge queue, {n} branches, gate sleeps {sleep:g}s, all passing:",
        passing,
        {"parallel 4": "(target <= 0.35x)", f"batch {n}": "(target 1 run, <= 0.25x)"},
        sleep,
    )
    bad = (n + 1) // 2
    failing = {
        "serial": measure(n, sleep, {"parallel": 1, **eject}, bad),
        "parallel 4": measure(n, sleep, {"parallel": 4, **eject}, bad),
        f"batch {n}": measure(n, sleep, {"batch": n, **eject}, bad),
    }
    table(
        f"the same, agent {bad}'s gate fails (ejected; main never holds it):",
        failing,
        {f"batch {n}": "(target <= 5 runs)", "serial": "(the queue, parallel 1, batch 1)"},
        sleep,
    )


if __name__ == "__main__":
    main()
