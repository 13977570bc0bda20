"""Every process group paradev starts, and stopping them all at once.

Agents, gates and hooks each run in a session of their own, so a signal sent
to paradev never reaches them: paradev has to stop them itself, or they
outlive it. They are registered here while they run. On Ctrl-C, SIGTERM or
SIGHUP every registered group gets SIGTERM at the same moment, all share one
grace period, and the survivors get SIGKILL: three agents that ignore SIGTERM
cost one grace period, not three.

Agents are recognised across runs by pid *and* start time (pids are reused).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from paradev.procstat import start_time as start_time  # noqa: PLC0414 (re-exported)
from paradev.procstat import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from paradev.stoppable import Group as Group  # noqa: PLC0414 (re-exported: the runner extends it)
else:

    def __getattr__(name: str) -> object:
        """``processes.Group`` (the runner's agents extend it) loads at first use."""
        if name != "Group":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from paradev.stoppable import Group

        return Group


GRACE_SECONDS = 3.0
CAUGHT = (signal.SIGTERM, signal.SIGHUP)  # handled like Ctrl-C (SIGINT)

_running: dict[int, subprocess.Popen[Any]] = {}
_guard = threading.Lock()
_deferring = 0  # > 0: the main thread is between starting a process and registering it
_pending: int | None = None  # a signal that arrived meanwhile


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C; paradev exits 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def describe(interrupt: KeyboardInterrupt) -> str:
    """``SIGTERM``, ``SIGHUP`` or ``Ctrl-C``: what stopped paradev, for messages and records."""
    return interrupt.args[0] if isinstance(interrupt, Interrupted) else "Ctrl-C"


def spawn(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` in a new session (its own process group), registered until released.

    Raises what Popen raises (OSError, ValueError) with nothing registered.
    """
    with _deferred():  # a signal now would leave a started process unregistered
        proc: subprocess.Popen[Any] = subprocess.Popen(*args, start_new_session=True, **kwargs)
        with _guard:
            _running[proc.pid] = proc
    return proc


@contextmanager
def _deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGHUP back until the block ends, then raise Interrupted (main thread)."""
    global _deferring, _pending  # noqa: PLW0603 - signal handlers can only reach module state
    if not _in_main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


def release(proc: Group) -> None:
    """Forget ``proc`` (it ended and was waited for)."""
    with _guard:
        _running.pop(proc.pid, None)


def wait(proc: subprocess.Popen[Any], timeout: float) -> int:
    """``proc.wait(timeout)``, returning the moment it exits: Popen's own wait with a timeout
    polls, up to 50 ms late (every gate of a merge train is on the run's critical path)."""
    with exit_descriptor(proc) as fd:
        if fd >= 0 and not select.select([fd], [], [], max(0.0, timeout))[0]:
            raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait(timeout)


@contextmanager
def exit_descriptor(proc: subprocess.Popen[Any]) -> Iterator[int]:
    """A descriptor that reads ready when ``proc`` ends (-1 where the system has none)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3, or already reaped
        yield -1
        return
    try:
        yield fd
    finally:
        os.close(fd)


def running() -> list[subprocess.Popen[Any]]:
    """The groups started and not released yet."""
    with _guard:
        return list(_running.values())


def stop(procs: Iterable[Group], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM every group at once, wait one shared ``grace``, SIGKILL what is left, reap."""
    procs = list(procs)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        _signal_group(proc, signal.SIGKILL)  # survivors, and children that outlived their leader
    for proc in procs:
        proc.wait()
        release(proc)
    _wait_until_gone(procs)


def _wait_until_gone(procs: list[Group], limit: float = 2.0) -> None:
    """Give SIGKILLed children (reparented, not ours to reap) a moment to leave their groups,
    so that nothing paradev started is still alive when it returns or exits."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and any(_group_alive(proc) for proc in procs):
        time.sleep(0.01)


def _group_alive(proc: Group) -> bool:
    try:
        os.killpg(proc.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_all(grace: float = GRACE_SECONDS) -> None:
    """Stop every group paradev started and still runs (an interrupt's cleanup)."""
    stop(running(), grace)


def _signal_group(proc: Group, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _raise_interrupted(signum: int, frame: object) -> None:
    global _pending  # noqa: PLW0603 - signal handlers can only reach module state
    if _deferring:
        _pending = signum
        return
    raise Interrupted(signum)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Interrupted, like Ctrl-C; leaving on one stops every group.

    Signal handlers belong to the main thread; elsewhere this does nothing.
    """
    if not _in_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in CAUGHT}
    try:
        yield
    except KeyboardInterrupt:
        with shielded():
            stop_all()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def shielded() -> Iterator[None]:
    """A second Ctrl-C, SIGTERM or SIGHUP must not cut the cleanup of the first one short."""
    if not _in_main_thread():
        yield
        return
    signals = (signal.SIGINT, *CAUGHT)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- recognising an agent across runs ---------------------------------------------------------


def alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid``, started at ``started`` (ticks), still runs and is no zombie."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    fields = stat(pid)
    if fields is None:  # no /proc (or it just ended): the pid alone has to do
        return started is None
    return fields[0] not in ("Z", "X") and started in (None, start_time(pid))


def age(started: int | None) -> float | None:
    """Seconds since a process started at ``started`` (clock ticks since boot), if /proc says."""
    if started is None:
        return None
    try:
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))


# -- starting paradev itself in a child process -----------------------------------------------

_BOOT = (
    "import runpy, sys; sys.path[0] = sys.argv.pop(1); "
    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)"
)


def module_argv(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` importing this very paradev, whatever the child's cwd.

    ``-m`` would put the cwd first on the path: in a work tree of paradev's
    own repository that would import the agent's copy, half edited.
    """
    package_root = str(Path(__file__).resolve().parent.parent)
    return [sys.executable, "-c", _BOOT, package_root, module, *args]


def kernel_id() -> str | None:
    """This kernel's boot and pid namespace: a pid means this process only under the same one.

    None without /proc: then no pid of another process can be judged from here.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        space = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot} {space}" if boot else None
