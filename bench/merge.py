"""Benchmark: a merge train of 10 branches (trivial gate) next to the same git work as a script.

The limit is what git alone needs for the train: per branch a backup ref, a
rebase in the agent's worktree, the gate (``true``) and a fast-forward of the
main work tree. paradev adds its journal (a locked, fsynced state write before
each rebase and when tasks are marked merged), the merge order, the checks
(clean trees, fast-forward, the branch still what the gate passed) and the
Python start-up.

Run: ``.venv/bin/python bench/merge.py [--branches N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paradev.git import git_env  # noqa: E402

ENV = {
    **git_env(),
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@paradev.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@paradev.invalid",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def paradev(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )


def plan_text(branches: int) -> str:
    tasks = "".join(
        f'  [[batches.tasks]]\n  agent = {a}\n  issue = {a}\n  title = "task {a}"\n  hours = 1.0\n'
        for a in range(1, branches + 1)
    )
    return (
        '[project]\nbase = "main"\n\n'
        f"[agents]\ncount = {branches}\n\n"
        '[gate]\ncommand = "true"\n\n'
        f'[[batches]]\nname = "bench"\n{tasks}'
    )


def build(root: Path, branches: int) -> Path:
    """A repository with ``branches`` agents, each with 3 commits on its own files."""
    repo = root / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for i in range(50):
        (repo / "src").mkdir(exist_ok=True)
        (repo / "src" / f"m{i}.py").write_text(f"X = {i}\n" * 20)
    (repo / "plan.toml").write_text(plan_text(branches))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    check(paradev(repo, "setup"))
    trees = root / "project-worktrees"
    for agent in range(1, branches + 1):
        check(paradev(repo, "start", str(agent)))
        tree = trees / f"agent-{agent}"
        for n in range(3):
            (tree / f"feature_{agent}_{n}.py").write_text(f"Y = {n}\n")
            git(tree, "add", "-A")
            git(tree, "commit", "-q", "-m", f"agent {agent} commit {n}")
        check(paradev(repo, "complete", str(agent)))
    return repo


def check(proc: subprocess.CompletedProcess[str]) -> None:
    if proc.returncode != 0:
        raise SystemExit(f"paradev failed: {proc.args}\n{proc.stdout}\n{proc.stderr}")


def plain_train(repo: Path, branches: int) -> None:
    """The same git operations, as a script would run them: no journal, no checks."""
    trees = repo.parent / "project-worktrees"
    for agent in range(1, branches + 1):
        branch = f"parallel-dev/agent-{agent}"
        tree = trees / f"agent-{agent}"
        head = git(repo, "rev-parse", branch)
        git(repo, "update-ref", f"refs/paradev/backup/{branch}/plain", head, "0" * 40)
        git(tree, "rebase", "-q", "main")
        subprocess.run("true", shell=True, cwd=tree, check=True)
        git(repo, "merge", "-q", "--ff-only", branch)


def run_train(repo: Path, branches: int, runner: str) -> float:
    """Seconds ``runner`` takes for the train; checks every branch landed."""
    start = time.perf_counter()
    if runner == "paradev":
        check(paradev(repo, "merge"))
    elif runner == "dry-run":
        check(paradev(repo, "merge", "--dry-run"))
    else:
        plain_train(repo, branches)
    elapsed = time.perf_counter() - start
    merged = git(repo, "rev-list", "--count", "main")
    expected = 1 + 3 * branches if runner != "dry-run" else 1
    if int(merged) != expected:
        raise SystemExit(f"{runner}: main has {merged} commits, expected {expected}")
    return elapsed


def measure(branches: int, runner: str) -> float:
    with tempfile.TemporaryDirectory(prefix="paradev-bench-") as tmp:
        return run_train(build(Path(tmp), branches), branches, runner)


def git_processes(branches: int, runner: str) -> int:
    """How many git commands ``runner`` starts itself (their own children not counted).

    Counted from git's trace2 events: unlike seconds, a figure the load of a
    shared machine cannot blur.
    """
    with tempfile.TemporaryDirectory(prefix="paradev-bench-") as tmp:
        repo = build(Path(tmp), branches)
        trace = Path(tmp) / "trace2.json"
        ENV["GIT_TRACE2_EVENT"] = str(trace)
        try:
            run_train(repo, branches, runner)
        finally:
            del ENV["GIT_TRACE2_EVENT"]
        events = (json.loads(line) for line in trace.read_text().splitlines())
        # the train's own check of main is one more top-level git: not counted
        started = sum(1 for e in events if e.get("event") == "start" and "/" not in e["sid"])
        return started - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("GIT_")})
    runners = ("plain", "paradev", "dry-run")
    times: dict[str, list[float]] = {runner: [] for runner in runners}
    for _ in range(args.repeat):  # interleaved, so a busy moment hits every runner alike
        for runner in runners:
            times[runner].append(measure(args.branches, runner))
    best = {runner: min(found) for runner, found in times.items()}
    counts = {runner: git_processes(args.branches, runner) for runner in ("plain", "paradev")}
    print(f"merge train of {args.branches} branches, trivial gate (best of {args.repeat}):")
    for runner, label in (
        ("plain", "plain git script (the limit):"),
        ("paradev", "paradev merge:"),
    ):
        print(f"  {label:<29} {best[runner]:.2f}s  ({counts[runner]} git processes)")
    print(f"  ratio paradev / plain:        {best['paradev'] / best['plain']:.2f}x")
    print(f"  paradev merge --dry-run:      {best['dry-run']:.2f}s")


if __name__ == "__main__":
    main()
