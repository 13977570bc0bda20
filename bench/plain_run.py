"""The limit for ``bench/run.py``: a plain script running the same plan with raw git.

It does the least a dependency-driven run must do, and nothing else: launch each
task's agent in its agent's worktree once the task's dependencies have landed and
the agent is free (an agent takes its next task after its previous one landed),
then rebase the finished branch onto the candidate ahead of it (or main), run the
gate there (up to ``parallel`` gates at once, stacked as a merge queue) and move
main forward with a compare-and-swap ``update-ref``, in order. No journal, no
checks, no crash recovery, no trailers, no supervisor, no logs: what ``paradev
run`` adds costs time, and this shows how much. It runs in a process of its own,
started like ``paradev run``, so its Python start-up counts too.

Run by ``bench/run.py`` as ``python bench/plain_run.py SPEC.json`` in the project;
SPEC holds the tasks, the agent command, the gate command and ``parallel``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@dataclass
class Task:
    agent: int
    issue: int
    depends_on: list[int]
    start: str = ""  # main when its agent started it
    tip: str = ""  # its branch once rebased onto the candidate ahead
    gated: bool = False


@dataclass
class Plain:
    repo: Path
    tasks: list[Task]
    agent_argv: list[str]
    gate_argv: list[str]
    parallel: int
    main: str = ""
    landed: set[int] = field(default_factory=set)
    busy: set[int] = field(default_factory=set)  # agents with a task not yet landed
    queue: list[Task] = field(default_factory=list)  # finished, in landing order
    # pid -> (kind, task, process); the Popen is kept so that subprocess does not reap it
    children: dict[int, tuple[str, Task, subprocess.Popen[bytes]]] = field(default_factory=dict)

    def worktree(self, agent: int) -> Path:
        return self.repo.parent / f"plain-agent-{agent}"

    def launch_ready(self) -> None:
        for task in self.tasks:
            waiting = task.issue in self.landed or task.agent in self.busy or task.start
            earlier = [t for t in self.tasks if t.agent == task.agent and t.issue < task.issue]
            if waiting or any(t.issue not in self.landed for t in earlier):
                continue
            if all(d in self.landed for d in task.depends_on):
                self.start(task)

    def start(self, task: Task) -> None:
        tree = self.worktree(task.agent)
        git(tree, "reset", "-q", "--hard", "main")
        task.start = git(tree, "rev-parse", "HEAD")
        env = {**os.environ, "PARADEV_ISSUE": str(task.issue)}
        proc = subprocess.Popen(self.agent_argv, cwd=tree, env=env, stdout=subprocess.DEVNULL)
        self.children[proc.pid] = ("agent", task, proc)
        self.busy.add(task.agent)

    def gate_ready(self) -> None:
        """Rebase and gate the candidates not gated yet, each on the one ahead of it."""
        gating = sum(kind == "gate" for kind, _, _ in self.children.values())
        for index, task in enumerate(self.queue):
            if task.tip or gating >= self.parallel:
                continue
            onto = self.queue[index - 1].tip if index else self.main
            if not onto:
                return  # the candidate ahead is not rebased yet
            tree = self.worktree(task.agent)
            if onto != task.start:
                git(tree, "rebase", "-q", onto)
            task.tip = git(tree, "rev-parse", "HEAD")
            proc = subprocess.Popen(self.gate_argv, cwd=tree)
            self.children[proc.pid] = ("gate", task, proc)
            gating += 1

    def land_passed(self) -> None:
        while self.queue and self.queue[0].gated:
            task = self.queue.pop(0)
            git(self.repo, "update-ref", "refs/heads/main", task.tip, self.main)
            self.main = task.tip
            self.landed.add(task.issue)
            self.busy.discard(task.agent)

    def run(self) -> int:
        self.main = git(self.repo, "rev-parse", "main")
        self.launch_ready()
        while self.children:
            pid, status = os.wait()
            kind, task, proc = self.children.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                print(f"{kind} of #{task.issue} failed", file=sys.stderr)
                return 1
            if kind == "agent":
                self.queue.append(task)
            else:
                task.gated = True
                self.land_passed()
                self.launch_ready()
            self.gate_ready()
        return 0 if len(self.landed) == len(self.tasks) else 1


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    tasks = [Task(agent, issue, deps) for agent, issue, deps in spec["tasks"]]
    plain = Plain(Path.cwd(), tasks, spec["agent"], spec["gate"], spec["parallel"])
    code = plain.run()
    print(json.dumps({task.issue: task.start for task in tasks}))
    return code


if __name__ == "__main__":
    sys.exit(main())
