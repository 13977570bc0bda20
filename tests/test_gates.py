"""Gate slots: paradev's own detached worktrees, gates run side by side, stopped together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev.train import gate as gates
from paradev.workspace import Workspace, open_workspace
from tests.conftest import PLAN
from tests.helpers import agent_tree, commit, git, gone, rev, wait_for_file


def workspace(repo: Path, timeout: float = 60) -> Workspace:
    plan = PLAN.replace('[gate]\ncommand = ""\n', f'[gate]\ncommand = ""\ntimeout = {timeout}\n')
    commit(repo, {"plan.toml": plan, ".gitignore": "cache/\n"}, "plan")
    return open_workspace(repo)


def test_a_slot_is_a_detached_worktree_under_the_common_dir(repo: Path) -> None:
    ws = workspace(repo)
    first = rev(repo, "HEAD")
    second = commit(repo, {"second.txt": "2\n"}, "second")

    path = gates.ready_slot(ws, 1, first)

    assert path == repo / ".git" / "paradev" / "gates" / "slot-1"
    assert git(path, "rev-parse", "HEAD") == first
    assert git(path, "symbolic-ref", "-q", "HEAD", check=False) == ""  # detached
    assert not (path / "second.txt").exists()
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # nothing else moved
    assert rev(repo, "main") == second


def test_a_reused_slot_drops_untracked_files_and_keeps_ignored_ones(repo: Path) -> None:
    ws = workspace(repo)
    path = gates.ready_slot(ws, 2, rev(repo, "HEAD"))
    (path / "left-by-the-last-gate.txt").write_text("x\n")
    (path / "README.md").write_text("changed by the last gate\n")
    (path / "cache").mkdir()
    (path / "cache" / "built.bin").write_text("kept\n")
    newer = commit(repo, {"second.txt": "2\n"}, "second")

    assert gates.ready_slot(ws, 2, newer) == path

    assert git(path, "rev-parse", "HEAD") == newer
    assert not (path / "left-by-the-last-gate.txt").exists()
    assert (path / "README.md").read_text() == "# sample\n"
    assert (path / "cache" / "built.bin").read_text() == "kept\n"
    assert (path / "second.txt").exists()


def test_a_slot_whose_folder_git_forgot_is_rebuilt(repo: Path) -> None:
    ws = workspace(repo)
    path = gates.ready_slot(ws, 1, rev(repo, "HEAD"))
    (path / ".git").unlink()  # a broken link: git cannot open it any more

    assert gates.ready_slot(ws, 1, rev(repo, "HEAD")) == path

    assert git(path, "rev-parse", "HEAD") == rev(repo, "HEAD")


@pytest.mark.parametrize("ahead", [True, False])
def test_a_slot_whose_add_was_killed_while_git_held_it_locked_is_made_again(
    repo: Path, ahead: bool
) -> None:
    """git locks a worktree record ("initializing") while it adds it: an add killed then, its
    folder gone, leaves a locked record that a plain ``--force`` add refuses."""
    ws = workspace(repo)
    path = repo / ".git" / "paradev" / "gates" / "slot-1"
    git(repo, "worktree", "add", "-q", "--detach", "--lock", str(path), "HEAD")
    subprocess.run(["rm", "-rf", str(path)], check=True)  # as the kill left it

    if ahead:
        gates.add_slots_ahead(ws, 1, rev(repo, "HEAD"))
        gates._slots_added_ahead(ws)
    assert gates.ready_slot(ws, 1, rev(repo, "HEAD")) == path

    assert git(path, "rev-parse", "HEAD") == rev(repo, "HEAD")
    assert (path / "README.md").read_text() == "# sample\n"


def test_gates_run_at_once_and_report_in_order(repo: Path, tmp_path: Path) -> None:
    ws = workspace(repo)
    head = rev(repo, "HEAD")
    jobs = [gates.GateJob(head, agent, tmp_path / f"gate-{agent}.log") for agent in (1, 2, 3)]
    flags = tmp_path / "started"
    flags.mkdir()
    # each gate waits until all three started: run one after the other, they would fail
    count = f"$(ls {flags} | wc -l)"
    command = (
        f'touch {flags}/"$PARADEV_AGENT"; '
        f"for i in $(seq 400); do [ {count} -ge 3 ] && break; sleep 0.05; done; "
        f'[ {count} -ge 3 ] && pwd && test "$PARADEV_AGENT" != 2'
    )

    def env_for(job: gates.GateJob, path: Path) -> dict[str, str]:
        return {**os.environ, "PARADEV_AGENT": str(job.agent)}

    results = gates.run_gates(ws, jobs, command, env_for)

    assert [r.ok for r in results] == [True, False, True]
    assert [r.log for r in results] == [job.log for job in jobs]
    for slot, job in enumerate(jobs, start=1):
        if slot != 2:
            assert job.log.read_text().strip() == str(gates.slot_path(ws, slot))


def test_a_gate_past_its_timeout_is_killed_with_its_group(repo: Path, tmp_path: Path) -> None:
    ws = workspace(repo, timeout=0.5)
    pidfile = tmp_path / "child.pid"
    job = gates.GateJob(rev(repo, "HEAD"), 1, tmp_path / "gate.log")

    (result,) = gates.run_gates(
        ws, [job], f"sleep 30 & echo $! > {pidfile}; wait", lambda job, path: dict(os.environ)
    )

    assert result.returncode is None and not result.ok
    assert "gate killed after 0.5s" in job.log.read_text()
    assert gone(int(pidfile.read_text()))


def test_ctrl_c_stops_every_running_gate(repo: Path, tmp_path: Path) -> None:
    ws = workspace(repo)
    head = rev(repo, "HEAD")
    jobs = [gates.GateJob(head, agent, tmp_path / f"gate-{agent}.log") for agent in (1, 2)]
    command = 'sleep 30 & echo $! > "$PIDS/$PARADEV_AGENT"; wait'

    def env_for(job: gates.GateJob, path: Path) -> dict[str, str]:
        return {**os.environ, "PIDS": str(tmp_path), "PARADEV_AGENT": str(job.agent)}

    def interrupt() -> None:
        for agent in (1, 2):
            wait_for_file(tmp_path / str(agent))
        time.sleep(0.05)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        gates.run_gates(ws, jobs, command, env_for)

    for agent in (1, 2):
        assert gone(int((tmp_path / str(agent)).read_text()))


def test_each_slot_is_set_up_and_gets_the_port_after_every_agents(
    repo: Path, tmp_path: Path
) -> None:
    record = tmp_path / "setup-runs.txt"
    script = tmp_path / "setup.sh"
    script.write_text(
        f'#!/bin/sh\necho "$PWD $PARADEV_PORT" >> {record}\nmkdir -p cache && touch cache/ready\n'
    )
    script.chmod(0o755)
    plan = PLAN + f'\n[setup]\ncommand = ["{script}"]\nport_base = 8000\nport_step = 10\n'
    commit(repo, {"plan.toml": plan, ".gitignore": "cache/\n"}, "plan with setup")
    ws = open_workspace(repo)
    head = rev(repo, "HEAD")
    jobs = [gates.GateJob(head, agent, tmp_path / f"gate-{agent}.log") for agent in (1, 2)]

    results = gates.run_gates(
        ws, jobs, 'test -f cache/ready && echo "$PARADEV_PORT"', lambda j, p: dict(os.environ)
    )

    assert [r.ok for r in results] == [True, True]
    # agents.count = 3: slot 1 is number 4, slot 2 number 5
    assert [job.log.read_text().split()[-1] for job in jobs] == ["8040", "8050"]
    runs = sorted(record.read_text().splitlines())
    assert runs == [f"{gates.slot_path(ws, 1)} 8040", f"{gates.slot_path(ws, 2)} 8050"]
    gates.run_gates(ws, jobs[:1], "true", lambda j, p: dict(os.environ))
    assert len(record.read_text().splitlines()) == 2  # nothing changed: not run again


# Another paradev process (a run opening a lane) adding a worktree: holds the lock meanwhile.
HOLDER = r"""
import sys, time
from pathlib import Path
from paradev.git import adding_worktrees

with adding_worktrees(Path(sys.argv[1])):
    Path(sys.argv[2]).write_text("held")
    deadline = time.monotonic() + 60
    while not Path(sys.argv[3]).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_a_slot_is_added_only_while_no_other_paradev_process_adds_a_worktree(
    repo: Path, tmp_path: Path
) -> None:
    """git reads every worktree record while it adds one: a record another process is
    writing (a lane) failed the slot's add, so the add waits for that process's lock."""
    ws = workspace(repo)
    held, release = tmp_path / "held", tmp_path / "release"
    argv = [sys.executable, "-c", HOLDER, str(ws.repo.common_dir), str(held), str(release)]
    holder = subprocess.Popen(argv)
    added: list[Path] = []
    try:
        wait_for_file(held, holder)
        thread = threading.Thread(target=lambda: added.append(gates.ready_slot(ws, 1, "HEAD")))
        thread.start()
        thread.join(1.0)
        assert thread.is_alive() and not added  # it waits for the other process
        release.write_text("go")
        thread.join(60)
    finally:
        release.write_text("go")
        holder.wait(60)
    assert added == [gates.slot_path(ws, 1)]
    assert git(added[0], "rev-parse", "HEAD") == rev(repo, "HEAD")


def test_a_cancelled_round_starts_no_gate_in_a_slot_still_checking_out(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stops (a refusal, Ctrl-C) while a slot is still being checked out: no gate
    starts there after the stop, and the stop returns once the round's thread has ended."""
    from paradev.train import candidates

    ws = workspace(repo)
    started, checking = tmp_path / "gate-started", threading.Event()
    real = gates._checked_out

    def slow_checkout(path: Path, commit: str) -> bool:  # a big tree, a [setup] copy
        checking.set()
        time.sleep(1.0)
        return real(path, commit)

    monkeypatch.setattr(gates, "_checked_out", slow_checkout)
    job = gates.GateJob(rev(repo, "HEAD"), 1, tmp_path / "gate.log")
    cancelled = threading.Event()
    command = f"touch {started}; sleep 30"

    def work() -> list[gates.GateResult]:
        return gates.run_gates(ws, [job], command, lambda j, p: dict(os.environ), cancelled)

    run = candidates._GateRun([job], work, background=True, cancelled=cancelled)
    assert checking.wait(10)

    run.cancel()

    assert not run.running()
    assert not started.exists()  # on the old code the gate started once the checkout ended
    assert run.wait() == [gates.GateResult(None, job.log)]


SLOW_GATE_TRAIN = """
import sys
from pathlib import Path
from paradev.train import gate
from paradev.workspace import open_workspace
job = gate.GateJob(sys.argv[1], 1, Path(sys.argv[2]))
gate.run_gates(open_workspace(), [job], "sleep 60", lambda j, p: {})
"""


def test_a_gate_a_killed_train_left_running_in_a_slot_is_stopped_before_the_slot_is_reused(
    repo: Path, tmp_path: Path
) -> None:
    """SIGKILL gave the train no chance to stop its gate: the next round stops it first."""
    from paradev import processes

    ws = workspace(repo)
    job = gates.GateJob(rev(repo, "HEAD"), 1, tmp_path / "gate.log")
    first = gates.GateJob(job.commit, 1, tmp_path / "first.log")
    record = gates.gate_record(ws, 1)
    killed_train = subprocess.Popen(  # a train that ran a slow gate in slot 1, then was killed
        [sys.executable, "-c", SLOW_GATE_TRAIN, job.commit, str(first.log)], cwd=repo
    )
    wait_for_file(record, killed_train)
    leftover = json.loads(record.read_text())["pid"]
    killed_train.kill()
    killed_train.wait()
    assert processes.alive(leftover, processes.start_time(leftover))  # the gate outlived it

    results = gates.run_gates(ws, [job], "true", lambda j, p: dict(os.environ))

    assert results == [gates.GateResult(0, job.log)]
    assert not processes.alive(leftover, None)  # stopped before slot 1 was checked out again
    assert not record.exists()  # a gate that ended leaves no note


def test_a_gate_run_returns_the_moment_its_gate_exits_without_polling(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    """The merge train learns a gate's result when the gate exits, not up to 50 ms later
    (Popen.wait with a timeout sleeps between looks): every gate is on the run's critical path."""
    sleep = mocker.patch("subprocess.time.sleep", side_effect=AssertionError("polled"))
    log = tmp_path / "gate.log"

    result = gates.run_gate("sleep 0.3; echo gated; exit 3", tmp_path, 60, log, dict(os.environ))

    assert (result.returncode, log.read_text()) == (3, "gated\n")
    assert not sleep.called


def test_slots_added_ahead_are_ready_for_their_first_gate_on_the_exact_candidate(
    repo: Path, tmp_path: Path
) -> None:
    """The train adds its missing slots while it builds its first candidates (no files yet);
    a gate then runs in each on exactly its candidate, and an existing slot is left alone."""
    ws = workspace(repo)
    base = rev(repo, "HEAD")
    kept = gates.ready_slot(ws, 1, base)
    (kept / "cache").mkdir()
    (kept / "cache" / "built.bin").write_text("kept\n")
    newer = commit(repo, {"second.txt": "2\n"}, "second")

    gates.add_slots_ahead(ws, 3, base)
    gates._slots_added_ahead(ws)

    for slot in (2, 3):
        path = gates.slot_path(ws, slot)
        assert git(path, "rev-parse", "HEAD") == base
        assert not (path / "README.md").exists()  # git's part alone: nothing checked out
    assert (kept / "cache" / "built.bin").read_text() == "kept\n"
    jobs = [gates.GateJob(newer, agent, tmp_path / f"gate-{agent}.log") for agent in (1, 2, 3)]
    command = "test -f second.txt && git status --porcelain --untracked-files=all && pwd"
    results = gates.run_gates(ws, jobs, command, lambda job, path: dict(os.environ))
    assert [r.ok for r in results] == [True, True, True]
    for slot, job in enumerate(jobs, start=1):
        assert job.log.read_text().strip() == str(gates.slot_path(ws, slot))  # a clean tree


def test_a_merge_queue_adds_every_slot_it_may_use_when_it_starts(
    repo: Path, cli: Callable[..., Any], worktrees: Path
) -> None:
    """One candidate gated, yet the queue's ``parallel`` slots all exist after its train."""
    plan = PLAN.replace(
        '[gate]\ncommand = ""\n', '[gate]\ncommand = "true"\n\n[merge]\nparallel = 3\n'
    )
    commit(repo, {"plan.toml": plan}, "plan")
    assert cli("setup").code == 0
    assert cli("start", "1").code == 0
    commit(agent_tree(worktrees, 1), {"one.py": "1\n"}, "work")
    assert cli("complete", "1").code == 0

    assert cli("merge").code == 0, "the merge failed"

    ws = open_workspace(repo)
    assert all((gates.slot_path(ws, slot) / ".git").exists() for slot in (1, 2, 3))
    assert git(repo, "show", "main:one.py") == "1"
