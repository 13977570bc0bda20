"""doctor [--repair] and reset."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev.doctor import Finding, doctor, reset
from paradev.git import discover
from paradev.state import StateStore
from tests.helpers import Result, agent_tree, commit, git, write
from tests.test_state import journal


def test_a_healthy_repository(set_up: Path, repo: Path, cli: Callable[..., Result]) -> None:
    result = cli("doctor")
    assert result.code == 0, result.out + result.err
    lines = result.out.splitlines()
    assert lines[0].startswith("ok   git 2.") and lines[0].endswith("(>= 2.38 required)")
    assert f"ok   state {repo / '.git/paradev/state.json'}: readable, 0 task records" in lines
    assert "ok   worktree records: none stale" in lines
    assert f"ok   plan {repo / 'plan.toml'}: valid, 4 tasks" in lines
    assert "ok   worktrees: all 3 agents present" in lines
    assert result.err == ""


def test_doctor_finds_and_repairs_a_deleted_worktree(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    shutil.rmtree(agent_tree(set_up, 2))
    found = cli("doctor")
    assert found.code == 1
    assert f"BAD  stale worktree record for {agent_tree(set_up, 2)}" in found.out
    assert f"BAD  agent 2: no worktree at {agent_tree(set_up, 2)}" in found.out
    assert found.err == "paradev: 2 problem(s) found; try 'paradev doctor --repair'\n"
    assert "prunable" in git(
        repo, "worktree", "list", "--porcelain"
    )  # doctor alone changes nothing
    repaired = cli("doctor", "--repair")
    assert repaired.code == 0, repaired.out + repaired.err
    assert "ok   worktree records: pruned 1 stale" in repaired.out
    assert "ok   worktrees: repaired agents 2" in repaired.out
    assert (agent_tree(set_up, 2) / ".git").is_file()
    assert cli("doctor").code == 0


def test_doctor_says_a_folder_replaced_a_worktree_and_repair_leaves_it_alone(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 2)
    shutil.rmtree(tree)
    tree.mkdir()
    (tree / "mine.txt").write_text("precious\n", encoding="utf-8")
    found = cli("doctor")
    assert found.code == 1
    assert (
        f"BAD  agent 2: {tree} exists but is not a git worktree "
        "(move it away, then run 'paradev setup')"
    ) in found.out
    repaired = cli("doctor", "--repair")
    assert repaired.code == 1, repaired.err  # the findings printed, no error mid-way
    assert "ok   worktree records: pruned 1 stale" in repaired.out
    assert f"BAD  worktrees: cannot repair: {tree} exists and is not agent 2's worktree" in (
        repaired.out
    )
    assert repaired.err == "paradev: 1 problem(s) found\n"
    assert sorted(p.name for p in tree.iterdir()) == ["mine.txt"]


def test_doctor_finds_and_repairs_a_broken_git_link(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 3)
    (tree / "work.txt").write_text("uncommitted\n", encoding="utf-8")
    (tree / ".git").write_text("gitdir: /nowhere\n", encoding="utf-8")
    found = cli("doctor")
    assert found.code == 1
    assert f"BAD  agent 3: the .git link of {tree} is broken" in found.out
    repaired = cli("doctor", "--repair")
    assert repaired.code == 0, repaired.out + repaired.err
    assert "ok   worktrees: repaired agents 3" in repaired.out
    assert git(tree, "status", "--porcelain") == "?? work.txt"
    assert cli("doctor").code == 0


def test_doctor_reports_an_invalid_plan(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    (repo / "plan.toml").write_text("[agents]\ncount = 0\n", encoding="utf-8")
    result = cli("doctor")
    assert result.code == 1
    assert (
        "BAD  plan: " in result.out
        and "agents.count: expected an integer from 1 to 1,000" in result.out
    )
    assert result.err == "paradev: 1 problem(s) found\n"  # only a person can fix a plan


def test_doctor_reports_a_missing_plan(repo: Path, cli: Callable[..., Result]) -> None:
    (repo / "plan.toml").unlink()
    result = cli("doctor")
    assert result.code == 1
    assert "not found; create one with 'paradev init'" in result.out
    assert result.err == "paradev: 1 problem(s) found\n"  # --repair cannot write a plan
    assert cli("init").code == 0
    assert f"ok   plan {repo / 'plan.toml'}: valid, 6 tasks" in cli("doctor").out


def test_doctor_on_a_corrupt_state_prints_the_report_and_exits_2(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    (repo / ".git/paradev/state.json").write_text("nope", encoding="utf-8")
    result = cli("doctor")
    assert result.code == 2
    assert "BAD  state file" in result.out and "ok   worktrees: all 3" in result.out
    assert result.err.count("\n") == 1 and "is corrupt" in result.err


def test_doctor_mentions_a_train_in_progress(set_up: Path, repo: Path) -> None:
    store = StateStore(repo / ".git")
    with store.update() as state:
        state.train = journal("stopped")
    repo_info = discover(repo)
    findings = doctor(repo_info, repo / "plan.toml", repair=False)
    assert Finding(
        True, "a merge train is in progress: 'paradev merge --continue' or '--abort'"
    ) in (findings)


def test_reset_clears_the_state_keeps_a_backup_and_keeps_git_as_it_is(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    old = (repo / ".git/paradev/state.json").read_text()
    refs = git(repo, "for-each-ref")
    trees = git(repo, "worktree", "list", "--porcelain")
    result = cli("reset", "--yes")
    assert result.code == 0, result.err
    backups = list((repo / ".git/paradev").glob("state.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == old
    assert result.out == (
        f"kept the old state as {backups[0]}\nstate cleared: {repo / '.git/paradev/state.json'}\n"
    )
    data = json.loads((repo / ".git/paradev/state.json").read_text())
    assert data["tasks"] == {} and data["agents"] == {} and "train" not in data
    assert not (repo / ".git/paradev/train.json").exists()
    assert (git(repo, "for-each-ref"), git(repo, "worktree", "list", "--porcelain")) == (
        refs,
        trees,
    )
    assert cli("start", "1").out.startswith("agent 1 started #11")


def test_reset_asks_for_yes_when_records_exist(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    before = (repo / ".git/paradev/state.json").read_bytes()

    result = cli("reset")

    assert result.code == 2
    assert result.err.count("\n") == 1 and "re-run with --yes" in result.err
    assert (repo / ".git/paradev/state.json").read_bytes() == before
    assert not list((repo / ".git/paradev").glob("state.json.bak-*"))


def test_reset_of_an_empty_state_needs_no_yes(repo: Path, cli: Callable[..., Result]) -> None:
    assert cli("reset").code == 0


def test_reset_needs_no_plan_and_warns_about_a_train(
    repo: Path, cli: Callable[..., Result]
) -> None:
    store = StateStore(repo / ".git")
    with store.update() as state:
        state.train = journal()
    (repo / "plan.toml").unlink()
    result = cli("reset", "--yes")
    assert result.code == 0
    assert (
        "a merge train was in progress; its journal is gone (git state is untouched)" in result.err
    )
    assert store.read().train is None


def test_reset_returns_what_it_dropped(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.update() as state:
        state.merge_order = [3]
    done = reset(store, yes=True)
    assert done.aside is None and done.dropped is not None and done.dropped.merge_order == [3]
    assert done.backup is not None and json.loads(done.backup.read_text())["merge_order"] == [3]
    store.path.write_text("{", encoding="utf-8")
    done = reset(store)  # a corrupt file holds no records to confirm: it is moved aside
    assert done.aside is not None and done.aside.read_text() == "{" and done.dropped is None
    assert store.read().merge_order == []


def _hang_until_started(marker: Path) -> str:
    """A shell command that says it started, then hangs (a gate or an agent that takes long)."""
    return f"touch {marker} && sleep 60"


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)


@pytest.mark.parametrize("command", ["merge", "run-batch"])
def test_reset_refuses_while_a_merge_or_run_batch_runs(
    set_up: Path, repo: Path, tmp_path: Path, cli: Callable[..., Result], command: str
) -> None:
    started = tmp_path / "started"
    hang = _hang_until_started(started)
    plan = (repo / "plan.toml").read_text()
    plan = plan.replace("[agents]", f"[agents]\ncommand = ['sh', '-c', {hang!r}]", 1)
    plan = plan.replace('[gate]\ncommand = ""', f"[gate]\ncommand = {hang!r}", 1)
    (repo / "plan.toml").write_text(plan)
    if command == "merge":
        assert cli("start", "1").code == 0
        commit(agent_tree(set_up, 1), {"one.py": "1\n"})
        assert cli("complete", "1").code == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "paradev", command],
        cwd=repo,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(started, process)
        result = cli("reset", "--yes")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()

    assert result.code == 2
    assert f"'paradev {command}' is running (pid {process.pid})" in result.err
    assert result.err.count("\n") == 1
    assert not list((repo / ".git/paradev").glob("state.json.bak-*"))
    assert json.loads((repo / ".git/paradev/state.json").read_bytes())["tasks"] != {}


def test_doctor_names_a_symlinked_agent_folder(
    repo: Path, set_up: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    shutil.rmtree(agent_tree(set_up, 3))
    os.symlink(tmp_path, agent_tree(set_up, 3))

    result = cli("doctor", "--repair")

    assert result.code == 1
    assert f"BAD  agent 3's folder {agent_tree(set_up, 3)} is a symbolic link" in result.out
    assert agent_tree(set_up, 3).is_symlink()  # repair never builds through the link


def test_after_a_reset_landed_tasks_are_recognised_from_git_and_never_run_again(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    landed = commit(repo, {"status.py": "done\n"}, "feat: status command\n\nParadev-Issue: 11")
    commit(repo, {"other.py": "x\n"}, "fix: unrelated\n\nParadev-Issue: 99")  # not in the plan
    assert cli("reset", "--yes").code == 0

    status = cli("status", "--json").json()
    run = cli("run-batch", "--no-launch")

    assert status["agents"]["1"]["current_task"] is None
    assert [t["issue"] for t in status["agents"]["1"]["completed_tasks"]] == [11]
    assert run.code == 0, run.err
    assert "#11 (agent 1) is already merged" in run.out and "agent 1: #11" not in run.out
    assert "agent 2: #12" in run.out and "agent 3: #13" in run.out
    tasks = json.loads((repo / ".git/paradev/state.json").read_text())["tasks"]
    assert tasks["11"]["status"] == "merged" and tasks["11"]["merged_commit"] == landed
    assert "99" not in tasks
    assert "agent 1" not in cli("merge", "--dry-run").out


def test_a_task_with_a_record_keeps_it_whatever_git_says(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    commit(repo, {"status.py": "done\n"}, "feat: status command\n\nParadev-Issue: 11")

    status = cli("status", "--json").json()

    assert status["agents"]["1"]["current_task"]["issue"] == 11


def test_reset_refuses_while_any_command_lock_is_held(
    repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    held = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from paradev.state import StateStore\n"
            "store = StateStore(pathlib.Path(sys.argv[1]))\n"
            "with store.exclusive('agent-2.lock', wait=0, busy='busy'):\n"
            "    pathlib.Path(sys.argv[2]).touch()\n"
            "    time.sleep(60)\n",
            str(repo / ".git"),
            str(held),
        ],
        text=True,
    )
    try:
        _wait_for(held, holder)
        result = cli("reset", "--yes")
    finally:
        holder.kill()
        holder.wait()

    assert result.code == 2
    assert f"holding agent-2.lock' is running (pid {holder.pid})" in result.err
    assert cli("reset", "--yes").code == 0  # once it is gone, reset goes on


# -- the task flow: records, commits, agents and worktrees nothing accounts for ---------------


def _bad(result: Result) -> list[str]:
    return [line for line in result.out.splitlines() if line.startswith("BAD")]


def test_doctor_removes_a_record_of_a_task_that_left_the_plan(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    plan = repo / "plan.toml"
    before = plan.read_bytes()
    assert cli("assign", "2", "77", "Short-lived idea", "1").code == 0
    plan.write_bytes(before)  # the task leaves the plan; its record stays

    found = cli("doctor")
    repaired = cli("doctor", "--repair")
    after = cli("doctor")

    assert found.code == 1
    assert _bad(found) == [
        "BAD  state: #77 (assigned, agent 2) is not in the plan (repair: remove the record)"
    ]
    assert "ok   state: #77 (assigned, agent 2) is not in the plan: record removed" in repaired.out
    assert 77 not in StateStore(repo / ".git").read().tasks
    assert after.code == 0, after.out
    assert "ok   tasks: every record, commit and worktree is accounted for" in after.out


def test_doctor_switches_a_clean_worktree_back_to_its_branch(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 2)
    git(tree, "switch", "-q", "-c", "elsewhere")
    write(agent_tree(set_up, 3), {"README.md": "edited\n"})
    git(agent_tree(set_up, 3), "switch", "-q", "-c", "other")

    found = cli("doctor")
    repaired = cli("doctor", "--repair")

    assert found.code == 1
    assert (
        f"BAD  agent 2: {tree} is on elsewhere, not parallel-dev/agent-2 "
        f"(repair: 'git -C {tree} switch parallel-dev/agent-2')"
    ) in found.out
    assert f"BAD  manual: agent 3: {agent_tree(set_up, 3)} is on other" in found.out
    assert git(tree, "branch", "--show-current") == "parallel-dev/agent-2"
    assert f"ok   agent 2: {tree} switched back to parallel-dev/agent-2" in repaired.out
    assert git(agent_tree(set_up, 3), "branch", "--show-current") == "other"
    assert (agent_tree(set_up, 3) / "README.md").read_text() == "edited\n"


def test_doctor_names_agents_beyond_the_count(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    plan = repo / "plan.toml"
    plan.write_text(
        plan.read_text(encoding="utf-8").replace("count = 3", "count = 2", 1), encoding="utf-8"
    )
    text = plan.read_text(encoding="utf-8")
    start = text.index("  [[batches.tasks]]\n  agent = 3")
    plan.write_text(text[:start] + text[text.index('[[batches]]\nname = "second"') :])

    found = cli("doctor")

    assert found.code == 1
    assert (
        "BAD  manual: agent 3 is beyond agents.count (2): set agents.count = 3 in plan.toml "
        "to keep it, or land what parallel-dev/agent-3 holds and remove it "
        f"('git worktree remove {agent_tree(set_up, 3)}', then "
        "'git branch -d parallel-dev/agent-3')"
    ) in found.out


def test_doctor_repair_takes_a_dropped_tasks_commits_off_once_the_worktree_is_clean(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = agent_tree(set_up, 1)
    base = git(repo, "rev-parse", "main")
    assert cli("start", "1").code == 0
    commit(tree, {"a.py": "a\n"}, "work")
    assert cli("complete", "1").code == 0
    write(tree, {"scratch.txt": "x\n"})
    assert cli("drop", "11").code == 0

    dirty = cli("doctor", "--repair")
    (tree / "scratch.txt").unlink()
    found = cli("doctor")
    repaired = cli("doctor", "--repair")

    assert dirty.code == 1 and "BAD  manual: agent 1's branch" in dirty.out
    assert "has uncommitted changes" in dirty.out
    assert found.code == 1 and "(kept at refs/paradev/backup/" in found.out
    assert "repair: take them off the branch" in found.out
    assert repaired.code == 0, repaired.out
    assert "ok   agent 1: dropped #11's commits taken off its branch" in repaired.out
    assert git(repo, "rev-parse", "parallel-dev/agent-1") == base
