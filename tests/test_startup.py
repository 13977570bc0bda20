"""The console script's start-up: no cycle collection until start-up is over, then Python's own."""

from __future__ import annotations

import gc

from paradev.startup import START_UP_ALLOCATIONS, collect_after_start_up


def test_the_first_collection_puts_pythons_thresholds_back() -> None:
    gc.collect()  # the start-up of this test session (it imported paradev.cli) is over
    before, callbacks = gc.get_threshold(), len(gc.callbacks)
    assert before[0] != START_UP_ALLOCATIONS
    collect_after_start_up()
    collect_after_start_up()  # a second call changes nothing
    assert gc.get_threshold() == (START_UP_ALLOCATIONS, *before[1:])
    assert len(gc.callbacks) == max(callbacks, 1)
    gc.collect()
    assert gc.get_threshold() == before
    assert len(gc.callbacks) == max(callbacks, 1)
