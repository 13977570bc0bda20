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
    import collections

    # What typing.NamedTuple refuses to see overwritten, and what it does not copy.
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults"}
        | {"_make", "_replace", "_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _RecordMeta(type):
        """Does what ``typing.NamedTupleMeta`` does, with the annotations kept as written."""

        def __new__(mcs, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
            if bases != (_Record,):
                raise TypeError("a record can only inherit from NamedTuple")
            annotations: dict[str, Any] = ns.get("__annotations__", {})
            defaults = [ns[name] for name in annotations if name in ns]
            if any(
                name not in ns for name in list(annotations)[len(annotations) - len(defaults) :]
            ):
                raise TypeError(f"{typename}: a field without a default follows one with a default")
            record = collections.namedtuple(
                typename, list(annotations), defaults=defaults, module=ns["__module__"]
            )
            record.__annotations__ = record.__new__.__annotations__ = annotations
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
                if key not in _SPECIAL and key not in record._fields:
                    setattr(record, key, value)
            return record

    _Record = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def NamedTuple(typename: str, fields: Any = None, /) -> Any:  # noqa: N802 (typing's name)
        """Only the class form is supported: ``class Point(NamedTuple): x: int``."""
        raise TypeError("use the class form: class Name(NamedTuple): field: type")

    NamedTuple.__mro_entries__ = lambda bases: (_Record,)
