"""The scripted agent of the demo: deterministic edits per issue, and conflict resolution.

``python -m paradev.demo_agent --prompt-file FILE`` is launched by run-batch
in an agent's worktree. It reads the task from the PARADEV_* variables (as
any agent may), makes the edits scripted for that issue, commits some of them
and leaves the rest for paradev to commit. Launched for a conflict
(``PARADEV_MODE=conflict``), it keeps both sides of every conflict, stages the
files and continues the rebase, as an AI agent would after reading the prompt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from paradev.git import Git, rebase_continue, rebase_in_progress, unmerged_paths


@dataclass(frozen=True)
class Script:
    """What the agent does for one issue: text to append or replace, and what it commits."""

    append: dict[str, str] = field(default_factory=dict)
    replace: dict[str, tuple[str, str]] = field(default_factory=dict)  # path -> (old, new)
    leave_uncommitted: tuple[str, ...] = ()


def _function(name: str, doc: str, body: str) -> str:
    return f'\n\ndef {name}(a: float, b: float) -> float:\n    """{doc}"""\n{body}'


def _test(name: str, check: str) -> str:
    return f"\n\ndef test_{name}() -> None:\n    {check}\n"


CLI = '''"""The command line: ``python -m calc.cli add 2 3`` prints 5.0."""

import sys

from calc import core


def main(argv: list[str]) -> str:
    name, a, b = argv
    return str(getattr(core, name)(float(a), float(b)))


if __name__ == "__main__":
    print(main(sys.argv[1:]))
'''

SCRIPTS: dict[int, Script] = {
    101: Script(
        append={
            "calc/core.py": _function("subtract", "a minus b.", "    return a - b\n"),
            "tests/test_core.py": _test("subtract", "assert core.subtract(5, 3) == 2"),
        },
        leave_uncommitted=("tests/test_core.py",),
    ),
    102: Script(
        append={
            "calc/cli.py": CLI,
            "tests/test_cli.py": "from calc.cli import main\n"
            + _test("cli_add", 'assert main(["add", "2", "3"]) == "5.0"'),
        },
    ),
    103: Script(
        replace={
            "calc/core.py": (
                '"""Arithmetic helpers."""',
                '"""Arithmetic helpers: pure functions of two numbers, used by calc.cli."""',
            )
        },
        append={"README.md": "\n## Usage\n\n    python -m calc.cli add 2 3\n"},
    ),
    104: Script(
        append={
            "calc/core.py": _function("multiply", "a times b.", "    return a * b\n"),
            "tests/test_core.py": _test("multiply", "assert core.multiply(4, 3) == 12"),
        },
    ),
    105: Script(
        append={
            "calc/core.py": _function(
                "divide",
                "a divided by b; a clear error instead of ZeroDivisionError.",
                '    if b == 0:\n        raise ValueError("cannot divide by zero")\n'
                "    return a / b\n",
            ),
            "tests/test_core.py": _test("divide", "assert core.divide(6, 3) == 2"),
        },
        leave_uncommitted=("calc/core.py", "tests/test_core.py"),
    ),
    106: Script(
        append={
            "calc/__init__.py": '\n__version__ = "0.2.0"\n',
            "tests/test_version.py": "import calc\n"
            + _test("version", 'assert calc.__version__ == "0.2.0"'),
        },
    ),
}


def say(text: str) -> None:
    """One line of progress (the log's last line shows in run-batch's live table)."""
    print(f"demo agent: {text}", flush=True)
    time.sleep(0.05)


def do_task(worktree: Path, issue: int, title: str) -> int:
    script = SCRIPTS.get(issue)
    if script is None:
        say(f"no scripted edits for issue #{issue}")
        return 1
    for name, (old, new) in script.replace.items():
        path = worktree / name
        path.write_text(path.read_text(encoding="utf-8").replace(old, new, 1), encoding="utf-8")
        say(f"edited {name}")
    for name, text in script.append.items():
        path = worktree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
        say(f"wrote {name}")
    mine = sorted((set(script.append) | set(script.replace)) - set(script.leave_uncommitted))
    if mine:
        git = Git(worktree)
        git.run("add", "--", *mine)
        subject = title if not script.leave_uncommitted else f"wip: {title.split(': ', 1)[-1]}"
        git.run("commit", "--quiet", "-m", f"{subject} (#{issue})")
        say(f"committed {', '.join(mine)}")
    for name in script.leave_uncommitted:
        say(f"left {name} uncommitted")
    return 0


def keep_both_sides(text: str) -> str:
    """Drop the conflict markers (and a diff3 base section), keeping ours then theirs."""
    kept: list[str] = []
    in_base = False
    for line in text.splitlines(keepends=True):
        if line.startswith(("<<<<<<<", ">>>>>>>")):
            continue
        if line.startswith("|||||||"):
            in_base = True
        elif line.startswith("======="):
            in_base = False
        elif not in_base:
            kept.append(line)
    return "".join(kept)


def resolve_conflict(worktree: Path) -> int:
    """Resolve every stop of the rebase in progress by keeping both sides; 0 when it finished."""
    for _ in range(100):
        if rebase_in_progress(worktree) is None:
            say("rebase finished")
            return 0
        paths = unmerged_paths(worktree)
        for name in paths:
            path = worktree / name
            path.write_text(keep_both_sides(path.read_text(encoding="utf-8")), encoding="utf-8")
            say(f"resolved {name} by keeping both sides")
        if paths:
            Git(worktree).run("add", "--", *paths)
        rebase_continue(worktree)
    say("the rebase keeps stopping; giving up")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prompt-file", required=True, help="the prompt paradev wrote")
    args = parser.parse_args(argv)
    prompt = Path(args.prompt_file).read_text(encoding="utf-8")
    say(f"read {len(prompt.splitlines())} lines of prompt")
    worktree = Path.cwd()
    if os.environ.get("PARADEV_MODE") == "conflict":
        return resolve_conflict(worktree)
    return do_task(worktree, int(os.environ["PARADEV_ISSUE"]), os.environ["PARADEV_TITLE"])


if __name__ == "__main__":
    sys.exit(main())
