"""The process registry: real process groups that ignore SIGTERM, stopped all at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture

from paradev import processes
from tests.helpers import (
    STUBBORN,
    Result,
    agent_tree,
    commit,
    gone,
    rev,
    signal_and_wait,
    start_paradev,
    stopped_together,
    wait_for_file,
)


def _stubborn(tmp_path: Path, name: str) -> tuple[subprocess.Popen[bytes], list[int]]:
    script = tmp_path / "stubborn.py"
    script.write_text(STUBBORN)
    pidfile = tmp_path / f"{name}.pid"
    proc = processes.spawn(
        [sys.executable, str(script), str(tmp_path / "events"), name, str(pidfile)]
    )
    return proc, [int(p) for p in wait_for_file(pidfile, proc).split()]


def test_stop_signals_every_group_before_killing_any(tmp_path: Path) -> None:
    started = [_stubborn(tmp_path, name) for name in ("a", "b", "c")]

    processes.stop([proc for proc, _ in started], grace=1.0)

    assert all(gone(pid) for _, pids in started for pid in pids)
    assert stopped_together((tmp_path / "events").read_text(), ["a", "b", "c"])
    assert processes.running() == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_raise_interrupted_and_stop_every_group(
    tmp_path: Path, sig: signal.Signals
) -> None:
    before = signal.getsignal(sig)
    with pytest.raises(processes.Interrupted) as caught, processes.interruptible():
        _, pids = _stubborn(tmp_path, "a")
        os.kill(os.getpid(), sig)
        time.sleep(30)  # the handler raises long before

    assert caught.value.exit_code == 128 + sig
    assert processes.describe(caught.value) == sig.name
    assert all(gone(pid) for pid in pids)
    assert processes.running() == []
    assert signal.getsignal(sig) == before  # the handlers are put back


def test_a_process_is_recognised_by_pid_and_start_time(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = processes.start_time(proc.pid)
        assert started is not None
        assert processes.alive(proc.pid, started)
        assert not processes.alive(proc.pid, started + 1)  # same pid, another process
    finally:
        proc.kill()
        proc.wait()
    assert not processes.alive(proc.pid, started)
    assert processes.start_time(proc.pid) is None


# -- a signal during merge: the gate is stopped too ------------------------------------------------


def test_sigterm_during_the_gate_stops_it_and_the_train_resumes(
    set_up: Path, repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    commit(agent_tree(set_up, 1), {"src/status.py": "x = 1\n"}, "feat: status")
    assert cli("complete", "1").code == 0
    script, pidfile = tmp_path / "stubborn.py", tmp_path / "gate.pid"
    script.write_text(STUBBORN)
    _set_gate(repo, [sys.executable, str(script), str(tmp_path / "events"), "gate", str(pidfile)])
    base = rev(repo, "main")
    merge = start_paradev(repo, "merge")
    gate = [int(p) for p in wait_for_file(pidfile, merge).split()]

    err, survivors = signal_and_wait(merge, signal.SIGTERM, gate)

    assert survivors == []
    assert merge.returncode == 143, err
    assert "interrupted (SIGTERM)" in err
    assert "run paradev merge --continue to resume it" in err  # the way on, said
    assert rev(repo, "main") == base
    _set_gate(repo, [sys.executable, "-c", "pass"])
    resumed = cli("merge", "--continue")
    assert resumed.code == 0, resumed.err
    assert rev(repo, "main") == rev(repo, "parallel-dev/agent-1")


def _set_gate(repo: Path, command: list[str]) -> None:
    import tomlkit

    doc = tomlkit.parse((repo / "plan.toml").read_text())
    doc["gate"]["command"] = command
    (repo / "plan.toml").write_text(tomlkit.dumps(doc))


def test_a_signal_while_a_process_starts_still_stops_it(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    real_popen = subprocess.Popen
    started: list[int] = []

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before paradev has registered it
        return proc

    mocker.patch.object(subprocess, "Popen", popen_then_sigterm)
    with pytest.raises(processes.Interrupted), processes.interruptible():
        processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(30)

    assert started and gone(started[0])
    assert processes.running() == []


def test_age_counts_from_the_process_start() -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.2)
        age = processes.age(processes.start_time(sleeper.pid))
        assert age is not None and 1.0 <= age < 30
        older = processes.age(processes.start_time(os.getpid()))
        assert older is not None and older >= age  # this test process started first
    finally:
        sleeper.kill()
        sleeper.wait()
    assert processes.age(None) is None


def test_status_after_a_killed_merge_says_the_train_is_interrupted_and_how_to_resume(
    set_up: Path, repo: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    assert cli("start", "1").code == 0
    commit(agent_tree(set_up, 1), {"src/status.py": "x = 1\n"}, "feat: status")
    assert cli("complete", "1").code == 0
    pidfile = tmp_path / "gate.pid"
    _set_gate(repo, ["sh", "-c", f'echo $$ > "{pidfile}"; exec sleep 30'])
    merge = start_paradev(repo, "merge")
    gate = int(wait_for_file(pidfile, merge))
    merge.kill()  # SIGKILL: nothing of paradev's runs on to record the end
    merge.communicate()
    os.killpg(gate, signal.SIGKILL)

    status = cli("status")
    shown = cli("status", "--json")

    assert "merge train interrupted (no paradev merge drives it)" in status.out
    assert "run paradev merge --continue to resume it" in status.out
    assert "merge train in progress: running" not in status.out
    assert json.loads(shown.out)["train"]["interrupted"] is True
    _set_gate(repo, [sys.executable, "-c", "pass"])
    assert cli("merge", "--continue").code == 0


def test_wait_returns_the_moment_a_process_exits_without_polling(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    """Popen.wait with a timeout sleeps between looks, up to 50 ms late per gate."""
    proc = subprocess.Popen(["sh", "-c", "sleep 0.3; exit 5"])
    sleep = mocker.patch("subprocess.time.sleep", side_effect=AssertionError("polled"))

    assert processes.wait(proc, timeout=60) == 5
    assert proc.returncode == 5 and not sleep.called


def test_wait_raises_timeout_expired_and_leaves_the_process_running(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            processes.wait(proc, timeout=0.2)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    assert processes.wait(proc, timeout=1) == -signal.SIGKILL  # reaped already: no descriptor
