"""Benchmark: the serial merge train (gate ``true``) next to a plain git script doing the same.

The limit is ``bench/plain_train.sh``: per branch a backup ref, a rebase in
the agent's worktree, the gate in one prepared worktree, a fast-forward of
main and a push to a local bare remote. ``paradev merge`` does that and
adds its journal (``train.json``, fsynced), the checks (clean trees, patch
check, conflict markers, the branch still what the gate passed), the issue
trailers and the Python start-up. Both run at 10 and 40 branches, on a
fresh state and on one holding 2,000 finished task records (the journal's
writes must not grow with the history). Printed: median wall and CPU time, git
processes per branch (counted from git's trace2 events: a figure the load
of a shared machine cannot blur), the ratio and the limit (1.3x).

Run: ``.venv/bin/python bench/merge.py [--branches 10 40] [--history 0 2000] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from paradev.git import git_env  # noqa: E402

PLAIN = Path(__file__).resolve().parent / "plain_train.sh"
LIMIT = 1.3
# paradev runs from compiled bytecode, as an installed package does (pip compiles it): a
# sandbox's PYTHONDONTWRITEBYTECODE would otherwise compile every module at each start.
PYCACHE = Path(tempfile.gettempdir()) / f"paradev-bench-pycache-{os.getuid()}"
ENV = {
    **{k: v for k, v in git_env().items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPYCACHEPREFIX": str(PYCACHE),
    "PYTHONPATH": str(ROOT),  # the paradev next to this script, whichever one is installed
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


def compile_paradev() -> None:
    """Write paradev's bytecode once (into ``PYCACHE``), as installing it would."""
    argv = [sys.executable, "-m", "compileall", "-q", str(ROOT / "paradev")]
    subprocess.run(argv, env=ENV, check=True)


def paradev(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )


@contextlib.contextmanager
def in_process(cwd: Path) -> Iterator[None]:
    """paradev commands of the set-up run in this process: no start-up cost for each."""
    before, saved = Path.cwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ.update(ENV)
    try:
        yield
    finally:
        os.chdir(before)
        os.environ.clear()
        os.environ.update(saved)


def cli(*args: str) -> None:
    from paradev.cli import main

    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        code = main(list(args))
    if code != 0:
        raise SystemExit(f"paradev {' '.join(args)} failed ({code})")


def plan_text(branches: int) -> str:
    tasks = "".join(
        f'  [[batches.tasks]]\n  agent = {a}\n  issue = {a}\n  title = "task {a}"\n  hours = 1.0\n'
        for a in range(1, branches + 1)
    )
    return (
        '[project]\nbase = "main"\nremote = "origin"\n\n'
        f"[agents]\ncount = {branches}\n\n"
        '[gate]\ncommand = "true"\n\n'
        "[merge]\npush = true\n\n"
        f'[[batches]]\nname = "bench"\n{tasks}'
    )


def build(root: Path, branches: int, history: int) -> Path:
    """A repository with ``branches`` agents (3 commits each on their own files), a bare
    origin, a prepared gate worktree, and ``history`` finished task records in the state."""
    repo = root / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "src").mkdir()
    for i in range(50):
        (repo / "src" / f"m{i}.py").write_text(f"X = {i}\n" * 20)
    (repo / "plan.toml").write_text(plan_text(branches))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    git(root, "init", "-q", "--bare", str(root / "origin.git"))
    git(repo, "remote", "add", "origin", str(root / "origin.git"))
    git(repo, "push", "-q", "origin", "main")
    trees = root / "project-worktrees"
    with in_process(repo):
        cli("setup")
        for agent in range(1, branches + 1):
            cli("start", str(agent))
            tree = trees / f"agent-{agent}"
            for n in range(3):
                (tree / f"feature_{agent}_{n}.py").write_text(f"Y = {n}\n")
                git(tree, "add", "-A")
                git(tree, "commit", "-q", "-m", f"agent {agent} commit {n}")
            cli("complete", str(agent))
    add_history(repo, history)
    git(repo, "worktree", "add", "-q", "--detach", str(root / "gate"), "main")
    return repo


def add_history(repo: Path, records: int) -> None:
    """Finished tasks of earlier batches, as a long-running project accumulates them."""
    from paradev.state import MERGED, StateStore

    store = StateStore(repo / ".git")
    with store.update() as state:
        for issue in range(100_000, 100_000 + records):
            record = state.task(issue, 1 + issue % 10)
            record.status, record.merged_at = MERGED, "2026-01-01T00:00:00+00:00"
            record.merged_commit, record.files_modified = "0" * 40, [f"src/m{issue % 50}.py"]


def run_train(repo: Path, branches: int, runner: str) -> tuple[float, float]:
    """(wall, CPU) seconds ``runner`` takes for the train, its git children included; checks
    every branch landed and was pushed. CPU time is what a busy shared machine blurs least."""
    root = repo.parent
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if runner == "paradev":
        proc = paradev(repo, "merge")
        if proc.returncode != 0:
            raise SystemExit(f"paradev merge failed:\n{proc.stdout}\n{proc.stderr}")
    else:
        argv = [str(PLAIN), str(repo), str(root / "project-worktrees"), str(root / "gate")]
        subprocess.run([*argv, str(branches)], env=ENV, check=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - used.ru_utime - used.ru_stime
    for where in (repo, root / "origin.git"):
        merged = git(where, "rev-list", "--count", "main")
        if int(merged) != 1 + 3 * branches:
            raise SystemExit(f"{runner}: {where} main has {merged} commits")
    return elapsed, cpu


def measure(
    branches: int, history: int, runner: str, trace: bool = False
) -> tuple[float, float, int]:
    """(seconds, CPU seconds, git processes ``runner`` started itself) for one fresh repository.

    Their own children (a push's pack-objects) are not counted, for either runner.
    """
    with tempfile.TemporaryDirectory(prefix="paradev-bench-") as tmp:
        repo = build(Path(tmp), branches, history)
        events = Path(tmp) / "trace2.json"
        if trace:
            ENV["GIT_TRACE2_EVENT"] = str(events)
        try:
            seconds, cpu = run_train(repo, branches, runner)
        finally:
            ENV.pop("GIT_TRACE2_EVENT", None)
        if not trace:
            return seconds, cpu, 0
        lines = events.read_text().splitlines()
        started = sum(
            1 for e in map(json.loads, lines) if e.get("event") == "start" and "/" not in e["sid"]
        )
        return seconds, cpu, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--history", type=int, nargs="+", default=[0, 2000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    compile_paradev()
    print(
        "merge train, gate `true`, push to a local bare remote; "
        f"median of {args.repeat}; limit {LIMIT}x the plain git script"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        "branches  history   plain s  paradev s   ratio      plain cpu  paradev cpu  ratio"
        "   git/branch plain  paradev"
    )
    for branches in args.branches:
        for history in args.history:
            runs: dict[str, list[tuple[float, float, int]]] = {"plain": [], "paradev": []}
            for _ in range(args.repeat):  # interleaved: a busy moment hits both alike
                for runner in ("plain", "paradev"):
                    runs[runner].append(measure(branches, history, runner))
            counts = {r: measure(branches, history, r, trace=True)[2] for r in ("plain", "paradev")}
            wall = {r: statistics.median(t for t, _, _ in runs[r]) for r in runs}
            cpu = {r: statistics.median(c for _, c, _ in runs[r]) for r in runs}
            ratio = wall["paradev"] / wall["plain"]
            verdict = "ok" if ratio <= LIMIT else "OVER"
            print(
                f"{branches:>8}  {history:>7}  {wall['plain']:>8.2f}  {wall['paradev']:>9.2f}"
                f"  {ratio:>5.2f}x {verdict:<4}  {cpu['plain']:>8.2f}  {cpu['paradev']:>11.2f}"
                f"  {cpu['paradev'] / cpu['plain']:>5.2f}x  {counts['plain'] / branches:>10.1f}"
                f"  {counts['paradev'] / branches:>7.1f}",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
