"""The demo runs the whole flow end to end; the example plan is complete and commented."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit

from paradev import demo, demo_agent
from paradev.errors import PreconditionError
from paradev.state import MERGED
from paradev.workspace import open_workspace
from tests.helpers import Result, git


def test_the_demo_runs_the_whole_flow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []

    project = demo.run_demo(tmp_path / "demo-run", echo=lines.append)

    output = "\n".join(lines)
    for step in demo.STEPS:
        assert f"$ paradev {' '.join(step.args)}" in output
    assert "handed the conflict back to agent" in output
    report = project.parent / demo.REPORT
    assert lines[-1].strip() == f"The report: {report}"
    assert "CONFLICT" in report.read_text(encoding="utf-8")  # what collided, after it all landed
    subjects = git(project, "log", "--format=%s", "main").splitlines()
    for issue in range(101, 107):
        assert any(s.endswith(f"(#{issue})") for s in subjects), issue
    core = git(project, "show", "main:calc/core.py")
    for name in ("add", "subtract", "multiply", "divide"):
        assert f"def {name}(" in core
    assert "pure functions of two numbers" in core  # the harmless overlap landed too
    state = open_workspace(project).store.read()
    assert {state.status(i) for i in range(101, 107)} == {MERGED}
    assert state.train is None or state.train.get("status") != "stopped"
    # main passes the sample's tests: the gate ran on every combined result
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout
    assert "6 passed" in tests.stdout


def test_the_demo_never_deletes_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "work.txt").write_text("keep me")

    with pytest.raises(PreconditionError, match="was not made by the demo"):
        demo.run_demo(precious, echo=lambda _: None)

    assert (precious / "work.txt").read_text() == "keep me"


def test_demo_command_reports_a_refusal_cleanly(tmp_path: Path, cli: Callable[..., Result]) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    result = cli("demo", "--folder", str(tmp_path / "taken"))
    assert result.code == 2
    assert "was not made by the demo" in result.err


def test_the_example_plan_comments_every_key_and_validates() -> None:
    text = demo.EXAMPLE_PLANS[0].read_text(encoding="utf-8")
    key = re.compile(r"^\s*[a-z_]+\s*=")
    uncommented = [line for line in text.splitlines() if key.match(line) and "#" not in line]
    assert uncommented == []
    plan = demo.demo_plan(text)
    assert sys.executable in plan
    assert "# the integration branch" in plan  # comments survive the rewrite
    data = tomlkit.parse(plan).unwrap()
    assert [len(b["tasks"]) for b in data["batches"]] == [3, 3]
    assert data["agents"]["count"] == 3
    assert data["merge"]["on_conflict"] == "agent"


def test_keep_both_sides_drops_markers_and_the_base_section() -> None:
    text = "a\n<<<<<<< HEAD\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> x\nz\n"
    assert demo_agent.keep_both_sides(text) == "a\nours\ntheirs\nz\n"


def test_demo_agent_refuses_an_issue_it_has_no_script_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = tmp_path / "prompt.md"
    prompt.write_text("# Issue #999\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PARADEV_ISSUE", "999")
    monkeypatch.setenv("PARADEV_TITLE", "unknown")
    monkeypatch.delenv("PARADEV_MODE", raising=False)
    assert demo_agent.main(["--prompt-file", str(prompt)]) == 1
