"""The crash soak, bounded: SIGKILL the merge train at 30+ moments (10+ inside a rebase),
resume only as paradev says (issue 8's counts, asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak

KILLS = 30
REBASE_KILLS = 10


@pytest.mark.slow
def test_train_killed_at_seeded_moments_and_resumed_as_told_loses_nothing(
    tmp_path: Path,
) -> None:
    result = soak.soak(
        tmp_path, kills=KILLS, rebase_kills=REBASE_KILLS, seed=101, max_rounds=40, max_kills=4
    )

    figures = soak.table(result, KILLS, REBASE_KILLS)
    assert result.kills >= KILLS, figures
    assert result.rebase_kills >= REBASE_KILLS, figures
    assert not result.needing_person, figures
    assert not result.violations, figures


@pytest.mark.slow
def test_checks_see_work_missing_from_main_and_parse_the_next_step(tmp_path: Path) -> None:
    """The soak's own checks can fail: completed work that never landed is a violation."""
    home = tmp_path / "home"
    home.mkdir()
    scn = soak.build(tmp_path / "soak", soak.soak_env(home))

    nothing_landed = soak.finish_round(scn, soak.Round(seed=0))
    reported = soak.finish_round(scn, soak.Round(seed=0, not_landed={1, 2, 3, 4, 5}))

    steps = ", ".join(f"'agent {{a}}: step {n}'" for n in range(soak.COMMITS))
    assert nothing_landed.violations == [
        f"agent {a}: change missing from main, never reported (missing: {steps.format(a=a)})"
        for a in range(1, 6)
    ]
    assert not reported.violations
    assert soak.holds_change(scn, scn.heads[1], scn.heads[1])
    assert not soak.holds_change(scn, "main", scn.heads[1])
    assert soak.next_step("x\nfix it, then run paradev merge --continue, --skip or --abort") == [
        "merge",
        "--continue",
    ]
    assert soak.next_step("merge train stopped") is None
