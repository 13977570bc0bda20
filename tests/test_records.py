"""paradev.records: NamedTuple classes built without typing's checks of their annotations."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest

from paradev.records import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: str = ""

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)

    def moved(self, dx: int) -> Point:
        return self._replace(x=self.x + dx)


def test_a_record_behaves_as_a_typing_named_tuple() -> None:
    point = Point(3, -4)
    assert point == (3, -4, "") == Point(x=3, y=-4)
    assert (point.norm1, point.moved(1), point._asdict()) == (
        7,
        Point(4, -4),
        {"x": 3, "y": -4, "label": ""},
    )
    assert Point._fields == ("x", "y", "label") and Point._field_defaults == {"y": 0, "label": ""}
    assert (Point.__name__, Point.__module__, Point.__doc__) == ("Point", __name__, "A point.")
    assert repr(point) == "Point(x=3, y=-4, label='')"
    assert pickle.loads(pickle.dumps(point)) == point
    with pytest.raises(AttributeError):
        point.x = 1  # type: ignore[misc]


def test_annotations_stay_as_written_so_nothing_is_compiled() -> None:
    """typing.NamedTuple would compile each annotation into a ForwardRef; the records must not."""
    assert Point.__annotations__ == {"x": "int", "y": "int", "label": "str"}
    probe = (
        "import typing\n"
        "def refuse(self, *args, **kwargs):\n"
        "    raise SystemExit(f'ForwardRef({args[0]!r}) made')\n"
        "typing.ForwardRef.__init__ = refuse\n"
        "import paradev.git, paradev.plan, paradev.commands, paradev.conflicts, paradev.order\n"
        "import paradev.lifecycle, paradev.claims\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert (proc.returncode, proc.stderr) == (0, "")


def test_what_typing_refuses_is_refused() -> None:
    with pytest.raises(TypeError, match="a field without a default follows one with a default"):

        class Bad(NamedTuple):  # mypy refuses it too
            x: int = 0
            y: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="cannot overwrite NamedTuple attribute _make"):

        class Clash(NamedTuple):
            x: int

            def _make(self) -> None: ...  # type: ignore[misc]

    with pytest.raises(TypeError, match="use the class form"):
        NamedTuple("Pair", [("a", int)])


class Single(NamedTuple):
    only: str


class Other(NamedTuple):
    """Three fields, as Point: the two share one compiled ``__new__``, each with its names."""

    a: int
    b: int = 1
    c: int = 2


class Empty(NamedTuple):
    pass


@pytest.mark.parametrize(
    ("record", "fields", "defaults"),
    [
        (Point, ("x", "y", "label"), (0, "")),
        (Other, ("a", "b", "c"), (1, 2)),
        (Single, ("only",), None),
        (Empty, (), None),
    ],
)
def test_a_record_class_is_what_collections_namedtuple_builds(
    record: type, fields: tuple[str, ...], defaults: tuple[object, ...] | None
) -> None:
    import collections
    import inspect

    build: Any = collections.namedtuple  # with names known only at run time
    twin = build(record.__name__, fields, defaults=defaults)
    made: Any = record
    values = tuple(range(len(fields)))
    assert made(*values) == twin(*values) and repr(made(*values)) == repr(twin(*values))
    assert made(**dict(zip(fields, values, strict=True))) == values  # keywords: its own names
    assert (made._fields, made._field_defaults, made.__match_args__) == (
        twin._fields,
        twin._field_defaults,
        twin.__match_args__,
    )

    def parameters(cls: Any) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(cls).parameters.values()]

    assert parameters(made) == parameters(twin)
    assert made._make(values)._asdict() == twin._make(values)._asdict()
    assert made.__bases__ == (tuple,) and made.__slots__ == ()

    def overfull(cls: Any) -> object:
        return cls._make((*values, 9))

    def unknown_field(cls: Any) -> object:
        return cls(*values)._replace(zz=1)

    for call in (overfull, unknown_field):
        with pytest.raises((TypeError, ValueError)) as ours:
            call(made)
        with pytest.raises((TypeError, ValueError)) as theirs:
            call(twin)
        assert (type(ours.value), str(ours.value)) == (type(theirs.value), str(theirs.value))
    if fields:  # a missing argument is named alike
        with pytest.raises(TypeError) as ours:
            made()
        with pytest.raises(TypeError) as theirs:
            twin()
        assert str(ours.value) == str(theirs.value)
