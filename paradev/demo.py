"""The demo: a sample project, the example plan and a scripted agent, driven through paradev.

``make demo`` (or ``python -m paradev.demo``) builds a small Python project
with tests in a fresh folder, copies the repository's ``plan.toml`` there with
its commands pointing at this interpreter and the scripted agent
(``paradev.demo_agent``), and runs every step a user would run, printing
each command and its output, and finally main's log.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from paradev.errors import ParadevError, PreconditionError, Stopped
from paradev.git import Git

Echo = Callable[[str], None]

MARKER = ".paradev-demo"
PROJECT = "calc"
# The repository's top-level plan.toml; an installed wheel carries a copy inside the package.
EXAMPLE_PLANS = (
    Path(__file__).resolve().parent.parent / "plan.toml",
    Path(__file__).resolve().parent / "example-plan.toml",
)

SAMPLE: dict[str, str] = {
    "README.md": "# calc\n\nA tiny calculator: the sample project of the paradev demo.\n",
    ".gitignore": "__pycache__/\n.pytest_cache/\n",
    "pyproject.toml": '[tool.pytest.ini_options]\npythonpath = ["."]\n'
    'addopts = "-p no:cacheprovider"\n',
    "calc/__init__.py": '"""calc: a tiny calculator."""\n',
    "calc/core.py": '"""Arithmetic helpers."""\n\n\n'
    "def add(a: float, b: float) -> float:\n"
    '    """a plus b."""\n'
    "    return a + b\n",
    "tests/test_core.py": "from calc import core\n\n\n"
    "def test_add() -> None:\n    assert core.add(2, 3) == 5\n",
}


@dataclass(frozen=True)
class Step:
    """One command of the demo, what it shows, and the exit code it must end with."""

    title: str
    args: tuple[str, ...]
    expect: int = 0


STEPS = (
    Step("Set up one worktree and branch per agent", ("setup",)),
    Step("Run the first batch: every agent at once, each in its worktree", ("run-batch",)),
    Step("What would merging do? (real merges in memory; nothing touched)", ("conflicts",)),
    Step("The order with the fewest conflicting rebases", ("merge-order",)),
    Step("Land the batch: rebase, gate = the sample's tests, fast-forward", ("merge",)),
    Step("Run the second batch", ("run-batch",)),
    Step("Two agents appended to calc/core.py: a real conflict", ("conflicts",)),
    Step("The order", ("merge-order",)),
    Step("Land it: the conflict goes back to its agent, which resolves it", ("merge",)),
    Step("What did working in parallel save?", ("estimate",)),
    Step("Where everything stands", ("status",)),
)
REPORT = "report.html"  # written beside the sample project by the last step
REPORT_STEP = Step(
    "See it all on one page: conflicts as they were, timeline, merge train",
    ("report", "--output", f"../{REPORT}"),
)


def prepare_folder(folder: Path) -> Path:
    """A fresh demo folder; an existing one is only removed if a previous demo made it."""
    if folder.exists():
        if not (folder / MARKER).exists():
            raise PreconditionError(
                f"{folder} exists and was not made by the demo; pick another folder"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by paradev's demo; safe to delete\n", encoding="utf-8")
    return folder / PROJECT


def demo_plan(text: str) -> str:
    """The example plan with "python3" replaced by this interpreter (comments kept)."""
    doc = tomlkit.parse(text)
    for section in ("agents", "gate"):
        table = doc[section]
        argv = table["command"]
        table["command"] = [sys.executable if a == "python3" else a for a in argv]
    return tomlkit.dumps(doc)


def create_sample(project: Path) -> None:
    """The sample project with its plan, committed on main with a local identity."""
    example = next((p for p in EXAMPLE_PLANS if p.is_file()), None)
    if example is None:
        raise PreconditionError(
            f"the example plan is missing ({EXAMPLE_PLANS[0]}); run the demo from a paradev clone"
        )
    project.mkdir(parents=True)
    files = {**SAMPLE, "plan.toml": demo_plan(example.read_text(encoding="utf-8"))}
    for name, text in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git = Git(project)
    git.run("init", "--quiet", "--initial-branch=main")
    for key, value in (
        ("user.name", "paradev demo"),
        ("user.email", "demo@paradev.invalid"),
        ("commit.gpgsign", "false"),
    ):
        git.run("config", key, value)
    git.run("add", "--all")
    git.run("commit", "--quiet", "-m", "chore: the calc sample project and its plan")


def run_step(project: Path, step: Step, echo: Echo) -> None:
    """Run ``paradev ARGS`` as a user would, streaming its output."""
    echo(f"\n## {step.title}\n$ paradev {' '.join(step.args)}")
    env = {k: v for k, v in os.environ.items() if k != "PARADEV_PLAN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "paradev", *step.args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        echo(line.rstrip("\n"))
    code = proc.wait()
    if code != step.expect:
        raise Stopped(
            f"demo: 'paradev {' '.join(step.args)}' exited {code}, expected {step.expect}"
        )


def run_demo(folder: Path | None = None, echo: Echo = print) -> Path:
    """Build the sample in ``folder`` (default ./demo-run) and run the whole flow; the project."""
    if importlib.util.find_spec("pytest") is None:
        raise PreconditionError(
            "the demo's gate runs the sample's tests with pytest, which is not installed here; "
            "use 'make demo' in a paradev clone, or pip install pytest"
        )
    project = prepare_folder((folder or Path("demo-run")).resolve())
    echo(f"paradev demo: a sample project in {project}, three scripted agents, two batches")
    create_sample(project)
    for step in STEPS:
        run_step(project, step, echo)
    echo("\n## main's log\n$ git log --oneline --graph main")
    echo(Git(project).out("log", "--oneline", "--graph", "main"))
    echo(f"\nThe sample stays in {project}; its worktrees are next to it.")
    run_step(project, REPORT_STEP, echo)
    echo(f"\nThe report: {project.parent / REPORT}")
    return project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="where to build the sample (./demo-run)")
    args = parser.parse_args(argv)
    try:
        run_demo(args.folder)
    except ParadevError as err:
        print(f"paradev: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
