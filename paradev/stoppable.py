"""What ``paradev.processes`` can stop, as a type: kept apart because a ``Protocol`` imports
``typing`` (~4 ms), which ``status`` and ``check`` otherwise never load."""

from __future__ import annotations

from typing import Protocol


class Group(Protocol):
    """A process group paradev can stop: one it started, or an agent adopted from an earlier run."""

    @property
    def pid(self) -> int: ...

    def wait(self, timeout: float | None = None) -> int: ...
