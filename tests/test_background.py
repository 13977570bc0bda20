"""The detached run (paradev.background), ``wait`` and ``logs``: real processes, real git."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paradev import background, processes
from paradev.errors import PreconditionError
from paradev.workspace import open_workspace
from tests.helpers import (
    Result,
    agent_tree,
    gone,
    plan_with,
    run_process,
    start_paradev,
    wait_for_file,
)

CliFn = Callable[..., Result]
WATCH = ["conflicts", "--watch", "--interval", "0.1"]  # a real paradev command that runs on


@pytest.fixture
def folder(repo: Path) -> Iterator[Path]:
    """The state folder; whatever detached run a test left going is stopped after it."""
    path = repo / ".git" / "paradev"
    yield path
    with contextlib.suppress(PreconditionError):  # a test's corrupt pid file
        run = background.read(path)
        if run is not None and run.alive():
            os.killpg(run.pid, signal.SIGKILL)


def _asleep(pid: int) -> bool:
    """Whether process ``pid`` sleeps in ``time.sleep`` (Linux: /proc/PID/wchan): past its
    start-up, where a Ctrl-C is not yet paradev's to handle."""
    return "nanosleep" in Path(f"/proc/{pid}/wchan").read_text()


def _until(condition: Callable[[], bool], limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_detached_command_runs_on_its_own_and_wait_gives_its_exit_code(
    repo: Path, folder: Path, cli: CliFn
) -> None:
    pid = background.start(open_workspace(repo), ["status"])

    result = cli("wait")

    assert result.code == 0, result.err
    assert result.out == "the detached run ended with exit 0\n"
    recorded = json.loads((folder / "run.pid").read_text())
    assert recorded["pid"] == pid and recorded["argv"] == ["status"]
    assert isinstance(recorded["started"], int)  # pid and start time: a reused pid is not it
    assert (folder / "run.exit").read_text() == "0\n"
    assert "paradev status (base: main)" in (folder / "run.log").read_text()
    assert cli("logs").out == (folder / "run.log").read_text()
    again = cli("wait")  # ended long ago: the same answer at once
    assert (again.code, again.out) == (0, result.out)


def test_wait_exits_with_the_failed_run_code_and_its_log_says_why(
    repo: Path, folder: Path, cli: CliFn
) -> None:
    background.start(open_workspace(repo), ["start", "9"])

    result = cli("wait")

    assert result.code == 2
    assert result.err == (
        "paradev: the detached run ended with exit 2; see its log with 'paradev logs'\n"
    )
    assert "unknown agent 9" in cli("logs").out


def test_a_second_detached_run_is_refused_while_one_runs_and_a_signal_ends_it_recorded(
    repo: Path, folder: Path, cli: CliFn
) -> None:
    ws = open_workspace(repo)
    pid = background.start(ws, WATCH)
    wait_for_file(folder / "run.pid")
    _until(lambda: "idle: agent 1" in (folder / "run.log").read_text())

    with pytest.raises(PreconditionError) as refused:
        background.start(ws, ["status"])
    assert str(refused.value).startswith(
        f"a detached run is already running: 'paradev {' '.join(WATCH)}' (pid {pid}, since "
    )
    assert "'paradev wait'" in str(refused.value)
    assert not (folder / "run.exit").exists()
    assert background.read(folder) == background.read(folder)  # untouched by the refusal
    assert json.loads((folder / "run.pid").read_text())["argv"] == WATCH

    waiter = start_paradev(repo, "wait")
    _until(lambda: _asleep(waiter.pid))  # in its wait loop: a loaded machine starts it slowly
    waiter.send_signal(signal.SIGINT)  # interrupting the waiter leaves the run going
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 130 and err == "paradev: interrupted\n"
    assert processes.alive(pid, processes.start_time(pid))

    follower = start_paradev(repo, "logs", "--follow")
    second = start_paradev(repo, "wait")
    time.sleep(0.5)
    assert follower.poll() is None and second.poll() is None
    os.kill(pid, signal.SIGTERM)  # the waiting parent passes it on; the run stops cleanly
    _, err = second.communicate(timeout=60)
    assert second.returncode == 143, err
    assert "ended with exit 143" in err
    followed, _ = follower.communicate(timeout=60)
    assert follower.returncode == 0
    assert followed.startswith("conflicts (base main @ ")
    assert followed.endswith("paradev: interrupted (SIGTERM)\n")  # the very last line too
    assert (folder / "run.exit").read_text() == "143\n"
    _until(lambda: gone(pid))

    background.start(ws, ["status"])  # it ended: a new one may start; the old log is kept
    assert cli("wait").code == 0
    assert "paradev: interrupted (SIGTERM)" in (folder / "run.log.1").read_text()
    assert "paradev status" in (folder / "run.log").read_text()


def test_wait_and_logs_without_a_detached_run_say_how_to_start_one(
    repo: Path, folder: Path, cli: CliFn
) -> None:
    for args in (["wait"], ["logs"], ["logs", "--follow"]):
        result = cli(*args)
        assert result.code == 2, args
        assert result.err.count("\n") == 1 and "'paradev run --detach'" in result.err, result.err
    assert not folder.joinpath("run.pid").exists()


def test_wait_for_a_run_killed_without_an_exit_code_says_so(
    repo: Path, folder: Path, cli: CliFn
) -> None:
    # A run whose waiting parent got SIGKILL: run.pid names a process that is gone.
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = processes.start_time(victim.pid)
    folder.mkdir(exist_ok=True)
    record = {"pid": victim.pid, "started": started, "argv": ["run"], "started_at": "then"}
    (folder / "run.pid").write_text(json.dumps(record))
    victim.kill()
    victim.wait()

    result = cli("wait")

    assert result.code == 2
    assert result.err.startswith(
        f"paradev: the detached run 'paradev run' (pid {victim.pid}, since then) ended without "
        "an exit code (killed with SIGKILL?)"
    )


def test_a_corrupt_pid_file_is_one_line(repo: Path, folder: Path, cli: CliFn) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "run.pid").write_text("{half")
    result = cli("wait")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "run.pid is unreadable" in result.err and "remove it" in result.err


# An agent that prints a line, waits until told to go on, prints another and commits.
AGENT = r"""
import os, subprocess, sys, time
from pathlib import Path
go = Path(sys.argv[1])
print(f"first line of #{os.environ['PARADEV_ISSUE']}", flush=True)
while not go.exists():
    time.sleep(0.05)
print("last line", flush=True)
Path("done.txt").write_text("done\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
"""


def test_logs_of_an_agent_follow_its_task_until_its_process_ends(
    repo: Path, folder: Path, tmp_path: Path, cli: CliFn
) -> None:
    script, go = tmp_path / "agent.py", tmp_path / "go"
    script.write_text(AGENT)
    plan_with(repo, agent=[sys.executable, str(script), str(go)])
    assert cli("setup").code == 0
    assert cli("logs", "1").code == 2  # no task has run yet
    background.start(open_workspace(repo), ["run-batch", "--agents", "1"])
    log = folder / "logs" / "issue-11.log"
    _until(lambda: log.exists() and "first line of #11" in log.read_text())

    follower = start_paradev(repo, "logs", "1", "--follow")
    time.sleep(0.5)
    assert follower.poll() is None  # the agent still runs
    go.write_text("")
    out, err = follower.communicate(timeout=60)

    assert follower.returncode == 0, err
    assert out.startswith("=== paradev ") and "\nfirst line of #11\nlast line\n" in out
    assert cli("wait").code == 0
    assert (agent_tree(repo.parent / "project-worktrees", 1) / "done.txt").exists()
    done = cli("logs", "1")  # its last task's log, once it ended
    assert done.code == 0 and done.out == log.read_text()
    assert "first line of #11" not in cli("logs", "2").err  # agent 2 ran nothing
    assert run_process(repo, "logs", "7").code == 2  # no such agent
