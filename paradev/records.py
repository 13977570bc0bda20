"""``NamedTuple`` classes built at run time without typing's checks of their annotations.

``typing.NamedTuple`` turns each field's annotation (a string, under ``from
__future__ import annotations``) into a ``ForwardRef``, which calls
``compile()``: the first call builds the ``ast`` module's classes (~3 ms) and
every field costs more, ~7 ms of every ``paradev status`` in all. paradev
never reads a record's field types at run time, so its modules import
``NamedTuple`` from here; mypy sees ``typing.NamedTuple`` (the import is
under ``TYPE_CHECKING``) and checks the records as before.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)

__all__ = ["NamedTuple"]

if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    import sys
    from collections import _tuplegetter  # type: ignore[attr-defined]  # namedtuple's fields
    from types import FunctionType

    # What typing.NamedTuple refuses to see overwritten, and what it does not copy.
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults"}
        | {"_make", "_replace", "_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    # The methods ``collections.namedtuple`` writes for each class, written once for all:
    # each reads its class's own ``_fields``.
    @classmethod  # type: ignore[misc]
    def _make(cls: Any, iterable: Any) -> Any:
        """Make a new record from a sequence or iterable."""
        result = tuple.__new__(cls, iterable)
        if len(result) != len(cls._fields):
            raise TypeError(f"Expected {len(cls._fields)} arguments, got {len(result)}")
        return result

    def _replace(self: Any, /, **kwds: Any) -> Any:
        """Return a new record replacing specified fields with new values."""
        result = self._make(map(kwds.pop, self._fields, self))
        if kwds:
            raise ValueError(f"Got unexpected field names: {list(kwds)!r}")
        return result

    def __repr__(self: Any) -> str:  # noqa: N807 (a method of every record)
        """Return a nicely formatted representation string."""
        fields = ", ".join(
            f"{name}={value!r}" for name, value in zip(self._fields, self, strict=True)
        )
        return f"{self.__class__.__name__}({fields})"

    def _asdict(self: Any) -> dict[str, Any]:
        """Return a new dict which maps field names to their values."""
        return dict(zip(self._fields, self, strict=True))

    def __getnewargs__(self: Any) -> tuple[Any, ...]:  # noqa: N807
        """Return self as a plain tuple.  Used by copy and pickle."""
        return tuple(self)

    _METHODS = {
        "_make": _make,
        "_replace": _replace,
        "__repr__": __repr__,
        "_asdict": _asdict,
        "__getnewargs__": __getnewargs__,
    }
    _NEW_CODE: dict[int, Any] = {}  # field count -> a compiled ``__new__``, arguments renamed

    def _new(typename: str, fields: tuple[str, ...], defaults: list[Any]) -> Any:
        """``__new__`` as namedtuple compiles it, compiled once per field count (``compile``
        is most of what a record class costs): each class renames the arguments."""
        code = _NEW_CODE.get(len(fields))
        if code is None:
            names = ", ".join(f"a{i}" for i in range(len(fields))) + (
                "," if len(fields) == 1 else ""
            )
            lambda_ = eval(  # text of our own making, as in collections.namedtuple
                f"lambda _cls, {names}: _tuple_new(_cls, ({names}))",
                {"_tuple_new": tuple.__new__, "__builtins__": {}},
            )
            code = _NEW_CODE[len(fields)] = lambda_.__code__
        globals_ = {"_tuple_new": tuple.__new__, "__builtins__": {}}
        new = FunctionType(code.replace(co_varnames=("_cls", *fields)), globals_, "__new__")
        new.__defaults__ = tuple(defaults) or None
        new.__doc__ = f"Create new instance of {typename}({', '.join(fields)})"
        new.__qualname__ = f"{typename}.__new__"
        return new

    def _record_class(typename: str, annotations: dict[str, Any], ns: dict[str, Any]) -> Any:
        """What ``collections.namedtuple`` builds, with the class body's own attributes."""
        fields = tuple(map(sys.intern, annotations))
        defaults = [ns[name] for name in fields if name in ns]
        namespace: dict[str, Any] = {
            "__doc__": f"{typename}({', '.join(fields)})",
            "__module__": ns["__module__"],
            "__slots__": (),
            "_fields": fields,
            "_field_defaults": dict(
                zip(fields[len(fields) - len(defaults) :], defaults, strict=True)
            ),
            "__new__": _new(typename, fields, defaults),
            **_METHODS,
            "__match_args__": fields,
        }
        for index, name in enumerate(fields):
            namespace[name] = _tuplegetter(index, sys.intern(f"Alias for field number {index}"))
        for key, value in ns.items():
            if key in _PROHIBITED:
                raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in annotations:
                namespace[key] = value
        record = type(typename, (tuple,), namespace)
        record.__annotations__ = record.__new__.__annotations__ = annotations
        return record

    class _RecordMeta(type):
        """Does what ``typing.NamedTupleMeta`` does, with the annotations kept as written."""

        def __new__(mcs, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if bases != (_Record,):
                raise TypeError("a record can only inherit from NamedTuple")
            annotations: dict[str, Any] = ns.get("__annotations__", {})
            defaults = [name for name in annotations if name in ns]
            if any(
                name not in ns for name in list(annotations)[len(annotations) - len(defaults) :]
            ):
                raise TypeError(f"{typename}: a field without a default follows one with a default")
            return _record_class(typename, annotations, ns)

    _Record = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def NamedTuple(typename: str, fields: Any = None, /) -> Any:  # noqa: N802 (typing's name)
        """Only the class form is supported: ``class Point(NamedTuple): x: int``."""
        raise TypeError("use the class form: class Name(NamedTuple): field: type")

    NamedTuple.__mro_entries__ = lambda bases: (_Record,)
