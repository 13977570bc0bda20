"""``paradev run``: the whole plan unattended, carrying out ``paradev.scheduler``'s decisions.

One thread polls everything: the agents (each under a supervisor, see
``paradev.supervise``), the merge train, and the schedule. Agents are
launched, completed and failed by ``runner.Supervisor``'s own code; a
completed task is landed by a child ``paradev merge --follow`` process: work
that completes while it runs joins it (``paradev.train.join``), and each
agent it lands is let go at once, so its next task starts mid-train and
lands in the same train. The train keeps its pipe from the run open: a line
whenever a task ends, end of input once nothing more can come (``_tell_train``),
so one train lands the whole run instead of one per round of tasks. The loop
sleeps until a child ends or the train writes, never a fixed poll.

Why a child process for the train rather than a thread: the train is built to
run alone in its process — its own locks, journal, gate processes and signal
handling — and it survives the run being killed (the next run finds its
journal and lets it finish, or goes on with ``merge --continue``). In a
thread, a Ctrl-C would stop its gate under it and leave a landing that looks
like a gate failure. The price is the child's start (a few tenths of a
second per landing), paid while the agents keep working.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paradev import agentrecord, lanes, processes, runstatus
from paradev.atomic import write_json
from paradev.errors import ParadevError, PreconditionError, StateError, Stopped
from paradev.git import git_env, is_ancestor
from paradev.plan import Task
from paradev.runner import (
    POLL_SECONDS,
    Progress,
    Row,
    Running,
    Supervisor,
    apply_moves,
    check_launch,
    launch_preflight,
    log_path,
    log_size,
    mark_failed,
)
from paradev.scheduler import FLOW, LANDED, Schedule, decide
from paradev.state import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    INTERRUPTED,
    MERGED,
    State,
    refused_while_locked,
)
from paradev.text import printable
from paradev.workspace import Workspace

if TYPE_CHECKING:
    from paradev.shared import SharedStateStore

LOST = -1  # an adopted agent that ended without a recorded exit code
Say = Callable[..., None]  # say(kind, text, quiet=False, **fields): one event of the run
MERGE_ATTEMPTS = 3  # trains that may end (or refuse) without landing a task before it counts
BUSY = 2  # 'paradev merge' refused: a precondition, such as an agent still held
PULL_EVERY = 2.0  # seconds between pulls of the shared state while a run waits ([agents] hosts)
QUIET_SECONDS = 1.0  # the longest sleep of the loop while children and the train say nothing
NEWS = 0.02  # how often, within a poll, the merge train's log is looked at for a landing


def agents_dir(ws: Workspace) -> Path:
    return ws.store.dir / "agents"


def record_path(ws: Workspace, agent: int) -> Path:
    """Where agent ``agent``'s supervisor records its pid and exit code."""
    return agents_dir(ws) / f"agent-{agent}.json"


class Adopted:
    """An agent a killed run left under its supervisor: watched through the supervisor's record."""

    def __init__(self, path: Path, record: agentrecord.Record) -> None:
        self.path = path
        self.pid = record.supervisor  # the supervisor leads the agent's process group

    def poll(self) -> int | None:
        record = agentrecord.read(self.path)
        if record is None:
            return LOST
        if record.supervisor_alive() or record.agent_alive():
            return None
        return LOST if record.exit_code is None else record.exit_code

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.path), timeout or 0.0)
            time.sleep(0.02)
        return code


class RunSupervisor(Supervisor):
    """run-batch's Supervisor, with agents under supervisors and no queue of its own."""

    def __init__(
        self,
        ws: Workspace,
        progress: Progress,
        clock: Callable[[], float],
        ended: Callable[[int], None],
    ) -> None:
        super().__init__(ws, {}, progress, clock)
        self.adopted: list[Adopted] = []
        self.ended = ended  # told the agent at once: the merge train may take it from there

    def _done(self, task: Task, status: str, detail: str, log: Path | None) -> None:
        self.ended(task.agent)
        super()._done(task, status, detail, log)

    def _next(self, agent: int) -> None:
        """Nothing: the schedule picks the next task once the previous one landed."""

    def _skip_rest(self, agent: int, why: str) -> None:
        """Nothing: the schedule says what a failed task blocks."""

    def _launch(self, task: Task) -> Running:
        record_path(self.ws, task.agent).unlink(missing_ok=True)  # before the task starts
        return super()._launch(task)

    def _spawn(self, task: Task, prompt: Path, log: Path) -> subprocess.Popen[bytes]:
        from paradev.runner import launch

        path = record_path(self.ws, task.agent)
        path.parent.mkdir(parents=True, exist_ok=True)
        return launch(self.ws, task, prompt, log, mode="task", record=path)

    def _exited(self, running: Running, code: int) -> None:
        if code == LOST:
            self._fail(running, "its agent ended with no exit code recorded", INTERRUPTED)
            return
        super()._exited(running, code)

    def poll(self) -> None:
        """Complete or fail every agent that ended or timed out."""
        self._poll()

    def stop_all(self, why: str) -> None:
        """Stop every agent, adopted ones too; their tasks are interrupted."""
        self._interrupt(why)

    def adopt(self, task: Task, adopted: Adopted, log: Path) -> None:
        now = self.clock()
        deadline = now + self.ws.plan.agent_timeout
        self.running[task.agent] = Running(task, adopted, log, now, deadline, log_size(log))
        self.adopted.append(adopted)
        self._keep_alive(task)  # [agents] hosts: its task's lease, unrenewed since the kill

    def _interrupt(self, why: str) -> None:
        alive = [a for a in self.adopted if a.poll() is None]
        processes.stop(alive)
        super()._interrupt(why)


@dataclass
class Landing:
    """The child ``paradev merge`` landing completed tasks."""

    proc: subprocess.Popen[bytes]
    issues: frozenset[int]  # what was waiting to land when it started
    log: Path
    offset: int
    tail: list[str] = field(default_factory=list)  # its last lines, for why it stopped
    told: bytes = b""  # the last word the run sent it (paradev.train.join.word)


@dataclass
class Summary:
    statuses: dict[int, str]
    notes: dict[int, str] = field(default_factory=dict)

    @property
    def landed(self) -> bool:
        return all(s in LANDED for s in self.statuses.values())


class Run:
    """The loop of ``paradev run``: launch what is ready, land what completed, until done."""

    def __init__(
        self,
        ws: Workspace,
        progress: Progress,
        say: Say,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = ws
        self.progress = progress
        self.say = say
        self.clock = clock
        self.locks: dict[int, ExitStack] = {}
        # agents whose task just ended: let go once this poll's launches are decided, so a
        # next task that may start while the previous one lands keeps its agent (paradev.lanes)
        self.ending: set[int] = set()
        self.agents = RunSupervisor(ws, progress, clock, self.ending.add)
        self.given_up: dict[int, str] = {}
        self.landing: Landing | None = None
        self.standby: subprocess.Popen[bytes] | None = None  # the next landing's process
        self.stopped: str | None = None  # why nothing more lands in this run
        self.leave_out: Stop | None = None  # where the train stopped at a failed hand-back
        self.left_out: set[Stop] = set()  # each left out once: never a loop
        self.held: set[int] = set()  # agents whose lock another paradev holds
        self.shown: dict[int, str] = {}
        self.snapshot: dict[str, Any] = {}  # what run.json holds (written only when it changes)
        self.statuses: dict[int, str] = {}
        self.told = 0  # outcomes of the agents already looked at
        self.attempts: dict[int, int] = {}  # issue -> trains that ended without landing it
        self.refusals = 0  # 'paradev merge' refusals (exit 2) in a row
        self.here = ws.agents_here()  # [agents] hosts: the agents this host runs
        self.pulled = -PULL_EVERY  # when the shared state was last pulled (hosts)
        self.lease_wait = 0.0  # no train started before then: another host's held the lease
        # an agent may start its next task while its previous one lands from a lane
        self.overlap = ws.plan.schedule == FLOW and lanes.allowed(ws)
        # tasks that wait for their previous task to land: a dependency not in the branch
        self.lane_refused: dict[int, str] = {}
        self.train_seen = False  # the last state read had a train journal

    # -- the loop --
    def run(self) -> Summary:
        try:
            self._adopt()
            while True:
                self.agents.poll()
                self._note_failures()
                self._poll_landing()
                state = self._state()
                self._tell_changes(state)
                schedule = self._decide(state)
                self._write_snapshot(schedule)
                if self._over(schedule):
                    break
                # first: a train must not take an agent it starts
                claimed = self._claim(state, schedule)
                ended = self._let_go(claimed)
                self._land(state, schedule)
                self._tell_train(ended, state.train, starting=bool(claimed))
                self._start(claimed)  # the train goes on meanwhile: it knows what it may take
                _load_train()  # once, after the first launches (they do not wait for it)
                self._keep_standby()  # after the launches: its imports would slow them
                self.progress.show(self._rows(schedule))
                self._wait_for_news()
        except KeyboardInterrupt as interrupt:
            with processes.shielded():
                self.agents.stop_all(processes.describe(interrupt))
            raise
        finally:
            self._end_standby()
            self._tell_train(ended=False, train=None, done=True)
            runstatus.path(self.ws.store.dir).unlink(missing_ok=True)
            for lock in self.locks.values():
                lock.close()
        return self._summary()

    def _decide(self, state: State) -> Schedule:
        held = {lane.issue for lane in lanes.read(self.ws).values() if lane.held}
        return decide(
            self.ws.plan,
            state,
            given_up=self.given_up,
            here=self.here,
            overlap=self.overlap,
            held=held,
        )

    def _wait_for_news(self) -> None:
        """Sleep until a child process ends or the merge train writes, at most a poll's time,
        or ``_quiet_seconds`` when nothing else can bring news.

        A fixed sleep made every event (an agent done, a train done, a task
        landed mid-train) wait up to a whole poll before the run acted on it:
        with a dozen tasks, a second of the makespan.
        """
        children = [
            r.proc for r in self.agents.running.values() if isinstance(r.proc, subprocess.Popen)
        ]
        if self.landing is not None:
            children.append(self.landing.proc)
        with ExitStack() as fds:
            alive = [c for c in children if c.returncode is None]
            watched = [fds.enter_context(processes.exit_descriptor(c)) for c in alive]
            unwatched = -1 in watched  # no exit descriptor (Linux < 5.3): only a poll sees it end
            deadline = time.monotonic() + (POLL_SECONDS if unwatched else self._quiet_seconds())
            size = self._merge_log_size()
            while (left := deadline - time.monotonic()) > 0:
                step = left if self.landing is None else min(left, NEWS)  # NEWS: its log
                ready, _, _ = select.select([f for f in watched if f >= 0], [], [], step)
                if ready or self._merge_log_size() != size:
                    return

    def _quiet_seconds(self) -> float:
        """How long the loop may sleep when no child ends and the train writes nothing.

        A poll's time while news may come unannounced: an adopted agent (no exit
        descriptor), [agents] hosts (other hosts' state), a train this run did not start
        (a killed run's) or that refused, an agent another paradev holds. Else until the
        first agent's deadline, at most QUIET_SECONDS: each turn that finds nothing new
        reads the state, ~2 ms of CPU, ten times a second.
        """
        running = self.agents.running.values()
        unannounced = (
            self.ws.plan.hosts
            or self.refusals
            or self.held
            or (self.landing is None and self.train_seen)
            or any(isinstance(r.proc, Adopted) for r in running)
        )
        if unannounced:
            return POLL_SECONDS
        deadlines = [r.deadline - self.clock() for r in running]
        return max(POLL_SECONDS, min([QUIET_SECONDS, *deadlines]))

    def _state(self) -> State:
        """The state; with [agents] hosts pulled from the remote at most every PULL_EVERY s.

        Other hosts' tasks progress only there; an unreachable remote is asked again later.
        """
        store = self.ws.store
        shared = self._shared()
        if shared is not None and self.clock() - self.pulled >= PULL_EVERY:
            self.pulled = self.clock()
            with suppress(ParadevError):
                shared.pull()
        state = store.read()
        self.train_seen = state.train is not None
        return state

    def _shared(self) -> SharedStateStore | None:
        """The state store when it is shared ([agents] hosts): its module (and the leases')
        is loaded only then, as the workspace loads it (``workspace._shared_store``)."""
        if not self.ws.plan.hosts:
            return None
        from paradev.shared import SharedStateStore

        store = self.ws.store
        return store if isinstance(store, SharedStateStore) else None

    def _merge_log_size(self) -> int:
        return -1 if self.landing is None else log_size(self.landing.log)

    def _over(self, schedule: Schedule) -> bool:
        if self.agents.running or self.landing is not None:
            return False
        if self.stopped is not None:
            return True
        if self.leave_out is not None:
            return False
        return not (schedule.ready or schedule.landing or schedule.elsewhere)

    # -- agents --
    def _adopt(self) -> None:
        """Agents a killed run left running are watched, never started again; lost ones restart."""
        state = self.ws.store.read()
        found = {}
        for task in self.ws.plan.tasks():
            if self.here is not None and task.agent not in self.here:
                continue  # another host's agent: that host's run watches it
            if state.status(task.issue) == IN_PROGRESS:
                record = agentrecord.read(record_path(self.ws, task.agent))
                found[task] = record if record and record.issue == task.issue else None
        _refuse_unsupervised(state, [t for t, r in found.items() if r is None])
        for task, record in found.items():
            if record is None:
                self._lost(task)
                continue
            self._lock(task.agent)
            log = Path(state.tasks[task.issue].log or log_path(self.ws, f"issue-{task.issue}"))
            self.agents.adopt(task, Adopted(record_path(self.ws, task.agent), record), log)
            self.say(
                "adopted",
                f"agent {task.agent}: #{task.issue} was launched under a supervisor "
                f"(pid {record.supervisor}) by an earlier run: adopted, not started again",
                agent=task.agent,
                issue=task.issue,
                pid=record.supervisor,
            )

    def _note_failures(self) -> None:
        """A task that failed in this run is not started again by it (an agent lost is)."""
        for outcome in self.agents.outcomes[self.told :]:
            if outcome.status == FAILED:
                self.given_up[outcome.task.issue] = outcome.detail
        self.told = len(self.agents.outcomes)

    def _lost(self, task: Task) -> None:
        message = (
            f"agent {task.agent}'s process for #{task.issue} from an earlier run is gone; "
            "the task counts as interrupted and starts again"
        )
        mark_failed(self.ws, task, message, INTERRUPTED)
        self.say("lost", message, agent=task.agent, issue=task.issue)

    def _lock(self, agent: int) -> bool:
        """Hold the agent while it works: a ``paradev merge`` must not land it meanwhile."""
        if agent in self.locks:
            return True
        stack = ExitStack()
        try:
            stack.enter_context(self.ws.store.agent_lock(agent, "paradev run"))
        except StateError:
            self.held.add(agent)
            return False
        self.held.discard(agent)
        self.locks[agent] = stack
        return True

    def _let_go(self, claimed: list[Task]) -> bool:
        """Release the agents whose task ended and that start no other (``claimed``): the
        train may land their branch now. Whether any task ended."""
        ended = bool(self.ending)
        starting = {task.agent for task in claimed}
        for agent in sorted(self.ending):
            if agent not in self.agents.running and agent not in starting:
                self._release(agent)
        self.ending.clear()
        return ended

    def _release(self, agent: int) -> None:
        lock = self.locks.pop(agent, None)
        if lock is not None:
            lock.close()

    def _claim(self, state: State, schedule: Schedule) -> list[Task]:
        """Hold the agent of every ready task and get its branch ready (a lane for its previous
        task); what may start. A refusal fails that task alone.

        The agents start only after the merge train has had its word (``_start``): a
        launch costs a tenth of a second or more, and the train, told first, joins the
        work that just completed (from its lane or its idle agent) meanwhile, while a
        held agent keeps it off the branches that are about to be busy.
        """
        claimed: list[Task] = []
        if self.stopped is not None:
            return claimed
        self.held = set()
        for task in schedule.ready:
            if task.issue in self.lane_refused:
                if self._waiting_to_land(state, task):
                    continue  # not even held a moment: the train may take the branch meanwhile
                del self.lane_refused[task.issue]
            if not self._lock(task.agent):
                continue
            try:
                ready = self._get_ready(state, task)
            except ParadevError as err:
                self.locks.pop(task.agent).close()
                self._give_up(task, str(err))
                continue
            if not ready:
                self.locks.pop(task.agent).close()
                continue
            claimed.append(task)
        return claimed

    def _start(self, claimed: list[Task]) -> None:
        for task in claimed:
            self.agents.start(task)  # a launch that fails fails the task (an outcome)

    def _get_ready(self, state: State, task: Task) -> bool:
        """The branch on the new base (all its earlier work landed): start() takes it from there.

        When its previous task still waits to land, that task goes to its lane
        first and the branch stays as it is (the next task builds on it);
        False: it cannot now (the train took the agent meanwhile), try later.
        """
        previous = self._waiting_to_land(state, task)
        if previous is not None:
            return self._open_lane(task, previous)
        move = launch_preflight(self.ws, state, task)
        if move is not None:
            apply_moves(self.ws, [move])
            self.say("moved", move.describe(self.ws.plan.base), agent=task.agent)
        return True

    def _waiting_to_land(self, state: State, task: Task) -> Task | None:
        """The agent's completed task that ``task`` starts ahead of (the schedule's overlap)."""
        earlier = None
        for other in self.ws.tasks_of(task.agent):
            if other.issue == task.issue:
                break
            if state.status(other.issue) not in LANDED:
                earlier = other
        return earlier if earlier is not None and state.status(earlier.issue) == COMPLETED else None

    def _open_lane(self, task: Task, previous: Task) -> bool:
        """Put ``previous``'s head on its lane; False when it is no longer waiting to land.

        Read again under the agent's lock: the train may have landed it from
        the branch meanwhile (then ``task`` starts the usual way, next poll).
        """
        state = self.ws.store.read()
        record = state.tasks.get(previous.issue)
        if record is None or record.status != COMPLETED or not record.head_commit:
            return False
        if check_launch(self.ws, state, task):
            return False  # the next poll's launch_preflight says what is wrong
        missing = _dependencies_missing(self.ws, state, task, record.head_commit)
        if missing:  # it starts once the branch lands and moves to base, which holds them
            shown = ", ".join(f"#{d}" for d in missing)
            why = (
                f"#{previous.issue} to land: agent {task.agent}'s branch does not hold its "
                f"dependency {shown}, landed since"
            )
            self.lane_refused[task.issue] = why  # said by the next poll's snapshot
            return False
        lane = lanes.read(self.ws).get(task.agent)
        if lane is None or (lane.issue, lane.head) != (previous.issue, record.head_commit):
            try:
                lane = lanes.open_lane(
                    self.ws, state, task.agent, previous.issue, record.head_commit
                )
            except ParadevError as err:  # it lands from the branch; this run overlaps no more
                self.say("lane", f"agent {task.agent}: no lane for #{previous.issue}: {err}")
                self.overlap = False
                return False
        if lane.held:
            return False
        self.say(
            "lane",
            f"agent {task.agent}: #{previous.issue} lands from {lanes.branch(task.agent)} "
            f"while #{task.issue} starts",
            agent=task.agent,
            issue=previous.issue,
        )
        return True

    def _give_up(self, task: Task, why: str) -> None:
        """The task ended unfinished in this run: it is not started again, and says why."""
        self.given_up[task.issue] = why
        self.say(
            "given_up",
            f"#{task.issue} (agent {task.agent}): not run: {why}",
            issue=task.issue,
            agent=task.agent,
            reason=why,
        )

    # -- landing --
    def _land(self, state: State, schedule: Schedule) -> None:
        """Start a ``paradev merge`` when work waits to land and no train runs, or to take
        over the train of a host that died (even with nothing of this host's to land)."""
        train = state.train
        adoptable = train is not None and _driven_elsewhere(self.ws, train)
        if self.leave_out is not None and _stopped_at(train) != self.leave_out:
            self.leave_out = None  # resolved meanwhile, by hand: nothing to leave out
        if self.landing is not None or self.stopped is not None:
            return
        if not (schedule.landing or adoptable or self.leave_out) or self.clock() < self.lease_wait:
            return
        args = ["merge", "--follow"]
        if train is not None:
            from paradev.train.journal import driver_gone

            handed = _handed_here(self.ws, train)  # a conflict another host's train handed
            elsewhere = not handed and _driven_elsewhere(self.ws, train)
            if elsewhere and not self._driver_host_died(train):
                return  # that host lands it
            if not handed and not elsewhere and not driver_gone(train.get("driver")):
                return  # a train from a killed run is still landing: let it finish
            if train.get("status") == "stopped" and not handed:
                if self.leave_out != _stopped_at(train):
                    self._stop(f"the merge train {train.get('id')} is stopped", [])
                    return
                self.leave_out = None
                args.append("--skip")  # its branch back at its completed commit; the rest goes on
            else:
                args.append("--continue")
        log = log_path(self.ws, "run-merge")
        offset = log_size(log)
        proc = self._warm()
        self.standby = None
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(args).encode() + b"\n")
        proc.stdin.flush()  # the pipe stays open: the run's word to the train (_tell_train)
        self.landing = Landing(proc, frozenset(schedule.landing), log, offset)
        shown = ", ".join(f"#{i}" for i in schedule.landing) or "the train another host began"
        self.say("landing", f"merge train: landing {shown}", issues=list(schedule.landing))

    def _tell_train(
        self,
        ended: bool,
        train: dict[str, Any] | None,
        done: bool = False,
        starting: bool = False,
    ) -> None:
        """Word to the train on its pipe (``paradev.train.join.listen``), so that one train
        lands every task completed while the run goes on.

        "busy" when a task ended while agents work (its work may join now);
        "idle N" when no agent is at work, having seen N landings of the train
        (``train``, its journal as this turn read it): once it landed no more
        than that, nothing it lands can start a dependent, and it ends (never while
        ``starting``: agents about to start count as at work). End of input when the
        run ends or stops.
        """
        landing = self.landing
        if landing is None or landing.proc.stdin is None or landing.proc.stdin.closed:
            return
        pipe = landing.proc.stdin
        idle = None
        if not self.agents.running and not starting and train is not None:
            idle = len(train.get("landed") or [])
        from paradev.train.join import word

        line = word(idle)
        with suppress(OSError):  # the train ended meanwhile: nothing to tell
            if done or self.stopped is not None:
                pipe.close()
            elif ended or (idle is not None and line != landing.told):
                landing.told = line
                pipe.write(line)
                pipe.flush()

    def _driver_host_died(self, train: dict[str, Any]) -> bool:
        """Whether the other host driving the running train let its lease expire (this
        host's clock): this run then takes the train over with ``merge --continue``.

        One look at the remote per pull; a stopped train waits for its own host.
        """
        self.lease_wait = self.clock() + PULL_EVERY
        store = self._shared()
        if train.get("status") != "running" or store is None:
            return False
        try:
            return store.lease_expired()
        except ParadevError:  # the remote unreachable: asked again after the next pull
            return False

    def _keep_standby(self) -> None:
        """A paradev process ready for the next train, while no train runs.

        Not while one runs: it lands all that completes meanwhile (``paradev.train.join``),
        so a standby started beside it mostly imported paradev and exited unused (a fifth
        of a second of CPU per run, taken from the train and the agents).
        """
        if self.landing is None and self.stopped is None:
            self.standby = self._warm()

    def _warm(self) -> subprocess.Popen[bytes]:
        """The paradev process waiting for its arguments (``paradev.warm``), started if need be."""
        if self.standby is not None:
            return self.standby
        log = log_path(self.ws, "run-merge")
        log.parent.mkdir(parents=True, exist_ok=True)
        env = git_env({"PARADEV_PLAN": str(self.ws.plan.path)})
        with log.open("ab") as out:
            return processes.spawn(
                processes.module_argv("paradev.warm"),
                cwd=self.ws.repo.main_root,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _end_standby(self) -> None:
        """The standby sees the end of its input and exits without doing anything."""
        standby, self.standby = self.standby, None
        if standby is not None and standby.stdin is not None:
            standby.stdin.close()
            standby.wait()
            processes.release(standby)

    def _poll_landing(self) -> None:
        landing = self.landing
        if landing is None:
            return
        self._forward_merge_output(landing)
        code = landing.proc.poll()
        if code is None:
            return
        processes.release(landing.proc)
        self._forward_merge_output(landing)
        self.landing = None
        if landing.proc.stdin is not None:
            with suppress(OSError):
                landing.proc.stdin.close()
        state = self.ws.store.read()
        lines = landing.tail
        if code == BUSY and _refused_for_lease(lines):
            self.pulled = self.clock()  # another host's train: tried again after the next pull
            self.lease_wait = self.pulled + PULL_EVERY
            return
        if code == BUSY and refused_while_locked(lines) and self.refusals < MERGE_ATTEMPTS:
            self.refusals += 1  # e.g. an agent still held a moment: the next poll tries again
            self.say("merge", f"merge train: {_refusal(lines)}; trying again")
            return
        if code == 1 and self._hand_back_failed(state):
            return  # the next poll's landing leaves that agent out
        if code != 0:
            self._stop(f"'paradev merge' exited {code}", lines, refused=code == BUSY)
            return
        self.refusals = 0
        self._set_aside_skipped(state)
        held = {lane.issue for lane in lanes.read(self.ws).values() if lane.held}
        for issue in sorted(landing.issues - held):
            task = self.ws.plan.task(issue)
            if task is None or issue in self.given_up or state.status(issue) != COMPLETED:
                continue
            self.attempts[issue] = self.attempts.get(issue, 0) + 1
            if self.attempts[issue] >= MERGE_ATTEMPTS:  # left out again and again: never loop
                self._give_up(task, "the merge train did not land it: " + " / ".join(lines[-2:]))

    def _hand_back_failed(self, state: State) -> bool:
        """Whether the train stopped because an agent of this host, handed its conflict back
        (``on_conflict = "agent"``), did not resolve it. Unattended, the run then leaves that
        agent out (``merge --skip``: its branch back at its completed commit) and lands the
        rest; its tasks are set aside for this run, as an ejected one's are."""
        where = _stopped_at(state.train)
        stop = (state.train or {}).get("stop") or {}
        agent = stop.get("agent")
        if (
            where is None
            or where in self.left_out
            or self.ws.plan.on_conflict != "agent"
            or stop.get("reason") not in ("conflict", "markers")
            or not isinstance(agent, int)
            or (self.here is not None and agent not in self.here)
        ):
            return False
        self.leave_out = where
        self.left_out.add(where)
        what = "conflict markers" if stop["reason"] == "markers" else "rebase conflict"
        why = f"agent {agent} did not resolve the {what} handed back to it"
        self.say("merge", f"merge train: {why}; leaving it out, the rest lands", agent=agent)
        for task in self.ws.tasks_of(agent):
            if state.status(task.issue) == COMPLETED:
                self.given_up.setdefault(task.issue, f"set aside: {why}{_to_land(agent, task)}")
        return True

    def _set_aside_skipped(self, state: State) -> None:
        """Completed work the last train skipped or ejected is set aside for this run."""
        if not state.merge_history:
            return
        last = state.merge_history[-1]
        reasons = last.get("skip_reasons") or {}
        for agent in last.get("skipped") or []:
            if lanes.held(self.ws, state, int(agent)) is not None:
                continue  # it lands with its agent's next task (paradev.lanes)
            for task in self.ws.tasks_of(int(agent)):
                if state.status(task.issue) == COMPLETED and task.issue not in self.given_up:
                    why = reasons.get(str(agent), "set aside by the merge train")
                    self.given_up[task.issue] = f"set aside by the merge train: {why}"

    def _stop(self, why: str, lines: list[str], *, refused: bool = False) -> None:
        """Nothing more lands in this run. ``refused``: the train refused to start (exit 2),
        so there is no stopped train to resolve, only what its last line names."""
        tail = f": {lines[-1]}" if lines else ""
        then = (
            "Do what it says"
            if refused
            else "Resolve it ('paradev merge --continue', '--skip' or '--abort')"
        )
        self.stopped = (
            f"{why}{tail}; nothing more lands in this run. {then}, then run 'paradev run' again"
        )
        self.say("stopped", self.stopped)

    def _forward_merge_output(self, landing: Landing) -> None:
        lines, landing.offset = _lines(landing.log, landing.offset)
        for line in lines:
            if not line.startswith(REFUSAL):  # said once, by _stop, or not at all (a retry)
                self.say("merge", f"merge: {line}")
        landing.tail = (landing.tail + lines)[-2:]

    # -- telling --
    def _tell_changes(self, state: State) -> None:
        """One event per task status change (the agents' own messages say more)."""
        for task in self.ws.plan.tasks():
            status = state.status(task.issue)
            if self.statuses.get(task.issue) not in (None, status):
                record = state.tasks.get(task.issue)
                error = record.error if record and status != MERGED else None
                self.say(
                    "task",
                    f"#{task.issue} (agent {task.agent}): {status}",
                    issue=task.issue,
                    agent=task.agent,
                    status=status,
                    error=error,
                    quiet=status != MERGED,
                )
            self.statuses[task.issue] = status

    def _write_snapshot(self, schedule: Schedule) -> None:
        waits = {**schedule.waiting, **schedule.blocked}
        held = [t for t in schedule.ready if t.agent in self.held]
        waits.update({t.issue: f"agent {t.agent} is held by the merge train" for t in held})
        ready = {t.issue for t in schedule.ready}
        waits.update({i: why for i, why in self.lane_refused.items() if i in ready})
        if self.stopped is not None:  # why is said once, in the stop line
            waits.update({i: TRAIN_STOPPED for i in schedule.landing})
        for issue, why in waits.items():
            if self.shown.get(issue) != why:
                self.say("waiting", f"#{issue} waits: {why}", issue=issue, reason=why, quiet=True)
        self.shown = waits
        data = {
            "pid": os.getpid(),
            "start": self.snapshot.get("start") or processes.start_time(os.getpid()),
            "schedule": self.ws.plan.schedule,
            "running": list(schedule.running),
            "landing": list(schedule.landing),
            "waiting": {str(k): v for k, v in waits.items() if k not in schedule.blocked},
            "blocked": {str(k): v for k, v in schedule.blocked.items()},
            "stopped": self.stopped,
        }
        if data != self.snapshot:
            write_json(runstatus.path(self.ws.store.dir), data)
            self.snapshot = data

    def _rows(self, schedule: Schedule) -> list[Row]:
        rows = self.agents.rows()
        running = {r.issue for r in rows if r.state == "running"}
        rows = [r for r in rows if r.issue in running]
        rows += [Row(self._agent(i), i, "landing", 0.0, "merge train") for i in schedule.landing]
        rows += [Row(self._agent(i), i, "waiting", 0.0, w) for i, w in schedule.waiting.items()]
        rows += [Row(self._agent(i), i, "blocked", 0.0, w) for i, w in schedule.blocked.items()]
        ended = [i for i, s in self.statuses.items() if s in LANDED]
        rows += [Row(self._agent(i), i, self.statuses[i], 0.0, "") for i in ended]
        return sorted(rows, key=lambda r: (r.agent, r.issue))

    def _agent(self, issue: int) -> int:
        task = self.ws.plan.task(issue)
        return task.agent if task else 0

    def _summary(self) -> Summary:
        state = self.ws.store.read()
        self._tell_changes(state)
        statuses = {t.issue: state.status(t.issue) for t in self.ws.plan.tasks()}
        notes = {i: w for i, w in self.shown.items() if statuses.get(i) not in LANDED}
        notes.update(self.given_up)  # the failure itself says more than "it failed"
        return Summary(statuses, notes)


def _load_train() -> None:
    """The merge train's modules (the run tells the train, reads its journal): loaded once
    the first agents are launched, not before (a fifth of the run's start-up) and not
    when the first task completes (that is when the train is needed soonest)."""
    import paradev.train.adopt
    import paradev.train.join
    import paradev.train.journal  # noqa: F401


def _to_land(agent: int, task: Task) -> str:
    """How a person lands a task the run set aside after its agent's failed hand-back."""
    return (
        f" (to land it: 'paradev reopen {task.issue}', resolve it on agent {agent}'s branch, "
        f"'paradev complete {agent}', then 'paradev merge')"
    )


Stop = tuple[object, object]  # (train id, agent): where a train stopped


def _stopped_at(train: dict[str, Any] | None) -> Stop | None:
    """(train id, agent) of a stopped train: where it stopped."""
    if train is None or train.get("status") != "stopped":
        return None
    return train.get("id"), (train.get("stop") or {}).get("agent")


def _dependencies_missing(ws: Workspace, state: State, task: Task, head: str) -> list[int]:
    """The dependencies of ``task`` whose landed work ``head`` (its agent's branch) lacks: it
    started before they landed. The task may not start there, its previous task's work
    still waiting to land: it would start without the work it depends on."""
    missing = []
    for issue in task.depends_on:
        record = state.tasks.get(issue)
        landed = record.merged_commit if record is not None else None
        if landed and not is_ancestor(ws.git, landed, head):
            missing.append(issue)
    return missing


def _refuse_unsupervised(state: State, tasks: list[Task]) -> None:
    """An agent ``run-batch`` launched that still runs: never start a second copy of it."""
    for task in tasks:
        record = state.tasks[task.issue]
        pid = record.agent_pid
        if pid is not None and processes.alive(pid, record.agent_started):
            raise PreconditionError(
                f"agent {task.agent} is still running #{task.issue} (pid {pid}), launched by "
                f"an earlier 'paradev run-batch'; wait for it to end or stop it "
                f"(kill -TERM -- -{pid}), then run 'paradev run' again"
            )


TRAIN_STOPPED = "the merge train, which stopped: nothing more lands in this run"
REFUSAL = "paradev: "  # how the child train's one error line begins


def _refusal(lines: list[str]) -> str:
    """What a refused train said, without its advice: "agent 1 is busy: paradev run holds it"."""
    said = [line.removeprefix(REFUSAL) for line in lines if line.startswith(REFUSAL)]
    return said[-1].split("; ", 1)[0] if said else "refused"


def _lines(log: Path, offset: int) -> tuple[list[str], int]:
    """The lines written past ``offset`` and the offset after them (one read: none is lost)."""
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    text = data.decode(errors="replace")
    return [printable(line) for line in text.splitlines() if line.strip()], offset + len(data)


def summary_lines(summary: Summary) -> list[str]:
    counts: dict[str, int] = {}
    for status in summary.statuses.values():
        counts[status] = counts.get(status, 0) + 1
    lines = ["run: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    lines += [f"  #{issue}: {why}" for issue, why in sorted(summary.notes.items())]
    return lines


def run_plan(ws: Workspace, progress: Progress, say: Say) -> Summary:
    """Drive the whole plan; Stopped (exit 1) unless every task landed or was dropped."""
    from paradev.runner import batch_lock

    refuse_unrunnable(ws)
    with batch_lock(ws):
        summary = Run(ws, progress, say).run()
    return summary


def refuse_unrunnable(ws: Workspace) -> None:
    """What would stop a run at once, found before it starts (also before it is detached)."""
    from paradev.runner import programs_missing

    if not any(True for _ in ws.plan.tasks()):
        raise PreconditionError("the plan has no tasks; add some to plan.toml or 'paradev assign'")
    here = ws.agents_here()  # [agents] hosts: other hosts launch their own
    agents = {t.agent for t in ws.plan.tasks() if here is None or t.agent in here}
    missing = programs_missing(ws, sorted(agents))
    if missing:
        raise PreconditionError(f"paradev run cannot launch the agents: {missing}")
    state = ws.store.read()
    _refuse_missing_worktrees(ws, state, agents)
    journal = state.train
    stopped = journal is not None and journal.get("status") == "stopped"
    if journal is not None and stopped and not _handed_here(ws, journal):
        raise PreconditionError(
            f"merge train {journal.get('id')} is stopped; resolve it first ('paradev merge "
            "--continue', '--skip' or '--abort'), then run 'paradev run' again"
        )


def _refused_for_lease(lines: list[str]) -> bool:
    """``lease.refused_for_lease``, its module loaded at first use ([agents] hosts)."""
    from paradev.lease import refused_for_lease

    return refused_for_lease(lines)


def _handed_here(ws: Workspace, journal: dict[str, Any]) -> bool:
    """``adopt.handed_here``, its module loaded at first use (the train's package)."""
    from paradev.train import adopt

    return adopt.handed_here(ws, journal)


def _driven_elsewhere(ws: Workspace, journal: dict[str, Any]) -> bool:
    """``adopt.driven_elsewhere``, its module loaded at first use (the train's package)."""
    from paradev.train import adopt

    return adopt.driven_elsewhere(ws, journal)


def _refuse_missing_worktrees(ws: Workspace, state: State, agents: set[int]) -> None:
    """Agents with work left but no work tree: every one of their tasks would fail at once."""
    unset = [
        agent
        for agent in sorted(agents)
        if any(state.status(t.issue) not in LANDED for t in ws.tasks_of(agent))
        and not (ws.worktree(agent) / ".git").exists()
    ]
    if unset:
        where = ", ".join(f"agent {a} at {ws.worktree(a)}" for a in unset)
        raise PreconditionError(f"no worktree for {where}; run 'paradev setup' first")


def raise_unless_landed(summary: Summary) -> None:
    if not summary.landed:
        left = [i for i, s in summary.statuses.items() if s not in LANDED]
        shown = ", ".join(f"#{i} ({summary.statuses[i]})" for i in left)
        raise Stopped(f"{len(left)} task(s) did not land: {shown}")
