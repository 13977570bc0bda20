"""The small supervisor each agent of ``paradev run`` runs under, and what it records.

``python -m paradev.supervise RECORD -- ARGV...`` starts the agent (argv as
a list, never a shell) in its own working directory, writes the agent's pid and
start time to RECORD, waits, and writes its exit code there too. It shares
the agent's process group, so paradev stopping the group stops both; it
ignores the signal itself for as long as the agent takes to exit, so that
exit code is recorded. When ``paradev run`` is killed outright (SIGKILL) the
supervisor and the agent carry on; the next run reads RECORD and adopts the
agent instead of starting a second copy.

Only the standard library and ``paradev.processes``: every agent launch pays
for this module's start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from paradev import processes
from paradev.atomic import write_json

LAUNCH_FAILED = 127  # the exit code recorded when the agent's program cannot start


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m paradev.supervise RECORD -- ARGV...", file=sys.stderr)
        return 2
    record, command = Path(argv[0]), list(argv[2:])
    facts: dict[str, Any] = {
        "supervisor": os.getpid(),
        "supervisor_start": processes.start_time(os.getpid()),
        "issue": _int_or_none(int(os.environ.get("PARADEV_ISSUE", "0") or 0)),
    }

    def started(agent: subprocess.Popen[bytes]) -> None:
        facts.update(pid=agent.pid, start=processes.start_time(agent.pid))
        write(record, {**facts, "started": time.time()})

    try:
        code = wait_for_child(command, started=started)
    except OSError as exc:
        print(f"paradev: cannot launch {command[0]!r}: {exc.strerror or exc}", flush=True)
        write(record, {**facts, "pid": None, "exit_code": LAUNCH_FAILED, "ended": time.time()})
        return LAUNCH_FAILED
    write(record, {**facts, "exit_code": code, "ended": time.time()})
    return code


def wait_for_child(
    command: Sequence[str],
    *,
    forward: bool = False,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> int:
    """Run ``command`` as the waiting parent; its exit code as a shell says it (128 + N after
    signal N). Raises OSError when the program cannot start.

    Without ``forward`` the child shares this parent's process group, so a
    signal to the group reaches it directly and the parent only waits for it
    to exit (a handler, not SIG_IGN: the child must not inherit an ignored
    signal). With ``forward`` the child leads a group of its own and gets
    each signal this parent gets once, forwarded (also one that came before
    it started). Shared by the agents' supervisors and the detached run's parent.
    """
    child: list[subprocess.Popen[bytes]] = []
    pending: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not forward:
            return
        if child:
            child[0].send_signal(signum)
        else:
            pending.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    child.append(subprocess.Popen(list(command), process_group=0 if forward else None))
    for signum in pending:
        child[0].send_signal(signum)
    if started is not None:
        started(child[0])
    code = child[0].wait()
    return 128 - code if code < 0 else code


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` whole (temp file, rename): a reader never sees half a record."""
    write_json(path, data)


class Record(NamedTuple):
    """What a supervisor wrote about its agent (a NamedTuple: ``dataclasses`` imports
    ``inspect``, a tenth of this module's start, paid at every agent launch)."""

    supervisor: int
    supervisor_start: int | None
    issue: int | None  # the task it runs (PARADEV_ISSUE)
    pid: int | None
    start: int | None
    exit_code: int | None

    def supervisor_alive(self) -> bool:
        return processes.alive(self.supervisor, self.supervisor_start)

    def agent_alive(self) -> bool:
        return self.pid is not None and processes.alive(self.pid, self.start)


def read(path: Path) -> Record | None:
    """The record at ``path``; None when there is none or it is unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Record(
            supervisor=int(data["supervisor"]),
            supervisor_start=_int_or_none(data.get("supervisor_start")),
            issue=_int_or_none(data.get("issue")),
            pid=_int_or_none(data.get("pid")),
            start=_int_or_none(data.get("start")),
            exit_code=_int_or_none(data.get("exit_code")),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def command(record: Path, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` under a supervisor writing ``record``."""
    return processes.module_argv("paradev.supervise", str(record), "--", *argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
