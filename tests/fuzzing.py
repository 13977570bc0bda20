"""Hypothesis strategies for damaged plans and states (tests/test_fuzz.py, bench/fuzz.py).

Each strategy starts from a valid file and damages it the ways real files
get damaged or attacked: flipped bytes, deep nesting, numbers with
thousands of digits, values of the wrong type, NUL characters, or an
entirely random TOML/JSON document. Each draws ``(kind, bytes)`` so a
report can say which family of input was slowest or failed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tomlkit
from hypothesis import assume
from hypothesis import strategies as st

from tests.conftest import PLAN

# The test plan with every section written out, so wrong types reach every key.
FULL_PLAN = (
    PLAN.replace(
        "count = 3\n",
        'count = 3\ncommand = ["agent", "--prompt", "{prompt_file}"]\ntimeout = 600\n',
    )
    + """
[merge]
squash = false
push = false
on_conflict = "stop"

[hooks]
on_start = "echo started"

[estimate]
overhead = 0.5
currency = "EUR"
"""
)

# A valid state with every part the readers check: agents, tasks, order, journal, history.
FULL_STATE: dict[str, Any] = {
    "version": 1,
    "agents": {"1": {"agent": 1, "branch": "parallel-dev/agent-1", "worktree": "/nowhere/a1"}},
    "tasks": {
        "11": {
            "issue": 11,
            "agent": 1,
            "status": "completed",
            "started_at": "2026-01-01T00:00:00+00:00",
            "head_commit": "0" * 40,
            "files_modified": ["src/app.py"],
        },
        "12": {"issue": 12, "agent": 2, "status": "in_progress", "log": "/nowhere/12.log"},
    },
    "merge_order": [1, 2],
    "train": {
        "id": "20260101T000000Z",
        "base": "main",
        "status": "stopped",
        "queue": [1, 2],
        "landed": [{"agent": 1, "commit": "1" * 40}],
        "skipped": [],
        "agents": {"2": {"done": ["backup"], "step": "rebase"}},
        "gate": True,
        "push": False,
    },
    "merge_history": [{"id": "20251231T000000Z", "landed": [3], "skipped": []}],
    "updated_at": "2026-01-01T00:00:00+00:00",
}
STATE_TEXT = json.dumps(FULL_STATE, indent=2)

PLAN_KEYS = ["project", "agents", "count", "batches", "tasks", "agent", "issue", "title", "hours"]
PLAN_KEYS += ["depends_on", "files", "base", "branch_prefix", "worktrees", "gate", "command"]
STATE_KEYS = ["version", "agents", "tasks", "train", "issue", "agent", "status", "queue"]
STATE_KEYS += ["landed", "done", "merge_order", "merge_history", "files_modified"]

_LINE_VALUE = re.compile(r"^(\s*[A-Za-z_]+\s*=\s*)(.+)$", re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _keys(known: list[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(known) | st.text(min_size=1, max_size=8)


def scalars(huge: bool = True) -> st.SearchStrategy[Any]:
    ints = st.integers() if not huge else st.integers() | st.integers(-(10**30), 10**30)
    return (
        ints | st.floats(allow_nan=True, allow_infinity=True) | st.booleans() | st.text(max_size=20)
    )


def values(known: list[str]) -> st.SearchStrategy[Any]:
    """Random nested data whose keys are often ones the reader knows."""
    return st.recursive(
        scalars(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(_keys(known), inner, max_size=4)
        ),
        max_leaves=12,
    )


def _sizes(largest: int) -> st.SearchStrategy[int]:
    """Any size up to ``largest``, the ones past each limit often (Hypothesis favours small)."""
    return st.integers(0, largest) | st.sampled_from([63, 64, 65, 100, 1000, 4300, largest])


@st.composite
def _flips(draw: st.DrawFn, text: str) -> bytes:
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def _nesting(draw: st.DrawFn) -> str:
    """Brackets or inline tables nested up to 6,000 deep, sometimes left unclosed."""
    depth = draw(_sizes(6000)) or 1
    closed = draw(st.integers(0, depth))
    if draw(st.booleans()):
        return "[" * depth + "1" + "]" * closed
    return "{a = " * depth + "1" + "}" * closed


@st.composite
def _huge_number(draw: st.DrawFn) -> str:
    digits = "1" + "0" * draw(_sizes(6000))
    return draw(st.sampled_from([digits, "-" + digits, "0." + digits, digits + "e99999"]))


def _at_random_line(draw: st.DrawFn, text: str, line: str) -> str:
    lines = text.split("\n")
    lines.insert(draw(st.integers(0, len(lines))), line)
    return "\n".join(lines)


def _replace_match(draw: st.DrawFn, pattern: re.Pattern[str], text: str, new: str) -> str:
    matches = list(pattern.finditer(text))
    match = matches[draw(st.integers(0, len(matches) - 1))]
    group = match.lastindex or 0
    return text[: match.start(group)] + new + text[match.end(group) :]


def _toml_value(value: Any) -> str:
    return str(tomlkit.item(value).as_string())


@st.composite
def plan_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes) of a damaged plan.toml."""
    text = FULL_PLAN
    kind = draw(st.sampled_from(["flip", "nesting", "huge", "type", "nul", "random"]))
    if kind == "flip":
        return kind, draw(_flips(text))
    if kind == "nesting":
        nested = draw(_nesting())
        if draw(st.booleans()):
            return kind, _replace_match(draw, _LINE_VALUE, text, nested).encode()
        return kind, _at_random_line(draw, text, "x = " + nested).encode()
    if kind == "huge":
        return kind, _replace_match(draw, _NUMBER, text, draw(_huge_number())).encode()
    if kind == "type":
        value = draw(values(PLAN_KEYS))
        try:
            literal = _toml_value(value)
        except Exception:  # a value tomlkit cannot write inline: draw another
            assume(False)
        return kind, _replace_match(draw, _LINE_VALUE, text, literal).encode()
    if kind == "nul":
        at = draw(st.integers(0, len(text)))
        return kind, (text[:at] + draw(st.sampled_from(["\0", "\\u0000"])) + text[at:]).encode()
    document = draw(st.dictionaries(_keys(PLAN_KEYS), values(PLAN_KEYS), max_size=5))
    try:
        return kind, tomlkit.dumps(document).encode()
    except Exception:  # e.g. an array of tables inside an inline array: draw another
        assume(False)
        raise


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document where a value sits."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    document[path[0]] = _set(document[path[0]], path[1:], value)
    return document


_SENTINEL = "__paradev_fuzz__"


@st.composite
def state_inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes) of a damaged state.json (its merge journal included)."""
    kind = draw(st.sampled_from(["flip", "nesting", "huge", "type", "nul", "random"]))
    if kind == "flip":
        return kind, draw(_flips(STATE_TEXT))
    if kind == "random":
        return kind, json.dumps(draw(values(STATE_KEYS))).encode()
    document = json.loads(STATE_TEXT)
    paths = _paths(document)
    path = paths[draw(st.integers(0, len(paths) - 1))]
    if kind == "type":
        return kind, json.dumps(_set(document, path, draw(values(STATE_KEYS)))).encode()
    if kind == "nul":
        text = draw(st.sampled_from(["\0", "a\0b", "\0" * 3]))
        return kind, json.dumps(_set(document, path, text)).encode()
    marked = json.dumps(_set(document, path, _SENTINEL))
    if kind == "nesting":
        nested = draw(_nesting()).replace("{a = ", '{"a": ')
        return kind, marked.replace(f'"{_SENTINEL}"', nested).encode()
    return kind, marked.replace(f'"{_SENTINEL}"', draw(_huge_number())).encode()
