"""The small supervisor each agent of ``paradev run`` runs under.

``command(RECORD, ARGV)`` is the argv that starts the agent (argv as a list,
never a shell) in its own working directory, writes the agent's pid and start
time to RECORD, waits, and writes its exit code there too. It shares the
agent's process group, so paradev stopping the group stops both; it ignores
the signal itself for as long as the agent takes to exit, so that exit code
is recorded. When ``paradev run`` is killed outright (SIGKILL) the supervisor
and the agent carry on; the next run reads RECORD (``paradev.agentrecord``)
and adopts the agent instead of starting a second copy.

Every agent launch pays for this module's start, so it runs without ``site``
and imports ``os``, ``_signal``, ``sys``, ``time`` and ``paradev.procstat``
alone: no ``subprocess`` (``os.posix_spawnp``), no ``json`` (a record is a
flat object of numbers), no ``pathlib``. That is a python start of about
15 ms of CPU instead of 60.
"""

from __future__ import annotations

import os
import sys
import time

from paradev.procstat import start_time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Sequence
else:  # signal's own functions and numbers, without its enums (enum: half this start's CPU)
    try:
        import _signal as signal
    except ImportError:  # a Python without CPython's _signal
        import signal

LAUNCH_FAILED = 127  # the exit code recorded when the agent's program cannot start
# ``python -S -c BOOT PACKAGE_ROOT RECORD -- ARGV``: this very paradev, whatever the cwd
# (``-m`` would put the cwd first on the path: an agent's half-edited copy of paradev)
_BOOT = (
    "import sys; sys.path[0] = sys.argv.pop(1); "
    "from paradev.supervise import main; sys.exit(main(sys.argv[1:]))"
)


def command(record: str | os.PathLike[str], argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` under a supervisor writing ``record``."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return [sys.executable, "-S", "-c", _BOOT, root, os.fspath(record), "--", *argv]


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: supervise RECORD -- ARGV...", file=sys.stderr)
        return 2
    record, command = argv[0], list(argv[2:])
    issue = os.environ.get("PARADEV_ISSUE", "")
    facts: dict[str, int | float | None] = {
        "supervisor": os.getpid(),
        "supervisor_start": start_time(os.getpid()),
        "issue": int(issue) if issue.isdigit() and int(issue) else None,
    }

    def started(pid: int) -> None:
        facts.update(pid=pid, start=start_time(pid))
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
    started: Callable[[int], None] | None = None,
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
    child: list[int] = []  # its pid while it runs: never signalled once reaped
    pending: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not forward:
            return
        if child:
            os.kill(child[0], signum)
        else:
            pending.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    pid = _spawn(list(command), forward)
    child.append(pid)
    for signum in pending:
        os.kill(pid, signum)
    if started is not None:
        started(pid)
    _, status = os.waitpid(pid, 0)
    child.clear()
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _spawn(argv: list[str], own_group: bool) -> int:
    """Start ``argv`` (found on PATH); its pid. ``own_group``: it leads a group of its own."""
    # the signals python ignores for itself are the child's own again (as subprocess does)
    sigdef = (signal.SIGPIPE, signal.SIGXFSZ)
    if own_group:
        return os.posix_spawnp(argv[0], argv, os.environ, setsigdef=sigdef, setpgroup=0)
    return os.posix_spawnp(argv[0], argv, os.environ, setsigdef=sigdef)


def write(path: str | os.PathLike[str], data: dict[str, int | float | None]) -> None:
    """Replace ``path`` whole with ``data`` as JSON (temp file, rename): a reader never sees
    half a record. Not fsynced: a record outlives the run, not the machine."""
    text = "{" + ", ".join(f'"{key}": {_json(value)}' for key, value in data.items()) + "}"
    target = os.fspath(path)
    tmp = f"{os.path.dirname(target)}/.{os.path.basename(target)}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, text.encode("ascii"))
    finally:
        os.close(fd)
    os.replace(tmp, target)


def _json(value: int | float | None) -> str:
    """One number as JSON (pids, clock ticks, seconds since the epoch: never NaN or inf)."""
    return "null" if value is None else repr(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
