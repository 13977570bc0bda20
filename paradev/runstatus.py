"""The snapshot a running ``paradev run`` keeps for ``status``: what each task waits for.

Kept apart from the run's loop so that ``status`` reads it without importing
the runner and the merge train.
"""

from __future__ import annotations

import json
from pathlib import Path

from paradev import processes

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any


def path(state_dir: Path) -> Path:
    """``run.json`` in the state folder: the run's pid, and per waiting task the reason."""
    return state_dir / "run.json"


def read(state_dir: Path) -> dict[str, Any] | None:
    """The running ``paradev run``'s snapshot; None when no run is alive."""
    try:
        data = json.loads(path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
        return None
    return data if processes.alive(data["pid"], data.get("start")) else None


def render(data: dict[str, Any]) -> str:
    """The lines ``status`` adds while a run drives the plan: what each task waits for."""
    lines = [f"paradev run (pid {data['pid']}, schedule {data.get('schedule', 'flow')}):"]
    for key, label in (("running", "running"), ("landing", "waiting to land")):
        if data.get(key):
            lines.append(f"  {label}: " + ", ".join(f"#{i}" for i in data[key]))
    for key in ("waiting", "blocked"):
        for issue, why in sorted((data.get(key) or {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"  #{issue} {'waits for' if key == 'waiting' else 'cannot run'}: {why}")
    if data.get("stopped"):
        lines.append(f"  stopped: {data['stopped']}")
    return "\n".join(lines)
