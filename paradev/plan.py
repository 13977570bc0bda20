"""plan.toml -> a typed, validated ``Plan``; and round-trip edits that keep the file's layout.

Validation reports every problem at once, each with its key path
(``batches[1].tasks[0].hours``) and what was expected, so one run of a
command tells the user everything to fix.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from paradev.errors import PlanError
from paradev.git import is_valid_branch_name
from paradev.layout import plan_file
from paradev.limits import (
    MAX_AGENTS,
    MAX_DIGITS,
    MAX_HOURS,
    MAX_ISSUE,
    MAX_NESTING,
    MAX_PLAN_BYTES,
    MAX_PORT,
    LimitError,
    check_text,
    read_bounded,
    shown,
)
from paradev.records import NamedTuple

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any

    from tomlkit.items import AoT
    from tomlkit.toml_document import TOMLDocument

    from paradev.presets import AgentCommand

PARSED_PLAN = "plan-cache.json"  # under <common>/paradev: see ParsedCache
ON_CONFLICT_CHOICES = ("stop", "agent", "eject")
ON_GATE_FAILURE_CHOICES = ("stop", "eject")
MAX_PARALLEL, MAX_BATCH, MAX_RETRIES = 32, 256, 10  # gates at once; candidates per gate run
COMMIT_LEFTOVERS_CHOICES = ("tracked", "all", "none")
SCHEDULE_CHOICES = ("flow", "batches")  # `paradev run`: dependencies alone, or batch barriers

# The ``{name}`` placeholders run-batch fills in each argument of agents.command.
AGENT_PLACEHOLDERS = (
    "prompt_file",
    "prompt",  # the prompt text itself, as one argument
    "worktree",
    "branch",
    "agent",
    "issue",
    "title",
    "git_common_dir",  # where a linked worktree's git data lives (outside the worktree)
)
_PLACEHOLDER = r"\{([A-Za-z_][A-Za-z0-9_]*)\}"  # patterns compile at first use (re's cache)

if TYPE_CHECKING:
    Check = Callable[[Any], str | None]  # returns what was expected, or None when fine


def _kind(value: Any) -> str:
    return type(value).__name__


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "a string"


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _non_negative(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return None
    return "a finite number >= 0"


def _hours(value: Any) -> str | None:
    expected = _non_negative(value)
    if expected is None and value > MAX_HOURS:
        return f"a number of hours from 0 to {MAX_HOURS}"
    return expected


def _positive_number(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value > 0:
        return None
    return "a finite number > 0"


def _positive_int(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return "an integer > 0"


def _int_up_to(limit: int, what: str) -> Check:
    """A whole number from 1 to ``limit`` (see paradev.limits for why each bound exists)."""

    def check(value: Any) -> str | None:
        if _positive_int(value) is None and value <= limit:
            return None
        return f"{what} from 1 to {limit:,}"

    return check


_issue = _int_up_to(MAX_ISSUE, "an issue number")


def _count_up_to(limit: int) -> Check:
    """A whole number from 0 to ``limit``."""

    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit:
            return None
        return f"an integer from 0 to {limit}"

    return check


def _string_list(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return "a list of strings"


def _int_list(value: Any) -> str | None:
    if isinstance(value, list) and all(_issue(v) is None for v in value):
        return None
    return f"a list of issue numbers (each from 1 to {MAX_ISSUE:,})"


def _command(value: Any) -> str | None:
    if isinstance(value, str) or (_string_list(value) is None):
        return None
    return "a string or a list of strings"


def _argv(value: Any) -> str | None:
    if _string_list(value) is None and (not value or value[0]):
        return None
    return 'an argv list such as ["uv", "sync"] (never a shell line; first item non-empty)'


def _port_base(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PORT:
        return None
    return f"a port number from 1 to {MAX_PORT} (0: no PARADEV_PORT)"


def _table(value: Any) -> str | None:
    return None if isinstance(value, dict) else "a table"


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _preset_choice(value: Any) -> str | None:
    """agents.preset: "" or a preset's name (``paradev.presets``, loaded only when one is set)."""
    if value == "":
        return None
    from paradev.presets import PRESET_NAMES

    return _choice("", *PRESET_NAMES)(value)


class Key(NamedTuple):
    """One key of the schema: its default and its type check."""

    default: Any
    check: Check


SCHEMA: dict[str, dict[str, Key]] = {
    "project": {
        "base": Key("main", _string),
        "worktrees": Key("../{repo}-worktrees", _string),
        "branch_prefix": Key("parallel-dev/agent-", _string),
        "remote": Key("", _string),
        "schedule": Key("flow", _choice(*SCHEDULE_CHOICES)),
    },
    "agents": {
        "count": Key(3, _int_up_to(MAX_AGENTS, "an integer")),
        "command": Key([], _string_list),
        "timeout": Key(5400, _positive_number),
        "instructions": Key("", _string),
        "commit_leftovers": Key("tracked", _choice(*COMMIT_LEFTOVERS_CHOICES)),
        "preset": Key("", _preset_choice),  # a supported CLI (paradev.presets)
        "commands": Key({}, _table),  # agent number -> its own argv or preset (mixed fleets)
        "hosts": Key({}, _table),  # host name -> its agents: the plan shared by machines
        "lease_expiry": Key(300, _positive_number),  # seconds a host's lease may go unrenewed
    },
    "gate": {
        "command": Key("", _command),
        "timeout": Key(1800, _positive_number),
    },
    "merge": {
        "squash": Key(False, _boolean),
        "push": Key(False, _boolean),
        "on_conflict": Key("stop", _choice(*ON_CONFLICT_CHOICES)),
        "on_gate_failure": Key("stop", _choice(*ON_GATE_FAILURE_CHOICES)),
        "retries": Key(0, _count_up_to(MAX_RETRIES)),
        "parallel": Key(1, _int_up_to(MAX_PARALLEL, "an integer")),
        "batch": Key(1, _int_up_to(MAX_BATCH, "an integer")),
    },
    "setup": {  # making agent and gate worktrees ready to work (paradev.prepare)
        "copy": Key([], _string_list),
        "link": Key(False, _boolean),
        "command": Key([], _argv),
        "inputs": Key([], _string_list),
        "timeout": Key(1800, _positive_number),
        "port_base": Key(0, _port_base),
        "port_step": Key(10, _int_up_to(MAX_PORT, "an integer")),
    },
    "hooks": {
        "on_start": Key("", _string),
        "on_complete": Key("", _string),
        "on_merge": Key("", _string),
    },
    "estimate": {  # figures for `paradev estimate` only
        "overhead": Key(0.5, _non_negative),  # coordination hours per batch
        "input_tokens": Key(2_000_000, _non_negative),  # per task
        "output_tokens": Key(50_000, _non_negative),  # per task
        "input_price": Key(3.0, _non_negative),  # per million input tokens
        "output_price": Key(15.0, _non_negative),  # per million output tokens
        "currency": Key("USD", _string),
    },
}

TASK_SCHEMA: dict[str, Key | None] = {  # None: required
    "agent": None,
    "issue": None,
    "title": None,
    "hours": None,
    "files": Key([], _string_list),
    "depends_on": Key([], _int_list),
    "prompt": Key("", _string),
}
TASK_CHECKS: dict[str, Check] = {
    "agent": _positive_int,
    "issue": _issue,
    "title": _string,
    "hours": _hours,
}


class Task(NamedTuple):
    """One issue assigned to one agent inside a batch."""

    agent: int
    issue: int
    title: str
    hours: float
    batch: str
    files: tuple[str, ...] = ()
    depends_on: tuple[int, ...] = ()
    prompt: str = ""


class Batch(NamedTuple):
    name: str
    tasks: tuple[Task, ...]


@functools.lru_cache(maxsize=16)
def _worktree_root(pattern: str, main_root: Path, home: str | None) -> Path:
    """``Plan.worktree_root``, worked out once per process (``status`` asks for every agent's
    folder); ``home``: what ``~`` means, part of the key."""
    # "~/worktrees/{repo}" means the home folder
    expanded = os.path.expanduser(pattern.replace("{repo}", main_root.name))
    return Path(os.path.normpath(main_root / expanded))


class Plan(NamedTuple):
    """The validated plan. ``settings[section][key]`` holds every configured value."""

    path: Path
    settings: dict[str, dict[str, Any]]
    batches: tuple[Batch, ...] = ()

    # -- settings with a name, so callers read well and mypy knows the types --
    @property
    def base(self) -> str:
        return str(self.settings["project"]["base"])

    @property
    def remote(self) -> str:
        return str(self.settings["project"]["remote"])

    @property
    def schedule(self) -> str:
        """`paradev run`: "flow" (each task once its dependencies landed) or "batches"."""
        return str(self.settings["project"]["schedule"])

    @property
    def agent_count(self) -> int:
        return int(self.settings["agents"]["count"])

    @property
    def agent_command(self) -> list[str]:
        return list(self.settings["agents"]["command"])

    def agent_command_for(self, agent: int) -> AgentCommand | None:
        """What launches ``agent``: its [agents.commands] entry, else agents.command, else the
        preset; None when nothing is configured (its prompt is handed out by hand)."""
        from paradev.presets import AgentCommand, preset_command

        agents = self.settings["agents"]
        entry = agents["commands"].get(str(agent))
        if isinstance(entry, str):
            return preset_command(entry, self.gate_command)
        if entry:
            return AgentCommand(tuple(entry))
        if agents["command"]:
            return AgentCommand(tuple(agents["command"]))
        if agents["preset"]:
            return preset_command(agents["preset"], self.gate_command)
        return None

    @property
    def launches_agents(self) -> bool:
        """Whether any agent has a command run-batch can launch."""
        agents = self.settings["agents"]
        return bool(agents["command"] or agents["preset"] or agents["commands"])

    @property
    def hosts(self) -> dict[str, tuple[int, ...]]:
        """Host name -> the agents it runs; empty: one machine runs every agent."""
        return {name: tuple(agents) for name, agents in self.settings["agents"]["hosts"].items()}

    @property
    def lease_expiry(self) -> float:
        """Seconds a host's lease (the train's, a task's) may stand still before it expires."""
        return float(self.settings["agents"]["lease_expiry"])

    @property
    def agent_timeout(self) -> float:
        return float(self.settings["agents"]["timeout"])

    @property
    def instructions(self) -> str:
        return str(self.settings["agents"]["instructions"])

    @property
    def commit_leftovers(self) -> str:
        """What run-batch commits of what an agent leaves: "tracked", "all" or "none"."""
        return str(self.settings["agents"]["commit_leftovers"])

    @property
    def gate_command(self) -> str | list[str]:
        command: str | list[str] = self.settings["gate"]["command"]
        return command

    @property
    def gate_timeout(self) -> float:
        return float(self.settings["gate"]["timeout"])

    @property
    def squash(self) -> bool:
        return bool(self.settings["merge"]["squash"])

    @property
    def push(self) -> bool:
        """Push after each landing; always with hosts, which see landed work only there."""
        return bool(self.settings["merge"]["push"]) or bool(self.settings["agents"]["hosts"])

    @property
    def on_conflict(self) -> str:
        return str(self.settings["merge"]["on_conflict"])

    @property
    def queue_settings(self) -> dict[str, Any]:
        """``[merge]``'s settings of the merge queue, even those the serial train does alike
        (a train following ``paradev run`` always goes through the queue: it is pipelined)."""
        merge = self.settings["merge"]
        keys = ("parallel", "batch", "on_gate_failure", "retries", "on_conflict")
        return {key: merge[key] for key in keys}

    @property
    def merge_queue(self) -> dict[str, Any] | None:
        """The merge queue's settings, None when the serial train does the same job.

        Fixed in the train's journal when it starts (see paradev.train.candidates).
        """
        chosen = self.queue_settings
        serial = {"parallel": 1, "batch": 1, "on_gate_failure": "stop", "retries": 0}
        if all(chosen[k] == v for k, v in serial.items()) and chosen["on_conflict"] != "eject":
            return None
        return chosen

    def hook(self, name: str) -> str:
        """The shell command of hook ``name`` (on_start, on_complete, on_merge); "" when unset."""
        return str(self.settings["hooks"][name])

    def section(self, name: str) -> dict[str, Any]:
        return self.settings[name]

    # -- derived names --
    def branch(self, agent: int) -> str:
        return f"{self.settings['project']['branch_prefix']}{agent}"

    def worktree_root(self, main_root: Path) -> Path:
        """Where agent worktrees live: outside the repository, relative to its main work tree."""
        pattern = str(self.settings["project"]["worktrees"])
        return _worktree_root(pattern, main_root, os.environ.get("HOME"))

    def worktree(self, agent: int, main_root: Path) -> Path:
        return self.worktree_root(main_root) / f"agent-{agent}"

    # -- tasks --
    def tasks(self) -> Iterator[Task]:
        """Every task in plan order."""
        for batch in self.batches:
            yield from batch.tasks

    def task(self, issue: int) -> Task | None:
        return next((t for t in self.tasks() if t.issue == issue), None)

    def tasks_for(self, agent: int) -> list[Task]:
        return [t for t in self.tasks() if t.agent == agent]

    def batch(self, name: str) -> Batch | None:
        return next((b for b in self.batches if b.name == name), None)


def find_plan(main_root: Path, explicit: str | None = None) -> Path:
    """The plan file: ``explicit``, else $PARADEV_PLAN, else plan.toml in the main work tree."""
    return Path(plan_file(str(main_root), explicit))


def load(path: Path, main_root: Path | None = None, parsed: Path | None = None) -> Plan:
    """Read and validate ``path``; ``main_root`` enables the checks that need the repository.

    ``parsed``: a file keeping the last text parsed with what the parser made of
    it (see ``ParsedCache``), so an unchanged plan is not parsed again.
    """
    try:
        data = read_bounded(path, MAX_PLAN_BYTES, str(path))
    except FileNotFoundError:
        raise PlanError(
            f"{path} not found; create one with 'paradev init' (the commented example) "
            "or set PARADEV_PLAN"
        ) from None
    except LimitError as exc:
        raise PlanError(
            f"{exc}; a plan is a text file of at most {MAX_PLAN_BYTES // 1_000_000} MB: "
            "check the path (or PARADEV_PLAN)"
        ) from None
    except OSError as exc:
        raise PlanError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(
            f"{path}: byte {exc.start} is not UTF-8 ({exc.reason}); save the file as UTF-8"
        ) from None
    return parse(text, path, main_root, parsed)


def parse(text: str, path: Path, main_root: Path | None = None, parsed: Path | None = None) -> Plan:
    """Validate ``text``: every problem is reported at once in one PlanError.

    A setting with a wrong type is replaced by its default for the checks
    across keys, and the checks that need it are skipped, so one mistake
    never reports follow-on problems.
    """
    data = _parse_toml(text, path, parsed)
    problems: list[str] = []
    bad: set[str] = set()  # "section.key" of settings whose value is unusable
    settings = _read_settings(data, problems, bad)
    located: list[Located] = []
    batches = _read_batches(data.get("batches", []), problems, located)
    plan = Plan(path=path, settings=settings, batches=batches)
    _check_settings(plan, main_root, bad, problems)
    _check_batches(plan, located, _written_dependencies(data), bad, problems)
    problems += [
        f"{where}: contains a NUL character (\\u0000), which no command line or environment "
        "variable can carry; remove it"
        for where in _strings_with_nul(data, "")
    ]
    if problems:
        raise PlanError(_report(path, [_named(p, data) for p in problems]))
    return plan


_TASK_PATH = r"batches\[(\d+)\](?:\.tasks\[(\d+)\])?"


def _named(problem: str, data: dict[str, Any]) -> str:
    """``batches[1].tasks[1].hours: ...`` -> ``batch "features", task #105: batches[1]...``.

    People know their batches by name and their tasks by issue number; the
    key path stays for the exact place.
    """
    match = re.match(_TASK_PATH, problem)
    batches = data.get("batches")
    if not match or not isinstance(batches, list) or int(match[1]) >= len(batches):
        return problem
    batch = batches[int(match[1])]
    name = batch.get("name") if isinstance(batch, dict) else None
    label = f"batch {_quoted(name)}" if isinstance(name, str) else f"batch {int(match[1]) + 1}"
    tasks = batch.get("tasks") if isinstance(batch, dict) else None
    if match[2] is not None and isinstance(tasks, list) and int(match[2]) < len(tasks):
        task = tasks[int(match[2])]
        issue = task.get("issue") if isinstance(task, dict) else None
        valid = _issue(issue) is None
        label += f", task #{issue}" if valid else f", task {int(match[2]) + 1}"
    return f"{label}: {problem}"


def _quoted(name: str) -> str:
    text = json.dumps(name, ensure_ascii=False)
    return text if len(text) <= 40 else text[:36] + '..."'


def _parse_toml(text: str, path: Path, parsed: Path | None = None) -> dict[str, Any]:
    """Parse with the standard library: reading (status) never imports tomlkit, only edits do."""
    if text.startswith("\ufeff"):
        raise PlanError(
            f"{path}:1:1: the file starts with a byte-order mark (BOM), which TOML does not "
            "allow; save it as UTF-8 without BOM"
        )
    cache = ParsedCache(parsed) if parsed else None
    known = cache.get(text) if cache else None
    if known is not None:  # this very text passed check_text before it was kept
        return known
    beyond = check_text(text, toml=True)  # before tomllib can recurse or int() can refuse
    if beyond:
        raise PlanError(f"{path}:{beyond.where}: {beyond.what}; {beyond.fix}")
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{path}:{_syntax_error(str(exc), text)}") from None
    if cache:
        cache.put(text, data)
    return data


_BOUNDS = [MAX_DIGITS, MAX_NESTING]  # what check_text holds a plan to: a kept plan met them
_KEY = (sys.version, _BOUNDS)  # what a kept parse was made with besides the text


class ParsedCache:
    """The last plan text parsed and its parse, in one JSON file.

    Keyed by the whole text (and the Python that parsed it, and the bounds it
    was checked against), never by file times: an answer for another text
    cannot be given, however the file changed. Only a text within the bounds
    (``check_text``) is kept, so a hit spares that check (a large regular
    expression), importing ``tomllib`` and parsing: most of reading a plan. A
    cache that cannot be read or written is simply not used.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, text: str) -> dict[str, Any] | None:
        try:
            kept = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(kept, dict) or (kept.get("python"), kept.get("bounds")) != _KEY:
            return None
        data = kept.get("data")
        return data if kept.get("text") == text and isinstance(data, dict) else None

    def put(self, text: str, data: dict[str, Any]) -> None:
        """Keep ``data`` for ``text``; only where paradev already keeps its files (after setup)."""
        if not self.path.parent.is_dir():
            return
        from paradev.atomic import write_atomic

        try:
            kept = json.dumps(
                {"python": sys.version, "bounds": _BOUNDS, "text": text, "data": data}
            )
            write_atomic(self.path, kept, durable=False)
        except (OSError, TypeError):  # TypeError: a TOML date, which JSON cannot hold
            pass


_POSITION = r"^(?P<reason>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)$"


def _syntax_error(message: str, text: str) -> str:
    """``Invalid value (at line 3, column 10)`` -> ``3:10: TOML syntax error: invalid value``."""
    match = re.match(_POSITION, message)
    if not match:
        return f" TOML syntax error: {message}"
    if match["line"]:
        line, col = int(match["line"]), int(match["col"])
    else:  # at the end of the document
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    reason = match["reason"][:1].lower() + match["reason"][1:]
    return f"{line}:{col}: TOML syntax error: {reason}"


def _report(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{path}: {len(problems)} problems:\n{lines}"


def _unknown_keys(table: dict[str, Any], known: list[str], where: str) -> list[str]:
    return [f"{where}{_key_text(key)}: {_unknown(key, known)}" for key in table if key not in known]


_BARE_KEY = r"[A-Za-z0-9_-]{1,60}"


def _key_text(key: str) -> str:
    """A key as a path part: quoted and cut when odd (a newline or 1 MB in a key name)."""
    return key if re.fullmatch(_BARE_KEY, key) else shown(key)


def _unknown(key: str, known: list[str]) -> str:
    """'unknown key', with the likely intended key when it is a typo."""
    from difflib import get_close_matches

    close = get_close_matches(key[:100], known, n=1)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (expected one of: {', '.join(sorted(known))})"


def _read_settings(
    data: dict[str, Any], problems: list[str], bad: set[str]
) -> dict[str, dict[str, Any]]:
    problems += _unknown_keys(data, [*SCHEMA, "batches"], "")
    settings: dict[str, dict[str, Any]] = {}
    for section, keys in SCHEMA.items():
        table = data.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"{section}: expected a table, got {_kind(table)}")
            table = {}
        problems += _unknown_keys(table, list(keys), f"{section}.")
        values: dict[str, Any] = {}
        for key, spec in keys.items():
            value = table.get(key, spec.default)
            expected = spec.check(value)
            if expected:
                problems.append(f"{section}.{key}: expected {expected}, got {shown(value)}")
                bad.add(f"{section}.{key}")
                value = spec.default
            values[key] = value
        settings[section] = values
    return settings


class Located(NamedTuple):
    """A valid task with where it is in the file, for the messages of the checks across tasks."""

    task: Task
    batch_index: int
    where: str


def _read_batches(raw: Any, problems: list[str], located: list[Located]) -> tuple[Batch, ...]:
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        problems.append("batches: expected an array of tables ([[batches]])")
        return ()
    batches = []
    for index, table in enumerate(raw):
        where = f"batches[{index}]"
        problems += _unknown_keys(table, ["name", "tasks"], f"{where}.")
        name = table.get("name", f"batch-{index + 1}")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: expected a non-empty string, got {shown(name)}")
            name = f"batch-{index + 1}"
        tasks_raw = table.get("tasks", [])
        if not isinstance(tasks_raw, list) or not all(isinstance(t, dict) for t in tasks_raw):
            problems.append(f"{where}.tasks: expected an array of tables ([[batches.tasks]])")
            tasks_raw = []
        tasks = []
        for i, table_ in enumerate(tasks_raw):
            task = _read_task(table_, name, f"{where}.tasks[{i}]", problems)
            if task is not None:
                tasks.append(task)
                located.append(Located(task, index, f"{where}.tasks[{i}]"))
        batches.append(Batch(name=name, tasks=tuple(tasks)))
    return tuple(batches)


def _read_task(table: dict[str, Any], batch: str, where: str, problems: list[str]) -> Task | None:
    before = len(problems)
    problems += _unknown_keys(table, list(TASK_SCHEMA), f"{where}.")
    values: dict[str, Any] = {}
    for key, spec in TASK_SCHEMA.items():
        if spec is None and key not in table:
            problems.append(f"{where}.{key}: missing (required)")
            continue
        value = table.get(key, spec.default if spec else None)
        check = spec.check if spec else TASK_CHECKS[key]
        expected = check(value)
        if expected:
            problems.append(f"{where}.{key}: expected {expected}, got {shown(value)}")
        values[key] = value
    if len(problems) > before:
        return None
    if not values["title"].strip():
        problems.append(f"{where}.title: expected a non-empty title")
        return None
    return Task(
        agent=values["agent"],
        issue=values["issue"],
        title=values["title"],
        hours=float(values["hours"]),
        batch=batch,
        files=tuple(values["files"]),
        depends_on=tuple(values["depends_on"]),
        prompt=values["prompt"],
    )


def _strings_with_nul(value: Any, where: str) -> Iterator[str]:
    """The key path of every string (or key) in ``value`` that holds a NUL character."""
    if isinstance(value, str):
        if "\0" in value:
            yield where or "(top level)"
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if "\0" in key:
                yield path
            else:
                yield from _strings_with_nul(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_with_nul(item, f"{where}[{index}]")


def _written_dependencies(data: dict[str, Any]) -> dict[int, tuple[int, ...]]:
    """Issue -> its well-typed depends_on, for every task written in the plan.

    Tasks that are otherwise invalid count too, so one bad field never hides
    a dependency cycle or makes a real issue look unknown.
    """
    batches = data.get("batches")
    tables = [b for b in batches if isinstance(b, dict)] if isinstance(batches, list) else []
    tasks = [t for b in tables if isinstance(b.get("tasks"), list) for t in b["tasks"]]
    graph: dict[int, tuple[int, ...]] = {}
    for task in tasks:
        issue = task.get("issue") if isinstance(task, dict) else None
        if isinstance(issue, int) and not isinstance(issue, bool):
            deps = task.get("depends_on", [])
            graph[issue] = (
                tuple(d for d in deps if _positive_int(d) is None) if isinstance(deps, list) else ()
            )
    return graph


def _check_settings(plan: Plan, main_root: Path | None, bad: set[str], problems: list[str]) -> None:
    """Checks of the settings' values: branch names, remote name, the worktree root."""
    if "project.base" not in bad and not is_valid_branch_name(plan.base):
        problems.append(f"project.base: {plan.base!r} is not a valid branch name")
    if "project.branch_prefix" not in bad and not is_valid_branch_name(plan.branch(1)):
        problems.append(
            f"project.branch_prefix: {plan.branch(1)!r} would not be a valid branch name"
        )
    if not bad & {"project.base", "project.branch_prefix", "agents.count"}:
        clash = _branch_clash(plan)
        if clash:
            problems.append(clash)
    if "agents.command" not in bad:
        problems += _unknown_placeholders(plan.agent_command, "agents.command")
    if "agents.commands" not in bad and not bad & {"agents.count"}:
        problems += _agent_commands_problems(plan.settings["agents"]["commands"], plan.agent_count)
    if not bad & {"agents.hosts", "agents.count", "project.remote"}:
        problems += _hosts_problems(plan.settings["agents"]["hosts"], plan.agent_count, plan.remote)
    problems += _setup_problems(plan, bad)
    if plan.remote and not is_valid_branch_name(plan.remote):
        problems.append(f"project.remote: {plan.remote!r} is not a valid remote name")
    if main_root is not None and "project.worktrees" not in bad:
        root = plan.worktree_root(main_root)
        real_root, real_main = root.resolve(), main_root.resolve()  # symlinks followed
        if real_root == real_main or real_main in real_root.parents:
            problems.append(
                f"project.worktrees: {root} is inside the repository; "
                "use a folder outside it, e.g. '../{repo}-worktrees'"
            )


def _setup_problems(plan: Plan, bad: set[str]) -> list[str]:
    """[setup] paths that would lead outside the repository, and ports past the last one."""
    setup = plan.section("setup")
    problems = [
        f"setup.{key}[{index}]: {shown(path)} {why}"
        for key in ("copy", "inputs")
        if f"setup.{key}" not in bad
        for index, path in enumerate(setup[key])
        if (why := _repo_path_problem(path))
    ]
    if not bad & {"setup.port_base", "setup.port_step", "agents.count"} and setup["port_base"]:
        last = setup["port_base"] + plan.agent_count * setup["port_step"]
        if last > MAX_PORT:
            problems.append(
                f"setup.port_base: agent {plan.agent_count} would get port {last}, "
                f"above {MAX_PORT}; lower port_base or port_step"
            )
    return problems


def _repo_path_problem(path: str) -> str | None:
    """Why ``path`` is not a relative path inside the repository's work tree, or None."""
    parts = path.replace("\\", "/").split("/")
    if not path.strip():
        return "is empty; write a path relative to the repository root, e.g. '.env'"
    if path.startswith(("/", "~")) or re.match(r"[A-Za-z]:", path):
        return "is not relative; write it relative to the repository root, e.g. '.env'"
    if ".." in parts:
        return "leads outside the repository ('..'); list paths inside it"
    if next((p for p in parts if p not in ("", ".")), ".git") == ".git":
        return "is the repository itself or its .git; list files inside the work tree"
    return None


def _unknown_placeholders(command: list[str], where: str) -> list[str]:
    """``{prompt_fle}`` would reach the agent as literal text: a typo to report, not run."""
    found = {name for arg in command for name in re.findall(_PLACEHOLDER, arg)}
    return [
        f"{where}: unknown placeholder {{{name}}} (known: "
        + ", ".join(f"{{{known}}}" for known in AGENT_PLACEHOLDERS)
        + ")"
        for name in sorted(found - set(AGENT_PLACEHOLDERS))
    ]


def _agent_commands_problems(commands: dict[str, Any], count: int) -> list[str]:
    """[agents.commands]: each key an agent number in 1..count, each value a preset or an argv."""
    if not commands:
        return []
    from paradev.presets import PRESET_NAMES

    problems = []
    presets = ", ".join(repr(name) for name in PRESET_NAMES)
    for key, value in commands.items():
        where = f"agents.commands.{_key_text(key)}"
        if not re.fullmatch(r"[1-9][0-9]{0,9}", key) or int(key) > count:
            problems.append(f"{where}: expected an agent number from 1 to {count} as the key")
        elif isinstance(value, str):
            if value not in PRESET_NAMES:
                problems.append(
                    f"{where}: unknown preset {shown(value)} (known: {presets}); "
                    "write your own command as a list of strings"
                )
        elif _string_list(value) is None and value:
            problems += _unknown_placeholders(value, where)
        else:
            problems.append(
                f"{where}: expected a preset name ({presets}) or a non-empty list of strings "
                f"(an argv), got {shown(value)}"
            )
    return problems


def _hosts_problems(hosts: dict[str, Any], count: int, remote: str) -> list[str]:
    """[agents] hosts: valid host names, agents in 1..count, each on one host, and a remote."""
    problems = []
    if hosts and not remote:
        problems.append(
            "agents.hosts: hosts share the plan through the git remote; "
            'set project.remote (e.g. remote = "origin")'
        )
    owner: dict[int, str] = {}
    for name, agents in hosts.items():
        where = f"agents.hosts.{_key_text(name)}"
        if not re.fullmatch(HOST_NAME, name):
            problems.append(f"{where}: a host name is letters, digits, '.', '_' or '-'")
        if not isinstance(agents, list) or not all(
            isinstance(a, int) and not isinstance(a, bool) and 1 <= a <= count for a in agents
        ):
            problems.append(f"{where}: expected a list of agent numbers from 1 to {count}")
            continue
        for agent in agents:
            if owner.setdefault(agent, name) != name:
                problems.append(
                    f"{where}: agent {agent} is also on host {shown(owner[agent])}; "
                    "give each agent one host"
                )
    return problems


HOST_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}"


def _branch_clash(plan: Plan) -> str | None:
    """An agent branch that is base itself, or that git cannot store beside base.

    git keeps ``x`` and ``x/1`` as a file and a folder of the same name, so
    one of them can never be created; an agent working on base itself would
    land its work without any train. Worked out from the names alone, never
    by walking every agent (``agents.count`` may be large).
    """
    base, prefix = plan.base, str(plan.settings["project"]["branch_prefix"])
    if prefix.startswith(base + "/"):  # every agent branch lies under base
        return _clash(1, plan.branch(1), base)
    if not base.startswith(prefix):
        return None
    number = base[len(prefix) :].split("/", 1)[0]  # base is <prefix><number>[/...]?
    if not re.fullmatch(r"[1-9][0-9]{0,9}", number) or int(number) > plan.agent_count:
        return None
    return _clash(int(number), plan.branch(int(number)), base)


def _clash(agent: int, branch: str, base: str) -> str:
    if branch == base:
        return (
            f"project.branch_prefix: agent {agent}'s branch {branch!r} is the base branch; "
            "pick another prefix or base"
        )
    return (
        f"project.branch_prefix: agent {agent}'s branch {branch!r} cannot exist beside "
        f"base {base!r} (git cannot store both); pick another prefix"
    )


def _check_batches(
    plan: Plan,
    located: list[Located],
    written: dict[int, tuple[int, ...]],
    bad: set[str],
    problems: list[str],
) -> None:
    """Checks across tasks: batch names, agent range, duplicates, dependencies, cycles."""
    seen_batches: set[str] = set()
    for index, batch in enumerate(plan.batches):
        if batch.name in seen_batches:
            problems.append(f"batches[{index}].name: duplicate batch name {batch.name!r}")
        seen_batches.add(batch.name)
    position: dict[int, int] = {}  # issue -> batch index
    for item in located:
        task = item.task
        if "agents.count" not in bad and task.agent > plan.agent_count:
            problems.append(
                f"{item.where}.agent: agent {task.agent} is outside 1..{plan.agent_count} "
                "(raise agents.count or pick another agent)"
            )
        if task.issue in position:
            problems.append(f"{item.where}.issue: issue #{task.issue} appears twice in the plan")
        position.setdefault(task.issue, item.batch_index)
    for item in located:
        for dep in item.task.depends_on:
            if dep not in written:
                problems.append(f"{item.where}.depends_on: issue #{dep} is not in the plan")
            elif position.get(dep, -1) > item.batch_index:
                problems.append(
                    f"{item.where}.depends_on: issue #{dep} is in a later batch, "
                    f"so #{item.task.issue} could never start"
                )
    if len(position) == len(located):  # a cycle among duplicated numbers would mislead
        cycle = _find_cycle(written)
        if cycle:
            problems.append("depends_on: dependency cycle " + " -> ".join(f"#{i}" for i in cycle))
        else:
            problems += _order_deadlock(located, position)


def _order_deadlock(located: list[Located], position: dict[int, int]) -> list[str]:
    """A cycle through the agents' own order: the deadlock no dependency shows alone.

    Each agent takes its tasks in plan order, so a task also waits for its
    agent's previous task; an agent's earlier task that waits, directly or
    through other agents' tasks, for its own later one can never start.
    Dependencies already refused (unknown, in a later batch) are left out.
    """
    deps = {
        item.task.issue: tuple(
            d
            for d in item.task.depends_on
            if position.get(d, item.batch_index + 1) <= item.batch_index
        )
        for item in located
    }
    previous: dict[int, tuple[int, ...]] = {}  # issue -> the task its agent takes just before
    last: dict[int, int] = {}  # agent -> its latest task so far
    for item in located:
        previous[item.task.issue] = (last[item.task.agent],) if item.task.agent in last else ()
        last[item.task.agent] = item.task.issue
    cycle = _find_cycle({issue: (*d, *previous[issue]) for issue, d in deps.items()})
    if cycle is None:
        return []
    agent_of = {item.task.issue: item.task.agent for item in located}
    return [_deadlock_message(cycle, deps, agent_of)]


def _deadlock_message(
    cycle: list[int], deps: dict[int, tuple[int, ...]], agent_of: dict[int, int]
) -> str:
    """``#3 (agent 1) waits for #5, #5 (agent 2) comes after #4 on agent 2, #4 waits for #3``."""
    from itertools import pairwise

    # Start at a dependency (the cycle holds one: plan order alone runs one way): reads best.
    cycle = cycle[:-1]
    start = next(k for k, i in enumerate(cycle) if cycle[(k + 1) % len(cycle)] in deps[i])
    cycle = [*cycle[start:], *cycle[:start], cycle[start]]
    steps: list[str] = []
    fixes: list[str] = []  # reorderings first, dropped dependencies last
    named = False  # the waiter's agent was just said ("on agent N")
    for waiter, waited in pairwise(cycle):
        who = f"#{waiter}" if named else f"#{waiter} (agent {agent_of[waiter]})"
        named = waited not in deps[waiter]
        if named:
            steps.append(f"{who} comes after #{waited} on agent {agent_of[waiter]}")
            fixes.insert(0, f"put #{waiter} before #{waited} on agent {agent_of[waiter]}")
        else:
            steps.append(f"{who} waits for #{waited}")
            fixes.append(f"drop #{waited} from #{waiter}'s depends_on")
    return (
        "tasks can never start (each agent takes its tasks in plan order): "
        + ", ".join(steps)
        + f"; fix: {fixes[0]}, give one of them to another agent, or {fixes[-1]}"
    )


def _find_cycle(graph: dict[int, tuple[int, ...]]) -> list[int] | None:
    """One dependency cycle (first node repeated at the end), or None. Iterative DFS."""
    finished: set[int] = set()
    for start, deps in graph.items():
        if start in finished:
            continue
        path = [start]
        pending = [iter(deps)]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                finished.add(path.pop())
                pending.pop()
            elif nxt in path:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in finished and nxt in graph:
                path.append(nxt)
                pending.append(iter(graph[nxt]))
    return None


# -- round-trip edits ----------------------------------------------------------------

# A key no real plan uses: it marks where tomlkit put the new table, so the
# text around it stays byte-identical and the new table is laid out like the others.
_MARKER = "__paradev_insert_here__"
_MARKED_TABLE = (
    rf"(?m)^[ \t]*\[\[batches(?:\.tasks)?\]\][ \t]*\n[ \t]*{_MARKER} = true[ \t]*(?:\n|\Z)"
)
_DEFAULT_TASK_INDENT = "  "


def add_task(
    path: Path,
    main_root: Path | None,
    *,
    agent: int,
    issue: int,
    title: str,
    hours: float,
    batch: str | None = None,
) -> Plan:
    """Append a task to ``batch`` (default: the last batch) keeping every comment and layout.

    The file's text is only ever inserted into, never rewritten: every byte
    outside the new task stays as it was. The edited text is validated before
    it is written, so an invalid task never reaches the file.
    """
    raw = path.read_bytes().decode("utf-8") if path.exists() else ""  # line endings as they are
    crlf = "\r\n" in raw and raw.count("\n") == raw.count("\r\n")
    text = raw.replace("\r\n", "\n") if crlf else raw
    fields: dict[str, Any] = {"agent": agent, "issue": issue, "title": title, "hours": float(hours)}
    new_text = insert_task(text, path, fields, batch)
    if crlf:  # a Windows-edited plan keeps its CRLF line endings, the new task too
        new_text = new_text.replace("\n", "\r\n")
    plan = parse(new_text, path, main_root)
    from paradev.atomic import write_atomic

    write_atomic(path.resolve(), new_text, keep_mode=True)  # a symlinked plan: where it points
    return plan


def insert_task(text: str, path: Path, fields: dict[str, Any], batch: str | None) -> str:
    """``text`` with a ``[[batches.tasks]]`` table holding ``fields`` added to ``batch``.

    The new table gets the indentation of the existing tasks and blank lines
    around it; the result is checked to mean exactly "the old plan plus this
    task" (else tomlkit's own rendering is used).
    """
    import tomlkit
    from tomlkit.items import AoT

    if text and not text.endswith("\n"):  # tomlkit would glue a new table to a final comment
        return _keep_missing_final_newline(insert_task(text + "\n", path, fields, batch), text)
    doc = _parse_document(text, path)
    expected = _with_task(doc.unwrap(), fields, batch)
    batches = doc.get("batches")
    if batches is None:
        batches = tomlkit.aot()
        doc.append("batches", batches)
    if not isinstance(batches, AoT):
        raise PlanError(f"{path}: batches must be written as [[batches]] tables to add a task")
    indent = _task_indent(batches)
    target = _find_batch_table(batches, batch)
    _require_task_tables(target, path)
    marker = tomlkit.table()
    marker[_MARKER] = True
    if target is None:
        batches.append(marker)
        block = f"[[batches]]\nname = {_render(batch or 'batch-1')}\n" + _task_block(fields, indent)
    else:
        if "tasks" not in target:
            target["tasks"] = tomlkit.aot()
        target["tasks"].append(marker)
        block = _task_block(fields, indent)
    new_text = _replace_marker(tomlkit.dumps(doc), block)
    if new_text is None or _meaning(new_text) != expected:
        return _plain_insert(text, path, fields, batch)
    return new_text


def _meaning(text: str) -> dict[str, Any] | None:
    """The plain data ``text`` holds, None when it does not parse."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        data: dict[str, Any] = tomlkit.parse(text).unwrap()
    except TOMLKitError:
        return None
    return data


def _keep_missing_final_newline(new_text: str, original: str) -> str:
    """Drop the final newline we added when the task went elsewhere than the end."""
    last_line = original.rsplit("\n", 1)[-1]
    return new_text[:-1] if new_text.endswith(last_line + "\n") else new_text


def _parse_document(text: str, path: Path) -> TOMLDocument:
    """The file as a tomlkit document (comments and layout kept) for editing."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise PlanError(f"{path}: TOML error: {exc}") from None


def _with_task(data: dict[str, Any], fields: dict[str, Any], batch: str | None) -> dict[str, Any]:
    """The plain data ``data`` would hold once the task is added (the check on our text edit)."""
    batches = data.setdefault("batches", [])
    names = [b.get("name", f"batch-{i + 1}") for i, b in enumerate(batches)]
    if batches and (batch is None or batch in names):
        target = batches[-1] if batch is None else batches[names.index(batch)]
        target.setdefault("tasks", []).append(dict(fields))
    else:
        batches.append({"name": batch or "batch-1", "tasks": [dict(fields)]})
    return data


def _render(value: Any) -> str:
    import tomlkit

    return str(tomlkit.item(value).as_string())


def _task_block(fields: dict[str, Any], indent: str) -> str:
    lines = [f"{indent}[[batches.tasks]]"]
    lines += [f"{indent}{key} = {_render(value)}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def _task_indent(batches: AoT) -> str:
    """The indentation of the plan's existing task headers (two spaces in an empty plan)."""
    from tomlkit.items import AoT

    for table in batches:
        tasks = table.get("tasks")
        if isinstance(tasks, AoT) and len(tasks):
            indent = str(tasks[0].trivia.indent)
            return indent if not indent.strip() else _DEFAULT_TASK_INDENT
    return _DEFAULT_TASK_INDENT


def _replace_marker(rendered: str, block: str) -> str | None:
    """Put ``block`` where the marker table is, with a blank line before and after it."""
    matches = list(re.finditer(_MARKED_TABLE, rendered))
    if len(matches) != 1:
        return None
    before, after = rendered[: matches[0].start()], rendered[matches[0].end() :]
    if before and not before.endswith("\n"):
        before += "\n"
    if before.strip() and not before.endswith("\n\n"):
        before += "\n"
    if after.strip() and not after.startswith("\n"):
        block += "\n"
    return before + block + after


def _plain_insert(text: str, path: Path, fields: dict[str, Any], batch: str | None) -> str:
    """tomlkit's own rendering of the added task: correct, if less tidy (unusual layouts)."""
    import tomlkit

    doc = _parse_document(text, path)
    batches = doc.get("batches")
    if batches is None:
        batches = tomlkit.aot()
        doc.append("batches", batches)
    target = _find_batch_table(batches, batch)
    if target is None:
        target = tomlkit.table()
        target["name"] = batch or "batch-1"
        batches.append(target)
    entry = tomlkit.table()
    for key, value in fields.items():
        entry[key] = value
    if "tasks" not in target:
        target["tasks"] = tomlkit.aot()
    target["tasks"].append(entry)
    return tomlkit.dumps(doc)


def _require_task_tables(target: Any, path: Path) -> None:
    """A batch whose tasks are an inline array cannot take a ``[[batches.tasks]]`` table."""
    from tomlkit.items import AoT

    if target is not None and "tasks" in target and not isinstance(target["tasks"], AoT):
        raise PlanError(
            f"{path}: batch {target.get('name', '')!r} writes its tasks as an inline array; "
            "write them as [[batches.tasks]] tables so paradev assign can add one"
        )


def _find_batch_table(batches: Any, name: str | None) -> Any:
    """The batch named ``name`` (unnamed batches are ``batch-N``), the last one for None."""
    if not batches:
        return None
    if name is None:
        return batches[-1]
    return next((b for i, b in enumerate(batches) if b.get("name", f"batch-{i + 1}") == name), None)
