"""Benchmark: ``paradev status`` on a 3-agent repository next to its limits.

The limits are a bare ``python -c pass`` (interpreter start-up, which every
paradev command pays) and ``git status`` (the git work a status needs, once);
``python -c 'import invoke'`` shows the floor the CLI framework sets.
Each command runs ``--runs`` times after one warm-up run; the median wall
time is printed with its ratio to both limits.

    python bench/status.py [--runs 15] [--importtime]

``--importtime`` also prints the slowest imports of one ``paradev status``
run (``python -X importtime``), the place to look when the figure grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

AGENTS = 3
PLAN = """\
[project]
base = "main"

[agents]
count = 3

[[batches]]
name = "one"
""" + "".join(
    f"""
  [[batches.tasks]]
  agent = {1 + i % 3}
  issue = {10 + i}
  title = "Task {10 + i}"
  hours = 1.5
"""
    for i in range(9)
)


def child_env(home: Path) -> dict[str, str]:
    """An isolated git identity; bytecode caching on, as in a normal install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    config = home / "gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@paradev.invalid\n")
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    return env


def run(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def paradev_argv() -> list[str]:
    script = Path(sys.executable).parent / "paradev"
    return [str(script)] if script.exists() else [sys.executable, "-m", "paradev"]


def build_repository(root: Path, env: dict[str, str]) -> Path:
    """A small project, a 3-agent plan, worktrees set up, some work in every state."""
    repo = root / "project"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    for i in range(200):
        path = repo / "src" / f"pkg{i % 10}" / f"module{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"def f{j}():\n    return {j}\n\n" for j in range(30)))
    (repo / "plan.toml").write_text(PLAN)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "initial"], repo, env)
    paradev = paradev_argv()
    run([*paradev, "setup"], repo, env)
    trees = root / "project-worktrees"
    for agent in range(1, AGENTS + 1):
        run([*paradev, "start", str(agent)], repo, env)
        tree = trees / f"agent-{agent}"
        for n in range(agent):
            (tree / "src" / f"agent{agent}_{n}.py").write_text(f"X = {n}\n")
            run(["git", "add", "-A"], tree, env)
            run(["git", "commit", "-q", "-m", f"work {n}"], tree, env)
    run([*paradev, "complete", "1"], repo, env)
    (trees / "agent-2" / "src" / "wip.py").write_text("uncommitted\n")
    (repo / "main-only.txt").write_text("base moves on\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "base moves on"], repo, env)
    return repo


def median_ms(argv: Sequence[str], cwd: Path, env: dict[str, str], runs: int) -> float:
    run(argv, cwd, env)  # warm-up: page cache, bytecode
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(argv, cwd, env)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def slowest_imports(cwd: Path, env: dict[str, str], count: int = 15) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of one ``paradev status``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "paradev", "status"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command")
    parser.add_argument("--importtime", action="store_true", help="also show the slowest imports")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="paradev-bench-"))
    try:
        env = child_env(root)
        repo = build_repository(root, env)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("git status", ["git", "status", "--porcelain"]),
            ("python -c 'import invoke'", [sys.executable, "-c", "import invoke"]),
            ("paradev status", [*paradev_argv(), "status"]),
            ("paradev status --json", [*paradev_argv(), "status", "--json"]),
        ]
        figures = {name: median_ms(argv, repo, env, args.runs) for name, argv in rows}
        python, git = figures["python -c pass"], figures["git status"]
        print(f"paradev status on a {AGENTS}-agent repository: median of {args.runs} runs")
        for name, ms in figures.items():
            print(f"  {name:<27} {ms:7.1f} ms  {ms / python:5.1f}x python  {ms / git:6.1f}x git")
        own = figures["paradev status"] - figures["python -c 'import invoke'"]
        print(f"  paradev's own share (status minus the invoke floor): {own:.1f} ms")
        if args.importtime:
            print("\nslowest imports of one 'paradev status' (cumulative):")
            for micros, name in slowest_imports(repo, env):
                print(f"  {micros / 1000:7.1f} ms  {name}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
