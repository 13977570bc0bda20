"""A process's state and start time from /proc: the one thing paradev's supervisor needs of
``paradev.processes``, without its imports (``os`` only: every agent launch pays for them)."""

from __future__ import annotations


def stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None without /proc or that process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return fields if len(fields) > 19 else None


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/<pid>/stat field 22), if known."""
    fields = stat(pid)
    return int(fields[19]) if fields and fields[19].isdigit() else None
