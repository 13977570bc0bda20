"""``paradev merge --follow``: work completed while the train runs joins it (``train/join.py``).

The gate of agent 1 is a real script that, while the train waits for it,
finishes agent 2's task (a commit, then ``paradev complete 2``) or agent 3's
with uncommitted work left behind; the gate of a joined agent probes whether
agent 1, already landed, is free again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from pytest_mock import MockerFixture

from paradev.state import MERGED
from paradev.train import candidates as candidates_mod
from paradev.train import join
from paradev.workspace import open_workspace
from tests.helpers import agent_tree, commit, git, rev
from tests.test_train import (
    Cli,
    Crash,
    backups,
    build_scenario,
    configure,
    fixed_dates,
    owner,
    refs,
    state_of,
    work,
)

GATE = r"""
import os, subprocess, sys
from pathlib import Path
from typing import Any

import pytest
from paradev.errors import StateError
from paradev.workspace import open_workspace
if os.environ["PARADEV_AGENT"] != "1":  # may agent 1, landed earlier in this train, be taken?
    try:
        with open_workspace().store.agent_lock(1, "probe", name_holder=False):
            answer = "free"
    except StateError:
        answer = "held"
    (Path(sys.argv[1]).parent.parent / "probe.txt").write_text(answer)
else:
    tree = Path(sys.argv[1])
    (tree / "late.py").write_text("LATE = 1\n")
    subprocess.run(["git", "add", "late.py"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "late work"], cwd=tree, check=True)
    if sys.argv[3] == "dirty":
        (tree / "late.py").write_text("LATE = 2\n")  # left uncommitted: may not join
    done = subprocess.run([sys.executable, "-m", "paradev", "complete", sys.argv[2]], cwd=tree)
    sys.exit(done.returncode)
"""


def _late_gate(repo: Path, worktrees: Path, agent: int, how: str) -> str:
    """A gate command that completes ``agent``'s task while agent 1 is being gated."""
    script = repo.parent / "late_gate.py"
    script.write_text(GATE)
    tree = agent_tree(worktrees, agent)
    return shlex.join([sys.executable, str(script), str(tree), str(agent), how])


QUEUES = [pytest.param({}, id="serial"), pytest.param({"parallel": 2}, id="merge-queue")]


@pytest.mark.parametrize("merge", QUEUES)
def test_work_completed_during_the_train_joins_it(
    repo: Path, cli: Cli, worktrees: Path, merge: dict[str, Any]
) -> None:
    _agent_1_done_and_late_work(repo, cli, worktrees, 2, "clean", **merge)

    result = cli("merge", "--follow")

    assert result.code == 0, result.err
    assert ("merge queue: parallel 2" in result.out) == bool(merge)
    assert "joined by agent 2" in result.out
    assert (repo.parent / "probe.txt").read_text() == "free"  # let go once landed
    history = state_of(repo)["merge_history"]
    assert len(history) == 1  # one train landed both
    assert [e["agent"] for e in history[0]["landed"]] == [1, 2]
    assert state_of(repo)["tasks"]["12"]["status"] == "merged"
    assert git(repo, "show", "main:late.py") == "LATE = 1"
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-2")


def test_without_follow_late_work_waits_for_the_next_train(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    _agent_1_done_and_late_work(repo, cli, worktrees, 2, "clean")

    result = cli("merge")

    assert result.code == 0, result.err
    state = state_of(repo)
    assert [e["agent"] for e in state["merge_history"][-1]["landed"]] == [1]
    assert state["tasks"]["12"]["status"] == "completed"
    assert "late.py" not in git(repo, "ls-tree", "--name-only", "main").split()


@pytest.mark.parametrize("merge", QUEUES)
def test_a_tree_that_fails_the_checks_does_not_join_nor_stop_the_train(
    repo: Path, cli: Cli, worktrees: Path, merge: dict[str, Any]
) -> None:
    _agent_1_done_and_late_work(repo, cli, worktrees, 3, "dirty", **merge)

    result = cli("merge", "--follow")

    assert result.code == 0, result.err
    state = state_of(repo)
    assert [e["agent"] for e in state["merge_history"][-1]["landed"]] == [1]
    assert state["train"] is None
    assert state["tasks"]["13"]["status"] == "completed"  # left for the next train
    tree = agent_tree(worktrees, 3)
    assert (tree / "late.py").read_text() == "LATE = 2\n"  # the uncommitted edit is untouched
    assert "late.py" not in git(repo, "ls-tree", "--name-only", "main").split()


def _agent_1_done_and_late_work(
    repo: Path, cli: Cli, worktrees: Path, late: int, how: str, **merge: Any
) -> None:
    """Agent 1's task completed; agent ``late``'s started, to be finished by agent 1's gate."""
    configure(repo, gate=_late_gate(repo, worktrees, late, how), **merge)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", str(late)).code == 0


AGAIN_GATE = r"""
import os, subprocess, sys
from pathlib import Path

trees, agent = Path(sys.argv[1]).resolve(), os.environ["PARADEV_AGENT"]


def finish(number, name):
    tree = trees / f"agent-{number}"
    if number == 1:  # agent 1, landed earlier in this train, takes its next task (#21)
        subprocess.run([sys.executable, "-m", "paradev", "start", "1"], cwd=tree, check=True)
    (tree / name).write_text(f"{name}\n")
    subprocess.run(["git", "add", name], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-q", "-m", name], cwd=tree, check=True)
    subprocess.run([sys.executable, "-m", "paradev", "complete", str(number)], cwd=tree, check=True)


marker = trees.parent / f"gated-{agent}"
if not marker.exists():
    marker.write_text("")
    if agent == "1":
        finish(2, "two.py")
    elif agent == "2":
        finish(1, "again.py")
"""


@pytest.mark.parametrize("merge", QUEUES)
def test_an_agent_landed_earlier_lands_its_next_task_in_the_same_train(
    repo: Path, cli: Cli, worktrees: Path, merge: dict[str, Any]
) -> None:
    script = repo.parent / "again_gate.py"
    script.write_text(AGAIN_GATE)
    configure(repo, gate=shlex.join([sys.executable, str(script), str(worktrees)]), **merge)
    assert cli("setup").code == 0
    first = work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", "2").code == 0

    result = cli("merge", "--follow")

    assert result.code == 0, result.err
    history = state_of(repo)["merge_history"]
    assert len(history) == 1, history  # one train landed agent 1 twice
    landed = history[0]["landed"]
    assert [(e["agent"], e["issues"]) for e in landed] == [(1, [11]), (2, [12]), (1, [21])]
    assert "times" in landed[0]  # its first landing's step times, kept when it joined again
    tasks = state_of(repo)["tasks"]
    assert [tasks[i]["status"] for i in ("11", "12", "21")] == ["merged"] * 3
    assert {"feature_1.py", "two.py", "again.py"} <= set(
        git(repo, "ls-tree", "--name-only", "main").split()
    )
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")
    train = history[0]["id"]
    backups = git(repo, "for-each-ref", "--format=%(refname)", "refs/paradev/backup").split()
    assert f"refs/paradev/backup/parallel-dev/agent-1/{train}" in backups
    assert f"refs/paradev/backup/parallel-dev/agent-1/again-1/{train}" in backups
    assert rev(repo, f"refs/paradev/backup/parallel-dev/agent-1/{train}") == first


def _until(done: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """Wait until ``done()`` while ``proc`` runs (else an AssertionError)."""
    deadline = time.monotonic() + 60
    while not done():
        assert proc.poll() is None, f"the train exited {proc.returncode} first"
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.05)


@contextlib.contextmanager
def _followed_train(repo: Path) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    """``paradev merge --follow`` started as 'paradev run' starts its trains, with the pipe of
    the run's word; at the end the pipe closes (no more comes) and the train must exit 0."""
    argv = [sys.executable, "-m", "paradev.warm"]
    proc = subprocess.Popen(argv, cwd=repo, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b'["merge", "--follow"]\n')
        proc.stdin.flush()
        yield proc, proc.stdin
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_train_started_by_the_run_waits_for_its_word_and_ends_with_it(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    configure(repo)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", "2").code == 0
    store = open_workspace(repo).store
    with _followed_train(repo) as (proc, stdin):
        _until(lambda: store.read().status(11) == MERGED, proc)
        commit(agent_tree(worktrees, 2), {"two.py": "TWO = 2\n"}, "work on #12")
        assert cli("complete", "2").code == 0  # after agent 1 landed: its queue was empty
        stdin.write(b"\n")  # the run's word: a task ended
        stdin.flush()
        _until(lambda: store.read().status(12) == MERGED, proc)
        assert proc.poll() is None  # it waits for more until the run says no more comes
    state = state_of(repo)
    assert state["train"] is None
    assert [[e["agent"] for e in h["landed"]] for h in state["merge_history"]] == [[1, 2]]
    assert git(repo, "show", "main:two.py") == "TWO = 2"


# A crash in agent 1's second landing of one train (``rejoin``), then ``merge --continue``:
# a train following the run goes through the merge queue's steps (``train/candidates.py``).
AGAIN_CRASHES = [
    ("before", "_back_up"),
    ("after", "_link"),
    ("before", "_start_gates"),
    ("before", "_after_advance"),  # base moved, nothing else yet
    ("after", "_point_branch"),
    ("before", "step_mark"),
    ("after", "step_hooks"),
]
_AGAIN_CLEAN: dict[Path, tuple[dict[str, str], dict[str, str]]] = {}


def _queue_owner(step: str) -> Any:
    return candidates_mod if hasattr(candidates_mod, step) and step[0] == "_" else owner(step)


def _names_agent_1(value: Any) -> bool:
    """Whether a step's argument is agent 1, or a list holding it (or a candidate of it)."""
    if isinstance(value, list):
        return any(_names_agent_1(item) for item in value)
    return bool(value == 1 or getattr(value, "agent", None) == 1)


def _crash_in_second_landing(mocker: MockerFixture, when: str, step: str) -> None:
    real = getattr(_queue_owner(step), step)

    def maybe(train: Any, agent: Any, *args: Any, **kwargs: Any) -> Any:
        second = _names_agent_1(agent) and bool(train.agent(1).get("again"))
        if second and when == "before":
            raise Crash(step)
        result = real(train, agent, *args, **kwargs)
        if second and when == "after":
            raise Crash(step)
        return result

    mocker.patch.object(_queue_owner(step), step, side_effect=maybe)


def _again_outcome(
    root: Path, template: Path, cli: Cli, mocker: MockerFixture, crash: tuple[str, str] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Agent 1 lands #11, agent 2 joins, agent 1 joins again with #21: the refs at the end."""
    project = build_scenario(root, template, remote=False)
    os.chdir(project)
    (root / "again_gate.py").write_text(AGAIN_GATE)  # the same command in both runs
    here = "${PARADEV_GATE_LOG%/project/.git/*}"  # root, from where the gate logs go
    configure(project, gate=f'{sys.executable} "{here}/again_gate.py" "{here}/project-worktrees"')
    assert cli("setup").code == 0
    work(cli, root / "project-worktrees", 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", "2").code == 0
    if crash is not None:
        _crash_in_second_landing(mocker, *crash)
        with pytest.raises(Crash):
            cli("merge", "--follow")
        mocker.stopall()
        assert state_of(project)["train"]["agents"]["1"]["again"] == 1
        result = cli("merge", "--continue")
    else:
        result = cli("merge", "--follow")
    assert result.code == 0, result.err
    state = state_of(project)
    assert state["train"] is None
    assert [state["tasks"][i]["status"] for i in ("11", "12", "21")] == ["merged"] * 3
    return refs(project), backups(project)


@pytest.mark.usefixtures(fixed_dates.__name__)  # the same commits in both runs
@pytest.mark.parametrize(("when", "step"), AGAIN_CRASHES)
def test_a_crash_in_an_agents_second_landing_then_continue_reaches_the_same_refs(
    when: str, step: str, template_repo: Path, tmp_path: Path, cli: Cli, mocker: MockerFixture
) -> None:
    if template_repo not in _AGAIN_CLEAN:
        _AGAIN_CLEAN[template_repo] = _again_outcome(
            tmp_path / "clean", template_repo, cli, mocker, None
        )
    crashed = _again_outcome(tmp_path / "crashed", template_repo, cli, mocker, (when, step))
    assert crashed == _AGAIN_CLEAN[template_repo]
    assert "refs/paradev/backup/parallel-dev/agent-1/again-1" in crashed[1]


BOTH_GATE = r"""
import subprocess, sys
from pathlib import Path

trees, marker = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
if not marker.exists():  # agent 1's gate, the train's first: agents 2 and 3 complete meanwhile
    marker.write_text("")
    for number in (2, 3):
        tree = trees / f"agent-{number}"
        (tree / f"done_{number}.py").write_text(f"DONE = {number}\n")
        subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"work {number}"], cwd=tree, check=True)
        subprocess.run([sys.executable, "-m", "paradev", "complete", str(number)], cwd=tree,
                       check=True)
"""


@pytest.mark.parametrize("waits", [True, False], ids=["a-task-waits-on-3", "none-waits"])
def test_joining_work_that_a_waiting_task_needs_lands_first(
    repo: Path, cli: Cli, worktrees: Path, waits: bool
) -> None:
    """Agents 2 and 3 join together, with no conflict between them: agent 3 lands first when
    a task not yet started (#31, 3 h) waits for its #13, else the merge order's agent 2."""
    script = repo.parent / "both_gate.py"
    script.write_text(BOTH_GATE)
    marker = repo.parent / "gated"
    configure(repo, gate=shlex.join([sys.executable, str(script), str(worktrees), str(marker)]))
    _add_31(repo, waits)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", "2").code == 0
    assert cli("start", "3").code == 0

    result = cli("merge", "--follow")

    assert result.code == 0, result.err
    assert "joined by agent" in result.out
    history = state_of(repo)["merge_history"]
    assert len(history) == 1, history
    landed = [(e["agent"], e["issues"]) for e in history[0]["landed"]]
    assert landed == (
        [(1, [11]), (3, [13]), (2, [12])] if waits else [(1, [11]), (2, [12]), (3, [13])]
    )
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert subjects[:2] == (["work 2", "work 3"] if waits else ["work 3", "work 2"])


def _add_31(repo: Path, waits: bool) -> None:
    """A later task of agent 1 (3 h) that depends on agent 3's #13 when it ``waits``."""
    needs = "  depends_on = [13]\n" if waits else ""
    plan = (repo / "plan.toml").read_text() + (
        '\n[[batches]]\nname = "third"\n  [[batches.tasks]]\n  agent = 1\n  issue = 31\n'
        f'  title = "Needs the health command"\n  hours = 3.0\n{needs}'
    )
    commit(repo, {"plan.toml": plan}, "a task for after #13")


@pytest.mark.parametrize("follow", [True, False], ids=["follow", "no-follow"])
def test_a_train_following_the_run_starts_with_the_work_a_waiting_task_needs(
    repo: Path, cli: Cli, worktrees: Path, follow: bool
) -> None:
    """Agents 2 and 3 completed, no conflict between them: the run's train (``--follow``)
    lands agent 3 first, as #31 (not started) waits for its #13; a plain train keeps the
    merge order (agent 2 first)."""
    configure(repo)
    _add_31(repo, waits=True)
    assert cli("setup").code == 0
    work(cli, worktrees, 2, {"two.py": "2\n"})
    work(cli, worktrees, 3, {"three.py": "3\n"})

    result = cli("merge", "--follow") if follow else cli("merge")

    assert result.code == 0, result.err
    history = state_of(repo)["merge_history"]
    landed = [(e["agent"], e["issues"]) for e in history[-1]["landed"]]
    assert landed == ([(3, [13]), (2, [12])] if follow else [(2, [12]), (3, [13])])
    first = git(repo, "log", "--reverse", "--format=%H", "-2", "main").split()[0]
    assert _has_file(repo, first, "three.py" if follow else "two.py")
    assert not _has_file(repo, first, "two.py" if follow else "three.py")


def _has_file(repo: Path, commit_: str, name: str) -> bool:
    return name in git(repo, "ls-tree", "--name-only", commit_).split()


WHILE_GATED = r"""
import os, subprocess, sys, time
from pathlib import Path
from paradev.workspace import open_workspace

trees, marks = Path(sys.argv[1]), Path(sys.argv[2])
if os.environ["PARADEV_AGENT"] == "1":  # agent 2 completes while agent 1's candidate is gated
    tree = trees / "agent-2"
    (tree / "two.py").write_text("TWO = 2\n")
    subprocess.run(["git", "add", "two.py"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "work on #12"], cwd=tree, check=True)
    subprocess.run([sys.executable, "-m", "paradev", "complete", "2"], cwd=tree, check=True)
    (marks / "completed").write_text("")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the train takes it in while this gate still runs
        train = open_workspace().store.read().train or {}
        if 2 in train.get("queue", []):
            (marks / "join.txt").write_text("joined")
            sys.exit(0)
        time.sleep(0.05)
    (marks / "join.txt").write_text("not joined")
"""


def test_work_completed_while_a_gate_runs_joins_before_that_gate_ends(
    repo: Path, cli: Cli, worktrees: Path
) -> None:
    """The run's word that a task ended reaches a train waiting for a gate: the work joins
    then (its candidate built meanwhile), not once the gate has ended."""
    marks = repo.parent / "marks"
    marks.mkdir()
    script = repo.parent / "while_gated.py"
    script.write_text(WHILE_GATED)
    configure(repo, gate=shlex.join([sys.executable, str(script), str(worktrees), str(marks)]))
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    assert cli("start", "2").code == 0
    store = open_workspace(repo).store
    with _followed_train(repo) as (proc, stdin):
        _until((marks / "completed").exists, proc)
        stdin.write(join.word(None))  # the run's word: a task ended
        stdin.flush()
        _until(lambda: store.read().status(12) == MERGED, proc)
    assert (marks / "join.txt").read_text() == "joined"
    state = state_of(repo)
    assert [[e["agent"] for e in h["landed"]] for h in state["merge_history"]] == [[1, 2]]
    assert git(repo, "show", "main:two.py") == "TWO = 2"
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-2")


@pytest.mark.parametrize("merge", QUEUES)
def test_an_empty_queue_with_nothing_else_completed_looks_for_work_with_no_git_process(
    repo: Path,
    cli: Cli,
    worktrees: Path,
    merge: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Once its queue is empty, the train looks for completed work: with none outside what it
    landed, from the state alone (no selection round of git processes). Work that completed
    meanwhile still joins (``test_work_completed_during_the_train_joins_it``)."""
    configure(repo, **merge)
    assert cli("setup").code == 0
    work(cli, worktrees, 1, {"feature_1.py": "X = 1\n"})
    trace = tmp_path / "trace.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))

    result = cli("merge", "--follow")

    assert result.code == 0, result.err
    assert state_of(repo)["tasks"]["11"]["status"] == "merged"
    selections = [e for e in _started(trace) if "--no-merged=refs/heads/main" in e]
    assert len(selections) == 1  # the train's start; none when its queue emptied


def _started(trace: Path) -> list[list[str]]:
    """The argv of every git process a GIT_TRACE2_EVENT trace saw start."""
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["argv"] for e in events if e.get("event") == "start"]
