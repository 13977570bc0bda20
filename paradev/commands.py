"""The one command table: every command described once, for both faces.

``paradev NAME`` (``paradev.cli``, argparse) and ``invoke NAME``
(``paradev.tasks``) are both built from ``COMMANDS``, so their commands and
flags cannot drift apart. This module never imports invoke, and each
command imports the core modules it needs when it runs, so a fast command
(``check``, ``status``, ``conflicts``) loads only what it uses.

Adding a command: write its function in ``paradev.handlers`` (it receives
every argument already converted, by its Python name) and add one
``Command`` to ``COMMANDS`` below. invoke has no variadic or optional positionals: an argument
declared with ``many(...)`` (``PATH...``) is the repeatable ``--path`` on
invoke's side, and one declared with ``maybe(...)`` (``[BATCH]``) the
optional ``--batch`` (see ``Arg.invoke_flag``); ``paradev`` takes both
spellings, so every flag works on both faces.
"""

from __future__ import annotations

import sys
from types import MappingProxyType

from paradev import handlers
from paradev.errors import EXIT_INTERRUPTED, EXIT_USAGE, ParadevError, PreconditionError
from paradev.records import NamedTuple
from paradev.text import printable_lines

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Literal, TypeAlias

    Position: TypeAlias = Literal["", "one", "maybe", "many"]

# -- argument types -----------------------------------------------------------------------


def _text(text: str, label: str) -> str:
    return text


def _int(text: str, label: str) -> int:
    from paradev.limits import parse_int

    return parse_int(text, label)


def _hours(text: str, label: str) -> float:
    from paradev.limits import parse_hours

    return parse_hours(text)


def _seconds(text: str, label: str) -> float:
    from paradev.conflicts import parse_interval

    return parse_interval(text)


def _days(text: str, label: str) -> float:
    try:
        return float(text)  # the range is checked where the days are used
    except ValueError:
        raise PreconditionError(
            f"{label} {text!r}: give a number of days, e.g. {label} 30"
        ) from None


# NamedTuples rather than dataclasses: every command loads this table, and a dataclass
# generates its methods with exec at import (a few ms of every start-up).
class ArgType(NamedTuple):
    """How an argument is shown (``metavar``) and turned from text into a value."""

    metavar: str
    convert: Callable[[str, str], Any]  # (text, label shown in errors) -> value


TEXT = ArgType("TEXT", _text)
NAME = ArgType("NAME", _text)
PATH = ArgType("PATH", _text)
DIR = ArgType("DIR", _text)
INT = ArgType("INT", _int)
HOURS = ArgType("HOURS", _hours)
SECONDS = ArgType("SECONDS", _seconds)
DAYS = ArgType("DAYS", _days)
AGENT_LIST = ArgType("LIST", _text)  # "1,3": checked against the plan by the command
SHELL = ArgType("SHELL", _text)
FORMAT = ArgType("FORMAT", _text)


class Arg(NamedTuple):
    """One argument: an on/off flag (``type`` None), an option, or a positional.

    ``position``: "" an option (``--name VALUE``) or flag; "one" a required
    positional; "maybe" an optional positional (``[NAME]``); "many" one or
    more positionals (``NAME...``).
    """

    name: str  # the Python name; the flag is --name-with-dashes
    help: str
    type: ArgType | None = None
    position: Position = ""
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.strip("_").replace("_", "-")

    @property
    def label(self) -> str:
        """How the argument is named in usage lines and error messages."""
        return self.name.upper() if self.position else self.flag

    @property
    def invoke_flag(self) -> bool:
        """invoke cannot take this positional: there it is the flag ``--name`` (repeatable)."""
        return self.position in ("maybe", "many")

    def convert(self, raw: Any) -> Any:
        if self.type is None or raw is None:
            return raw if raw is not None else ([] if self.position == "many" else None)
        if self.choices and raw not in self.choices:
            raise PreconditionError(
                f"{self.label} must be one of {', '.join(self.choices)}, not {raw!r}"
            )
        if isinstance(raw, list):
            return [self.type.convert(item, self.label) for item in raw]
        return self.type.convert(raw, self.label)


def flag(name: str, help: str) -> Arg:
    return Arg(name, help)


def option(name: str, type: ArgType, help: str) -> Arg:
    return Arg(name, help, type)


def one(name: str, type: ArgType, help: str, choices: tuple[str, ...] = ()) -> Arg:
    return Arg(name, help, type, "one", choices)


def maybe(name: str, type: ArgType, help: str) -> Arg:
    return Arg(name, help, type, "maybe")


def many(name: str, type: ArgType, help: str) -> Arg:
    return Arg(name, help, type, "many")


GROUPS = ("plan", "agents", "conflicts", "landing", "maintenance")
BAD_INPUT = "bad input, plan or state error, or a precondition not met (nothing changed)"


class Command(NamedTuple):
    """One command of both faces: what it is called, takes, does, and returns."""

    name: str
    group: str  # one of GROUPS
    summary: str  # one line, shown in the command list
    run: Callable[..., None]  # called with every argument, converted, by Python name
    example: str  # one command line, without the leading "paradev "
    args: tuple[Arg, ...] = ()
    exits: Mapping[int, str] = MappingProxyType({0: "success"})
    details: str = ""
    # Answers from kept answers alone when it can (starting no process, writing nothing):
    # called first with the same arguments; False lets ``run`` answer.
    quick: Callable[..., bool] | None = None

    def exit_codes(self) -> dict[int, str]:
        """Every exit code the command can give; 2 and the signal codes hold for all of them."""
        return {
            **self.exits,
            EXIT_USAGE: BAD_INPUT,
            128 + 1: "stopped by SIGHUP (what it started is stopped too)",
            EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
            128 + 15: "stopped by SIGTERM (what it started is stopped too)",
        }

    def usage(self) -> str:
        """``assign AGENT ISSUE TITLE HOURS [--batch NAME]``."""
        words = [self.name]
        for arg in self.args:
            if arg.position == "one":
                words.append(arg.label)
            elif arg.position == "maybe":
                words.append(f"[{arg.label}]")
            elif arg.position == "many":
                words.append(f"{arg.label}...")
        for arg in self.args:
            if not arg.position:
                words.append(f"[{arg.flag} {arg.type.metavar}]" if arg.type else f"[{arg.flag}]")
        return " ".join(words)


def call(command: Command, raw: Mapping[str, Any]) -> int:
    """The one error boundary: run ``command`` and return its exit code.

    A ParadevError becomes one line on stderr and its exit code; anything
    else is a bug and keeps its traceback. SIGTERM and SIGHUP end a command
    as Ctrl-C does: every process group it started is stopped, and it exits
    128 + the signal number.
    """
    try:
        values = {arg.name: arg.convert(raw.get(arg.name)) for arg in command.args}
        if command.quick is not None and command.quick(**values):
            return 0
        from paradev import processes  # signals and process groups: ~15 ms of imports

        with processes.interruptible():
            command.run(**values)
    except ParadevError as err:
        print(printable_lines(f"paradev: {err}"), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as interrupt:
        from paradev import processes

        if isinstance(interrupt, processes.Interrupted):
            print(f"paradev: interrupted ({processes.describe(interrupt)})", file=sys.stderr)
            return interrupt.exit_code
        print("paradev: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# -- the table -------------------------------------------------------------------------------

JSON = flag("json", "print JSON (stable keys) instead of text")

COMMANDS: tuple[Command, ...] = (
    Command(
        "init",
        "plan",
        "Write the commented example plan.toml (with flags: a tasks.py, a CI workflow).",
        handlers.init,
        "init --agents 4",
        args=(
            option(
                "agents", INT, "the plan's agent count (1..1000); the example's tasks go to them"
            ),
            flag("invoke", "write a tasks.py exposing paradev's commands to 'invoke' instead"),
            option("ci", NAME, "write a CI workflow instead: github"),
        ),
        exits={0: "written (an existing file is never overwritten: exit 2)"},
    ),
    Command(
        "assign",
        "plan",
        "Add a task to plan.toml (comments and layout kept) and mark it assigned.",
        handlers.assign,
        "assign 1 16 'Implement the status command' 2.5 --batch cli",
        args=(
            one("agent", INT, "agent number (1..agents.count)"),
            one("issue", INT, "issue number, unique in the plan"),
            one("title", TEXT, "task title, stored verbatim"),
            one("hours", HOURS, "estimated hours (a number >= 0)"),
            option("batch", NAME, "batch to add the task to (default: the last; created if new)"),
        ),
    ),
    Command(
        "estimate",
        "plan",
        "Sequential vs parallel hours (critical path per batch), time saved and cost.",
        handlers.estimate,
        "estimate --json",
        args=(JSON,),
        details="Then estimated against actual: the hours run-batch measured and the cost "
        "agents reported, per batch and in total.",
    ),
    Command(
        "setup",
        "agents",
        "Create or repair every agent's worktree and branch from base (idempotent).",
        handlers.setup,
        "setup --agents 4",
        args=(
            option("agents", INT, "set up agents 1..N only (default: agents.count)"),
            option("host", NAME, "this clone is host NAME of [agents] hosts (remembered)"),
        ),
    ),
    Command(
        "start",
        "agents",
        "Start the agent's next planned or assigned task and record its fork point from base.",
        handlers.start,
        "start 2",
        args=(one("agent", INT, "agent number"),),
    ),
    Command(
        "complete",
        "agents",
        "Mark the agent's task completed; files come from the branch's real diff.",
        handlers.complete,
        "complete 2",
        args=(
            one("agent", INT, "agent number"),
            flag("empty", "complete it although the branch has no new commit (no change needed)"),
        ),
    ),
    Command(
        "reopen",
        "agents",
        "Take a completed, failed, interrupted or dropped task back into work (branch kept).",
        handlers.reopen,
        "reopen 16",
        args=(one("issue", INT, "issue number of the task"),),
    ),
    Command(
        "drop",
        "agents",
        "Never run the task: run-batch and merge skip it; its commits go to a backup ref.",
        handlers.drop,
        "drop 16",
        args=(one("issue", INT, "issue number of the task never to run"),),
        details="The commits leave the agent branch at once when its worktree is clean, "
        "else before the agent's next task; the backup ref is named.",
    ),
    Command(
        "run-batch",
        "agents",
        "Start a batch: assign and start its tasks, launch the agents at once, wait, complete.",
        handlers.run_batch,
        "run-batch cli-commands --agents 1,3",
        args=(
            maybe("batch", NAME, "batch to run (default: the first batch not fully merged)"),
            flag("no_launch", "only assign and start; print each agent's worktree and prompt"),
            flag("dry_run", "say what would happen and change nothing"),
            option("agents", AGENT_LIST, "only these agents, comma-separated (e.g. 1,3)"),
            flag("json", "print one JSON object per event, one per line"),
        ),
        exits={0: "every task completed (or nothing to run)", 1: "a task did not complete"},
        details="The agents start from agents.preset (claude, codex, aider), agents.command "
        "or [agents.commands]; a program not on PATH is refused before anything starts. "
        "What an agent reports it cost is recorded on its task.",
    ),
    Command(
        "status",
        "agents",
        "Show every agent: branch, worktree, tasks, hours, ahead/behind, dirty.",
        handlers.status,
        "status --json",
        args=(JSON,),
    ),
    Command(
        "conflicts",
        "conflicts",
        "Pairwise and against-base conflicts from the branches' real contents.",
        handlers.conflicts,
        "conflicts --uncommitted --check",
        args=(
            flag("json", "print JSON: the pairs that overlap or conflict, and counts"),
            flag("all_pairs", "with --json: list every pair, clean ones too"),
            flag("uncommitted", "include each worktree's uncommitted and untracked work"),
            flag("check", "exit 1 when any real conflict exists (for CI)"),
            flag("remote", "fetch project.remote and use its remote-tracking agent branches"),
            flag("watch", "re-check every --interval seconds, print what changed (Ctrl-C ends)"),
            option("interval", SECONDS, "seconds between checks with --watch (default 5)"),
            Arg(
                "format",
                "text (default), dot (Graphviz) or mermaid: the conflict graph",
                FORMAT,
                choices=("text", "dot", "mermaid"),
            ),
        ),
        exits={0: "done (with --check: no real conflict)", 1: "with --check: a real conflict"},
    ),
    Command(
        "check",
        "conflicts",
        "Exit 1 naming the agents whose branch or worktree already changes PATH.",
        handlers.check,
        "check src/cli.py docs/ --agent 2",
        args=(
            many("path", PATH, "a file or directory you are about to change"),
            option("agent", INT, "your own agent number, left out of the check"),
            flag("json", "print JSON: every claim (path, agent, where) and the agents"),
        ),
        exits={0: "no other agent changes these paths", 1: "another agent does (named)"},
        details="Run it before editing a file; uncommitted work in worktrees counts.",
        quick=handlers.check_kept,
    ),
    Command(
        "merge-order",
        "landing",
        "The landing order that respects depends_on with the fewest conflicting rebases.",
        handlers.merge_order,
        "merge-order --json",
        args=(JSON,),
    ),
    Command(
        "merge",
        "landing",
        "Land every agent's completed work on base: rebase, gate, fast-forward, push.",
        handlers.merge,
        "merge --dry-run",
        args=(
            flag(
                "dry_run",
                "simulate the whole train (merge-tree/commit-tree), the queue's candidates too; "
                "change nothing",
            ),
            flag("continue_", "resume a stopped or interrupted train where it was"),
            flag("abort", "end the train: abort paradev's rebase, restore that branch's backup"),
            flag("skip", "leave the stopped agent out and go on with the others"),
            flag("push", "push base and the rewritten agent branches (default: merge.push)"),
            flag("no_push", "do not push, whatever merge.push says"),
            flag("no_gate", "land without running gate.command"),
            flag("json", "print the outcome as JSON (landed, skipped, stop); progress to stderr"),
            flag("follow", "also land work completed while the train runs (what paradev run uses)"),
        ),
        exits={0: "everything landed", 1: "the train stopped (conflict or gate failure)"},
    ),
    Command(
        "cleanup",
        "landing",
        "Remove the worktrees of agents whose work is merged and whose trees are clean.",
        handlers.cleanup,
        "cleanup --delete-branches",
        args=(
            flag("force", "also remove dirty or unmerged worktrees (work kept under backup refs)"),
            flag("delete_branches", "delete the agent branches too (never base or checked out)"),
            flag("backups", "list the backups paradev keeps (archives, old states, backup refs)"),
            option("older", DAYS, "with --backups: remove the backups made more than DAYS ago"),
        ),
        exits={0: "every eligible worktree removed", 1: "some worktrees were kept (listed)"},
    ),
    Command(
        "report",
        "landing",
        "Write one self-contained HTML page: conflict heat map, timeline, train, estimate.",
        handlers.report,
        "report --output report.html --open",
        args=(
            option("output", PATH, "the HTML file (default: <git common dir>/paradev/report.html)"),
            flag("open_", "open it in the default browser afterwards"),
        ),
        details="Conflicts are shown as they were too: every conflicts scan and every "
        "train keeps a snapshot in the state.",
    ),
    Command(
        "doctor",
        "maintenance",
        "Check git, the plan, the state, worktrees and agent programs (exit 1 when wrong).",
        handlers.doctor,
        "doctor --repair",
        args=(
            flag(
                "repair",
                "fix what is safe: prune stale worktree records, move a corrupt state aside, "
                "recreate missing worktrees",
            ),
        ),
        exits={0: "all healthy", 1: "problems found (listed)"},
    ),
    Command(
        "reset",
        "maintenance",
        "Clear the shared state; refused while a merge or run-batch runs; the old file is kept.",
        handlers.reset,
        "reset --yes",
        args=(flag("yes", "clear a state that holds records (the old file is kept as a backup)"),),
    ),
    Command(
        "demo",
        "maintenance",
        "Run the whole flow on a generated sample project with a scripted agent.",
        handlers.demo,
        "demo --folder /tmp/paradev-demo",
        args=(option("folder", DIR, "where to build the sample project (default: ./demo-run)"),),
    ),
    Command(
        "completion",
        "maintenance",
        "Print a shell completion script (bash or zsh).",
        handlers.completion,
        "completion bash > ~/.local/share/bash-completion/completions/paradev",
        args=(one("shell", SHELL, "the shell: bash or zsh", choices=("bash", "zsh")),),
        details="bash: source the output, or save it as completions/paradev. "
        "zsh: save it as _paradev in a folder on $fpath.",
    ),
    Command(
        "run",
        "agents",
        "Drive the whole plan unattended: launch tasks as their dependencies land, land each.",
        handlers.run,
        "run --json",
        args=(
            flag("json", "print one JSON object per event, one per line"),
            flag(
                "detach",
                "run in the background (log and pid file under the common dir); "
                "see 'paradev wait' and 'paradev logs'",
            ),
        ),
        exits={0: "every task landed or was dropped", 1: "a task did not land"},
        details='project.schedule = "flow" starts a task once its depends_on landed and its '
        'agent is free; "batches" also waits for every earlier batch. A completed task lands '
        "through the merge train at once; 'paradev status' shows what each task waits for.",
    ),
    Command(
        "wait",
        "agents",
        "Wait for the detached run ('run --detach') to end; exit with its exit code.",
        handlers.wait,
        "wait",
        exits={0: "the detached run succeeded", 1: "the detached run stopped (not all landed)"},
        details="Any other code is the run's own too (e.g. 143 when it got SIGTERM); exit 2 "
        "also when there is no detached run. Interrupting wait leaves the run going.",
    ),
    Command(
        "logs",
        "agents",
        "Print the detached run's log, or the log of an agent's current or last task.",
        handlers.logs,
        "logs 2 --follow",
        args=(
            maybe("agent", INT, "agent number (default: the detached run's own log)"),
            flag("follow", "keep printing new lines until the run (or the agent's process) ends"),
        ),
    ),
    Command(
        "sync",
        "agents",
        "Fetch the state shared by hosts from the remote into this clone's cache.",
        handlers.sync,
        "sync",
        details="status, check and the report read the cache without the network; every "
        "state change fetches first. sync shows what other hosts did since.",
    ),
)

BY_NAME: dict[str, Command] = {command.name: command for command in COMMANDS}
