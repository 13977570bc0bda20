"""paradev.records: NamedTuple classes built without typing's checks of their annotations."""

from __future__ import annotations

import pickle
import subprocess
import sys

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
