"""Record classes like ``dataclasses`` makes them, at a fraction of the import cost.

``import dataclasses`` loads ``inspect`` (with ast, dis, tokenize and more)
and each class it builds compiles six methods: together ~15% of the work of
``paradev status`` and ``check``. The records those commands build (the
state's) use this module instead: the same decorator, ``field``, ``fields``,
``asdict`` and ``MISSING`` for the subset paradev uses (defaults, default
factories, ``frozen``, ``slots``); one method (``__init__``) is compiled
per class, the others are shared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_C = TypeVar("_C", bound=type)
FIELDS = "__record_fields__"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assigning to a field of a frozen record."""


class Field:
    """One field: its name, annotation and default (a value or a factory)."""

    __slots__ = ("default", "default_factory", "name", "type")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING) -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A field with a default or a factory (``field(default_factory=list)``)."""
    return Field(default, default_factory)


def fields(record: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in declaration order."""
    found: tuple[Field, ...] = getattr(record, FIELDS)
    return found


def asdict(record: Any) -> dict[str, Any]:
    """The record as a dict, records, lists, tuples and dicts inside it copied in turn."""
    return {f.name: _copied(getattr(record, f.name)) for f in fields(record)}


def _copied(value: Any) -> Any:
    if hasattr(type(value), FIELDS):
        return asdict(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_copied(item) for item in value))
    if isinstance(value, list | tuple):
        return type(value)(_copied(item) for item in value)
    if isinstance(value, dict):
        return type(value)((_copied(k), _copied(v)) for k, v in value.items())
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    import copy

    return copy.deepcopy(value)


@overload
def dataclass(cls: _C, /) -> _C: ...


@overload
def dataclass(*, frozen: bool = False, slots: bool = False) -> Callable[[_C], _C]: ...


@dataclass_transform(field_specifiers=(field, Field))
def dataclass(cls: Any = None, /, *, frozen: bool = False, slots: bool = False) -> Any:
    """``@dataclass``, ``@dataclass(frozen=True)``, ``@dataclass(slots=True)``: see the module."""

    def make(cls: Any) -> Any:
        return _make(cls, frozen, slots)

    return make if cls is None else make(cls)


def _make(cls: Any, frozen: bool, slots: bool) -> Any:
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063 - inspect is what we avoid
    declared: list[Field] = []
    for name, kind in own.items():
        if "ClassVar" in str(kind):
            continue
        default = cls.__dict__.get(name, MISSING)
        spec = default if isinstance(default, Field) else Field(default)
        spec.name, spec.type = name, kind
        declared.append(spec)
        if isinstance(default, Field):  # as dataclasses: a plain default stays a class attribute
            if spec.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, spec.default)
    if slots:
        body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        for spec in declared:
            body.pop(spec.name, None)
        body["__slots__"] = tuple(spec.name for spec in declared)
        cls = type(cls)(cls.__name__, cls.__bases__, body)
    setattr(cls, FIELDS, tuple(declared))
    cls.__init__ = _init(cls, declared, frozen)
    cls.__repr__ = _repr
    cls.__eq__ = _eq
    if frozen:
        cls.__setattr__ = _refuse_set
        cls.__delattr__ = _refuse_delete
        cls.__hash__ = _hash
    else:
        cls.__hash__ = None  # mutable and comparable: unhashable, as dataclasses makes it
    return cls


def _init(cls: Any, declared: list[Field], frozen: bool) -> Callable[..., None]:
    """``__init__`` compiled for these fields: as fast as the one dataclasses writes."""
    names: dict[str, Any] = {"_MISSING": MISSING, "_set": object.__setattr__}
    params, lines = ["self"], []
    for spec in declared:
        name = spec.name
        if spec.default_factory is not MISSING:
            names[f"_factory_{name}"] = spec.default_factory
            params.append(f"{name}=_MISSING")
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
        else:
            if spec.default is not MISSING:
                names[f"_default_{name}"] = spec.default
                params.append(f"{name}=_default_{name}")
            else:
                params.append(name)
            value = name
        lines.append(f"_set(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
    defaults = ["=" in param for param in params[1:]]
    if defaults != sorted(defaults):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    source = f"def __init__({', '.join(params)}):\n    " + "\n    ".join(lines or ["pass"])
    exec(source, names)
    init: Callable[..., None] = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _values(record: Any) -> tuple[Any, ...]:
    return tuple(getattr(record, f.name) for f in fields(record))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: Any) -> Any:  # bool, or NotImplemented
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _refuse_set(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_delete(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")
