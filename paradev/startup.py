"""What the console script does before it imports anything of its own."""

from __future__ import annotations

import gc

START_UP_ALLOCATIONS = 100_000  # more than check or status allocate in all
_PYTHONS: list[tuple[int, int, int]] = []  # Python's thresholds, while start-up's are in place


def collect_after_start_up() -> None:
    """No cycle collection while start-up allocates what lives until exit (modules, classes).

    With Python's threshold (700) the imports of a check trigger ~19
    collections that free nothing and cost ~5 ms. The first collection now
    comes after START_UP_ALLOCATIONS; it puts Python's thresholds back, so a
    long-running command (run, merge, watch) collects as before from then on.
    """
    if _PYTHONS:  # already waiting for the first collection
        return
    _PYTHONS.append(gc.get_threshold())
    gc.set_threshold(START_UP_ALLOCATIONS, *_PYTHONS[0][1:])
    if _restore not in gc.callbacks:
        gc.callbacks.append(_restore)  # stays, idle: removing it mid-call skips the next one


def _restore(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and _PYTHONS:
        gc.set_threshold(*_PYTHONS.pop())
