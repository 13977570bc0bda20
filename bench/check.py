"""Benchmark: ``paradev check PATH`` next to ``python -c pass`` (the issue-9 target: +40 ms).

A repository with 10,000 files and 10 agents, each with a worktree, a commit
on its branch and uncommitted edits in its worktree (which ``check`` must
still report: the script verifies the answers before and after timing them).
Between runs (as when an agent checks before each edit) check keeps the
branch heads by the identity of the ref files, the branches' changed paths
by commit ids, and each work tree's answer while nothing it depends on
changed (``paradev.dirtycache``; files written within 2 s are always asked
to git, so the script waits that long after building). One row forgets the
branch caches first (every branch just moved); one hides the work-tree
answers (every work tree just changed: the cold cost, ~2 ms of ``sh``/``mv``
included). Commands take turns so machine load hits each alike; medians are
printed side by side, wall and CPU (CPU moves far less on a busy machine).

    python bench/check.py [--runs 21] [--files 10000] [--agents 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import child_env, interleaved_medians, paradev_argv, run
from status import forgetting

TARGET_MS = 40.0
BRANCH_PATHS = "branch-paths.kept"  # check keeps each branch's paths by commit ids
BRANCH_HEADS = "branch-heads.kept"  # and the heads by the identity of the ref files
DIRTY_PATHS = "dirty-paths.kept"  # and each work tree's answer by what it depends on
RACY_SECONDS = 2.0  # files younger than this are always asked to git (paradev.dirtycache)


def build(root: Path, files: int, agents: int, env: dict[str, str]) -> Path:
    repo = root / "project"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, env)
    for i in range(files):
        path = repo / "src" / f"pkg{i // 100:03d}" / f"mod{i:05d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"VALUE_{i} = {i}\n")
    (repo / "plan.toml").write_text(
        f'[project]\nbase = "main"\n\n[agents]\ncount = {agents}\n\n[[batches]]\nname = "b"\n'
        + "".join(
            f"  [[batches.tasks]]\n  agent = {a}\n  issue = {a}\n  title = 't{a}'\n  hours = 1.0\n"
            for a in range(1, agents + 1)
        )
    )
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-q", "-m", "initial"], repo, env)
    run([*paradev_argv(), "setup"], repo, env)
    for agent in range(1, agents + 1):
        tree = root / "project-worktrees" / f"agent-{agent}"
        committed = tree / "src" / f"pkg{agent:03d}" / f"mod{agent * 100:05d}.py"
        committed.write_text("committed = True\n")
        run(["git", "commit", "-qam", f"agent {agent}"], tree, env)
        edited = tree / "src" / f"pkg{agent + 50:03d}" / f"mod{(agent + 50) * 100 + 1:05d}.py"
        edited.write_text("uncommitted = True\n")  # only in the worktree
        (tree / "src" / f"new_{agent}.py").write_text("untracked = True\n")
    return repo


def hiding(cache: str, *args: str) -> list[str]:
    """``paradev ARGS`` run without its kept answers, which are put back after it (so the
    other rows keep theirs): through ``sh -c`` and two ``mv``, a few ms more."""
    kept = f".git/paradev/{cache}"
    script = (
        f'mv -f {kept} {kept}.hidden 2>/dev/null; "$0" "$@"; code=$?; '
        f"mv -f {kept}.hidden {kept} 2>/dev/null; exit $code"
    )
    return ["sh", "-c", script, *paradev_argv(), *args]


def verify(paradev: list[str], repo: Path, env: dict[str, str], dirty: str) -> None:
    """The answers timed are right: agent 5's uncommitted edit found (twice: computed, then
    kept), nothing in an untouched folder, agent 7's untracked file in ``src``."""
    for _ in range(2):
        answer = run([*paradev, "check", dirty, "--agent", "1"], repo, env, ok=(1,))
        if not answer.stdout.startswith(f"{dirty}: agent 5") or "worktree" not in answer.stdout:
            raise SystemExit(f"check missed the uncommitted edit: {answer.stdout!r}")
        quiet = run([*paradev, "check", "src/pkg099", "--agent", "1"], repo, env)
        if quiet.stdout != "no other agent changes src/pkg099\n":
            raise SystemExit(f"check found work in an untouched folder: {quiet.stdout!r}")
        new = run([*paradev, "check", "src/new_7.py", "--agent", "1"], repo, env, ok=(1,))
        if not new.stdout.startswith("src/new_7.py: agent 7") or "worktree" not in new.stdout:
            raise SystemExit(f"check missed an untracked file: {new.stdout!r}")


def _script_note(script: Path) -> str:
    """Whether the installer's console script imports ``re`` (pip before 25.2 writes one that
    does: ~10 ms of every command, as much as half of a check)."""
    try:
        text = script.read_text()
    except (OSError, UnicodeDecodeError):
        return "not a Python script"
    return "imports re (an old pip made it)" if "import re" in text else "imports no re"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="paradev-bench-"))
    try:
        env = child_env(root)
        repo = build(root, args.files, args.agents, env)
        paradev = paradev_argv()
        dirty = "src/pkg055/mod05501.py"  # agent 5's uncommitted edit
        time.sleep(RACY_SECONDS)
        verify(paradev, repo, env, dirty)
        rows = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "paradev check (uncommitted hit)": [*paradev, "check", dirty, "--agent", "1"],
            "paradev check (nothing found)": [*paradev, "check", "src/pkg099", "--agent", "1"],
            "paradev check (branches moved)": forgetting(
                f"{BRANCH_PATHS} .git/paradev/{BRANCH_HEADS}", "check", dirty, "--agent", "1"
            ),
            "paradev check (every tree changed)": hiding(
                DIRTY_PATHS, "check", dirty, "--agent", "1"
            ),
            "paradev check . (whole tree)": [*paradev, "check", ".", "--agent", "1"],
        }
        figures = interleaved_medians(rows, repo, env, args.runs, ok=(0, 1))
        verify(paradev, repo, env, dirty)  # the kept answers are still right
        python, python_cpu = figures["python -c pass"]
        print(
            f"paradev check: {args.agents} agents, {args.files:,} files, uncommitted edits; "
            f"median of {args.runs} runs; load average {os.getloadavg()[0]:.1f}"
        )
        print(f"  {'':<34} {'wall':>10}  {'vs python':>9}  {'CPU':>9}  {'vs python':>9}")
        for name, (ms, cpu) in figures.items():
            print(
                f"  {name:<34} {ms:7.1f} ms  {ms - python:+7.1f}ms  "
                f"{cpu:6.1f} ms  {cpu - python_cpu:+7.1f}ms"
            )
        for row in ("paradev check (uncommitted hit)", "paradev check (nothing found)"):
            over = figures[row][0] - python
            verdict = "met" if over <= TARGET_MS else "NOT met"
            print(
                f"  target: <= {TARGET_MS:.0f} ms above python -c pass, {row[14:]}: "
                f"{over:+.1f} ms: {verdict}"
            )
        print(f"  console script {paradev[0]}: {_script_note(Path(paradev[0]))}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
