"""``paradev init``: getting started in one's own repository.

A pip user has no example plan, and ``invoke NAME`` works only where a
tasks.py exposes paradev's collection; CI needs a workflow that runs the
conflict check and the gate on every agent push. Each file is written only
when it does not exist yet: a user's own file is never overwritten.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from paradev import plan as plan_mod
from paradev.errors import PreconditionError
from paradev.limits import MAX_AGENTS
from paradev.plan import SCHEMA, Plan

CI_KINDS = ("github",)
WORKFLOW = Path(".github/workflows/paradev.yml")
TASKS_PY = "tasks.py"

_INIT_HEADER = """\
# Written by `paradev init`. The batches below are the demo's examples:
# replace them with your own issues (or add tasks with `paradev assign`),
# and set agents.preset (or agents.command) and gate.command for your project.
"""


def example_plan() -> str:
    """The commented example plan: the clone's plan.toml, or the copy an installed wheel carries."""
    from paradev.demo import EXAMPLE_PLANS

    example = next((p for p in EXAMPLE_PLANS if p.is_file()), None)
    if example is None:
        raise PreconditionError(
            f"the example plan is missing from this paradev install ({EXAMPLE_PLANS[-1]}); "
            "reinstall paradev"
        )
    return example.read_text(encoding="utf-8")


def starter_plan(agents: int | None = None) -> str:
    """The example, made safe to start from: no demo agent, default timeouts, ``agents`` agents.

    The demo's values (its scripted agent, two-minute timeouts, conflicts
    handed to agents) would misbehave on a real project; the defaults do not.

    With fewer agents than the example's, its tasks are dealt round-robin to
    the agents there are; with more, the extra agents start without tasks.
    """
    import tomlkit

    doc = tomlkit.parse(example_plan())
    doc["agents"]["command"] = []  # the demo's scripted agent would edit a calculator
    doc["agents"]["timeout"] = SCHEMA["agents"]["timeout"].default
    doc["gate"]["timeout"] = SCHEMA["gate"]["timeout"].default
    doc["merge"]["on_conflict"] = SCHEMA["merge"]["on_conflict"].default  # no agent to hand to
    if agents is not None:
        doc["agents"]["count"] = agents
        for batch in doc.get("batches", []):
            for task in batch.get("tasks", []):
                task["agent"] = (int(task["agent"]) - 1) % agents + 1
    return _INIT_HEADER + tomlkit.dumps(doc)


def check_agents(agents: int) -> int:
    if not 1 <= agents <= MAX_AGENTS:
        raise PreconditionError(f"--agents must be from 1 to {MAX_AGENTS:,}, got {agents}")
    return agents


def write_plan(path: Path, main_root: Path, agents: int | None = None) -> Plan:
    """Write the starter plan at ``path``; refuse when a file is already there."""
    if agents is not None:
        check_agents(agents)
    _refuse_existing(path, "it is your plan: edit it, or remove it to start again")
    text = starter_plan(agents)
    plan = plan_mod.parse(text, path, main_root)  # never write a plan paradev would refuse
    _write_new(path, text)
    return plan


INVOKE_TASKS = '''\
"""invoke tasks: paradev's commands as `invoke NAME` (written by `paradev init --invoke`)."""

from paradev.tasks import ns

__all__ = ["ns"]
'''


def write_invoke_tasks(main_root: Path) -> Path:
    """A tasks.py exposing paradev's collection; for an existing one, say how to add it."""
    path = main_root / TASKS_PY
    _refuse_existing(
        path,
        "add paradev's commands to it: 'from paradev.tasks import ns as paradev_ns' "
        "and 'ns.add_collection(paradev_ns, name=\"paradev\")' (then 'invoke paradev.status')",
    )
    _write_new(path, INVOKE_TASKS)
    return path


def check_ci_kind(kind: str) -> None:
    if kind not in CI_KINDS:
        raise PreconditionError(f"--ci must be one of {', '.join(CI_KINDS)}, got {kind!r}")


def write_ci(main_root: Path, plan_path: Path, kind: str) -> Path:
    """The CI workflow for ``kind``; it needs the plan (its branch prefix, gate and remote)."""
    check_ci_kind(kind)
    if not plan_path.is_file():
        raise PreconditionError(
            f"{plan_path} not found: run 'paradev init' first (the workflow reads the plan)"
        )
    plan = plan_mod.load(plan_path, main_root)
    if not plan.remote:
        raise PreconditionError(
            "the workflow compares and lands the branches pushed to the remote: set "
            "project.remote = \"origin\" in plan.toml, then run 'paradev init --ci github' again"
        )
    path = main_root / WORKFLOW
    _refuse_existing(path, "edit it, or remove it to write it again")
    _write_new(path, github_workflow(plan, install_source()))
    return path


def install_source() -> str:
    """Where CI installs paradev from: the source this paradev was installed from (PEP 610).

    The README installs paradev with ``pip install <source>``; a git URL or
    an archive URL works in CI as it did here. A local folder does not exist
    there, so the workflow then says to set the source.
    """
    from importlib import metadata

    try:
        raw = metadata.distribution("paradev").read_text("direct_url.json")
        info: dict[str, Any] = json.loads(raw or "{}")
    except (metadata.PackageNotFoundError, ValueError):
        info = {}
    url = str(info.get("url", ""))
    vcs = info.get("vcs_info")
    if isinstance(vcs, dict) and url and not url.startswith("file:"):
        return f"{vcs.get('vcs', 'git')}+{url}@{vcs.get('commit_id', '')}".rstrip("@")
    if url and not url.startswith("file:"):
        return url
    return ""


def _branch_filter(prefix: str) -> str:
    """A GitHub branch filter for ``<prefix><number>``: its pattern characters escaped."""
    escaped = "".join("\\" + c if c in "*?+[]!" else c for c in prefix)
    return escaped + "*"


def _gate_lines(plan: Plan) -> list[str]:
    command = plan.gate_command
    if not command:
        return ["      # no gate.command in plan.toml: nothing to gate"]
    shell = command if isinstance(command, str) else shlex.join(command)
    return [
        '      - name: "Gate (gate.command of plan.toml)"',
        "        run: " + json.dumps(shell),
    ]


def github_workflow(plan: Plan, source: str) -> str:
    """The workflow text: conflicts and gate on agent pushes; the merge train on demand."""
    install = source or "SET-ME: where CI installs paradev from (see the README)"
    setup = [
        "      - uses: actions/checkout@v4",
        "        with:",
        "          fetch-depth: 0  # every branch with its full history: merge bases",
        "      - uses: actions/setup-python@v5",
        "        with:",
        '          python-version: "3.12"',
        '      - name: "Install paradev (as the README says: pip install <source>)"',
        '        run: python -m pip install "$PARADEV_SOURCE"',
    ]
    lines = [
        "# Written by `paradev init --ci github`.",
        "# On every push of an agent branch: real conflicts between the agent branches",
        "# (paradev conflicts --remote --check) and the gate. The merge train runs only",
        "# when started by hand (Actions > paradev > Run workflow); it is the only job",
        "# that may write to the repository. It lands what paradev's state records as",
        "# completed: a fresh clone records nothing until the state is shared with it.",
        "name: paradev",
        "",
        "on:",
        "  push:",
        "    branches:",
        "      - " + json.dumps(_branch_filter(str(plan.settings["project"]["branch_prefix"]))),
        "  workflow_dispatch:",
        "",
        "permissions:",
        "  contents: read",
        "",
        "env:",
        "  PARADEV_SOURCE: " + json.dumps(install),
        "",
        "jobs:",
        "  check:",
        "    if: github.event_name == 'push'",
        "    runs-on: ubuntu-latest",
        "    permissions:",
        "      contents: read",
        "    steps:",
        *setup,
        '      - name: "Real conflicts between agent branches"',
        "        run: paradev conflicts --remote --check",
        *_gate_lines(plan),
        "",
        "  merge-train:",
        "    if: github.event_name == 'workflow_dispatch'",
        "    runs-on: ubuntu-latest",
        "    permissions:",
        "      contents: write  # the train pushes base and the rebased agent branches",
        "    steps:",
        *setup,
        '      - name: "Commit identity for rebases"',
        "        run: |",
        '          git config user.name "github-actions[bot]"',
        '          git config user.email "41898282+github-actions[bot]@users.noreply.github.com"',
        '      - name: "Worktrees"',
        "        run: paradev setup",
        '      - name: "Merge train"',
        "        run: paradev merge --push",
        "",
    ]
    return "\n".join(lines)


def _refuse_existing(path: Path, advice: str) -> None:
    if path.exists() or path.is_symlink():
        raise PreconditionError(
            f"{path} already exists; paradev init never overwrites it: {advice}"
        )


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` and its folders; never replace a file that appeared in the meantime."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise PreconditionError(
            f"{path} appeared while paradev init ran; nothing written"
        ) from None
    except OSError as exc:  # e.g. a file named .github where the folder belongs
        raise PreconditionError(f"cannot write {path}: {exc.strerror or exc}") from None


def init(
    main_root: Path, plan_path: Path, agents: int | None, invoke: bool, ci: str | None
) -> list[str]:
    """What ``paradev init`` does for its flags; the lines to print.

    Plain ``init`` writes the plan; ``--invoke`` and ``--ci`` write their own
    file instead (together, both).
    """
    if agents is not None and (invoke or ci):
        raise PreconditionError("--agents is for the plan: run 'paradev init --agents N' alone")
    if ci is not None:
        check_ci_kind(ci)  # before anything is written
    lines: list[str] = []
    if not invoke and ci is None:
        plan = write_plan(plan_path, main_root, agents)
        lines.append(
            f"wrote {plan_path}: the commented example plan for {plan.agent_count} agents; "
            "edit its batches, agents.preset (or agents.command) and gate.command, then run "
            "'paradev setup'"
        )
    if invoke:
        path = write_invoke_tasks(main_root)
        lines.append(f"wrote {path}: 'invoke --list' shows paradev's commands")
    if ci is not None:
        path = write_ci(main_root, plan_path, ci)
        lines.append(f"wrote {path}: commit and push it; the merge train is started by hand")
        if not install_source():
            lines.append(
                f"  set PARADEV_SOURCE in {path.name}: what 'pip install' gets paradev from "
                "in CI (a git URL, an archive URL, or a folder committed in your repository)"
            )
    return lines
