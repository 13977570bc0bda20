"""Benchmark: one state update through the remote (``[agents] hosts``) next to the local file.

A project with a bare repository as its remote and a state of ``--tasks``
task records. Timed, as medians over ``--runs`` updates that each change one
task's status:

- ``local file``: ``StateStore.update()`` (no hosts: the state file, locked);
- ``shared, paradev``: ``SharedStateStore.update()``: fetch the state ref,
  refresh the cache, replay the change, commit, compare-and-swap push, write
  the cache;
- ``shared, raw git``: the limit: the same git calls from a bare loop (fetch,
  cat-file, hash-object, mktree, commit-tree, push --force-with-lease), no
  paradev around them.

Then ``paradev status`` in a clone of one of three hosts (agents 2 and 3
on the other two, their branches read as pushed; the state from the cache,
no network) next to the same clone without hosts. The remote is a local bare repository:
a real network adds its round trips (two per update: fetch and push).

    python bench/shared_state.py [--runs 15] [--tasks 200]
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
from collections.abc import Callable
from pathlib import Path

from common import child_env, interleaved_medians, paradev_argv, run

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paradev.git import Git
from paradev.shared import STATE_REF, SharedState, SharedStateStore
from paradev.state import COMPLETED, IN_PROGRESS, StateStore


def plan_text(tasks: int, hosts: bool) -> str:
    rows = "".join(
        f'\n  [[batches.tasks]]\n  agent = {1 + i % 3}\n  issue = {10 + i}\n  title = "T{i}"\n'
        "  hours = 1.0\n"
        for i in range(tasks)
    )
    shared = "hosts = { bench = [1], box = [2], tower = [3] }\n" if hosts else ""
    return (
        f'[project]\nbase = "main"\nremote = "origin"\n\n[agents]\ncount = 3\n{shared}\n'
        f'[[batches]]\nname = "one"\n{rows}'
    )


def make_project(root: Path, env: dict[str, str], tasks: int) -> tuple[Path, Path]:
    """A bare remote and a clone whose state holds ``tasks`` records; (clone, remote)."""
    remote, clone = root / "origin.git", root / "project"
    run(["git", "init", "-q", "--bare", str(remote)], root, env)
    run(["git", "init", "-q", "-b", "main", str(clone)], root, env)
    (clone / "plan.toml").write_text(plan_text(tasks, hosts=False))
    run(["git", "add", "-A"], clone, env)
    run(["git", "commit", "-q", "-m", "plan"], clone, env)
    run(["git", "remote", "add", "origin", str(remote)], clone, env)
    for agent in (1, 2, 3):  # every agent's branch, pushed: other hosts' are read as pushed
        run(["git", "branch", f"parallel-dev/agent-{agent}", "main"], clone, env)
    run(["git", "push", "-q", "origin", "main", "parallel-dev/agent-1", "parallel-dev/agent-2",
         "parallel-dev/agent-3"], clone, env)  # fmt: skip
    run(["git", "fetch", "-q", "origin"], clone, env)
    store = StateStore(clone / ".git")
    with store.update() as state:
        for i in range(tasks):
            state.task(10 + i, 1 + i % 3).status = COMPLETED
    return clone, remote


def timed(work: Callable[[int], None], runs: int) -> float:
    work(0)  # warm-up
    times = []
    for n in range(1, runs + 1):
        start = time.perf_counter()
        work(n)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def raw_git_update(clone: Path, env: dict[str, str], n: int) -> None:
    """The git calls of one compare-and-swap state update, with nothing else around them."""

    def git(*args: str, input: str | None = None) -> str:
        return subprocess.run(
            ["git", *args], cwd=clone, env=env, input=input, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip

    git("fetch", "-q", "--no-write-fetch-head", "origin", f"+{STATE_REF}:refs/bench/raw")
    old = git("rev-parse", "refs/bench/raw")
    data = json.loads(git("cat-file", "blob", f"{old}:state.json"))
    data["merge_order"] = [n]
    blob = git("hash-object", "-w", "--stdin", input=json.dumps(data, indent=1))
    tree = git("mktree", input=f"100644 blob {blob}\tstate.json\n")
    new = git("commit-tree", tree, "-p", old, "-m", f"raw {n}")
    git("push", "-q", "--atomic", f"--force-with-lease={STATE_REF}:{old}", "origin",
        f"{new}:{STATE_REF}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradev-bench-shared-") as tmp:
        root = Path(tmp)
        env = child_env(root)
        os.environ.update({k: env[k] for k in ("HOME", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM")})
        clone, _ = make_project(root, env, args.tasks)
        local = StateStore(clone / ".git")
        shared = SharedStateStore(clone / ".git", SharedState(Git(clone), "origin", "bench"))

        def set_status(store: StateStore, n: int) -> None:
            with store.update() as state:
                state.task(10 + n % args.tasks, 1).status = IN_PROGRESS if n % 2 else COMPLETED

        local_ms = timed(lambda n: set_status(local, n), args.runs)
        shared_ms = timed(lambda n: set_status(shared, n), args.runs)
        raw_ms = timed(lambda n: raw_git_update(clone, env, n), args.runs)

        print(f"one state update, {args.tasks} task records, medians of {args.runs} runs:")
        print(f"  local file        {local_ms:8.1f} ms")
        print(f"  shared, paradev   {shared_ms:8.1f} ms   ({shared_ms / raw_ms:.2f}x raw git)")
        print(f"  shared, raw git   {raw_ms:8.1f} ms   (the limit: the git calls alone)")

        (clone / "hosts.toml").write_text(plan_text(args.tasks, hosts=True))
        run(["git", "config", "paradev.host", "bench"], clone, env)
        rows = {  # the same clone and state; only the plan differs
            "status, no hosts": ["env", "PARADEV_PLAN=plan.toml", *paradev_argv(), "status"],
            "status, 3 hosts": ["env", "PARADEV_PLAN=hosts.toml", *paradev_argv(), "status"],
        }
        medians = interleaved_medians(rows, clone, env, args.runs, (0,))
        print("paradev status (the local file; or, one host of three, the cache: no network):")
        for name, (wall, cpu) in medians.items():
            print(f"  {name:17} {wall:8.1f} ms wall  {cpu:8.1f} ms CPU")


if __name__ == "__main__":
    main()
