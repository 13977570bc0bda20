"""What the start-up benchmarks share: an isolated environment, timing, the paradev program."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def child_env(home: Path) -> dict[str, str]:
    """An isolated git identity; bytecode caching on, as in a normal install."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    config = home / "gitconfig"
    config.write_text("[user]\n\tname = Bench\n\temail = bench@paradev.invalid\n")
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    return env


def run(
    argv: Sequence[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def paradev_argv() -> list[str]:
    script = Path(sys.executable).parent / "paradev"
    return [str(script)] if script.exists() else [sys.executable, "-m", "paradev"]


def median_ms(
    argv: Sequence[str], cwd: Path, env: dict[str, str], runs: int, ok: tuple[int, ...] = (0,)
) -> float:
    """Median wall time of ``runs`` runs after one warm-up run (page cache, bytecode)."""
    run(argv, cwd, env, ok)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(argv, cwd, env, ok)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def interleaved_medians(
    rows: dict[str, Sequence[str]], cwd: Path, env: dict[str, str], runs: int, ok: tuple[int, ...]
) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per command, the commands taking turns so load hits each alike.

    CPU is user + system time of the command and every process it waited for
    (git children too): on a busy machine it moves far less than wall time.
    """
    import resource

    for argv in rows.values():
        run(argv, cwd, env, ok)  # warm-up
    wall: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(runs):
        for name, argv in rows.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            run(argv, cwd, env, ok)
            wall[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            used = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            cpu[name].append(used)
    return {
        name: (statistics.median(wall[name]) * 1000, statistics.median(cpu[name]) * 1000)
        for name in rows
    }
