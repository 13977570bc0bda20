"""A detached paradev run: started in a session of its own, waited for, its log read.

Everything lives in ``<git common dir>/paradev/``, which every worktree shares:
``run.log`` (the run's stdout and stderr), ``run.pid`` (who runs it: pid and
start time, so a reused pid is never taken for it) and ``run.exit`` (its exit
code). A small waiting parent (``python -m paradev.background``) leads the
detached session, starts ``paradev ARGS`` and writes ``run.exit`` when it
ends, however it ends: the shell, terminal or process that started the run
may be long gone by then.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from paradev import processes
from paradev.errors import ParadevError, PreconditionError
from paradev.supervise import wait_for_child

if TYPE_CHECKING:
    from paradev.state import TaskRecord
    from paradev.workspace import Workspace

RUN_LOG = "run.log"
RUN_PID = "run.pid"
RUN_EXIT = "run.exit"
POLL_SECONDS = 0.2
NO_RUN = "no detached run: start one with 'paradev run --detach'"


class DetachedRunError(ParadevError):
    """The detached run failed: ``wait`` exits with the run's own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class DetachedRun(NamedTuple):
    """What ``run.pid`` says: the waiting parent (pid, start time) and what it runs."""

    pid: int
    started: int | None  # clock ticks since boot (``processes.start_time``)
    argv: list[str]
    started_at: str

    def alive(self) -> bool:
        return processes.alive(self.pid, self.started)

    def describe(self) -> str:
        return f"'paradev {' '.join(self.argv)}' (pid {self.pid}, since {self.started_at})"


# -- starting ---------------------------------------------------------------------------------


def start(ws: Workspace, argv: Sequence[str]) -> int:
    """Start ``paradev ARGV`` detached; the pid of its waiting parent. Refused while one runs."""
    folder = ws.store.dir
    with ws.store.exclusive(
        "run.lock",
        wait=30,
        busy="another paradev is starting a detached run; see it with 'paradev logs'",
        note_owner=False,
    ):
        current = read(folder)
        if current is not None and current.alive():
            raise PreconditionError(
                f"a detached run is already running: {current.describe()}; wait for it with "
                "'paradev wait' or follow it with 'paradev logs --follow'"
            )
        (folder / RUN_EXIT).unlink(missing_ok=True)
        log = folder / RUN_LOG
        if log.exists():
            log.replace(folder / f"{RUN_LOG}.1")  # the previous run's log, kept once
        pid = _spawn_detached(folder, list(argv), log)
        _write(
            folder / RUN_PID,
            json.dumps(
                {
                    "pid": pid,
                    "started": processes.start_time(pid),
                    "argv": list(argv),
                    "started_at": _now(),
                }
            ),
        )
    return pid


def _spawn_detached(folder: Path, argv: list[str], log: Path) -> int:
    """The waiting parent in a new session: no terminal signal reaches it, nothing stops it
    when the starting process ends (it is not registered with ``processes``)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            processes.module_argv("paradev.background", str(folder), *argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # the log follows the run as it goes
        )
    return proc.pid


def _now() -> str:
    from paradev.state import now

    return now()


def _write(path: Path, text: str) -> None:
    from paradev.atomic import write_atomic

    write_atomic(path, text + "\n")


# -- the waiting parent -----------------------------------------------------------------------


def supervise(folder: Path, argv: list[str]) -> int:
    """Run ``paradev ARGV`` and record its exit code in ``run.exit`` (128 + N after signal N).

    The run gets a process group of its own, so a signal sent to this parent's
    group reaches it once, forwarded: it stops what it started and exits
    128 + N, and the exit code is still recorded.
    """
    code = wait_for_child(processes.module_argv("paradev", *argv), forward=True)
    _write(folder / RUN_EXIT, str(code))
    return code


# -- waiting ----------------------------------------------------------------------------------


def read(folder: Path) -> DetachedRun | None:
    """The detached run ``run.pid`` names (running or not), or None when there is none."""
    try:
        data = json.loads((folder / RUN_PID).read_text(encoding="utf-8"))
        started = data.get("started")
        return DetachedRun(
            int(data["pid"]),
            None if started is None else int(started),
            [str(a) for a in data.get("argv", [])],
            str(data.get("started_at", "?")),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise PreconditionError(
            f"{folder / RUN_PID} is unreadable ({err}); if no detached run is going, remove it"
        ) from None


def exit_code(folder: Path) -> int | None:
    """The exit code the last detached run recorded, None while it runs (or was killed)."""
    try:
        return int((folder / RUN_EXIT).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def wait(folder: Path, poll: float = POLL_SECONDS) -> int:
    """Block until the detached run ends; its exit code. Ended long ago: its code at once."""
    run = read(folder)
    if run is None:
        raise PreconditionError(NO_RUN)
    while True:
        alive = run.alive()  # asked before the file is read: a run ending in between counts
        code = exit_code(folder)
        if code is not None:
            return code
        if not alive:
            raise PreconditionError(
                f"the detached run {run.describe()} ended without an exit code (killed with "
                f"SIGKILL?); see its log with 'paradev logs', start another with "
                "'paradev run --detach'"
            )
        time.sleep(poll)


def ended(code: int) -> DetachedRunError:
    """``wait``'s failure for a run that exited ``code``."""
    return DetachedRunError(
        f"the detached run ended with exit {code}; see its log with 'paradev logs'", code
    )


# -- logs -------------------------------------------------------------------------------------


def run_log(folder: Path) -> tuple[Path, Callable[[], bool]]:
    """The detached run's log and whether the run still goes (for ``--follow``)."""
    log = folder / RUN_LOG
    run = read(folder)
    if run is None or not log.exists():
        raise PreconditionError(f"no detached run log at {log}: {NO_RUN}")
    return log, run.alive


def agent_log(ws: Workspace, agent: int) -> tuple[Path, Callable[[], bool]]:
    """The log of the agent's task in progress, else of its last task that has one, and
    whether that task's agent process still runs."""
    ws.check_agent(agent)
    state = ws.store.read()
    records = [r for t in ws.tasks_of(agent) if (r := state.tasks.get(t.issue)) and r.log]
    if not records:
        raise PreconditionError(
            f"agent {agent} has no task log yet: its tasks get one when 'paradev run' or "
            "'paradev run-batch' starts them"
        )
    record = max(records, key=_recency)
    pid, started = record.agent_pid, record.agent_started
    return Path(str(record.log)), lambda: pid is not None and processes.alive(pid, started)


def _recency(record: TaskRecord) -> tuple[bool, str]:
    from paradev.state import IN_PROGRESS

    return record.status == IN_PROGRESS, record.started_at or ""


def show(path: Path, running: Callable[[], bool] | None, out: IO[bytes]) -> None:
    """Copy ``path`` to ``out``; with ``running``, keep copying new bytes until it is False.

    The file is read once more after the process ended, so its last lines are never lost.
    """
    offset = 0
    while True:
        going = running() if running is not None else False
        offset = _copy_from(path, offset, out)
        if not going:
            return
        time.sleep(POLL_SECONDS)


def _copy_from(path: Path, offset: int, out: IO[bytes]) -> int:
    """Write what ``path`` holds past ``offset``; the new offset (0 again when it was replaced
    by a shorter file, e.g. the next run's log)."""
    try:
        with path.open("rb") as log:
            if os.fstat(log.fileno()).st_size < offset:
                offset = 0
            log.seek(offset)
            while chunk := log.read(1 << 16):
                out.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        return 0
    out.flush()
    return offset


def main(argv: list[str]) -> int:
    """``python -m paradev.background FOLDER ARGS...``: the waiting parent of a detached run."""
    return supervise(Path(argv[0]), argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
