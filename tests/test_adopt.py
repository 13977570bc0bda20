"""A train one host began, killed there, finished by another host with the same refs.

Real processes: the driving ``paradev merge`` is SIGKILLed with its whole
process group (its git children too) at a chosen moment, held there by the
gate or by the remote's pre-receive hook; its train lease is left to expire
on the other host's own clock; ``paradev merge --continue`` there ends in the
refs an uninterrupted train makes on an identical setup.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from paradev.hosts import HOST_ENV
from tests.conftest import HOSTS
from tests.helpers import Result, commit, git, run_process, wait_for_file, work
from tests.test_hosts import plan_text, remote_state

CliFn = Callable[..., Result]
EXPIRY = 1.0  # [agents] lease_expiry: short, so the other host waits a second, not minutes
AUTHORED = "2026-01-01T00:00:00+0000"
LAPTOP_ENV = {"GIT_COMMITTER_DATE": "2026-02-01T00:00:00+0000"}  # the driver's clock
# The other host: another committer at another time; the journal's must win.
BOX_ENV = {
    HOST_ENV: "box",
    "GIT_COMMITTER_DATE": "2026-03-03T03:03:03+0000",
    "GIT_COMMITTER_NAME": "Someone Else",
    "GIT_COMMITTER_EMAIL": "else@box.invalid",
}

# The gate: notes each run (gate-1, gate-2...), and hangs where the test holds it.
GATE = """
import os, time
from pathlib import Path
marks = Path(os.environ["MARKS"])
n = 1 + len(list(marks.glob("gate-*")))
(marks / f"gate-{n}").write_text("running")
if (marks / f"hold-gate-{n}").exists():
    time.sleep(120)
"""

# The remote's pre-receive hook: main only moves forward (the agents' branches may be
# rewritten); with {marks}, each push of main is noted (push-1, push-2...) and hangs where held.
HOOK = """#!/bin/sh
zero=0000000000000000000000000000000000000000
while read old new ref; do
  if [ "$ref" = refs/heads/main ]; then
    if [ "$old" != $zero ] && ! git merge-base --is-ancestor "$old" "$new"; then
      echo "main only moves forward" >&2
      exit 1
    fi
    COUNT
  fi
done
exit 0
"""
COUNT = """n=$(( $(ls {marks} | grep -c '^push-') + 1 ))
    echo running > {marks}/push-$n
    if [ -e {marks}/hold-push-$n ]; then sleep 120; fi"""


def world(
    template_repo: Path, root: Path, marks: Path | None = None, strict: bool = False
) -> dict[str, Path]:
    """A bare remote refusing deletions and rewinds of main, three clones of it: the hosts.

    ``strict``: the remote refuses every non-fast-forward (agent branches too);
    ``marks``: the folder where its hook notes (and holds) the pushes of main.
    """
    origin = root / "origin.git"
    git(root.parent, "init", "-q", "--bare", str(origin))
    git(origin, "config", "receive.denyNonFastForwards", "true" if strict else "false")
    git(origin, "config", "receive.denyDeletes", "true")
    count = COUNT.replace("{marks}", shlex.quote(str(marks))) if marks else ":"
    hook = origin / "hooks" / "pre-receive"
    hook.write_text(HOOK.replace("COUNT", count), encoding="utf-8")
    hook.chmod(0o755)
    git(template_repo, "push", "-q", str(origin), "main")
    clones = {"origin": origin}
    for host in HOSTS:
        (root / host).mkdir(parents=True)
        git(root / host, "clone", "-q", str(origin), "project")
        clones[host] = root / host / "project"
    return clones


def laptop_completes_two_agents(
    clones: dict[str, Path],
    cli: CliFn,
    gate: Path,
    agents: str = "",
    merge: str = "",
    first: dict[str, str | bytes | None] | None = None,
    only_laptop: bool = False,
    first_batch: bool = False,
    box_needs: str = "",
    expiry: float = EXPIRY,
) -> None:
    """The shared plan (gate, push, short leases); laptop's agents 1 and 2 complete a task each.

    ``agents``, ``merge``: more lines for those tables; ``first``: what agent 1 commits;
    ``only_laptop``: #11 and #12 alone (a run on laptop waits for no other host);
    ``first_batch``: #11, #12 and box's #13 (#21 would keep a run on box waiting for laptop);
    ``box_needs``: #13's ``depends_on`` (e.g. "[11]"); ``expiry``: ``lease_expiry``.
    """
    laptop = clones["laptop"]
    text = plan_text().replace("count = 3\n", f"count = 3\nlease_expiry = {expiry}\n{agents}")
    if only_laptop:
        start = text.index("  [[batches.tasks]]\n  agent = 3")
        text = text[:start] + text[text.index("[[batches]]", start) :]
    if box_needs:
        text = text.replace("hours = 1.0\n", f"hours = 1.0\n  depends_on = {box_needs}\n")
    if only_laptop or first_batch:
        text = text[: text.index('[[batches]]\nname = "second"')]  # #21 is not agent 1's yet
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(gate))}"
    text = text.replace('[gate]\ncommand = ""', f"[gate]\ncommand = {json.dumps(command)}")
    commit(laptop, {"plan.toml": f"{text}\n[merge]\npush = true\n{merge}"}, "share the plan")
    git(laptop, "push", "-q", "origin", "main")
    git(clones["box"], "pull", "-q", "--ff-only")
    assert cli("setup", "--host", "laptop", cwd=laptop).code == 0
    trees = laptop.parent / "project-worktrees"
    work(cli, trees, 1, first or {"src/one.py": "ONE = 1\n"})
    work(cli, trees, 2, {"src/two.py": "TWO = 2\n", "README.md": "# sample, two\n"})


def refs_of(origin: Path) -> dict[str, str]:
    """The remote's refs but the state and the leases (their commits hold times and pids).

    A backup ref names its train by its start time: the name is kept up to it.
    """
    out = git(origin, "for-each-ref", "--format=%(refname) %(objectname)")
    refs = {}
    for line in out.splitlines():
        ref, sha = line.split()
        if ref == "refs/paradev/state" or ref.startswith("refs/paradev/lock/"):
            continue
        refs[re.sub(r"^(refs/paradev/backup/.*)/[0-9TZ]+$", r"\1/<train>", ref)] = sha
    return refs


def merged(clone: Path) -> dict[str, Any]:
    state = remote_state(clone)
    return {
        "tasks": {i: state["tasks"][i]["status"] for i in ("11", "12")},
        "train": state.get("train"),  # the journal leaves the shared state with the train
        "trains": [h["status"] for h in state["merge_history"]],
    }


def start_killable(cwd: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``paradev ARGS`` in a process group of its own: killed whole, as a crash kills it."""
    return subprocess.Popen(
        [sys.executable, "-m", "paradev", *args],
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_at(clone: Path, marks: Path, moment: str, env: dict[str, str], *args: str) -> None:
    """``paradev ARGS`` in ``clone``, SIGKILLed with its process group once ``moment`` is held."""
    for setup_push in marks.glob("push-*"):  # the count starts with this command
        setup_push.unlink()
    hold = marks / f"hold-{moment}"
    hold.write_text("hold")
    driver = start_killable(clone, {**env, "MARKS": str(marks)}, *args)
    try:
        wait_for_file(marks / moment, driver)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
    hold.unlink()


def take_over_after_expiry(box: Path, env: dict[str, str]) -> Result:
    """box's ``merge --continue``: refused at its first sight of the lease, run once it expired."""
    early = run_process(box, "merge", "--continue", env=env)
    assert early.code == 2, early.out + early.err  # box waits out the lease's expiry
    assert "holds the lease refs/paradev/lock/train on origin" in early.err
    time.sleep(EXPIRY + 0.2)
    return run_process(box, "merge", "--continue", env=env)


def scripted_hosts(
    template_repo: Path, tmp_path: Path, agent: str, marks: Path | None = None
) -> tuple[dict[str, Path], Path, str]:
    """The hosts, the gate script, and the ``[agents] command`` line running ``agent`` (source).

    ``marks``: where the remote's hook notes (and holds) the pushes of main.
    """
    gate, script = tmp_path / "gate.py", tmp_path / "agent.py"
    gate.write_text(GATE, encoding="utf-8")
    script.write_text(agent, encoding="utf-8")
    hosts = world(template_repo, tmp_path / "hosts", marks)
    return hosts, gate, f"command = {json.dumps([sys.executable, str(script)])}\n"


def calm_train(
    template_repo: Path, tmp_path: Path, cli: CliFn, gate: Path, merge: str, expiry: float = EXPIRY
) -> tuple[dict[str, Path], dict[str, str]]:
    """The reference: the same plan and work, one train that nobody interrupts; its hosts
    and the remote's refs after it."""
    calm = world(template_repo, tmp_path / "calm")
    laptop_completes_two_agents(calm, cli, gate, merge=merge, expiry=expiry)
    (tmp_path / "calm-marks").mkdir()
    env = {**LAPTOP_ENV, "MARKS": str(tmp_path / "calm-marks")}
    result = run_process(calm["laptop"], "merge", env=env)
    assert result.code == 0, result.err
    assert ("merge queue:" in result.out) == bool(merge)
    return calm, refs_of(calm["origin"])


@pytest.fixture
def dated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits made by the test itself are the same commits in both worlds."""
    monkeypatch.delenv(HOST_ENV, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_DATE", AUTHORED)
    monkeypatch.setenv("GIT_COMMITTER_DATE", AUTHORED)


# The merge queue gates both candidates at once, lands both by one fast-forward, pushes base twice.
QUEUE = "parallel = 2\n"


@pytest.mark.parametrize(
    ("moment", "merge"),
    [
        ("gate-1", ""),
        ("push-1", ""),
        ("gate-2", ""),
        ("gate-1", QUEUE),
        ("push-1", QUEUE),
        ("push-2", QUEUE),
        ("push-1", "batch = 2\n"),
    ],
)
def test_another_host_finishes_a_killed_train_with_identical_refs(
    moment: str,
    merge: str,
    template_repo: Path,
    tmp_path: Path,
    cli: CliFn,
    dated: None,
) -> None:
    gate = tmp_path / "gate.py"
    gate.write_text(GATE, encoding="utf-8")
    calm, expected = calm_train(template_repo, tmp_path, cli, gate, merge)
    assert len([r for r in expected if r.startswith("refs/paradev/backup/")]) == 2

    # The same setup; laptop's train is killed at ``moment``.
    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = world(template_repo, tmp_path / "killed", marks)
    laptop_completes_two_agents(hosts, cli, gate, merge=merge)
    kill_at(hosts["laptop"], marks, moment, LAPTOP_ENV, "merge")
    assert refs_of(hosts["origin"]) != expected  # the train had not finished
    journal = remote_state(hosts["box"])["train"]
    assert (journal["host"], journal["status"]) == ("laptop", "running")

    finished = take_over_after_expiry(hosts["box"], {**BOX_ENV, "MARKS": str(marks)})
    assert finished.code == 0, finished.out + finished.err
    assert "was driven by host laptop" in finished.out

    assert refs_of(hosts["origin"]) == expected
    for agent in (1, 2):  # the rewritten agent branches were taken: they are on main
        branch = expected[f"refs/heads/parallel-dev/agent-{agent}"]
        git(calm["origin"], "merge-base", "--is-ancestor", branch, "main")
    assert merged(hosts["box"]) == merged(calm["laptop"])
    assert merged(hosts["box"]) == {
        "tasks": {"11": "merged", "12": "merged"},
        "train": None,
        "trains": ["done"],
    }


# The agent that resolves a conflict handed back to it: keeps both sides, finishes the rebase.
RESOLVER = """
import os, subprocess
from pathlib import Path
with open(Path(os.environ["MARKS"]) / "resolved-in", "a") as note:
    note.write(os.getcwd() + "\\n")
unmerged = subprocess.run(["git", "diff", "--name-only", "--diff-filter=U"],
                          capture_output=True, text=True, check=True).stdout.split()
for name in unmerged:
    lines = Path(name).read_text().splitlines()
    kept = [line for line in lines if not line.startswith(("<<<<<<<", "=======", ">>>>>>>"))]
    Path(name).write_text("\\n".join(kept) + "\\n")
    subprocess.run(["git", "add", "--", name], check=True)
subprocess.run(["git", "-c", "core.editor=true", "rebase", "--continue"], check=True)
"""


def test_a_conflict_for_another_hosts_agent_is_handed_back_to_that_host(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, RESOLVER)
    laptop_completes_two_agents(
        hosts, cli, gate, agents=command, merge='on_conflict = "agent"\n',
        first={"src/one.py": "ONE = 1\n", "README.md": "# sample, one\n"},
    )  # fmt: skip
    marks = tmp_path / "marks"
    marks.mkdir()
    laptop_env = {**LAPTOP_ENV, "MARKS": str(marks)}
    kill_at(hosts["laptop"], marks, "gate-1", LAPTOP_ENV, "merge")

    # box takes the train over, lands agent 1; agent 2 (laptop's) conflicts with it
    box, env = hosts["box"], {**BOX_ENV, "MARKS": str(marks)}
    stopped = take_over_after_expiry(box, env)
    assert stopped.code == 1, stopped.out + stopped.err
    assert "agent 2 runs on host laptop: the conflict is handed back to it" in stopped.err
    assert not (marks / "resolved-in").exists()  # box launched no agent
    journal = remote_state(box)["train"]
    assert (journal["status"], journal["stop"]["agent"]) == ("stopped", 2)
    assert journal["agents"]["2"]["handed_to"] == "laptop"
    box_tree = box.parent / "project-worktrees" / "agent-2"
    assert git(box_tree, "status", "--porcelain") == ""  # box's copy left clean, no rebase
    one_landed = git(hosts["origin"], "rev-parse", "main")

    # laptop picks it up: its agent resolves the conflict in laptop's work tree, the train ends
    done = run_process(hosts["laptop"], "merge", "--continue", env=laptop_env)
    assert done.code == 0, done.out + done.err
    laptop_tree = hosts["laptop"].parent / "project-worktrees" / "agent-2"
    assert (marks / "resolved-in").read_text().splitlines() == [str(laptop_tree)]
    main = git(hosts["origin"], "rev-parse", "main")
    assert git(hosts["origin"], "merge-base", "--is-ancestor", one_landed, main) == ""
    readme = git(hosts["origin"], "show", "main:README.md")
    assert readme.splitlines() == ["# sample, one", "# sample, two"]
    assert merged(box) == {
        "tasks": {"11": "merged", "12": "merged"},
        "train": None,
        "trains": ["done"],
    }


# An agent that works on its task (one file per issue), or resolves a conflict handed back.
WORKER = (
    """
import os, subprocess
from pathlib import Path
if not Path(subprocess.run(["git", "rev-parse", "--git-path", "rebase-merge"],
                           capture_output=True, text=True, check=True).stdout.strip()).exists():
    issue = os.environ["PARADEV_ISSUE"]
    Path(f"done-{issue}.txt").write_text(issue + "\\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"work on #{issue}"], check=True)
    raise SystemExit(0)
"""
    + RESOLVER
)


def test_the_agents_host_run_picks_up_a_conflict_handed_back_to_it(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, WORKER)
    laptop_completes_two_agents(
        hosts, cli, gate, agents=command, merge='on_conflict = "agent"\n',
        first={"src/one.py": "ONE = 1\n", "README.md": "# sample, one\n"}, only_laptop=True,
    )  # fmt: skip
    marks = tmp_path / "marks"
    marks.mkdir()
    laptop_env = {**LAPTOP_ENV, "MARKS": str(marks)}
    kill_at(hosts["laptop"], marks, "gate-1", LAPTOP_ENV, "merge")
    box, env = hosts["box"], {**BOX_ENV, "MARKS": str(marks)}
    assert take_over_after_expiry(box, env).code == 1  # handed back to laptop

    ran = run_process(hosts["laptop"], "run", env=laptop_env, timeout=240)
    assert ran.code == 0, ran.out + ran.err
    laptop_tree = hosts["laptop"].parent / "project-worktrees" / "agent-2"
    assert (marks / "resolved-in").read_text().splitlines() == [str(laptop_tree)]
    readme = git(hosts["origin"], "show", "main:README.md")
    assert readme.splitlines() == ["# sample, one", "# sample, two"]
    state = remote_state(box)
    assert {i: t["status"] for i, t in state["tasks"].items()} == dict.fromkeys(
        ("11", "12"), "merged"
    )
    assert state["train"] is None


def test_a_run_takes_over_the_train_of_a_host_that_died(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, WORKER)
    laptop_completes_two_agents(hosts, cli, gate, agents=command, first_batch=True)
    marks = tmp_path / "marks"
    marks.mkdir()
    kill_at(hosts["laptop"], marks, "gate-1", LAPTOP_ENV, "merge")  # laptop dies mid-train

    # box's run works on its own #13, then must land it: the dead host's train is in the way
    box, env = hosts["box"], {**BOX_ENV, "MARKS": str(marks)}
    assert run_process(box, "setup", env=env).code == 0
    ran = run_process(box, "run", env=env, timeout=120)
    assert ran.code == 0, ran.out + ran.err
    assert "was driven by host laptop" in ran.out + ran.err
    state = remote_state(box)
    assert {i: t["status"] for i, t in state["tasks"].items()} == dict.fromkeys(
        ("11", "12", "13"), "merged"
    )
    assert state["train"] is None
    origin = hosts["origin"]
    assert git(origin, "show", "main:src/one.py") == "ONE = 1"
    assert git(origin, "show", "main:done-13.txt") == "13"
    landed = [entry["agent"] for h in state["merge_history"] for entry in h["landed"]]
    assert sorted(landed) == [1, 2, 3]


# box's agent: works until laptop's #11 is on the remote's main (a minute at most), then
# commits whether it saw it land while it worked.
WAITER = """
import os, subprocess, time
from pathlib import Path
issue, deadline, seen = os.environ["PARADEV_ISSUE"], time.monotonic() + 60, "not landed"
while time.monotonic() < deadline:
    # No check: a fetch racing paradev's push for origin/main fails now and then, as in life.
    subprocess.run(["git", "fetch", "-q", "origin", "main"])
    if subprocess.run(["git", "cat-file", "-e", "FETCH_HEAD:src/one.py"]).returncode == 0:
        seen = "landed"
        break
    time.sleep(0.2)
Path(f"done-{issue}.txt").write_text(seen + "\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", f"work on #{issue}"], check=True)
"""


def run_to_the_end(clone: Path, env: dict[str, str], limit: float) -> Result:
    """``paradev run`` in ``clone``; past ``limit`` seconds its whole group is killed (code -9)."""
    proc = start_killable(clone, env, "run")
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return Result(proc.returncode, out, err)


@pytest.mark.parametrize(
    "box_needs",
    [
        "[11]",  # box has nothing of its own to land until laptop's train lands #11
        "[]",  # box's agent is busy on #13 (it waits to see #11 land) while the train hangs
    ],
)
def test_a_run_with_nothing_to_land_takes_over_the_train_of_a_host_that_died(
    box_needs: str, template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, WAITER)
    laptop_completes_two_agents(
        hosts, cli, gate, agents=command, first_batch=True, box_needs=box_needs
    )
    marks = tmp_path / "marks"
    marks.mkdir()
    kill_at(hosts["laptop"], marks, "gate-1", LAPTOP_ENV, "merge")  # laptop dies mid-train

    box, env = hosts["box"], {**BOX_ENV, "MARKS": str(marks)}
    assert run_process(box, "setup", env=env).code == 0
    ran = run_to_the_end(box, env, limit=90)
    assert ran.code == 0, ran.out + ran.err
    assert "was driven by host laptop" in ran.out + ran.err
    origin = hosts["origin"]
    assert git(origin, "show", "main:done-13.txt") == "landed"  # while box's agent worked
    state = remote_state(box)
    assert {i: t["status"] for i, t in state["tasks"].items()} == dict.fromkeys(
        ("11", "12", "13"), "merged"
    )
    assert state["train"] is None
    assert git(origin, "show", "main:src/one.py") == "ONE = 1"


# A gate slower than the lease's expiry: four expiries per run.
SLOW_GATE = f"""
import os, time
from pathlib import Path
(Path(os.environ["MARKS"]) / "gating").write_text("running")
time.sleep({4 * EXPIRY})
"""


def test_a_train_longer_than_the_expiry_renews_its_lease_and_no_host_takes_it(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    gate, marks = tmp_path / "gate.py", tmp_path / "marks"
    gate.write_text(SLOW_GATE, encoding="utf-8")
    marks.mkdir()
    hosts = world(template_repo, tmp_path / "hosts")
    laptop_completes_two_agents(hosts, cli, gate)
    box_env = {**BOX_ENV, "MARKS": str(marks)}

    driver = start_killable(hosts["laptop"], {**LAPTOP_ENV, "MARKS": str(marks)}, "merge")
    try:
        wait_for_file(marks / "gating", driver)
        for _ in range(2):  # box's first sight, then once the lease would have expired
            refused = run_process(hosts["box"], "merge", "--continue", env=box_env)
            assert refused.code == 2, refused.out + refused.err
            assert "holds the lease refs/paradev/lock/train on origin" in refused.err
            time.sleep(EXPIRY + 0.3)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
    assert driver.returncode == 0, out + err
    assert "was driven by host" not in out  # laptop's train, never taken over
    subjects = git(hosts["origin"], "log", "--format=%s", "refs/paradev/lock/train").splitlines()
    assert len([s for s in subjects if " renewed by laptop " in s]) >= 4
    assert subjects[0].startswith("paradev: lease train released by laptop")
    assert merged(hosts["box"]) == {
        "tasks": {"11": "merged", "12": "merged"},
        "train": None,
        "trains": ["done"],
    }


def test_a_remote_refusing_rewritten_agent_branches_stops_the_train_in_one_line(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    """Every host needs the rewritten branch: a refusal is exit 2 with the fix, not a warning."""
    gate = tmp_path / "gate.py"
    gate.write_text(GATE, encoding="utf-8")
    hosts = world(template_repo, tmp_path / "strict", strict=True)
    laptop_completes_two_agents(hosts, cli, gate)
    laptop, origin = hosts["laptop"], hosts["origin"]
    pushed = git(origin, "rev-parse", "parallel-dev/agent-1")
    env = {**LAPTOP_ENV, "MARKS": str(tmp_path)}

    refused = run_process(laptop, "merge", env=env)

    assert refused.code == 2, refused.out + refused.err
    (line,) = refused.err.splitlines()
    assert line.startswith("paradev: origin rejected parallel-dev/agent-1: ")
    assert "let origin take forced pushes of agent branches" in line
    assert line.endswith("then run paradev merge --continue")
    assert git(origin, "rev-parse", "parallel-dev/agent-1") == pushed
    assert remote_state(laptop)["train"]["queue"]  # the train waits, nothing lost

    git(origin, "config", "receive.denyNonFastForwards", "false")  # the fix it names
    done = run_process(laptop, "merge", "--continue", env=env)
    assert done.code == 0, done.out + done.err
    main = git(origin, "rev-parse", "main")
    for agent in (1, 2):
        git(origin, "merge-base", "--is-ancestor", f"parallel-dev/agent-{agent}", main)
    assert merged(laptop)["tasks"] == {"11": "merged", "12": "merged"}


# -- a merge queue killed while an agent goes through its serial steps --

# Agents 1 and 2 both change README.md: agent 2's work cannot join agent 1's candidate.
CLASHING: dict[str, str | bytes | None] = {
    "src/one.py": "ONE = 1\n",
    "README.md": "# sample, one\n",
}
QUEUE_HANDING_BACK = 'parallel = 2\non_conflict = "agent"\n'


def uninterrupted(template_repo: Path, tmp_path: Path, cli: CliFn, command: str) -> dict[str, str]:
    """The remote's refs after the same queue, driven by laptop alone to its end."""
    calm = world(template_repo, tmp_path / "calm")
    laptop_completes_two_agents(
        calm, cli, tmp_path / "gate.py", agents=command, merge=QUEUE_HANDING_BACK,
        first=CLASHING, only_laptop=True,
    )  # fmt: skip
    (tmp_path / "calm-marks").mkdir()
    done = run_process(
        calm["laptop"], "merge", env={**LAPTOP_ENV, "MARKS": str(tmp_path / "calm-marks")}
    )
    assert done.code == 0, done.out + done.err
    assert "agent 2: its work does not replay cleanly" in done.out
    resolved = (tmp_path / "calm-marks" / "resolved-in").read_text().splitlines()
    assert resolved == [str(calm["laptop"].parent / "project-worktrees" / "agent-2")]
    return refs_of(calm["origin"])


@pytest.mark.parametrize("moment", ["gate-2", "push-2"])
@pytest.mark.parametrize("finisher", [("merge", "--continue"), ("run",)])
def test_a_queue_killed_in_an_agents_serial_steps_ends_with_identical_refs(
    moment: str,
    finisher: tuple[str, ...],
    template_repo: Path,
    tmp_path: Path,
    cli: CliFn,
    dated: None,
) -> None:
    """The agent handed back is picked up by its own host, after the adopting host handed it."""
    marks = tmp_path / "marks"
    marks.mkdir()
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, WORKER, marks)
    expected = uninterrupted(template_repo, tmp_path, cli, command)
    laptop_completes_two_agents(
        hosts, cli, gate, agents=command, merge=QUEUE_HANDING_BACK, first=CLASHING,
        only_laptop=True,
    )  # fmt: skip
    laptop, box = hosts["laptop"], hosts["box"]
    # laptop lands agent 1, rebases agent 2 in its tree, its agent resolves: killed after that
    kill_at(laptop, marks, moment, LAPTOP_ENV, "merge")
    laptop_tree = laptop.parent / "project-worktrees" / "agent-2"
    assert (marks / "resolved-in").read_text().splitlines() == [str(laptop_tree)]
    journal = remote_state(box)["train"]
    assert journal["agents"]["2"]["serial"] is True
    assert refs_of(hosts["origin"]) != expected

    # box adopts the train: agent 2 runs on laptop, so its conflict goes back there
    stopped = take_over_after_expiry(box, {**BOX_ENV, "MARKS": str(marks)})
    assert stopped.code == 1, stopped.out + stopped.err
    assert "was driven by host laptop" in stopped.out
    assert "agent 2 runs on host laptop: the conflict is handed back to it" in stopped.err
    journal = remote_state(box)["train"]
    assert (journal["host"], journal["stop"]["agent"]) == ("box", 2)
    assert journal["agents"]["2"]["handed_to"] == "laptop"
    assert len((marks / "resolved-in").read_text().splitlines()) == 1  # box launched no agent

    # laptop's agent resolves it again in laptop's tree; the train ends as if never killed
    done = run_process(laptop, *finisher, env={**LAPTOP_ENV, "MARKS": str(marks)}, timeout=240)
    assert done.code == 0, done.out + done.err
    assert (marks / "resolved-in").read_text().splitlines() == [str(laptop_tree)] * 2
    # killed before its push, laptop's own main held agent 2's landing: kept, then redone
    assert ("laptop's own landing" in done.out) == (moment == "push-2")
    assert refs_of(hosts["origin"]) == expected
    assert git(hosts["origin"], "show", "main:README.md").splitlines() == [
        "# sample, one",
        "# sample, two",
    ]
    assert merged(box) == {
        "tasks": {"11": "merged", "12": "merged"},
        "train": None,
        "trains": ["done"],
    }


# -- a merge queue whose gate failure is handed back to the agent, its fix taken back --

# The agent: on a gate failure handed back (PARADEV_MODE=gate) it removes what breaks the
# gate and commits the fix, noting where it ran.
FIXER = """
import os, subprocess
from pathlib import Path
if os.environ.get("PARADEV_MODE") == "gate":
    with open(Path(os.environ["MARKS"]) / "fixed-in", "a") as note:
        note.write(os.getcwd() + "\\n")
    subprocess.run(["git", "rm", "-q", "broken.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "fix: the gate passes"], check=True)
"""
# The gate fails on a candidate holding broken.txt.
BREAKABLE_GATE = GATE + '\nif Path("broken.txt").exists():\n    raise SystemExit(1)\n'
EJECTING = 'parallel = 2\non_gate_failure = "eject"\non_conflict = "agent"\n'
BROKEN: dict[str, str | bytes | None] = {"src/one.py": "ONE = 1\n", "broken.txt": "x\n"}


def ejecting_hosts(
    template_repo: Path, tmp_path: Path, cli: CliFn, name: str, marks: Path | None = None
) -> dict[str, Path]:
    """Hosts where laptop's agent 1 completed work that fails the gate, agent 2 good work."""
    (tmp_path / "gate.py").write_text(BREAKABLE_GATE, encoding="utf-8")
    (tmp_path / "agent.py").write_text(FIXER, encoding="utf-8")
    command = f"command = {json.dumps([sys.executable, str(tmp_path / 'agent.py')])}\n"
    hosts = world(template_repo, tmp_path / name, marks)
    laptop_completes_two_agents(
        hosts, cli, tmp_path / "gate.py", agents=command, merge=EJECTING, first=BROKEN,
        only_laptop=True,
    )  # fmt: skip
    return hosts


def test_a_queue_killed_after_taking_a_fix_back_ends_elsewhere_with_identical_refs(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    """Agent 1 fails the gate, is ejected, fixes it when handed back and rejoins the queue;
    laptop is killed while the rebuilt candidates are gated; box finishes the train."""
    calm = ejecting_hosts(template_repo, tmp_path, cli, "calm")
    (tmp_path / "calm-marks").mkdir()
    env = {**LAPTOP_ENV, "MARKS": str(tmp_path / "calm-marks")}
    done = run_process(calm["laptop"], "merge", env=env)
    assert done.code == 0, done.out + done.err
    assert "agent 1: ejected" in done.out and "back in the queue" in done.out
    expected = refs_of(calm["origin"])

    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = ejecting_hosts(template_repo, tmp_path, cli, "killed", marks)
    kill_at(hosts["laptop"], marks, "gate-3", LAPTOP_ENV, "merge")  # the rebuilt candidates
    laptop_tree = hosts["laptop"].parent / "project-worktrees" / "agent-1"
    assert (marks / "fixed-in").read_text().splitlines() == [str(laptop_tree)]
    journal = remote_state(hosts["box"])["train"]
    assert journal["queue"] == [2, 1]

    finished = take_over_after_expiry(hosts["box"], {**BOX_ENV, "MARKS": str(marks)})
    assert finished.code == 0, finished.out + finished.err
    assert "was driven by host laptop" in finished.out
    assert refs_of(hosts["origin"]) == expected
    assert git(hosts["origin"], "ls-tree", "--name-only", "main").split().count("broken.txt") == 0
    assert merged(hosts["box"]) == merged(calm["laptop"])
    assert merged(hosts["box"])["tasks"] == {"11": "merged", "12": "merged"}


@pytest.mark.parametrize("finisher", [("merge", "--continue"), ("run",)])
def test_a_gate_failure_of_another_hosts_agent_is_handed_back_to_that_host(
    finisher: tuple[str, ...], template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    """box adopts the train, ejects laptop's agent 1 and lands agent 2; the gate failure goes
    back to laptop, whose agent fixes it there: the refs of a train nobody interrupted."""
    calm = ejecting_hosts(template_repo, tmp_path, cli, "calm")
    (tmp_path / "calm-marks").mkdir()
    env = {**LAPTOP_ENV, "MARKS": str(tmp_path / "calm-marks")}
    assert run_process(calm["laptop"], "merge", env=env).code == 0
    expected = refs_of(calm["origin"])

    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = ejecting_hosts(template_repo, tmp_path, cli, "killed", marks)
    laptop, box = hosts["laptop"], hosts["box"]
    kill_at(laptop, marks, "gate-1", LAPTOP_ENV, "merge")

    stopped = take_over_after_expiry(box, {**BOX_ENV, "MARKS": str(marks)})
    assert stopped.code == 1, stopped.out + stopped.err
    assert "agent 1: ejected" in stopped.out
    assert "agent 1 runs on host laptop: the gate failure is handed back to it" in stopped.err
    assert not (marks / "fixed-in").exists()  # box launched no agent of laptop's
    journal = remote_state(box)["train"]
    assert (journal["host"], journal["stop"]["agent"]) == ("box", 1)
    assert journal["agents"]["1"]["handed_to"] == "laptop"
    assert remote_state(box)["tasks"]["11"]["status"] == "completed"  # laptop's run lands it
    assert git(hosts["origin"], "show", "main:src/two.py") == "TWO = 2"  # agent 2 landed

    done = run_process(laptop, *finisher, env={**LAPTOP_ENV, "MARKS": str(marks)}, timeout=240)
    assert done.code == 0, done.out + done.err
    laptop_tree = laptop.parent / "project-worktrees" / "agent-1"
    assert (marks / "fixed-in").read_text().splitlines() == [str(laptop_tree)]
    assert refs_of(hosts["origin"]) == expected
    assert merged(box)["tasks"] == {"11": "merged", "12": "merged"}
    assert merged(box)["train"] is None


# -- the host whose own driver was killed takes its train back at once ------------------------

LONG = 3600.0  # a lease no test waits out: only certainty that its holder died lets one take it


@pytest.mark.parametrize(("moment", "merge"), [("gate-1", ""), ("push-1", ""), ("push-2", QUEUE)])
def test_the_host_whose_driver_was_killed_takes_its_train_back_at_once(
    moment: str,
    merge: str,
    template_repo: Path,
    tmp_path: Path,
    cli: CliFn,
    dated: None,
) -> None:
    """laptop's driver is SIGKILLed: its lease names a pid that is gone, so laptop goes on at
    once with the refs of a train never interrupted; box still waits out the expiry."""
    gate = tmp_path / "gate.py"
    gate.write_text(GATE, encoding="utf-8")
    calm, expected = calm_train(template_repo, tmp_path, cli, gate, merge, LONG)

    marks = tmp_path / "marks"
    marks.mkdir()
    hosts = world(template_repo, tmp_path / "killed", marks)
    laptop_completes_two_agents(hosts, cli, gate, merge=merge, expiry=LONG)
    kill_at(hosts["laptop"], marks, moment, LAPTOP_ENV, "merge")
    lease = json.loads(
        git(hosts["origin"], "cat-file", "blob", "refs/paradev/lock/train:lease.json")
    )
    assert lease["state"] == "held"  # the dead driver's, unreleased
    assert lease["holder"].startswith("laptop (pid ")

    box_env = {**BOX_ENV, "MARKS": str(marks)}
    for _ in range(2):  # another host: the dead pid proves nothing there
        refused = run_process(hosts["box"], "merge", "--continue", env=box_env)
        assert refused.code == 2, refused.out + refused.err
        assert "holds the lease refs/paradev/lock/train on origin" in refused.err
    done = run_process(
        hosts["laptop"], "merge", "--continue", env={**LAPTOP_ENV, "MARKS": str(marks)}
    )
    assert done.code == 0, done.out + done.err
    assert "was driven by host" not in done.out  # its own train, taken back

    assert refs_of(hosts["origin"]) == expected
    assert (
        merged(hosts["box"])
        == merged(calm["laptop"])
        == {
            "tasks": {"11": "merged", "12": "merged"},
            "train": None,
            "trains": ["done"],
        }
    )
    subjects = git(hosts["origin"], "log", "--format=%s", "refs/paradev/lock/train").splitlines()
    assert subjects[0].startswith("paradev: lease train released by laptop")
    assert subjects[1].startswith("paradev: lease train taken by laptop")


def test_a_run_on_the_host_whose_driver_was_killed_lands_at_once(
    template_repo: Path, tmp_path: Path, cli: CliFn, dated: None
) -> None:
    """``paradev run`` on laptop, its own train's driver SIGKILLed: it goes on with the train
    at once (the old code waited out the lease: here an hour, past the run's limit)."""
    hosts, gate, command = scripted_hosts(template_repo, tmp_path, WORKER)
    laptop_completes_two_agents(hosts, cli, gate, agents=command, only_laptop=True, expiry=LONG)
    marks = tmp_path / "marks"
    marks.mkdir()
    kill_at(hosts["laptop"], marks, "gate-1", LAPTOP_ENV, "merge")

    ran = run_to_the_end(hosts["laptop"], {**LAPTOP_ENV, "MARKS": str(marks)}, limit=150)
    assert ran.code == 0, ran.out + ran.err
    state = remote_state(hosts["box"])
    assert {i: t["status"] for i, t in state["tasks"].items()} == dict.fromkeys(
        ("11", "12"), "merged"
    )
    assert state["train"] is None
    assert git(hosts["origin"], "show", "main:src/two.py") == "TWO = 2"
