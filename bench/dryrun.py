"""Benchmark: ``paradev merge --dry-run`` over 10 branches x 200 commits, beside plain git.

Two shapes of work:

- disjoint: each branch changes its own files; the dry run merges each branch
  once onto the simulated base. The limit: a script running, per branch, the
  same ``git merge-tree --write-tree`` and a ``git commit-tree`` for the next
  simulated base.
- overlapping: every branch also edits its own part of one shared file, so
  after the first landing each branch touches a path base changed and is
  replayed commit by commit. The limit: a script replaying each commit as
  the dry run does (a probe ``commit-tree`` and a ``merge-tree`` per commit).

Printed: wall seconds (best of R) and the git processes started (trace2
events: a count the load of a shared machine cannot blur). paradev's figure
includes what every ``merge`` checks first (work trees, locks, the merge
order's pairwise conflicts) and the Python start-up.

Run: ``.venv/bin/python bench/dryrun.py [--branches N] [--commits C] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import child_env, paradev_argv  # noqa: E402

SHARED = "shared.py"
BLOCK = 20  # lines of the shared file each branch owns


def git(cwd: Path, env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=True
    )
    return proc.stdout.strip()


def paradev(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*paradev_argv(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"paradev {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc


def plan_text(branches: int) -> str:
    tasks = "".join(
        f'  [[batches.tasks]]\n  agent = {a}\n  issue = {a}\n  title = "task {a}"\n  hours = 1.0\n'
        for a in range(1, branches + 1)
    )
    return (
        f'[project]\nbase = "main"\n\n[agents]\ncount = {branches}\n\n'
        f'[gate]\ncommand = ""\n\n[[batches]]\nname = "bench"\n{tasks}'
    )


def shared_text(branches: int) -> list[str]:
    """The shared file: a block of lines per branch (its first and last line never edited)."""
    return [f"line {b} {i} = 0\n" for b in range(1, branches + 1) for i in range(BLOCK)]


def fast_import_stream(branches: int, commits: int, base: str, overlap: bool) -> str:
    """Every agent branch: ``commits`` commits on its own file (and its block of the shared one)."""
    out: list[str] = []
    for agent in range(1, branches + 1):
        shared = shared_text(branches)
        for n in range(commits):
            files = {f"feature_{agent}.py": f"VALUE = {n}\n"}
            if overlap:
                line = 1 + n % (BLOCK - 2)  # blocks stay apart: no two edits touch
                shared[(agent - 1) * BLOCK + line] = f"line {agent} {line} = {n}\n"
                files[SHARED] = "".join(shared)
            out.append(f"commit refs/heads/parallel-dev/agent-{agent}\n")
            out.append("committer bench <bench@paradev.invalid> 1700000000 +0000\n")
            message = f"agent {agent} commit {n}\n"
            out.append(f"data {len(message)}\n{message}")
            if n == 0:
                out.append(f"from {base}\n")
            for path, text in files.items():
                data = text.encode()
                out.append(f"M 100644 inline {path}\ndata {len(data)}\n{text}\n")
    return "".join(out)


def build(root: Path, env: dict[str, str], branches: int, commits: int, overlap: bool) -> Path:
    """A repository whose agents each completed a task of ``commits`` commits."""
    repo = root / "project"
    repo.mkdir()
    git(repo, env, "init", "-q", "-b", "main")
    (repo / "plan.toml").write_text(plan_text(branches))
    (repo / SHARED).write_text("".join(shared_text(branches)))
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "initial")
    paradev(repo, env, "setup")
    for agent in range(1, branches + 1):
        paradev(repo, env, "start", str(agent))
    base = git(repo, env, "rev-parse", "main")
    git(
        repo,
        env,
        "fast-import",
        "--quiet",
        "--force",
        stdin=fast_import_stream(branches, commits, base, overlap),
    )
    for agent in range(1, branches + 1):
        git(root / "project-worktrees" / f"agent-{agent}", env, "reset", "-q", "--hard")
        paradev(repo, env, "complete", str(agent))
    return repo


def plain(repo: Path, env: dict[str, str], branches: int, replay: bool) -> None:
    """The merge-tree work alone: each branch merged once, or each commit replayed."""
    simulated = git(repo, env, "rev-parse", "main")
    for agent in range(1, branches + 1):
        head = f"parallel-dev/agent-{agent}"
        if not replay or agent == 1:  # the first lands on an unchanged base: one merge
            tree = git(repo, env, "merge-tree", "--write-tree", simulated, head).split()[0]
        else:
            tree = git(repo, env, "rev-parse", f"{simulated}^{{tree}}")
            listed = git(repo, env, "rev-list", "--reverse", "--parents", f"main..{head}")
            for line in listed.splitlines():
                commit, parent = line.split()[:2]
                probe = git(repo, env, "commit-tree", tree, "-p", parent, stdin="probe\n")
                tree = git(repo, env, "merge-tree", "--write-tree", probe, commit).split()[0]
        simulated = git(repo, env, "commit-tree", tree, "-p", simulated, stdin="landed\n")


def timed(run: Callable[[dict[str, str]], object], env: dict[str, str]) -> float:
    start = time.perf_counter()
    run(env)
    return time.perf_counter() - start


def counted(env: dict[str, str], trace: Path, run: Callable[[dict[str, str]], object]) -> int:
    """Top-level git processes ``run`` starts (their own children not counted)."""
    trace.unlink(missing_ok=True)
    run({**env, "GIT_TRACE2_EVENT": str(trace)})
    events = (json.loads(line) for line in trace.read_text().splitlines())
    return sum(1 for e in events if e.get("event") == "start" and "/" not in e["sid"])


def measure(
    branches: int, commits: int, overlap: bool, repeat: int
) -> dict[str, tuple[float, int]]:
    with tempfile.TemporaryDirectory(prefix="paradev-bench-") as tmp:
        root = Path(tmp)
        env = child_env(root)
        repo = build(root, env, branches, commits, overlap)
        runs: dict[str, Callable[[dict[str, str]], object]] = {
            "plain": lambda e: plain(repo, e, branches, replay=overlap),
            "paradev": lambda e: paradev(repo, e, "merge", "--dry-run"),
        }
        best = {name: min(timed(run, env) for _ in range(repeat)) for name, run in runs.items()}
        trace = root / "trace2.json"
        return {name: (best[name], counted(env, trace, run)) for name, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=10)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("GIT_TRACE2_EVENT", None)
    print(
        f"merge --dry-run, {args.branches} branches x {args.commits} commits "
        f"(best of {args.repeat}):"
    )
    for overlap, label in (
        (False, "disjoint (one merge per branch)"),
        (True, "overlapping (replayed commit by commit)"),
    ):
        figures = measure(args.branches, args.commits, overlap, args.repeat)
        print(f"  {label}:")
        (plain_s, plain_n), (ours_s, ours_n) = figures["plain"], figures["paradev"]
        print(f"    plain git script (the limit): {plain_s:6.2f}s  {plain_n:6d} git processes")
        print(f"    paradev merge --dry-run:      {ours_s:6.2f}s  {ours_n:6d} git processes")
        print(
            f"    ratio paradev / plain:        {ours_s / plain_s:6.2f}x {ours_n / plain_n:6.2f}x"
        )


if __name__ == "__main__":
    main()
