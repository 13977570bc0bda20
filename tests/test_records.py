"""paradev.records: dataclasses' behaviour for the subset paradev uses, checked against it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from functools import cached_property
from typing import Any, NamedTuple

import pytest

from paradev import records
from paradev.records import MISSING, FrozenInstanceError, asdict, dataclass, field, fields


class Point(NamedTuple):
    x: int
    y: int


@dataclass
class Task:
    issue: int
    agent: int
    status: str = "planned"
    files: list[str] = field(default_factory=list)
    extra: dict[str, Any] | None = None


@dataclass(frozen=True)
class Frozen:
    name: str
    tags: tuple[str, ...] = ()

    @cached_property
    def shout(self) -> str:
        return self.name.upper()


@dataclass(slots=True)
class Slotted:
    agents: tuple[int, int]
    notes: list[str]

    @property
    def first(self) -> int:
        return self.agents[0]


def test_init_takes_positional_and_keyword_arguments_with_defaults_and_factories() -> None:
    one, two = Task(5, 2), Task(issue=6, agent=1, status="merged", files=["a"])
    assert (one.issue, one.agent, one.status, one.files, one.extra) == (5, 2, "planned", [], None)
    assert (two.status, two.files) == ("merged", ["a"])
    assert Task(1, 1).files is not Task(1, 1).files  # a fresh list each time
    with pytest.raises(TypeError):
        Task(5)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Task(5, 2, nope=1)  # type: ignore[call-arg]


def test_equality_repr_and_hash_behave_as_dataclasses_make_them() -> None:
    assert Task(1, 2) == Task(1, 2) and Task(1, 2) != Task(1, 3)
    assert Task(1, 2) != (1, 2, "planned", [], None)  # type: ignore[comparison-overlap]
    assert repr(Task(1, 2)) == "Task(issue=1, agent=2, status='planned', files=[], extra=None)"
    with pytest.raises(TypeError):
        hash(Task(1, 2))  # mutable records are unhashable
    assert hash(Frozen("a")) == hash(Frozen("a")) and {Frozen("a"), Frozen("a")} == {Frozen("a")}
    mutable = Task(1, 2)
    mutable.status = "merged"
    assert mutable.status == "merged"


def test_a_frozen_record_refuses_changes_but_caches_properties() -> None:
    record = Frozen("ab", ("t",))
    with pytest.raises(FrozenInstanceError):
        record.name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del record.name
    assert record.shout == "AB" and record.shout == "AB"


def test_a_slotted_record_has_no_instance_dict() -> None:
    record = Slotted((1, 2), [])
    assert record.first == 1 and not hasattr(record, "__dict__")
    with pytest.raises(AttributeError):
        record.other = 1  # type: ignore[attr-defined]
    assert Slotted.__slots__ == ("agents", "notes")


def test_fields_and_asdict_match_dataclasses() -> None:
    @dataclasses.dataclass
    class Reference:
        issue: int
        agent: int
        status: str = "planned"
        files: list[str] = dataclasses.field(default_factory=list)
        extra: dict[str, Any] | None = None

    ours = [(f.name, f.type, f.default, f.default_factory) for f in fields(Task)]
    theirs = [(f.name, f.type, f.default, f.default_factory) for f in dataclasses.fields(Reference)]
    normalise = {id(MISSING): "missing", id(dataclasses.MISSING): "missing"}
    assert [tuple(normalise.get(id(v), v) for v in row) for row in ours] == [
        tuple(normalise.get(id(v), v) for v in row) for row in theirs
    ]
    nested = Task(1, 2, files=["a"], extra={"k": [Frozen("n")], "p": Point(1, 2)})
    data = asdict(nested)
    assert data == {
        "issue": 1,
        "agent": 2,
        "status": "planned",
        "files": ["a"],
        "extra": {"k": [{"name": "n", "tags": ()}], "p": Point(1, 2)},
    }
    assert data["files"] is not nested.files  # a copy, as dataclasses.asdict makes


def test_a_field_without_default_after_one_with_default_is_refused() -> None:
    with pytest.raises(TypeError, match="without a default follows"):

        @dataclass
        class Bad:
            a: int = 1
            b: int  # type: ignore[misc]


def test_importing_state_and_conflicts_loads_neither_dataclasses_nor_inspect() -> None:
    probe = (
        "import sys, paradev.state; print('dataclasses' in sys.modules, 'inspect' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
    assert records.FIELDS == "__record_fields__"
