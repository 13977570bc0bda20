"""Conflict snapshots a merge train keeps for the report, on real repositories."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pytest_mock import MockerFixture

from paradev import snapshots
from paradev.branches import find_heads
from paradev.conflicts import analyze
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, state_files
from tests.test_train import configure, work

Cli = Callable[..., Result]


def test_a_train_snapshot_reuses_the_merge_order_analysis_of_the_same_heads(
    repo: Path, cli: Cli, worktrees: Path, mocker: MockerFixture
) -> None:
    configure(repo)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"src/util.py": "VALUE = 'one'\n", "one.py": "1\n"})
    work(cli, worktrees, 2, {"src/util.py": "VALUE = 'one'\n", "two.py": "2\n"})
    assert cli("start", "3").code == 0  # work in progress: in the analysis, not in the train
    commit(agent_tree(worktrees, 3), {"src/util.py": "VALUE = 'three'\n"})
    ws = open_workspace(repo)
    heads = find_heads(ws)
    expected = snapshots.conflict_snapshot(
        analyze(ws, heads=heads.only({a: heads.heads[a] for a in (1, 2)})), "train"
    )
    again = mocker.spy(snapshots, "analyze")

    assert cli("merge").code == 0

    assert again.call_count == 0  # the merge order's analysis served the snapshot
    (kept,) = [s for s in state_files(repo)["conflict_snapshots"] if s["source"] == "train"]
    same = ("base", "base_commit", "agents", "pairs", "against_base", "pairs_left_out")
    assert {k: kept[k] for k in same} == {k: expected[k] for k in same}
    assert kept["agents"] == [1, 2] and [p["agents"] for p in kept["pairs"]] == [[1, 2]]
    assert kept["pairs"][0]["outcome"] == "overlap"  # the same change: no conflict


def test_a_train_snapshot_of_other_heads_analyses_them(
    repo: Path, cli: Cli, worktrees: Path, mocker: MockerFixture
) -> None:
    configure(repo, gate="exit 1")
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"one.py": "1\n"})
    assert cli("merge").code == 1  # the gate stops it
    again = mocker.spy(snapshots, "analyze")

    assert cli("merge", "--abort").code == 0  # another process: no analysis of its own

    assert again.call_count == 1
    kept = [s for s in state_files(repo)["conflict_snapshots"] if s["source"] == "train"]
    assert kept[-1]["agents"] == [1]
