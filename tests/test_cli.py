"""The ``paradev`` program: exit codes, argv rewriting, and no traceback for a user mistake."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_mock import MockerFixture

from paradev import __version__
from paradev.cli import help_first, rewrite_rest
from tests.helpers import Result, run_process


def test_version(cli: Callable[..., Result]) -> None:
    assert cli("--version").out == f"paradev {__version__}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "No idea what 'bogus' is!"),
        (["--bogus"], "No idea what '--bogus' is!"),
        (["status", "--bogus"], "No idea what '--bogus' is!"),
        (["assign", "1"], "'assign' did not receive required positional arguments"),
        (["start"], "'start' did not receive required positional arguments: 'agent'"),
    ],
)
def test_a_bad_command_line_exits_2_with_one_line(
    repo: Path, cli: Callable[..., Result], args: list[str], message: str
) -> None:
    result = cli(*args)
    assert result.code == 2
    assert result.err.startswith(f"paradev: {message}")
    assert result.err.endswith("(see 'paradev --help')\n") and result.err.count("\n") == 1


def test_help_after_a_command_with_positionals_shows_its_help(cli: Callable[..., Result]) -> None:
    result = cli("assign", "--help")
    assert result.code == 0
    assert "Usage: paradev [--core-opts] assign" in result.out
    assert "--title=STRING   task title, stored verbatim" in result.out


def test_help_first_only_touches_task_help() -> None:
    assert help_first(["paradev", "start", "-h"]) == ["paradev", "--help", "start"]
    assert help_first(["paradev", "start", "1"]) == ["paradev", "start", "1"]
    assert help_first(["paradev", "--help"]) == ["paradev", "--help"]
    assert help_first(["paradev", "nosuch", "--help"]) == ["paradev", "nosuch", "--help"]


def test_rewrite_rest_turns_bare_words_into_a_flag() -> None:
    flags = {"assign": "title"}
    assert rewrite_rest(["paradev", "assign", "a", "--batch", "b x", "c"], flags) == [
        "paradev",
        "assign",
        "--title",
        "a",
        "--batch",
        "b x",
        "--title",
        "c",
    ]
    assert rewrite_rest(["paradev", "assign", "--batch=b", "--", "-x", "y"], flags) == [
        "paradev",
        "assign",
        "--batch=b",
        "--title",
        "-x",
        "--title",
        "y",
    ]
    assert rewrite_rest(["paradev", "status", "x"], flags) == ["paradev", "status", "x"]
    assert rewrite_rest(["paradev"], flags) == ["paradev"]


def test_interrupt_exits_130(
    set_up: Path, cli: Callable[..., Result], mocker: MockerFixture
) -> None:
    mocker.patch("paradev.lifecycle.status", side_effect=KeyboardInterrupt)
    result = cli("status")
    assert (result.code, result.err) == (130, "paradev: interrupted\n")


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
    _assert_clean_failure(run_process(repo, "frobnicate"), "No idea what 'frobnicate' is")
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
    import os

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
    import os

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


def test_help_shows_only_the_core_flags_that_mean_something_here(
    cli: Callable[..., Result],
) -> None:
    out = cli("--help").out
    assert "--version" in out and "--list" in out and "--complete" in out
    for unused in ("--pty", "--echo", "--prompt-for-sudo-password", "--warn-only", "--hide"):
        assert unused not in out
    assert "setup" in out and "merge-order" in out  # the commands follow


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
