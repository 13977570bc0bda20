"""The merge train on real repositories: landing, stops, resume, crashes, remote, dry run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev import git as paradev_git
from paradev.state import StateStore
from paradev.train import advance as advance_mod
from paradev.train import gate as gate_mod
from paradev.train import landing as landing_mod
from paradev.train import messages
from paradev.train import rebase as rebase_mod
from paradev.train import steps as train_mod
from paradev.workspace import open_workspace
from tests.conftest import PLAN
from tests.helpers import (
    Result,
    agent_tree,
    commit,
    git,
    rev,
    run_process,
    set_journal_field,
    state_files,
    write,
)

Cli = Callable[..., Result]

# Content a conflict test edits: one line both agents change differently.
UTIL = "VALUE = 1\n"


def configure(repo: Path, **settings: Any) -> None:
    """Commit a plan.toml whose [gate]/[merge]/[project] sections carry ``settings``."""
    gate = settings.pop("gate", "")
    timeout = settings.pop("timeout", 60)
    remote = settings.pop("remote", "")
    merge = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    text = PLAN.replace('base = "main"\n', f'base = "main"\nremote = {json.dumps(remote)}\n')
    # Agents here finish #11 and #21 before any landing: #21 must not wait for #11 to land.
    text = text.replace("  depends_on = [11]\n", "")
    text = text.replace(
        '[gate]\ncommand = ""\n',
        f"[gate]\ncommand = {json.dumps(gate)}\ntimeout = {timeout}\n\n[merge]\n{merge}",
    )
    commit(repo, {"plan.toml": text}, "configure the plan")
    if "origin" in git(repo, "remote").split():
        git(repo, "push", "-q", "origin", "main")


@pytest.fixture
def setup_with(repo: Path, cli: Cli, worktrees: Path) -> Callable[..., Path]:
    """Configure the plan, then set up the agent worktrees."""

    def run(**settings: Any) -> Path:
        configure(repo, **settings)
        result = cli("setup")
        assert result.code == 0, result.err
        return worktrees

    return run


def work(cli: Cli, worktrees: Path, agent: int, files: dict[str, str | None], n: int = 1) -> str:
    """The agent starts its next task, commits ``files`` (in ``n`` commits), completes it."""
    assert cli("start", str(agent)).code == 0
    tree = agent_tree(worktrees, agent)
    head = ""
    items = list(files.items())
    for index in range(n):
        part: dict[str, str | bytes | None] = dict(items[index::n])
        head = commit(tree, part or {f"note-{agent}-{index}.txt": f"{index}\n"}, f"work {index}")
    result = cli("complete", str(agent))
    assert result.code == 0, result.err
    return head


def all_commits(repo: Path) -> set[str]:
    return set(git(repo, "rev-list", "--all").split())


def kept(repo: Path) -> set[str]:
    """Commits reachable from a branch or a paradev backup ref."""
    return set(git(repo, "rev-list", "--branches", "--glob=refs/paradev/*").split())


def state_of(repo: Path) -> Any:
    return state_files(repo)


def refs(repo: Path, pattern: str = "refs/heads") -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", pattern)
    return dict(line.split(" ") for line in out.splitlines())


def backups(repo: Path) -> dict[str, str]:
    """Backup refs by branch (the train id part dropped), for comparing two runs."""
    return {name.rsplit("/", 1)[0]: sha for name, sha in refs(repo, "refs/paradev/backup").items()}


# -- landing -----------------------------------------------------------------------------------


def test_merge_lands_every_completed_agent(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    heads = {a: work(cli, trees, a, {f"feature_{a}.py": f"X = {a}\n"}) for a in (1, 2, 3)}
    before = all_commits(repo)

    result = cli("merge")

    assert result.code == 0, result.err
    assert "gate: none configured" in result.out
    main = rev(repo, "main")
    for agent in (1, 2, 3):
        assert git(repo, "merge-base", "--is-ancestor", f"parallel-dev/agent-{agent}", "main") == ""
        assert (repo / f"feature_{agent}.py").exists()  # the main work tree followed
        backup = [r for r in refs(repo, "refs/paradev/backup") if f"agent-{agent}/" in r]
        assert len(backup) == 1
        assert rev(repo, backup[0]) == heads[agent]
    assert git(repo, "status", "--porcelain") == ""
    state = state_of(repo)
    assert state["train"] is None
    assert state["merge_history"][-1]["status"] == "done"
    landed = {e["agent"]: e["commit"] for e in state["merge_history"][-1]["landed"]}
    assert landed[state["merge_history"][-1]["order"][-1]] == main
    for issue, agent in ((11, 1), (12, 2), (13, 3)):
        record = state["tasks"][str(issue)]
        assert record["status"] == "merged"
        assert record["merged_commit"] == landed[agent]
        assert record["merged_at"]
    assert before <= kept(repo)


def test_merge_with_nothing_to_land(setup_with: Any, cli: Cli) -> None:
    setup_with()
    result = cli("merge")
    assert result.code == 0
    assert "nothing to land" in result.out


def test_agent_with_task_in_progress_is_not_landed(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    assert cli("start", "1").code == 0  # agent 1 now works on #21
    commit(agent_tree(trees, 1), {"more.py": "m\n"})

    result = cli("merge")

    assert result.code == 0, result.err
    assert "agent 1: #21 is still in progress; not landed" in result.out
    assert not (repo / "one.py").exists()
    assert (repo / "two.py").exists()
    assert state_of(repo)["tasks"]["11"]["status"] == "completed"


def test_on_merge_hook_gets_the_task_data(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    out = repo.parent / "hook.txt"
    plan = (repo / "plan.toml").read_text()
    hook = f'echo "$PARADEV_ISSUE $PARADEV_COMMIT $PARADEV_STATUS" >> {out}'
    commit(repo, {"plan.toml": plan + f"\n[hooks]\non_merge = {json.dumps(hook)}\n"}, "hook")
    work(cli, trees, 2, {"two.py": "2\n"})

    assert cli("merge").code == 0

    assert out.read_text() == f"12 {rev(repo, 'main')} merged\n"


def depend_12_on_11(repo: Path) -> None:
    plan = (repo / "plan.toml").read_text()
    plan = plan.replace("  issue = 12\n", "  issue = 12\n  depends_on = [11]\n")
    commit(repo, {"plan.toml": plan}, "12 depends on 11")


def test_agent_whose_dependency_is_not_merged_is_not_landed(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    depend_12_on_11(repo)  # added after #12 started: start refuses a task whose dependency waits

    result = cli("merge")

    assert result.code == 0, result.err
    assert "agent 2: #12 depends on #11, which is planned and not landing" in result.out
    assert not (repo / "two.py").exists()
    assert (repo / "three.py").exists()


def test_skipping_a_provider_skips_its_dependents(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with(gate="! test -f bad.py")
    work(cli, trees, 1, {"bad.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    depend_12_on_11(repo)  # added after #12 started: start refuses a task whose dependency waits
    assert cli("merge").code == 1
    assert stopped_agent(repo) == 1

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    assert "agent 2: skipped: #12 depends on #11, which was skipped" in result.out
    assert (repo / "three.py").exists()
    assert not (repo / "two.py").exists()
    assert state_of(repo)["merge_history"][-1]["skipped"] == [1, 2]


# -- refusals (exit 2, nothing changed) ----------------------------------------------------------


def test_dirty_agent_worktree_is_refused(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    write(agent_tree(trees, 1), {"one.py": "changed\n"})
    main = rev(repo, "main")

    result = cli("merge")

    assert result.code == 2
    assert "uncommitted changes" in result.err and "one.py" in result.err
    assert rev(repo, "main") == main
    assert state_of(repo)["train"] is None


def test_dirty_main_worktree_is_refused_but_untracked_files_are_not(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    write(repo, {"README.md": "local edit\n"})
    assert cli("merge").code == 2
    assert state_of(repo)["train"] is None

    git(repo, "checkout", "--", "README.md")
    write(repo, {"scratch.txt": "untracked\n"})
    result = cli("merge")
    assert result.code == 0, result.err
    assert (repo / "one.py").exists()
    assert (repo / "scratch.txt").read_text() == "untracked\n"


def test_a_merge_under_way_in_the_main_worktree_is_named(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, {"README.md": "side\n"}, "side")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"README.md": "main\n"}, "main")
    git(repo, "merge", "-q", "side", check=False)  # stops on a conflict in README.md
    main = rev(repo, "main")

    result = cli("merge")

    assert result.code == 2
    assert "a merge is in progress" in result.err and "merge --abort" in result.err
    assert (repo / ".git" / "MERGE_HEAD").exists()  # the user's merge is left alone
    assert rev(repo, "main") == main


def test_plan_edits_by_assign_do_not_block_the_train(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    assert cli("assign", "2", "99", "Later work", "1").code == 0
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == " M plan.toml"

    result = cli("merge")

    assert result.code == 0, result.err
    assert (repo / "one.py").exists()
    assert "Later work" in (repo / "plan.toml").read_text()  # the edit is kept


def test_base_not_checked_out_moves_by_compare_and_swap(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    git(repo, "checkout", "-q", "--detach")
    work(cli, trees, 1, {"one.py": "1\n"})

    assert cli("merge").code == 0

    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")
    assert not (repo / "one.py").exists()  # the detached main work tree is left alone


# -- conflicts ---------------------------------------------------------------------------------


def conflicting(cli: Cli, trees: Path) -> None:
    """Agents 1 and 2 change the same line; agent 3 changes something else."""
    work(cli, trees, 1, {"src/util.py": "VALUE = 'one'\n"})
    work(cli, trees, 2, {"src/util.py": "VALUE = 'two'\n"})
    work(cli, trees, 3, {"three.py": "3\n"})


def stopped_agent(repo: Path) -> int:
    return int(state_of(repo)["train"]["stop"]["agent"])


def test_conflict_stops_with_report_and_continue_finishes(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    before = all_commits(repo)

    result = cli("merge")

    assert result.code == 1
    agent = stopped_agent(repo)
    tree = agent_tree(trees, agent)
    assert (tree / ".git").exists()
    assert git(tree, "status").startswith("interactive rebase in progress")
    assert "src/util.py: lines 1-5" in result.out
    assert f"git -C {tree} add -- src/util.py" in result.out
    assert "paradev merge --continue" in result.out
    main_at_stop = rev(repo, "main")
    assert before <= kept(repo) | all_commits(repo)

    write(tree, {"src/util.py": "VALUE = 'both'\n"})
    git(tree, "add", "src/util.py")
    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert (repo / "src/util.py").read_text() == "VALUE = 'both'\n"
    assert (repo / "three.py").exists()
    assert git(repo, "merge-base", "--is-ancestor", main_at_stop, "main") == ""
    assert state_of(repo)["train"] is None
    assert before <= kept(repo)


def test_continue_with_the_conflict_unresolved_stops_again(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    assert cli("merge").code == 1
    main = rev(repo, "main")

    result = cli("merge", "--continue")

    assert result.code == 1
    assert rev(repo, "main") == main
    assert "src/util.py" in result.out


def test_abort_restores_the_branch_and_ends_the_train(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    heads = {a: rev(repo, f"parallel-dev/agent-{a}") for a in (1, 2, 3)}
    before = all_commits(repo)
    assert cli("merge").code == 1
    agent = stopped_agent(repo)
    landed = rev(repo, "main")

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    tree = agent_tree(trees, agent)
    assert "rebase in progress" not in git(tree, "status")
    assert rev(repo, f"parallel-dev/agent-{agent}") == heads[agent]
    assert rev(repo, "main") == landed  # what landed stays
    state = state_of(repo)
    assert state["train"] is None
    assert state["merge_history"][-1]["status"] == "aborted"
    assert before <= kept(repo)
    assert cli("merge", "--continue").code == 2  # no train any more


def test_abort_leaves_a_rebase_paradev_did_not_start(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    assert cli("merge").code == 1
    agent = stopped_agent(repo)
    tree = agent_tree(trees, agent)
    git(tree, "rebase", "--abort")
    # the user starts a rebase of their own there
    git(tree, "rebase", "-q", "--exec", "false", "HEAD~1", check=False)
    assert "rebase in progress" in git(tree, "status")

    result = cli("merge", "--abort")

    assert result.code == 2
    assert "not started by this train" in result.err
    assert "rebase in progress" in git(tree, "status")


def test_skip_leaves_the_conflicting_agent_out(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    assert cli("merge").code == 1
    agent = stopped_agent(repo)

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    assert "rebase in progress" not in git(agent_tree(trees, agent), "status")
    assert (repo / "three.py").exists()
    history = state_of(repo)["merge_history"][-1]
    assert history["skipped"] == [agent]
    assert state_of(repo)["tasks"][str(10 + agent)]["status"] == "completed"


# -- the gate ----------------------------------------------------------------------------------

# Passes for each branch alone, fails when both features are present.
GATE_BOTH = "! { test -f feature_a.py && test -f feature_b.py; }"


def test_gate_runs_on_the_combined_result(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with(gate=GATE_BOTH)
    work(cli, trees, 1, {"feature_a.py": "a\n"})
    work(cli, trees, 2, {"feature_b.py": "b\n"})
    for agent in (1, 2):  # each passes the gate alone
        assert os.system(f"cd {agent_tree(trees, agent)} && {GATE_BOTH}") == 0
    before = all_commits(repo)

    result = cli("merge")

    assert result.code == 1
    assert "gate exited 1" in result.err
    first, second = state_of(repo)["train"]["order"]
    assert rev(repo, "main") == rev(repo, f"parallel-dev/agent-{first}")  # only a passing state
    assert stopped_agent(repo) == second
    log = Path(state_of(repo)["train"]["agents"][str(second)]["gate_log"])
    assert str(log) in result.err
    assert log.is_file() and log.parent == repo / ".git" / "paradev" / "logs"
    assert before <= kept(repo)

    # a fix committed on the branch, then --continue re-runs the gate
    fixed = "feature_b.py" if second == 1 else "feature_a.py"
    commit(agent_tree(trees, second), {fixed: None}, "drop the clash")
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert rev(repo, "main") == rev(repo, f"parallel-dev/agent-{second}")
    assert before <= kept(repo)


def test_abort_after_a_gate_failure_restores_the_rebased_branch(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(gate=GATE_BOTH)
    heads = {1: work(cli, trees, 1, {"feature_a.py": "a\n"})}
    heads[2] = work(cli, trees, 2, {"feature_b.py": "b\n"})
    assert cli("merge").code == 1
    second = stopped_agent(repo)
    assert rev(repo, f"parallel-dev/agent-{second}") != heads[second]  # rebased
    fix = commit(agent_tree(trees, second), {"fix.py": "an attempt\n"}, "try a fix")

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert rev(repo, f"parallel-dev/agent-{second}") == heads[second]
    assert git(agent_tree(trees, second), "status", "--porcelain") == ""
    assert state_of(repo)["train"] is None
    assert fix in kept(repo)  # the attempted fix existed only on the rebased branch
    assert [r for r in refs(repo, "refs/paradev/backup") if r.endswith("-aborted")]


def test_gate_failure_then_skip(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with(gate=GATE_BOTH)
    work(cli, trees, 1, {"feature_a.py": "a\n"})
    work(cli, trees, 2, {"feature_b.py": "b\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    assert cli("merge").code == 1
    main = rev(repo, "main")
    skipped = stopped_agent(repo)

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    assert git(repo, "merge-base", "--is-ancestor", main, "main") == ""
    assert state_of(repo)["tasks"][str(10 + skipped)]["status"] == "completed"
    files = git(repo, "ls-files")
    assert not ("feature_a.py" in files and "feature_b.py" in files)


def test_an_agent_skipped_after_a_gate_failure_lands_on_the_next_merge(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    """The skip puts the rebased branch back at the completed commit the task recorded (the
    rebase was paradev's), so the next train tries it again instead of calling it rewritten."""
    flag = tmp_path / "agent-2-fails"
    flag.write_text("")
    trees = setup_with(gate=f"! {{ test -f feature_b.py && test -e {flag}; }}")
    work(cli, trees, 1, {"feature_a.py": "a\n"})
    completed = work(cli, trees, 2, {"feature_b.py": "b\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    assert cli("merge").code == 1
    assert stopped_agent(repo) == 2

    skipped = cli("merge", "--skip")

    assert skipped.code == 0, skipped.err
    assert rev(repo, "parallel-dev/agent-2") == completed
    assert rev(agent_tree(trees, 2), "HEAD") == completed
    assert git(agent_tree(trees, 2), "status", "--porcelain") == ""
    flag.unlink()  # the cause fixed
    merge_lands(repo, cli, 12)
    assert git(repo, "ls-tree", "--name-only", "main", "feature_b.py") == "feature_b.py"


def merge_lands(repo: Path, cli: Cli, issue: int) -> None:
    """``paradev merge`` exits 0 having landed ``issue``."""
    landed = cli("merge")
    assert landed.code == 0, landed.out + landed.err
    assert state_of(repo)["tasks"][str(issue)]["status"] == "merged"


def test_a_completed_commit_rewritten_by_its_agent_lands_after_reopen_and_complete(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    """The train names the way out of a rewritten completed commit, and that way works."""
    trees = setup_with()
    work(cli, trees, 1, {"feature_a.py": "a\n"})
    git(agent_tree(trees, 1), "commit", "-q", "--amend", "-m", "feat: a, reworded")

    refused = cli("merge")

    assert "'paradev reopen 11', then 'paradev complete 1'" in refused.out, refused.out
    assert cli("reopen", "11").code == 0
    assert cli("complete", "1").code == 0
    merge_lands(repo, cli, 11)
    assert git(repo, "log", "-1", "--format=%s", "main") == "feat: a, reworded"


def test_a_gate_failure_stop_prints_the_log_tail_and_next_steps(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(gate="for n in 1 2 3 4 5; do echo line-$n; done; echo the-failure; false")
    work(cli, trees, 1, {"one.py": "1\n"})

    result = cli("merge")

    assert result.code == 1
    block = result.out[result.out.index("agent 1: the gate exited 1 on main + this agent's work") :]
    lines = block.splitlines()
    assert lines[1].startswith("  log: ") and lines[1].endswith("(last 6 lines):")
    assert lines[2:8] == [f"      | line-{n}" for n in range(1, 6)] + ["      | the-failure"]
    tree = agent_tree(trees, 1)
    assert lines[8:] == [
        "  next steps:",
        f"    fix what the log shows in {tree}, commit it on parallel-dev/agent-1, then",
        "    paradev merge --continue",
        "  or leave this agent out: paradev merge --skip",
        "  or end the train (its branch restored): paradev merge --abort",
    ]


def test_the_summary_names_skipped_and_not_landed_agents_and_why(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    assert cli("start", "1").code == 0  # #21: in progress, so agent 1 does not land
    work(cli, trees, 2, {"src/util.py": "VALUE = 'two'\n"})
    work(cli, trees, 3, {"src/util.py": "VALUE = 'three'\n"})
    assert cli("merge").code == 1
    skipped = stopped_agent(repo)
    landed = 5 - skipped

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    summary = result.out[result.out.index("merge train ") :].splitlines()[-3:]
    assert summary == [
        f"merge train {state_of(repo)['merge_history'][-1]['id']} done; "
        f"landed: agent {landed} (#1{landed})",
        f"  skipped: agent {skipped}: left out with --skip after its conflict stop; "
        "its branch keeps its commits, and the next paradev merge tries it again",
        "  not landed: agent 1: #21 is still in progress; not landed",
    ]

    again = cli("merge")  # tried again, and said so

    assert (
        f"agent {skipped}: skipped by the last train "
        "(left out with --skip after its conflict stop); trying it again"
    ) in again.out


def test_no_gate_flag_skips_the_gate(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with(gate="false")
    work(cli, trees, 1, {"one.py": "1\n"})
    result = cli("merge", "--no-gate")
    assert result.code == 0, result.err
    assert "gate: skipped (--no-gate)" in result.out
    assert (repo / "one.py").exists()


def test_gate_argv_list_and_environment(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with(gate=["sh", "-c", 'test "$PARADEV_AGENT" = 2 && test -f two.py'])
    work(cli, trees, 2, {"two.py": "2\n"})
    result = cli("merge")
    assert result.code == 0, result.err
    assert "gate passed" in result.out


def test_the_gate_commits_as_the_user_not_as_the_trains_journaled_committer(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal fixes who rewrites the agents' commits; a user's program keeps its own."""
    for name in ("GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE"):
        monkeypatch.delenv(name, raising=False)
    seen = tmp_path / "seen"
    trees = setup_with(gate=f'echo "${{GIT_COMMITTER_DATE-unset}}" >> {seen}')
    work(cli, trees, 1, {"one.py": "1\n"})
    assert cli("merge").code == 0
    assert seen.read_text() == "unset\n"


def test_gate_timeout_kills_the_whole_process_group(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    trees = setup_with(gate=f"sleep 60 & echo $! > {pidfile}; wait", timeout=1)
    work(cli, trees, 1, {"one.py": "1\n"})
    main = rev(repo, "main")

    result = cli("merge")

    assert result.code == 1
    assert "timed out after 1s" in result.err
    assert rev(repo, "main") == main
    assert gone(int(pidfile.read_text()))


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    for _ in range(100):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return True
        time.sleep(0.05)
    return False


# -- squash ------------------------------------------------------------------------------------


def test_squash_lands_each_task_as_one_conventional_commit(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(squash=True)
    work(cli, trees, 1, {"a1.py": "1\n", "a2.py": "2\n"}, n=2)
    work(cli, trees, 1, {"c1.py": "1\n", "c2.py": "2\n", "c3.py": "3\n"}, n=3)  # #21
    before = all_commits(repo)
    start = rev(repo, "main")

    result = cli("merge")

    assert result.code == 0, result.err
    log = git(repo, "log", "--format=%s", f"{start}..main").splitlines()
    assert log == ["feat: Config command (#21)", "feat: Add the status command (#11)"]
    assert git(repo, "show", "--name-only", "--format=", "main~1").split() == ["a1.py", "a2.py"]
    assert before <= kept(repo)


def test_squash_keeps_a_conventional_prefix() -> None:
    assert messages.squash_message("fix(cli): crash on empty plan", 7) == (
        "fix(cli): crash on empty plan (#7)\n"
    )
    assert messages.squash_message("Add status", 3) == "feat: Add status (#3)\n"
    assert messages.squash_message("fixture loader", 4) == "feat: fixture loader (#4)\n"


def test_marker_hunks(tmp_path: Path) -> None:
    file = tmp_path / "f.txt"
    file.write_text("a\n<<<<<<< ours\nb\n=======\nc\n>>>>>>> theirs\nd\n<<<<<<< x\n>>>>>>> y\n")
    assert rebase_mod.marker_hunks(file) == [(2, 6), (8, 9)]
    assert rebase_mod.marker_hunks(tmp_path / "missing") == []


# -- crashes -----------------------------------------------------------------------------------


class Crash(BaseException):
    """The process dying at an arbitrary point (nothing catches a BaseException here)."""


FIXED_DATES = {
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+0000",
}


@pytest.fixture
def fixed_dates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed commit dates, so two runs of the same train make the same commit ids; cwd tmp."""
    for name, value in FIXED_DATES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # restored after the test; each run moves into its own repo


def owner(name: str) -> Any:
    """The module the train looks ``name`` up in: patched there, the crash hits the train."""
    return {"run_gate": gate_mod, "move_base": advance_mod, "files_with_markers": landing_mod}.get(
        name, train_mod
    )


def crash_before(mocker: MockerFixture, name: str) -> None:
    mocker.patch.object(owner(name), name, side_effect=Crash(name))


def crash_after(mocker: MockerFixture, name: str) -> None:
    real = getattr(owner(name), name)

    def run_then_die(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        raise Crash(name)

    mocker.patch.object(owner(name), name, side_effect=run_then_die)


def crash_midway(mocker: MockerFixture, name: str) -> None:
    """The process dies while git is rebasing: git's rebase state is left half done."""
    assert name == "rebase"

    def stop_after_the_first_pick(worktree: Path, onto: str) -> bool:
        editor = {"GIT_SEQUENCE_EDITOR": "sed -i '1a break'"}
        paradev_git.Git(worktree).run("rebase", "-i", "--no-update-refs", onto, env=editor)
        assert paradev_git.rebase_in_progress(worktree) is not None
        raise Crash(name)

    mocker.patch.object(paradev_git, "rebase", side_effect=stop_after_the_first_pick)


def crash_before_the_journal(mocker: MockerFixture, name: str) -> None:
    """The process dies inside ``name`` after a state write, before the journal write it needs.

    The state file goes first: the tasks are merged (or the history written)
    while the journal still says the step has not run.
    """
    real, armed = getattr(owner(name), name), []

    def run_armed(*args: Any, **kwargs: Any) -> Any:
        armed.append(True)
        return real(*args, **kwargs)

    def die(*args: Any, **kwargs: Any) -> Any:
        if armed:
            raise Crash(f"{name}: before the journal write")
        return real_write(*args, **kwargs)

    journal_call = "remove_journal" if name == "_end" else "write_journal"
    real_write = getattr(StateStore, journal_call)
    mocker.patch.object(owner(name), name, side_effect=run_armed)
    mocker.patch.object(StateStore, journal_call, autospec=True, side_effect=die)


INJECT = {
    "before": crash_before,
    "after": crash_after,
    "midway": crash_midway,
    "journal": crash_before_the_journal,
}

CRASHES = [
    ("before", "step_backup"),
    ("after", "step_backup"),
    ("before", "step_rebase"),
    ("after", "step_rebase"),
    ("before", "run_gate"),  # killed during the gate: it never reported
    ("after", "run_gate"),  # the gate passed but that was never journaled
    ("midway", "rebase"),  # git's rebase state files left behind; ours by the journal
    ("before", "step_squash"),
    ("after", "step_squash"),
    ("before", "step_check"),
    ("after", "step_check"),
    ("after", "step_gate"),  # passed, journaled only in memory
    ("before", "move_base"),
    ("after", "move_base"),  # base moved, not journaled, not pushed
    ("before", "step_push"),
    ("after", "step_push"),
    ("before", "step_mark"),
    ("journal", "step_mark"),  # tasks marked merged in the state, the journal not yet told
    ("after", "step_mark"),
    ("before", "step_hooks"),
    ("after", "step_hooks"),
    ("journal", "_end"),  # the history written, the journal file not yet removed
]


def build_scenario(root: Path, template: Path, remote: bool) -> Path:
    """A repository and its origin (which accepts leased rewrites of agent branches)."""
    project = root / "project"
    shutil.copytree(template, project, symlinks=True)
    if remote:
        bare = root / "origin.git"
        git(root, "init", "-q", "--bare", str(bare))
        git(project, "remote", "add", "origin", str(bare))
        git(project, "push", "-q", "origin", "main")
    return project


Outcome = tuple[dict[str, str], dict[str, str], dict[str, str]]

# The uninterrupted run's refs, per template and squash (one per xdist worker): computed once.
_UNINTERRUPTED: dict[tuple[Path, bool], Outcome] = {}


def train_outcome(
    root: Path,
    template: Path,
    cli: Cli,
    mocker: MockerFixture,
    crash: tuple[str, str] | None,
    squash: bool = True,
    resume_env: dict[str, str] | None = None,
) -> Outcome:
    """Run the scenario's train (crashing at ``crash``, then --continue); return the refs.

    Without ``squash`` agent 3 also has a commit after its completed one (work
    in progress), and base moves first, so every agent is really rebased.
    """
    project = build_scenario(root, template, remote=True)
    os.chdir(project)
    configure(project, gate="test -f src/app.py", squash=squash, push=True, remote="origin")
    assert cli("setup").code == 0
    trees = project.parent / "project-worktrees"
    work(cli, trees, 1, {"one.py": "1\n", "one_b.py": "b\n"}, n=2)
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    if not squash:
        commit(agent_tree(trees, 3), {"three_wip.py": "wip\n"}, "wip")
        commit(project, {"base.py": "moved\n"}, "base moves")
        git(project, "push", "-q", "origin", "main")
    for agent in (1, 2, 3):  # agent branches exist on origin: pushed with a lease
        git(project, "push", "-q", "origin", f"parallel-dev/agent-{agent}")
    before = all_commits(project)
    if crash is not None:
        when, step = crash
        INJECT[when](mocker, step)
        with pytest.raises(Crash):
            cli("merge")
        mocker.stopall()
        assert state_of(project)["train"] is not None
        os.environ.update(resume_env or {})  # e.g. another committer, later (the test restores)
        result = cli("merge", "--continue")
    else:
        result = cli("merge")
    assert result.code == 0, result.err
    assert state_of(project)["train"] is None
    assert before <= kept(project)
    assert "not pushed" not in result.out  # the agent branches went out with their lease
    statuses = {k: v["status"] for k, v in state_of(project)["tasks"].items()}
    assert statuses == {"11": "merged", "12": "merged", "13": "merged"}
    (history,) = state_of(project)["merge_history"]  # once, even when the end was redone
    assert sorted(i for e in history["landed"] for i in e["issues"]) == [11, 12, 13]
    return refs(project), backups(project), refs(root / "origin.git", "refs/heads")


@pytest.mark.parametrize(("when", "step"), CRASHES)
def test_crash_then_continue_reaches_the_same_refs(
    when: str,
    step: str,
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    fixed_dates: None,
) -> None:
    if (template_repo, True) not in _UNINTERRUPTED:
        _UNINTERRUPTED[template_repo, True] = train_outcome(
            tmp_path / "clean", template_repo, cli, mocker, None
        )
    crashed = train_outcome(tmp_path / "crashed", template_repo, cli, mocker, (when, step))
    assert crashed == _UNINTERRUPTED[template_repo, True]
    assert len(crashed[0]) == 4 and len(crashed[1]) == 3  # main + 3 agents; 3 backups


UNSQUASHED_CRASHES = [
    ("midway", "rebase"),
    ("before", "step_trailers"),
    ("after", "step_trailers"),  # the trailers journaled in memory, the branch not moved yet
    ("before", "files_with_markers"),  # killed in the check, the branch moving beside it
    ("after", "step_check"),
    ("before", "step_wip"),
    ("after", "step_wip"),
    ("before", "step_mark"),
]


@pytest.mark.parametrize(("when", "step"), UNSQUASHED_CRASHES)
def test_crash_with_trailers_and_work_in_progress_reaches_the_same_refs(
    when: str,
    step: str,
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    fixed_dates: None,
) -> None:
    key = (template_repo, False)
    if key not in _UNINTERRUPTED:
        _UNINTERRUPTED[key] = train_outcome(
            tmp_path / "clean", template_repo, cli, mocker, None, squash=False
        )
        project = tmp_path / "clean" / "project"
        assert not (project / "three_wip.py").exists()
        assert git(project, "log", "-1", "--format=%s", "parallel-dev/agent-3") == "wip"
    crashed = train_outcome(
        tmp_path / "crashed", template_repo, cli, mocker, (when, step), squash=False
    )
    assert crashed == _UNINTERRUPTED[key]


def test_interrupt_during_gate_exits_130_and_kills_the_gate(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with(gate="true")
    work(cli, trees, 1, {"one.py": "1\n"})
    mocker.patch.object(gate_mod, "run_gate", side_effect=KeyboardInterrupt)

    result = cli("merge")

    assert result.code == 130
    assert state_of(repo)["train"]["agents"]["1"]["step"] == "gate"
    mocker.stopall()
    assert cli("merge", "--continue").code == 0
    assert (repo / "one.py").exists()


# -- remote ------------------------------------------------------------------------------------


@pytest.fixture
def other_machine(remote: Path, tmp_path: Path) -> Path:
    clone = tmp_path / "elsewhere"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    return clone


def test_push_lands_on_origin_and_another_machine_sees_it(
    repo: Path, remote: Path, other_machine: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    git(repo, "push", "-q", "origin", "parallel-dev/agent-1")
    # meanwhile another machine pushes to main
    git(other_machine, "pull", "-q", "--ff-only")
    commit(other_machine, {"theirs.py": "t\n"}, "from elsewhere")
    git(other_machine, "push", "-q", "origin", "main")
    before = all_commits(repo)

    result = cli("merge")

    assert result.code == 0, result.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert (repo / "theirs.py").exists()
    # origin refuses every non-fast-forward, so the rebased agent branch stays as it was there
    assert "parallel-dev/agent-1 not pushed to origin" in result.out
    assert git(remote, "rev-parse", "parallel-dev/agent-1") == rev(
        repo, "refs/remotes/origin/parallel-dev/agent-1"
    )
    assert git(remote, "branch", "--list", "parallel-dev/agent-2") == ""
    git(other_machine, "pull", "-q", "--ff-only")
    assert (other_machine / "one.py").exists() and (other_machine / "two.py").exists()
    assert before <= kept(repo)


def test_rewritten_agent_branch_is_pushed_with_a_lease(
    repo: Path, remote: Path, setup_with: Any, cli: Cli
) -> None:
    git(remote, "config", "receive.denyNonFastForwards", "false")
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    git(repo, "commit", "-q", "--allow-empty", "-m", "base moves")  # after the task started
    git(repo, "push", "-q", "origin", "main")
    git(repo, "push", "-q", "origin", "parallel-dev/agent-1")
    old = rev(repo, "parallel-dev/agent-1")

    result = cli("merge")

    assert result.code == 0, result.err
    new = rev(repo, "parallel-dev/agent-1")
    assert new != old  # it was rebased
    assert git(remote, "rev-parse", "parallel-dev/agent-1") == new
    assert git(remote, "rev-parse", "main") == new
    assert old in kept(repo)


def test_push_is_off_without_the_flag_and_no_push_wins(
    repo: Path, remote: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    origin_main = git(remote, "rev-parse", "main")
    assert cli("merge", "--no-push").code == 0
    assert git(remote, "rev-parse", "main") == origin_main
    assert cli("merge", "--push", "--no-push").code == 2


def test_push_needs_a_remote(setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    result = cli("merge", "--push")
    assert result.code == 2
    assert "project.remote" in result.err


def test_locks_a_killed_push_left_in_a_remote_on_this_machine_are_removed(
    repo: Path, remote: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    locks = [remote / "HEAD.lock", remote / "refs" / "heads" / "main.lock"]

    def receive_pack_killed(*args: Any, **kwargs: Any) -> None:
        for lock in locks:
            lock.write_text("")
        raise Crash("killed while git-receive-pack updated main")

    mocker.patch.object(paradev_git, "push", side_effect=receive_pack_killed)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    (remote / "refs" / "heads" / "other.lock").write_text("")  # not a ref the train pushes

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert not any(lock.exists() for lock in locks)
    assert (remote / "refs" / "heads" / "other.lock").exists()


def test_rejected_push_stops_and_continue_retries(
    repo: Path,
    remote: Path,
    other_machine: Path,
    setup_with: Any,
    cli: Cli,
    mocker: MockerFixture,
) -> None:
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    real_push = paradev_git.push

    def race(*args: Any, **kwargs: Any) -> None:
        """Another machine pushes to main just before we do."""
        git(other_machine, "pull", "-q", "--ff-only")
        commit(other_machine, {"theirs.py": "t\n"}, "from elsewhere")
        git(other_machine, "push", "-q", "origin", "main")
        mocker.stopall()
        real_push(*args, **kwargs)

    mocker.patch.object(paradev_git, "push", side_effect=race)

    result = cli("merge")

    assert result.code == 1
    assert "refused main" in result.err
    assert git(remote, "rev-parse", "main") == rev(other_machine, "main")  # never forced
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")  # landed locally
    assert state_of(repo)["train"]["stop"]["reason"] == "push"


def test_agent_branch_with_foreign_commits_on_origin_is_not_overwritten(
    repo: Path, remote: Path, other_machine: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(remote="origin", push=True)
    work(cli, trees, 1, {"one.py": "1\n"})
    git(repo, "push", "-q", "origin", "parallel-dev/agent-1")
    git(other_machine, "fetch", "-q")
    git(other_machine, "checkout", "-q", "parallel-dev/agent-1")
    theirs = commit(other_machine, {"extra.py": "x\n"}, "pushed from elsewhere")
    git(other_machine, "push", "-q", "origin", "parallel-dev/agent-1")

    result = cli("merge")

    assert result.code == 0, result.err
    assert "not pushing it" in result.out
    assert git(remote, "rev-parse", "parallel-dev/agent-1") == theirs


def test_state_store_sees_no_train_after_a_clean_run(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 3, {"three.py": "3\n"})
    assert cli("merge").code == 0
    assert StateStore(repo / ".git").read().train is None


# -- regressions found in review ----------------------------------------------------------------


def squash_outcome(
    root: Path, template: Path, cli: Cli, mocker: MockerFixture, crash: bool
) -> dict[str, str]:
    """Land agent 1's two tasks squashed; with ``crash``, die right after the branch moved."""
    project = build_scenario(root, template, remote=False)
    os.chdir(project)
    configure(project, squash=True)
    assert cli("setup").code == 0
    trees = project.parent / "project-worktrees"
    git(project, "commit", "-q", "--allow-empty", "-m", "base moves: a real rebase")
    work(cli, trees, 1, {"one.py": "1\n", "one_b.py": "b\n"}, n=2)
    work(cli, trees, 1, {"config.py": "c\n"})  # task 21, after task 11
    if crash:
        real = paradev_git.update_ref

        def move_then_die(git_: Any, ref: str, *args: Any, **kwargs: Any) -> None:
            real(git_, ref, *args, **kwargs)
            if ref == "refs/heads/parallel-dev/agent-1":
                raise Crash("squash moved the branch")

        mocker.patch.object(paradev_git, "update_ref", side_effect=move_then_die)
        with pytest.raises(Crash):
            cli("merge")
        mocker.stopall()
        result = cli("merge", "--continue")
    else:
        result = cli("merge")
    assert result.code == 0, result.err
    subjects = git(project, "log", "--format=%s", "-2", "main").splitlines()
    assert subjects == ["feat: Config command (#21)", "feat: Add the status command (#11)"]
    return refs(project)


def test_crash_right_after_the_squash_moved_the_branch_squashes_once(
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    fixed_dates: None,
) -> None:
    clean = squash_outcome(tmp_path / "clean", template_repo, cli, mocker, crash=False)
    crashed = squash_outcome(tmp_path / "crashed", template_repo, cli, mocker, crash=True)
    assert crashed == clean


def test_branch_moved_after_its_gate_is_not_landed_ungated(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with(gate="true")
    work(cli, trees, 1, {"one.py": "1\n"})
    main = rev(repo, "main")
    real_gate = gate_mod.run_gate
    late: list[str] = []

    def gate_then_agent_commits(*args: Any, **kwargs: Any) -> gate_mod.GateResult:
        """The agent, still running, commits while the gate finishes."""
        result = real_gate(*args, **kwargs)
        late.append(commit(agent_tree(trees, 1), {"late.py": "ungated\n"}, "late"))
        return result

    mocker.patch.object(gate_mod, "run_gate", side_effect=gate_then_agent_commits)

    result = cli("merge")

    assert result.code == 1
    assert rev(repo, "main") == main
    assert state_of(repo)["train"]["stop"]["reason"] == "branch-moved"
    mocker.stopall()
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert "gate passed" in result.out  # gated again, with the late commit
    assert rev(repo, "main^{tree}") == rev(repo, f"{late[0]}^{{tree}}")
    assert git(repo, "log", "-1", "--format=%s", "main") == "late"


def test_refusal_after_fetch_leaves_local_base_where_it_was(
    repo: Path, remote: Path, other_machine: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(remote="origin")
    work(cli, trees, 1, {"one.py": "1\n"})
    git(other_machine, "pull", "-q", "--ff-only")
    commit(other_machine, {"theirs.py": "t\n"}, "from elsewhere")
    git(other_machine, "push", "-q", "origin", "main")
    write(agent_tree(trees, 1), {"one.py": "uncommitted\n"})
    main = rev(repo, "main")

    result = cli("merge")

    assert result.code == 2
    assert "uncommitted changes" in result.err
    assert rev(repo, "main") == main  # refused before anything changed
    assert not (repo / "theirs.py").exists()


def test_abort_leaves_a_user_rebase_onto_the_same_commit(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    conflicting(cli, trees)
    assert cli("merge").code == 1
    agent = stopped_agent(repo)
    tree = agent_tree(trees, agent)
    git(tree, "rebase", "--abort")
    commit(tree, {f"mine-{agent}.py": "x\n"}, "my own work first")
    git(tree, "rebase", "-q", "main", check=False)  # same branch, same onto: the user's own
    assert "rebase in progress" in git(tree, "status")

    result = cli("merge", "--abort")

    assert result.code == 2
    assert "not started by this train" in result.err
    assert "rebase in progress" in git(tree, "status")


def test_skip_refuses_an_agent_base_already_holds(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    crash_after(mocker, "move_base")  # base moved; the journal does not know yet
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()

    result = cli("merge", "--skip")

    assert result.code == 2
    assert "already landed" in result.err
    assert cli("merge", "--continue").code == 0
    assert state_of(repo)["tasks"]["11"]["status"] == "merged"


def test_agent_tree_dirtied_during_the_train_is_refused_in_plain_words(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with(gate="true")
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    real_gate = gate_mod.run_gate

    def gate_while_agents_edit(*args: Any, **kwargs: Any) -> gate_mod.GateResult:
        for agent in (1, 2):
            write(agent_tree(trees, agent), {"README.md": "edited meanwhile\n"})
        return real_gate(*args, **kwargs)

    mocker.patch.object(gate_mod, "run_gate", side_effect=gate_while_agents_edit)

    result = cli("merge")

    assert result.code == 2
    assert "uncommitted changes (README.md)" in result.err
    second = state_of(repo)["train"]["order"][1]
    assert git(agent_tree(trees, second), "status", "--porcelain") == " M README.md"
    assert "rebase in progress" not in git(agent_tree(trees, second), "status")


def test_only_one_paradev_drives_the_train(repo: Path, setup_with: Any, cli: Cli) -> None:
    from filelock import FileLock

    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    main = rev(repo, "main")
    (repo / ".git" / "paradev").mkdir(exist_ok=True)

    with FileLock(str(repo / ".git" / "paradev" / "train.lock")):  # another paradev merge
        result = cli("merge")

    assert result.code == 2
    assert "driving the merge train" in result.err
    assert rev(repo, "main") == main and state_of(repo)["train"] is None
    assert cli("merge").code == 0


def test_abort_after_base_moved_keeps_the_landing_and_marks_it(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    head = work(cli, trees, 1, {"one.py": "1\n"})
    crash_after(mocker, "move_base")
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert rev(repo, "main^{tree}") == rev(repo, f"{head}^{{tree}}")  # head, with its trailer
    assert issue_trailers(repo, "main") == ["11"]
    state = state_of(repo)
    assert state["train"] is None
    assert state["tasks"]["11"]["status"] == "merged"
    assert state["merge_history"][-1]["landed"][0]["commit"] == rev(repo, "main")


def test_branch_holder_reads_who_has_a_branch_checked_out(repo: Path, tmp_path: Path) -> None:
    ws = open_workspace(repo)
    assert paradev_git.branch_holder(ws.repo, "main") == repo
    git(repo, "switch", "-q", "--detach")
    git(repo, "worktree", "add", "-q", str(tmp_path / "elsewhere"), "main")
    git(repo, "worktree", "add", "-q", "-b", "gone", str(tmp_path / "gone"))
    shutil.rmtree(tmp_path / "gone")  # prunable: its folder is gone

    assert paradev_git.branch_holder(ws.repo, "main") == (tmp_path / "elsewhere").resolve()
    assert paradev_git.branch_holder(ws.repo, "gone") is None
    assert paradev_git.branch_holder(ws.repo, "nobody") is None


# -- issue 8: the train's guarantees ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("agents.1.old_head", 5),
        ("agents.1.gate_runs", []),
        ("committer", 7),
        ("committer", ["x"]),
        ("left_out", 3),
        ("stops", {}),
    ],
)
def test_a_journal_field_of_the_wrong_type_is_one_clear_error(
    repo: Path, setup_with: Any, cli: Cli, key: str, value: Any
) -> None:
    trees = setup_with(gate="false")
    work(cli, trees, 1, {"one.py": "1\n"})
    assert cli("merge").code == 1  # the gate fails: the journal is left behind
    set_journal_field(repo, key, value)

    result = cli("merge", "--continue")

    assert result.code == 2
    assert f"train.{key} is" in result.err
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def three_commits_behind_a_moved_base(repo: Path, cli: Cli, trees: Path) -> list[str]:
    """Agent 1 completes three commits; base moves meanwhile, so landing needs a real rebase."""
    work(cli, trees, 1, {"a.py": "a\n", "b.py": "b\n", "c.py": "c\n"}, n=3)
    commit(repo, {"base.py": "moved\n"}, "base moves")
    return git(agent_tree(trees, 1), "log", "--format=%s", "-3").splitlines()


def _rebase_stopped_after_the_first_pick(worktree: Path, onto: str) -> Path:
    editor = {"GIT_SEQUENCE_EDITOR": "sed -i '1a break'"}
    paradev_git.Git(worktree).run("rebase", "-i", "--no-update-refs", onto, env=editor)
    folder = paradev_git.worktree_git_dir(worktree) / "rebase-merge"
    assert folder.is_dir()
    return folder


def kill_between_picks(mocker: MockerFixture) -> None:
    """Die as git does when killed inside a pick: ``done`` and ``msgnum`` written, no commit."""

    def rebase_then_die(worktree: Path, onto: str) -> bool:
        folder = _rebase_stopped_after_the_first_pick(worktree, onto)
        todo = (folder / "git-rebase-todo").read_text().splitlines(keepends=True)
        index = next(i for i, line in enumerate(todo) if line.startswith("pick "))
        with (folder / "done").open("a") as done:
            done.write(todo.pop(index))
        (folder / "git-rebase-todo").write_text("".join(todo))
        number = int((folder / "msgnum").read_text()) + 1
        (folder / "msgnum").write_text(f"{number}\n")
        raise Crash("killed between picks")

    mocker.patch.object(paradev_git, "rebase", side_effect=rebase_then_die)


def test_a_rebase_killed_between_picks_is_redone_and_lands_every_commit(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    subjects = three_commits_behind_a_moved_base(repo, cli, trees)
    kill_between_picks(mocker)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert "was interrupted, not stopped on a conflict" in result.out
    landed = git(repo, "log", "--format=%s", "-4", "main").splitlines()
    assert landed[:3] == subjects
    for name in ("a.py", "b.py", "c.py", "base.py"):
        assert (repo / name).exists(), name
    assert state_of(repo)["tasks"]["11"]["status"] == "merged"


def test_a_landing_that_lost_a_commit_is_stopped_by_the_patch_check(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    three_commits_behind_a_moved_base(repo, cli, trees)
    lost = git(agent_tree(trees, 1), "log", "--format=%h", "-1", "HEAD~1")
    main = rev(repo, "main")

    def rebase_dropping_the_second_pick(worktree: Path, onto: str) -> bool:
        editor = {"GIT_SEQUENCE_EDITOR": "sed -i '2d'"}  # git "forgets" one commit
        paradev_git.Git(worktree).run("rebase", "-i", "--no-update-refs", onto, env=editor)
        return True

    mocker.patch.object(paradev_git, "rebase", side_effect=rebase_dropping_the_second_pick)

    result = cli("merge")

    assert result.code == 1
    assert rev(repo, "main") == main
    assert "lacks part of its completed work" in result.err
    assert "paths b.py" in result.err
    assert lost in result.err
    assert state_of(repo)["tasks"]["11"]["status"] == "completed"


def test_a_half_written_rebase_is_quit_and_redone(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    subjects = three_commits_behind_a_moved_base(repo, cli, trees)

    def die_while_writing_the_rebase_state(worktree: Path, onto: str) -> bool:
        folder = _rebase_stopped_after_the_first_pick(worktree, onto)
        for name in ("head-name", "onto", "orig-head"):
            (folder / name).unlink()
        raise Crash("killed while git wrote its state")

    mocker.patch.object(paradev_git, "rebase", side_effect=die_while_writing_the_rebase_state)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    tree = agent_tree(trees, 1)
    assert paradev_git.rebase_in_progress(tree) is not None

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects
    assert paradev_git.rebase_in_progress(tree) is None


@pytest.mark.parametrize("written", ["moved\n", "mo", ""], ids=["whole", "cut", "empty"])
@pytest.mark.parametrize("state_kept", [True, False], ids=["rebase-state", "no-state"])
def test_files_a_killed_checkout_of_base_left_are_removed_before_the_rebase_is_redone(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture, written: str, state_kept: bool
) -> None:
    """Killed inside the rebase's checkout of base, with git's rebase state kept or (killed
    earlier, or after paradev's abort removed it) none: the files the checkout wrote stay
    untracked, and the rebase started again would refuse to overwrite them."""
    trees = setup_with()
    subjects = three_commits_behind_a_moved_base(repo, cli, trees)
    tree = agent_tree(trees, 1)
    start = rev(tree, "HEAD")

    def killed_while_checking_out_onto(worktree: Path, onto: str) -> bool:
        if state_kept:
            _rebase_stopped_after_the_first_pick(worktree, onto)
            git(worktree, "reset", "-q", "--hard", start)  # HEAD not moved yet ...
        write(worktree, {"base.py": written})  # ... one file of onto (partly) written
        raise Crash("killed inside the rebase's checkout")

    mocker.patch.object(paradev_git, "rebase", side_effect=killed_while_checking_out_onto)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    assert (paradev_git.rebase_in_progress(tree) is not None) == state_kept
    write(tree, {"notes.txt": "the agent's own untracked notes\n"})

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert "a killed checkout of" in result.out
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects
    assert (tree / "notes.txt").exists()


def killed_midway_through_a_rebase(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> tuple[Path, list[str]]:
    """``paradev merge`` killed while git rebases agent 1's three commits: (trees, subjects)."""
    trees = setup_with()
    subjects = three_commits_behind_a_moved_base(repo, cli, trees)
    crash_midway(mocker, "rebase")
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    return trees, subjects


def test_stale_lock_files_of_a_killed_run_are_removed_with_a_note(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees, subjects = killed_midway_through_a_rebase(repo, setup_with, cli, mocker)
    tree = agent_tree(trees, 1)
    index_lock = paradev_git.worktree_git_dir(tree) / "index.lock"
    ref_lock = repo / ".git" / "refs" / "heads" / "parallel-dev" / "agent-1.lock"
    index_lock.write_text("")  # what a killed git child leaves
    ref_lock.write_text("")

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert f"removed {index_lock}" in result.out
    assert f"removed {ref_lock}" in result.out
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects


def test_a_lock_older_than_the_killed_run_is_left_alone(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    killed_midway_through_a_rebase(repo, setup_with, cli, mocker)
    ref_lock = repo / ".git" / "refs" / "heads" / "parallel-dev" / "agent-1.lock"
    ref_lock.write_text("")
    old = time.time() - 3600
    os.utime(ref_lock, (old, old))  # someone else's, from before the train started

    cli("merge", "--continue")

    assert ref_lock.exists()


@pytest.mark.parametrize("name", ["CHERRY_PICK_HEAD.lock", "MERGE_MSG.lock", "REBASE_HEAD.lock"])
def test_any_git_lock_a_killed_run_left_in_the_agent_git_dir_is_removed(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture, name: str
) -> None:
    trees, subjects = killed_midway_through_a_rebase(repo, setup_with, cli, mocker)
    lock = paradev_git.worktree_git_dir(agent_tree(trees, 1)) / name
    lock.write_text("")  # a git child killed inside a pick leaves it: every rebase then stops

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert f"removed {lock}" in result.out
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects
    assert not list(paradev_git.worktree_git_dir(agent_tree(trees, 1)).rglob("*.lock"))


def test_a_lock_left_before_a_later_run_took_over_is_still_removed(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees, subjects = killed_midway_through_a_rebase(repo, setup_with, cli, mocker)
    lock = paradev_git.worktree_git_dir(agent_tree(trees, 1)) / "index.lock"
    lock.write_text("")  # left by the first run's git child
    path = repo / ".git" / "paradev" / "train.json"
    data = json.loads(path.read_text())
    start = time.time() - 120  # the train began two minutes ago; its first run left the lock,
    data["drivers_since"] = start  # then a second run took over and died too
    data["driver"]["since"] = start + 60
    path.write_text(json.dumps(data))
    os.utime(lock, (start + 30, start + 30))

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert f"removed {lock}" in result.out
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects


@pytest.mark.parametrize("staged", [False, True])
def test_a_fast_forward_of_base_killed_half_way_is_done_again(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture, staged: bool
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"src/app.py": "changed\n", "new.py": "new\n"})
    commit(repo, {"unrelated.py": "moved\n"}, "base moves")

    def write_some_files_then_die(worktree: Path, commit: str) -> None:
        git(worktree, "checkout", commit, "--", "new.py", "src/app.py")  # files and index
        if not staged:  # killed before the index was written
            git(worktree, "reset", "-q", "--", "new.py", "src/app.py")
        (paradev_git.worktree_git_dir(worktree) / "index.lock").write_text("")
        raise Crash("killed inside git merge --ff-only")

    mocker.patch.object(paradev_git, "merge_ff_only", side_effect=write_some_files_then_die)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    (repo / "notes.txt").write_text("the user's own untracked file\n")

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert "a killed fast-forward of main had already written" in result.out
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")
    assert git(repo, "status", "--porcelain") == "?? notes.txt"
    assert (repo / "src" / "app.py").read_text() == "changed\n"


def test_a_file_a_killed_fast_forward_cut_short_is_kept_then_put_back(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"src/app.py": "changed\n", "new.py": "new content\n"})
    commit(repo, {"unrelated.py": "moved\n"}, "base moves")

    def cut_a_file_short_then_die(worktree: Path, commit: str) -> None:
        (worktree / "new.py").write_text("new con")  # unlinked, rewritten, killed mid-write
        raise Crash("killed inside git merge --ff-only")

    mocker.patch.object(paradev_git, "merge_ff_only", side_effect=cut_a_file_short_then_die)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")
    assert git(repo, "status", "--porcelain") == ""
    kept = git(repo, "for-each-ref", "--format=%(refname)", "refs/paradev/backup/main/")
    assert kept and f"kept in {kept}" in result.out
    assert git(repo, "show", f"{kept}:new.py") == "new con"


def test_a_user_edit_in_base_tree_still_refuses_the_fast_forward(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"src/app.py": "changed\n"})
    mocker.patch.object(paradev_git, "merge_ff_only", side_effect=Crash("killed"))
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    (repo / "src" / "app.py").write_text("the user's edit\n")

    result = cli("merge", "--continue")

    assert result.code == 2
    assert "has uncommitted changes (src/app.py)" in result.err
    assert (repo / "src" / "app.py").read_text() == "the user's edit\n"


# -- conflict markers ----------------------------------------------------------------------------


def agent_command(repo: Path, script: Path) -> None:
    """Give the plan an agent command: ``script`` run with the prompt file."""
    plan = (repo / "plan.toml").read_text()
    command = json.dumps([str(script), "{prompt_file}"])
    plan = plan.replace("[agents]\ncount = 3\n", f"[agents]\ncount = 3\ncommand = {command}\n")
    commit(repo, {"plan.toml": plan}, "agent command")


def test_an_agent_that_commits_conflict_markers_lands_nothing(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    trees = setup_with(on_conflict="agent")
    script = tmp_path / "careless-agent"
    script.write_text("#!/bin/sh\ngit add -A && git rebase --continue\nexit 0\n")
    script.chmod(0o755)
    agent_command(repo, script)
    conflicting(cli, trees)

    result = cli("merge")

    assert result.code == 1
    text = git(repo, "log", "-p", "main")
    assert "<<<<<<<" not in text and ">>>>>>>" not in text
    assert "still holds conflict markers or unmerged entries in: src/util.py" in result.err
    assert "handing it back" in result.out  # the agent was told which files hold markers
    assert state_of(repo)["train"]["stop"]["reason"] == "markers"


RESOLVER = """#!/bin/sh
# keeps both sides of the conflict, then finishes the rebase
git diff --name-only --diff-filter=U | while read -r f; do
  grep -v -e '^<<<<<<< ' -e '^=======$' -e '^>>>>>>> ' "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  git add -- "$f"
done
GIT_EDITOR=true git rebase --continue
"""


def resolving_agent(repo: Path, setup_with: Any, cli: Cli, script: Path, delay: float) -> Path:
    """Agents 1 and 2 conflict; the agent command resolves after ``delay`` seconds."""
    trees: Path = setup_with(on_conflict="agent")
    script.write_text(RESOLVER.replace("\n", f"\nsleep {delay}\n", 1))
    script.chmod(0o755)
    agent_command(repo, script)
    conflicting(cli, trees)
    return trees


def test_a_resolution_survives_the_driver_killed_while_the_agent_resolved(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path, mocker: MockerFixture
) -> None:
    from paradev import runner

    trees = resolving_agent(repo, setup_with, cli, tmp_path / "resolving-agent", 0)
    real = runner.hand_back_conflict

    def agent_resolves_but_paradev_dies(*args: Any, **kwargs: Any) -> bool:
        real(*args, **kwargs)  # the agent (its own process group) finishes the rebase
        raise Crash("paradev killed while the agent resolved")

    mocker.patch.object(runner, "hand_back_conflict", side_effect=agent_resolves_but_paradev_dies)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    loser = int(state_of(repo)["train"]["queue"][0])
    assert paradev_git.rebase_in_progress(agent_tree(trees, loser)) is None  # the agent finished

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    landed = (repo / "src" / "util.py").read_text()
    assert "VALUE = 'one'" in landed and "VALUE = 'two'" in landed  # the agent's resolution
    assert {t["status"] for t in state_of(repo)["tasks"].values()} == {"merged"}


def test_a_resume_waits_for_the_agent_still_resolving_a_killed_driver_handed_back(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path, mocker: MockerFixture
) -> None:
    from paradev import runner

    trees = resolving_agent(repo, setup_with, cli, tmp_path / "slow-agent", 1.5)
    mocker.patch.object(runner, "wait_for", side_effect=Crash("killed while the agent works"))
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    loser = int(state_of(repo)["train"]["queue"][0])
    assert paradev_git.unmerged_paths(agent_tree(trees, loser))  # the agent is still at it

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert f"agent {loser} is still resolving the conflict handed back to it; waiting" in result.out
    assert "handing it back" not in result.out  # never a second agent on the same rebase
    landed = (repo / "src" / "util.py").read_text()
    assert "VALUE = 'one'" in landed and "VALUE = 'two'" in landed


def test_a_heading_underline_and_trailing_spaces_are_not_markers(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"NOTES.md": "Title\n=======\n\nline with trailing space  \n"})

    result = cli("merge")

    assert result.code == 0, result.err
    assert (repo / "NOTES.md").exists()


# -- only completed work lands, and only where nothing else is --------------------------------


@pytest.mark.parametrize("base_moves", [True, False])
def test_commits_after_the_completed_one_stay_on_the_branch_unlanded(
    repo: Path, setup_with: Any, cli: Cli, base_moves: bool
) -> None:
    trees = setup_with()
    completed = work(cli, trees, 1, {"one.py": "1\n"})
    if base_moves:
        commit(repo, {"base.py": "moved\n"}, "base moves")
    wip = commit(agent_tree(trees, 1), {"wip.py": "half done\n"}, "wip")

    result = cli("merge")

    assert result.code == 0, result.err
    assert (repo / "one.py").exists()
    assert not (repo / "wip.py").exists()
    main = rev(repo, "main")
    assert git(repo, "diff", "--stat", f"{completed}", "main", "--", "one.py") == ""
    assert rev(repo, "parallel-dev/agent-1~1") == main  # the WIP commit, now on what landed
    assert git(repo, "log", "-1", "--format=%s", "parallel-dev/agent-1") == "wip"
    assert rev(repo, "refs/paradev/backup/parallel-dev/agent-1/" + backup_id(repo)) == wip
    assert "stay on parallel-dev/agent-1, unlanded" in result.out


def test_skip_puts_the_commits_set_aside_back_on_the_branch(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with(gate="false")
    work(cli, trees, 1, {"one.py": "1\n"})
    wip = commit(agent_tree(trees, 1), {"wip.py": "half done\n"}, "wip")
    assert cli("merge").code == 1  # the gate fails

    result = cli("merge", "--skip")

    assert result.code == 0, result.err
    assert rev(repo, "parallel-dev/agent-1") == wip
    assert (agent_tree(trees, 1) / "wip.py").exists()


def backup_id(repo: Path) -> str:
    return next(iter(refs(repo, "refs/paradev/backup"))).rsplit("/", 1)[1]


class Holder:
    """A real process holding agent ``agent``'s lock, as a running ``paradev run-batch`` does."""

    def __init__(self, repo: Path, agent: int, what: str) -> None:
        code = (
            "import sys; from pathlib import Path; from paradev.state import StateStore\n"
            f"with StateStore(Path(sys.argv[1])).agent_lock({agent}, {what!r}):\n"
            "    print('ready', flush=True); sys.stdin.read()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(repo / ".git")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n"

    def release(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_merge_refuses_an_agent_run_batch_holds(repo: Path, setup_with: Any, cli: Cli) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    main = rev(repo, "main")
    holder = Holder(repo, 1, "paradev run-batch")
    try:
        result = cli("merge")
    finally:
        holder.release()

    assert result.code == 2
    assert f"agent 1 is busy: paradev run-batch (pid {holder.proc.pid}) holds it" in result.err
    assert rev(repo, "main") == main
    assert state_of(repo)["train"] is None
    assert cli("merge").code == 0  # once it is free


def test_run_batch_refuses_an_agent_the_train_holds(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    setup_with()
    script = tmp_path / "agent"
    script.write_text("#!/bin/sh\necho work > work.txt && git add -A && git commit -qm work\n")
    script.chmod(0o755)
    agent_command(repo, script)
    holder = Holder(repo, 2, "paradev merge")
    try:
        result = cli("run-batch")
    finally:
        holder.release()

    assert result.code == 2
    assert "agent 2 is busy: paradev merge" in result.err
    assert state_of(repo)["tasks"].get("12", {}).get("status") in (None, "planned", "assigned")


def test_the_gate_refuses_a_worktree_holding_more_than_the_candidate(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    passes = tmp_path / "gate-passes"
    trees = setup_with(gate=f"test -f {passes}")
    work(cli, trees, 1, {"one.py": "1\n"})
    main = rev(repo, "main")
    scratch = agent_tree(trees, 1) / "scratch.py"
    scratch.write_text("not committed\n")

    refused = cli("merge")  # before anything changes

    assert refused.code == 2
    assert "agent 1's worktree" in refused.err and "scratch.py" in refused.err
    assert state_of(repo)["train"] is None
    scratch.unlink()
    assert cli("merge").code == 1  # the gate fails: the train waits for a fix
    scratch.write_text("not committed\n")
    passes.write_text("")

    refused = cli("merge", "--continue")  # the gate would test scratch.py too

    assert refused.code == 2
    assert "scratch.py" in refused.err
    assert rev(repo, "main") == main
    scratch.unlink()
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert (repo / "one.py").exists()


# -- Paradev-Issue trailers -----------------------------------------------------------------------


def issue_trailers(repo: Path, rev_range: str) -> list[str]:
    """The Paradev-Issue trailer values of each commit, newest first, as reset will read them."""
    out = git(
        repo, "log", "--format=%(trailers:key=Paradev-Issue,valueonly,separator=%x2C)", rev_range
    )
    return out.splitlines()


@pytest.mark.parametrize("squash", [False, True])
def test_every_landed_commit_names_its_own_task_issue(
    repo: Path, setup_with: Any, cli: Cli, squash: bool
) -> None:
    trees = setup_with(squash=squash)
    commit(repo, {"base.py": "moved\n"}, "base moves")
    start = rev(repo, "main")
    work(cli, trees, 1, {"one.py": "1\n", "one_b.py": "b\n"}, n=2)  # task 11
    work(cli, trees, 1, {"config.py": "c\n"})  # task 21
    work(cli, trees, 2, {"two.py": "2\n"})  # task 12

    result = cli("merge")

    assert result.code == 0, result.err
    trailers = issue_trailers(repo, f"{start}..main")
    expected = {"11", "21", "12"}
    assert set(trailers) == expected
    assert len(trailers) == (3 if squash else 4)
    owner = {"one.py": "11", "one_b.py": "11", "config.py": "21", "two.py": "12"}
    commits = git(repo, "log", "--format=%H", f"{start}..main").splitlines()
    for sha, trailer in zip(commits, trailers, strict=True):
        files = git(repo, "show", "--format=", "--name-only", sha).split()
        assert {owner[f] for f in files} == {trailer}, (files, trailer)


def test_a_task_completed_after_the_selection_before_the_lock_lands_named_and_marked(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """The checks before a train read the state without copying its records, yet every
    reader reads the file anew: what the agent completes after the train chose it, before
    the train locks it, lands with its trailer and is marked merged (never a stale read)."""
    trees = setup_with()
    start = rev(repo, "main")
    work(cli, trees, 1, {"one.py": "1\n"})  # task 11
    from paradev.order import select_agents as choose

    def the_agent_completes_its_next_task_meanwhile(*args: Any, **kwargs: Any) -> Any:
        selection = choose(*args, **kwargs)
        assert run_process(repo, "start", "1").code == 0  # task 21, in another process
        commit(agent_tree(trees, 1), {"config.py": "c\n"}, "config")
        done = run_process(repo, "complete", "1")
        assert done.code == 0, done.err
        return selection

    mocker.patch("paradev.train.checks.select_agents", the_agent_completes_its_next_task_meanwhile)

    result = cli("merge")

    assert result.code == 0, result.err
    assert (repo / "config.py").exists()
    assert set(issue_trailers(repo, f"{start}..main")) == {"11", "21"}
    tasks = state_of(repo)["tasks"]
    assert (tasks["11"]["status"], tasks["21"]["status"]) == ("merged", "merged")
    assert state_of(repo)["merge_history"][-1]["landed"][0]["issues"] == [11, 21]


def test_a_rebase_stopped_without_conflicts_is_not_called_a_conflict(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    subjects = three_commits_behind_a_moved_base(repo, cli, trees)

    def stops_with_nothing_conflicted(worktree: Path, onto: str) -> bool:
        _rebase_stopped_after_the_first_pick(worktree, onto)
        return False  # git stopped, as on a blocked pick, with no file in conflict

    mocker.patch.object(paradev_git, "rebase", side_effect=stops_with_nothing_conflicted)
    result = cli("merge")
    mocker.stopall()

    assert result.code == 1
    assert "without any conflicted file" in result.err
    assert "conflicted files" not in result.out
    assert state_of(repo)["train"]["stop"]["reason"] == "rebase"
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == subjects


# -- issue 11: the journal in its own file -------------------------------------------------------


def _count_writes(mocker: MockerFixture, cli: Cli) -> dict[str, list[int]]:
    """Run ``paradev merge``; the size of each file write, by file name (state.json, train.json)."""
    spy = mocker.spy(StateStore, "_replace")
    assert cli("merge").code == 0
    writes: dict[str, list[int]] = {}
    for call in spy.call_args_list:
        _, path, text = call.args
        writes.setdefault(Path(path).name, []).append(len(text))
    mocker.stop(spy)
    return writes


def test_state_writes_per_branch_do_not_grow_with_history(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    small = _count_writes(mocker, cli)  # one branch, a short history
    with open_workspace(repo).store.update() as state:  # years of finished tasks
        for issue in range(1000, 3000):
            state.task(issue, 3).status = "merged"
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    large = _count_writes(mocker, cli)  # two branches, 2,000 more task records

    assert len(large["state.json"]) == len(small["state.json"])  # none per branch: marks ride
    assert len(small["state.json"]) <= 4  # order, start, conflict snapshot, history + marks
    assert min(large["state.json"]) > 200_000  # each of them costs the whole history...
    assert max(large["train.json"]) < 20_000  # ...which no journal write carries
    assert len(large["train.json"]) <= 2 * len(small["train.json"]) + 2


def _count_reads(mocker: MockerFixture, cli: Cli) -> int:
    """Run ``paradev merge``; how many times the train read the state file (whole history)."""
    spy = mocker.spy(StateStore, "_read_state_file")
    assert cli("merge").code == 0
    count = spy.call_count
    mocker.stop(spy)
    return count


def test_the_state_is_read_once_for_the_queue_not_per_landing(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    one = _count_reads(mocker, cli)
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    three = _count_reads(mocker, cli)

    assert state_of(repo)["tasks"]["13"]["status"] == "merged"  # marked from the shared read
    assert three <= one  # two more landings, no more reads of thousands of records


@pytest.mark.parametrize("checked_out", [True, False])
def test_base_moving_during_the_gate_stops_the_train_and_lands_nothing(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture, checked_out: bool
) -> None:
    """Checked out, ``git merge --ff-only`` proves the fast-forward (no ancestry check first);
    not checked out, the compare-and-swap does not, so it is checked: both stop alike."""
    trees = setup_with(gate="true")
    if not checked_out:
        git(repo, "checkout", "-q", "--detach")
    work(cli, trees, 1, {"one.py": "1\n"})
    real_gate = gate_mod.run_gate
    moved: list[str] = []

    def gate_while_base_moves(*args: Any, **kwargs: Any) -> gate_mod.GateResult:
        result = real_gate(*args, **kwargs)
        if checked_out:
            moved.append(commit(repo, {"elsewhere.py": "e\n"}, "base moves"))
        else:
            head = rev(repo, "main")
            tree = git(repo, "write-tree")
            moved.append(git(repo, "commit-tree", tree, "-p", head, "-m", "base moves"))
            git(repo, "update-ref", "refs/heads/main", moved[0], head)
        return result

    mocker.patch.object(gate_mod, "run_gate", side_effect=gate_while_base_moves)

    result = cli("merge")

    assert result.code == 1
    assert rev(repo, "main") == moved[0]  # nothing landed on top of it
    assert state_of(repo)["train"]["stop"]["reason"] == "base-moved"
    assert "main moved while agent 1 was being landed" in result.err
    mocker.stopall()
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert git(repo, "rev-list", "--count", f"{moved[0]}..main") == "1"
    assert git(repo, "show", "main:one.py") == "1"


def test_a_train_resumed_by_another_committer_later_makes_the_same_commits(
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    fixed_dates: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The journal fixes the committer (name, email, date): whoever goes on, whenever."""
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Driver On Laptop")
    clean = train_outcome(tmp_path / "clean", template_repo, cli, mocker, None)
    other = {
        "GIT_COMMITTER_NAME": "Driver On Box",
        "GIT_COMMITTER_DATE": "2026-03-03T03:03:03+0000",
    }
    crashed = train_outcome(
        tmp_path / "crashed", template_repo, cli, mocker, ("after", "step_rebase"), resume_env=other
    )
    assert crashed == clean
    main = tmp_path / "crashed" / "project"
    assert git(main, "log", "-1", "--format=%cn %cI", "main") == (
        "Driver On Laptop 2026-01-01T00:00:00+00:00"
    )


def test_tasks_a_train_landed_read_merged_before_the_state_file_says_so(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """The marks ride in the journal: every read applies them; the train's end writes them.

    A mark is written with the next journal write: here agent 2's rebase's.
    """
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    from paradev.train.rewrite import step_check as real_check

    def crash_on_the_second(train: Any, agent: int) -> None:
        if train.journal["landed"]:  # agent 1 landed and marked, agent 2 rebased
            raise Crash("step_check")
        real_check(train, agent)

    mocker.patch.object(train_mod, "step_check", side_effect=crash_on_the_second)
    with pytest.raises(Crash):
        cli("merge")
    mocker.stopall()
    store = open_workspace(repo).store
    landed = rev(repo, "main")
    record = store.read().tasks[11]
    assert (record.status, record.merged_commit) == ("merged", landed)
    assert record.merged_at is not None
    assert json.loads(store.path.read_text())["tasks"]["11"]["status"] == "completed"
    assert cli("merge", "--continue").code == 0
    on_file = json.loads(store.path.read_text())["tasks"]
    assert (on_file["11"]["status"], on_file["11"]["merged_commit"]) == ("merged", landed)
    assert on_file["11"]["merged_at"] == record.merged_at  # the journaled time, not a new one
    assert on_file["12"]["status"] == "merged"
    assert not store.journal_path.exists()


def test_markers_an_agent_committed_then_removed_by_a_person_land_as_the_stop_said(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    """The files a markers stop names are the resolver's: removing the block is no lost work."""
    trees = setup_with()
    block = "<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> other\n"
    work(cli, trees, 1, {"src/util.py": UTIL + block, "notes-1.txt": "one\n"})
    stopped = cli("merge")
    assert stopped.code == 1
    assert "still holds conflict markers or unmerged entries in: src/util.py" in stopped.err
    commit(agent_tree(trees, 1), {"src/util.py": UTIL + "mine\n"}, "fix: drop the markers")

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert (repo / "src" / "util.py").read_text() == UTIL + "mine\n"
    assert (repo / "notes-1.txt").read_text() == "one\n"  # the rest of its work is checked too
    assert state_of(repo)["tasks"]["11"]["status"] == "merged"


ADDS_AGAIN = """#!/bin/sh
# drops the markers it was told of, and writes its changelog entry a second time
printf 'mine\\n' > src/marked.py
{ printf '## Unreleased\\n\\n* util\\n\\n'; cat CHANGES.md; } > CHANGES.md.new
mv CHANGES.md.new CHANGES.md
git commit -qam 'fix: no markers; one more changelog entry'
"""


def test_an_agent_handed_markers_back_that_adds_next_to_its_own_work_lands_it_all(
    repo: Path, setup_with: Any, cli: Cli, tmp_path: Path
) -> None:
    """Its completed entry is still there, with another above it: no work is lost."""
    commit(repo, {"CHANGES.md": "# History\n\n## 1.0\n"}, "a changelog")
    trees = setup_with(on_conflict="agent")
    script = tmp_path / "adds-again"
    script.write_text(ADDS_AGAIN)
    script.chmod(0o755)
    agent_command(repo, script)
    entry = "## Unreleased\n\n* util\n\n"
    block = "<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> other\n"
    work(cli, trees, 1, {"CHANGES.md": entry + "# History\n\n## 1.0\n", "src/marked.py": block})

    result = cli("merge")

    assert result.code == 0, result.err
    assert "handing it back" in result.out
    assert (repo / "CHANGES.md").read_text() == entry + entry + "# History\n\n## 1.0\n"
    assert (repo / "src" / "marked.py").read_text() == "mine\n"
    assert state_of(repo)["tasks"]["11"]["status"] == "merged"


def test_escape_sequences_an_agent_put_in_commit_subjects_and_file_names_are_printed_escaped(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    trees = setup_with()
    sneaky = "src/\x1b]0;owned\x07util.py"
    work(cli, trees, 1, {"src/util.py": "VALUE = 'one'\n"})
    assert cli("start", "2").code == 0
    commit(agent_tree(trees, 2), {"src/util.py": "VALUE = 'two'\n"}, "fix: \x1b[2J cleared")
    commit(agent_tree(trees, 2), {sneaky: "<<<<<<< a\nx\n=======\ny\n>>>>>>> b\n"}, "more")
    assert cli("complete", "2").code == 0

    result = cli("merge")

    assert result.code == 1
    shown = result.out + result.err
    assert "\x1b" not in shown and "\x07" not in shown
    assert "fix: \\x1b[2J cleared" in shown  # the conflicting pick, escaped


def test_every_backup_exists_before_the_first_gate_and_follows_a_branch_moved_since(
    repo: Path, setup_with: Any, cli: Cli, worktrees: Path
) -> None:
    """The backups are made together at the train's start; a commit on a later branch
    after that (here by agent 1's gate) is backed up too, and stays on the branch."""
    tree2 = agent_tree(worktrees, 2)
    seen = repo.parent / "backups-during-gate.txt"
    gate = (
        'if [ "$PARADEV_AGENT" = 1 ]; then '
        f"git -C {repo} for-each-ref --format='%(refname)' refs/paradev/backup > {seen} && "
        f"echo late > {tree2}/late.py && git -C {tree2} add late.py && "
        f"git -C {tree2} commit -q -m late; fi"
    )
    trees = setup_with(gate=gate)
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})

    result = cli("merge")

    assert result.code == 0, result.err
    backups = seen.read_text().split()
    assert len(backups) == 2 and any("agent-2" in ref for ref in backups)
    assert git(repo, "show", "main:two.py") == "2"
    assert "late.py" not in git(repo, "ls-tree", "--name-only", "main")  # not completed: wip
    assert git(repo, "log", "-1", "--format=%s", "parallel-dev/agent-2") == "late"  # kept
    assert git(repo, "rev-parse", "parallel-dev/agent-2~1") == rev(repo, "main")
    agent2_backup = next(ref for ref in backups if "agent-2" in ref)
    assert git(repo, "log", "-1", "--format=%s", agent2_backup) == "late"


# -- issue 11: a landing's mark rides on the next journal write ------------------------------

DETACHING_GATE = (
    'for t in "$PARADEV_WORKTREE"/../agent-*; do '
    '[ "$t" -ef "$PARADEV_WORKTREE" ] || git -C "$t" checkout -q --detach; done'
)


def test_a_refusal_after_a_landing_still_records_what_landed(
    repo: Path, setup_with: Any, cli: Cli
) -> None:
    """The first gate detaches the other agent's tree: its rebase refuses (exit 2, before
    any write of its own) after the first agent landed, whose tasks the state must show
    merged all the same."""
    trees = setup_with(gate=DETACHING_GATE)
    for agent in (1, 2):
        work(cli, trees, agent, {f"feature_{agent}.py": f"X = {agent}\n"})

    result = cli("merge")

    assert result.code == 2, result.out
    assert "checked out; check it out first" in result.err
    journal = state_of(repo)["train"]  # as written in the journal's file
    (landing,) = journal["landed"]
    assert landing["commit"] == rev(repo, "main")
    first, second = landing["agent"], 3 - landing["agent"]
    state = open_workspace(repo).store.read()
    assert state.tasks[10 + first].status == "merged"
    assert state.tasks[10 + first].merged_commit == rev(repo, "main")
    assert state.tasks[10 + second].status == "completed"
    git(agent_tree(trees, second), "checkout", "-q", f"parallel-dev/agent-{second}")
    result = cli("merge", "--continue")
    assert result.code == 0, result.err
    assert {e["agent"] for e in state_of(repo)["merge_history"][-1]["landed"]} == {1, 2}


def test_the_rebased_commits_are_read_with_no_git_process(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """The trailer rewrite reads what the rebase wrote from its loose objects (no ``git log``)
    and keeps each commit's message, author and tree."""
    trees = setup_with()
    assert cli("start", "2").code == 0
    tree = agent_tree(trees, 2)
    for n in range(2):
        commit(tree, {f"two_{n}.py": f"{n}\n"}, f"feat: two {n}\n\nwhy, in words {n}\n")
    assert cli("complete", "2").code == 0
    originals = git(tree, "rev-list", "--reverse", "HEAD~2..HEAD").split()
    commit(repo, {"base.py": "moved\n"}, "base moves")  # a real rebase
    log = mocker.spy(paradev_git, "read_range")

    assert cli("merge").code == 0

    assert log.call_count == 0
    landed = git(repo, "rev-list", "--reverse", "main~2..main").split()
    for n, (sha, old) in enumerate(zip(landed, originals, strict=True)):
        message = git(repo, "cat-file", "commit", sha).split("\n\n", 1)[1]
        assert message == f"feat: two {n}\n\nwhy, in words {n}\n\nParadev-Issue: 12"
        who = "--format=%an <%ae> %ad"
        assert git(repo, "log", "-1", who, sha) == git(repo, "log", "-1", who, old)
    assert (repo / "two_1.py").read_text() == "1\n" and (repo / "base.py").exists()


def test_the_trailers_move_the_branch_beside_the_check_processes(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """The rewritten branch is moved while the check runs (same trees: nothing it reads
    depends on the move), and has moved before the gate runs on it."""
    import threading

    trees = setup_with(gate="git log -1 --format=%B | grep -q '^Paradev-Issue: 11$'")
    work(cli, trees, 1, {"one.py": "1\n"})
    commit(repo, {"base.py": "moved\n"}, "base moves")
    real, movers = paradev_git.update_ref, []

    def noting(git: Any, ref: str, *args: Any, **kwargs: Any) -> None:
        movers.append((ref, threading.current_thread() is threading.main_thread()))
        real(git, ref, *args, **kwargs)

    mocker.patch.object(paradev_git, "update_ref", side_effect=noting)

    result = cli("merge")

    assert result.code == 0, result.err
    assert ("refs/heads/parallel-dev/agent-1", False) in movers  # in the check's threads
    assert issue_trailers(repo, "main~1..main") == ["11"]


@pytest.mark.parametrize("packed", [False, True])
def test_the_train_reads_branch_and_tracking_refs_from_their_files(
    repo: Path, remote: Path, cli: Cli, worktrees: Path, mocker: MockerFixture, packed: bool
) -> None:
    """Selection and backups read the branches, base and the (absent) remote-tracking copies
    from the ref files and ``packed-refs``: no ``for-each-ref`` for them."""
    configure(repo, remote="origin", push=True)
    assert cli("setup").code == 0
    heads = {a: work(cli, worktrees, a, {f"f{a}.py": f"{a}\n"}) for a in (1, 2)}
    if packed:
        git(repo, "pack-refs", "--all")
    for_each_ref = mocker.spy(paradev_git, "resolve_refs")

    result = cli("merge")

    assert result.code == 0, result.err
    assert for_each_ref.call_count == 0
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    for agent, head in heads.items():
        backup = git(repo, "for-each-ref", "--format=%(objectname)", "refs/paradev/backup/")
        assert head in backup.split()
        assert (repo / f"f{agent}.py").exists()


def test_base_moves_with_the_tips_read_from_their_files_and_no_thread(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """The advance reads base's and the branch's tips from their ref files, so its one git
    process (base's work tree status) runs alone: only the check runs calls side by side."""
    trees = setup_with()
    work(cli, trees, 1, {"one.py": "1\n"})
    work(cli, trees, 2, {"two.py": "2\n"})
    side_by_side = mocker.spy(paradev_git, "at_once")

    assert cli("merge").code == 0

    assert side_by_side.call_count == 2  # one check per landing
    assert (repo / "one.py").exists() and (repo / "two.py").exists()


def test_without_a_gate_a_clean_rebase_needs_no_look_at_the_index(
    repo: Path, setup_with: Any, cli: Cli, mocker: MockerFixture
) -> None:
    """git leaves no unmerged entry when its rebase ends by itself: the check reads the agent's
    index only when the branch was not rebased here (or a conflict was resolved)."""
    trees = setup_with()  # no gate: no status of the tree is needed for it either
    work(cli, trees, 1, {"one.py": "1\n"})  # already on base: not rebased
    work(cli, trees, 2, {"two.py": "2\n"})  # rebased onto agent 1's landing
    looked = mocker.spy(paradev_git, "unmerged_paths")

    assert cli("merge").code == 0

    assert looked.call_count == 1  # agent 1's tree alone
    assert looked.call_args.args[0] == agent_tree(trees, 1)
    assert (repo / "one.py").exists() and (repo / "two.py").exists()
