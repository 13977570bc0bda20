"""The merge queue: gate candidates side by side or a batch at a time, land the passing prefix.

Candidate k is base + the first k agents of the queue, each agent's completed
work replayed onto the candidate before it, commit by commit as a rebase does
(``git merge-tree`` and ``commit-tree``: no work tree is touched). Every
rewritten commit takes the committer fixed in the journal when the train
started, so a rebuild after a crash gives the same commits, and the gate
results journaled per candidate commit still hold: a gate passed on exactly
that tree.

Each round: build the chain; land the longest prefix whose candidate passed
(one fast-forward of base), or name the first failing agent (the candidate
before it passed, its own failed), or else gate the next candidates: up to
``parallel`` of them (speculatively), the tip of the next ``batch``, or the
points between the last passing and the first failing candidate (bisection).
A failing agent stops the queue, or with ``on_gate_failure = "eject"`` is set
aside (its tasks ``gate_failed``) and the candidates behind it are rebuilt.
An agent whose work does not replay cleanly (conflict, markers, lost work)
is set aside with ``on_conflict = "eject"``; otherwise, once everything ahead
of it landed, it goes through the serial train's steps (rebase in its own
worktree, stop or hand back) and the queue goes on after it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paradev import git as gitmod
from paradev import processes
from paradev.errors import GitError, PreconditionError
from paradev.git import Git
from paradev.snapshots import precise_now, stamp_step
from paradev.train import advance, backup, eject, join, landing, rewrite, steps
from paradev.train import gate as gates
from paradev.train.eject import settings
from paradev.train.journal import ADVANCE, BACKUP, GATE, LaneHeld, Train, _tip, committer_of

BRANCH = "branch"  # the agent's branch moved to its rebased commit (after base moved)
NEWS_SECONDS = 0.01  # how often, while gates run, the run's word is looked for
CANCEL_POLL = 0.5  # seconds between two kills of the gates of a cancelled round
CONFLICT_REASONS = ("conflict", "markers", "patch-check")


@dataclass(frozen=True)
class Link:
    """One candidate: base + every agent up to ``agent``, ending at ``commit``."""

    agent: int
    commit: str


@dataclass(frozen=True)
class Blocked:
    """An agent whose work cannot join the chain: why (a conflict reason) and what to say."""

    agent: int
    reason: str
    message: str


@dataclass(frozen=True)
class Chain:
    links: list[Link]
    blocked: Blocked | None = None  # the agent after the last link, when it cannot join


# -- settings and journal -----------------------------------------------------------------


def _results(train: Train) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = settings(train).setdefault("gates", {})
    return found


# -- the loop --------------------------------------------------------------------------------


def run_queue(train: Train, follow: steps.Follow | None = None) -> None:
    """Land every agent left in the queue, round after round, then close the train.

    ``follow`` (``merge --follow``, see ``paradev.train.join``) lets each agent
    the queue is done with go at once and may refill an empty queue.
    """
    mq = settings(train)
    gates._say_gate(train)
    if mq.get("started"):  # --continue: a failed gate runs again, a committed fix is taken
        _forget_failures(train)
        for ejected in mq.get("ejected", []):  # a crash may have come before the tasks' mark
            if ejected["reason"] == "gate" and eject.still_out(train, ejected):
                eject.gate_failed_here(train, ejected)  # or during the hand-back
        eject.drop_dependents(train)
    mq["started"] = True
    committer_of(train)  # fixed for every rebuild
    train.out(
        f"merge queue: parallel {mq['parallel']}, batch {mq['batch']}, "
        f"on gate failure {mq['on_gate_failure']}, retries {mq['retries']}"
    )
    _back_up(train, train.queue)
    train.save()
    if train.journal["gate"] and gates._gate_command(train.ws):
        gates.add_slots_ahead(train.ws, int(mq["parallel"]), _base_tip(train))
    ahead = _Ahead(follow)
    try:
        while train.queue or join.refill(train, follow, _back_up):
            queued = list(train.queue)
            _round(train, ahead)
            join.let_go(train, follow, queued)
            ahead.retry_join(train, queued)
    except BaseException:  # a stop, a refusal, Ctrl-C: the gates started ahead stop too
        ahead.stop()
        raise
    eject.hand_to_hosts(train)
    steps._end(train, "done")
    serial = (int(e.get("gate_runs", 0)) for e in train.journal["agents"].values())
    runs = int(mq.get("gate_runs", 0)) + sum(serial)  # and those rebased in their worktree
    train.out(
        f"merge train {train.id} done; landed: {steps._landed_text(train)}; {runs} gate run(s)"
    )


def _round(train: Train, ahead: _Ahead) -> None:
    """One step forward: finish a landing, land a passing prefix, handle a failure, or gate.

    The gates ``ahead`` started (behind the last landing) are waited for first.
    """
    ahead.record(train)
    head = train.queue[0]
    if train.agent(head).get("serial"):
        _land_serially(train, head)
        return
    if settings(train).get("landing"):
        _finish_landing(train)
        return
    early = _EarlyGates(train)
    try:
        chain = build_chain(train, early)
    except BaseException:  # a conflict stop, Ctrl-C: the gates started early stop too
        early.stop()
        raise
    early.record()
    if chain.blocked is not None and _ejecting(train, chain.blocked.reason):
        eject.eject(train, chain.blocked.agent, chain.blocked.reason, chain.blocked.message)
        return
    if not chain.links:
        assert chain.blocked is not None  # the queue is not empty
        _land_serially(train, chain.blocked.agent)
        return
    outcomes = [_outcome(train, link) for link in chain.links]
    passed, failed = bounds(outcomes)
    if passed:
        ahead.start(train, chain.links[passed:], outcomes[passed:])
        _land(train, chain.links[:passed])
    elif failed == 1:
        _gate_failed(train, chain.links[0])
    else:
        ahead.start(train, chain.links, outcomes)
        ahead.record(train)


def _base_tip(train: Train) -> str:
    """Base's commit, from its ref file as a rule: read every round, a git process each time."""
    return _tip(train.ws, f"refs/heads/{train.base}")


def _outcome(train: Train, link: Link) -> bool | None:
    """Whether the candidate's gate passed, failed, or has not run (None)."""
    if not train.journal["gate"] or not gates._gate_command(train.ws):
        return True
    result = _results(train).get(link.commit)
    return None if result is None else bool(result["ok"])


def bounds(outcomes: Sequence[bool | None]) -> tuple[int, int | None]:
    """(how many candidates land: the last pass before the first failure, that failure or None).

    Positions count from 1; a pass after a failure holds the failing agent and never counts.
    """
    passed = 0
    for position, outcome in enumerate(outcomes, start=1):
        if outcome is False:
            return passed, position
        if outcome:
            passed = position
    return passed, None


def probes(outcomes: Sequence[bool | None], parallel: int, batch: int) -> list[int]:
    """Positions (from 1) of the candidates to gate next.

    Before any failure: the tips of the next ``parallel`` batches (with
    ``batch = 1``, the next ``parallel`` candidates). After one: up to
    ``parallel`` points evenly spread between the last pass and the first
    failure (one point: the middle, a bisection).
    """
    passed, failed = bounds(outcomes)
    count = len(outcomes)
    if failed is None:
        picks = [min(passed + batch * k, count) for k in range(1, parallel + 1)]
    else:
        span = failed - passed
        picks = [passed + span * k // (parallel + 1) for k in range(1, parallel + 1)]
        picks = [p for p in picks if passed < p < failed] or [passed + 1]
    return sorted({p for p in picks if outcomes[p - 1] is None})


def _forget_failures(train: Train) -> None:
    """``merge --continue`` after a stop: failed gates run again; a fix on the branch is taken."""
    results = _results(train)
    for commit in [c for c, r in results.items() if not r["ok"]]:
        del results[commit]
    for agent in train.queue:
        entry = train.agent(agent)
        if not entry.get("candidate") or entry.get("serial"):
            continue
        head = train.head(agent)
        if head != entry["old_head"] and gitmod.is_ancestor(train.ws.git, entry["candidate"], head):
            entry.update(candidate=head, wip=None)
            train.out(f"agent {agent}: taking {head[:12]}, committed on its branch since the stop")


# -- candidates ------------------------------------------------------------------------------


def _back_up(train: Train, agents: Sequence[int]) -> None:
    """Keep each branch's head under a backup ref, journal what lands; no branch is moved.

    A few git processes for the whole queue: one reads every ref, one creates the backups.
    """
    todo = [agent for agent in agents if not train.is_done(agent, BACKUP)]
    fresh = [agent for agent in todo if "old_head" not in train.agent(agent)]
    found = backup.read_tips(train, fresh) if fresh else {}
    for agent in fresh:
        backup.journal_backup(train, agent, found)
    backup.keep_backups(train, todo)
    backup.share_backups(train, todo)  # [agents] hosts: before the journal names them
    for agent in todo:
        train.finish(agent, BACKUP)


def build_chain(train: Train, early: _EarlyGates | None = None) -> Chain:
    """Every candidate of the queue on today's base, up to the first agent that cannot join.

    Replays run one after the other (each builds on the one before); the
    checks of what each would land run side by side. Both are memoized in
    the journal per (agent, its work, what it goes onto). ``early``: the
    first candidates' gates start as soon as they are built and checked,
    and run while the rest of the chain is built.
    """
    tip = _base_tip(train)
    onto = [tip]
    links: list[Link] = []
    blocked: Blocked | None = None
    checked = 0
    for agent in train.queue:
        built = _link(train, agent, tip)
        if isinstance(built, Blocked):
            blocked = built
            break
        links.append(Link(agent, built))
        onto.append(built)
        tip = built
        if early is not None and early.wanted(links):
            problem = _first_problem(train, links, onto, 0)
            if problem is not None:
                return Chain(links[: problem[0]], problem[1])
            checked = len(links)
            early.start(links)
    problem = _first_problem(train, links, onto, checked)
    return Chain(links, blocked) if problem is None else Chain(links[: problem[0]], problem[1])


def _first_problem(
    train: Train, links: list[Link], onto: list[str], start: int
) -> tuple[int, Blocked] | None:
    """The first of ``links[start:]`` that fails its checks (run side by side), with its index."""
    checks = gitmod.side_by_side(
        lambda k: _check(train, links[k], onto[k]), range(start, len(links)), threads=4
    )
    for index, problem in enumerate(checks, start=start):
        if problem is not None:
            return index, problem
    return None


def _link(train: Train, agent: int, onto: str) -> str | Blocked:
    """The agent's completed work replayed onto ``onto`` (memoized in the journal)."""
    source = str(train.agent(agent)["candidate"])
    memo: dict[str, Any] = settings(train).setdefault("built", {})
    key = f"{agent}:{source}:{onto}"
    if key not in memo:
        memo[key] = _build(train, agent, onto, source)
    if memo[key] is None:
        return Blocked(
            agent,
            "conflict",
            f"agent {agent}'s work conflicts with {train.base} and the agents ahead of it",
        )
    return str(memo[key])


def _build(train: Train, agent: int, onto: str, source: str) -> str | None:
    """Replay with each commit's task trailer (or squashed afterwards); None on a conflict.

    A range (``range_from``: a task landing from its lane, or the work after
    it, ``paradev.lanes``) replays exactly that range, as the serial rebase does.
    """
    git = train.ws.git
    commits = gitmod.commits_between(git, train.agent(agent).get("range_from") or onto, source)
    squash = train.journal.get("squash", train.ws.plan.squash)
    tasks = rewrite._landing_tasks(train, agent)
    issues = (
        None
        if squash or not tasks
        else rewrite._issues_per_commit(train, agent, tasks, len(commits))
    )
    committer = committer_of(train)
    objects = train.ws.repo.common_dir / "objects"
    replayed = replay(git, onto, commits, issues, committer, objects)
    if replayed is None or not squash or replayed == onto:
        return replayed
    return rewrite.build_squash(train, agent, onto, replayed, committer=committer)


def _check(train: Train, link: Link, onto: str) -> Blocked | None:
    """What the landing of ``link`` onto ``onto`` must not do: add markers, lose work (memoized)."""
    memo: dict[str, Any] = settings(train).setdefault("checked", {})
    if link.commit not in memo:
        memo[link.commit] = _problem(train, link, onto)
    found = memo[link.commit]
    return None if found is None else Blocked(link.agent, found[0], found[1])


def _problem(train: Train, link: Link, onto: str) -> list[str] | None:
    """[reason, message] when the landing of ``link`` adds markers or loses work, else None.

    Both looks run side by side (a candidate's checks stand between its build and its
    gate); what the work lacks counts only when it adds no markers.
    """
    git, agent = train.ws.git, link.agent
    source, start = str(train.agent(agent)["candidate"]), train.agent(agent).get("range_from")

    def missing() -> landing.Missing | None:
        if start:  # only the range lands: only it is looked for
            return landing.missing_range_work(git, link.commit, source, start)
        return landing.missing_work(git, onto, link.commit, source)

    lost = gitmod.in_background(missing)
    try:
        marked = landing.files_with_markers(git, onto, link.commit)
    except BaseException:
        with suppress(Exception):  # its git process ends before this one is said
            lost()
        raise
    try:
        found = lost()
    except GitError:
        if not marked:
            raise
        found = None
    if marked:
        return ["markers", f"agent {agent}'s work adds conflict markers to {marked}"]
    if found is not None:
        return ["patch-check", f"agent {agent}'s rebased work lacks {', '.join(found.paths)}"]
    return None


_TREES: dict[str, str] = {}  # commit -> its tree, for the commits replay() made or read


def replay(
    git: Git,
    onto: str,
    commits: Sequence[str],
    issues: Sequence[list[int]] | None = None,
    committer: dict[str, str] | None = None,
    objects: Path | None = None,
) -> str | None:
    """``commits`` replayed onto ``onto`` as a rebase would (None: a conflict).

    Commits that change nothing once replayed are dropped, as a rebase drops
    them; with ``issues``, each commit's message gets its issue trailers.
    ``committer``: GIT_COMMITTER_* of every new commit (else git's own).
    ``objects``: the repository's object folder, where the merge probes are
    written with no git process (``gitmod.write_probe``).
    """
    tip = onto
    tip_tree = _TREES.get(onto) or gitmod.tree_of(git, onto)  # the candidate built last, as a rule
    trees = {onto: tip_tree}  # what the commits' parents hold, where known
    for index, (commit, data) in enumerate(
        zip(commits, gitmod.read_commits(git, commits), strict=True)
    ):
        if len(data.parents) != 1:
            return None
        trees[commit] = data.tree
        parent = data.parents[0]
        on_tip = trees.get(parent, _TREES.get(parent)) == tip_tree
        merge = _merged(git, tip, tip_tree, parent, commit, data.tree, objects, on_tip)
        if not merge.clean:
            return None
        if merge.tree == tip_tree:
            continue
        message = data.message
        if issues is not None:
            wanted = [str(issue) for issue in issues[index]]
            message = gitmod.add_trailers_to_each(git, [message], landing.ISSUE_TRAILER, wanted)[0]
        tip = gitmod.commit_tree(
            git, merge.tree, [tip], message, env=data.author | (committer or {})
        )
        tip_tree = _TREES[tip] = merge.tree
    return tip


def _merged(
    git: Git,
    tip: str,
    tip_tree: str,
    parent: str,
    commit: str,
    tree: str,
    objects: Path | None,
    on_tip: bool,
) -> gitmod.MergeTree:
    """``commit`` (of ``tree``, on ``parent``) cherry-picked onto ``tip``. ``on_tip``: its
    parent holds ``tip``'s tree (made on the tip, or on the commit just replayed there), so the
    merge of its change is its own tree, clean, with no git process; else merge-tree's."""
    if on_tip:
        return gitmod.MergeTree(True, tree)
    if objects is None:
        return gitmod.probe_merge(git, tip, parent, commit, tree=tip_tree)
    probe = gitmod.write_probe(objects, tip_tree, parent)
    return gitmod.merge_trees(git, [(probe, commit)])[0]


# -- gating ----------------------------------------------------------------------------------


class _EarlyGates:
    """Gates of a round's first candidates, run while the candidates behind them are built.

    Only in a fresh round (no gate result known yet) with more agents queued
    than ``parallel x batch``: then which candidates are gated first does not
    depend on the rest of the chain. The gates run in a thread of their own
    (sleeping or testing, they overlap the git work of building); only this
    thread touches the journal, before they start and once they ended.
    """

    def __init__(self, train: Train) -> None:
        self.train = train
        mq = settings(train)
        self.count = int(mq["parallel"]) * int(mq["batch"])
        gating = bool(train.journal["gate"] and gates._gate_command(train.ws))
        self.enabled = gating and len(train.queue) > self.count
        self.links: list[Link] = []
        self.picks: list[int] = []
        self.run: _GateRun | None = None

    def wanted(self, links: list[Link]) -> bool:
        """Whether to start now: the first ``parallel x batch`` candidates exist, none gated yet."""
        return (
            self.enabled
            and self.run is None
            and len(links) == self.count
            and all(_outcome(self.train, link) is None for link in links)
        )

    def start(self, links: list[Link]) -> None:
        mq = settings(self.train)
        self.links = list(links)
        self.picks = probes([None] * len(links), int(mq["parallel"]), int(mq["batch"]))
        self.run = _start_gates(self.train, self.links, self.picks, 0, background=True)

    def stop(self) -> None:
        """Stop the gates under way (the round was interrupted), then wait for their thread."""
        if self.run is not None:
            self.run.cancel()

    def record(self) -> None:
        """Wait for the gates started early and journal their results (retries included)."""
        if self.run is not None:
            _gate(self.train, self.links, self.picks, started=self.run)


class _Ahead:
    """The gates of the next candidates, started before the landing ahead of them: the pipeline.

    Once candidate k passed, candidate k+1 (built on k, in no work tree) is
    gated at once, while base moves to k and k's bookkeeping runs (push, marks,
    hooks, letting its agent go): the gates run back to back instead of
    waiting for each landing. Sound because a candidate lands only as the
    descendant of what landed before it, whose gate passed on its exact tree,
    and a gate's result is journaled per candidate commit (a crash before it
    is journaled runs it again). While gates run, the work that completed
    meanwhile joins a following train (``paradev.train.join``) and its
    candidates are built, so the next gate can start as soon as these end.
    """

    def __init__(self, follow: steps.Follow | None) -> None:
        self.follow = follow
        self.links: list[Link] = []
        self.picks: list[int] = []
        self.run: _GateRun | None = None
        self.missed = False  # the run's word came while the work it meant could not join

    def start(self, train: Train, links: list[Link], outcomes: Sequence[bool | None]) -> None:
        """Start the gates of the next of ``links`` (the chain behind what lands) to probe."""
        mq = settings(train)
        picks = probes(outcomes, int(mq["parallel"]), int(mq["batch"])) if links else []
        if not picks:
            return
        self.links, self.picks = list(links), picks
        self.run = _start_gates(train, self.links, picks, 0, background=True)

    def record(self, train: Train) -> None:
        """Wait for the gates started (taking in completed work meanwhile), journal them."""
        run = self.run
        if run is None:
            return
        while run.running():
            if not join.listening():
                run.thread_done()
            elif join.news(NEWS_SECONDS):
                self._take(train)
        _gate(train, self.links, self.picks, started=run)  # stopped on an interrupt until here
        self.run = None

    def retry_join(self, train: Train, queued: Sequence[int]) -> None:
        """Once agents are let go, the work the run's last word meant may join: an agent's
        next task that completed while its previous one still landed (``paradev.lanes``)."""
        if self.missed and train.queue and any(a not in train.queue for a in queued):
            self._take(train)

    def _take(self, train: Train) -> None:
        self.missed = not join.take_now(train, self.follow, _back_up)
        if not self.missed:
            build_chain(train)  # memoized: the next round finds the new candidates built

    def stop(self) -> None:
        """Stop the gates under way, then wait for their thread."""
        run, self.run = self.run, None
        if run is not None:
            run.cancel()


class _GateRun:
    """One round of gate runs: ``jobs`` at once, in this thread or in one of its own."""

    def __init__(
        self,
        jobs: list[gates.GateJob],
        work: Callable[[], list[gates.GateResult]],
        background: bool,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.jobs = jobs
        self.cancelled = cancelled or threading.Event()
        self.work = self._timed(work)
        self.times: dict[str, str] = {}  # when the round's gates started and ended
        self.results: list[gates.GateResult] | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if background:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()

    def _timed(
        self, work: Callable[[], list[gates.GateResult]]
    ) -> Callable[[], list[gates.GateResult]]:
        def timed() -> list[gates.GateResult]:
            self.times = {"start": precise_now()}
            results = work()
            self.times["end"] = precise_now()
            return results

        return timed

    def _run(self) -> None:
        try:
            self.results = self.work()
        except BaseException as exc:  # raised again by the thread that waits
            self.error = exc

    def cancel(self) -> None:
        """Stop its gates and wait for its thread: a slot still checking out starts none, and
        a gate started between a check and the kill is killed by the next round of it."""
        self.cancelled.set()
        while True:
            with processes.shielded():
                processes.stop_all(gates.KILL_GRACE)
            self.thread_done(CANCEL_POLL)
            if not self.running():
                return

    def thread_done(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self) -> list[gates.GateResult]:
        if self.thread is None:
            return self.work()
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.results is not None
        return self.results


def _start_gates(
    train: Train, links: list[Link], picks: list[int], attempt: int, *, background: bool = False
) -> _GateRun:
    """Journal and announce the gate runs of the candidates at ``picks``, then start them.

    Their environments are made here, before any other thread runs.
    """
    jobs = [_job(train, links[p - 1]) for p in picks]
    for job, position in zip(jobs, picks, strict=True):
        agents = ", ".join(str(link.agent) for link in links[:position])
        again = f" (retry {attempt})" if attempt else ""
        train.out(f"candidate {position} (agents {agents}): gate running{again} ({job.log})")
    env_for = _env(train)
    envs = [env_for(job, gates.slot_path(train.ws, slot)) for slot, job in enumerate(jobs, 1)]
    by_log = {job.log: env for job, env in zip(jobs, envs, strict=True)}
    command = gates._gate_command(train.ws)

    cancelled = threading.Event()

    def made_env(job: gates.GateJob, _path: Path) -> dict[str, str]:
        return dict(by_log[job.log])

    def work() -> list[gates.GateResult]:
        return gates.run_gates(train.ws, jobs, command, made_env, cancelled)

    return _GateRun(jobs, work, background, cancelled)


def _gate(
    train: Train, links: list[Link], picks: list[int], started: _GateRun | None = None
) -> None:
    """Gate the candidates at ``picks`` at once, each failed one again up to ``retries`` times.

    ``started``: their first runs, already under way.
    """
    mq, results = settings(train), _results(train)
    todo = [links[p - 1] for p in picks]
    for attempt in range(int(mq["retries"]) + 1):
        first = attempt == 0 and started is not None
        run = started if first and started else _start_gates(train, links, picks, attempt)
        outcomes = run.wait()
        jobs = run.jobs
        failed = []
        for link, job, result in zip(todo, jobs, outcomes, strict=True):
            train.agent(link.agent).setdefault("times", {})[GATE] = dict(run.times)
            runs = int(results.get(link.commit, {}).get("runs", 0)) + 1
            results[link.commit] = {"ok": result.ok, "runs": runs, "log": str(job.log)}
            results[link.commit]["exit"] = result.returncode
            if not result.ok:
                failed.append(link)
        train.save()  # the results outlive a crash: no gate runs twice for one tree
        for link in todo:
            word = "passed" if results[link.commit]["ok"] else "failed"
            train.out(f"agent {link.agent}'s candidate {link.commit[:12]}: gate {word}")
        todo = failed
        picks = [p for p in picks if links[p - 1] in failed]
        if not todo:
            return


def _job(train: Train, link: Link) -> gates.GateJob:
    mq = settings(train)
    mq["gate_runs"] = number = int(mq.get("gate_runs", 0)) + 1
    return gates.GateJob(link.commit, link.agent, gates.gate_log(train, link.agent, number))


def _env(train: Train) -> Callable[[gates.GateJob, Path], dict[str, str]]:
    """The gate's environment in a slot: the serial train's, pointing at the slot and candidate."""

    def env_for(job: gates.GateJob, path: Path) -> dict[str, str]:
        env = gates.gate_env(train, job.agent, job.log)
        env.update({"PARADEV_WORKTREE": str(path), "PARADEV_CANDIDATE": job.commit})
        return env

    return env_for


def _gate_failed(train: Train, link: Link) -> None:
    """The first agent of the queue fails its gate on base + its work: stop, or eject it."""
    result = _results(train)[link.commit]
    code = result.get("exit")
    why = f"timed out after {train.ws.plan.gate_timeout:g}s" if code is None else f"exited {code}"
    log = Path(result["log"])
    train.out(gates._tail(log))
    if _ejecting(train, "gate"):
        facts = gates.failure_facts(train, link.agent, link.commit, code, log)
        eject.eject(train, link.agent, "gate", f"the gate {why}; log: {log}", facts)
        return
    raise train.stop(
        link.agent,
        "gate",
        f"merge train stopped: the gate {why} for agent {link.agent} "
        f"({train.base} holds everything ahead of it); log: {log}. Commit a fix on "
        f"{train.branch(link.agent)} and run paradev merge --continue, or paradev merge --skip",
    )


def _ejecting(train: Train, reason: str) -> bool:
    mq = settings(train)
    if reason in CONFLICT_REASONS:
        return bool(mq["on_conflict"] == "eject")
    return bool(mq["on_gate_failure"] == "eject")


# -- landing ---------------------------------------------------------------------------------


def _land(train: Train, links: list[Link]) -> None:
    """Fast-forward base to the last passing candidate, then each landed agent's bookkeeping.

    The landing is journaled before base moves: a resumed train sees in git
    whether the move happened and only finishes the bookkeeping.
    """
    current = _base_tip(train)
    settings(train)["landing"] = {
        "from": current,
        "to": links[-1].commit,
        "agents": [[link.agent, link.commit] for link in links],
    }
    train.save()
    _finish_landing(train)


def _finish_landing(train: Train) -> None:
    """Move base to the journaled landing unless it is there, then the agents' bookkeeping."""
    mq = settings(train)
    pending = mq["landing"]
    current, target = _base_tip(train), str(pending["to"])
    if current == pending["from"]:
        for agent, _ in pending["agents"]:
            stamp_step(train.agent(int(agent)), ADVANCE, "start")
        changes = advance._undo_killed_fast_forward(train, current, target)
        try:
            advance.move_base(
                train.ws,
                train.base,
                current,
                target,
                then="run paradev merge --continue",
                changes=changes,
            )
        except GitError:  # say which files stand in the way, not git's first line
            _refuse_untracked_in_base(train, current, target)
            raise
        train.out(f"{train.base} -> {target[:12]} ({len(pending['agents'])} agent(s))")
    elif not gitmod.is_ancestor(train.ws.git, target, current):
        raise PreconditionError(
            f"{train.base} moved to {current[:12]} while the merge queue was landing "
            f"{target[:12]}; put it back at {str(pending['from'])[:12]} or reconcile, "
            "then run paradev merge --continue"
        )
    for agent, commit in pending["agents"]:
        if agent in train.queue:
            _after_advance(train, int(agent), str(commit))
    mq["landing"] = None
    train.save()


def _refuse_untracked_in_base(train: Train, current: str, target: str) -> None:
    holder = gitmod.branch_holder(train.ws.repo, train.base)
    if holder is not None:
        untracked = gitmod.untracked_paths(holder)
        why = landing.fast_forward_blocked(
            train.ws.git, train.base, holder, untracked, current, target, "paradev merge --continue"
        )
        if why:
            raise PreconditionError(why)


def _after_advance(train: Train, agent: int, commit: str, *, push_may_stop: bool = True) -> None:
    """The landed agent's bookkeeping: its branch moves before its tasks are marked merged
    (a merged task's agent is free to take its next task: its branch must be ready)."""
    train.finish(agent, ADVANCE, landed=commit)
    _point_branch(train, agent)
    steps.after_landing(train, agent, push_may_stop=push_may_stop)
    train.queue.remove(agent)


def _point_branch(train: Train, agent: int) -> None:
    """The agent's branch to its landed commit: git in its worktree when checked out there.

    Commits made after the completed one (wip) are put back on top by the
    serial train's wip step instead; a branch that moved meanwhile is left alone.
    """
    entry = train.agent(agent)
    if train.is_done(agent, BRANCH) or entry.get("wip"):
        return
    landed, branch = str(entry["landed"]), train.branch(agent)
    head = _tip(train.ws, f"refs/heads/{branch}")
    if head not in (landed, entry["old_head"], entry["candidate"]):
        train.out(f"agent {agent}: {branch} moved during the train; left at {head[:12]}")
    elif head != landed:
        backup.move_branch(train, agent, landed, head)
    train.finish(agent, BRANCH)


def _land_serially(train: Train, agent: int) -> None:
    """The serial train's steps for an agent that cannot join the chain (conflict, markers).

    Its rebase stops in its own worktree or goes back to its agent, exactly as
    in the serial train; ``--continue``, ``--skip`` and ``--abort`` work the same.
    """
    entry = train.agent(agent)
    if not entry.get("serial"):
        entry["serial"] = True
        train.out(f"agent {agent}: its work does not replay cleanly; rebasing it in its worktree")
        if entry.get("wip") and train.head(agent) == entry["wip"]:
            backup._set_wip_aside(train, agent)
        train.save()
    try:
        steps.land(train, agent)
    except LaneHeld as held:  # its agent is busy: it lands with its next task (paradev.lanes)
        steps._note_skip(train, agent, str(held))
        train.out(f"agent {agent}: {held}")
    train.queue.remove(agent)
    train.save()
