"""Shared state: JSON files in the git common dir, changed under a lock, written atomically.

Every work tree of the repository sees the same files
(``<git-common-dir>/paradev/state.json``, and ``train.json`` for the merge
journal while a train is under way) and they can never be committed. The
journal has its own small file because the train writes it at every step:
rewriting the whole history each time made a train slower the longer the
project ran. ``State.train`` still holds it in memory. Readers need no lock
because writers replace the files by rename; writers hold an exclusive file
lock for the whole read-modify-write.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import operator
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import UnionType

from paradev.errors import StateError
from paradev.layout import JOURNAL_FILE, STATE_FILE, STORE_DIR
from paradev.limits import (
    MAX_AGENTS,
    MAX_ISSUE,
    MAX_STATE_BYTES,
    LimitError,
    check_text,
    read_bounded,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any, TypeVar
else:

    class _AnyType:
        """``typing.Any`` as the field types read at run time (``_checker``) name it, without
        importing typing (~4 ms of every ``status``); shown as typing shows it."""

        def __repr__(self) -> str:
            return "typing.Any"

    Any = _AnyType()

STATE_VERSION = 1
LOCK_TIMEOUT = 60.0
LOCKED = " is locked)"  # how a refusal for a lock held by another paradev ends


def refused_while_locked(lines: Iterable[str]) -> bool:
    """Whether a command's output says it was refused only because another paradev held a
    lock a moment: trying again soon may succeed, unlike after any other refusal."""
    return any(LOCKED in line for line in lines)


# Task lifecycle, in order. ``failed`` and ``interrupted`` may go back to ``in_progress``.
PLANNED, ASSIGNED, IN_PROGRESS, COMPLETED, FAILED, MERGED = (
    "planned",
    "assigned",
    "in_progress",
    "completed",
    "failed",
    "merged",
)
INTERRUPTED = "interrupted"  # its agent was stopped by a signal, or vanished with paradev
DROPPED = "dropped"  # never run it: run-batch and merge skip it; its commits go to a backup ref
GATE_FAILED = "gate_failed"  # the merge queue ejected it: its gate failed (log in ``error``)
OPEN_STATUSES = (PLANNED, ASSIGNED)
DONE_STATUSES = (COMPLETED, MERGED)
RESTARTABLE = (FAILED, INTERRUPTED)  # ended unfinished: run-batch starts it again


def now() -> str:
    """The current UTC time as ISO 8601 (one place to fake the clock in tests)."""
    from datetime import UTC, datetime  # here: check and status, which never ask, skip it

    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_time(text: str | None) -> datetime | None:
    """A state timestamp as an aware datetime; None when missing or unreadable."""
    if not text:
        return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def hours_between(start: str | None, end: str | None) -> float | None:
    begin, finish = parse_time(start), parse_time(end)
    if begin is None or finish is None:
        return None
    return max((finish - begin).total_seconds(), 0.0) / 3600


def task_end(record: TaskRecord) -> str | None:
    """When the task's last run ended: completed, or failed."""
    return record.completed_at or record.failed_at


class _Record:
    """Records compare by value and show their fields, as dataclasses do (see ``__slots__``)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return False
        getter = _FIELD_GETTERS[type(self).__name__]
        return bool(getter(self) == getter(other))

    def __repr__(self) -> str:
        name = type(self).__name__
        values = _FIELD_GETTERS[name](self)
        fields = ", ".join(f"{n}={v!r}" for n, v in zip(_FIELD_NAMES[name], values, strict=True))
        return f"{name}({fields})"

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


class TaskRecord(_Record):
    """What paradev knows about one task beyond the plan.

    A plain class with slots, not a dataclass: ``check`` and ``status`` read
    the state on every call, and ``dataclasses`` (with ``inspect``) is the
    slowest import of their start-up.
    """

    __slots__ = (  # noqa: RUF023  # in file order: the JSON keys and the positional order
        "issue",
        "agent",
        "status",
        "assigned_at",
        "started_at",
        "completed_at",
        "failed_at",
        "merged_at",
        "base_commit",
        "start_commit",
        "head_commit",
        "merged_commit",
        "files_modified",
        "log",
        "error",
        "left_uncommitted",
        "agent_pid",
        "agent_started",
        "dropped_at",
        "backup_ref",
        "cost_usd",
        "tokens",
        "host",
    )
    issue: int
    agent: int
    status: str
    assigned_at: str | None
    started_at: str | None
    completed_at: str | None
    failed_at: str | None
    merged_at: str | None
    base_commit: str | None
    start_commit: str | None  # the branch tip when the task started: its work begins here
    head_commit: str | None
    merged_commit: str | None
    files_modified: list[str]
    log: str | None
    error: str | None
    left_uncommitted: list[str]  # what run-batch did not commit
    agent_pid: int | None  # the launched agent: pid and start time (clock ticks since
    agent_started: int | None  # boot) tell it apart from a later process with that pid
    dropped_at: str | None
    backup_ref: str | None  # where a dropped task's commits are kept
    cost_usd: float | None  # what its agent reported, summed over its runs
    tokens: dict[str, int] | None  # {"input": n, "output": n}, as its agent reported
    host: str | None  # [agents] hosts: the host working on it (its task lease's holder)

    def __init__(
        self,
        issue: int,
        agent: int,
        status: str = PLANNED,
        assigned_at: str | None = None,
        started_at: str | None = None,
        completed_at: str | None = None,
        failed_at: str | None = None,
        merged_at: str | None = None,
        base_commit: str | None = None,
        start_commit: str | None = None,
        head_commit: str | None = None,
        merged_commit: str | None = None,
        files_modified: list[str] | None = None,
        log: str | None = None,
        error: str | None = None,
        left_uncommitted: list[str] | None = None,
        agent_pid: int | None = None,
        agent_started: int | None = None,
        dropped_at: str | None = None,
        backup_ref: str | None = None,
        cost_usd: float | None = None,
        tokens: dict[str, int] | None = None,
        host: str | None = None,
    ) -> None:
        self.issue = issue
        self.agent = agent
        self.status = status
        self.assigned_at = assigned_at
        self.started_at = started_at
        self.completed_at = completed_at
        self.failed_at = failed_at
        self.merged_at = merged_at
        self.base_commit = base_commit
        self.start_commit = start_commit
        self.head_commit = head_commit
        self.merged_commit = merged_commit
        self.files_modified = [] if files_modified is None else files_modified
        self.log = log
        self.error = error
        self.left_uncommitted = [] if left_uncommitted is None else left_uncommitted
        self.agent_pid = agent_pid
        self.agent_started = agent_started
        self.dropped_at = dropped_at
        self.backup_ref = backup_ref
        self.cost_usd = cost_usd
        self.tokens = tokens
        self.host = host


class AgentRecord(_Record):
    """An agent's work tree and branch as ``setup`` created them."""

    __slots__ = ("agent", "branch", "worktree")  # in file order
    agent: int
    branch: str
    worktree: str

    def __init__(self, agent: int, branch: str, worktree: str) -> None:
        self.agent = agent
        self.branch = branch
        self.worktree = worktree


class State(_Record):
    """The whole state file. Per-agent totals are derived from the task records."""

    __slots__ = (  # noqa: RUF023  # in file order
        "version",
        "agents",
        "tasks",
        "merge_order",
        "merge_order_from",
        "train",
        "merge_history",
        "conflict_snapshots",
        "updated_at",
    )

    def __init__(
        self,
        version: int = STATE_VERSION,
        agents: dict[int, AgentRecord] | None = None,
        tasks: dict[int, TaskRecord] | None = None,
        merge_order: list[int] | None = None,
        merge_order_from: dict[str, Any] | None = None,  # what it was computed from
        train: dict[str, Any] | None = None,
        merge_history: list[dict[str, Any]] | None = None,
        conflict_snapshots: list[dict[str, Any]] | None = None,  # for the report
        updated_at: str | None = None,
    ) -> None:
        self.version = version
        self.agents: dict[int, AgentRecord] = {} if agents is None else agents
        self.tasks: dict[int, TaskRecord] = {} if tasks is None else tasks
        self.merge_order: list[int] = [] if merge_order is None else merge_order
        self.merge_order_from: dict[str, Any] = {} if merge_order_from is None else merge_order_from
        self.train = train
        self.merge_history: list[dict[str, Any]] = [] if merge_history is None else merge_history
        self.conflict_snapshots: list[dict[str, Any]] = (
            [] if conflict_snapshots is None else conflict_snapshots
        )
        self.updated_at = updated_at

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
        """The state as JSON data, sharing lists and dicts with ``self``: dump it, do not keep it.

        ``dataclasses.asdict`` deep-copies every value: at 2,000 task records
        that cost more than writing the file.
        """
        return {
            "agents": {str(k): _fields_of(record) for k, record in self.agents.items()},
            "tasks": {str(k): _fields_of(record) for k, record in self.tasks.items()},
            **self._json_besides_records(),
        }

    def _json_besides_records(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "merge_order": self.merge_order,
            "merge_order_from": self.merge_order_from,
            "train": self.train,
            "merge_history": self.merge_history,
            "conflict_snapshots": self.conflict_snapshots,
            "updated_at": self.updated_at,
        }

    def copy(self) -> State:
        """An independent copy (records, lists and JSON values), far cheaper than deepcopy."""
        return State(
            version=self.version,
            agents={k: _copy_record(record) for k, record in self.agents.items()},
            tasks={k: _copy_record(record) for k, record in self.tasks.items()},
            merge_order=list(self.merge_order),
            merge_order_from=_copy_json(self.merge_order_from),
            train=_copy_json(self.train),
            merge_history=_copy_json(self.merge_history),
            conflict_snapshots=_copy_json(self.conflict_snapshots),
            updated_at=self.updated_at,
        )

    def shallow_copy(self) -> State:
        """A copy of the tables and top-level lists only, sharing records and JSON values."""
        return State(
            version=self.version,
            agents=dict(self.agents),
            tasks=dict(self.tasks),
            merge_order=list(self.merge_order),
            merge_order_from=dict(self.merge_order_from),
            train=self.train,
            merge_history=list(self.merge_history),
            conflict_snapshots=list(self.conflict_snapshots),
            updated_at=self.updated_at,
        )

    @classmethod
    def from_json(cls, data: Any) -> State:
        """Build the state from parsed JSON; ValueError names the first part of the wrong shape.

        Every value is checked here, so a file that parses but holds the wrong
        shape fails now, as one clear error, never later inside some command.
        """
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        version = data.get("version", STATE_VERSION)
        if type(version) is not int or version != STATE_VERSION:  # true == 1 in Python
            raise ValueError(
                f"state version {version!r} is not supported (expected {STATE_VERSION})"
            )
        train = data.get("train")
        if train is not None:
            _check_train(train)
        return cls(
            version=version,
            agents=_records(AgentRecord, data.get("agents", {}), "agents", "agent"),
            tasks=_records(TaskRecord, data.get("tasks", {}), "tasks", "issue"),
            merge_order=_expect(data.get("merge_order", []), list[int], "merge_order"),
            merge_order_from=_expect(
                data.get("merge_order_from", {}), dict[str, Any], "merge_order_from"
            ),
            train=train,
            merge_history=_expect(
                data.get("merge_history", []), list[dict[str, Any]], "merge_history"
            ),
            conflict_snapshots=_expect(
                data.get("conflict_snapshots", []), list[dict[str, Any]], "conflict_snapshots"
            ),
            updated_at=_expect(data.get("updated_at"), str | None, "updated_at"),
        )


if TYPE_CHECKING:
    R = TypeVar("R", AgentRecord, TaskRecord)


# Each record class's field names, and one attrgetter reading them all in C.
_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    cls.__name__: cls.__slots__ for cls in (AgentRecord, TaskRecord, State)
}
_FIELD_GETTERS = {name: operator.attrgetter(*names) for name, names in _FIELD_NAMES.items()}


def _without_default(cls: type[Any]) -> tuple[str, ...]:
    """The parameters of ``cls.__init__`` without a default (read from its code: no ``inspect``)."""
    init = vars(cls)["__init__"]
    names: tuple[str, ...] = init.__code__.co_varnames[1 : init.__code__.co_argcount]
    return names[: len(names) - len(init.__defaults__ or ())]


# The fields a record must have in the file: those without a default.
_REQUIRED_FIELDS = {cls.__name__: _without_default(cls) for cls in (AgentRecord, TaskRecord)}


def _fields_of(record: AgentRecord | TaskRecord) -> dict[str, Any]:
    """A record's fields as a dict, as ``asdict`` gives them but without copying each value."""
    name = type(record).__name__
    return dict(zip(_FIELD_NAMES[name], _FIELD_GETTERS[name](record), strict=True))


# The fields of each record class that hold a list or dict (of scalars, once checked).
_NESTED_FIELDS = {
    cls.__name__: tuple(
        name for name, hint in cls.__annotations__.items() if "list[" in hint or "dict[" in hint
    )
    for cls in (AgentRecord, TaskRecord)
}


def _copy_record(record: R) -> R:
    """A copy of a checked record: its fields in order, then its lists and dicts anew."""
    copy = type(record)(*_FIELD_GETTERS[type(record).__name__](record))
    for name in _NESTED_FIELDS[type(record).__name__]:
        value = getattr(copy, name)
        if value is not None:
            setattr(copy, name, value.copy())
    return copy


def _copy_json(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars): what deepcopy does, without its memo."""
    kind = type(value)
    if kind is dict:
        return {key: _copy_json(item) for key, item in value.items()}
    if kind is list:
        return [_copy_json(item) for item in value]
    return value


STATUSES = (
    PLANNED,
    ASSIGNED,
    IN_PROGRESS,
    COMPLETED,
    FAILED,
    INTERRUPTED,
    GATE_FAILED,
    MERGED,
    DROPPED,
)

# The journal keys the merge train reads without a default, with their types.
TRAIN_KEYS: dict[str, Any] = {
    "id": str,
    "base": str,
    "status": str,
    "queue": list[int],
    "landed": list[dict[str, Any]],
    "skipped": list[int],
    "agents": dict[str, Any],
    "gate": bool,
    "push": bool,
}

# Optional journal keys the train reads, with their types (a wrong type must not
# surface later as a TypeError inside the train).
TRAIN_OPTIONAL: dict[str, Any] = {
    "order": list[int],
    "squash": bool,
    "stop": dict[str, Any] | None,
    "base_start": str,
    "started_at": str,
    "driver": dict[str, Any] | None,
    "drivers_since": float,
    "mq": dict[str, Any] | None,  # the merge queue: settings, gate results (train.candidates)
    "committer": dict[str, str],  # GIT_COMMITTER_* of every commit the train writes
    "left_out": list[str],
    "stops": list[dict[str, Any]],
}

# The merge queue's part of the journal (``mq``): its settings, then what it adds as it goes.
TRAIN_MQ_KEYS: dict[str, Any] = {
    "parallel": int,
    "batch": int,
    "on_gate_failure": str,
    "retries": int,
    "on_conflict": str,
}
TRAIN_MQ_OPTIONAL: dict[str, Any] = {
    "started": bool,
    "committer": dict[str, str],
    "gate_runs": int,
    "landing": dict[str, Any] | None,
    "gates": dict[str, dict[str, Any]],
    "checked": dict[str, Any],
    "ejected": list[dict[str, Any]],
}

# Per-agent journal entries: every key the train reads, with its type.
TRAIN_AGENT_KEYS: dict[str, Any] = {
    "done": list[str],
    "step": str,
    "branch": str,
    "old_head": str,
    "backed_up_early": bool,
    "backup": str,
    "remote_head": str | None,
    "candidate": str,
    "wip": str | None,
    "onto": str,
    "rebase_from": str,
    "conflict_at": str | None,
    "resolved": list[str],
    "squash_from": str,
    "squashed": str,
    "trailers_from": str,
    "trailered": str,
    "gate_runs": int,
    "gate_head": str,
    "gate_log": str,
    "gate_passed": str,
    "gated": str,
    "advance_from": str,
    "advance_to": str,
    "landed": str,
    "issues": list[int],
    "resolver": dict[str, Any] | None,
    "again": int,
}


def _matches(value: Any, hint: Any) -> bool:
    """Whether JSON ``value`` has the type ``hint`` (int, str, X | None, list[X], dict[K, V])."""
    return _checker(hint)(value)


@functools.cache
def _checker(hint: Any) -> Callable[[Any], bool]:
    """A fast predicate for ``hint``, built once per type (status reads every record).

    Values of the exact types JSON gives are accepted by a type lookup (for a
    list, of the set of its items' types) at C speed; anything else is judged
    by the full rules, so the answer is the same either way.
    """
    if hint is Any:
        return lambda value: True
    exact = _exact_types(hint)
    if hint is None or hint is type(None):
        return lambda value: value is None
    origin, args = _origin(hint), _args(hint)
    if origin is UnionType:
        options = [_checker(arg) for arg in args]
        return lambda value: type(value) in exact or any(check(value) for check in options)
    if origin is list:
        item, items = _checker(args[0]), _exact_types(args[0])
        return lambda value: (
            isinstance(value, list) and (set(map(type, value)) <= items or all(map(item, value)))
        )
    if origin is dict:
        if args[1] is Any:
            return lambda value: isinstance(value, dict)
        entry, entries = _checker(args[1]), _exact_types(args[1])
        return lambda value: (
            isinstance(value, dict)
            and (set(map(type, value.values())) <= entries or all(map(entry, value.values())))
        )
    if hint is int:
        return lambda value: (
            type(value) is int or (isinstance(value, int) and not isinstance(value, bool))
        )
    if hint is float:
        return lambda value: (
            type(value) in exact or (isinstance(value, int | float) and not isinstance(value, bool))
        )
    return lambda value: type(value) is hint or isinstance(value, hint)


def _origin(hint: Any) -> Any:
    """``typing.get_origin`` for the types this module writes (``X | Y``, ``list[X]``,
    ``dict[K, V]``, plain classes), without importing typing."""
    return UnionType if isinstance(hint, UnionType) else getattr(hint, "__origin__", None)


def _args(hint: Any) -> tuple[Any, ...]:
    """``typing.get_args`` for the same types."""
    args: tuple[Any, ...] = getattr(hint, "__args__", ())
    return args


def _exact_types(hint: Any) -> frozenset[type]:
    """The types whose every value has type ``hint`` (a float may be written as an integer)."""
    if hint is None or hint is type(None):
        return frozenset({type(None)})
    origin, args = _origin(hint), _args(hint)
    if origin is UnionType:
        return frozenset().union(*map(_exact_types, args))
    if origin is dict and args[1] is Any:
        return frozenset({dict})
    if origin is not None or hint is Any:
        return frozenset()  # items to look at (Any is accepted before any lookup)
    return frozenset({int, float}) if hint is float else frozenset({hint})


def _expect(value: Any, hint: Any, where: str) -> Any:
    if not _matches(value, hint):
        raise ValueError(f"{where} is {_describe(value)}, expected {_type_name(hint)}")
    return value


def _describe(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not _args(hint):
        return {"str": "a string", "int": "an integer", "bool": "true or false"}.get(
            hint.__name__, hint.__name__
        )
    return str(hint).replace("typing.", "").replace("NoneType", "null")


def _records(cls: type[R], raw: Any, section: str, id_field: str) -> dict[int, R]:
    """``{"<id>": {...}}`` -> ``{id: record}``, each key equal to the record's own id."""
    if not isinstance(raw, dict):
        raise ValueError(f"{section} is {_describe(raw)}, expected an object")
    records: dict[int, R] = {}
    for key, value in raw.items():
        record = _record(cls, value, f"{section}.{key}")
        if str(getattr(record, id_field)) != key:
            raise ValueError(
                f"{section}.{key}.{id_field} is {getattr(record, id_field)!r}, expected {key}"
            )
        records[int(key)] = record
    return records


if TYPE_CHECKING:
    _FieldSpec = tuple[str, Any, Callable[[Any], bool], bool]
_FIELD_SPECS: dict[str, tuple[_FieldSpec, ...]] = {}


class _Shape:
    """What a record of one class that needs no field-by-field look looks like.

    (A plain class: a ``typing.NamedTuple`` costs ~0.2 ms of every start-up.)
    """

    __slots__ = ("groups", "names", "others", "required")

    def __init__(
        self,
        names: frozenset[str],  # every key is a field
        required: frozenset[str],  # and these are there
        groups: tuple[tuple[tuple[str, ...], frozenset[type]], ...],  # fields of these types
        others: tuple[tuple[str, Callable[[Any], bool]], ...],  # lists and dicts: own check
    ) -> None:
        self.names = names
        self.required = required
        self.groups = groups
        self.others = others


_SHAPES: dict[str, _Shape] = {}


def _shape(cls: type[Any]) -> _Shape:
    shape = _SHAPES.get(cls.__name__)
    if shape is None:
        groups: dict[frozenset[type], list[str]] = {}
        others, required = [], []
        for name, hint, check, needed in _field_specs(cls):
            if needed:
                required.append(name)
            exact = _exact_types(hint)
            if exact and _covers(hint):
                groups.setdefault(exact, []).append(name)
            else:
                others.append((name, check))
        shape = _SHAPES[cls.__name__] = _Shape(
            frozenset(_FIELD_NAMES[cls.__name__]),
            frozenset(required),
            tuple((tuple(names), kinds) for kinds, names in groups.items()),
            tuple(others),
        )
    return shape


def _covers(hint: Any) -> bool:
    """Whether ``hint`` is scalars only: no list or dict whose items need a look of their own."""
    options = _args(hint) if _origin(hint) is UnionType else (hint,)
    return all(_origin(option) is None for option in options)


def _plain(shape: _Shape, raw: dict[str, Any]) -> bool:
    """Whether ``raw`` holds only fields, each of its type: the common case, checked in C."""
    get = raw.get  # a missing field reads as None: accepted only where None is (its default)
    return (
        shape.required <= raw.keys() <= shape.names
        and all(set(map(type, map(get, names))) <= kinds for names, kinds in shape.groups)
        and all(check(get(name)) for name, check in shape.others)
    )


def _field_specs(cls: type[Any]) -> tuple[_FieldSpec, ...]:
    """(name, type, its check, required) of each field of a record class, built once."""
    specs = _FIELD_SPECS.get(cls.__name__)
    if specs is None:
        specs = _FIELD_SPECS[cls.__name__] = _build_field_specs(cls)
    return specs


def _build_field_specs(cls: type[Any]) -> tuple[_FieldSpec, ...]:
    required = _REQUIRED_FIELDS[cls.__name__]
    hints = {name: _hint(cls.__annotations__[name]) for name in _FIELD_NAMES[cls.__name__]}
    return tuple(
        (name, hints[name], _checker(hints[name]), name in required)
        for name in _FIELD_NAMES[cls.__name__]
    )


@functools.cache
def _hint(annotation: str) -> Any:
    """The type an annotation of this module names, evaluated once per distinct text.

    What ``typing.get_type_hints`` gives, at a fraction of its cost: it
    compiles and evaluates every field's text anew, ~1 ms of each ``check``.
    """
    return eval(annotation, globals())


def _record(cls: type[R], raw: Any, where: str) -> R:
    """One record with every field of the right type (unknown fields are ignored)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where} is {_describe(raw)}, expected an object")
    values = raw if _plain(_shape(cls), raw) else _field_values(cls, raw, where)
    if values.get("status", PLANNED) not in STATUSES:
        raise ValueError(f"{where}.status is {values['status']!r}, expected one of {STATUSES}")
    for name, limit in (("agent", MAX_AGENTS), ("issue", MAX_ISSUE)):
        if name in values and not 1 <= values[name] <= limit:
            raise ValueError(f"{where}.{name} is {values[name]}, expected 1 to {limit:,}")
    _check_usage(values, where)
    return cls(**values)


def _field_values(cls: type[R], raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The fields of ``raw``, each checked; ValueError names the first one that is wrong."""
    values: dict[str, Any] = {}
    for name, hint, check, required in _field_specs(cls):
        if name in raw:
            value = values[name] = raw[name]
            if not check(value):  # the message is built only for a wrong value
                _expect(value, hint, f"{where}.{name}")
        elif required:
            raise ValueError(f"{where}.{name} is missing")
    return values


def _check_usage(values: dict[str, Any], where: str) -> None:
    """A reported cost is a finite amount >= 0; tokens are exactly input and output counts."""
    cost = values.get("cost_usd")
    if cost is not None and not (math.isfinite(cost) and cost >= 0):
        raise ValueError(f"{where}.cost_usd is {cost!r}, expected a finite number >= 0")
    tokens = values.get("tokens")
    if tokens is not None and (sorted(tokens) != ["input", "output"] or min(tokens.values()) < 0):
        raise ValueError(
            f'{where}.tokens is {_describe(tokens)}, expected {{"input": n, "output": n}} '
            "with counts >= 0"
        )


def _check_train(train: Any) -> None:
    """The merge journal holds every key the train reads, each of the right type."""
    if not isinstance(train, dict):
        raise ValueError(f"train is {_describe(train)}, expected an object or null")
    _check_keys(train, TRAIN_KEYS, TRAIN_OPTIONAL, "train")
    if (mq := train.get("mq")) is not None:
        _check_keys(mq, TRAIN_MQ_KEYS, TRAIN_MQ_OPTIONAL, "train.mq")
    driver = train.get("driver")
    if driver is not None:
        for key, hint in (("pid", int), ("since", float), ("start", str | None)):
            _expect(driver.get(key), hint, f"train.driver.{key}")
    for index, entry in enumerate(train["landed"]):
        _expect(entry.get("agent"), int, f"train.landed[{index}].agent")
        _expect(entry.get("commit"), str, f"train.landed[{index}].commit")
    for key, entry in train["agents"].items():
        _expect(entry, dict[str, Any], f"train.agents.{key}")
        _expect(entry.get("done"), list[str], f"train.agents.{key}.done")
        for name, hint in TRAIN_AGENT_KEYS.items():
            if name in entry:
                _expect(entry[name], hint, f"train.agents.{key}.{name}")


def _check_keys(
    table: dict[str, Any], required: dict[str, Any], optional: dict[str, Any], where: str
) -> None:
    for key, hint in required.items():
        if key not in table:
            raise ValueError(f"{where}.{key} is missing")
        _expect(table[key], hint, f"{where}.{key}")
    for key, hint in optional.items():
        if key in table:
            _expect(table[key], hint, f"{where}.{key}")


def _apply_landings(state: State, journal: dict[str, Any]) -> None:
    """The tasks a train in progress landed, merged: it marks them in its journal alone."""
    for landing in journal.get("landed", []):
        issues, when = landing.get("issues"), landing.get("merged_at")
        for issue in issues if type(issues) is list else []:
            record = state.tasks.get(issue) if type(issue) is int else None
            if record is not None and record.status == COMPLETED:
                record = state.tasks[issue] = _copy_record(record)  # a view shares records
                record.status, record.merged_commit = MERGED, landing["commit"]
                record.merged_at = when if type(when) is str else now()


class StateStore:
    """Reads and changes ``<common_dir>/paradev/state.json``."""

    def __init__(self, common_dir: Path, recognise: Callable[[State], None] | None = None) -> None:
        self.dir = common_dir / STORE_DIR
        self.recognise = recognise  # adds what git knows and the file lacks (landed tasks)
        self.path = self.dir / STATE_FILE
        self.journal_path = self.dir / JOURNAL_FILE
        self.lock_path = self.dir / "state.lock"
        self._locks: dict[str, Any] = {}  # LockFile per lock file, re-entrant within a thread

    def read(self, recognise: bool = True) -> State:
        """The current state; empty when there is no file yet. Raises StateError if corrupt.

        ``recognise=False`` leaves out what git knows and the file lacks (landed
        tasks without a record): no git process, for a check of the file alone.
        """
        state = self._read_file()
        if recognise and self.recognise is not None:
            self.recognise(state)
        return state

    def view(self, recognise: bool = True) -> State:
        """The current state, as ``read`` gives it, for reading only: its records are shared.

        The file is read (and parsed when its bytes changed) as by ``read``, so a
        view is never stale; only the copy of every record is saved (at 2,000
        task records a copy cost as much as a train's git work at 10 branches).
        The record tables and top-level lists are the caller's own (records may be
        added); never change a record, or a list or dict inside one, in place.
        """
        state = self._read_file(shared=True)
        if recognise and self.recognise is not None:
            self.recognise(state)
        return state

    def _read_file(self, shared: bool = False) -> State:
        """state.json with the journal file's train (an old state.json may still hold one)."""
        state = self._read_state_file(shared)
        journal = self.read_journal()
        if journal is not None:
            state.train = journal
        if state.train is not None:  # in its own file, or in the state (shared with hosts)
            _apply_landings(state, state.train)
        return state

    def _read_state_file(self, shared: bool = False) -> State:
        """The state file, parsed and checked only when its bytes changed since this process
        last read or wrote it (a train reads it at every step); always a fresh copy, with
        ``shared`` one whose records are those of the parse kept (``view``)."""
        try:
            raw = self._read_bytes(self.path)
        except FileNotFoundError:
            return State()
        known, parsed = _PARSED.get(self.path, (None, None))
        if known != raw:
            parsed = None
        if parsed is None:
            data = self._parse(self.path, raw, within_limits=known == raw)
            try:
                parsed = State.from_json(data)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                raise self._corrupt(exc) from None
            _PARSED[self.path] = (raw, parsed)
        return parsed.shallow_copy() if shared else parsed.copy()

    def read_journal(self) -> dict[str, Any] | None:
        """The merge journal file, None when no train is under way (the state file not read)."""
        found, raw = self._read_json(self.journal_path)
        if not found:
            return None
        try:
            _check_train(raw)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise self._corrupt(exc, self.journal_path) from None
        journal: dict[str, Any] = raw
        return journal

    def _read_json(self, path: Path) -> tuple[bool, Any]:
        """(whether ``path`` exists, its parsed JSON); StateError if unreadable."""
        try:
            raw = self._read_bytes(path)
        except FileNotFoundError:
            return False, None
        return True, self._parse(path, raw)

    def _read_bytes(self, path: Path) -> bytes:
        """The bytes of ``path``; FileNotFoundError passes through, other errors are StateError."""
        try:
            return read_bounded(path, MAX_STATE_BYTES, "the file")
        except FileNotFoundError:
            raise
        except LimitError as exc:
            raise self._corrupt(exc, path) from None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc}") from None

    def _parse(self, path: Path, raw: bytes, within_limits: bool = False) -> Any:
        """JSON ``raw`` read from ``path``; ``within_limits``: this process wrote these bytes."""
        try:
            text = raw.decode("utf-8")
            beyond = None if within_limits else check_text(text, toml=False)
            if beyond:  # checked before json can recurse or int() refuse
                raise LimitError(f"{beyond.what} at line:column {beyond.where}")
            return json.loads(text)
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise self._corrupt(exc, path) from None

    def _corrupt(self, reason: Exception, path: Path | None = None) -> StateError:
        what = "merge journal" if path == self.journal_path else "state file"
        return StateError(
            f"{what} {path or self.path} is corrupt ({reason}); "
            "run 'paradev doctor --repair' or 'paradev reset' to move it aside"
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the exclusive state lock (re-entrant in one process), waiting up to a minute."""
        with self.exclusive(
            "state.lock",
            wait=LOCK_TIMEOUT,
            busy=f"another paradev holds the state for over {LOCK_TIMEOUT:.0f}s; "
            "wait for it to finish",
            note_owner=False,  # taken for every write: no extra file each time
        ):
            yield

    @contextmanager
    def exclusive(
        self, name: str, *, wait: float, busy: str, note_owner: bool = True
    ) -> Iterator[None]:
        """Hold lock file ``name`` in the state folder; raise StateError(``busy``) after ``wait`` s.

        The operating system releases it when the process ends, however it ends. With
        ``note_owner`` the holder's pid goes to ``<name>.pid``, for refusals to name it.
        """
        from paradev.lockfile import LockBusyError, LockFile

        self._make_dir()
        path = self.dir / name
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = LockFile(str(path), timeout=wait)
        first = not lock.is_locked
        try:
            lock.acquire()
        except LockBusyError:
            raise StateError(f"{busy} ({path}{LOCKED}") from None
        except OSError as exc:  # e.g. a folder where the lock file belongs
            raise StateError(f"cannot lock {path}: {exc.strerror or exc}; move it away") from None
        if first and note_owner:  # reset names a running merge or run-batch by it
            _owner_file(path).write_text(f"{os.getpid()}\n", encoding="utf-8")
        try:
            yield
        finally:
            lock.release()

    def lock_owner(self, name: str) -> int | None:
        """The pid that last took lock file ``name`` (the holder, while it is held)."""
        try:
            return int(_owner_file(self.dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @contextmanager
    def agent_lock(self, agent: int, holder: str, name_holder: bool = True) -> Iterator[None]:
        """Hold agent ``agent`` for ``holder`` (e.g. "paradev merge"), refusing at once if taken.

        run-batch and the merge train exclude each other per agent: one may
        land agent 1 while the other runs agent 2, never both on one agent.
        ``name_holder``: note the holder for others' refusals (a dry run leaves no trace).
        """
        note = self.dir / f"agent-{agent}.holder"
        try:
            held_by = note.read_text(encoding="utf-8").strip() or "another paradev"
        except OSError:
            held_by = "another paradev"
        with self.exclusive(
            f"agent-{agent}.lock",
            wait=0,
            busy=f"agent {agent} is busy: {held_by} holds it; wait for it to finish",
            note_owner=name_holder,
        ):
            with contextlib.suppress(OSError):  # the note only improves the message
                if name_holder:
                    note.write_text(f"{holder} (pid {os.getpid()})\n", encoding="utf-8")
            yield

    @contextmanager
    def leased(self, name: str) -> Iterator[None]:
        """Hold lease ``name`` across hosts: one machine has none (see paradev.shared)."""
        yield

    @property
    def host(self) -> str | None:
        """The host whose clone this is, when the state is shared by hosts (paradev.shared)."""
        return None

    def _make_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. a file named "paradev" in the git dir
            raise StateError(
                f"cannot create the state folder {self.dir}: {exc.strerror or exc}; move it away"
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
        """Replace state.json and the journal file as ``state`` says. Callers hold the lock.

        A journal that does not exist yet (a new train, or one migrated out of
        an old state.json) is written first, so no crash can lose it; otherwise
        the state goes first: a crash between the two leaves the journal one
        step behind the state, which the train redoes without harm.
        """
        state.updated_at = now()
        data = state._json_besides_records()
        del data["train"]  # kept in its own file
        known = _Parsed(*_PARSED.get(self.path, (None, None)))
        agents = _record_lines("agents", state.agents, known)
        tasks = _record_lines("tasks", state.tasks, known)
        lines = {
            "agents": [a.text for a in agents.values()],
            "tasks": [t.text for t in tasks.values()],
        }
        text = _state_text(data, lines)
        read_back = _read_back(data, agents, tasks)
        if state.train is not None and not self.journal_path.exists():
            self.write_journal(state.train)
            self._replace_state(text, read_back)
            return
        self._replace_state(text, read_back)
        if state.train is None:
            self.remove_journal()
        else:
            self.write_journal(state.train)

    def _replace_state(self, text: str, read_back: State | None) -> None:
        """Write state.json; its next read here copies ``read_back`` (what the file holds).

        A train marks tasks merged once per landing: parsing 2,000 records
        again after each of its own writes would cost more than the write.
        None: the next read parses the file (it skips the limit scan).
        """
        self._replace(self.path, text)
        _PARSED[self.path] = (text.encode("utf-8"), read_back)

    def remove_journal(self) -> None:
        """The train ended: no journal file means no train (the state file says the rest)."""
        self.journal_path.unlink(missing_ok=True)

    def write_journal(self, journal: dict[str, Any]) -> None:
        """Atomically replace the journal file alone: a train step costs the size of the train.

        Compact, so json's C encoder writes it (``indent`` runs the pure-Python one: at
        40 branches, a tenth of the train's time went into laying the journal out).
        """
        text = _COMPACT.encode(journal) + "\n"
        try:
            if self.journal_path.read_text(encoding="utf-8") == text:
                return  # unchanged (a state write that did not touch the train)
        except (OSError, ValueError):
            pass
        self._replace(self.journal_path, text)

    def begin_train(self, journal: dict[str, Any]) -> bool:
        """Write a new train's journal, unless a train began meanwhile (False): the journal
        file alone, under the state lock, the state file untouched."""
        with self.locked():
            if self.read_journal() is not None:
                return False
            self.write_journal(journal)
            return True

    def save_journal(self, journal: dict[str, Any]) -> None:
        """Write the journal under the state lock, the state file untouched."""
        with self.locked():
            self.write_journal(journal)

    def _replace(self, path: Path, text: str) -> None:
        """Atomically replace ``path`` (temp file, fsync, rename); only its owner reads it."""
        from paradev.atomic import write_atomic  # only writers need it: status never loads it

        self._make_dir()
        write_atomic(path, text, mode=0o600)

    def quarantine_if_corrupt(self) -> Path | None:
        """Move an unreadable state or journal file aside (``<name>.corrupt-<time>``); return where.

        Each file is judged alone: a corrupt journal never costs the task records.
        """
        with self.locked():
            moved = None
            for path, check in (
                (self.path, self._read_state_file),
                (self.journal_path, self.read_journal),
            ):
                try:
                    check()
                except StateError:
                    moved = path.with_name(f"{path.name}.corrupt-{_stamp()}")
                    os.replace(path, moved)
            return moved

    def reset(self) -> tuple[Path | None, Path | None]:
        """Start from an empty state; the old files are kept, never overwritten.

        Returns (where a corrupt file was moved, where a readable state was backed up).
        """
        import shutil  # only reset needs it

        with self.locked():
            aside = self.quarantine_if_corrupt()
            backup = None
            for path in (self.path, self.journal_path):
                if path.exists():
                    copy = path.with_name(f"{path.name}.bak-{_stamp()}")
                    shutil.copy2(path, copy)
                    backup = backup or copy
            self.write(State())
            return aside, backup


# Per state file: the bytes this process last read or wrote, and the state they hold (None
# until read). Only copies leave it, so what a caller changes never reaches it.
_PARSED: dict[Path, tuple[bytes, State | None]] = {}


def _state_text(data: dict[str, Any], records: dict[str, list[str]] | None = None) -> str:
    """The state file's text: one line per record, per history entry and per other key.

    ``json.dumps(indent=...)`` runs json's pure-Python encoder (a third of a
    second at 2,000 task records); dumping each line compactly stays in C.
    ``records``: the lines of the record sections, already made (``_record_lines``).
    """
    dump = _COMPACT.encode
    lines = []
    records = records or {}
    for key in sorted(data.keys() | records.keys()):
        value = data.get(key)
        if records.get(key):
            items = records[key]
        elif key in records:
            lines.append(f"  {dump(key)}: {{}}")
            continue
        elif type(value) is dict and value:
            items = [dump({k: v})[1:-1] for k, v in sorted(value.items())]  # json's key rules
        elif type(value) is list and value and type(value[0]) is dict:
            items = [dump(v) for v in value]
        else:
            lines.append(f"  {dump(key)}: {dump(value)}")
            continue
        brackets = "{}" if key in records or type(value) is dict else "[]"
        inner = ",\n    ".join(items)
        lines.append(f"  {dump(key)}: {brackets[0]}\n    {inner}\n  {brackets[1]}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


_COMPACT = json.JSONEncoder(sort_keys=True)


class _Line:
    """A record's line of the state file and what it was made from (plain: see ``_Shape``)."""

    __slots__ = ("kinds", "read", "text", "values")

    def __init__(
        self,
        values: tuple[Any, ...],  # the record's fields (lists and dicts copied)
        kinds: tuple[type, ...],  # their types: 1 == True, yet they dump apart
        text: str,  # ``"<id>": {...}``
        read: AgentRecord
        | TaskRecord
        | None,  # the record a read of the line gives (None: refused)
    ) -> None:
        self.values = values
        self.kinds = kinds
        self.text = text
        self.read = read


# Per (section, id): the record's line as last written. A train rewrites the state once per
# landing: only the records it changed are dumped (and read back) again.
_RECORD_LINES: dict[tuple[str, int], _Line] = {}


class _Parsed:
    """The state file as this process last parsed (or wrote) it: its bytes and its state.

    A process's first write of 2,000 records spent most of its time making
    their lines and reading them back: a record equal to the one parsed is
    written as the file's own line, and its parsed record is what a read of
    that line gives (parsed records never change in place: ``StateStore.view``).
    """

    def __init__(self, raw: bytes | None, state: State | None) -> None:
        self.raw, self.state = raw, state
        self._lines: dict[str, dict[str, str]] | None = None

    def record(self, section: str, key: int) -> AgentRecord | TaskRecord | None:
        if self.state is None:
            return None
        return (self.state.agents if section == "agents" else self.state.tasks).get(key)

    def line(self, section: str, key: int) -> str | None:
        """The record's line in the file (``"<id>": {...}``); None unless the file is laid out
        exactly as ``_state_text`` lays it out."""
        if self._lines is None:
            self._lines = self._file_lines()
        return self._lines.get(section, {}).get(str(key))

    def _file_lines(self) -> dict[str, dict[str, str]]:
        if self.raw is None or self.state is None:
            return {}
        try:
            text = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        found: dict[str, dict[str, str]] = {"agents": {}, "tasks": {}}
        section = None
        for line in text.split("\n"):
            if section is not None and line.startswith('    "'):
                member = line[4:].removesuffix(",")
                found[section][member[1 : member.find('"', 1)]] = member
            else:
                name = line[3:-4] if line.startswith('  "') and line.endswith('": {') else None
                section = name if name in found else None
        data = self.state._json_besides_records()
        if data["train"] is None:
            del data["train"]  # written in its own file
        lines = {name: list(members.values()) for name, members in found.items()}
        return found if _state_text(data, lines) == text else {}


def _record_lines(
    section: str,
    records: dict[int, AgentRecord] | dict[int, TaskRecord],
    parsed: _Parsed | None = None,
) -> dict[int, _Line]:
    """Each record's line of the state file, in the file's (string) key order.

    ``parsed``: the file as last parsed; a record equal to its parsed one keeps the
    file's line and is not read back (``_Parsed``).
    """
    lines = {}
    for key in sorted(records, key=str):
        record = records[key]
        name = type(record).__name__
        values = _FIELD_GETTERS[name](record)
        kinds = tuple(map(type, values))
        known = _RECORD_LINES.get((section, key))
        if known is None or known.kinds != kinds or known.values != values:
            same = parsed.record(section, key) if parsed else None
            if same is not None and not _same_values(same, values, kinds):
                same = None
            line = parsed.line(section, key) if parsed and same is not None else None
            if line is None:
                fields = dict(zip(_FIELD_NAMES[name], values, strict=True))
                line = _COMPACT.encode({str(key): fields})[1:-1]
            kept = tuple(v.copy() if type(v) in (list, dict) else v for v in values)
            read: AgentRecord | TaskRecord | None = (
                same
                if same is not None
                else _read_record(AgentRecord, "{" + line + "}", section)
                if type(record) is AgentRecord
                else _read_record(TaskRecord, "{" + line + "}", section)
            )
            known = _RECORD_LINES[(section, key)] = _Line(kept, kinds, line, read)
        lines[key] = known
    return lines


def _same_values(
    record: AgentRecord | TaskRecord, values: tuple[Any, ...], kinds: tuple[type, ...]
) -> bool:
    """Whether ``record`` holds exactly ``values`` of exactly ``kinds`` (1 == True == 1.0)."""
    theirs = _FIELD_GETTERS[type(record).__name__](record)
    return bool(theirs == values and tuple(map(type, theirs)) == kinds)


def _read_record(cls: type[R], text: str, section: str) -> R | None:
    """The record a read of ``{"<id>": {...}}`` gives; None when a read would refuse it."""
    id_field = "agent" if cls is AgentRecord else "issue"
    try:
        (record,) = _records(cls, json.loads(text), section, id_field).values()
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return record


def _read_back(
    data: dict[str, Any], agents: dict[int, _Line], tasks: dict[int, _Line]
) -> State | None:
    """The state a read of the file just written gives, made without parsing the whole file.

    Records come read back from their own lines; the rest goes through JSON
    once (small), so a tuple in memory comes back a list, as from the file.
    """
    try:
        state = State.from_json(json.loads(_COMPACT.encode(data)))
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    state.agents = {k: line.read for k, line in agents.items() if type(line.read) is AgentRecord}
    state.tasks = {k: line.read for k, line in tasks.items() if type(line.read) is TaskRecord}
    return state if (len(state.agents), len(state.tasks)) == (len(agents), len(tasks)) else None


def _stamp() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _owner_file(lock: Path) -> Path:
    return lock.with_name(lock.name + ".pid")
