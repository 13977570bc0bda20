"""What status must not hide, on real repositories: failures, a stopped train, strays."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paradev.state import StateStore
from tests.helpers import (
    Result,
    agent_tree,
    commit,
    git,
    plan_with,
    signal_and_wait,
    start_paradev,
    wait_for_file,
    work,
    write,
)

Cli = Callable[..., Result]

# An agent that fails: says why on its output, exits 3.
FAILING = "import sys; print('boom: cannot do it', flush=True); sys.exit(3)"
# An agent that writes its pid, then waits to be stopped.
WAITING = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"


def status(cli: Cli) -> tuple[str, Any]:
    text, data = cli("status"), cli("status", "--json")
    assert text.code == data.code == 0, text.err + data.err
    return text.out, data.json()


# -- failed and interrupted tasks ---------------------------------------------------------------


def test_a_failed_task_shows_its_reason_log_and_way_out(set_up: Path, repo: Path, cli: Cli) -> None:
    plan_with(repo, agent=[sys.executable, "-c", FAILING])
    assert cli("run-batch", "--agents", "2").code == 1

    text, data = status(cli)

    record = StateStore(repo / ".git").read().tasks[12]
    assert record.status == "failed" and record.log and record.error
    (task,) = [t for t in data["agents"]["2"]["tasks"] if t["issue"] == 12]
    assert task["error"] == {"reason": record.error, "log": record.log, "at": record.failed_at}
    assert "exit code 3" in task["error"]["reason"]
    assert "boom: cannot do it" in Path(task["error"]["log"]).read_text()
    assert data["agents"]["2"]["state"] == "failed"
    assert f"  failed: #12 {record.error}" in text
    assert f"    log: {record.log}" in text
    assert (
        "    next: 'paradev run-batch' or 'paradev run' starts it again once the cause is fixed; "
        in text
    )
    assert "'paradev reopen 12'" in text and "'paradev drop 12'" in text
    others = [t for a in ("1", "3") for t in data["agents"][a]["tasks"]]
    assert not any("error" in t for t in others)


def test_an_interrupted_task_shows_why_and_its_log(
    set_up: Path, repo: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "agent.pid"
    plan_with(repo, agent=[sys.executable, "-c", WAITING, str(pidfile)])
    paradev = start_paradev(repo, "run-batch", "--agents", "3")
    agent = int(wait_for_file(pidfile, paradev))

    err, survivors = signal_and_wait(paradev, signal.SIGTERM, [agent])

    assert survivors == [] and paradev.returncode == 128 + signal.SIGTERM, err
    from tests.helpers import run_process

    text = run_process(repo, "status").out
    data = run_process(repo, "status", "--json").json()
    (task,) = data["agents"]["3"]["tasks"]
    assert task["status"] == "interrupted"
    assert "interrupted (SIGTERM)" in task["error"]["reason"]
    assert task["error"]["log"] and Path(task["error"]["log"]).exists()
    assert data["agents"]["3"]["state"] == "interrupted"
    assert "  interrupted: #13 " in text and f"    log: {task['error']['log']}" in text


# -- merged and completed-not-landed ---------------------------------------------------------


def test_merged_work_is_told_apart_from_completed_work_not_landed(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo)
    work(cli, set_up, 1, {"one.py": "ONE = 1\n"})
    assert cli("merge").code == 0  # #11 lands
    work(cli, set_up, 1, {"two.py": "TWO = 2\n"})  # #21 completed, not landed

    text, data = status(cli)

    one = data["agents"]["1"]
    assert (one["merged_issues"], one["not_landed_issues"]) == ([11], [21])
    assert [t["issue"] for t in one["completed_tasks"]] == [11, 21]  # the design's key stays
    assert one["state"] == "completed"
    assert "  done:     #11, #21  (total 4h)" in text
    assert "    merged:     #11" in text
    assert "    not landed: #21 (completed; 'paradev merge' lands it)" in text


def test_a_dropped_task_shows_where_its_commits_are_kept(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo)
    work(cli, set_up, 3, {"three.py": "3\n"})
    assert cli("drop", "13").code == 0

    text, data = status(cli)

    record = StateStore(repo / ".git").read().tasks[13]
    (task,) = data["agents"]["3"]["tasks"]
    assert (task["status"], task["backup_ref"], task["dropped_at"]) == (
        "dropped",
        record.backup_ref,
        record.dropped_at,
    )
    assert "error" not in task and data["agents"]["3"]["state"] == "dropped"
    assert f"  dropped:  #13 (its commits kept at {record.backup_ref})" in text


# -- a stopped train -----------------------------------------------------------------------------


def test_a_train_stopped_by_its_gate_shows_agent_reason_log_and_next_step(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo, gate="! test -f bad.py")
    work(cli, set_up, 2, {"bad.py": "broken\n"})
    assert cli("merge").code == 1

    text, data = status(cli)

    stop = data["train"]["stop"]
    journal = json.loads((repo / ".git" / "paradev" / "train.json").read_text())
    gate_log = journal["agents"]["2"]["gate_log"]
    assert (stop["agent"], stop["reason"], stop["log"], stop["issues"]) == (
        2,
        "gate",
        gate_log,
        [12],
    )
    assert stop["next"] == (
        "fix what the gate log shows and commit the fix on parallel-dev/agent-2, then"
        " 'paradev merge --continue'; or 'paradev merge --skip' to land the others "
        "without agent 2, or 'paradev merge --abort' to stop the train"
    )
    assert "stop" not in journal or "next" not in journal["stop"]  # the journal is unchanged
    assert "merge train stopped at agent 2 (#12): gate" in text
    assert f"  log:  {gate_log}" in text and f"  next: {stop['next']}" in text
    assert data["merge_order_stale"] is None  # the train follows its own queue


def test_a_train_stopped_by_a_conflict_says_where_to_resolve_it(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo)
    work(cli, set_up, 1, {"src/util.py": "VALUE = 'one'\n"})
    work(cli, set_up, 2, {"src/util.py": "VALUE = 'two'\n"})
    assert cli("merge").code == 1

    text, data = status(cli)

    stop = data["train"]["stop"]
    tree = agent_tree(set_up, stop["agent"])
    assert stop["reason"] == "conflict" and stop["log"] is None
    assert stop["next"].startswith(
        f"resolve the conflicted files in {tree} and 'git add' them, "
        "then 'paradev merge --continue'"
    )
    assert f"merge train stopped at agent {stop['agent']} (#1{stop['agent']}): conflict" in text


# -- the merge order only while it is current -------------------------------------------------


def test_the_merge_order_is_shown_until_base_moves(set_up: Path, repo: Path, cli: Cli) -> None:
    plan_with(repo)
    work(cli, set_up, 1, {"one.py": "1\n"})
    work(cli, set_up, 2, {"two.py": "2\n"})
    assert cli("merge-order").code == 0

    text, data = status(cli)
    assert data["merge_order"] == [1, 2] and data["merge_order_stale"] is None
    assert "merge order: 1 -> 2" in text

    commit(repo, {"main.txt": "base moves\n"})
    text, data = status(cli)

    assert data["merge_order"] == []
    assert data["merge_order_stale"] == "base moved since it was computed"
    assert "merge order: 1 -> 2" not in text
    assert "merge order: stale (base moved since it was computed): run paradev merge-order" in text
    assert cli("merge-order").code == 0
    assert status(cli)[1]["merge_order"] == [1, 2]


def test_the_merge_order_goes_stale_when_an_ordered_branch_or_the_candidates_change(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo)
    work(cli, set_up, 1, {"one.py": "1\n"})
    assert cli("merge-order").code == 0
    commit(agent_tree(set_up, 1), {"more.py": "more\n"})

    assert status(cli)[1]["merge_order_stale"] == "the branch of agent(s) 1 moved since"

    assert cli("merge-order").code == 0
    work(cli, set_up, 3, {"three.py": "3\n"})  # another agent may land now

    data = status(cli)[1]
    assert data["merge_order_stale"] == "the agents with completed work changed since"


def test_an_order_with_nothing_left_to_land_is_not_mentioned(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo)
    work(cli, set_up, 1, {"one.py": "1\n"})
    assert cli("merge-order").code == 0
    assert cli("merge").code == 0

    text, data = status(cli)

    assert StateStore(repo / ".git").read().merge_order == [1]
    assert data["merge_order"] == [] and data["merge_order_stale"] is None
    assert "merge order" not in text


# -- warnings --------------------------------------------------------------------------------


def test_agents_beyond_the_count_are_warned_about(
    set_up: Path, repo: Path, cli: Cli, worktrees: Path
) -> None:
    assert cli("start", "3").code == 0  # a task record of agent 3
    plan_with(repo, count=2)

    text, data = status(cli)

    (warning,) = data["warnings"]
    assert (warning["kind"], warning["agent"]) == ("beyond-count", 3)
    assert warning["message"] == (
        f"agent 3 is beyond agents.count (2) but has a worktree {worktrees / 'agent-3'} and "
        "an agent record in the state and task record(s) #13; "
        "'paradev doctor' says how to keep or remove it"
    )
    assert list(data["agents"]) == ["1", "2"]
    assert f"warnings:\n  {warning['message']}" in text


def test_a_worktree_on_a_foreign_branch_is_warned_about(set_up: Path, repo: Path, cli: Cli) -> None:
    tree = agent_tree(set_up, 2)
    git(tree, "switch", "--quiet", "-c", "elsewhere")

    text, data = status(cli)

    (warning,) = data["warnings"]
    assert (warning["kind"], warning["agent"], warning["branch"]) == (
        "foreign-branch",
        2,
        "elsewhere",
    )
    assert warning["message"].startswith(
        f"agent 2's worktree {tree} is on elsewhere, not parallel-dev/agent-2: "
    )
    assert f"'git -C {tree} switch parallel-dev/agent-2'" in warning["message"]
    assert data["agents"]["2"]["checked_out"] == "elsewhere"
    assert warning["message"] in text

    git(tree, "switch", "--quiet", "--detach")
    assert "a detached HEAD" in status(cli)[1]["warnings"][0]["message"]


def test_leftover_untracked_files_are_warned_about_only_when_no_task_runs(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    write(agent_tree(set_up, 1), {f"notes/n{i}.txt": "x\n" for i in range(7)})
    write(agent_tree(set_up, 2), {"wip.py": "in progress\n"})
    assert cli("start", "2").code == 0  # untracked files of work in progress are no leftover

    text, data = status(cli)

    (warning,) = data["warnings"]
    assert (warning["kind"], warning["agent"], warning["count"]) == ("untracked", 1, 7)
    assert warning["paths"] == [f"notes/n{i}.txt" for i in range(5)]
    assert (
        "notes/n0.txt, notes/n1.txt, notes/n2.txt, notes/n3.txt, notes/n4.txt and 2 more"
        in (warning["message"])
    )
    assert data["agents"]["1"]["untracked"] == 7 and data["agents"]["2"]["untracked"] == 1
    assert warning["message"] in text


def test_a_clean_project_has_no_warnings(set_up: Path, cli: Cli) -> None:
    text, data = status(cli)
    assert data["warnings"] == [] and "warnings:" not in text


def test_a_worktree_whose_git_link_is_not_text_is_broken_not_a_crash(
    set_up: Path, cli: Cli
) -> None:
    (agent_tree(set_up, 2) / ".git").write_bytes(b"gitdir: \xff\xfe\n")

    text, data = status(cli)

    assert "worktree broken" in text
    assert data["agents"]["2"]["broken"] is True and data["agents"]["2"]["checked_out"] is None
    assert data["warnings"] == []


def test_a_stop_record_without_an_agent_number_is_shown_as_it_is(
    set_up: Path, repo: Path, cli: Cli
) -> None:
    plan_with(repo, gate="false")
    work(cli, set_up, 1, {"one.py": "1\n"})
    assert cli("merge").code == 1
    path = repo / ".git" / "paradev" / "train.json"
    journal = json.loads(path.read_text())
    journal["stop"]["agent"] = "one"  # hand-edited
    path.write_text(json.dumps(journal))

    text, report = status(cli)

    assert report["train"]["stop"] == journal["stop"]
    assert "merge train in progress: stopped" in text
