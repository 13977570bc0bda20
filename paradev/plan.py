"""plan.toml -> a typed, validated ``Plan``; and round-trip edits that keep the file's layout.

Validation reports every problem at once, each with its key path
(``batches[1].tasks[0].hours``) and what was expected, so one run of a
command tells the user everything to fix.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from paradev.errors import PlanError
from paradev.git import is_valid_branch_name

PLAN_FILE = "plan.toml"
ON_CONFLICT_CHOICES = ("stop", "agent")

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


def _positive_number(value: Any) -> str | None:
    if _is_number(value) and math.isfinite(value) and value > 0:
        return None
    return "a finite number > 0"


def _positive_int(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return None
    return "an integer > 0"


def _string_list(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return None
    return "a list of strings"


def _int_list(value: Any) -> str | None:
    if isinstance(value, list) and all(_positive_int(v) is None for v in value):
        return None
    return "a list of issue numbers"


def _command(value: Any) -> str | None:
    if isinstance(value, str) or (_string_list(value) is None):
        return None
    return "a string or a list of strings"


def _choice(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


@dataclass(frozen=True)
class Key:
    """One key of the schema: its default and its type check."""

    default: Any
    check: Check


SCHEMA: dict[str, dict[str, Key]] = {
    "project": {
        "base": Key("main", _string),
        "worktrees": Key("../{repo}-worktrees", _string),
        "branch_prefix": Key("parallel-dev/agent-", _string),
        "remote": Key("", _string),
    },
    "agents": {
        "count": Key(3, _positive_int),
        "command": Key([], _string_list),
        "timeout": Key(5400, _positive_number),
        "instructions": Key("", _string),
    },
    "gate": {
        "command": Key("", _command),
        "timeout": Key(1800, _positive_number),
    },
    "merge": {
        "squash": Key(False, _boolean),
        "push": Key(False, _boolean),
        "on_conflict": Key("stop", _choice(*ON_CONFLICT_CHOICES)),
    },
    "hooks": {
        "on_start": Key("", _string),
        "on_complete": Key("", _string),
        "on_merge": Key("", _string),
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
    "issue": _positive_int,
    "title": _string,
    "hours": _non_negative,
}


@dataclass(frozen=True)
class Task:
    """One issue assigned to one agent inside a batch."""

    agent: int
    issue: int
    title: str
    hours: float
    batch: str
    files: tuple[str, ...] = ()
    depends_on: tuple[int, ...] = ()
    prompt: str = ""


@dataclass(frozen=True)
class Batch:
    name: str
    tasks: tuple[Task, ...]


@dataclass(frozen=True)
class Plan:
    """The validated plan. ``settings[section][key]`` holds every configured value."""

    path: Path
    settings: dict[str, dict[str, Any]]
    batches: tuple[Batch, ...] = field(default=())

    # -- settings with a name, so callers read well and mypy knows the types --
    @property
    def base(self) -> str:
        return str(self.settings["project"]["base"])

    @property
    def remote(self) -> str:
        return str(self.settings["project"]["remote"])

    @property
    def agent_count(self) -> int:
        return int(self.settings["agents"]["count"])

    @property
    def agent_command(self) -> list[str]:
        return list(self.settings["agents"]["command"])

    @property
    def agent_timeout(self) -> float:
        return float(self.settings["agents"]["timeout"])

    @property
    def instructions(self) -> str:
        return str(self.settings["agents"]["instructions"])

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
        return bool(self.settings["merge"]["push"])

    @property
    def on_conflict(self) -> str:
        return str(self.settings["merge"]["on_conflict"])

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
        pattern = str(self.settings["project"]["worktrees"]).replace("{repo}", main_root.name)
        root = Path(os.path.normpath(main_root / pattern))
        return root

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
    chosen = explicit or os.environ.get("PARADEV_PLAN")
    return Path(chosen).resolve() if chosen else main_root / PLAN_FILE


def load(path: Path, main_root: Path | None = None) -> Plan:
    """Read and validate ``path``; ``main_root`` enables the checks that need the repository."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(
            f"{path} not found; create it (see the example plan.toml) or set PARADEV_PLAN"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read {path}: {exc}") from None
    return parse(text, path, main_root)


def parse(text: str, path: Path, main_root: Path | None = None) -> Plan:
    data = _parse_toml(text, path)
    problems: list[str] = []
    settings = _read_settings(data, problems)
    batches = _read_batches(data.get("batches", []), problems)
    if not problems:
        plan = Plan(path=path, settings=settings, batches=batches)
        _check_plan(plan, main_root, problems)
    if problems:
        raise PlanError(_report(path, problems))
    return plan


def _parse_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        doc = tomlkit.parse(text)
    except ParseError as exc:
        raise PlanError(f"{path}:{exc.line}:{exc.col}: TOML syntax error: {_reason(exc)}") from None
    except TOMLKitError as exc:
        raise PlanError(f"{path}: TOML error: {exc}") from None
    unwrapped: dict[str, Any] = doc.unwrap()
    return unwrapped


def _reason(exc: ParseError) -> str:
    message = str(exc)
    return message.split(" at line ", maxsplit=1)[0] if " at line " in message else message


def _report(path: Path, problems: list[str]) -> str:
    if len(problems) == 1:
        return f"{path}: {problems[0]}"
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{path}: {len(problems)} problems:\n{lines}"


def _unknown_keys(table: dict[str, Any], known: Iterator[str] | list[str], where: str) -> list[str]:
    allowed = set(known)
    return [
        f"{where}{key}: unknown key (expected one of: {', '.join(sorted(allowed))})"
        for key in table
        if key not in allowed
    ]


def _read_settings(data: dict[str, Any], problems: list[str]) -> dict[str, dict[str, Any]]:
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
                problems.append(f"{section}.{key}: expected {expected}, got {value!r}")
            values[key] = value
        settings[section] = values
    return settings


def _read_batches(raw: Any, problems: list[str]) -> tuple[Batch, ...]:
    if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
        problems.append("batches: expected an array of tables ([[batches]])")
        return ()
    batches = []
    for index, table in enumerate(raw):
        where = f"batches[{index}]"
        problems += _unknown_keys(table, ["name", "tasks"], f"{where}.")
        name = table.get("name", f"batch-{index + 1}")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}.name: expected a non-empty string, got {name!r}")
            name = f"batch-{index + 1}"
        tasks_raw = table.get("tasks", [])
        if not isinstance(tasks_raw, list) or not all(isinstance(t, dict) for t in tasks_raw):
            problems.append(f"{where}.tasks: expected an array of tables ([[batches.tasks]])")
            tasks_raw = []
        tasks = [
            task
            for i, t in enumerate(tasks_raw)
            if (task := _read_task(t, name, f"{where}.tasks[{i}]", problems))
        ]
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
            problems.append(f"{where}.{key}: expected {expected}, got {value!r}")
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


def _check_plan(plan: Plan, main_root: Path | None, problems: list[str]) -> None:
    """Checks across keys: names, ranges, duplicates, dependencies, the worktree root."""
    if not is_valid_branch_name(plan.base):
        problems.append(f"project.base: {plan.base!r} is not a valid branch name")
    if not is_valid_branch_name(plan.branch(1)):
        problems.append(
            f"project.branch_prefix: {plan.branch(1)!r} would not be a valid branch name"
        )
    if plan.remote and not is_valid_branch_name(plan.remote):
        problems.append(f"project.remote: {plan.remote!r} is not a valid remote name")
    if main_root is not None:
        root = plan.worktree_root(main_root)
        if root == main_root or main_root in root.parents:
            problems.append(
                f"project.worktrees: {root} is inside the repository; "
                "use a folder outside it, e.g. '../{repo}-worktrees'"
            )
    _check_batches(plan, problems)


def _check_batches(plan: Plan, problems: list[str]) -> None:
    seen_batches: set[str] = set()
    position: dict[int, int] = {}  # issue -> batch index
    for index, batch in enumerate(plan.batches):
        if batch.name in seen_batches:
            problems.append(f"batches[{index}].name: duplicate batch name {batch.name!r}")
        seen_batches.add(batch.name)
        for i, task in enumerate(batch.tasks):
            where = f"batches[{index}].tasks[{i}]"
            if task.agent > plan.agent_count:
                problems.append(
                    f"{where}.agent: agent {task.agent} is outside 1..{plan.agent_count} "
                    "(raise agents.count or pick another agent)"
                )
            if task.issue in position:
                problems.append(f"{where}.issue: issue #{task.issue} appears twice in the plan")
            position.setdefault(task.issue, index)
    for index, batch in enumerate(plan.batches):
        for i, task in enumerate(batch.tasks):
            where = f"batches[{index}].tasks[{i}].depends_on"
            for dep in task.depends_on:
                if dep not in position:
                    problems.append(f"{where}: issue #{dep} is not in the plan")
                elif position[dep] > index:
                    problems.append(
                        f"{where}: issue #{dep} is in a later batch, "
                        f"so #{task.issue} could never start"
                    )
    cycle = _find_cycle({t.issue: t.depends_on for t in plan.tasks()})
    if cycle:
        problems.append("depends_on: dependency cycle " + " -> ".join(f"#{i}" for i in cycle))


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

    The edited text is validated before it is written, so an invalid task
    never reaches the file.
    """
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text)
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
    entry["agent"] = agent
    entry["issue"] = issue
    entry["title"] = title
    entry["hours"] = float(hours)
    if "tasks" not in target:
        target["tasks"] = tomlkit.aot()
    target["tasks"].append(entry)
    new_text = tomlkit.dumps(doc)
    plan = parse(new_text, path, main_root)
    write_atomic(path, new_text)
    return plan


def _find_batch_table(batches: Any, name: str | None) -> Any:
    if not batches:
        return None
    if name is None:
        return batches[-1]
    return next((b for b in batches if b.get("name") == name), None)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, rename: never a truncated file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
