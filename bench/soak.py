"""Crash soak of the merge train: SIGKILL ``paradev merge`` at seeded moments, resume as told.

The repository: five agents, four commits each, all editing ``src/app.py`` in
separate places (so every rebase after the first replays four real picks that
git has to merge) plus files of their own; a bare remote that refuses
non-fast-forward pushes; a gate that sleeps a little, so kills land in every
phase (backup, rebase, gate, fast-forward, push, marking). Each round copies
that repository, starts ``paradev merge`` in its own process group and kills
the whole group (git's own child too) with SIGKILL at a moment drawn from
``random.Random(seed)``: once git has begun pick N of a rebase (written it
to ``rebase-merge/done``, the commit not yet made), at any time while a
rebase runs, or at any time of the train. Then it resumes ONLY as paradev
said: the ``paradev merge ...`` command its output names, or ``paradev merge
--continue`` when it printed none (counted as "no instruction"), killing
again as the seed says, until paradev exits 0 or stops (exit 1) naming no
paradev command. Every run that exited 2, printed a traceback or hung, every
stop of this train (an uninterrupted run never stops: its work lands
cleanly, ``--conflict`` hands the one conflict to a resolving agent) and a
stop that doing as told repeats, is a round that needed a person.

Checked after each round (the promises of DESIGN.md):
- every agent's change (its completed commits' combined diff) is on main, or
  paradev reported that agent as not landed;
- no task marked ``merged`` whose change is missing from main;
- main only moved by fast-forward, after every single process;
- remote main equals local main (push is on) when the train finished;
- no agent commit lost (each reachable from some ref);
- a finished train leaves the same main tree as an uninterrupted run, no
  train in the state, no rebase in progress and every task marked merged.

The seeds fix the draws; the machine's load still moves what a delay hits.
Rounds go on (seed, seed + 1, ...) until enough kill moments happened.

Run: ``.venv/bin/python bench/soak.py [--kills 30] [--rebase-kills 10] [--seed 1]
[--conflict] [--paradev PATH]`` (``--paradev`` puts another checkout's package
first on PYTHONPATH). Exit 1 when a check failed, a round needed a person, or fewer
kill moments than asked for happened (then the soak proved nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AGENTS = 5
COMMITS = 4
FUNCTIONS = 24
GATE = "sleep 0.2"
PROCESS_TIMEOUT = 120.0  # seconds one paradev process may take before it counts as hung
POLL = 0.0005  # seconds between looks at the worktrees' git dirs
NEXT_STEP = re.compile(r"\bparadev merge(?: --(?:continue|skip|abort))?")
NO_TRAIN = "no merge train is in progress"

APP = "".join(f"def f{i}():\n    return {i}\n\n\n" for i in range(FUNCTIONS))
CONFLICTING = (4, 5)  # with --conflict, their last commits both append to CHANGES.md

# The agent command of --conflict: keeps both sides of every conflict, continues the rebase.
RESOLVER = """\
import os, subprocess, sys

MARKERS = ("<<<<<<< ", "=======", ">>>>>>> ", "||||||| ")
for _ in range(20):
    where = subprocess.run(["git", "rev-parse", "--git-path", "rebase-merge"],
                           capture_output=True, text=True).stdout.strip()
    if not os.path.isdir(where):
        sys.exit(0)
    unmerged = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"],
                              capture_output=True, text=True).stdout.split()
    for path in unmerged:
        with open(path, encoding="utf-8") as f:
            kept = [line for line in f if not line.startswith(MARKERS)]
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)
        subprocess.run(["git", "add", "--", path], check=True)
    subprocess.run(["git", "rebase", "--continue"], env={**os.environ, "GIT_EDITOR": "true"},
                   capture_output=True)
sys.exit(1)
"""


def plan_text(resolver: Path | None = None) -> str:
    """The plan; with ``resolver``, conflicts go back to the agent, whose command it is."""
    tasks = "".join(
        f'  [[batches.tasks]]\n  agent = {a}\n  issue = {10 + a}\n  title = "task {a}"\n'
        "  hours = 1.0\n"
        for a in range(1, AGENTS + 1)
    )
    command = f"command = {json.dumps([sys.executable, str(resolver)])}\n" if resolver else ""
    on_conflict = 'on_conflict = "agent"\n' if resolver else ""
    return (
        '[project]\nbase = "main"\nremote = "origin"\n\n'
        f"[agents]\ncount = {AGENTS}\n{command}\n"
        f'[gate]\ncommand = "{GATE}"\ntimeout = 60\n\n'
        f"[merge]\npush = true\n{on_conflict}\n"
        f'[[batches]]\nname = "soak"\n{tasks}'
    )


# -- processes ---------------------------------------------------------------------------------


def soak_env(home: Path, paradev_path: str | None = None) -> dict[str, str]:
    """This process's environment without inherited git settings; a fixed identity."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.pop("PARADEV_PLAN", None)
    config = home / "gitconfig"
    config.write_text(
        "[user]\n\tname = Paradev Soak\n\temail = soak@paradev.invalid\n"
        "[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n",
        encoding="utf-8",
    )
    env.update(HOME=str(home), GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    if paradev_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (paradev_path, env.get("PYTHONPATH")) if p)
    return env


def checked(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``argv``; its stdout, or RuntimeError with all it said (the scenario is broken)."""
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=PROCESS_TIMEOUT
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed in {cwd}: {proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return checked(["git", *args], cwd, env)


def paradev(cwd: Path, env: dict[str, str], *args: str) -> str:
    """A set-up command of paradev (a real process, as a user runs it)."""
    return checked([sys.executable, "-m", "paradev", *args], cwd, env)


# -- the scenario ------------------------------------------------------------------------------


@dataclass
class Scenario:
    """The built repository, its agents' completed work and where git keeps rebase state."""

    root: Path  # holds project/, project-worktrees/, origin.git/
    env: dict[str, str]
    fork: str  # main when the agents started
    heads: dict[int, str]  # each agent's completed head
    commits: dict[int, list[str]]  # each agent's commits, oldest first
    reference_tree: str = ""  # main's tree after an uninterrupted train

    @property
    def repo(self) -> Path:
        return self.root / "project"

    @property
    def remote(self) -> Path:
        return self.root / "origin.git"

    def gitdirs(self) -> list[Path]:
        """The main work tree's and every linked worktree's own git dir."""
        dot = self.repo / ".git"
        linked = dot / "worktrees"
        return [dot, *(sorted(linked.iterdir()) if linked.is_dir() else [])]

    def state(self) -> dict[str, Any]:
        path = self.repo / ".git" / "paradev" / "state.json"
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data


def edit_function(text: str, index: int, agent: int, step: int) -> str:
    old = f"def f{index}():\n    return {index}\n"
    assert old in text, f"f{index} edited twice"
    return text.replace(old, f"def f{index}():\n    return {index} + {agent * 100 + step}\n")


def agent_commit(
    tree: Path, env: dict[str, str], agent: int, step: int, conflict: bool = False
) -> str:
    """Commit ``step`` of ``agent``: its own function of app.py, plus files of its own.

    With ``conflict``, the last commits of the CONFLICTING agents append to CHANGES.md.
    """
    app = tree / "src" / "app.py"
    app.write_text(
        edit_function(app.read_text(encoding="utf-8"), agent - 1 + AGENTS * step, agent, step),
        encoding="utf-8",
    )
    own = tree / "src" / f"agent{agent}.py"
    if step == 1:
        own.write_text(f"NAME = 'agent {agent}'\n", encoding="utf-8")
    elif step == 2:
        own.write_text(own.read_text(encoding="utf-8") + f"STEP = {step}\n", encoding="utf-8")
    if conflict and agent in CONFLICTING and step == COMMITS - 1:
        changes = tree / "CHANGES.md"
        changes.write_text(changes.read_text(encoding="utf-8") + f"- agent {agent}\n")
    git(tree, env, "add", "-A")
    git(tree, env, "commit", "-q", "-m", f"agent {agent}: step {step}")
    return git(tree, env, "rev-parse", "HEAD")


def build(root: Path, env: dict[str, str], conflict: bool = False) -> Scenario:
    """The five-agent repository with every task completed, main pushed to a bare remote.

    With ``conflict``, two agents' work conflicts and paradev hands the
    conflict back to the agent (a script that keeps both sides).
    """
    repo = root / "project"
    (repo / "src").mkdir(parents=True)
    git(root, env, "init", "-q", "-b", "main", str(repo))
    (repo / "src" / "app.py").write_text(APP, encoding="utf-8")
    (repo / "README.md").write_text("# soak\n", encoding="utf-8")
    (repo / "CHANGES.md").write_text("# changes\n", encoding="utf-8")
    resolver = root / "resolve.py" if conflict else None
    if resolver:
        resolver.write_text(RESOLVER, encoding="utf-8")
    (repo / "plan.toml").write_text(plan_text(resolver), encoding="utf-8")
    git(repo, env, "add", "-A")
    git(repo, env, "commit", "-q", "-m", "initial commit")
    bare = root / "origin.git"
    git(root, env, "init", "-q", "--bare", str(bare))
    git(bare, env, "config", "receive.denyNonFastForwards", "true")
    git(repo, env, "remote", "add", "origin", str(bare))
    git(repo, env, "push", "-q", "origin", "main")
    paradev(repo, env, "setup")
    heads: dict[int, str] = {}
    commits: dict[int, list[str]] = {}
    for agent in range(1, AGENTS + 1):
        paradev(repo, env, "start", str(agent))
        tree = root / "project-worktrees" / f"agent-{agent}"
        commits[agent] = [agent_commit(tree, env, agent, step, conflict) for step in range(COMMITS)]
        paradev(repo, env, "complete", str(agent))
        heads[agent] = commits[agent][-1]
    return Scenario(root, env, git(repo, env, "rev-parse", "main"), heads, commits)


def restore(saved: Path, scn: Scenario) -> None:
    """Put the built repository back where it was built (worktrees link to it by path)."""
    reap_strays(scn.root)
    if scn.root.exists():
        shutil.rmtree(scn.root)
    shutil.copytree(saved, scn.root, symlinks=True)


def reap_strays(root: Path) -> list[int]:
    """SIGKILL what a killed paradev left running below ``root``; their pids.

    Gates and agents run in process groups of their own, so killing
    paradev's group leaves them to finish; one still running when its round
    is over is ended here (found by its working directory, Linux only).
    """
    strays = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = (entry / "cwd").resolve(strict=True)
        except OSError:
            continue
        if cwd.is_relative_to(root.resolve()) and int(entry.name) != os.getpid():
            strays.append(int(entry.name))
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    return strays


# -- one paradev process, maybe killed ---------------------------------------------------------


@dataclass
class Moment:
    """When to kill: ``delay`` seconds after the start, or after a new rebase got under way.

    ``pick`` > 0 waits for git to have moved pick number ``pick`` to
    ``rebase-merge/done``: git writes that before the commit exists, the
    half-applied pick issue 8 found dropped.
    """

    kind: str  # "rebase" | "delay"
    delay: float
    pick: int = 0

    def describe(self) -> str:
        at = f" at pick {self.pick}" if self.pick else ""
        return f"{self.kind}{at} +{self.delay * 1000:.0f}ms"


@dataclass
class Run:
    args: list[str]
    code: int | None  # None: killed by us
    out: str
    killed: bool = False
    hung: bool = False
    in_rebase: bool = False
    where: str = ""  # what the git dirs held at the kill
    moment: Moment | None = None


def _rebase_marks(scn: Scenario) -> dict[Path, tuple[int, int]]:
    """Each ``rebase-merge`` directory there is, by git dir, with its inode and mtime."""
    marks: dict[Path, tuple[int, int]] = {}
    for gitdir in scn.gitdirs():
        try:
            stat = (gitdir / "rebase-merge").stat()
        except FileNotFoundError:
            continue
        marks[gitdir] = (stat.st_ino, stat.st_mtime_ns)
    return marks


def describe_leftovers(scn: Scenario) -> str:
    """Where each rebase left in progress stands (pick n of m), and git's lock files."""
    parts = [
        f"{lock.relative_to(scn.root)}"
        for top in (scn.repo / ".git", scn.remote)
        for lock in top.rglob("*.lock")
        if "paradev" not in lock.relative_to(top).parts[:1] and lock.name != "index.lock"
    ]
    for gitdir in scn.gitdirs():
        state = gitdir / "rebase-merge"
        if state.is_dir():
            done, todo = _picks(state / "done"), _picks(state / "git-rebase-todo")
            parts.append(f"{gitdir.name}: rebase-merge, {done} picks done, {todo} to do")
        if (gitdir / "index.lock").exists():
            parts.append(f"{gitdir.name}: index.lock")
    return "; ".join(parts)


def _picks(todo: Path) -> int:
    """How many commands a rebase todo (or done) list holds."""
    try:
        lines = todo.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    return sum(1 for line in lines if line.strip() and not line.startswith("#"))


def _wait_for_moment(scn: Scenario, proc: subprocess.Popen[bytes], moment: Moment) -> bool:
    """Sleep until the kill moment; False when paradev ended first (TimeoutExpired: hung)."""
    deadline = time.monotonic() + PROCESS_TIMEOUT
    if moment.kind == "rebase":
        before = _rebase_marks(scn)
        while proc.poll() is None:
            now = _rebase_marks(scn)
            if any(
                before.get(gitdir) != mark
                and _picks(gitdir / "rebase-merge" / "done") >= moment.pick
                for gitdir, mark in now.items()
            ):
                break
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, PROCESS_TIMEOUT)
            time.sleep(POLL)
    end = time.monotonic() + moment.delay
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(POLL)
    return proc.poll() is None


def rebase_spans(scn: Scenario, proc: subprocess.Popen[bytes]) -> list[float]:
    """How long each rebase lasted while ``proc`` ran (seconds a ``rebase-merge`` existed)."""
    spans: list[float] = []
    since: float | None = None
    while proc.poll() is None:
        busy, now = bool(_rebase_marks(scn)), time.monotonic()
        if busy and since is None:
            since = now
        elif not busy and since is not None:
            spans.append(now - since)
            since = None
        time.sleep(POLL)
    return spans


def run_paradev(
    scn: Scenario, args: list[str], moment: Moment | None, spans: list[float] | None = None
) -> Run:
    """``python -m paradev ARGS`` in its own process group; SIGKILL the group at ``moment``.

    Without a moment it runs to its end; ``spans`` then receives how long each rebase took.
    """
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "paradev", *args],
            cwd=scn.repo,
            env=scn.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        run = Run(args, None, "", moment=moment)
        try:
            if moment is not None and _wait_for_moment(scn, proc, moment):
                os.killpg(proc.pid, signal.SIGKILL)
            elif spans is not None:
                spans.extend(rebase_spans(scn, proc))
            proc.wait(timeout=PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            run.hung = True
        run.killed = proc.returncode == -signal.SIGKILL and not run.hung
        run.code = None if run.killed or run.hung else proc.returncode
        if run.killed:
            run.where = describe_leftovers(scn)
            run.in_rebase = "rebase-merge" in run.where
        output.seek(0)
        run.out = output.read().decode("utf-8", "replace")
    return run


# -- one round ---------------------------------------------------------------------------------


@dataclass
class Round:
    seed: int
    runs: list[Run] = field(default_factory=list)
    no_instruction: int = 0  # resumes after which paradev had printed no next step
    person: list[str] = field(default_factory=list)  # why a person would have been needed
    violations: list[str] = field(default_factory=list)
    not_landed: set[int] = field(default_factory=set)  # agents a stop or refusal named
    strays: int = 0  # gate or agent processes still running once the round was over

    @property
    def kills(self) -> list[Run]:
        return [r for r in self.runs if r.killed]

    @property
    def resumes(self) -> int:
        return len(self.runs) - 1


def next_step(output: str) -> list[str] | None:
    """The ``paradev merge ...`` command paradev's output tells the user to run next."""
    found = NEXT_STEP.search(output)
    return found.group(0).split()[1:] if found else None


@dataclass
class Timing:
    """An uninterrupted train's duration and its longest rebase, to draw kill moments from."""

    train: float
    rebase: float


def draw_moment(rng: random.Random, timing: Timing) -> Moment:
    """A third of the kills at a given pick of a rebase, a third at any time during a
    rebase, a third at any time of the train."""
    draw = rng.random()
    if draw < 1 / 3:
        return Moment("rebase", rng.uniform(0, 0.01), pick=rng.randint(1, COMMITS))
    if draw < 2 / 3:
        return Moment("rebase", rng.uniform(0, timing.rebase))
    return Moment("delay", rng.uniform(0, timing.train))


def play_round(scn: Scenario, seed: int, timing: Timing, max_kills: int = 3) -> Round:
    """Kill and resume as the seed says until paradev finishes or stops; then check."""
    rng = random.Random(seed)
    result = Round(seed)
    kills_left = rng.randint(1, max_kills)
    args = ["merge"]
    main = git(scn.repo, scn.env, "rev-parse", "main")
    for _ in range(kills_left + 8):  # bounded: a resume that never finishes is a loop
        moment = draw_moment(rng, timing) if kills_left else None
        run = run_paradev(scn, args, moment)
        result.runs.append(run)
        main = _check_fast_forward(scn, main, result)
        if "Traceback (most recent call last)" in run.out:
            result.person.append(f"traceback from paradev {' '.join(args)}: {_last_line(run.out)}")
            return finish_round(scn, result)
        if run.hung:
            result.person.append(f"paradev {' '.join(args)} hung > {PROCESS_TIMEOUT:g}s")
            return finish_round(scn, result)
        if run.killed:
            kills_left -= 1
            told = next_step(run.out)
            if told is None:
                result.no_instruction += 1
            args = told or ["merge", "--continue"]
            continue
        if run.code == 0:
            return finish_round(scn, result)
        if run.code == 2 and NO_TRAIN in run.out and scn.state().get("train") is None:
            args = next_step(run.out) or ["merge"]  # killed before its train began, or after
            continue
        result.not_landed.update(int(a) for a in re.findall(r"\bagent (\d+)", run.out))
        kind = "stopped (exit 1)" if run.code == 1 else f"exit {run.code}"
        said = f"paradev {' '.join(args)}: {kind}: {_last_line(run.out)}"
        if said in result.person:
            result.person.append("doing as told stopped again the same way (a loop)")
            return finish_round(scn, result)
        result.person.append(said)
        told = next_step(run.out)
        if run.code == 1 and told:  # a stop this train never needs; does doing as told finish?
            args = told
            continue
        return finish_round(scn, result)
    result.person.append(f"still not finished after {len(result.runs)} runs (a loop)")
    return finish_round(scn, result)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _check_fast_forward(scn: Scenario, old: str, result: Round) -> str:
    new = git(scn.repo, scn.env, "rev-parse", "main")
    if new != old and not _is_ancestor(scn, old, new):
        result.violations.append(f"main moved from {old[:12]} to {new[:12]}, not a fast-forward")
    return new


def _is_ancestor(scn: Scenario, old: str, new: str) -> bool:
    proc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", old, new], cwd=scn.repo, env=scn.env, check=False
    )
    return proc.returncode == 0


def holds_change(scn: Scenario, target: str, head: str) -> bool:
    """Whether ``target`` already holds the change of ``head`` since the fork point.

    Merging ``head`` into ``target`` (their merge base: the fork) changes nothing
    exactly when every hunk of the agent's combined diff is there already.
    """
    proc = subprocess.run(
        ["git", "merge-tree", "--write-tree", target, head],
        cwd=scn.repo,
        env=scn.env,
        capture_output=True,
        text=True,
        check=False,
    )
    tree = proc.stdout.split("\n", 1)[0].strip()
    if proc.returncode == 0 and tree == git(scn.repo, scn.env, "rev-parse", f"{target}^{{tree}}"):
        return True
    return added_lines_there(scn, target, head)


def added_lines_there(scn: Scenario, target: str, head: str) -> bool:
    """Whether every line ``head`` adds since the fork is in the same file on ``target``.

    The check for work that went through a conflict resolution keeping both
    sides, where merging the agent's own version again would conflict.
    """
    added: dict[str, list[str]] = {}
    path = ""
    for line in git(scn.repo, scn.env, "diff", "--no-renames", "-U0", scn.fork, head).splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else ""
        elif line.startswith("+") and path:
            added.setdefault(path, []).append(line[1:])
    for name, lines in added.items():
        show = subprocess.run(
            ["git", "show", f"{target}:{name}"],
            cwd=scn.repo,
            env=scn.env,
            capture_output=True,
            text=True,
            check=False,
        )
        there = set(show.stdout.splitlines()) if show.returncode == 0 else set()
        if not set(lines) <= there:
            return False
    return True


def missing_commits(scn: Scenario, agent: int) -> str:
    """The agent's commits whose patch main lacks (``git cherry``), with their subjects."""
    out = git(scn.repo, scn.env, "cherry", "-v", "main", scn.heads[agent], scn.fork)
    gone = [line[2:].split(" ", 1)[1] for line in out.splitlines() if line.startswith("+ ")]
    return ", ".join(f"'{subject}'" for subject in gone) or "no whole commit"


# -- the checks --------------------------------------------------------------------------------


def finish_round(scn: Scenario, result: Round) -> Round:
    """Check the promises on what the round left; record every broken one."""
    result.strays = len(reap_strays(scn.root))
    state = scn.state()
    finished = not result.person
    if state.get("train"):  # a stopped train: what it has not landed yet, status shows
        result.not_landed.update(state["train"].get("queue", []))
    on_main = {a: holds_change(scn, "main", head) for a, head in scn.heads.items()}
    for agent, there in on_main.items():
        status = state["tasks"].get(str(10 + agent), {}).get("status")
        if not there and status == "merged":
            result.violations.append(
                f"agent {agent}: task marked merged, its change not on main "
                f"(missing: {missing_commits(scn, agent)})"
            )
        elif not there and agent not in result.not_landed:
            result.violations.append(
                f"agent {agent}: change missing from main, never reported "
                f"(missing: {missing_commits(scn, agent)})"
            )
        elif there and finished and status != "merged":
            result.violations.append(f"agent {agent}: on main but its task is {status}")
    reachable = set(git(scn.repo, scn.env, "rev-list", "--all").split())
    for agent, commits in scn.commits.items():
        lost = [c[:12] for c in commits if c not in reachable]
        if lost:
            result.violations.append(f"agent {agent}: commits lost (no ref holds them): {lost}")
    if finished:
        _check_finished(scn, result, state)
    return result


def _check_finished(scn: Scenario, result: Round, state: dict[str, Any]) -> None:
    local = git(scn.repo, scn.env, "rev-parse", "main")
    remote = git(scn.remote, scn.env, "rev-parse", "main")
    if remote != local:
        result.violations.append(f"origin/main {remote[:12]} != main {local[:12]} (push is on)")
    if state.get("train") is not None:
        result.violations.append("the train finished (exit 0) but the state still holds it")
    leftovers = describe_leftovers(scn)
    if leftovers:
        result.violations.append(f"finished, yet left behind: {leftovers}")
    tree = git(scn.repo, scn.env, "rev-parse", "main^{tree}")
    if scn.reference_tree and tree != scn.reference_tree:
        result.violations.append("main's tree differs from the uninterrupted run's")


# -- the soak ----------------------------------------------------------------------------------


@dataclass
class Soak:
    rounds: list[Round]
    seconds: float
    timing: Timing
    package: str = ""  # the paradev package soaked (its __init__.py)

    @property
    def kills(self) -> int:
        return sum(len(r.kills) for r in self.rounds)

    @property
    def rebase_kills(self) -> int:
        return sum(1 for r in self.rounds for k in r.kills if k.in_rebase)

    @property
    def resumes(self) -> int:
        return sum(r.resumes for r in self.rounds)

    @property
    def no_instruction(self) -> int:
        return sum(r.no_instruction for r in self.rounds)

    @property
    def strays(self) -> int:
        return sum(r.strays for r in self.rounds)

    @property
    def needing_person(self) -> list[Round]:
        return [r for r in self.rounds if r.person]

    @property
    def violations(self) -> list[tuple[int, str]]:
        return [(r.seed, v) for r in self.rounds for v in r.violations]


def soak(
    workdir: Path,
    *,
    kills: int,
    rebase_kills: int,
    seed: int = 1,
    max_rounds: int = 60,
    max_kills: int = 3,
    conflict: bool = False,
    paradev_path: str | None = None,
) -> Soak:
    """Play seeded rounds (seed, seed + 1, ...) until ``kills`` kill moments happened,
    ``rebase_kills`` of them inside a rebase, or ``max_rounds`` rounds were played."""
    started = time.perf_counter()
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = soak_env(home, paradev_path)
    package = checked([sys.executable, "-c", "import paradev; print(paradev.__file__)"], home, env)
    scn = build(workdir / "soak", env, conflict)
    saved = workdir / "template"
    shutil.copytree(scn.root, saved, symlinks=True)
    begun, spans = time.perf_counter(), [0.0]
    reference = run_paradev(scn, ["merge"], None, spans)
    timing = Timing(time.perf_counter() - begun, max(spans))
    if reference.code != 0:
        raise RuntimeError(f"the uninterrupted train failed:\n{reference.out}")
    scn.reference_tree = git(scn.repo, scn.env, "rev-parse", "main^{tree}")
    rounds: list[Round] = []
    for number in range(max_rounds):
        restore(saved, scn)
        rounds.append(play_round(scn, seed + number, timing, max_kills))
        if (
            Soak(rounds, 0, timing).kills >= kills
            and Soak(rounds, 0, timing).rebase_kills >= rebase_kills
        ):
            break
    return Soak(rounds, time.perf_counter() - started, timing, package)


def table(result: Soak, kills: int, rebase_kills: int, shown: int = 5) -> str:
    """The figures, each beside what the soak needs, and the first few failures in detail."""
    rows = [
        ("rounds", str(len(result.rounds)), ""),
        ("kill moments (SIGKILL of the group)", str(result.kills), f">= {kills}"),
        ("  of them inside a rebase", str(result.rebase_kills), f">= {rebase_kills}"),
        ("resumes", str(result.resumes), ""),
        ("  after which paradev printed no next step", str(result.no_instruction), ""),
        ("rounds needing a person", str(len(result.needing_person)), "0"),
        ("invariant violations", str(len(result.violations)), "0"),
        ("  in rounds", str(len({seed for seed, _ in result.violations})), "0"),
        ("uninterrupted train", f"{result.timing.train:.1f}s", ""),
        ("  its longest rebase", f"{result.timing.rebase * 1000:.0f}ms", ""),
        ("gates/agents still running after their round", str(result.strays), ""),
        ("wall time", f"{result.seconds:.1f}s", ""),
    ]
    lines = [f"  {name:<44} {value:>8}  {want}".rstrip() for name, value, want in rows]
    lines.extend(f"  {n:>3} x {cause}" for cause, n in causes(result).most_common())
    failing = [r for r in result.rounds if r.person or r.violations]
    for r in failing[:shown]:
        lines.append(f"seed {r.seed}:")
        lines.extend(f"  person needed: {why}" for why in r.person)
        lines.extend(f"  violation: {what}" for what in r.violations)
        lines.extend(f"    {line}" for line in history(r))
    if len(failing) > shown:
        lines.append(
            f"(and {len(failing) - shown} more failing rounds, seeds "
            f"{', '.join(str(r.seed) for r in failing[shown:])})"
        )
    return "\n".join(lines)


def causes(result: Soak) -> Counter[str]:
    """Why persons were needed and what broke, paths and numbers blurred, counted."""
    found: Counter[str] = Counter()
    for r in result.rounds:
        for text in (*(f"person: {p}" for p in r.person), *(f"broke: {v}" for v in r.violations)):
            found[blur(text)] += 1
    return found


def blur(text: str) -> str:
    """``text`` without what differs between rounds: paths, agents, commits, subjects."""
    text = re.sub(r"(project)?/\S+", "PATH", text)
    return re.sub(r"'agent \d+: step \d+'|\bagent[- ]\d+\b|\b[0-9a-f]{12,}\b", "*", text)


def history(r: Round) -> list[str]:
    """What each run of a round did: command, kill moment, what git held then, exit."""
    lines = []
    for run in r.runs:
        command = "paradev " + " ".join(run.args)
        if run.killed and run.moment is not None:
            how = f"killed ({run.moment.describe()})"
            lines.append(f"{command}: {how}: {run.where or 'no rebase in progress'}")
        else:
            lines.append(f"{command}: exit {run.code}: {_last_line(run.out)}")
    return lines


def failed(result: Soak, kills: int, rebase_kills: int) -> list[str]:
    """Why the soak failed, if it did: too few kill moments prove nothing."""
    reasons = []
    if result.kills < kills or result.rebase_kills < rebase_kills:
        reasons.append(
            f"only {result.kills} kill moments ({result.rebase_kills} inside a rebase); "
            f"the soak needs {kills} ({rebase_kills})"
        )
    if result.needing_person:
        reasons.append(f"{len(result.needing_person)} rounds needed a person")
    if result.violations:
        reasons.append(f"{len(result.violations)} invariant violations")
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="kill moments needed")
    parser.add_argument("--rebase-kills", type=int, default=10, help="of them inside a rebase")
    parser.add_argument("--seed", type=int, default=1, help="seed of the first round")
    parser.add_argument("--max-rounds", type=int, default=60)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per round, at most")
    parser.add_argument("--paradev", help="a checkout whose paradev package to soak")
    parser.add_argument(
        "--conflict",
        action="store_true",
        help="agents 4 and 5 conflict; on_conflict = agent, a script keeps both sides",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="paradev-soak-") as tmp:
        result = soak(
            Path(tmp),
            kills=args.kills,
            rebase_kills=args.rebase_kills,
            seed=args.seed,
            max_rounds=args.max_rounds,
            max_kills=args.max_kills,
            conflict=args.conflict,
            paradev_path=args.paradev,
        )
    print(f"crash soak of a {AGENTS}-branch train, {COMMITS} commits each, seeds from {args.seed}")
    print(f"paradev: {result.package}{' (two agents conflict)' if args.conflict else ''}")
    print(table(result, args.kills, args.rebase_kills))
    reasons = failed(result, args.kills, args.rebase_kills)
    for reason in reasons:
        print(f"FAILED: {reason}")
    return 1 if reasons else 0


if __name__ == "__main__":
    sys.exit(main())
