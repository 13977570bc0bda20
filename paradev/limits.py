"""Bounds on what paradev reads (plan, state, merge journal), checked before any parser runs.

Without them bad input crashes or hangs paradev instead of being refused:
a parser recursing through 5,000 nested arrays (RecursionError), ``int()``
refusing a 5,000-digit number (ValueError), an issue number too long for a
file name (OSError), a loop over ``agents.count = 1_000_000_000`` agents (a
hang). Every bound is far above what a real plan or state needs.
"""

from __future__ import annotations

import math
import os
import stat

from paradev.errors import PreconditionError
from paradev.records import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import re

MAX_AGENTS = 1000  # agents.count
MAX_ISSUE = 10**9  # issue numbers (they become parts of file names)
MAX_PLAN_BYTES = 1_000_000  # plan.toml: 1 MB
MAX_STATE_BYTES = 64_000_000  # state.json, merge journal included: 64 MB
MAX_NESTING = 64  # arrays/tables/objects inside each other
MAX_DIGITS = 64  # digits in one number as written
MAX_PORT = 65535  # setup.port_base + n * port_step: the last TCP port
MAX_HOURS = 100_000  # per task: beyond it totals lose meaning (and 1e308 + 1e308 is inf)


class LimitError(ValueError):
    """The input exceeds a bound; ``str()`` says which and how to fix it."""


def read_bounded(path: str | os.PathLike[str], limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refused past ``limit`` bytes without reading more.

    A FIFO or device (``/dev/zero`` as a plan) would block or never end.
    FileNotFoundError and other OSErrors pass through to the caller.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open itself
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LimitError(f"{what} is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LimitError(f"{what} is larger than {_size(limit)}, the limit")
    return data


def _size(limit: int) -> str:
    return f"{limit // 1_000_000} MB" if limit >= 1_000_000 else f"{limit} bytes"


# What a scan skips: strings (a bracket or digit inside one means nothing) and comments.
# Written as "unrolled loops" so that a megabyte-long string is one fast regex step.
# Patterns are kept as text and compiled at first use (re's own cache): a command that
# never scans a file does not pay for compiling them at import.
_TOML_SKIP = (
    r'(?s)"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'  # multi-line basic string
    r"|'''[^']*(?:'(?!'')[^']*)*'''"  # multi-line literal string
    r'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*"  # comment
)
_JSON_SKIP = r'(?s)"[^"\\]*(?:\\.[^"\\]*)*"'
_LONG_NUMBER = rf"[0-9][0-9_]{{{MAX_DIGITS},}}"
_OPEN, _CLOSE = "[{", "]}"


class Beyond(NamedTuple):
    """Where text exceeds a bound (``line:col``), what is wrong, and how to fix it in a plan."""

    where: str
    what: str
    fix: str


def check_text(text: str, toml: bool) -> Beyond | None:
    """The first bound ``text`` exceeds; None when it is within every bound.

    Strings and comments are dropped first, so only real nesting and real
    numbers count; where the problem is gets worked out only when there is one.
    """
    import re  # at first use: a command that reads no file does not load it (~10 ms)

    skip = _TOML_SKIP if toml else _JSON_SKIP
    bare = re.sub(skip, "", text)
    if re.search(_LONG_NUMBER, bare):
        number = re.search(_LONG_NUMBER, re.sub(skip, _blank, text))
        return Beyond(
            _position(text, number.start() if number else 0),
            f"a number written with more than {MAX_DIGITS} digits",
            f"no value needs one (issue numbers go up to {MAX_ISSUE:,}): shorten it",
        )
    if _depth(bare) <= MAX_NESTING:
        return None
    return Beyond(
        _position(text, _too_deep_at(re.sub(skip, _blank, text))),
        f"arrays or tables nested more than {MAX_NESTING} levels deep",
        "no paradev file needs more than a few: flatten it",
    )


_PARENS = bytes.maketrans(b"[{]}", b"(())")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _depth(text: str) -> int:
    """How deep the brackets of ``text`` nest (an upper bound when some are unbalanced).

    Each round drops the innermost pairs at C speed, so a megabyte of
    brackets costs at most MAX_NESTING string scans, not a Python step per bracket.
    """
    parens = text.encode("utf-8", "surrogatepass").translate(_PARENS, _NOT_BRACKETS)
    rounds = 0
    while b"()" in parens and rounds <= MAX_NESTING:
        parens = parens.replace(b"()", b"")
        rounds += 1
    return rounds + parens.count(b"(")


def _blank(match: re.Match[str]) -> str:
    """A skipped string or comment as spaces, newlines kept (offsets stay right)."""
    return "\n".join(" " * len(part) for part in match.group().split("\n"))


def _too_deep_at(blank: str) -> int:
    """Offset of the bracket that goes one level past MAX_NESTING (only called when one does)."""
    depth = 0
    for offset, char in enumerate(blank):
        depth += 1 if char in _OPEN else -1 if char in _CLOSE else 0
        if depth > MAX_NESTING:
            return offset
    return 0


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    return f"{line}:{offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def shown(value: object, width: int = 60) -> str:
    """``repr(value)`` cut to ``width`` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


# -- numbers from the command line (argument types of the command table) --

_DECIMAL = r"(?i)[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?(nan|inf|infinity)"


def parse_hours(text: str | float) -> float:
    """Hours from the command line: a finite number >= 0, written as plain decimal digits.

    ``float`` alone would also take ``1_0`` (ten) or ``٣`` (Arabic three).
    """
    import re

    if isinstance(text, str) and not re.fullmatch(_DECIMAL, text.strip()):
        raise PreconditionError(f"hours must be a number, got {text!r}")
    try:
        hours = float(text)
    except (TypeError, ValueError):
        raise PreconditionError(f"hours must be a number, got {text!r}") from None
    if not math.isfinite(hours) or hours < 0:
        raise PreconditionError(f"hours must be a finite number >= 0, got {text!r}")
    if hours > MAX_HOURS:
        raise PreconditionError(f"hours must be at most {MAX_HOURS}, got {text!r}")
    return hours + 0.0  # -0 becomes 0


def _whole(text: str) -> bool:
    """``-?[0-9]+``: ASCII digits only (``int`` also takes ``1_0`` and other scripts' digits)."""
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()


def parse_int(text: str | int, what: str) -> int:
    """A positive whole number from the command line, in plain ASCII digits."""
    if isinstance(text, str) and not _whole(text.strip()):
        raise PreconditionError(f"{what} must be a whole number, got {shown(text)}")
    if isinstance(text, str) and len(text.strip().lstrip("-0")) > len(str(MAX_ISSUE)):
        raise PreconditionError(f"{what} must be at most {MAX_ISSUE:,}, got {shown(text)}")
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise PreconditionError(f"{what} must be a whole number, got {shown(text)}") from None
    if value <= 0:
        raise PreconditionError(f"{what} must be > 0, got {text!r}")
    if value > MAX_ISSUE:  # agents stop at 1,000 and issues at 10^9 (paradev.limits)
        raise PreconditionError(f"{what} must be at most {MAX_ISSUE:,}, got {text!r}")
    return value
