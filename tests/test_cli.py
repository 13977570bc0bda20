"""The ``paradev`` program: parsing, help, completion, exit codes, and what it imports."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_mock import MockerFixture

from paradev import __version__, kept
from paradev.argv import parse
from paradev.cli import plain_values
from paradev.commands import BY_NAME, COMMANDS, GROUPS, Command
from tests.helpers import Result, agent_tree, commit, run_process


def test_version(cli: Callable[..., Result]) -> None:
    assert cli("--version").out == f"paradev {__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["frobnicate"], "unknown command 'frobnicate' (see 'paradev --help')"),
        (["statsu"], "unknown command 'statsu'; did you mean 'status'? (see 'paradev --help')"),
        (["merge-ordr"], "did you mean 'merge-order'?"),
        (["--bogus"], "unknown option '--bogus' (see 'paradev --help')"),
        (["status", "--jsn"], "unknown option '--jsn' for 'status'; did you mean '--json'?"),
        (
            ["status", "extra"],
            "unexpected argument 'extra' for 'status' (see 'paradev status --help')",
        ),
        (["assign", "1"], "the following arguments are required: ISSUE, TITLE, HOURS"),
        (["start"], "the following arguments are required: AGENT"),
        (["completion", "fish"], "SHELL must be one of bash, zsh, not 'fish'"),
        (["status", "--js"], "unknown option '--js'"),  # no abbreviations: flags stay stable
    ],
)
def test_a_bad_command_line_exits_2_with_one_line(
    repo: Path, cli: Callable[..., Result], args: list[str], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.startswith("paradev: ") and message in result.err, result.err
    assert result.err.count("\n") == 1 and result.out == ""


def test_top_help_lists_the_commands_by_group_one_line_each(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0 and cli().out == result.out
    lines = result.out.splitlines()
    assert lines[0] == "usage: paradev COMMAND [ARGS...]"
    listed: dict[str, str] = {}
    group = ""
    for line in lines:
        if line.endswith(":") and not line.startswith(" "):
            group = line[:-1]
        elif line.startswith("  ") and group in GROUPS:
            name, summary = line.split(maxsplit=1)
            listed[name] = group
            assert summary == BY_NAME[name].summary
    assert listed == {c.name: c.group for c in COMMANDS}
    assert [line[:-1] for line in lines if line[:-1] in GROUPS] == list(GROUPS)
    for boilerplate in ("--core-opts", "Subcommands", "--pty", "--echo", "invoke"):
        assert boilerplate not in result.out


def test_command_help_shows_usage_types_exit_codes_and_an_example(
    cli: Callable[..., Result],
) -> None:
    out = cli("assign", "--help").out
    assert out.startswith("usage: paradev assign AGENT ISSUE TITLE HOURS [--batch NAME]\n")
    assert re.search(r"AGENT\s+INT: agent number", out)
    assert re.search(r"HOURS\s+HOURS: estimated hours", out)
    assert re.search(r"--batch NAME\s+batch to add the task to", out)
    assert "exit codes:\n  0   success\n  2   bad input" in out
    assert "example:\n  paradev assign 1 16 'Implement the status command' 2.5" in out
    check = cli("check", "-h").out
    assert check.startswith("usage: paradev check PATH... [--agent INT]")
    assert "1   another agent does (named)" in check
    assert "--interval SECONDS" in cli("conflicts", "--help").out


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_every_command_shows_its_help(name: str, cli: Callable[..., Result]) -> None:
    result = cli(name, "--help")
    command = BY_NAME[name]
    assert result.code == 0, result.err
    assert result.out.startswith(f"usage: paradev {command.usage()}\n")
    for arg in command.args:
        assert (arg.flag if not arg.position else arg.label) in result.out, (name, arg.name)
    assert f"example:\n  paradev {command.example}" in result.out
    for code in command.exit_codes():
        assert f"\n  {code:<4}" in result.out


def test_positionals_take_dashed_values_and_intermixed_options(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    negative = cli("assign", "1", "5", "t", "-2")
    assert (negative.code, negative.err) == (
        2,
        "paradev: hours must be a finite number >= 0, got '-2'\n",
    )
    commit(agent_tree(set_up, 1), {"src/app.py": "changed\n"})
    found = cli("check", "--agent", "2", "README.md", "src/app.py")
    assert found.code == 1 and found.out.startswith("src/app.py: agent 1")
    dashed = cli("check", "--", "-odd-name")
    assert dashed.code == 0 and "no other agent changes -odd-name" in dashed.out


def test_invokes_flag_spelling_of_positionals_works_too(
    set_up: Path, cli: Callable[..., Result]
) -> None:
    named = cli("run-batch", "--batch", "first", "--dry-run")
    assert named.code == 0 and named.out == cli("run-batch", "first", "--dry-run").out
    commit(agent_tree(set_up, 1), {"src/app.py": "changed\n"})
    both = cli("check", "README.md", "--path", "src/app.py", "--agent", "2")
    assert both.code == 1 and both.out.startswith("src/app.py: agent 1")
    twice = cli("run-batch", "first", "--batch", "second")
    assert (twice.code, twice.err) == (
        2,
        "paradev: give BATCH or --batch, not both (see 'paradev run-batch --help')\n",
    )


def test_interrupt_exits_130(
    set_up: Path, cli: Callable[..., Result], mocker: MockerFixture
) -> None:
    mocker.patch("paradev.lifecycle.status", side_effect=KeyboardInterrupt)
    result = cli("status")
    assert (result.code, result.err) == (130, "paradev: interrupted\n")


# -- what the fast commands load -------------------------------------------------------------------

HEAVY = ("invoke", "rich", "filelock", "tomlkit", "git")  # git: GitPython


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["check", "src/app.py"],
        ["conflicts", "--json"],
        ["merge-order"],
        ["--help"],
        ["check", "--help"],
    ],
)
def test_fast_commands_never_import_invoke_rich_filelock_or_tomlkit(
    set_up: Path, repo: Path, cli: Callable[..., Result], args: list[str]
) -> None:
    for agent, text in ((1, "one\n"), (2, "two\n")):
        assert cli("start", str(agent)).code == 0
        commit(agent_tree(set_up, agent), {"src/app.py": text})
        assert cli("complete", str(agent)).code == 0
    (agent_tree(set_up, 3) / "src" / "util.py").write_text("uncommitted\n")
    if args[0] in ("merge-order", "conflicts"):  # the first run saves (under the lock)
        assert cli(*args).code == 0  # the order, or the scan's snapshot; later ones only read
    probe = (
        "import sys\n"
        "from paradev.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('LOADED', code, ','.join(loaded), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=repo, capture_output=True, text=True, check=False
    )
    last = proc.stderr.splitlines()[-1]
    assert last.split(" ")[0] == "LOADED", proc.stderr
    _, code, loaded = ([*last.split(" "), ""])[:3]
    assert code in ("0", "1") and loaded == "", (args, proc.stderr)
    if args[0] == "merge-order":
        state = json.loads((repo / ".git" / "paradev" / "state.json").read_text())
        assert state["merge_order"] == [1, 2]


# What each fast command must not load: argparse (a plain command line is read without it)
# and the core modules of other commands.
NOT_LOADED = {
    "check": (
        "argparse",
        "paradev.argv",
        "paradev.lifecycle",
        "paradev.attention",
        "paradev.flowcheck",
        "paradev.coverage",
        "paradev.order",
        "paradev.conflicts",  # check needs the branches' paths, not the conflict machinery
        "paradev.labels",
        "tomllib",  # an unchanged plan is not parsed again (plan.ParsedCache)
        "paradev.presets",  # loaded only by a plan that names a preset
        "dataclasses",  # with inspect, the slowest import left (state's records are plain)
        "inspect",
    ),
    # coverage and flowcheck: the bookkeeping of start/complete/drop and doctor's checks
    "status": (
        "typing",  # ~6 ms: every module status loads imports it only for mypy
        "argparse",
        "paradev.argv",
        "paradev.conflicts",
        "paradev.order",
        "paradev.runner",
        "paradev.coverage",
        "paradev.flowcheck",
        "tomllib",
        "paradev.presets",
        "dataclasses",
        "inspect",
    ),
    "conflicts": (
        "argparse",
        "paradev.argv",
        "paradev.lifecycle",
        "paradev.order",
        "paradev.coverage",
        "paradev.flowcheck",
        "tomllib",
        "paradev.presets",
        "dataclasses",  # the report's classes are plain: ~8 ms of every scan
        "inspect",
    ),
}
OTHER_COMMANDS = ("paradev.train", "paradev.runner", "paradev.hooks", "paradev.report")


@pytest.mark.parametrize(
    "args",
    [
        ["check", "src/app.py", "--agent", "1"],
        ["check", "src", "--json"],
        ["status"],
        ["conflicts"],
    ],
)
def test_fast_commands_load_only_the_core_they_use(
    set_up: Path, repo: Path, cli: Callable[..., Result], args: list[str]
) -> None:
    commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    cli(*args)  # as after any earlier command: the plan's parse is kept
    probe = (
        "import sys\n"
        "from paradev.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('LOADED', code, ' '.join(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=repo, capture_output=True, text=True, check=False
    )
    words = proc.stderr.splitlines()[-1].split(" ")
    assert words[:2] == ["LOADED", "1" if args[0] == "check" else "0"], proc.stderr
    assert "paradev.workspace" in words  # it did the work
    unwanted = (*NOT_LOADED[args[0]], *OTHER_COMMANDS)
    assert [m for m in unwanted if m in words] == [], proc.stderr


def test_the_up_front_state_check_does_not_look_for_landed_tasks(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    cache = repo / ".git" / "paradev" / "landed.json"
    assert cli("check", "src/app.py").code == 0
    assert not cache.exists()  # no git log of base for tasks check never shows
    assert cli("status").code == 0
    assert cache.exists()  # status does look (its tasks' states)
    (repo / ".git" / "paradev" / "state.json").write_text("{broken")
    result = cli("check", "src/app.py")
    assert result.code == 2 and "is corrupt" in result.err


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_each_example_command_line_is_read_without_argparse_as_argparse_reads_it(
    name: str,
) -> None:
    command = BY_NAME[name]
    words = shlex.split(command.example)[1:]
    words = words[: next((i for i, w in enumerate(words) if w in (">", "|")), len(words))]
    if any(w.startswith("-") and w not in {a.flag for a in command.args} for w in words):
        return  # e.g. "--agents=1,3": argparse's own spelling
    assert plain_values(command, words) == parse(command, words)


WORDS = st.sampled_from(["a", "src/x.py", "7", "-", "-1", "--", "-h", "--help", "--bogus", "x=1"])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(COMMANDS), st.data())
def test_a_plain_command_line_is_read_as_argparse_reads_it(
    command: Command, data: st.DataObject
) -> None:
    flags = [a.flag for a in command.args]  # invoke's spelling of positionals too
    words = data.draw(st.lists(st.one_of(WORDS, st.sampled_from(flags or ["--x"])), max_size=7))
    quick = plain_values(command, words)
    if quick is None:
        return  # argparse decides
    assert quick == parse(command, words), words


def test_a_bad_command_line_in_a_real_process_has_no_traceback(repo: Path) -> None:
    result = run_process(repo, "statsu")
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "paradev: unknown command 'statsu'; did you mean 'status'? (see 'paradev --help')\n"
    )


# -- real processes: exit codes and no traceback -----------------------------------------------


def _assert_clean_failure(result: Result, pattern: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert result.err.count("\n") == 1, result.err
    assert re.match(rf"paradev: .*{pattern}", result.err), result.err


def test_errors_in_a_real_process_have_no_traceback(repo: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    _assert_clean_failure(run_process(lonely, "status"), "not inside a git repository")
    _assert_clean_failure(run_process(repo, "assign", "1", "5", "t", "nan"), "finite number")
    _assert_clean_failure(run_process(repo, "start", "9"), "unknown agent 9")
    _assert_clean_failure(run_process(repo, "frobnicate"), "unknown command 'frobnicate'")
    (repo / "plan.toml").write_text("[agents]\ncount = [\n", encoding="utf-8")
    _assert_clean_failure(run_process(repo, "setup"), r"plan\.toml:\d+:\d+: TOML syntax error")
    (repo / "plan.toml").write_text("", encoding="utf-8")
    (repo / ".git" / "paradev").mkdir()
    (repo / ".git" / "paradev" / "state.json").write_text("{", encoding="utf-8")
    _assert_clean_failure(run_process(repo, "status", "--json"), "is corrupt")


def test_a_real_run_succeeds_with_exit_0(repo: Path) -> None:
    result = run_process(repo, "setup")
    assert result.code == 0, result.err
    assert result.out.count("created branch and worktree") == 3


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "paradev"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert (proc.returncode, proc.stdout) == (0, f"paradev {__version__}\n")


BAD_NAME = b"bad\xffname.txt"  # a file name that is not UTF-8 (legal on Linux)


def _raw(cwd: Path, *args: str | bytes) -> subprocess.CompletedProcess[bytes]:
    """``python -m paradev`` with a strict UTF-8 stdout, output kept as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        timeout=120,
        check=False,
    )


def test_a_path_that_is_not_utf8_is_printed_as_its_bytes_never_a_traceback(
    set_up: Path, repo: Path, cli: Callable[..., Result]
) -> None:
    tree = set_up / "agent-1"
    assert cli("start", "1").code == 0
    (Path(os.fsdecode(bytes(tree) + b"/" + BAD_NAME))).write_text("x\n")
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-qm", "bytes"], cwd=tree, check=True)
    (Path(os.fsdecode(bytes(tree) + b"/un\xfetracked"))).write_text("y\n")

    completed = _raw(repo, "complete", "1")
    assert completed.returncode == 0, completed.stderr
    assert b"  " + BAD_NAME + b"\n" in completed.stdout
    assert b"un\xfetracked" in completed.stderr and b"Traceback" not in completed.stderr
    for args in (("status",), ("status", "--json"), ("conflicts",), ("merge", "--dry-run")):
        result = _raw(repo, *args)
        assert (result.returncode, b"Traceback" in result.stderr) == (0, False), (args, result)
    claimed = _raw(repo, "check", os.fsdecode(BAD_NAME))
    assert claimed.returncode == 1, claimed.stderr
    assert claimed.stdout.startswith(BAD_NAME + b": agent 1")


def test_lazily_imported_modules_are_cached_as_bytecode(repo: Path, tmp_path: Path) -> None:
    """invoke turns bytecode writing off; paradev keeps Python's own setting instead."""
    cache = tmp_path / "pycache"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    proc = subprocess.run(
        [sys.executable, "-m", "paradev", "status"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    compiled = {p.name.split(".")[0] for p in cache.rglob("*.pyc")}
    assert {"lifecycle", "plan", "state"} <= compiled  # imported by the status task itself


def test_a_reader_that_goes_away_ends_paradev_quietly(repo: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "paradev", "--help"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `paradev --help | head -0`, before paradev writes anything
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""


def test_a_check_with_kept_answers_loads_no_heavy_standard_module(
    set_up: Path, repo: Path, cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """typing, json, re, pathlib, subprocess: ~35 ms of imports, more than the answer itself."""
    monkeypatch.setattr(kept, "RACY_MARGIN_NS", 50_000_000)
    commit(agent_tree(set_up, 2), {"src/app.py": "two\n"})
    (agent_tree(set_up, 3) / "src" / "util.py").write_text("uncommitted\n")
    time.sleep(0.1)
    args = ["check", "src/app.py", "src/util.py", "--agent", "1"]
    assert cli(*args).code == 1  # keeps its answers
    time.sleep(0.1)
    heavy = ("typing", "json", "re", "pathlib", "subprocess", "signal", "threading")
    probe = (
        "import sys\n"
        f"before = [m for m in {heavy!r} if m in sys.modules]\n"
        "import paradev.kept\n"
        "paradev.kept.RACY_MARGIN_NS = 50_000_000\n"
        "from paradev.cli import main\n"
        "code = main(sys.argv[1:])\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules and m not in before]\n"
        "print('LOADED', code, ','.join(loaded), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, *args], cwd=repo, capture_output=True, text=True, check=False
    )
    assert proc.stdout.splitlines() == [
        "src/app.py: agent 2 (parallel-dev/agent-2, branch)",
        "src/util.py: agent 3 (parallel-dev/agent-3, worktree)",
    ]
    assert proc.stderr.splitlines()[-1] == "LOADED 1 ", proc.stderr
