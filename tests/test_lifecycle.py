"""The task lifecycle through the commands: assign, start, complete, status."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit

from paradev.errors import PreconditionError
from paradev.lifecycle import render_status
from paradev.limits import parse_hours, parse_int
from paradev.state import StateStore, TaskRecord
from tests.conftest import PLAN
from tests.helpers import Result, agent_tree, commit, git, rev, write

Snapshot = Callable[[], dict[str, object]]


def _state(repo: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((repo / ".git/paradev/state.json").read_text())
    return data


def _tasks(repo: Path) -> dict[int, dict[str, object]]:
    plan = tomlkit.parse((repo / "plan.toml").read_text(encoding="utf-8")).unwrap()
    return {t["issue"]: t for b in plan["batches"] for t in b.get("tasks", [])}


# -- assign ----------------------------------------------------------------------------------


@pytest.fixture
def no_dependencies(repo: Path) -> None:
    """#21 no longer waits for #11, so agent 1 may start it once #11 is done or dropped."""
    plan = repo / "plan.toml"
    plan.write_text(plan.read_text().replace("depends_on = [11]\n", ""))


def test_assign_adds_the_task_and_marks_it_assigned(repo: Path, cli: Callable[..., Result]) -> None:
    result = cli("assign", "2", "30", "Write the docs", "1.25")
    assert result.code == 0, result.err
    assert result.out == "assigned #30 to agent 2 in batch 'second'\n"
    assert _tasks(repo)[30] == {"agent": 2, "issue": 30, "title": "Write the docs", "hours": 1.25}
    record = StateStore(repo / ".git").read().tasks[30]
    assert (record.status, record.agent) == ("assigned", 2)
    assert record.assigned_at is not None
    assert (repo / "plan.toml").read_text(encoding="utf-8").startswith(PLAN)


def test_assign_to_a_named_or_new_batch(repo: Path, cli: Callable[..., Result]) -> None:
    assert cli("assign", "3", "31", "Early", "1", "--batch", "first").code == 0
    assert cli("assign", "3", "32", "Later", "2", "--batch", "third").code == 0
    plan = tomlkit.parse((repo / "plan.toml").read_text()).unwrap()
    assert [b["name"] for b in plan["batches"]] == ["first", "second", "third"]
    assert [t["issue"] for t in plan["batches"][0]["tasks"]] == [11, 12, 13, 31]
    assert [t["issue"] for t in plan["batches"][2]["tasks"]] == [32]


def test_assign_of_a_planned_task_only_marks_it(repo: Path, cli: Callable[..., Result]) -> None:
    before = (repo / "plan.toml").read_bytes()
    assert cli("assign", "1", "11", "Add the status command", "2").code == 0
    assert (repo / "plan.toml").read_bytes() == before
    assert StateStore(repo / ".git").read().tasks[11].status == "assigned"


TITLES = [
    'He said "stop"',
    "it's $(touch pwned) and `touch pwned2` and ${HOME}",
    "line one\nline two\r\nthree",
    "tabs\tand \\backslashes\\ and 'quotes'",
    "unicode: é ß 漢字 🎉 \u200b",
    "; rm -rf / #",
]


@pytest.mark.parametrize("title", TITLES)
def test_titles_are_stored_exactly_and_never_reach_a_shell(
    repo: Path, cli: Callable[..., Result], title: str
) -> None:
    result = cli("assign", "1", "40", title, "1")
    assert result.code == 0, result.err
    assert _tasks(repo)[40]["title"] == title
    status = cli("status", "--json").json()
    listed = {t["issue"]: t["title"] for t in status["agents"]["1"]["tasks"]}
    assert listed[40] == title
    assert not list(repo.rglob("pwned*"))


def test_a_title_reaches_hooks_only_through_the_environment(
    repo: Path, cli: Callable[..., Result], tmp_path: Path
) -> None:
    out = tmp_path / "hook-out.txt"
    text = (repo / "plan.toml").read_text()
    text = text.replace(
        "[gate]", f'[hooks]\non_start = \'printf %s "$PARADEV_TITLE" > "{out}"\'\n\n[gate]'
    )
    (repo / "plan.toml").write_text(text)
    assert cli("setup").code == 0
    title = "evil $(touch pwned) `touch pwned2`"
    assert cli("assign", "3", "5", title, "1", "--batch", "zero").code == 0
    # agent 3's next task in plan order is #13; finish it first
    assert cli("start", "3").code == 0 and cli("complete", "3", "--empty").code == 0
    assert cli("start", "3").code == 0
    assert out.read_text() == title
    assert not list(repo.parent.rglob("pwned*"))


ASSIGN_ERRORS = [
    (["x", "5", "t", "1"], r"AGENT must be a whole number, got 'x'"),
    (["0", "5", "t", "1"], r"AGENT must be > 0, got '0'"),
    (["4", "5", "t", "1"], r"unknown agent 4: the plan has agents 1\.\.3"),
    (["1", "five", "t", "1"], r"ISSUE must be a whole number, got 'five'"),
    (["1", "0", "t", "1"], r"ISSUE must be > 0"),
    (["1", "5", "t", "abc"], r"hours must be a number, got 'abc'"),
    (["1", "5", "t", ""], r"hours must be a number, got ''"),
    (["1", "5", "t", "nan"], r"hours must be a finite number >= 0, got 'nan'"),
    (["1", "5", "t", "NaN"], r"hours must be a finite number >= 0, got 'NaN'"),
    (["1", "5", "t", "inf"], r"hours must be a finite number >= 0, got 'inf'"),
    (["1", "5", "t", "1e999"], r"hours must be a finite number >= 0, got '1e999'"),
    (["1", "5", "t", "-inf"], r"hours must be a finite number >= 0, got '-inf'"),
    (["1", "5", "t", "--", "-.5"], r"hours must be a finite number >= 0, got '-.5'"),
    (["1", "5", "t", "-1"], r"hours must be a finite number >= 0, got '-1'"),
    (["1", "5", "t", "1e308"], r"hours must be at most 100000, got '1e308'"),
    (["1", "5", " ", "1"], r"TITLE must not be empty; say what the task is"),
    (["1", "5", "", "1"], r"TITLE must not be empty"),
    (["--batch", "  ", "1", "5", "t", "1"], r"--batch must name a batch, not only spaces"),
    (["--batch", "", "1", "5", "t", "1"], r"--batch must name a batch"),
    (["1_0", "5", "t", "1"], r"AGENT must be a whole number, got '1_0'"),
    (["\u0661", "5", "t", "1"], r"AGENT must be a whole number"),
    (["1", "5", "t", "1_0"], r"hours must be a number, got '1_0'"),
    (["1", "5", "t", "0x10"], r"hours must be a number, got '0x10'"),
    # an issue already in the plan: different values are refused, never silently dropped
    (
        ["1", "11", "Another title", "2"],
        r"issue #11 is already in the plan as 'Add the status command' \(2h, batch 'first'\); "
        r"edit plan.toml to change it",
    ),
    (["1", "11", "Add the status command", "5"], r"already in the plan as"),
    (
        ["--batch", "second", "1", "11", "Add the status command", "2"],
        r"already in the plan as",
    ),
    (["2", "11", "dup", "1"], r"issue #11 is already planned for agent 1"),
    (["1", "5", "t"], r"the following arguments are required: HOURS"),
]


@pytest.mark.parametrize(("args", "expected"), ASSIGN_ERRORS)
def test_bad_assign_arguments_change_nothing(
    repo: Path, cli: Callable[..., Result], snapshot: Snapshot, args: list[str], expected: str
) -> None:
    before = snapshot()
    result = cli("assign", *args)
    assert result.code == 2, result
    assert re.search(expected, result.err), result.err
    assert result.err.startswith("paradev: ") and result.err.count("\n") == 1
    assert snapshot() == before


def test_assign_refuses_a_task_that_is_already_done(
    set_up: Path, repo: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    assert cli("start", "1").code == 0
    before = snapshot()
    result = cli("assign", "1", "11", "Again", "1")
    assert result.code == 2
    assert result.err == "paradev: issue #11 is already in_progress; nothing to assign\n"
    assert snapshot() == before


def test_parse_helpers() -> None:
    assert parse_hours("2.5") == 2.5 and parse_hours(0) == 0.0
    assert str(parse_hours("-0")) == "0.0" and parse_hours(" .5 ") == 0.5
    assert parse_int(" 3 ", "N") == 3
    assert parse_int("7", "N") == 7
    with pytest.raises(PreconditionError):
        parse_int("1.5", "N")


# -- start / complete ------------------------------------------------------------------------


def test_start_takes_the_next_task_in_plan_order_and_records_the_base(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    base = rev(repo, "main")
    result = cli("start", "1")
    assert result.code == 0, result.err
    assert result.out == f"agent 1 started #11 Add the status command (base {base})\n"
    record = StateStore(repo / ".git").read().tasks[11]
    assert (record.status, record.base_commit) == ("in_progress", base)
    assert record.started_at is not None and record.assigned_at == record.started_at
    commit(agent_tree(set_up, 1), {"src/status.py": "STATUS = 1\n"}, "status")
    assert cli("complete", "1").code == 0
    assert cli("merge").code == 0  # #21 depends on #11: it starts once #11 has landed
    assert "started #21 Config command" in cli("start", "1").out


def test_start_refuses_a_task_whose_dependency_has_not_landed(
    set_up: Path, repo: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    assert cli("start", "1").code == 0
    commit(agent_tree(set_up, 1), {"src/status.py": "STATUS = 1\n"}, "status")
    assert cli("complete", "1").code == 0
    before = snapshot()
    refused = cli("start", "1")  # next is #21, which depends on #11: completed, not merged
    assert refused.code == 2
    assert refused.err == (
        "paradev: #21 (agent 1) waits for #11 to be merged; "
        "finish and land that work first ('paradev merge'), then start again\n"
    )
    assert snapshot() == before
    assert cli("merge").code == 0
    assert rev(repo, "main") == rev(agent_tree(set_up, 1), "HEAD")
    started = cli("start", "1")
    assert started.code == 0, started.err
    assert "started #21 Config command" in started.out
    assert StateStore(repo / ".git").read().tasks[21].status == "in_progress"


def test_start_and_run_batch_give_the_same_reason_for_a_waiting_task(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    """A dependency inside one batch: run-batch skips the task, start refuses it, alike."""
    plan = PLAN.replace("  issue = 12\n", "  issue = 12\n  depends_on = [11]\n")
    commit(repo, {"plan.toml": plan}, "#12 waits for #11")
    batch = cli("run-batch", "--no-launch", "--agents", "1,2")
    assert batch.code == 0, batch.err
    reason = "#12 (agent 2) waits for #11 to be merged"
    assert f"skipped: {reason}\n" in batch.out
    refused = cli("start", "2")
    assert refused.code == 2
    assert refused.err.startswith(f"paradev: {reason}; ")
    assert StateStore(repo / ".git").read().status(12) == "planned"


def test_start_moves_a_branch_with_nothing_of_its_own_to_base(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    new_base = commit(repo, {"later.txt": "landed meanwhile\n"}, "base moves on")

    result = cli("start", "1")

    assert result.code == 0, result.err
    assert rev(repo, "parallel-dev/agent-1") == new_base
    assert (tree / "later.txt").read_text() == "landed meanwhile\n"
    assert git(tree, "status", "--porcelain") == ""
    assert StateStore(repo / ".git").read().tasks[11].base_commit == new_base


def test_start_leaves_a_dirty_worktree_where_it_is_and_records_its_fork_point(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    old_base = rev(repo, "main")
    write(tree, {"src/util.py": "VALUE = 7\n", "notes.txt": "mine\n"})
    commit(repo, {"later.txt": "landed meanwhile\n"}, "base moves on")

    result = cli("start", "1")

    assert result.code == 0, result.err
    assert rev(repo, "parallel-dev/agent-1") == old_base
    assert (tree / "src/util.py").read_text() == "VALUE = 7\n"
    assert (tree / "notes.txt").read_text() == "mine\n"
    assert StateStore(repo / ".git").read().tasks[11].base_commit == old_base


def test_start_records_the_fork_point_of_a_branch_with_its_own_commits(
    set_up: Path, no_dependencies: None, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    old_base = rev(repo, "main")
    assert cli("start", "1").code == 0
    head = commit(tree, {"src/status.py": "x\n"}, "status")
    assert cli("complete", "1").code == 0
    commit(repo, {"later.txt": "landed meanwhile\n"}, "base moves on")

    result = cli("start", "1")

    assert result.code == 0, result.err
    assert "started #21" in result.out
    assert rev(repo, "parallel-dev/agent-1") == head
    assert StateStore(repo / ".git").read().tasks[21].base_commit == old_base


def test_complete_finds_where_the_work_began_when_the_recorded_start_is_unusable(
    set_up: Path, no_dependencies: None, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    fork = rev(repo, "main")
    assert cli("start", "1").code == 0
    commit(tree, {"src/status.py": "x\n"}, "status")
    store = StateStore(repo / ".git")
    with store.update() as state:  # hand-edited: an option, not a commit id
        state.tasks[11].start_commit = "--output=stolen"

    result = cli("complete", "1")

    assert result.code == 0, result.err
    record = store.read().tasks[11]
    assert record.start_commit == fork
    assert record.files_modified == ["src/status.py"]
    assert not (tree / "stolen").exists() and not (repo / "stolen").exists()


def test_start_prefers_plan_order_over_assignment_order(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("assign", "2", "60", "Assigned later, planned later", "1").code == 0
    assert cli("assign", "2", "12", "Add the init command", "1.5").code == 0
    assert "started #12" in cli("start", "2").out


def test_start_refuses_a_second_task_and_an_empty_queue(
    set_up: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    assert cli("start", "3").code == 0
    before = snapshot()
    busy = cli("start", "3")
    assert busy.code == 2
    assert busy.err == (
        "paradev: agent 3 is already working on #13; run 'paradev complete 3' first\n"
    )
    assert cli("complete", "3", "--empty").code == 0
    done = cli("start", "3")
    assert done.code == 2
    assert "agent 3 has no planned or assigned task left" in done.err
    assert snapshot() != before  # (complete changed the state, start did not)


def test_start_needs_the_worktree(repo: Path, cli: Callable[..., Result]) -> None:
    result = cli("start", "1")
    assert result.code == 2
    assert "agent 1 has no worktree at" in result.err and "run 'paradev setup' first" in result.err


def test_complete_counts_the_branch_diff_not_base_and_not_uncommitted(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    assert cli("start", "1").code == 0
    commit(tree, {"src/status.py": "x\n", "src/util.py": "VALUE = 3\n"}, "status")
    commit(tree, {"README.md": None}, "drop readme")
    commit(repo, {"base-only.txt": "after branching\n"}, "base moves on")
    write(tree, {"scratch.txt": "not committed\n", "src/app.py": "edited\n"})
    result = cli("complete", "1")
    assert result.code == 0, result.err
    assert result.out == (
        "agent 1 completed #11 (3 files changed)\n  README.md\n  src/status.py\n  src/util.py\n"
    )
    assert result.err == (
        "paradev: warning: 2 uncommitted path(s) in the worktree are not counted: "
        "scratch.txt, src/app.py\n"
    )
    record = StateStore(repo / ".git").read().tasks[11]
    assert record.status == "completed"
    assert record.files_modified == ["README.md", "src/status.py", "src/util.py"]
    assert record.head_commit == rev(tree, "HEAD")
    assert record.completed_at is not None


def test_complete_without_a_task_in_progress(set_up: Path, cli: Callable[..., Result]) -> None:
    result = cli("complete", "2")
    assert result.code == 2
    assert result.err == "paradev: agent 2 has no task in progress; run 'paradev start 2'\n"


@pytest.mark.parametrize("command", ["start", "complete"])
@pytest.mark.parametrize(("agent", "message"), [("4", "unknown agent 4"), ("a", "whole number")])
def test_start_and_complete_check_the_agent(
    set_up: Path, cli: Callable[..., Result], command: str, agent: str, message: str
) -> None:
    result = cli(command, agent)
    assert result.code == 2 and message in result.err


# -- status ----------------------------------------------------------------------------------


def test_status_json_has_the_design_keys_for_every_agent(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree1, tree2 = agent_tree(set_up, 1), agent_tree(set_up, 2)
    write(repo, {"plan.toml": PLAN.replace("  depends_on = [11]\n", "")})  # #21 may start now
    assert cli("start", "1").code == 0
    commit(tree1, {"a.py": "a\n"})
    commit(tree1, {"b.py": "b\n"})
    assert cli("complete", "1").code == 0
    assert cli("start", "1").code == 0
    assert cli("start", "2").code == 0
    write(tree2, {"wip.py": "wip\n"})
    commit(repo, {"main.txt": "main moves\n"})
    data = cli("status", "--json").json()
    assert set(data) >= {"agents", "merge_order", "train"}
    assert list(data["agents"]) == ["1", "2", "3"]
    for info in data["agents"].values():
        assert set(info) >= {
            "branch",
            "worktree",
            "current_task",
            "completed_tasks",
            "total_hours",
            "ahead",
            "behind",
            "dirty",
        }
    one, two, three = (data["agents"][k] for k in ("1", "2", "3"))
    assert one["branch"] == "parallel-dev/agent-1" and one["worktree"] == str(tree1)
    assert one["current_task"]["issue"] == 21 and one["current_task"]["status"] == "in_progress"
    assert [t["issue"] for t in one["completed_tasks"]] == [11]
    assert one["completed_tasks"][0]["files_modified"] == ["a.py", "b.py"]
    assert one["total_hours"] == 2.0
    assert (one["ahead"], one["behind"], one["dirty"]) == (2, 1, False)
    assert two["current_task"]["title"] == "Add the init command"
    assert (two["ahead"], two["behind"], two["dirty"]) == (0, 1, True)
    assert three["current_task"] is None and three["completed_tasks"] == []
    assert three["total_hours"] == 0
    assert data["merge_order"] == [] and data["train"] is None


def test_status_sums_hours_of_completed_tasks(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    write(repo, {"plan.toml": PLAN.replace("  depends_on = [11]\n", "")})  # #21 may start now
    for _ in range(2):
        assert cli("start", "1").code == 0
        assert cli("complete", "1", "--empty").code == 0
    data = cli("status", "--json").json()
    assert data["agents"]["1"]["total_hours"] == 4.0
    assert [t["issue"] for t in data["agents"]["1"]["completed_tasks"]] == [11, 21]


def test_status_works_for_five_agents_before_and_after_setup(
    repo: Path, cli: Callable[..., Result]
) -> None:
    (repo / "plan.toml").write_text("[agents]\ncount = 5\n", encoding="utf-8")
    before = cli("status", "--json")
    assert before.code == 0, before.err
    assert list(before.json()["agents"]) == ["1", "2", "3", "4", "5"]
    assert before.json()["agents"]["5"]["ahead"] is None
    assert cli("setup").code == 0
    after = cli("status", "--json").json()
    assert all(a["ahead"] == 0 and a["dirty"] is False for a in after["agents"].values())
    table = cli("status")
    assert table.code == 0
    assert table.out.count("Agent ") == 5


def test_status_table_reads_well(set_up: Path, repo: Path, cli: Callable[..., Result]) -> None:
    assert cli("start", "2").code == 0
    write(agent_tree(set_up, 2), {"wip.txt": "x\n"})
    out = cli("status").out
    assert out.splitlines()[0] == "paradev status (base: main)"
    assert "Agent 2  parallel-dev/agent-2  (0 ahead, 0 behind; worktree dirty)" in out
    assert "  current:  #12 Add the init command (1.5h)" in out
    assert "Agent 1  parallel-dev/agent-1  (0 ahead, 0 behind; worktree clean)" in out
    assert "  done:     none  (total 0h)" in out


def test_render_status_shows_missing_worktrees_order_and_train() -> None:
    report = {
        "base": "main",
        "agents": {
            "1": {
                "branch": "b1",
                "worktree": "/w/1",
                "exists": False,
                "ahead": None,
                "behind": None,
                "dirty": None,
                "current_task": None,
                "completed_tasks": [{"issue": 3}],
                "total_hours": 1.5,
            }
        },
        "merge_order": [2, 1],
        "train": {"status": "stopped"},
    }
    text = render_status(report)
    assert "Agent 1  b1  (branch missing; worktree missing)" in text
    assert "  done:     #3  (total 1.5h)" in text
    assert "merge order: 2 -> 1" in text
    assert "merge train in progress: stopped" in text


def test_status_runs_from_any_worktree(set_up: Path, cli: Callable[..., Result]) -> None:
    result = cli("status", "--json", cwd=agent_tree(set_up, 3))
    assert result.code == 0
    assert result.json()["agents"]["3"]["worktree"] == str(agent_tree(set_up, 3))
    assert git(agent_tree(set_up, 3), "status", "--porcelain") == ""


def test_status_table_keeps_a_multi_line_title_on_one_line(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    assert cli("assign", "3", "70", "first\nsecond", "1", "--batch", "first").code == 0
    assert cli("start", "3").code == 0 and cli("complete", "3", "--empty").code == 0
    assert cli("start", "3").code == 0
    assert "  current:  #70 first\\nsecond (1h)" in cli("status").out


def test_start_and_complete_refuse_a_worktree_on_another_branch(
    set_up: Path, repo: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    tree = agent_tree(set_up, 1)
    git(tree, "switch", "--quiet", "-c", "elsewhere")
    before = snapshot()
    result = cli("start", "1")
    assert result.code == 2
    assert result.err == (
        f"paradev: agent 1's worktree {tree} is on elsewhere, not parallel-dev/agent-1; "
        f"finish what is in progress there and run 'git -C {tree} switch parallel-dev/agent-1' "
        "first\n"
    )
    assert snapshot() == before
    git(tree, "switch", "--quiet", "parallel-dev/agent-1")
    assert cli("start", "1").code == 0
    git(tree, "switch", "--quiet", "--detach")
    refused = cli("complete", "1")
    assert refused.code == 2 and "is on a detached HEAD, not parallel-dev/agent-1" in refused.err
    assert StateStore(repo / ".git").read().tasks[11].status == "in_progress"


def test_status_shows_every_agent_when_one_worktree_is_broken(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    (agent_tree(set_up, 2) / ".git").write_text("gitdir: /nowhere\n", encoding="utf-8")
    result = cli("status")
    assert result.code == 0, result.err
    assert "worktree broken (run 'paradev setup' to repair it)" in result.out
    assert "Agent 3  parallel-dev/agent-3  (0 ahead, 0 behind; worktree clean)" in result.out
    data = cli("status", "--json").json()["agents"]
    assert (data["2"]["broken"], data["2"]["dirty"], data["3"]["broken"]) == (True, None, False)


def test_status_says_when_base_itself_is_missing(repo: Path, cli: Callable[..., Result]) -> None:
    text = (repo / "plan.toml").read_text(encoding="utf-8")
    (repo / "plan.toml").write_text(text.replace('base = "main"', 'base = "dev"'))
    result = cli("status")
    assert result.code == 0, result.err
    assert "base branch 'dev' does not exist: create it or set project.base" in result.out
    assert "Agent 1  parallel-dev/agent-1  (no base to compare; worktree missing)" in result.out
    assert cli("status", "--json").json()["base_exists"] is False


# -- complete --empty, reopen, drop ----------------------------------------------------------


def _record(repo: Path, issue: int) -> TaskRecord:
    return StateStore(repo / ".git").read().tasks[issue]


def test_complete_refuses_a_branch_without_a_new_commit(
    set_up: Path, no_dependencies: None, repo: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    tree = agent_tree(set_up, 1)
    assert cli("start", "1").code == 0
    before = snapshot()

    refused = cli("complete", "1")

    assert refused.code == 2
    assert refused.err == (
        f"paradev: #11 has no commit on parallel-dev/agent-1 since it started "
        f"({rev(repo, 'main')[:12]}); commit the work first, or run "
        "'paradev complete 1 --empty' if the task needed no change\n"
    )
    assert snapshot() == before
    head = commit(tree, {"src/status.py": "x\n"}, "status")
    assert cli("complete", "1").code == 0
    assert cli("start", "1").code == 0  # 21: the previous task's head is where it begins
    assert cli("complete", "1").code == 2
    meant = cli("complete", "1", "--empty")
    assert meant.code == 0 and meant.out.startswith("agent 1 completed #21 (1 files changed)")
    assert (_record(repo, 21).status, _record(repo, 21).head_commit) == ("completed", head)


def test_reopen_takes_a_completed_task_back_into_work_and_keeps_its_branch(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    assert cli("start", "1").code == 0
    head = commit(tree, {"src/status.py": "x\n"}, "status")
    assert cli("complete", "1").code == 0

    result = cli("reopen", "11")

    assert result.code == 0, result.err
    assert result.out == "agent 1 is working on #11 Add the status command again\n"
    record = _record(repo, 11)
    assert (record.status, record.head_commit, record.completed_at) == ("in_progress", None, None)
    assert rev(repo, "parallel-dev/agent-1") == head
    again = cli("complete", "1")  # its earlier commits are still its work
    assert again.code == 0 and "(1 files changed)" in again.out
    assert _record(repo, 11).head_commit == head


def test_reopen_refusals_say_what_to_do(
    set_up: Path, no_dependencies: None, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    assert cli("start", "1").code == 0
    commit(agent_tree(set_up, 1), {"status.py": "x\n"})
    assert cli("complete", "1").code == 0
    assert cli("start", "1").code == 0
    before = snapshot()

    planned = cli("reopen", "13")
    running = cli("reopen", "21")
    busy = cli("reopen", "11")
    unknown = cli("reopen", "99")

    assert planned.code == running.code == busy.code == unknown.code == 2
    assert "#13 has not started (planned); start it with 'paradev start 3'" in planned.err
    assert "#21 is already in progress on agent 1" in running.err
    assert "agent 1 is working on #21; complete it first" in busy.err
    assert "issue #99 is not in the plan" in unknown.err
    assert snapshot() == before


def test_drop_sets_a_tasks_commits_aside_and_the_agent_goes_on_from_base(
    set_up: Path, no_dependencies: None, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    base = rev(repo, "main")
    assert cli("start", "1").code == 0
    commit(tree, {"src/a.py": "a\n"}, "first")
    head = commit(tree, {"src/b.py": "b\n"}, "second")
    assert cli("complete", "1").code == 0

    result = cli("drop", "11")

    assert result.code == 0, result.err
    backups = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/paradev/backup")
    ref, kept = backups.split()
    assert re.fullmatch(r"refs/paradev/backup/parallel-dev/agent-1/dropped-11-\d{8}T\d+Z", ref)
    assert kept == head
    assert result.out == (
        f"dropped #11 (agent 1)\n  2 commit(s) kept at {ref}; taken off the branch\n"
    )
    assert rev(repo, "parallel-dev/agent-1") == base
    assert not (tree / "src/a.py").exists() and git(tree, "status", "--porcelain") == ""
    assert _record(repo, 11).status == "dropped"
    assert "started #21" in cli("start", "1").out
    assert _record(repo, 21).base_commit == base


def test_drop_in_a_dirty_worktree_waits_and_the_next_start_takes_them_off(
    set_up: Path, no_dependencies: None, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    base = rev(repo, "main")
    assert cli("start", "1").code == 0
    head = commit(tree, {"src/a.py": "a\n"}, "first")
    assert cli("complete", "1").code == 0
    write(tree, {"notes.txt": "mine\n"})

    result = cli("drop", "11")

    assert result.code == 0, result.err
    assert "1 commit(s) kept at refs/paradev/backup/" in result.out
    assert "still on the branch" in result.out
    assert "uncommitted changes" in result.err
    assert rev(repo, "parallel-dev/agent-1") == head
    refused = cli("start", "1")
    assert refused.code == 2
    assert "still holds the commits of dropped #11" in refused.err
    assert StateStore(repo / ".git").read().status(21) == "planned"
    (tree / "notes.txt").unlink()
    started = cli("start", "1")
    assert started.code == 0, started.err
    assert rev(repo, "parallel-dev/agent-1") == base
    assert _record(repo, 21).status == "in_progress"


def test_drop_of_a_planned_task_needs_no_backup_and_it_is_never_started(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    result = cli("drop", "13")

    assert result.code == 0, result.err
    assert result.out == "dropped #13 (agent 3)\n"
    assert git(repo, "for-each-ref", "refs/paradev/backup") == ""
    refused = cli("start", "3")
    assert refused.code == 2 and "agent 3 has no planned or assigned task left" in refused.err
    again = cli("drop", "13")
    assert again.code == 2 and "#13 is already dropped" in again.err
    unknown, word = cli("drop", "99"), cli("reopen", "x")
    assert unknown.err == "paradev: issue #99 is neither in the plan nor in the state\n"
    assert word.code == 2 and "ISSUE must be a whole number" in word.err


def test_a_dropped_task_reopens_with_its_commits_back(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 2)
    assert cli("start", "2").code == 0
    head = commit(tree, {"init.py": "x\n"}, "init")
    assert cli("complete", "2").code == 0
    assert cli("drop", "12").code == 0

    result = cli("reopen", "12")

    assert result.code == 0, result.err
    assert rev(repo, "parallel-dev/agent-2") == head
    assert (tree / "init.py").read_text() == "x\n"
    assert _record(repo, 12).status == "in_progress"
    assert cli("complete", "2").code == 0


def test_merged_work_cannot_be_dropped_or_reopened(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "3").code == 0
    commit(agent_tree(set_up, 3), {"health.py": "x\n"})
    assert cli("complete", "3").code == 0
    assert cli("merge").code == 0

    dropped = cli("drop", "13")
    reopened = cli("reopen", "13")

    assert dropped.code == reopened.code == 2
    assert "#13 is merged: its work is on base; revert it there" in dropped.err
    assert "#13 is merged: its work is on base; plan a new task" in reopened.err


def test_drop_and_reopen_wait_for_a_command_holding_the_agent(
    set_up: Path, repo: Path, cli: Callable[..., Result], snapshot: Snapshot
) -> None:
    assert cli("start", "2").code == 0
    commit(agent_tree(set_up, 2), {"init.py": "x\n"})
    assert cli("complete", "2").code == 0
    before = snapshot()

    with StateStore(repo / ".git").agent_lock(2, "paradev run-batch"):
        dropped = cli("drop", "12")
        reopened = cli("reopen", "12")

    assert dropped.code == reopened.code == 2
    assert "agent 2 is busy: paradev run-batch" in dropped.err
    assert "agent 2 is busy: paradev run-batch" in reopened.err
    assert snapshot() == before


# An agent that says one line, then works on quietly until told to stop.
QUIET_AGENT = r"""
import sys, time
from pathlib import Path
print("started", flush=True)
while not Path(sys.argv[1]).exists():
    time.sleep(0.05)
"""


def test_status_shows_each_running_agent_with_its_pid_age_and_quiet_time(
    repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    import os
    import signal
    import sys
    import time

    from tests.helpers import plan_with, start_paradev

    script, stop = tmp_path / "agent.py", tmp_path / "stop"
    script.write_text(QUIET_AGENT)
    plan_with(repo, agent=[sys.executable, str(script), str(stop)])
    assert cli("setup").code == 0
    began = time.monotonic()
    run = start_paradev(repo, "run-batch", "--agents", "1")
    try:
        log = repo / ".git" / "paradev" / "logs" / "issue-11.log"
        while not (log.exists() and "started" in log.read_text()):
            assert run.poll() is None, run.communicate()
            time.sleep(0.05)
        quiet_since = time.time() - 125  # as if its last output was 2m 05s ago
        os.utime(log, (quiet_since, quiet_since))

        task = cli("status", "--json").json()["agents"]["1"]["current_task"]
        text = cli("status").out
        waited = time.monotonic() - began
    finally:
        stop.write_text("")
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=60)

    assert task["issue"] == 11 and task["agent_running"] is True
    assert 0 <= task["agent_elapsed_seconds"] <= waited + 1
    assert 125 <= task["agent_quiet_seconds"] < 185
    pid = task["agent_pid"]
    assert re.search(rf"\n  running:  agent pid {pid} for \d+s, last output 2m 0\ds ago\n", text)
    idle = cli("status", "--json").json()["agents"]["2"]["current_task"]
    assert idle is None
    ended = cli("status", "--json").json()["agents"]["1"]
    assert "agent_elapsed_seconds" not in json.dumps(ended)  # no longer running: no timing
    assert "  running:  " not in cli("status").out
