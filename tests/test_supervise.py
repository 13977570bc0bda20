"""The waiting parent shared by the agents' supervisors and the detached run (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from paradev import agentrecord, supervise
from tests.helpers import wait_for_file

ROOT = Path(supervise.__file__).resolve().parent.parent  # paradev itself, not an agent's copy

CHILD = r"""
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGTERM, lambda n, f: (out.write_text(f"term {os.getpgrp()}"), sys.exit(7)))
Path(str(out) + ".ready").write_text(str(os.getpgrp()))
time.sleep(60)
"""

SLEEPER = r"""
import sys, time
from pathlib import Path
Path(sys.argv[1]).write_text("up")
time.sleep(60)
"""


def _parent(tmp_path: Path, script: str, forward: bool) -> subprocess.Popen[bytes]:
    """A waiting parent (``wait_for_child``) over ``script``, in a session of its own."""
    child = tmp_path / "child.py"
    child.write_text(script)
    code = (
        "import sys; from paradev.supervise import wait_for_child; "
        f"sys.exit(wait_for_child([sys.executable, {str(child)!r}, {str(tmp_path / 'out')!r}], "
        f"forward={forward}))"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, start_new_session=True)


def test_forwarding_parent_hands_a_signal_to_its_child_in_a_group_of_its_own(
    tmp_path: Path,
) -> None:
    parent = _parent(tmp_path, CHILD, forward=True)
    group = int(wait_for_file(tmp_path / "out.ready", parent))
    assert group != os.getpgid(parent.pid)  # the child leads its own group

    parent.send_signal(signal.SIGTERM)  # to the parent alone

    assert parent.wait(30) == 7  # the child's own exit code
    assert (tmp_path / "out").read_text() == f"term {group}"


def test_a_sharing_parent_outlives_a_group_signal_and_returns_128_plus_n(tmp_path: Path) -> None:
    parent = _parent(tmp_path, SLEEPER, forward=False)
    wait_for_file(tmp_path / "out", parent)

    os.killpg(parent.pid, signal.SIGTERM)  # the whole group: parent and child alike

    assert parent.wait(30) == 128 + signal.SIGTERM  # the parent waited and said how it ended


def test_the_supervisor_records_a_launch_failure_and_imports_nothing_heavy(
    tmp_path: Path,
) -> None:
    record = tmp_path / "agent.json"
    argv = supervise.command(record, [str(tmp_path / "no-such-program")])

    proc = subprocess.run(argv, capture_output=True, text=True, check=False)

    assert proc.returncode == supervise.LAUNCH_FAILED
    assert "cannot launch" in proc.stdout
    data = json.loads(record.read_text())
    assert data["exit_code"] == supervise.LAUNCH_FAILED and data["pid"] is None
    modules = subprocess.run(
        [sys.executable, "-S", "-c", "import sys, paradev.supervise; print(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    heavy = {"dataclasses", "inspect", "json", "subprocess", "pathlib", "typing", "enum"}
    assert not heavy & set(modules)  # paid at every launch
    assert {m for m in modules if m.startswith("paradev.")} == {
        "paradev.procstat",
        "paradev.supervise",
    }


def test_the_supervisor_records_the_agents_pid_and_exit_code_for_a_later_run(
    tmp_path: Path,
) -> None:
    record = tmp_path / "agents" / "agent-1.json"
    record.parent.mkdir()
    agent = tmp_path / "agent.py"
    agent.write_text("import os, sys; print(os.getpid(), os.getppid()); sys.exit(3)\n")
    argv = supervise.command(record, [sys.executable, str(agent)])
    env = {**os.environ, "PARADEV_ISSUE": "12"}

    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)

    assert proc.returncode == 3
    pid, parent = (int(n) for n in proc.stdout.split())
    written = agentrecord.read(record)
    assert written is not None
    assert (written.supervisor, written.pid, written.issue, written.exit_code) == (
        parent,
        pid,
        12,
        3,
    )
    assert written.start is not None and written.supervisor_start is not None
    assert not written.agent_alive() and not written.supervisor_alive()
    assert [p.name for p in record.parent.iterdir()] == ["agent-1.json"]  # no temp file left


def test_an_agent_under_the_supervisor_gets_the_signals_python_ignores_back(
    tmp_path: Path,
) -> None:
    """Python ignores SIGPIPE for itself; an agent (a shell pipeline) must not inherit that."""
    argv = supervise.command(tmp_path / "r.json", ["sh", "-c", "grep SigIgn /proc/self/status"])

    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    ignored = int(out.split()[1], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1)) and not ignored & (1 << (signal.SIGXFSZ - 1))
