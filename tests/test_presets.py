"""Agent presets, mixed fleets and reported cost, with fake claude/codex/aider first on PATH.

The fakes (tests/fake_agent_cli.py) record their argv, environment and stdin
and answer with the JSON the real tools print; run-batch launches them in
real worktrees of a real repository.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from paradev import presets
from paradev.presets import MAX_PROMPT_ARGUMENT, Usage, preset_command, usage_in
from paradev.state import COMPLETED, FAILED
from paradev.workspace import open_workspace
from tests.fake_agent_cli import CLAUDE_RESULT, CODEX_USAGE
from tests.helpers import Result

CliFn = Callable[..., Result]
FAKE = Path(__file__).with_name("fake_agent_cli.py")
HOSTILE_TITLE = 'Fix $(touch pwned) `id`; rm -rf ~ && echo "it\'s" | cat > out  # *'
CLAUDE_RULES = [
    "Bash(git add *)",
    "Bash(git commit *)",
    "Bash(git status*)",
    "Bash(git diff*)",
    "Bash(git log*)",
    "Bash(git show*)",
    "Bash(paradev check *)",
]


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """claude, codex and aider (the fake) first on PATH; returns where they record their runs."""
    folder = tmp_path / "bin"
    folder.mkdir()
    body = FAKE.read_text(encoding="utf-8")
    for tool in ("claude", "codex", "aider"):
        script = folder / tool
        script.write_text(f"#!{sys.executable}\n{body}", encoding="utf-8")
        script.chmod(0o755)
    record = tmp_path / "record"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_AGENT_RECORD", str(record))
    monkeypatch.delenv("FAKE_AGENT_MODES", raising=False)
    return record


def plan_set(root: Path, agents: dict[str, Any], gate: str | None = None) -> None:
    """Set keys of [agents] (and gate.command) in plan.toml."""
    path = root / "plan.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    for key, value in agents.items():
        doc["agents"][key] = value
    if gate is not None:
        doc["gate"]["command"] = gate
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")


def runs(record: Path, tool: str, issue: int) -> list[dict[str, Any]]:
    found = sorted(record.glob(f"{tool}-{issue}-*.json"))
    return [json.loads(p.read_text(encoding="utf-8")) for p in found]


def prompt_of(repo: Path, issue: int) -> str:
    return (repo / ".git" / "paradev" / "prompts" / f"issue-{issue}.md").read_text("utf-8")


def task_json(cli: CliFn, agent: int, issue: int) -> dict[str, Any]:
    status = cli("status", "--json")
    assert status.code == 0, status.err
    tasks = status.json()["agents"][str(agent)]["tasks"]
    found: dict[str, Any] = next(t for t in tasks if t["issue"] == issue)
    return found


# -- the argv of each preset, end to end ---------------------------------------------------


def test_claude_preset_passes_the_prompt_as_one_argument_and_records_the_cost(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    plan_set(repo, {"preset": "claude"}, gate="pytest -q")

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.out + result.err
    (run,) = runs(fake_bin, "claude", 11)
    rules = [*CLAUDE_RULES, "Bash(pytest -q*)"]
    head = ["-p", "--output-format", "stream-json", "--verbose"]
    head += ["--permission-mode", "acceptEdits", "--allowedTools", *rules]
    assert run["argv"] == [*head, "--", prompt_of(repo, 11)]
    assert run["stdin"] == ""
    assert run["cwd"] == str(set_up / "agent-1")
    assert run["env"]["PARADEV_ISSUE"] == "11"
    shown = task_json(cli, 1, 11)
    assert shown["status"] == COMPLETED
    assert shown["cost_usd"] == pytest.approx(0.1234)
    assert shown["tokens"] == {"input": 1200 + 300 + 500, "output": 456}


def test_codex_preset_gets_the_git_dir_writable_stdin_closed_and_tokens_recorded(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    plan_set(repo, {"preset": "codex"})

    result = cli("run-batch", "--agents", "2")

    assert result.code == 0, result.out + result.err
    (run,) = runs(fake_bin, "codex", 12)
    common = str((repo / ".git").resolve())
    head = ["exec", "--json", "--sandbox", "workspace-write", "--add-dir", common]
    assert run["argv"] == [*head, "--", prompt_of(repo, 12)]
    assert run["stdin"] == ""  # closed: codex exec would otherwise wait for more input
    shown = task_json(cli, 2, 12)
    assert shown["status"] == COMPLETED
    assert "cost_usd" not in shown  # codex reports tokens only
    assert shown["tokens"] == {"input": CODEX_USAGE["input_tokens"], "output": 122}


def test_aider_preset_reads_the_prompt_file_and_runs_the_gate_as_its_tests(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    plan_set(repo, {"preset": "aider"}, gate="make test")

    result = cli("run-batch", "--agents", "3")

    assert result.code == 0, result.out + result.err
    (run,) = runs(fake_bin, "aider", 13)
    prompt = str(repo / ".git" / "paradev" / "prompts" / "issue-13.md")
    assert run["argv"] == [
        "--message-file",
        prompt,
        "--yes-always",
        "--no-gitignore",
        "--no-detect-urls",
        "--no-pretty",
        "--no-check-update",
        "--no-analytics",
        "--test-cmd",
        "make test",
        "--auto-test",
    ]
    shown = task_json(cli, 3, 13)
    assert shown["status"] == COMPLETED
    assert "cost_usd" not in shown and "tokens" not in shown  # aider's text is not parsed


def test_a_hostile_title_reaches_the_agent_intact_and_no_shell_runs_it(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    path = repo / "plan.toml"
    text = path.read_text(encoding="utf-8")
    doc = tomlkit.parse(text.replace('"Add the status command"', json.dumps(HOSTILE_TITLE)))
    doc["agents"]["preset"] = "claude"
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.out + result.err
    (run,) = runs(fake_bin, "claude", 11)
    assert run["argv"][-1] == prompt_of(repo, 11)
    assert f"# Issue #11: {HOSTILE_TITLE}\n" in run["argv"][-1]
    assert not list(repo.parent.rglob("pwned")) and not (set_up / "agent-1" / "out").exists()


@pytest.mark.parametrize(("preset", "tail"), [("claude", CLAUDE_RULES), ("codex", ["-"])])
def test_a_prompt_too_long_for_one_argument_goes_to_the_preset_on_stdin(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path, preset: str, tail: list[str]
) -> None:
    path = repo / "plan.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    doc["agents"]["preset"] = preset
    doc["batches"][0]["tasks"][0]["prompt"] = "long context line\n" * (MAX_PROMPT_ARGUMENT // 10)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.out + result.err
    (run,) = runs(fake_bin, preset, 11)
    assert run["argv"][-len(tail) :] == tail and "--" not in run["argv"]
    assert run["stdin"] == prompt_of(repo, 11)
    assert len(run["stdin"].encode()) > MAX_PROMPT_ARGUMENT


def test_a_prompt_too_long_for_ones_own_command_fails_the_task_saying_what_to_use(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    path = repo / "plan.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    doc["agents"]["command"] = ["claude", "-p", "{prompt}"]
    doc["batches"][0]["tasks"][0]["prompt"] = "x" * (MAX_PROMPT_ARGUMENT + 1)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")

    result = cli("run-batch", "--agents", "1")

    assert result.code == 1
    assert "use {prompt_file} instead of {prompt}" in result.out + result.err
    assert runs(fake_bin, "claude", 11) == []
    assert open_workspace(repo).store.read().status(11) == FAILED


# -- mixed fleets, failures ----------------------------------------------------------------


def test_a_mixed_fleet_launches_each_agents_own_command(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path, tmp_path: Path
) -> None:
    own = tmp_path / "own-agent.py"
    own.write_text(
        "import subprocess, sys\n"
        "open('own.txt', 'w').write(sys.argv[1])\n"
        "subprocess.run(['git', 'add', 'own.txt'], check=True)\n"
        "subprocess.run(['git', 'commit', '-qm', 'own'], check=True)\n",
        encoding="utf-8",
    )
    commands = {"1": "claude", "2": "codex", "3": [sys.executable, str(own), "{issue}"]}
    plan_set(repo, {"command": ["aider"], "commands": commands})

    result = cli("run-batch", "first")

    assert result.code == 0, result.out + result.err
    assert [len(runs(fake_bin, t, i)) for t, i in (("claude", 11), ("codex", 12))] == [1, 1]
    assert list(fake_bin.glob("aider-*")) == []  # [agents.commands] overrides agents.command
    assert (set_up / "agent-3" / "own.txt").read_text(encoding="utf-8") == "13"
    state = open_workspace(repo).store.read()
    assert [state.status(i) for i in (11, 12, 13)] == [COMPLETED] * 3


def test_command_overrides_the_preset(set_up: Path, repo: Path, cli: CliFn, fake_bin: Path) -> None:
    plan_set(repo, {"preset": "claude", "command": ["codex", "exec", "{prompt_file}"]})

    result = cli("run-batch", "--agents", "1")

    assert result.code == 0, result.out + result.err
    assert runs(fake_bin, "claude", 11) == []
    (run,) = runs(fake_bin, "codex", 11)
    assert run["argv"] == ["exec", str(repo / ".git" / "paradev" / "prompts" / "issue-11.md")]


def test_a_failing_agent_fails_its_task_and_its_reported_cost_still_counts(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_set(repo, {"preset": "claude"})
    monkeypatch.setenv("FAKE_AGENT_MODES", json.dumps({"11": "fail"}))

    failed = cli("run-batch", "--agents", "1")
    monkeypatch.setenv("FAKE_AGENT_MODES", "{}")
    again = cli("run-batch", "--agents", "1")

    assert failed.code == 1 and "exit code 1" in failed.out
    assert again.code == 0, again.out + again.err
    shown = task_json(cli, 1, 11)
    assert shown["status"] == COMPLETED
    assert shown["cost_usd"] == pytest.approx(0.02 + 0.1234)  # both runs were paid for
    assert shown["tokens"] == {"input": 2 * 2000, "output": 2 * 456}


def test_a_hanging_agent_is_stopped_at_the_timeout_and_its_task_fails(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_set(repo, {"preset": "codex", "timeout": 2})
    monkeypatch.setenv("FAKE_AGENT_MODES", json.dumps({"12": "hang"}))

    result = cli("run-batch", "--agents", "2")

    assert result.code == 1
    assert "timed out after 2s" in result.out
    state = open_workspace(repo).store.read()
    assert state.status(12) == FAILED and state.tasks[12].tokens is None


# -- refused before anything starts ----------------------------------------------------------


def path_without_agents(tmp_path: Path) -> str:
    """A PATH holding git (and the interpreter) but none of the agent CLIs."""
    folder = tmp_path / "only-git"
    folder.mkdir()
    for tool in ("git", "python3"):
        found = shutil.which(tool)
        assert found is not None
        (folder / tool).symlink_to(found)
    return str(folder)


def test_a_missing_preset_cli_is_refused_up_front_naming_how_to_install_it(
    set_up: Path,
    repo: Path,
    cli: CliFn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    snapshot: Callable[[], dict[str, object]],
) -> None:
    plan_set(repo, {"preset": "claude", "commands": {"2": "codex"}})
    monkeypatch.setenv("PATH", path_without_agents(tmp_path))
    before = snapshot()

    result = cli("run-batch", "first")

    assert result.code == 2
    assert result.err == (
        "paradev: cannot launch batch 'first': 'claude' (agents 1, 3) is not on PATH "
        "(npm install -g @anthropic-ai/claude-code); 'codex' (agent 2) is not on PATH "
        "(npm install -g @openai/codex); or run 'paradev run-batch --no-launch' to hand "
        "the prompts out yourself\n"
    )
    assert snapshot() == before


def test_an_agent_left_without_a_command_in_a_mixed_fleet_is_refused_up_front(
    set_up: Path,
    repo: Path,
    cli: CliFn,
    fake_bin: Path,
    snapshot: Callable[[], dict[str, object]],
) -> None:
    plan_set(repo, {"commands": {"1": "claude", "2": "codex"}})
    before = snapshot()

    result = cli("run-batch", "first")

    assert result.code == 2
    assert "agent 3 has no command" in result.err and result.err.count("\n") == 1
    assert snapshot() == before
    assert list(fake_bin.glob("*.json")) == []


def test_dry_run_shows_the_preset_argv_without_the_prompt_text(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    plan_set(repo, {"preset": "codex"})

    result = cli("run-batch", "--agents", "2", "--dry-run")

    assert result.code == 0, result.err
    prompt = repo / ".git" / "paradev" / "prompts" / "issue-12.md"
    assert f"codex exec --json --sandbox workspace-write --add-dir {repo / '.git'}" in result.out
    assert f"-- '<the text of {prompt}>'" in result.out
    assert not prompt.exists()


# -- doctor ----------------------------------------------------------------------------------


def test_doctor_prints_each_agent_programs_path_and_version(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    plan_set(repo, {"preset": "claude", "commands": {"3": "aider"}})

    result = cli("doctor")

    assert result.code == 0, result.out + result.err
    bin_dir = fake_bin.parent / "bin"
    assert f"ok   agent command 'claude' (agents 1, 2): {bin_dir / 'claude'}, 2.1.197" in result.out
    assert f"ok   agent command 'aider' (agent 3): {bin_dir / 'aider'}, aider 0.86.2" in result.out


def test_doctor_reports_a_missing_agent_program(
    set_up: Path, repo: Path, cli: CliFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_set(repo, {"preset": "codex"})
    monkeypatch.setenv("PATH", path_without_agents(tmp_path))

    result = cli("doctor")

    assert result.code == 1
    assert (
        "BAD  agent command 'codex' (agents 1, 2, 3) is not on PATH "
        "(npm install -g @openai/codex)" in result.out
    )


# -- the plan keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agents", "message"),
    [
        ('preset = "cluade"', "agents.preset: expected one of '', 'claude', 'codex', 'aider'"),
        ("commands = []", "agents.commands: expected a table, got []"),
        (
            '[agents.commands]\n4 = "claude"',
            "agents.commands.4: expected an agent number from 1 to 3 as the key",
        ),
        (
            '[agents.commands]\nlead = "claude"',
            "agents.commands.lead: expected an agent number from 1 to 3 as the key",
        ),
        (
            '[agents.commands]\n2 = "gpt"',
            "agents.commands.2: unknown preset 'gpt' (known: 'claude', 'codex', 'aider'); "
            "write your own command as a list of strings",
        ),
        (
            "[agents.commands]\n2 = []",
            "agents.commands.2: expected a preset name ('claude', 'codex', 'aider') or a "
            "non-empty list of strings (an argv), got []",
        ),
        (
            '[agents.commands]\n2 = ["x", "{promt}"]',
            "agents.commands.2: unknown placeholder {promt} (known: {prompt_file}, {prompt}, ",
        ),
    ],
)
def test_bad_agent_keys_are_refused_naming_the_key(
    repo: Path, cli: CliFn, agents: str, message: str
) -> None:
    path = repo / "plan.toml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("count = 3\n", f"count = 3\n{agents}\n"),
        encoding="utf-8",
    )

    result = cli("status")

    assert result.code == 2
    assert message in result.err and "Traceback" not in result.err


def test_the_new_placeholders_are_known_to_the_plan() -> None:
    from paradev.plan import AGENT_PLACEHOLDERS

    assert {"prompt", "git_common_dir"} <= set(AGENT_PLACEHOLDERS)


# -- the presets and the reported usage, as data ---------------------------------------------


def test_each_preset_takes_its_prompt_as_documented() -> None:
    claude, codex, aider = (preset_command(name, "") for name in ("claude", "codex", "aider"))
    assert claude.argv[-2:] == ("--", "{prompt}") and claude.stdin_argv[-1] == CLAUDE_RULES[-1]
    assert codex.argv[-2:] == ("--", "{prompt}") and codex.stdin_argv[-1] == "-"
    assert not aider.takes_prompt_text() and aider.stdin_argv == ()
    assert "--test-cmd" not in aider.argv  # no gate, no test command
    assert preset_command("claude", ["make", "lint and test"]).argv[-3] == (
        "Bash(make 'lint and test'*)"
    )


def test_claudes_result_event_gives_cost_and_every_input_token() -> None:
    lines = ["=== paradev header", '{"type":"system","subtype":"init"}', json.dumps(CLAUDE_RESULT)]
    assert usage_in(lines) == Usage(0.1234, 2000, 456)


def test_codex_turns_add_up_and_report_no_cost() -> None:
    turn = json.dumps({"type": "turn.completed", "usage": CODEX_USAGE})
    assert usage_in([turn, "not json {", turn]) == Usage(None, 2 * 24763, 2 * 122)


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["plain output", "Tokens: 2.3k sent, 151 received. Cost: $0.01 message"],
        ['{"type": "result"}'],  # no usage
        ['{"type": "result", "usage": "lots"}', '{"type": "turn.completed", "usage": 3}'],
        ['["result", "turn.completed"]'],
    ],
)
def test_output_without_a_usage_report_records_nothing(lines: list[str]) -> None:
    assert usage_in(lines) is None


def test_a_nonsense_cost_is_not_recorded_but_the_tokens_are() -> None:
    event = dict(CLAUDE_RESULT, total_cost_usd=-1)
    event["usage"] = {"input_tokens": True, "output_tokens": 7, "cache_read_input_tokens": -5}
    assert usage_in([json.dumps(event)]) == Usage(None, 0, 7)


def test_install_hints_name_the_package_of_each_supported_cli() -> None:
    assert presets.install_hint("codex") == " (npm install -g @openai/codex)"
    assert presets.install_hint("my-agent") == ""


def test_a_relative_program_is_looked_up_in_the_repository(tmp_path: Path) -> None:
    script = tmp_path / "tools" / "agent.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    commands = {1: presets.AgentCommand(("tools/agent.sh",)), 2: presets.AgentCommand(("nope/x",))}
    found = presets.find_programs(commands, tmp_path, "")
    assert [(p.name, p.agents, p.path) for p in found] == [
        ("tools/agent.sh", (1,), str(script)),
        ("nope/x", (2,), None),
    ]


def test_every_toml_snippet_of_the_readme_agent_section_is_a_valid_plan(tmp_path: Path) -> None:
    from paradev.plan import parse

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Agent CLIs\n")[1].split("\n## ")[0]
    snippets = section.split("```toml\n")[1:]
    assert len(snippets) == 4
    plans = [parse(s.split("```")[0], tmp_path / "plan.toml") for s in snippets]
    commands = [[p.agent_command_for(a) for a in (1, 2, 3)] for p in plans]
    assert [[c.preset if c else None for c in row] for row in commands] == [
        ["claude"] * 3,
        ["codex"] * 3,
        ["aider"] * 3,
        ["claude", "codex", ""],
    ]
    own = commands[3][2]
    assert own is not None and own.program == "my-agent"


def test_a_conflict_handed_back_to_a_preset_agent_gets_its_prompt_and_its_cost_counts(
    set_up: Path, repo: Path, cli: CliFn, fake_bin: Path
) -> None:
    from paradev import runner

    plan_set(repo, {"preset": "claude"})
    assert cli("start", "1").code == 0
    notes: list[str] = []

    ok = runner.hand_back_conflict(
        open_workspace(repo), 1, "src/util.py: both changed line 1", notify=notes.append
    )

    assert ok is True, notes
    (run,) = runs(fake_bin, "claude", 11)
    prompt = run["argv"][-1]
    assert prompt.startswith("# Resolve a rebase conflict on parallel-dev/agent-1")
    assert "src/util.py: both changed line 1" in prompt
    record = open_workspace(repo).store.read().tasks[11]
    assert (record.cost_usd, record.tokens) == (0.1234, {"input": 2000, "output": 456})
