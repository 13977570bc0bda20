"""The serial train's push running behind the next landing (``paradev.train.advance``).

Each landing's push of base runs while the next landing rebases, checks and
gates; it is settled before base moves again, before the train ends or
stops, and a crash while it runs leaves a train whose ``--continue`` reaches
the same refs, on this repository and on the remote (a bare repository
refusing non-fast-forward updates), as a train never interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from pytest_mock import MockerFixture

from paradev import git as paradev_git
from paradev.errors import PreconditionError
from paradev.train import advance as advance_mod
from paradev.train import steps as train_mod
from paradev.workspace import open_workspace
from tests.helpers import Result, agent_tree, commit, git, rev, start_paradev, wait_for_file
from tests.test_train import (
    Cli,
    Crash,
    backups,
    configure,
    fixed_dates,
    other_machine,
    refs,
    state_of,
    work,
)


def three_agents_done(repo: Path, cli: Cli, trees: Path, clash: bool = False) -> None:
    """Pushing to origin, three agents each complete one task (their branches are not on
    the remote: only base is pushed); with ``clash`` agents 1 and 2 change the same line."""
    configure(repo, remote="origin", push=True)
    assert cli("setup").code == 0
    for agent in (1, 2, 3):
        files: dict[str, str | None] = {f"feature_{agent}.py": f"X = {agent}\n"}
        if clash and agent < 3:
            files["src/util.py"] = f"VALUE = {agent + 10}\n"
        work(cli, trees, agent, files)


def test_each_push_runs_behind_the_next_landing_and_is_settled_before_base_moves(
    repo: Path, remote: Path, worktrees: Path, cli: Cli, mocker: MockerFixture
) -> None:
    three_agents_done(repo, cli, worktrees)
    went_on = threading.Event()  # the next landing started rebasing, or the train is ending
    overlapped: list[bool] = []
    remote_before_move: list[tuple[str, str]] = []
    real_push, real_rebase = paradev_git.push, paradev_git.rebase
    real_move, real_settle = advance_mod.move_base, advance_mod.settle_push

    def push_once_the_train_went_on(*args: Any, **kwargs: Any) -> None:
        overlapped.append(went_on.wait(timeout=10))  # a push made at once would wait in vain
        went_on.clear()
        real_push(*args, **kwargs)

    def rebase(*args: Any, **kwargs: Any) -> bool:
        went_on.set()
        return real_rebase(*args, **kwargs)

    def settle(*args: Any, **kwargs: Any) -> None:
        went_on.set()
        real_settle(*args, **kwargs)

    def move_base(ws: Any, base: str, old: str, new: str, **kwargs: Any) -> None:
        remote_before_move.append((git(remote, "rev-parse", "main"), old))
        real_move(ws, base, old, new, **kwargs)

    mocker.patch.object(paradev_git, "push", side_effect=push_once_the_train_went_on)
    mocker.patch.object(paradev_git, "rebase", side_effect=rebase)
    mocker.patch.object(train_mod, "settle_push", side_effect=settle)
    mocker.patch.object(advance_mod, "move_base", side_effect=move_base)

    result = cli("merge")

    assert result.code == 0, result.err
    assert overlapped == [True, True, True]
    assert len(remote_before_move) == 3
    # base moved only once the remote held everything landed before
    assert all(on_remote == base for on_remote, base in remote_before_move)
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert result.out.count("pushed main to origin") == 3
    assert git(repo, "rev-list", "--count", "main") == "5"  # the plan commit + 3 landings + 1
    statuses = {k: v["status"] for k, v in state_of(repo)["tasks"].items()}
    assert statuses == {"11": "merged", "12": "merged", "13": "merged"}


def stopped_by_a_refused_push(
    repo: Path,
    worktrees: Path,
    request: pytest.FixtureRequest,
    cli: Cli,
    nth: int = 1,
    clash: bool = False,
) -> tuple[Result, Path]:
    """Three agents' train, another machine pushing to main just before the train's ``nth``
    push: the train's result, and that machine's clone."""
    other: Path = request.getfixturevalue(other_machine.__name__)
    three_agents_done(repo, cli, worktrees, clash)
    real_push, calls = paradev_git.push, []

    def race(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) == nth:
            git(other, "pull", "-q", "--ff-only")
            commit(other, {"theirs.py": "t\n"}, "from elsewhere")
            git(other, "push", "-q", "origin", "main")
        real_push(*args, **kwargs)

    with patch.object(paradev_git, "push", side_effect=race):
        result = cli("merge")
    assert result.code == 1
    assert "origin refused main" in (result.out if clash else result.err)
    return result, other


def test_a_push_refused_behind_the_next_landing_stops_before_base_moves_again(
    repo: Path, remote: Path, worktrees: Path, request: pytest.FixtureRequest, cli: Cli
) -> None:
    _, other = stopped_by_a_refused_push(repo, worktrees, request, cli)

    first = rev(repo, "parallel-dev/agent-1")
    assert rev(repo, "main") == first  # the first landed; base never moved past the refusal
    landed = git(repo, "ls-tree", "--name-only", "main").split()
    assert "feature_1.py" in landed and "feature_2.py" not in landed
    assert git(remote, "rev-parse", "main") == rev(other, "main")  # never forced
    stop = state_of(repo)["train"]["stop"]
    assert (stop["agent"], stop["reason"]) == (1, "push")
    skipped = cli("merge", "--skip")  # the refused agent landed: nothing to skip
    assert skipped.code == 2
    assert "agent 1 has already landed on main" in skipped.err

    # reconciled: main holds the other machine's commit and the remote holds main
    git(repo, "pull", "-q", "--no-rebase", "--no-edit", "origin", "main")
    git(repo, "push", "-q", "origin", "main")
    for _ in range(2):  # the next landing was rebased onto the old base: once more, anew
        result = cli("merge", "--continue")
        if result.code == 0:
            break
        assert state_of(repo)["train"]["stop"]["reason"] == "base-moved", result.err
    assert result.code == 0, result.err

    assert state_of(repo)["train"] is None
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    for agent in (1, 2, 3):
        branch = f"parallel-dev/agent-{agent}"
        assert git(repo, "merge-base", "--is-ancestor", branch, "main", check=False) == ""
    statuses = {k: v["status"] for k, v in state_of(repo)["tasks"].items()}
    assert statuses == {"11": "merged", "12": "merged", "13": "merged"}


def test_abort_with_a_refused_push_behind_keeps_what_landed_and_restores_the_next(
    repo: Path, remote: Path, worktrees: Path, request: pytest.FixtureRequest, cli: Cli
) -> None:
    _, other = stopped_by_a_refused_push(repo, worktrees, request, cli)
    second = state_of(repo)["train"]["agents"]["2"]["old_head"]

    result = cli("merge", "--abort")

    assert result.code == 0, result.err
    assert state_of(repo)["train"] is None
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")  # what landed stays
    assert rev(repo, "parallel-dev/agent-2") == second  # rebased meanwhile: restored
    assert "paradev: warning: origin refused main" in result.out  # said, never forced
    assert git(remote, "rev-parse", "main") == rev(other, "main")


def test_a_stop_of_the_next_landing_is_kept_when_the_push_behind_it_is_refused(
    repo: Path, remote: Path, worktrees: Path, request: pytest.FixtureRequest, cli: Cli
) -> None:
    # agent 3 and one of 1, 2 land; the second landing's push is refused while the
    # third one's rebase conflicts
    result, _ = stopped_by_a_refused_push(repo, worktrees, request, cli, nth=2, clash=True)

    train = state_of(repo)["train"]
    second, third = train["order"][1:]
    assert (train["stop"]["agent"], train["stop"]["reason"]) == (third, "conflict")  # its own
    assert "paradev: warning: origin refused main" in result.out  # the refusal said
    assert f"agent {second}: pushed" not in result.out
    ours = git(remote, "rev-parse", "main~1")  # the foreign commit is taken back there
    git(remote, "update-ref", "refs/heads/main", ours)

    result = cli("merge", "--skip")  # the third left out; the second's landing goes out

    assert result.code == 0, result.err
    assert f"agent {second}: pushed main to origin" in result.out
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert state_of(repo)["train"] is None


def test_the_last_landing_refused_at_the_end_is_pushed_by_continue(
    repo: Path, remote: Path, worktrees: Path, request: pytest.FixtureRequest, cli: Cli
) -> None:
    stopped_by_a_refused_push(repo, worktrees, request, cli, nth=3)

    stop = state_of(repo)["train"]["stop"]
    assert (stop["agent"], stop["reason"]) == (3, "push")
    assert state_of(repo)["train"]["queue"] == []  # it landed: only its push is left
    ours = git(remote, "rev-parse", "main~1")  # the foreign commit is taken back there
    git(remote, "update-ref", "refs/heads/main", ours)

    result = cli("merge", "--continue")

    assert result.code == 0, result.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    assert "agent 3: pushed main to origin" in result.out
    assert state_of(repo)["train"] is None


# -- crashes while a push runs behind ----------------------------------------------------------


def crash_for(mocker: MockerFixture, name: str, agent: int, after: bool) -> None:
    """The process dies when step ``name`` is called for ``agent`` (before it runs, or after)."""
    real = getattr(train_mod, name)

    def maybe_die(*args: Any, **kwargs: Any) -> Any:
        if args[1] != agent:
            return real(*args, **kwargs)
        if after:
            real(*args, **kwargs)
        raise Crash(f"{name} of agent {agent}")

    mocker.patch.object(train_mod, name, side_effect=maybe_die)


def crash_at_call(mocker: MockerFixture, module: Any, name: str, nth: int, after: bool) -> None:
    """The process dies in the ``nth`` call of ``name`` (a push, a move of base), before or
    after it ran."""
    real, calls = getattr(module, name), []

    def maybe_die(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        if len(calls) != nth or after:
            real(*args, **kwargs)
        if len(calls) == nth:
            raise Crash(f"{name} {nth}")

    mocker.patch.object(module, name, side_effect=maybe_die)


# Crash points: (what, which, after it ran): a push or a move of base by its call (the
# landing's place in the train), a step by its agent.
CALLS = {"push": paradev_git, "move_base": advance_mod}
PUSH_BEHIND_CRASHES = [
    ("push", 1, False),  # killed before git pushed the first landing; the next one went on
    ("push", 1, True),  # pushed, never settled
    ("push", 3, True),  # the last one, before the train's end settled it
    ("step_rebase", 2, False),  # the first landing's push still running
    ("step_rebase", 2, True),  # the journal names the first landing, pushed or not
    ("step_trailers", 3, True),
    ("step_check", 3, False),
    ("move_base", 2, False),  # the first push settled, in memory only
    ("move_base", 3, True),  # base moved; the second push settled, never journaled
    ("step_mark", 3, False),
]


def push_behind_outcome(
    root: Path,
    template: Path,
    cli: Cli,
    mocker: MockerFixture,
    crash: tuple[str, int, bool] | None,
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Three landings pushed behind each other (crashing at ``crash``, then --continue):
    the refs here, the backups and the remote's branches."""
    project = root / "project"
    shutil.copytree(template, project, symlinks=True)
    bare = root / "origin.git"
    git(root, "init", "-q", "--bare", str(bare))
    git(bare, "config", "receive.denyNonFastForwards", "true")
    git(project, "remote", "add", "origin", str(bare))
    os.chdir(project)
    configure(project, gate="test -f src/app.py", push=True, remote="origin")
    git(project, "push", "-q", "origin", "main")
    assert cli("setup").code == 0
    trees = project.parent / "project-worktrees"
    work(cli, trees, 1, {"one.py": "1\n", "one_b.py": "b\n"}, n=2)
    work(cli, trees, 2, {"two.py": "2\n"})
    work(cli, trees, 3, {"three.py": "3\n"})
    if crash is not None:
        name, which, after = crash
        if name in CALLS:
            crash_at_call(mocker, CALLS[name], name, which, after)
        else:
            crash_for(mocker, name, which, after)
        with pytest.raises(Crash):
            cli("merge")
        mocker.stopall()
        assert state_of(project)["train"] is not None
        result = cli("merge", "--continue")
    else:
        result = cli("merge")
    assert result.code == 0, result.err
    assert state_of(project)["train"] is None
    assert git(bare, "rev-parse", "main") == rev(project, "main")
    statuses = {k: v["status"] for k, v in state_of(project)["tasks"].items()}
    assert statuses == {"11": "merged", "12": "merged", "13": "merged"}
    (history,) = state_of(project)["merge_history"]
    assert sorted(i for e in history["landed"] for i in e["issues"]) == [11, 12, 13]
    return refs(project), backups(project), refs(bare, "refs/heads")


_CLEAN: dict[Path, tuple[dict[str, str], dict[str, str], dict[str, str]]] = {}


@pytest.mark.usefixtures(fixed_dates.__name__)  # the same commits in both runs
@pytest.mark.parametrize(("name", "agent", "after"), PUSH_BEHIND_CRASHES)
def test_a_crash_while_a_push_runs_behind_then_continue_reaches_the_same_refs(
    name: str,
    agent: int,
    after: bool,
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
) -> None:
    if template_repo not in _CLEAN:
        _CLEAN[template_repo] = push_behind_outcome(
            tmp_path / "clean", template_repo, cli, mocker, None
        )
    crashed = push_behind_outcome(
        tmp_path / "crashed", template_repo, cli, mocker, (name, agent, after)
    )
    assert crashed == _CLEAN[template_repo]
    assert len(crashed[0]) == 4 and len(crashed[2]) == 1  # main + 3 agents here; main there


def test_sigterm_while_waiting_for_the_push_behind_lets_that_push_end_first(
    repo: Path, remote: Path, worktrees: Path, cli: Cli, tmp_path: Path
) -> None:
    """SIGTERM to paradev alone (not its git children) while the train waits for a slow push:
    paradev leaves only once that push ended, and ``--continue`` ends what is left."""
    three_agents_done(repo, cli, worktrees)
    started, ended = tmp_path / "push-started", tmp_path / "push-ended"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\necho $$ > {started}\nsleep 3\necho > {ended}\n")
    hook.chmod(0o755)
    train = start_paradev(repo, "merge")
    wait_for_file(started, train)
    time.sleep(1)  # the next landing is quick: the train now waits for the push

    train.send_signal(signal.SIGTERM)
    train.communicate(timeout=60)

    assert train.returncode != 0
    assert ended.exists()  # the push ended before paradev did: nothing of it outlives paradev
    hook.unlink()
    resumed = cli("merge", "--continue")
    assert resumed.code == 0, resumed.err
    assert git(remote, "rev-parse", "main") == rev(repo, "main")
    statuses = {k: v["status"] for k, v in state_of(repo)["tasks"].items()}
    assert statuses == {"11": "merged", "12": "merged", "13": "merged"}


def _branch_holding_a_landing_unchanged(
    root: Path, template: Path, cli: Cli, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Agent 1's commit already carries its trailer (it lands unchanged) and agent 2 merged
    agent 1's branch; with ``mocker`` set to crash, the train is killed and continued."""
    project = root / "project"
    shutil.copytree(template, project, symlinks=True)
    monkeypatch.chdir(project)
    configure(project)
    assert cli("setup").code == 0
    trees = project.parent / "project-worktrees"
    assert cli("start", "1").code == 0
    commit(agent_tree(trees, 1), {"one.py": "1\n"}, "one\n\nParadev-Issue: 11")
    assert cli("complete", "1").code == 0
    assert cli("start", "2").code == 0
    two = agent_tree(trees, 2)
    commit(two, {"two.py": "2\n"}, "two")
    git(two, "merge", "-q", "--no-ff", "--no-edit", "parallel-dev/agent-1")
    commit(two, {"two_b.py": "2b\n"}, "two b")
    assert cli("complete", "2").code == 0
    try:
        result = cli("merge")
    except Crash:
        mocker.stopall()
        result = cli("merge", "--continue")
    assert result.code == 0, result.err
    return refs(project)


@pytest.mark.usefixtures(fixed_dates.__name__)
def test_a_landing_made_of_a_commit_another_branch_holds_gives_the_same_refs_after_a_crash(
    template_repo: Path,
    tmp_path: Path,
    cli: Cli,
    mocker: MockerFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a commit this train made is known to be in no branch yet: one it landed unchanged
    may be, and the next branch's rebase must then be what git shows, crash or not."""
    clean = _branch_holding_a_landing_unchanged(
        tmp_path / "a", template_repo, cli, mocker, monkeypatch
    )
    crash_for(mocker, "step_rebase", 2, False)
    crashed = _branch_holding_a_landing_unchanged(
        tmp_path / "b", template_repo, cli, mocker, monkeypatch
    )
    assert crashed == clean


def test_an_on_merge_hook_sees_each_landing_on_the_remote_already(
    repo: Path, remote: Path, worktrees: Path, cli: Cli, tmp_path: Path
) -> None:
    """With an ``on_merge`` hook the push is made at once: the hook runs after it."""
    seen = tmp_path / "seen.txt"
    configure(repo, remote="origin", push=True)
    plan = (repo / "plan.toml").read_text()
    hook = f'[hooks]\non_merge = "git --git-dir={remote} rev-parse main >> {seen}"\n\n[gate]'
    (repo / "plan.toml").write_text(plan.replace("[gate]", hook, 1))
    git(repo, "commit", "-qam", "chore: a hook")
    git(repo, "push", "-q", "origin", "main")
    assert cli("setup").code == 0
    for agent in (1, 2, 3):
        work(cli, worktrees, agent, {f"feature_{agent}.py": f"X = {agent}\n"})

    result = cli("merge")

    assert result.code == 0, result.err
    landed = [git(repo, "rev-parse", f"main~{n}") for n in (2, 1, 0)]
    assert seen.read_text().split() == landed


@pytest.mark.parametrize("checked_out", [True, False])
def test_moving_base_to_a_commit_that_is_not_a_fast_forward_is_refused_clearly(
    repo: Path, checked_out: bool
) -> None:
    """Checked out, ``git merge --ff-only`` itself proves the fast-forward (no ancestry check
    of its own first); refused, the message says why either way, and base stays."""
    old = rev(repo, "main")
    git(repo, "checkout", "-q", "-b", "elsewhere", "main")
    commit(repo, {"other.txt": "other\n"}, "other")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"ahead.txt": "ahead\n"}, "ahead")
    current, other = rev(repo, "main"), rev(repo, "elsewhere")
    if not checked_out:
        git(repo, "switch", "-q", "--detach")
    with pytest.raises(PreconditionError, match="is not a fast-forward of main"):
        advance_mod.move_base(open_workspace(repo), "main", current, other)
    assert rev(repo, "main") == current != old
    assert not (repo / "other.txt").exists()
