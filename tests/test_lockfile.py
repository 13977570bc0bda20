"""The flock lock of the state and train lock files, against real processes and threads."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from paradev.lockfile import FIRST_POLL, POLL_INTERVAL, LockBusyError, LockFile

# Takes the lock at argv[1] with argv[2] ("paradev" or "filelock"), says so, holds it until
# its stdin closes.
HOLDER = """
import sys
from filelock import FileLock
from paradev.lockfile import LockFile
path, kind = sys.argv[1], sys.argv[2]
lock = LockFile(path, timeout=30) if kind == "paradev" else FileLock(path, timeout=30)
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


def hold_in_another_process(path: Path, kind: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.parametrize("kind", ["paradev", "filelock"])
def test_a_lock_another_process_holds_waits_then_times_out_until_it_ends(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "state.lock"
    holder = hold_in_another_process(path, kind)
    try:
        with pytest.raises(LockBusyError):
            LockFile(str(path), timeout=0.3).acquire()
    finally:
        holder.kill()  # killed, not released: the operating system lets go of it
        holder.wait()
    lock = LockFile(str(path), timeout=30)
    lock.acquire()
    assert lock.is_locked
    lock.release()
    assert not lock.is_locked and path.exists()  # the file stays: waiters share its inode


def test_a_held_lock_keeps_out_a_filelock_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "train.lock"
    lock = LockFile(str(path), timeout=0)
    lock.acquire()
    probe = "import sys; from filelock import FileLock; FileLock(sys.argv[1], timeout=0).acquire()"
    refused = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, check=False
    )
    assert refused.returncode != 0 and b"Timeout" in refused.stderr
    lock.release()
    taken = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, check=False
    )
    assert taken.returncode == 0, taken.stderr


def test_it_is_reentrant_in_one_thread_and_excludes_other_threads(tmp_path: Path) -> None:
    path = str(tmp_path / "state.lock")
    lock = LockFile(path, timeout=0)
    outcomes: list[str] = []

    def other_thread() -> None:
        try:
            lock.acquire()
        except LockBusyError:
            outcomes.append("refused")
        else:
            outcomes.append("taken")
            lock.release()

    lock.acquire()
    lock.acquire()  # re-entrant: no wait on itself
    lock.release()
    for _ in range(2):  # still held once: another thread, or another instance, is refused
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    with pytest.raises(LockBusyError):
        LockFile(path, timeout=0).acquire()  # another instance in this thread waits too
    lock.release()
    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert outcomes == ["refused", "refused", "taken"]


def test_a_folder_where_the_lock_file_belongs_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "state.lock").mkdir()
    with pytest.raises(OSError):
        LockFile(str(tmp_path / "state.lock"), timeout=0).acquire()


def test_a_waiter_tries_again_soon_at_first_then_less_often(
    tmp_path: Path, mocker: MockerFixture
) -> None:
    """A lock is held a few milliseconds per state write: a waiter must not sleep 50 ms at
    once (the run and its train take turns with the state on the critical path)."""
    path = tmp_path / "state.lock"
    holder = hold_in_another_process(path, "paradev")
    try:
        sleep = mocker.patch("paradev.lockfile.time.sleep")
        clock = iter(range(10_000))  # a second per look at the clock: the 20 s wait ends
        mocker.patch("paradev.lockfile.time.monotonic", side_effect=lambda: float(next(clock)))
        with pytest.raises(LockBusyError):
            LockFile(str(path), timeout=20).acquire()
    finally:
        holder.kill()
        holder.wait()
    waits = [call.args[0] for call in sleep.call_args_list]
    assert waits[:3] == [FIRST_POLL, 2 * FIRST_POLL, 4 * FIRST_POLL]
    assert max(waits) == POLL_INTERVAL and waits == sorted(waits)
