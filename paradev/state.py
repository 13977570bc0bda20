"""Shared state: one JSON file in the git common dir, changed under a lock, written atomically.

Every work tree of the repository sees the same file
(``<git-common-dir>/paradev/state.json``) and it can never be committed.
Readers need no lock because writers replace the file by rename; writers
hold an exclusive file lock for the whole read-modify-write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from paradev.errors import StateError

STATE_VERSION = 1
LOCK_TIMEOUT = 60.0

# Task lifecycle, in order. ``failed`` may go back to ``in_progress``.
PLANNED, ASSIGNED, IN_PROGRESS, COMPLETED, FAILED, MERGED = (
    "planned",
    "assigned",
    "in_progress",
    "completed",
    "failed",
    "merged",
)
OPEN_STATUSES = (PLANNED, ASSIGNED)
DONE_STATUSES = (COMPLETED, MERGED)


def now() -> str:
    """The current UTC time as ISO 8601 (one place to fake the clock in tests)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class TaskRecord:
    """What paradev knows about one task beyond the plan."""

    issue: int
    agent: int
    status: str = PLANNED
    assigned_at: str | None = None
    started_at: str | None = None
    completed_at: str | None = None
    failed_at: str | None = None
    merged_at: str | None = None
    base_commit: str | None = None
    head_commit: str | None = None
    merged_commit: str | None = None
    files_modified: list[str] = field(default_factory=list)
    log: str | None = None
    error: str | None = None


@dataclass
class AgentRecord:
    """An agent's work tree and branch as ``setup`` created them."""

    agent: int
    branch: str
    worktree: str


@dataclass
class State:
    """The whole state file. Per-agent totals are derived from the task records."""

    version: int = STATE_VERSION
    agents: dict[int, AgentRecord] = field(default_factory=dict)
    tasks: dict[int, TaskRecord] = field(default_factory=dict)
    merge_order: list[int] = field(default_factory=list)
    train: dict[str, Any] | None = None
    merge_history: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str | None = None

    def task(self, issue: int, agent: int) -> TaskRecord:
        """The record of ``issue``, created as planned on first use."""
        record = self.tasks.get(issue)
        if record is None:
            record = self.tasks[issue] = TaskRecord(issue=issue, agent=agent)
        return record

    def status(self, issue: int) -> str:
        record = self.tasks.get(issue)
        return record.status if record else PLANNED

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["agents"] = {str(k): v for k, v in data["agents"].items()}
        data["tasks"] = {str(k): v for k, v in data["tasks"].items()}
        return data

    @classmethod
    def from_json(cls, data: Any) -> State:
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        version = data.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise ValueError(f"state version {version} is not supported (expected {STATE_VERSION})")
        return cls(
            version=version,
            agents={int(k): _record(AgentRecord, v) for k, v in data.get("agents", {}).items()},
            tasks={int(k): _record(TaskRecord, v) for k, v in data.get("tasks", {}).items()},
            merge_order=[int(a) for a in data.get("merge_order", [])],
            train=data.get("train"),
            merge_history=list(data.get("merge_history", [])),
            updated_at=data.get("updated_at"),
        )


R = TypeVar("R", AgentRecord, TaskRecord)


def _record(cls: type[R], raw: Any) -> R:
    if not isinstance(raw, dict):
        raise ValueError(f"a {cls.__name__} is not an object")
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in known})


class StateStore:
    """Reads and changes ``<common_dir>/paradev/state.json``."""

    def __init__(self, common_dir: Path) -> None:
        self.dir = common_dir / "paradev"
        self.path = self.dir / "state.json"
        self.lock_path = self.dir / "state.lock"
        self._lock: Any = None

    def read(self) -> State:
        """The current state; empty when there is no file yet. Raises StateError if corrupt."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from None
        try:
            return State.from_json(json.loads(raw.decode("utf-8")))
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(
                f"state file {self.path} is corrupt ({exc}); "
                "run 'paradev doctor --repair' or 'paradev reset' to move it aside"
            ) from None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive state lock (re-entrant in one process)."""
        from filelock import FileLock, Timeout

        self.dir.mkdir(parents=True, exist_ok=True)
        if self._lock is None:
            self._lock = FileLock(str(self.lock_path), timeout=LOCK_TIMEOUT)
        try:
            with self._lock:
                yield
        except Timeout:
            raise StateError(
                f"another paradev holds {self.lock_path} for over {LOCK_TIMEOUT:.0f}s; "
                "wait for it to finish"
            ) from None

    @contextmanager
    def update(self) -> Iterator[State]:
        """Read, let the caller change, and write back the state, all under the lock.

        Nothing is written when the block raises.
        """
        with self.locked():
            state = self.read()
            yield state
            self.write(state)

    def write(self, state: State) -> None:
        """Atomically replace the file (temp file, fsync, rename). Callers hold the lock."""
        import tempfile  # only writers need it: status never loads it

        state.updated_at = now()
        text = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="state.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def quarantine_if_corrupt(self) -> Path | None:
        """Move an unreadable state file aside (``state.json.corrupt-<time>``); return where."""
        with self.locked():
            try:
                self.read()
            except StateError:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                aside = self.path.with_name(f"state.json.corrupt-{stamp}")
                os.replace(self.path, aside)
                return aside
        return None

    def reset(self) -> Path | None:
        """Start from an empty state; a corrupt file is moved aside, never overwritten."""
        with self.locked():
            aside = self.quarantine_if_corrupt()
            self.write(State())
            return aside
