"""What an agent's supervisor (``paradev.supervise``) wrote about it, read by ``paradev run``:
whether the agent still runs, and how it ended, after the run that started it was killed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from paradev import processes


class Record(NamedTuple):
    """What a supervisor wrote about its agent."""

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
