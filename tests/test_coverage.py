"""Work no task will land: dropped commits, renamed issues, uncovered commits; one message each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from paradev.state import StateStore
from tests.helpers import Result, agent_tree, commit, git, rev, write

Cli = Callable[..., Result]


def _rename_issue(repo: Path, old: int, new: int) -> None:
    plan = repo / "plan.toml"
    text = plan.read_text(encoding="utf-8")
    text = text.replace(f"issue = {old}\n", f"issue = {new}\n")
    text = text.replace(f"depends_on = [{old}]", f"depends_on = [{new}]")
    plan.write_text(text, encoding="utf-8")


def _one_line(result: Result, needle: str) -> str:
    lines = [line for line in (result.out + result.err).splitlines() if needle in line]
    assert lines, result.out + result.err
    return lines[0]


def test_a_renamed_issue_gets_the_same_words_from_merge_run_batch_and_doctor(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    tree = agent_tree(set_up, 1)
    assert cli("start", "1").code == 0
    head = commit(tree, {"src/status.py": "x\n"}, "status")
    assert cli("complete", "1").code == 0
    _rename_issue(repo, 11, 15)
    main = rev(repo, "main")

    merged = cli("merge")
    batch = cli("run-batch", "--no-launch", "--agents", "1")
    doctor = cli("doctor")

    said = (
        "agent 1's branch parallel-dev/agent-1 holds the work of #11 (completed), which is "
        "no longer in plan.toml (renamed or removed?): put #11 back in the plan to land it, "
        "or run 'paradev drop 11' to set its commits aside"
    )
    assert merged.code == 0 and merged.out == f"{said}; not landed\nnothing to land\n"
    assert batch.code == 2 and said in batch.err
    assert doctor.code == 1 and said in _one_line(doctor, "holds the work of #11")
    assert rev(repo, "main") == main and rev(repo, "parallel-dev/agent-1") == head

    dropped = cli("drop", "11")
    assert dropped.code == 0, dropped.err
    assert rev(repo, "parallel-dev/agent-1") == main
    started = cli("run-batch", "--no-launch", "--agents", "1")
    assert started.code == 0, started.err
    assert StateStore(repo / ".git").read().status(15) == "in_progress"


def test_merge_never_lands_a_dropped_tasks_commits_with_other_work(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    tree = agent_tree(set_up, 2)
    assert cli("start", "2").code == 0
    commit(tree, {"init.py": "x\n"}, "init")
    assert cli("complete", "2").code == 0
    write(tree, {"scratch.txt": "busy\n"})  # the drop has to wait
    assert cli("drop", "12").code == 0
    main = rev(repo, "main")

    result = cli("merge")

    assert result.code == 0, result.err
    assert "still holds the commits of dropped #12" in result.out
    assert result.out.endswith("nothing to land\n")
    assert rev(repo, "main") == main


def test_commits_no_task_covers_get_the_same_words_from_merge_and_run_batch(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    commit(agent_tree(set_up, 3), {"stray.py": "x\n"}, "stray work")

    merged = cli("merge")
    batch = cli("run-batch", "--no-launch", "--agents", "3")
    doctor = cli("doctor")

    said = _one_line(merged, "no task covers")
    assert said.startswith("agent 3's branch parallel-dev/agent-3 has 1 commit(s) no task covers (")
    assert "stray work" in said and "'paradev start 3'" in said
    assert said.removesuffix("; not landed") in batch.err and batch.code == 2
    assert doctor.code == 1 and "no task covers" in doctor.out and "manual:" in doctor.out
    assert git(repo, "for-each-ref", "refs/paradev/backup") == ""
