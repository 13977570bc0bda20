"""Benchmark: the slowest damaged plan or state paradev reads, next to the 2 s target.

The inputs are those of tests/test_fuzz.py (flipped bytes, nesting up to
6,000 deep, numbers with thousands of digits, wrong types, NULs, random
documents), drawn by Hypothesis with a fixed seed. Each one is written to a
real repository and ``paradev status`` runs on it in-process; the time of
the slowest input of each family is printed beside the target (2 s) and
beside the raw limit: the standard library parsing the same bytes
(``tomllib.loads`` / ``json.loads``), which is what any reader has to pay.
Nothing is asserted: tests never assert timing.

    python bench/fuzz.py [--examples 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from paradev import cli  # noqa: E402
from tests.fuzzing import FULL_PLAN, plan_inputs, state_inputs  # noqa: E402

TARGET = 2.0  # seconds for the slowest input


def make_repo(root: Path) -> Path:
    """A one-commit repository with the fuzzers' valid plan, and an isolated git identity."""
    config = root / "gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@paradev.invalid\n")
    os.environ.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    repo = root / "project"
    repo.mkdir()
    (repo / "plan.toml").write_text(FULL_PLAN, encoding="utf-8")
    for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *argv], cwd=repo, check=True)
    return repo


def paradev_status() -> int:
    """``paradev status`` in-process, output swallowed; its exit code."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli.main(["status"])


def raw_parse(data: bytes, toml: bool) -> float:
    """Seconds the standard library takes on the same bytes (whatever the outcome)."""
    start = time.perf_counter()
    with contextlib.suppress(Exception, RecursionError):
        text = data.decode("utf-8")
        tomllib.loads(text) if toml else json.loads(text)
    return time.perf_counter() - start


Row = tuple[float, float, str, int, int]  # paradev s, raw parse s, kind, size, exit code


def measure(
    strategy: st.SearchStrategy[tuple[str, bytes]],
    target: Path,
    toml: bool,
    examples: int,
) -> list[Row]:
    rows: list[Row] = []

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(damaged=strategy)
    def run(damaged: tuple[str, bytes]) -> None:
        kind, data = damaged
        target.write_bytes(data)
        start = time.perf_counter()
        code = paradev_status()
        elapsed = time.perf_counter() - start
        rows.append((elapsed, raw_parse(data, toml), kind, len(data), code))

    run()
    return rows


def report(name: str, rows: list[Row], restore: Callable[[], None]) -> None:
    restore()
    print(f"{name}: {len(rows)} inputs, exit codes {sorted({r[4] for r in rows})}")
    for kind in sorted({r[2] for r in rows}):
        worst = max(r for r in rows if r[2] == kind)
        print(
            f"  {kind:8} slowest {worst[0]:6.3f} s   (stdlib parse alone {worst[1]:6.3f} s, "
            f"{worst[3]:>7} bytes)"
        )
    slowest = max(rows)
    verdict = "within" if slowest[0] <= TARGET else "OVER"
    print(
        f"  slowest input: {slowest[0]:.3f} s ({slowest[2]}), {verdict} the {TARGET:.0f} s target"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="inputs per reader")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradev-bench-fuzz-") as tmp:
        repo = make_repo(Path(tmp))
        os.chdir(repo)
        plan, state = repo / "plan.toml", repo / ".git" / "paradev" / "state.json"
        rows = measure(plan_inputs(), plan, True, args.examples)
        report("plan.toml", rows, lambda: plan.write_text(FULL_PLAN, encoding="utf-8"))
        state.parent.mkdir(exist_ok=True)
        rows = measure(state_inputs(), state, False, args.examples)
        report("state.json (merge journal included)", rows, lambda: shutil.rmtree(state.parent))


if __name__ == "__main__":
    main()
