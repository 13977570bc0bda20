"""Ready-made agent commands: each supported CLI's documented non-interactive invocation.

``[agents] preset = "claude"`` stands for the argv below, so nobody has to
work out how to start an agent CLI without a terminal, with edits allowed in
its worktree and nothing asked interactively. Each preset lets the agent
edit, run the gate, ``git commit`` and ``paradev check`` inside its linked
worktree, and streams its output into the log (``logs --follow``).

The prompt reaches the agent as one argument (``{prompt}``, never through a
shell); beyond ``MAX_PROMPT_ARGUMENT`` a preset reads the prompt file on its
standard input instead. The agent's own report of what it cost (Claude's
final ``result`` event, Codex's ``turn.completed`` events) is read back from
its log by ``usage_in``.

``bench/agents.py`` installs the real CLIs and fails when a flag used here is
missing from their ``--help``, so the presets cannot drift from the tools.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN); keep a margin.
MAX_PROMPT_ARGUMENT = 100 * 1024  # bytes of UTF-8


@dataclass(frozen=True)
class AgentCommand:
    """How one agent starts: an argv template and, for long prompts, a form reading stdin."""

    argv: tuple[str, ...]
    preset: str = ""  # the preset it comes from; "" for the plan's own argv
    stdin_argv: tuple[str, ...] = ()  # the same command taking the prompt on stdin ("" : none)

    @property
    def program(self) -> str:
        return self.argv[0]

    def takes_prompt_text(self) -> bool:
        """Whether an argument holds ``{prompt}`` (the text itself rather than its file)."""
        return any("{prompt}" in arg for arg in self.argv)


@dataclass(frozen=True)
class Preset:
    """One supported CLI: what starts it, how to install it, where its flags are documented."""

    name: str
    install: str
    docs: tuple[str, ...]

    def command(self, gate: str | Sequence[str]) -> AgentCommand:
        return _BUILDERS[self.name](gate)


def _gate_text(gate: str | Sequence[str]) -> str:
    """The gate as one command line (an argv gate quoted the way a shell would)."""
    import shlex  # only plans with an argv gate and a preset need it

    return gate if isinstance(gate, str) else shlex.join(gate)


# -- Claude Code ---------------------------------------------------------------------------
# https://docs.claude.com/en/docs/claude-code/headless (-p, --output-format stream-json,
#   which needs --verbose; without a prompt argument -p reads the prompt from stdin)
# https://docs.claude.com/en/docs/claude-code/cli-reference (--permission-mode, --allowedTools)
# https://docs.claude.com/en/docs/claude-code/iam#permission-rules ("Bash(git commit *)")
# "acceptEdits" accepts file edits in the working directory; the shell stays closed
# but for the rules below: git to commit its work, paradev check, and the gate.
CLAUDE_GIT_RULES = (
    "Bash(git add *)",
    "Bash(git commit *)",
    "Bash(git status*)",
    "Bash(git diff*)",
    "Bash(git log*)",
    "Bash(git show*)",
    "Bash(paradev check *)",
)


def claude_rules(gate: str | Sequence[str]) -> list[str]:
    """The --allowedTools rules: git and paradev check, plus the gate as the plan writes it."""
    text = _gate_text(gate).strip()
    return [*CLAUDE_GIT_RULES, *([f"Bash({text}*)"] if text else [])]


def _claude(gate: str | Sequence[str]) -> AgentCommand:
    head = (
        "claude",
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--allowedTools",
        *claude_rules(gate),
    )
    # --allowedTools takes every argument up to the next option: "--" ends it.
    return AgentCommand(argv=(*head, "--", "{prompt}"), preset="claude", stdin_argv=head)


# -- Codex ---------------------------------------------------------------------------------
# https://developers.openai.com/codex/noninteractive (codex exec, --json event stream,
#   --sandbox workspace-write to allow edits; "-" or no prompt reads it from stdin)
# https://developers.openai.com/codex/cli/reference (--add-dir: more writable directories)
# A linked worktree's git dir lies in the main repository's common git dir, outside
# the workspace: without --add-dir the sandbox refuses `git commit`. paradev starts
# every agent with stdin closed, else `codex exec` waits for more input on it.
def _codex(gate: str | Sequence[str]) -> AgentCommand:
    head = (
        "codex",
        "exec",
        "--json",
        "--sandbox",
        "workspace-write",
        "--add-dir",
        "{git_common_dir}",
    )
    return AgentCommand(argv=(*head, "--", "{prompt}"), preset="codex", stdin_argv=(*head, "-"))


# -- Aider ---------------------------------------------------------------------------------
# https://aider.chat/docs/scripting.html (--message-file: do it, then exit)
# https://aider.chat/docs/config/options.html (--yes-always, --no-gitignore, --test-cmd,
#   --auto-test, --no-detect-urls, --no-pretty, --no-check-update, --no-analytics)
# Aider commits its own edits. Without --no-gitignore it adds .aider* to .gitignore in
# every worktree, and every two Aider agents conflict on that line. --yes-always
# answers every question, so the questions a "yes" must not answer are switched off:
# upgrading aider (--no-check-update), sending analytics (--no-analytics), fetching
# the URLs a prompt mentions (--no-detect-urls). The gate runs as its test command
# after each change, and aider hands failures back to the model.
def _aider(gate: str | Sequence[str]) -> AgentCommand:
    text = _gate_text(gate).strip()
    return AgentCommand(
        argv=(
            "aider",
            "--message-file",
            "{prompt_file}",
            "--yes-always",
            "--no-gitignore",
            "--no-detect-urls",
            "--no-pretty",
            "--no-check-update",
            "--no-analytics",
            *(("--test-cmd", text, "--auto-test") if text else ()),
        ),
        preset="aider",
    )


_BUILDERS = {"claude": _claude, "codex": _codex, "aider": _aider}

PRESETS: dict[str, Preset] = {
    "claude": Preset(
        "claude",
        "npm install -g @anthropic-ai/claude-code",
        ("https://docs.claude.com/en/docs/claude-code/headless",),
    ),
    "codex": Preset(
        "codex",
        "npm install -g @openai/codex",
        ("https://developers.openai.com/codex/noninteractive",),
    ),
    "aider": Preset(
        "aider",
        "python -m pip install aider-install && aider-install",
        ("https://aider.chat/docs/scripting.html",),
    ),
}
PRESET_NAMES = tuple(PRESETS)


def preset_command(name: str, gate: str | Sequence[str]) -> AgentCommand:
    """The argv template of preset ``name`` (validated by the plan) for this gate command."""
    return PRESETS[name].command(gate)


def install_hint(program: str) -> str:
    """How to install ``program`` when it is one of the supported CLIs, else ""."""
    preset = PRESETS.get(program)
    return f" ({preset.install})" if preset else ""


# -- is each agent's program there? ---------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One program the plan launches, the agents that use it, and where it was found."""

    name: str  # argv[0] as the plan writes it (or the preset's CLI)
    agents: tuple[int, ...]
    path: str | None  # None: not found

    def describe(self) -> str:
        return f"{self.name!r} ({_agents_text(self.agents)})"


def _agents_text(agents: Sequence[int]) -> str:
    shown = ", ".join(map(str, agents[:10])) + (", ..." if len(agents) > 10 else "")
    return f"agent{'s' if len(agents) > 1 else ''} {shown}"


def find_programs(
    commands: Mapping[int, AgentCommand], root: Path, search_path: str | None
) -> list[Program]:
    """Each distinct program of ``commands``, looked up as the launch will: on ``search_path``,
    or, written with a slash, relative to ``root`` (the agents' worktrees hold the same files)."""
    users: dict[str, list[int]] = {}
    for agent, command in sorted(commands.items()):
        users.setdefault(command.program, []).append(agent)
    return [
        Program(name, tuple(agents), _locate(name, root, search_path))
        for name, agents in users.items()
    ]


def _locate(program: str, root: Path, search_path: str | None) -> str | None:
    import shutil

    if os.sep in program:
        path = root / os.path.expanduser(program)
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(program, path=search_path)


def missing_programs(programs: Sequence[Program], unset: Sequence[int]) -> str | None:
    """One line naming every program not found and every agent without a command; None if none."""
    parts = [
        f"{p.describe()} is not on PATH{install_hint(os.path.basename(p.name))}"
        for p in programs
        if p.path is None
    ]
    if unset:
        parts.append(
            f"{_agents_text(unset)} ha{'ve' if len(unset) > 1 else 's'} no command "
            "(set agents.preset or agents.command, or add [agents.commands] entries)"
        )
    return "; ".join(parts) if parts else None


VERSION_TIMEOUT = 20.0  # seconds: a node CLI's first start can be slow


def program_version(program: Program) -> str:
    """The first line of ``PROGRAM --version``, for the supported CLIs only.

    Another program is not run: its ``--version`` could start real work.
    """
    import subprocess

    if program.path is None:
        return "not found"
    if os.path.basename(program.name) not in PRESETS:
        return "version not asked (not a supported agent CLI)"
    try:
        done = subprocess.run(
            [program.path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=VERSION_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"--version did not answer within {VERSION_TIMEOUT:g}s"
    except OSError as exc:
        return f"cannot run --version: {exc.strerror or exc}"
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    line = text.splitlines()[0] if text else ""
    return line if done.returncode == 0 and line else f"--version failed (exit {done.returncode})"


# -- what the agent reports it cost --------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What one agent run reported: cost in USD (None: not reported) and tokens."""

    cost_usd: float | None
    input_tokens: int
    output_tokens: int


def usage_in(lines: Iterable[str]) -> Usage | None:
    """The usage an agent's output reports, None when it reports none.

    Claude Code (stream-json or json): the final ``result`` event carries
    ``total_cost_usd`` and the run's cumulative ``usage``; input counts the
    cache reads and writes too (every input token the run processed).
    Codex (``--json``): each ``turn.completed`` event carries that turn's
    ``usage`` (``cached_input_tokens`` is part of ``input_tokens``); Codex
    reports no cost. Other output is ignored.
    """
    claude: Usage | None = None
    codex: list[Usage] = []
    for line in lines:
        event = _event(line)
        if event is None:
            continue
        if event.get("type") == "result" and "usage" in event:
            claude = _claude_usage(event) or claude
        elif event.get("type") == "turn.completed":
            found = _codex_usage(event)
            codex += [found] if found else []
    if claude is not None:
        return claude
    if codex:
        return Usage(
            None,
            sum(u.input_tokens for u in codex),
            sum(u.output_tokens for u in codex),
        )
    return None


def _event(line: str) -> dict[str, object] | None:
    text = line.strip()
    if not text.startswith("{") or ('"result"' not in text and '"turn.completed"' not in text):
        return None  # not an event we read: skip the parse
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _count(value: object) -> int:
    """A token count as reported; anything else (missing, negative, not a number) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _amount(value: object) -> float | None:
    """A reported cost in USD: a finite number >= 0, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _claude_usage(event: dict[str, object]) -> Usage | None:
    usage = event.get("usage")
    if not isinstance(usage, dict):
        return None
    input_keys = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return Usage(
        _amount(event.get("total_cost_usd")),
        sum(_count(usage.get(key)) for key in input_keys),
        _count(usage.get("output_tokens")),
    )


def _codex_usage(event: dict[str, object]) -> Usage | None:
    usage = event.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(None, _count(usage.get("input_tokens")), _count(usage.get("output_tokens")))
