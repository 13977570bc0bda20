"""Benchmark: ``paradev status`` next to the same git calls in a shell script.

At 3, 10 and 50 agents (each a worktree of a 200-file project, some with
commits, some with uncommitted work, base moved on) this times, side by
side, ``python -c pass`` (interpreter start-up), a ``sh`` script asking git
what ``paradev status`` shows (one git call per question, one after another,
as a script would), ``paradev status`` and ``paradev status --json`` (the
branches' ahead/behind counts kept from the run before, as in a loop), and
``paradev status`` with those counts forgotten (every branch just moved).
Commands take turns so machine load hits each alike; medians are printed
with the ratio to the script. Target (issue 9): at most 1.5x the script at
10 agents.

    python bench/status.py [--runs 15] [--agents 3,10,50] [--importtime]

``--importtime`` also prints the slowest imports of one ``paradev status``
run (``python -X importtime``), the place to look when the figure grows.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import child_env, interleaved_medians, paradev_argv, run

TARGET = (10, 1.5)  # agents, allowed ratio to the shell script
AHEAD_BEHIND = "ahead-behind.kept"  # status keeps each count by commit ids (paradev.commitcache)


def plan_text(agents: int) -> str:
    tasks = "".join(
        f"\n  [[batches.tasks]]\n  agent = {1 + i % agents}\n  issue = {10 + i}\n"
        f'  title = "Task {10 + i}"\n  hours = 1.5\n'
        for i in range(3 * agents)
    )
    return (
        f'[project]\nbase = "main"\n\n[agents]\ncount = {agents}\n\n'
        f'[[batches]]\nname = "one"\n{tasks}'
    )


def build_repository(root: Path, agents: int, env: dict[str, str]) -> Path:
    """A small project, an N-agent plan, worktrees set up, some work in every state."""
    repo = root / "project"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    for i in range(200):
        path = repo / "src" / f"pkg{i % 10}" / f"module{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"def f{j}():\n    return {j}\n\n" for j in range(30)))
    (repo / "plan.toml").write_text(plan_text(agents))
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "initial"], repo, env)
    paradev = paradev_argv()
    run([*paradev, "setup"], repo, env)
    trees = root / "project-worktrees"
    for agent in range(1, agents + 1):
        run([*paradev, "start", str(agent)], repo, env)
        tree = trees / f"agent-{agent}"
        for n in range(agent % 3):
            (tree / "src" / f"agent{agent}_{n}.py").write_text(f"X = {n}\n")
            run(["git", "add", "-A"], tree, env)
            run(["git", "commit", "-q", "-m", f"work {n}"], tree, env)
        if agent % 2:
            (tree / "src" / "wip.py").write_text("uncommitted\n")
    run([*paradev, "complete", "1"], repo, env)
    (repo / "main-only.txt").write_text("base moves on\n")
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "base moves on"], repo, env)
    return repo


def shell_script(repo: Path, agents: int) -> Path:
    """The git calls answering what ``paradev status`` shows, one after another, in sh."""
    lines = [
        "set -e",
        # git's version is asked once per git program (paradev keeps a stamp), so not here
        "git rev-parse --path-format=absolute --is-bare-repository --absolute-git-dir "
        "--git-common-dir --show-toplevel >/dev/null",
        "git for-each-ref '--format=%(refname) %(objectname)' -- refs/heads/main >/dev/null",
    ]
    trees = repo.parent / "project-worktrees"
    for agent in range(1, agents + 1):
        lines.append(
            "git rev-list --left-right --count "
            f"refs/heads/main...refs/heads/parallel-dev/agent-{agent} -- >/dev/null"
        )
        lines.append(
            f"git -C {trees / f'agent-{agent}'} --no-optional-locks status --porcelain=v1 -z "
            "--untracked-files=all >/dev/null"
        )
    script = repo.parent / f"status-{agents}.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def forgetting(cache: str, *args: str) -> list[str]:
    """``paradev ARGS`` run as if every branch had just moved: its commit-id cache removed first.

    (Through ``sh -c``, which adds a shell's start-up, about 1 ms.)
    """
    forget = f'rm -f .git/paradev/{cache} && exec "$0" "$@"'
    return ["sh", "-c", forget, *paradev_argv(), *args]


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
    parser.add_argument("--agents", default="3,10,50", help="comma-separated agent counts")
    parser.add_argument("--importtime", action="store_true", help="also show the slowest imports")
    args = parser.parse_args()
    for agents in [int(n) for n in args.agents.split(",")]:
        root = Path(tempfile.mkdtemp(prefix="paradev-bench-"))
        try:
            env = child_env(root)
            repo = build_repository(root, agents, env)
            script = shell_script(repo, agents)
            rows = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "the same git calls (sh script)": ["sh", str(script)],
                "paradev status": [*paradev_argv(), "status"],
                "paradev status --json": [*paradev_argv(), "status", "--json"],
                "paradev status, counts not kept": forgetting(AHEAD_BEHIND, "status"),
            }
            figures = interleaved_medians(rows, repo, env, args.runs, ok=(0,))
            shell, shell_cpu = figures["the same git calls (sh script)"]
            print(
                f"paradev status, {agents} agents: median of {args.runs} runs; "
                f"load average {os.getloadavg()[0]:.1f}"
            )
            print(f"  {'':<32} {'wall':>10}  {'x script':>8}  {'CPU':>9}  {'x script':>8}")
            for name, (ms, cpu) in figures.items():
                print(
                    f"  {name:<32} {ms:7.1f} ms  {ms / shell:7.2f}x  "
                    f"{cpu:6.1f} ms  {cpu / shell_cpu:7.2f}x"
                )
            if agents == TARGET[0]:
                ratio = figures["paradev status"][0] / shell
                verdict = "met" if ratio <= TARGET[1] else "NOT met"
                print(f"  target: <= {TARGET[1]}x the script -> {ratio:.2f}x: {verdict}")
            if args.importtime:
                print("  slowest imports of one 'paradev status' (cumulative):")
                for micros, name in slowest_imports(repo, env):
                    print(f"    {micros / 1000:7.1f} ms  {name}")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
