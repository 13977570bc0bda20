"""Bench: the agent presets against the real CLIs' ``--help`` (needs npm, PyPI, the network).

Installs Claude Code and Codex (npm) and Aider (PyPI, in a venv) into a
temporary folder, asks each for its version and its ``--help`` (Codex: ``codex
exec --help``), and checks that every flag a preset passes, and every fixed
value it gives a flag (``stream-json``, ``acceptEdits``, ``workspace-write``),
appears there. Exits 1 when one is missing: the preset drifted from its tool.
Not part of the test suite (it downloads the tools).

    python bench/agents.py [--keep DIR]

``--keep DIR`` installs into DIR (reused when already there) instead of a
temporary folder.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from paradev.presets import PRESET_NAMES, preset_command

NPM_PACKAGES = ("@anthropic-ai/claude-code", "@openai/codex")
PYPI_PACKAGE = "aider-chat"
HELP = {"claude": ["--help"], "codex": ["exec", "--help"], "aider": ["--help"]}
FREE_VALUES = {"--allowedTools", "--test-cmd"}  # values the plan decides (rules, the gate)


def install(folder: Path) -> dict[str, Path]:
    """Each CLI's executable, installed under ``folder`` (kept when already there)."""
    npm_bin = folder / "npm" / "node_modules" / ".bin"
    if not (npm_bin / "claude").exists() or not (npm_bin / "codex").exists():
        step(["npm", "install", "--no-fund", "--prefix", str(folder / "npm"), *NPM_PACKAGES])
    venv = folder / "aider"
    if not (venv / "bin" / "aider").exists():
        step([sys.executable, "-m", "venv", str(venv)])
        step([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", PYPI_PACKAGE])
    return {
        "claude": npm_bin / "claude",
        "codex": npm_bin / "codex",
        "aider": venv / "bin" / "aider",
    }


def step(argv: list[str]) -> None:
    started = time.perf_counter()
    print(f"$ {' '.join(argv)}", flush=True)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    print(f"  done in {time.perf_counter() - started:.0f}s", flush=True)


def ask(program: Path, args: list[str], home: Path) -> str:
    env = {**os.environ, "HOME": str(home), "NO_COLOR": "1"}
    done = subprocess.run(
        [str(program), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=180,
        check=False,
    )
    return done.stdout + done.stderr


def wanted(name: str) -> list[str]:
    """The flags and fixed flag values preset ``name`` passes (both of its forms)."""
    command = preset_command(name, "make test")
    found: list[str] = []
    for argv in (command.argv, command.stdin_argv):
        args = list(argv[1:])
        for index, arg in enumerate(args):
            if arg.startswith("-") and arg not in ("-", "--"):
                found.append(arg)
                value = args[index + 1] if index + 1 < len(args) else ""
                fixed = value and not value.startswith("-") and "{" not in value
                if fixed and arg not in FREE_VALUES:
                    found.append(value)
            elif index == 0 and not arg.startswith("{"):
                found.append(arg)  # a subcommand (codex exec)
    return list(dict.fromkeys(found))


def present(word: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def check(name: str, program: Path, home: Path) -> int:
    version = ask(program, ["--version"], home).strip().splitlines()
    print(f"\n{name}: {version[0] if version else 'version unknown'}")
    text = ask(program, HELP[name], home)
    if name == "codex":
        text += ask(program, ["--help"], home)  # "exec" is listed there
    missing = 0
    for word in wanted(name):
        ok = present(word, text)
        missing += not ok
        print(f"  {'ok     ' if ok else 'MISSING'} {word}")
    return missing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="install into this folder and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="paradev-agents-") as tmp:
        folder = (args.keep or Path(tmp)).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        home = Path(tmp) / "home"  # the CLIs may write config: never the user's
        home.mkdir()
        programs = install(folder)
        missing = sum(check(name, programs[name], home) for name in PRESET_NAMES)
    print(f"\nflags or values missing from the CLIs' --help: {missing} (limit 0)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
