"""Input limits: what would crash or hang a parser is refused first, with one clear line."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from paradev.errors import PreconditionError
from paradev.limits import (
    MAX_NESTING,
    MAX_STATE_BYTES,
    LimitError,
    check_text,
    parse_int,
    read_bounded,
    shown,
)
from tests.conftest import PLAN
from tests.helpers import Result

Cli = Callable[..., Result]
Snapshot = Callable[[], dict[str, object]]


# -- the scan -------------------------------------------------------------------------------


def test_real_nesting_is_measured_and_brackets_in_strings_and_comments_are_not() -> None:
    assert check_text(PLAN, toml=True) is None
    inside = '"' + "[" * 5000 + '"'
    assert check_text(f"a = {inside}\nb = '{'{' * 5000}'\n# {'[' * 5000}\n", toml=True) is None
    assert check_text(f"a = \"\"\"\n{'[' * 5000}\n\"\"\"\nb = '''{'{' * 99}'''\n", True) is None
    assert check_text(json.dumps({"k[": ["[" * 5000, {"x": [1]}]}), toml=False) is None
    ok = "a = " + "[" * MAX_NESTING + "]" * MAX_NESTING
    assert check_text(ok, toml=True) is None
    deep = check_text("\n\na = " + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), True)
    assert deep is not None
    assert (deep.where, deep.what) == (
        f"3:{5 + MAX_NESTING}",
        f"arrays or tables nested more than {MAX_NESTING} levels deep",
    )
    unclosed = check_text('{"a": ' + "[" * 5000, toml=False)  # a parser would recurse anyway
    assert unclosed is not None and unclosed.where == f"1:{6 + MAX_NESTING}"  # "{" counts


def test_numbers_with_thousands_of_digits_are_found_where_they_are() -> None:
    found = check_text('title = "1234"\n\nissue = 1' + "0" * 5000 + "\n", toml=True)
    assert found is not None
    assert found.where == "3:9" and "more than 64 digits" in found.what
    assert check_text("x = 1_" + "0_" * 40 + "0", toml=True) is not None
    assert check_text('{"issue": 1' + "0" * 4999 + "}", toml=False) is not None
    assert check_text('{"t": "' + "9" * 5000 + '"}', toml=False) is None  # digits in a string
    assert check_text("issue = 1_000_000_000\nhours = 0.25\nwhen = 1979-05-27", True) is None


def test_read_bounded_refuses_big_files_and_what_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 11)
    assert read_bounded(path, 11, "f") == b"x" * 11
    with pytest.raises(LimitError, match=r"^f is larger than 10 bytes, the limit$"):
        read_bounded(path, 10, "f")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(LimitError, match="is not a regular file"):
        read_bounded(fifo, 10, "it")  # returns at once: no writer is waited for
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10, "it")


def test_shown_cuts_long_values_to_one_short_line() -> None:
    assert shown("abc") == "'abc'"
    assert shown("x" * 500) == "'" + "x" * 56 + "..."
    assert len(shown(list(range(1000)))) == 60


def test_command_line_numbers_are_bounded_before_int_parses_them() -> None:
    with pytest.raises(PreconditionError, match=r"^ISSUE must be at most 1,000,000,000, got '9"):
        parse_int("9" * 5000, "ISSUE")
    with pytest.raises(PreconditionError, match=r"^ISSUE must be at most 1,000,000,000"):
        parse_int("1000000001", "ISSUE")
    assert parse_int("0001000000000", "ISSUE") == 10**9


# -- through the commands: the plan --------------------------------------------------------

DEEP = "[" * 5000 + "]" * 5000
BAD_PLANS = {
    "deep-array": (
        PLAN.replace("count = 3", f"count = 3\ncommand = {DEEP}"),
        r"plan\.toml:7:\d+: arrays or tables nested more than 64 levels deep; .*: flatten it",
    ),
    "deep-inline-table": (
        PLAN.replace("[gate]", "[gate]\nx = " + "{a = " * 3000 + "1" + "}" * 3000),
        r"plan\.toml:9:\d+: arrays or tables nested more than 64 levels",
    ),
    "5000-digit-integer": (
        PLAN.replace("count = 3", "count = 1" + "0" * 5000),
        r"plan\.toml:6:9: a number written with more than 64 digits; .*: shorten it",
    ),
    "261-digit-issue": (
        PLAN.replace("issue = 13", "issue = 1" + "0" * 260),
        r"plan\.toml:\d+:\d+: a number written with more than 64 digits",
    ),
    "a-billion-agents": (
        PLAN.replace("count = 3", "count = 1_000_000_000"),
        r"agents\.count: expected an integer from 1 to 1,000, got 1000000000",
    ),
    "issue-beyond-1e9": (
        PLAN.replace("issue = 13", "issue = 1_000_000_001"),
        r"tasks\[2\]\.issue: expected an issue number from 1 to 1,000,000,000",
    ),
    "dependency-beyond-1e9": (
        PLAN.replace("depends_on = [11]", "depends_on = [10_000_000_000]"),
        r"depends_on: expected a list of issue numbers \(each from 1 to 1,000,000,000\)",
    ),
    "long-odd-key": (
        PLAN.replace("[gate]", '[gate]\n"a\\nb' + "x" * 5000 + '" = 1'),
        r"gate\.'a\\nbx+\.\.\.: unknown key",
    ),
    "long-value": (
        PLAN.replace('base = "main"', "base = " + json.dumps(["x" * 50] * 1000)),
        r"project\.base: expected a string, got \['x{50}', 'x\.\.\.$",
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_PLANS.values(), ids=BAD_PLANS.keys())
def test_a_plan_beyond_the_limits_is_refused_in_one_line(
    repo: Path, cli: Cli, snapshot: Snapshot, text: str, expected: str
) -> None:
    (repo / "plan.toml").write_text(text, encoding="utf-8")
    before = snapshot()
    for command in (["status"], ["setup"], ["start", "1"], ["assign", "1", "7", "t", "1"]):
        result = cli(*command)
        assert result.code == 2, (command, result)
        assert result.err.startswith("paradev: ") and result.err.count("\n") == 1, result.err
        assert re.search(expected, result.err.rstrip("\n")), result.err
        assert len(result.err) < 400
    assert snapshot() == before


def test_the_highest_agent_number_still_has_its_branch_checked_against_base(
    repo: Path, cli: Cli
) -> None:
    """The check works from the names, so a thousand agents cost what three do."""
    plan = PLAN.replace("count = 3", "count = 1000").replace(
        'base = "main"', 'base = "team/agent-1000"\nbranch_prefix = "team/agent-"'
    )
    (repo / "plan.toml").write_text(plan, encoding="utf-8")
    result = cli("status")
    assert result.code == 2
    assert "agent 1000's branch 'team/agent-1000' is the base branch" in result.err
    (repo / "plan.toml").write_text(plan.replace("agent-1000", "agent-1001/x"), encoding="utf-8")
    assert "is the base branch" not in cli("estimate").err
    (repo / "plan.toml").write_text(plan.replace("agent-1000", "agent-07"), encoding="utf-8")
    assert cli("estimate").code == 0  # agent 7's branch is agent-7, not agent-07


# -- through the commands: the state and its merge journal ------------------------------------


def _journal(**changes: object) -> dict[str, object]:
    return {
        "id": "20260101T000000Z",
        "base": "main",
        "status": "running",
        "queue": [1],
        "landed": [],
        "skipped": [],
        "agents": {"1": {"done": [], "step": "rebase"}},
        "gate": True,
        "push": False,
        **changes,
    }


BAD_STATES = {
    "deep-nesting": (
        '{"version": 1, "merge_history": ' + DEEP + "}",
        r"arrays or tables nested more than 64 levels deep at line:column 1:\d+",
    ),
    "5000-digit-integer": (
        '{"version": 1, "merge_order": [1' + "0" * 5000 + "]}",
        r"a number written with more than 64 digits at line:column 1:\d+",
    ),
    "issue-beyond-1e9": (
        json.dumps({"tasks": {"10000000000": {"issue": 10**10, "agent": 1}}}),
        r"tasks\.10000000000\.issue is 10000000000, expected 1 to 1,000,000,000",
    ),
    "agent-beyond-1000": (
        json.dumps({"tasks": {"5": {"issue": 5, "agent": 1001}}}),
        r"tasks\.5\.agent is 1001, expected 1 to 1,000",
    ),
    "journal-deep": (
        json.dumps({"train": _journal()}).replace('"step": "rebase"', '"step": ' + DEEP),
        r"nested more than 64 levels deep",
    ),
    "journal-huge-agent": (
        json.dumps({"train": _journal()}).replace('"queue": [1]', '"queue": [1' + "0" * 300 + "]"),
        r"a number written with more than 64 digits",
    ),
}


def _write_state(repo: Path, text: str | bytes) -> Path:
    path = repo / ".git" / "paradev" / "state.json"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(("text", "expected"), BAD_STATES.values(), ids=BAD_STATES.keys())
def test_a_state_beyond_the_limits_is_refused_in_one_line(
    repo: Path, cli: Cli, snapshot: Snapshot, text: str, expected: str
) -> None:
    path = _write_state(repo, text)
    before = snapshot()
    for command in (["status"], ["merge", "--continue"], ["start", "1"]):
        result = cli(*command)
        assert result.code == 2, (command, result)
        assert result.err.startswith(f"paradev: state file {path} is corrupt ("), result.err
        assert re.search(expected, result.err), result.err
        assert result.err.endswith("or 'paradev reset' to move it aside\n")
        assert result.err.count("\n") == 1 and len(result.err) < 400
    assert snapshot() == before
    assert cli("reset").code == 0  # and reset moves it aside
    assert (path.parent / "state.json").read_text().startswith("{")
    (aside,) = path.parent.glob("state.json.corrupt-*")
    assert aside.read_bytes() == text.encode()


def test_a_state_file_beyond_the_size_limit_is_not_read(repo: Path, cli: Cli) -> None:
    path = _write_state(repo, b"")
    with path.open("wb") as handle:  # sparse: no 64 MB written to the disk
        handle.truncate(MAX_STATE_BYTES + 1)
    result = cli("status")
    assert result.code == 2
    assert f"state file {path} is corrupt (the file is larger than 64 MB, the limit)" in result.err
