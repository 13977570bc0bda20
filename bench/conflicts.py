"""Benchmark: ``paradev conflicts --json`` next to raw git doing the all-pairs merge work.

For each branch count (default 10, 30, 100 and 300) builds a synthetic
repository (default 3,000 files, some branches editing shared hot spots: same
lines -> real conflicts, far-apart lines -> harmless overlaps) and prints,
side by side, the median wall time of:

- ``paradev conflicts --json`` (cold: cache removed before each run; warm: cache kept),
- one ``git merge-tree --write-tree --stdin`` over every pair (the limit),
- one ``git merge-tree`` process per pair (the naive way),
- one ``git diff-tree --stdin`` over every branch (the prefilter's git work),
- ``paradev --help`` (Python and invoke start-up),

with the ratios and the issue-9 targets: at 30 branches paradev within
start-up + the limit, at 300 within 0.15x the limit. paradev runs with
bytecode caching on, as an ordinary install has it. The machine's other load
shows in the figures: run it idle. The naive way runs only up to 500 pairs,
and the limit once when there are more than 5,000 pairs (it takes seconds).
Usage: ``python bench/conflicts.py [--branches 10,30,100,300] [--files 3000]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

LINES = 40
HOT_FILES = 6


def git(cwd: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return proc.stdout.strip()


def file_text(index: int, edits: dict[int, str] | None = None) -> str:
    lines = [f"value_{index}_{n} = {n}" for n in range(LINES)]
    for line, text in (edits or {}).items():
        lines[line] = text
    return "\n".join(lines) + "\n"


def file_name(index: int) -> str:
    return f"pkg{index // 100:02d}/mod{index:04d}.py"


def build(root: Path, files: int, branches: int, seed: int) -> None:
    """A repository with ``files`` files on main and ``branches`` agent branches."""
    rng = random.Random(seed)
    identity = {
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@localhost",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@localhost",
    }
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for i in range(files):
        path = root / file_name(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file_text(i), encoding="utf-8")
    (root / "plan.toml").write_text(
        f'[project]\nbase = "main"\n\n[agents]\ncount = {branches}\n\n'
        '[[batches]]\nname = "bench"\n  [[batches.tasks]]\n  agent = 1\n  issue = 1\n'
        '  title = "bench"\n  hours = 1.0\n',
        encoding="utf-8",
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "synthetic base", env=identity)
    base = git(root, "rev-parse", "HEAD")
    blobs = Path(tempfile.mkdtemp(prefix="bench-blobs-"))
    try:
        for agent in range(1, branches + 1):
            changed: dict[str, str] = {}
            for i in rng.sample(range(HOT_FILES, files), 4):  # the agent's own files
                changed[file_name(i)] = file_text(i, {rng.randrange(LINES): f"agent = {agent}"})
            if rng.random() < 0.4:  # a hot spot: line 0 conflicts, other lines do not
                hot = rng.randrange(HOT_FILES)
                line = 0 if rng.random() < 0.3 else 5 + 3 * (agent % 10)
                changed[file_name(hot)] = file_text(hot, {line: f"hot = {agent}"})
            _commit_branch(root, base, agent, changed, blobs, identity)
    finally:
        shutil.rmtree(blobs)
    git(root, "repack", "-adq")  # as any clone is: packed objects


def _commit_branch(
    root: Path, base: str, agent: int, changed: dict[str, str], blobs: Path, env: dict[str, str]
) -> None:
    names = []
    for n, text in enumerate(changed.values()):
        blob = blobs / f"{agent}-{n}"
        blob.write_text(text, encoding="utf-8")
        names.append(str(blob))
    oids = git(root, "hash-object", "-w", "--stdin-paths", input="\n".join(names) + "\n").split()
    index = blobs / f"index-{agent}"
    index_env = {**env, "GIT_INDEX_FILE": str(index)}
    git(root, "read-tree", base, env=index_env)
    info = "".join(f"100644 {oid}\t{path}\n" for oid, path in zip(oids, changed, strict=True))
    git(root, "update-index", "--index-info", input=info, env=index_env)
    tree = git(root, "write-tree", env=index_env)
    head = git(root, "commit-tree", tree, "-p", base, "-m", f"agent {agent}", env=env)
    git(root, "update-ref", f"refs/heads/parallel-dev/agent-{agent}", head)


def median_time(action: Callable[[], object], runs: int, before: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        before()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--branches", default="10,30,100,300", help="comma-separated counts")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--naive-runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic repository")
    args = parser.parse_args()

    for count in [int(n) for n in args.branches.split(",")]:
        tmp = Path(tempfile.mkdtemp(prefix="paradev-bench-"))
        root = tmp / "project"
        try:
            build(root, args.files, count, args.seed)
            run_bench(root, args)
        finally:
            if args.keep:
                print(f"repository kept at {root}")
            else:
                shutil.rmtree(tmp)


TARGETS = {30: "start-up + limit", 300: "0.15x limit"}  # issue 9


def run_bench(root: Path, args: argparse.Namespace) -> None:
    heads = git(root, "for-each-ref", "--format=%(objectname)", "refs/heads/parallel-dev/").split()
    base = git(root, "rev-parse", "main")
    pairs = list(combinations(heads, 2))
    stdin = "".join(f"{a} {b}\n" for a, b in pairs)
    paradev = [str(Path(sys.executable).with_name("paradev"))]
    if not Path(paradev[0]).exists():
        paradev = [sys.executable, "-m", "paradev"]
    cache = root / ".git" / "paradev" / "conflicts-cache.json"
    # Like an ordinary install, Python caches bytecode even when the caller's
    # environment says PYTHONDONTWRITEBYTECODE.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def quiet(*argv: str, input: str | None = None) -> None:
        subprocess.run(
            argv, cwd=root, input=input, capture_output=True, text=True, env=env, check=False
        )

    def drop_cache() -> None:
        cache.unlink(missing_ok=True)

    def nothing() -> None:
        pass

    def run_paradev() -> None:
        proc = subprocess.run(
            [*paradev, "conflicts", "--json"],
            cwd=root,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"paradev conflicts failed: {proc.stderr}")

    def naive() -> None:
        for a, b in pairs:
            quiet("git", "merge-tree", "--write-tree", a, b)

    diff_input = "".join(f"{h} {base}\n" for h in heads)
    run_paradev()  # writes the bytecode cache once
    limit_runs = args.runs if len(pairs) <= 5000 else 1
    results = {
        "paradev conflicts --json (cold)": median_time(run_paradev, args.runs, drop_cache),
        "paradev conflicts --json (warm)": median_time(run_paradev, args.runs, nothing),
        "git merge-tree --stdin, all pairs (limit)": median_time(
            lambda: quiet("git", "merge-tree", "--write-tree", "--stdin", "-z", input=stdin),
            limit_runs,
            nothing,
        ),
    }
    if len(pairs) <= 500:
        results["git merge-tree per pair (naive)"] = median_time(naive, args.naive_runs, nothing)
    results |= {
        "git diff-tree --stdin, all branches": median_time(
            lambda: quiet(
                "git",
                "diff-tree",
                "--stdin",
                "-r",
                "--no-renames",
                "--name-only",
                input=diff_input,
            ),
            args.runs,
            nothing,
        ),
        "paradev --help (start-up)": median_time(
            lambda: quiet(*paradev, "--help"), args.runs, nothing
        ),
    }
    report = subprocess.run(
        [*paradev, "conflicts", "--json"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    import json

    data = json.loads(report)
    conflicts, overlaps = data["summary"]["conflict"], data["summary"]["overlap"]
    version = git(root, "version")
    print(
        f"{version}; {os.cpu_count()} cores; {args.files} files, {len(heads)} branches, "
        f"{len(pairs)} pairs; {conflicts} conflicting pairs, {overlaps} harmless overlaps"
    )
    limit = results["git merge-tree --stdin, all pairs (limit)"]
    startup = results["paradev --help (start-up)"]
    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"  {name.ljust(width)}  {seconds * 1000:9.1f} ms  {seconds / limit:6.2f}x limit")
    cold = results["paradev conflicts --json (cold)"]
    warm = results["paradev conflicts --json (warm)"]
    print(
        f"  paradev cold / limit = {cold / limit:.2f}; warm / limit = {warm / limit:.2f}; "
        f"paradev cold - start-up = {(cold - startup) * 1000:.1f} ms; "
        f"JSON {len(report) / 1000:.0f} kB"
    )
    target = TARGETS.get(len(heads))
    if target:
        allowed = startup + limit if len(heads) == 30 else 0.15 * limit
        verdict = "met" if cold <= allowed else "NOT met"
        print(
            f"  target ({target} = {allowed * 1000:.0f} ms): cold {cold * 1000:.0f} ms, "
            f"warm {warm * 1000:.0f} ms -> {verdict} (cold)"
        )


if __name__ == "__main__":
    main()
