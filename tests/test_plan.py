"""plan.toml: defaults, every validation error, and layout-keeping edits."""

from __future__ import annotations

import datetime
import graphlib
import math
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from paradev import plan as plan_mod
from paradev.errors import PlanError
from paradev.limits import MAX_PLAN_BYTES
from paradev.plan import SCHEMA, Plan, add_task, insert_task, load, parse
from tests.conftest import PLAN
from tests.helpers import Result

MINIMAL = """\
[[batches]]
  [[batches.tasks]]
  agent = 1
  issue = 1
  title = "Only task"
  hours = 1
"""


def test_every_key_but_the_tasks_has_a_default(tmp_path: Path) -> None:
    plan = parse(MINIMAL, tmp_path / "plan.toml", tmp_path / "project")
    assert plan.settings == {
        section: {key: spec.default for key, spec in keys.items()}
        for section, keys in SCHEMA.items()
    }
    assert plan.base == "main"
    assert plan.remote == ""
    assert plan.agent_count == 3
    assert plan.agent_command == []
    assert plan.agent_timeout == 5400
    assert plan.instructions == ""
    assert plan.gate_command == ""
    assert plan.gate_timeout == 1800
    assert (plan.squash, plan.push, plan.on_conflict) == (False, False, "stop")
    assert [plan.hook(h) for h in ("on_start", "on_complete", "on_merge")] == ["", "", ""]
    assert plan.branch(2) == "parallel-dev/agent-2"
    assert plan.worktree(2, tmp_path / "project") == tmp_path / "project-worktrees" / "agent-2"
    (task,) = plan.tasks()
    assert task.batch == "batch-1"
    assert (task.files, task.depends_on, task.prompt, task.hours) == ((), (), "", 1.0)


def test_an_empty_plan_is_valid_and_has_no_tasks(tmp_path: Path) -> None:
    plan = parse("", tmp_path / "plan.toml")
    assert list(plan.tasks()) == []
    assert plan.batches == ()


def test_the_test_plan_reads_in_plan_order(tmp_path: Path) -> None:
    plan = parse(PLAN, tmp_path / "plan.toml", tmp_path / "project")
    assert [t.issue for t in plan.tasks()] == [11, 12, 13, 21]
    assert [t.issue for t in plan.tasks_for(1)] == [11, 21]
    later = plan.task(21)
    assert later is not None and later.depends_on == (11,)
    assert plan.batch("second") is not None
    assert plan.task(99) is None


def test_a_full_plan_reads_every_key(tmp_path: Path) -> None:
    text = """\
[project]
base = "trunk"
worktrees = "/elsewhere/{repo}-wt"
branch_prefix = "team/a"
remote = "origin"
[agents]
count = 5
command = ["my-agent", "--prompt-file", "{prompt_file}"]
timeout = 60
instructions = "STANDARDS.md"
[gate]
command = ["pytest", "-q"]
timeout = 30.5
[merge]
squash = true
push = true
on_conflict = "agent"
[hooks]
on_start = "echo start"
on_complete = "echo done"
on_merge = "echo merged"
[[batches]]
name = "b"
  [[batches.tasks]]
  agent = 5
  issue = 7
  title = "T"
  hours = 0
  files = ["src/*.py"]
  depends_on = []
  prompt = "be careful"
"""
    plan = parse(text, tmp_path / "plan.toml", tmp_path / "proj")
    assert plan.base == "trunk" and plan.remote == "origin" and plan.agent_count == 5
    assert plan.branch(3) == "team/a3"
    assert plan.worktree(1, tmp_path / "proj") == Path("/elsewhere/proj-wt/agent-1")
    assert plan.agent_command == ["my-agent", "--prompt-file", "{prompt_file}"]
    assert plan.gate_command == ["pytest", "-q"] and plan.gate_timeout == 30.5
    assert (plan.squash, plan.push, plan.on_conflict) == (True, True, "agent")
    assert plan.hook("on_merge") == "echo merged"
    task = plan.task(7)
    assert task is not None
    assert (task.files, task.prompt, task.hours) == (("src/*.py",), "be careful", 0.0)


# -- every bad plan: exit 2, one clear line (or the report), nothing changed ------------------


def _replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


def _append(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


def _prepend(extra: str) -> Callable[[str], str]:
    return lambda text: extra + text


FIRST_HOURS = "hours = 2.0"  # the first task's hours line
T0 = "batches[0].tasks[0]"

BAD_PLANS: list[tuple[str, Callable[[str], str], str]] = [
    # syntax errors carry line and column
    ("syntax", _replace("count = 3", "count = = 3"), r"plan\.toml:6:\d+: TOML syntax error"),
    ("syntax-bom", _prepend("\ufeff"), r"plan\.toml:1:1: the file starts with a byte-order mark"),
    ("syntax-unclosed", _append('[[batches]\nname = "x"\n'), r"plan\.toml:\d+:\d+: TOML syntax"),
    # unknown keys at every level
    ("unknown-top", _prepend("colour = 1\n"), r"colour: unknown key \(expected one of: .*project"),
    ("unknown-project", _prepend('[project]\nbasee = "x"\n'), r"project\.basee: unknown key \(did"),
    ("unknown-agents", _replace("count = 3", "count = 3\ncuont = 3"), r"agents\.cuont: unknown"),
    ("unknown-gate", _replace('command = ""', 'comand = ""'), r"gate\.comand: unknown key"),
    ("unknown-merge", _prepend("[merge]\nsqash = true\n"), r"merge\.sqash: unknown key"),
    ("unknown-hooks", _prepend("[hooks]\non_strt = 'x'\n"), r"hooks\.on_strt: unknown key"),
    ("unknown-batch", _replace('name = "first"', 'nmae = "first"'), r"batches\[0\]\.nmae: unknown"),
    (
        "unknown-task",
        _replace(FIRST_HOURS, FIRST_HOURS + "\nhourz = 1"),
        rf"{re.escape(T0)}\.hourz: unknown key \(did you mean 'hours'\?\)",
    ),
    # wrong types
    (
        "type-count",
        _replace("count = 3", 'count = "3"'),
        r"agents\.count: expected an integer from 1 to 1,000",
    ),
    ("type-base", _replace('base = "main"', "base = 1"), r"project\.base: expected a string"),
    ("type-section", _replace('[project]\nbase = "main"', "project = 5"), r"project: expected a"),
    ("type-hours", _replace(FIRST_HOURS, 'hours = "2"'), r"tasks\[0\]\.hours: expected a finite"),
    ("type-agent", _replace("agent = 1\n", "agent = 1.5\n"), r"tasks\[0\]\.agent: expected an int"),
    (
        "type-issue",
        _replace("issue = 13", 'issue = "13"'),
        r"tasks\[2\]\.issue: expected an issue number from 1 to 1,000,000,000",
    ),
    ("type-title", _replace('title = "Add the status command"', "title = 5"), r"\.title: expected"),
    ("type-files", _replace(FIRST_HOURS, FIRST_HOURS + '\nfiles = "a.py"'), r"\.files: expected"),
    ("type-deps", _replace("depends_on = [11]", 'depends_on = ["11"]'), r"\.depends_on: expected"),
    ("type-squash", _prepend('[merge]\nsquash = "yes"\n'), r"merge\.squash: expected true or"),
    ("type-choice", _prepend('[merge]\non_conflict = "x"\n'), r"on_conflict: expected one of"),
    (
        "type-leftovers",
        _replace("count = 3", 'count = 3\ncommit_leftovers = "some"'),
        r"agents\.commit_leftovers: expected one of 'tracked', 'all', 'none'",
    ),
    ("type-timeout", _replace('command = ""', "timeout = -5"), r"gate\.timeout: expected a finite"),
    ("type-command", _replace("count = 3", "count = 3\ncommand = 5"), r"agents\.command: expected"),
    ("type-tasks", _append('\n[[batches]]\nname = "3rd"\ntasks = 3\n'), r"\[2\]\.tasks: expected"),
    ("missing-title", _replace('title = "Add the status command"\n', ""), r"\.title: missing"),
    ("empty-title", _replace('title = "Add the status command"', 'title = " "'), r"non-empty"),
    # agent out of range
    ("agent-high", _replace("agent = 3", "agent = 4"), r"agent 4 is outside 1\.\.3"),
    ("agent-zero", _replace("agent = 3", "agent = 0"), r"\.agent: expected an integer > 0"),
    # hours: negative, NaN, inf
    ("hours-negative", _replace(FIRST_HOURS, "hours = -1.0"), r"hours: expected a finite number"),
    ("hours-nan", _replace(FIRST_HOURS, "hours = nan"), r"hours: expected a finite number >= 0"),
    ("hours-inf", _replace(FIRST_HOURS, "hours = inf"), r"hours: expected a finite number >= 0"),
    (
        "hours-huge",
        _replace(FIRST_HOURS, "hours = 1e308"),
        r"hours: expected a number of hours from 0",
    ),
    ("hours-text", _replace(FIRST_HOURS, 'hours = "two"'), r"hours: expected a finite number"),
    # issues and dependencies
    ("duplicate", _replace("issue = 13", "issue = 12"), r"issue #12 appears twice in the plan"),
    ("unknown-dep", _replace("depends_on = [11]", "depends_on = [99]"), r"#99 is not in the plan"),
    (
        "cycle",
        lambda text: text.replace(FIRST_HOURS, FIRST_HOURS + "\ndepends_on = [12]", 1).replace(
            "hours = 1.5", "hours = 1.5\ndepends_on = [11]", 1
        ),
        r"dependency cycle #11 -> #12 -> #11",
    ),
    ("self-dep", _replace(FIRST_HOURS, FIRST_HOURS + "\ndepends_on = [11]"), r"cycle #11 -> #11"),
    (
        "later-dep",
        _replace("hours = 1.5", "hours = 1.5\ndepends_on = [21]"),
        r"tasks\[1\]\.depends_on: issue #21 is in a later batch, so #12 could never start",
    ),
    ("dup-batch", _replace('name = "second"', 'name = "first"'), r"duplicate batch name 'first'"),
    # branch names and the worktree root
    ("bad-base", _replace('base = "main"', 'base = "ma..in"'), r"project\.base: 'ma\.\.in' is not"),
    ("bad-prefix", _prepend('[project]\nbranch_prefix = "a b/"\n'), r"branch_prefix: 'a b/1'"),
    ("bad-prefix-lock", _prepend('[project]\nbranch_prefix = "x.lock/"\n'), r"branch_prefix"),
    ("bad-remote", _prepend('[project]\nremote = "my remote"\n'), r"project\.remote: 'my remote'"),
    (
        "unknown-placeholder",
        _replace("count = 3", 'count = 3\ncommand = ["x", "{prompt_fle}", "{}"]'),
        r"agents\.command: unknown placeholder \{prompt_fle\} \(known: \{prompt_file\}",
    ),
    (
        "nul-title",
        _replace('title = "Add the status command"', 'title = "a\\u0000b"'),
        rf"{re.escape(T0)}\.title: contains a NUL character",
    ),
    (
        "nul-hook",
        _prepend('[hooks]\non_start = "echo \\u0000"\n'),
        r"hooks\.on_start: contains a NUL character",
    ),
    (
        "prefix-is-base",
        _replace('base = "main"', 'base = "agent-2"\nbranch_prefix = "agent-"'),
        r"agent 2's branch 'agent-2' is the base branch",
    ),
    (
        "prefix-under-base",
        _prepend('[project]\nbranch_prefix = "main/"\n'),
        r"branch 'main/1' cannot exist beside base 'main'",
    ),
    (
        "base-under-branch",
        _replace('base = "main"', 'base = "a/3/b"\nbranch_prefix = "a/"'),
        r"branch 'a/3' cannot exist beside base 'a/3/b'",
    ),
    ("root-inside", _prepend('[project]\nworktrees = "wt"\n'), r"wt is inside the repository"),
    ("root-is-repo", _prepend('[project]\nworktrees = "."\n'), r"inside the repository"),
]


def _fix_duplicate_tables(text: str) -> str:
    """Merge a prepended ``[project]``/``[merge]`` table into the one the plan already has."""
    for header in ("[project]\n",):
        first = text.find(header)
        second = text.find(header, first + 1)
        if first != -1 and second != -1:
            text = text[:second] + text[second + len(header) :]
    return text


@pytest.mark.parametrize(
    ("edit", "expected"),
    [pytest.param(edit, expected, id=name) for name, edit, expected in BAD_PLANS],
)
def test_a_bad_plan_stops_every_command_with_one_clear_line(
    repo: Path,
    cli: Callable[..., Result],
    snapshot: Callable[[], dict[str, object]],
    edit: Callable[[str], str],
    expected: str,
) -> None:
    (repo / "plan.toml").write_text(_fix_duplicate_tables(edit(PLAN)), encoding="utf-8")
    before = snapshot()
    for command in (["setup"], ["status"], ["assign", "1", "77", "New", "1"], ["start", "1"]):
        result = cli(*command)
        assert result.code == 2, (command, result)
        assert re.search(expected, result.err), result.err
        assert result.err.startswith("paradev: ") and result.err.count("\n") == 1, result.err
        assert "Traceback" not in result.err
        assert snapshot() == before


def test_every_problem_is_reported_at_once(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    text = (
        PLAN.replace(FIRST_HOURS, "hours = -2.0", 1)
        .replace("agent = 3", "agent = 9")
        .replace("depends_on = [11]", "depends_on = [404]")
        .replace("count = 3", "count = 3\nbogus = 1")
    )
    (repo / "plan.toml").write_text(text, encoding="utf-8")
    before = snapshot()
    result = cli("setup")
    assert result.code == 2
    lines = result.err.splitlines()
    assert lines[0].endswith("plan.toml: 4 problems:")
    assert sorted(line.removeprefix("  - ").split(" (expected")[0] for line in lines[1:]) == [
        "agents.bogus: unknown key",
        'batch "first", task #11: batches[0].tasks[0].hours: expected a finite number >= 0, '
        "got -2.0",
        'batch "first", task #13: batches[0].tasks[2].agent: agent 9 is outside 1..3 '
        "(raise agents.count or pick another agent)",
        'batch "second", task #21: batches[1].tasks[0].depends_on: issue #404 is not in the plan',
    ]
    assert "Traceback" not in result.err
    assert snapshot() == before


def test_a_missing_plan_says_how_to_create_one(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    (repo / "plan.toml").unlink()
    before = snapshot()
    result = cli("status")
    assert result.code == 2
    assert result.err == (
        f"paradev: {repo / 'plan.toml'} not found; "
        "create one with 'paradev init' (the commented example) or set PARADEV_PLAN\n"
    )
    assert snapshot() == before


def test_paradev_plan_points_at_another_file(
    repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = repo.parent / "elsewhere.toml"
    other.write_text(PLAN.replace("count = 3", "count = 2").replace("agent = 3", "agent = 2"))
    monkeypatch.setenv("PARADEV_PLAN", str(other))
    result = cli("status", "--json")
    assert result.code == 0, result.err
    assert list(result.json()["agents"]) == ["1", "2"]


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(PlanError, match=r"byte 0 is not UTF-8 .*; save the file as UTF-8$"):
        load(path)
    path.unlink()
    os.mkfifo(path)  # would block a plain read forever
    with pytest.raises(
        PlanError,
        match=r"plan\.toml is not a regular file; a plan is a text file of at most 1 MB: check",
    ):
        load(path)
    with pytest.raises(PlanError, match="/dev/zero is not a regular file"):
        load(Path("/dev/zero"))  # endless
    path.unlink()
    path.write_text("# " + "x" * MAX_PLAN_BYTES + "\n")
    with pytest.raises(PlanError, match=r"plan\.toml is larger than 1 MB, the limit; a plan is"):
        load(path)


def test_syntax_errors_give_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    with pytest.raises(PlanError) as caught:
        parse('[project]\nbase = "main"\nremote = origin\n', path)
    assert str(caught.value).startswith(f"{path}:3:10: TOML syntax error: ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("hours", [0, 0.25, 3, 1e3])
def test_good_hours(tmp_path: Path, hours: float) -> None:
    plan = parse(MINIMAL.replace("hours = 1", f"hours = {hours}"), tmp_path / "p.toml")
    assert next(plan.tasks()).hours == hours


def test_validated_plans_are_finite(tmp_path: Path) -> None:
    for text in ("nan", "+inf", "-inf", "-0.5"):
        with pytest.raises(PlanError):
            parse(MINIMAL.replace("hours = 1", f"hours = {text}"), tmp_path / "p.toml")
    assert math.isfinite(next(parse(MINIMAL, tmp_path / "p.toml").tasks()).hours)


# -- add_task: the file is only inserted into ------------------------------------------------

ODD_LAYOUT = """\
# Team plan -- keep this comment!
[project]   # trailing comment
base    =   "main"      # odd spacing kept
worktrees = '../{repo}-worktrees'  # literal string kept

[agents]
count=3

# a comment between sections

[[batches]]
name = 'one'   # batch comment
    [[batches.tasks]]      # task comment
    agent = 1
    issue = 5
    title = '''multi
line literal'''
    hours = 1_0.0
    files = [
        "a.py",   # in-array comment
        "b.py",
    ]

[[batches]]
name = "two"

[[batches.tasks]]
agent = 2
issue = 6
title = "Two"
hours = 1e0
# trailing comment at the very end"""


def _inserted(before: str, after: str) -> str:
    """The text ``after`` adds to ``before``, asserting that nothing else changed."""
    prefix = 0
    while prefix < len(before) and before[prefix] == after[prefix]:
        prefix += 1
    suffix = len(before) - prefix
    assert after.endswith(before[prefix:]), "text after the insertion changed"
    return after[prefix : len(after) - suffix]


TITLE = "He said \"hi\" $(rm -rf ~) `id` \\ 'x'\nsecond line\ttab é 漢字 🎉"


def _block(indent: str) -> str:
    title = tomlkit.item(TITLE).as_string()
    return (
        f"{indent}[[batches.tasks]]\n{indent}agent = 3\n{indent}issue = 42\n"
        f"{indent}title = {title}\n{indent}hours = 2.5\n"
    )


@pytest.mark.parametrize(
    ("batch", "expected"),
    [
        # after the last task; the file had no final newline
        (None, "\n\n" + _block("    ")),
        # at the end of the first batch, before the next [[batches]] header
        ("one", _block("    ") + "\n"),
        ("new-batch", '\n\n[[batches]]\nname = "new-batch"\n' + _block("    ")),
    ],
)
def test_golden_insert_keeps_every_other_byte(
    tmp_path: Path, batch: str | None, expected: str
) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(ODD_LAYOUT, encoding="utf-8")
    plan = add_task(path, None, agent=3, issue=42, title=TITLE, hours=2.5, batch=batch)
    after = path.read_text(encoding="utf-8")
    assert _inserted(ODD_LAYOUT, after) == expected
    task = plan.task(42)
    assert task is not None and task.title == TITLE and task.hours == 2.5
    assert task.batch == (batch or "two")
    reread = tomlkit.parse(after).unwrap()
    assert reread["batches"][0]["tasks"][0]["title"] == "multi\nline literal"
    added = next(t for b in reread["batches"] for t in b.get("tasks", []) if t["issue"] == 42)
    assert added == {"agent": 3, "issue": 42, "title": TITLE, "hours": 2.5}


def test_insert_into_the_test_plan_reads_well(tmp_path: Path) -> None:
    fields = {"agent": 2, "issue": 99, "title": "New", "hours": 1.0}
    text = insert_task(PLAN, tmp_path / "plan.toml", fields, "first")
    block = '  [[batches.tasks]]\n  agent = 2\n  issue = 99\n  title = "New"\n  hours = 1.0\n'
    anchor = '  hours = 1.0\n\n[[batches]]\nname = "second"'
    assert anchor.replace("\n\n[[", "\n\n" + block + "\n[[") in text
    assert _inserted(PLAN, text) == block + "\n"
    text = insert_task(PLAN, tmp_path / "plan.toml", fields, "second")
    assert text == PLAN + "\n" + block


@pytest.mark.parametrize(
    "text",
    ["", "# only a comment\n", '[project]\nbase = "main"', "[[batches]]\nname = 'x'\n"],
)
def test_insert_into_a_plan_without_tasks(tmp_path: Path, text: str) -> None:
    out = insert_task(text, tmp_path / "plan.toml", {"agent": 1, "issue": 1, "title": "T"}, None)
    assert out.startswith(text)
    data = tomlkit.parse(out).unwrap()
    assert data["batches"][-1]["tasks"] == [{"agent": 1, "issue": 1, "title": "T"}]
    assert "\n\n\n" not in out


def test_insert_finds_unnamed_batches_by_their_default_name(tmp_path: Path) -> None:
    text = "[[batches]]\n[[batches.tasks]]\nagent = 1\nissue = 1\ntitle = 'a'\nhours = 1\n"
    out = insert_task(text, tmp_path / "p.toml", {"agent": 1, "issue": 2}, "batch-1")
    assert [len(b["tasks"]) for b in tomlkit.parse(out).unwrap()["batches"]] == [2]


def test_insert_into_inline_batches_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match=r"\[\[batches\]\] tables"):
        insert_task("batches = []\n", tmp_path / "p.toml", {"agent": 1}, None)


def test_an_inline_tasks_array_is_refused_with_what_to_change(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    text = '[[batches]]\nname = "a"\ntasks = [{agent = 1, issue = 1, title = "x", hours = 1}]\n'
    (repo / "plan.toml").write_text(text, encoding="utf-8")
    before = snapshot()
    result = cli("assign", "1", "2", "y", "1")
    assert result.code == 2
    assert result.err == (
        f"paradev: {repo / 'plan.toml'}: batch 'a' writes its tasks as an inline array; "
        "write them as [[batches.tasks]] tables so paradev assign can add one\n"
    )
    assert snapshot() == before


def test_a_crlf_plan_keeps_its_bytes_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    original = PLAN.replace("\n", "\r\n").encode()
    path.write_bytes(original)
    add_task(path, None, agent=2, issue=42, title='say "hi"\nnow', hours=1)
    written = path.read_bytes()
    assert written.startswith(original)
    added = written[len(original) :]
    assert b"issue = 42\r\n" in added and added.count(b"\n") == added.count(b"\r\n")
    task = load(path).task(42)
    assert task is not None and task.title == 'say "hi"\nnow'


def test_add_task_never_writes_an_invalid_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.toml"
    path.write_text(PLAN, encoding="utf-8")
    with pytest.raises(PlanError, match="appears twice"):
        add_task(path, None, agent=1, issue=11, title="dup", hours=1)
    with pytest.raises(PlanError, match=r"outside 1\.\.3"):
        add_task(path, None, agent=7, issue=70, title="t", hours=1)
    assert path.read_text(encoding="utf-8") == PLAN
    assert [p.name for p in tmp_path.iterdir()] == ["plan.toml"]  # no temp file left


def test_plan_accessors_cover_sections(tmp_path: Path) -> None:
    plan: Plan = parse(PLAN, tmp_path / "plan.toml")
    assert plan.section("agents")["count"] == 3
    assert [b.name for b in plan.batches] == ["first", "second"]


def test_add_task_writes_through_a_symlinked_plan(tmp_path: Path) -> None:
    real = tmp_path / "shared" / "plan.toml"
    real.parent.mkdir()
    real.write_text(PLAN, encoding="utf-8")
    link = tmp_path / "plan.toml"
    link.symlink_to(real)
    add_task(link, None, agent=1, issue=50, title="t", hours=1)
    assert link.is_symlink()
    assert "issue = 50" in real.read_text(encoding="utf-8")


def test_a_wrong_setting_reports_no_follow_on_problems(tmp_path: Path) -> None:
    text = PLAN.replace("count = 3", 'count = "3"')
    with pytest.raises(PlanError) as caught:
        parse(text, tmp_path / "plan.toml", tmp_path / "project")
    assert str(caught.value) == (
        f"{tmp_path / 'plan.toml'}: agents.count: expected an integer from 1 to 1,000, got '3'"
    )


def test_a_bad_field_never_hides_a_dependency_cycle(tmp_path: Path) -> None:
    text = PLAN.replace(FIRST_HOURS, "hours = -1.0\ndepends_on = [12]", 1).replace(
        "hours = 1.5", "hours = 1.5\ndepends_on = [11]", 1
    )
    with pytest.raises(PlanError) as caught:
        parse(text, tmp_path / "plan.toml")
    assert str(caught.value).splitlines()[1:] == [
        '  - batch "first", task #11: batches[0].tasks[0].hours: expected a finite number >= 0, '
        "got -1.0",
        "  - depends_on: dependency cycle #11 -> #12 -> #11",
    ]


def test_setup_keys_read_and_their_mistakes_name_the_key_and_what_to_write(
    tmp_path: Path,
) -> None:
    good = parse(
        '[setup]\ncopy = [".env", "config/local.toml"]\nlink = true\n'
        'command = ["uv", "sync"]\ninputs = ["uv.lock"]\nport_base = 8000\nport_step = 5\n',
        tmp_path / "plan.toml",
    )
    assert good.section("setup")["command"] == ["uv", "sync"]
    assert good.section("setup")["port_base"] == 8000
    bad = (
        "[agents]\ncount = 10\n[setup]\n"
        'copy = ["../secrets", "/etc/passwd", ".git/config", "", "./.git"]\n'
        'command = "uv sync"\ninputs = ["~/uv.lock"]\nport_base = 65000\nport_step = 100\n'
        "link = 1\n"
    )
    with pytest.raises(PlanError) as caught:
        parse(bad, tmp_path / "plan.toml", tmp_path / "project")
    text = str(caught.value)
    assert "9 problems" in text
    assert "setup.copy[0]: '../secrets' leads outside the repository" in text
    assert "setup.copy[1]: '/etc/passwd' is not relative" in text
    assert "setup.copy[2]: '.git/config' is the repository itself or its .git" in text
    assert "setup.copy[3]: '' is empty" in text
    assert "setup.copy[4]: './.git' is the repository itself or its .git" in text
    assert 'setup.command: expected an argv list such as ["uv", "sync"] (never a shell' in text
    assert "setup.inputs[0]: '~/uv.lock' is not relative" in text
    assert "setup.port_base: agent 10 would get port 66000, above 65535" in text
    assert "setup.link: expected true or false" in text


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('command = [""]', "setup.command: expected an argv list"),
        ("port_base = -1", "setup.port_base: expected a port number from 1 to 65535"),
        ("port_step = 0", "setup.port_step: expected an integer from 1 to 65,535"),
        ("timeout = 0", "setup.timeout: expected a finite number > 0"),
        ("copy = [1]", "setup.copy: expected a list of strings"),
        ("cpy = []", "setup.cpy: unknown key (did you mean 'copy'?)"),
    ],
)
def test_setup_values_of_the_wrong_kind_are_refused(
    tmp_path: Path, line: str, expected: str
) -> None:
    with pytest.raises(PlanError, match=re.escape(expected)):
        parse(f"[setup]\n{line}\n", tmp_path / "plan.toml")


# -- deadlocks through the agents' own order ---------------------------------------------------


def _ordered_plan(tasks: list[tuple[int, int, int, list[int]]], agents: int = 3) -> str:
    """A plan from (batch, agent, issue, depends_on) in plan order."""
    lines = [f"[agents]\ncount = {agents}\n"]
    batch = None
    for number, agent, issue, deps in tasks:
        if number != batch:
            lines.append(f'[[batches]]\nname = "b{number}"\n')
            batch = number
        lines.append(
            f'  [[batches.tasks]]\n  agent = {agent}\n  issue = {issue}\n  title = "Task {issue}"\n'
            f"  hours = 1\n  depends_on = {deps}\n"
        )
    return "\n".join(lines)


def test_an_agent_earlier_task_waiting_for_its_later_one_through_another_agent_is_refused(
    repo: Path, cli: Callable[..., Result], snapshot: Callable[[], dict[str, object]]
) -> None:
    # Agent 2 takes #4 before #5; #4 waits for #3, which waits for #5: nothing can start.
    text = _ordered_plan([(1, 1, 3, [5]), (1, 2, 4, [3]), (1, 2, 5, [])])
    (repo / "plan.toml").write_text(text, encoding="utf-8")
    before = snapshot()
    result = cli("status")
    assert result.code == 2, result
    assert result.err == (
        f"paradev: {repo / 'plan.toml'}: tasks can never start (each agent takes its tasks in "
        "plan order): #3 (agent 1) waits for #5, #5 (agent 2) comes after #4 on agent 2, "
        "#4 waits for #3; fix: put #5 before #4 on agent 2, give one of them to another agent, "
        "or drop #3 from #4's depends_on\n"
    )
    assert snapshot() == before


def test_a_task_waiting_for_its_own_agent_later_task_is_refused(tmp_path: Path) -> None:
    text = _ordered_plan([(1, 1, 7, [8]), (1, 1, 8, [])])
    with pytest.raises(
        PlanError,
        match=r"#7 \(agent 1\) waits for #8, #8 \(agent 1\) comes "
        r"after #7 on agent 1; fix: put #8 before #7 on agent 1",
    ):
        parse(text, tmp_path / "plan.toml")


def test_a_dependency_on_an_own_later_batch_task_is_said_once(tmp_path: Path) -> None:
    # #1 waits for agent 1's own later #2: refused as a later-batch dependency, not twice.
    text = _ordered_plan([(1, 1, 1, [2]), (2, 1, 2, [])])
    with pytest.raises(PlanError) as caught:
        parse(text, tmp_path / "plan.toml")
    assert str(caught.value).count("\n") == 0
    assert "#2 is in a later batch, so #1 could never start" in str(caught.value)


def test_plans_whose_order_agrees_with_their_dependencies_are_accepted(tmp_path: Path) -> None:
    # #2 (agent 2) waits for agent 1's later #3; agent 2 has nothing before #2 that #3 needs.
    text = _ordered_plan([(1, 1, 1, []), (1, 2, 2, [3]), (1, 1, 3, [1]), (1, 2, 4, [2, 1])])
    plan = parse(text, tmp_path / "plan.toml")
    assert [t.issue for t in plan.tasks()] == [1, 2, 3, 4]


@st.composite
def _random_plans(draw: st.DrawFn) -> list[tuple[int, int, int, list[int]]]:
    """Tasks in plan order (batch, agent, issue, depends_on); dependencies never name a later
    batch (refused on its own) nor an unknown issue."""
    count = draw(st.integers(1, 7))
    batches = sorted(draw(st.lists(st.integers(1, 3), min_size=count, max_size=count)))
    tasks: list[tuple[int, int, int, list[int]]] = []
    for issue, batch in enumerate(batches, start=1):
        allowed = [i for i, b in enumerate(batches, start=1) if b <= batch]
        deps = draw(st.lists(st.sampled_from(allowed), max_size=3, unique=True))
        tasks.append((batch, draw(st.integers(1, 3)), issue, deps))
    return tasks


@given(_random_plans())
@settings(max_examples=300, derandomize=True, database=None, deadline=None)
def test_a_plan_is_accepted_iff_dependencies_and_agent_order_can_be_ordered(
    tasks: list[tuple[int, int, int, list[int]]],
) -> None:
    graph: dict[int, set[int]] = {issue: set(deps) for _, _, issue, deps in tasks}
    last: dict[int, int] = {}
    for _, agent, issue, _ in tasks:
        if agent in last:
            graph[issue].add(last[agent])
        last[agent] = issue
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
        orderable = True
    except graphlib.CycleError:
        orderable = False
    try:
        parse(_ordered_plan(tasks), Path("plan.toml"))
        accepted = True
    except PlanError as err:
        assert "can never start" in str(err) or "dependency cycle" in str(err), err
        assert str(err).count("\n") == 0, err  # one problem, one line
        accepted = False
    assert accepted == orderable


# -- the parsed-plan cache -------------------------------------------------------------------


def _same_size_edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (same length) in place, leaving size and times as they were."""
    assert len(old) == len(new)
    before = path.stat()
    path.write_text(path.read_text().replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_an_unchanged_plan_is_read_from_the_cache_and_an_edited_one_anew(tmp_path: Path) -> None:
    plan_file, cache = tmp_path / "plan.toml", tmp_path / "paradev" / plan_mod.PARSED_PLAN
    cache.parent.mkdir()
    plan_file.write_text(PLAN)
    first = load(plan_file, parsed=cache)
    assert cache.is_file() and load(plan_file, parsed=cache) == first

    _same_size_edit(plan_file, "the status command", "the STATUS command")  # times cannot tell

    edited = load(plan_file, parsed=cache).task(11)
    assert edited is not None and edited.title == "Add the STATUS command"


@pytest.mark.parametrize(
    "kept",
    [
        b"\x00not json",
        b"[1, 2]",
        b'{"python": "2.7", "text": "", "data": {}}',
        b'{"python": null, "text": null, "data": []}',
    ],
)
def test_a_damaged_or_foreign_cache_is_ignored_and_replaced(tmp_path: Path, kept: bytes) -> None:
    plan_file, cache = tmp_path / "plan.toml", tmp_path / plan_mod.PARSED_PLAN
    plan_file.write_text(PLAN)
    cache.write_bytes(kept)

    assert load(plan_file, parsed=cache).agent_count == 3
    assert plan_mod.ParsedCache(cache).get(PLAN) is not None  # rewritten for this text


def test_a_kept_plan_is_trusted_only_under_the_bounds_it_was_checked_against(
    tmp_path: Path,
) -> None:
    """A hit skips check_text: a parse kept under other bounds (or none) is checked anew."""
    import json
    import sys

    plan_file, cache = tmp_path / "plan.toml", tmp_path / plan_mod.PARSED_PLAN
    deep = PLAN + "deep = " + "[" * 70 + "]" * 70 + "\n"  # beyond MAX_NESTING (64)
    plan_file.write_text(deep)
    kept = {"python": sys.version, "text": deep, "data": {}}
    for bounds in (None, [64, 100]):  # written before the bounds were kept, or under others
        cache.write_text(json.dumps({**kept, "bounds": bounds}))
        with pytest.raises(PlanError, match="nested more than 64 levels"):
            load(plan_file, parsed=cache)
    plan_file.write_text(PLAN)
    load(plan_file, parsed=cache)  # kept, with the bounds it met
    assert json.loads(cache.read_text())["bounds"] == [64, 64]


def test_the_cache_is_kept_only_where_paradev_keeps_its_files_and_never_for_dates(
    tmp_path: Path,
) -> None:
    plan_file = tmp_path / "plan.toml"
    plan_file.write_text(PLAN)
    load(plan_file, parsed=tmp_path / "missing" / plan_mod.PARSED_PLAN)
    assert not (tmp_path / "missing").exists()  # no folder made before 'paradev setup'

    cache = plan_mod.ParsedCache(tmp_path / plan_mod.PARSED_PLAN)
    cache.put("when = 2024-01-01\n", {"when": datetime.date(2024, 1, 1)})
    assert list(tmp_path.iterdir()) == [plan_file]  # JSON cannot hold a date: nothing kept


def test_the_worktree_root_follows_home_and_the_repository_within_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root is worked out once per (pattern, repository, home): a change of either shows."""
    text = PLAN.replace("[project]\n", '[project]\nworktrees = "~/trees/{repo}"\n', 1)
    plan = parse(text, tmp_path / "plan.toml")
    for home in ("one", "two"):
        monkeypatch.setenv("HOME", str(tmp_path / home))
        for repo in ("alpha", "beta"):
            expected = tmp_path / home / "trees" / repo / "agent-2"
            assert plan.worktree(2, tmp_path / repo) == expected
