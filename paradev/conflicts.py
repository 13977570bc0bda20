"""Conflicts from the branches' real contents: what a real ``git merge`` would do, pair by pair.

Every agent branch (or a snapshot of its work tree) is compared with every
other and with base through ``git merge-tree --write-tree``, batched so one
git process serves every pair; nothing is checked out or touched. A cheap
prefilter on the changed path sets skips pairs that cannot conflict, results
are cached by commit triple under the git common dir, and content-conflict
hunks are read from the conflict markers of the merged blobs.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from itertools import combinations
from pathlib import Path
from typing import Any

from paradev import git as gitmod
from paradev.branches import Branch, Changes, Heads, find_heads, load_branches
from paradev.errors import PreconditionError
from paradev.git import Git, MergeTree
from paradev.labels import IDLE, LABELS, WORKLESS, AgentLabel, agent_labels, who
from paradev.landed import base_just_read
from paradev.layout import STORE_DIR
from paradev.records import NamedTuple
from paradev.workspace import Workspace

CACHE_FILE = "conflicts-cache.json"
CACHE_VERSION = 2
CACHE_LIMIT = 10_000  # entries kept (a full run at 100 agents needs ~5,000): least recent go
SHOWN_LINES = 8  # lines of each side shown per hunk in the human view
MERGES_PER_PROCESS = 32  # fewer merges than this do not pay for another merge-tree process


# merge-tree's stable message types -> the design's conflict type names.
KIND_TYPES: dict[str, str] = {
    "CONFLICT (contents)": "content",
    "CONFLICT (binary)": "binary",
    "CONFLICT (file/directory)": "file/directory",
    "CONFLICT (distinct modes)": "mode",
    "CONFLICT (modify/delete)": "modify/delete",
    "CONFLICT (rename/rename)": "rename/rename",
    "CONFLICT (rename involved in collision)": "rename/rename",
    "CONFLICT (rename/delete)": "rename/delete",
    "CONFLICT (directory rename suggested)": "file location",
    "CONFLICT (file in way of directory rename)": "file/directory",
    "CONFLICT(directory rename collision)": "rename/rename",
    "CONFLICT(directory rename unclear split)": "file location",
    "CONFLICT (submodule)": "submodule",
}
# When several messages name one path, the most specific type wins.
TYPE_PRIORITY = (
    "binary",
    "file/directory",
    "rename/rename",
    "rename/delete",
    "mode",
    "modify/delete",
    "file location",
    "submodule",
    "add/add",
    "content",
)
TEXT_TYPES = ("content", "add/add")  # the types whose merged blob carries conflict markers


# -- describing one merge ---------------------------------------------------------------


class Hunk(NamedTuple):
    """One conflicting hunk: its line range in the merged file and both sides' lines."""

    start: int  # 1-based line of the <<<<<<< marker
    end: int  # 1-based line of the >>>>>>> marker
    ours: tuple[str, ...] = ()
    theirs: tuple[str, ...] = ()


class Conflict(NamedTuple):
    """One conflicted path of a merge, typed with the design's names."""

    path: str
    type: str
    message: str
    paths: tuple[str, ...] = ()  # every path the messages name (renames name several)
    hunks: tuple[Hunk, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type,
            "message": self.message,
            "paths": list(self.paths),
            "hunks": [[h.start, h.end] for h in self.hunks],
            "sides": [{"ours": list(h.ours), "theirs": list(h.theirs)} for h in self.hunks],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conflict:
        sides = data.get("sides") or [{} for _ in data["hunks"]]
        hunks = tuple(
            Hunk(start, end, tuple(side.get("ours", ())), tuple(side.get("theirs", ())))
            for (start, end), side in zip(data["hunks"], sides, strict=True)
        )
        return cls(data["path"], data["type"], data["message"], tuple(data["paths"]), hunks)


# What a merge of two histories without a common commit gives: ``git merge`` refuses it.
UNRELATED = Conflict(
    ".",
    "unrelated histories",
    "CONFLICT (unrelated histories): git merge refuses to join histories without a common commit",
)


def conflict_type(kind: str, text: str) -> str:
    """The design's type name for one merge-tree message (``kind`` is its stable type)."""
    if kind == "CONFLICT (contents)" and text.startswith("CONFLICT (add/add)"):
        return "add/add"
    if kind in KIND_TYPES:
        return KIND_TYPES[kind]
    inner = kind.partition("(")[2].rstrip(")")
    return inner or kind


def parse_hunks(text: str) -> list[Hunk]:
    """Conflict hunks from a merged file's markers (merge and diff3/zdiff3 styles)."""
    hunks: list[Hunk] = []
    start = 0
    section = ""  # "", "ours", "base", "theirs"
    ours: list[str] = []
    theirs: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("<<<<<<<") and section == "":
            start, section, ours, theirs = number, "ours", [], []
        elif line.startswith("|||||||") and section == "ours":
            section = "base"
        elif line == "=======" and section in ("ours", "base"):
            section = "theirs"
        elif line.startswith(">>>>>>>") and section == "theirs":
            hunks.append(Hunk(start, number, tuple(ours), tuple(theirs)))
            section = ""
        elif section == "ours":
            ours.append(line)
        elif section == "theirs":
            theirs.append(line)
    return hunks


def describe_conflicts(git: Git, merge: MergeTree) -> list[Conflict]:
    """The conflicts of one merge-tree result, with hunks read from the merged blobs.

    This is the piece the merge train's dry run and conflict report reuse:
    ``describe_conflicts(git, merge_trees(git, [(ours, theirs)])[0])``.
    """
    return describe_many(git, [merge])[0]


def describe_many(git: Git, merges: Sequence[MergeTree]) -> list[list[Conflict]]:
    """``describe_conflicts`` for many merges, reading every merged blob in one git process."""
    described = [_group_messages(merge) for merge in merges]
    wanted = [
        (i, j, f"{merge.tree}:{conflict.path}")
        for i, (merge, conflicts) in enumerate(zip(merges, described, strict=True))
        for j, conflict in enumerate(conflicts)
        if conflict.type in TEXT_TYPES and "\0" not in conflict.path
    ]
    blobs = gitmod.read_blobs(git, [spec for _, _, spec in wanted])
    for (i, j, _), blob in zip(wanted, blobs, strict=True):
        if blob is not None:
            text = blob.decode("utf-8", errors="replace")
            old = described[i][j]
            described[i][j] = Conflict(
                old.path, old.type, old.message, old.paths, tuple(parse_hunks(text))
            )
    return described


def _group_messages(merge: MergeTree) -> list[Conflict]:
    """One Conflict per path that a CONFLICT message names first, sorted by path."""
    grouped: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
    for message in merge.messages:
        if not message.kind.startswith("CONFLICT") or not message.paths:
            continue
        kind = conflict_type(message.kind, message.text)
        grouped.setdefault(message.paths[0], []).append((kind, message.text, message.paths))
    for path in merge.conflicted_paths:  # a conflicted entry no message named: still report it
        if not any(path in paths for items in grouped.values() for _, _, paths in items):
            grouped[path] = [("content", f"CONFLICT: {path} is conflicted", (path,))]
    conflicts: list[Conflict] = []
    for path, items in sorted(grouped.items()):
        kinds = [kind for kind, _, _ in items]
        chosen = min(kinds, key=lambda k: TYPE_PRIORITY.index(k) if k in TYPE_PRIORITY else 99)
        paths = tuple(dict.fromkeys(p for _, _, ps in items for p in ps))
        texts = "\n".join(dict.fromkeys(text for _, text, _ in items))
        conflicts.append(Conflict(path, chosen, texts, paths))
    return conflicts


# -- the prefilter: which pairs could conflict at all ---------------------------------------


def may_conflict(left: Changes, right: Changes) -> bool:
    """Whether a merge of these two sides could conflict at all (cheap, never misses one).

    Same path changed on both sides; a file on one side where the other has a
    directory (file/directory); or a path added into a directory the other
    side emptied or renamed (directory rename detection).
    """
    lp, rp = left.paths.keys(), right.paths.keys()
    return bool(
        not lp.isdisjoint(rp)
        or not left.dirs.isdisjoint(rp)
        or not right.dirs.isdisjoint(lp)
        or not left.gone_dirs.isdisjoint(right.added_dirs)
        or not right.gone_dirs.isdisjoint(left.added_dirs)
    )


def colliding_pairs(sides: Mapping[int, Changes]) -> set[tuple[int, int]]:
    """Every pair ``(i, j)``, i < j, of ``sides`` for which ``may_conflict`` holds.

    Found through an index of paths and directories, so the cost follows what
    the sides share rather than the number of pairs (4,950 at 100 agents).
    """
    changed: dict[str, list[int]] = defaultdict(list)
    under: dict[str, list[int]] = defaultdict(list)  # directory -> sides changing below it
    added: dict[str, list[int]] = defaultdict(list)
    gone: dict[str, list[int]] = defaultdict(list)
    for key, side in sides.items():
        for path in side.paths:
            changed[path].append(key)
        for folder in side.dirs:
            under[folder].append(key)
        for folder in side.added_dirs:
            added[folder].append(key)
        for folder in side.gone_dirs:
            gone[folder].append(key)
    found: set[tuple[int, int]] = set()
    for path, keys in changed.items():
        found |= _pairs(keys, keys) | _pairs(keys, under.get(path, ()))
    for folder, keys in gone.items():
        found |= _pairs(keys, added.get(folder, ()))
    return found


def _pairs(left: Iterable[int], right: Sequence[int]) -> set[tuple[int, int]]:
    return {(min(a, b), max(a, b)) for a in left for b in right if a != b}


# -- the report ------------------------------------------------------------------------------


class PairReport(NamedTuple):
    """Two agents: the paths both changed, and what a real merge of their work does."""

    agents: tuple[int, int]
    overlap: list[str]
    conflict: bool
    conflicts: list[Conflict]
    merged: bool  # whether a merge was computed (False: the prefilter proved it clean)

    @property
    def state(self) -> str:
        return "CONFLICT" if self.conflict else ("overlap" if self.overlap else "clean")

    def to_json(self) -> dict[str, Any]:
        return {
            "agents": list(self.agents),
            "overlap": self.overlap,
            **_outcome_json(self.conflict, self.conflicts),
        }


class BaseReport(NamedTuple):
    """One agent's work merged into the current base."""

    agent: int
    conflict: bool
    conflicts: list[Conflict]

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.agent, **_outcome_json(self.conflict, self.conflicts)}


def _outcome_json(conflict: bool, conflicts: Sequence[Conflict]) -> dict[str, Any]:
    return {"conflict": conflict, "conflicts": [c.to_json() for c in conflicts]}


class Report:
    """Everything ``paradev conflicts`` prints; ``to_json`` gives the design's keys.

    ``examined`` holds the pairs that overlap, conflict or were merged; every
    other pair of branches is clean for sure and is only built when ``pairs``
    (every pair) is asked for: at 300 branches that is 44,850 records.
    (A plain class, as are the others here: ``dataclasses`` costs every
    ``paradev conflicts`` ~8 ms of imports.)
    """

    def __init__(
        self,
        base: str,
        base_commit: str,
        branches: list[Branch],
        examined: list[PairReport],
        against_base: list[BaseReport],
        idle: list[int] | None = None,
        labels: dict[int, AgentLabel] | None = None,
        tips: dict[int, str] | None = None,
    ) -> None:
        self.base = base
        self.base_commit = base_commit
        self.branches = branches
        self.examined = examined
        self.against_base = against_base
        self.idle = idle or []  # agents with nothing beyond base
        self.labels = labels or {}  # every agent's state word
        self.tips = tips or {}  # every agent's examined head

    def for_heads(self, heads: Heads) -> Report | None:
        """This report restricted to ``heads`` (what ``analyze(ws, heads=heads)`` would find),
        or None when it examined another base or another head of any of them.

        Each pair and each branch against base depends on those two commits
        alone, so the merge train's closing snapshot reuses the analysis its
        merge order made of the same heads instead of making it again.
        """
        wanted = {agent: commit for agent, (_, commit, _) in heads.heads.items()}
        if heads.base_commit != self.base_commit or any(
            self.tips.get(agent) != commit for agent, commit in wanted.items()
        ):
            return None
        return Report(
            heads.base,
            self.base_commit,
            [b for b in self.branches if b.agent in wanted],
            [p for p in self.examined if p.agents[0] in wanted and p.agents[1] in wanted],
            [b for b in self.against_base if b.agent in wanted],
            tips=wanted,
        )

    @cached_property
    def _by_agents(self) -> dict[tuple[int, int], PairReport]:
        return {p.agents: p for p in self.examined}

    @cached_property
    def pairs(self) -> list[PairReport]:
        """Every pair of branches with work, in (agent, agent) order."""
        return [
            self._by_agents.get((a.agent, b.agent))
            or PairReport((a.agent, b.agent), [], False, [], False)
            for a, b in combinations(self.branches, 2)
        ]

    @property
    def pair_count(self) -> int:
        return len(self.branches) * (len(self.branches) - 1) // 2

    @property
    def conflict_count(self) -> int:
        return sum(p.conflict for p in self.examined) + sum(b.conflict for b in self.against_base)

    def pair(self, left: int, right: int) -> PairReport | None:
        """The pair of two agents with work (a clean one when not examined); None otherwise."""
        key = (min(left, right), max(left, right))
        found = self._by_agents.get(key)
        if found is None and {left, right} <= {b.agent for b in self.branches}:
            return PairReport(key, [], False, [], False)
        return found

    def summary(self) -> dict[str, int]:
        """How many pairs are clean, only overlap (same paths, merging cleanly), or conflict."""
        conflict = sum(p.conflict for p in self.examined)
        overlap = sum(bool(p.overlap) and not p.conflict for p in self.examined)
        return {
            "clean": self.pair_count - conflict - overlap,
            "overlap": overlap,
            "conflict": conflict,
        }

    def to_json(self, all_pairs: bool = False) -> dict[str, Any]:
        """The design's keys; ``pairs`` holds only pairs that overlap or conflict unless
        ``all_pairs`` (at 300 branches the clean pairs were 3 MB of JSON)."""
        shown = self.pairs if all_pairs else [p for p in self.examined if p.overlap or p.conflict]
        return {
            "base": self.base,
            "base_commit": self.base_commit,
            "branches": [b.to_json() for b in self.branches],
            "pairs": [{**p.to_json(), "issues": self.pair_issues(p)} for p in shown],
            "summary": self.summary(),
            "against_base": [b.to_json() for b in self.against_base],
            "idle": self.idle,
            "agents": {str(a): label.to_json() for a, label in self.labels.items()},
        }

    def pair_issues(self, pair: PairReport) -> dict[str, list[int]]:
        """agent -> the issues whose unlanded work the pair compares."""
        return {str(a): self.labels[a].issues if a in self.labels else [] for a in pair.agents}

    def who(self, agent: int) -> str:
        """``agent 2 (#105, #107)``."""
        label = self.labels.get(agent)
        return who(agent, label.issues if label else ())


class MergeCache:
    """Described merges keyed by (base, left, right) commits, kept under the git common dir.

    A merge's result also depends on git's version and merge settings
    (``settings``): when they change, every entry is dropped. The file is
    read whole at every run, so it stays bounded, keeping what was used last.
    """

    def __init__(
        self,
        path: Path | None,
        settings: str = "",
        entries: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.path = path
        self.settings = settings
        self.entries = entries if entries is not None else {}
        self.used: set[str] = set()
        self.dirty = False

    @classmethod
    def load(cls, path: Path | None, settings: str = "") -> MergeCache:
        if path is None:
            return cls(None, settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if (
                data.get("version") == CACHE_VERSION
                and data.get("settings") == settings
                and isinstance(data.get("entries"), dict)
            ):
                return cls(path, settings, data["entries"])
        except (OSError, ValueError, AttributeError):
            pass  # a missing or damaged cache is only a slower run
        return cls(path, settings)

    @staticmethod
    def key(base: str, left: str, right: str) -> str:
        return f"{base}:{left}:{right}"

    def get(self, key: str) -> list[Conflict] | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.used.add(key)
        return [Conflict.from_json(c) for c in entry["conflicts"]]

    def put(self, key: str, conflicts: list[Conflict]) -> None:
        self.entries[key] = {"conflicts": [c.to_json() for c in conflicts]}
        self.used.add(key)
        self.dirty = True

    def save(self) -> None:
        """Write atomically (temp file + rename), only when something new was computed.

        A failure only costs the next run time.
        """
        if self.path is None or not self.dirty:
            return
        recent = [k for k in self.entries if k not in self.used] + [
            k for k in self.entries if k in self.used
        ]
        keep = {key: self.entries[key] for key in recent[-CACHE_LIMIT:]}
        data = {"version": CACHE_VERSION, "settings": self.settings, "entries": keep}
        text = json.dumps(data, separators=(",", ":"))
        from paradev.atomic import write_atomic

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, text, durable=False, mode=0o600)
        except OSError:
            pass


def cache_path(ws: Workspace) -> Path:
    return ws.repo.common_dir / STORE_DIR / CACHE_FILE


def analyze(
    ws: Workspace,
    uncommitted: bool = False,
    remote: bool = False,
    use_cache: bool = True,
    heads: Heads | None = None,
) -> Report:
    """Every pair of agents with work, and each against base: overlap and real conflicts.

    ``heads`` replaces the branches' current heads (the report's train snapshots).
    """
    git = ws.git
    settings = gitmod.start_merge_settings(git) if use_cache else None
    if heads is None:
        heads = find_heads(ws, uncommitted=uncommitted, remote=remote)
        if heads.base_ref == f"refs/heads/{ws.plan.base}":  # read now: the labels' landed tasks
            base_just_read(ws.store.recognise, heads.base_commit)
    loaded, base_changes = load_branches(git, heads)
    branches = [b for b in loaded if b.has_work]
    plans, refused = _plan_merges(git, heads.base_commit, branches, base_changes)
    cache = MergeCache.load(cache_path(ws), settings()) if settings else MergeCache(None)
    results = _run_merges(git, heads.base_commit, plans, cache)
    cache.save()
    results.update((merge, [UNRELATED]) for merge in refused)
    overlaps = _overlaps(branches)
    by_agent = {b.agent: b for b in branches}
    examined = [
        _pair_report(a, b, overlaps.get((a.agent, b.agent), []), results.get((a.head, b.head)))
        for a, b in (
            (by_agent[x], by_agent[y])
            for x, y in sorted(set(overlaps) | _merged_pairs(branches, results))
        )
    ]
    against = [
        BaseReport(b.agent, *_outcome(results.get((heads.base_commit, b.head)))) for b in branches
    ]
    return Report(
        base=heads.base,
        base_commit=heads.base_commit,
        branches=branches,
        examined=examined,
        against_base=against,
        idle=[b.agent for b in loaded if not b.has_work],
        labels=agent_labels(ws.plan, ws.store.view()),
        tips={agent: commit for agent, (_, commit, _) in heads.heads.items()},
    )


def _outcome(conflicts: list[Conflict] | None) -> tuple[bool, list[Conflict]]:
    """(conflict, conflicts) of a merge; None (never merged: proved clean) is clean."""
    return bool(conflicts), conflicts or []


def _merged_pairs(
    branches: Sequence[Branch], results: Mapping[tuple[str, str], object]
) -> set[tuple[int, int]]:
    """The (agent, agent) pairs whose merge was computed (or refused): few, next to all pairs."""
    agents_at: dict[str, list[int]] = defaultdict(list)
    for branch in branches:
        agents_at[branch.head].append(branch.agent)
    return {
        (min(x, y), max(x, y))
        for left, right in results
        for x in agents_at.get(left, ())
        for y in agents_at.get(right, ())
        if x != y
    }


def _pair_report(
    a: Branch, b: Branch, overlap: list[str], conflicts: list[Conflict] | None
) -> PairReport:
    return PairReport(
        (a.agent, b.agent), overlap, bool(conflicts), conflicts or [], conflicts is not None
    )


def _overlaps(branches: Sequence[Branch]) -> dict[tuple[int, int], list[str]]:
    """(agent, agent) -> the paths both changed, for the pairs that share any."""
    changed: dict[str, list[int]] = defaultdict(list)
    for branch in branches:
        for path in branch.changes.paths:
            changed[path].append(branch.agent)
    shared: dict[tuple[int, int], list[str]] = defaultdict(list)
    for path in sorted(changed):
        for pair in _pairs(changed[path], changed[path]):
            shared[pair].append(path)
    return shared


def _plan_merges(
    git: Git, base_commit: str, branches: Sequence[Branch], base_changes: Mapping[str, Changes]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (left, right) merges that could conflict, and those git refuses (no common commit).

    Every other merge is clean for sure.
    """
    colliding, unrelated = _colliding_branches(git, branches)
    unrelated |= _orphan_pairs(git, branches)
    chosen = (_entangled_pairs(branches) | colliding) - unrelated
    wanted = [
        (base_commit, b.head)
        for b in branches
        if b.fork_bases and _may_conflict_with_base(b, base_changes)
    ]
    refused = [(base_commit, b.head) for b in branches if not b.fork_bases]
    by_agent = {b.agent: b for b in branches}
    for key in sorted(unrelated | chosen):  # few pairs, next to every pair of branches
        a, b = by_agent[key[0]], by_agent[key[1]]
        if a.head == b.head:
            continue
        (refused if key in unrelated else wanted).append((a.head, b.head))
    return list(dict.fromkeys(wanted)), refused


def _may_conflict_with_base(branch: Branch, base_changes: Mapping[str, Changes]) -> bool:
    """Base unchanged since the fork merges as a fast-forward: clean for sure."""
    if not branch.fork_is_unique:
        return True
    base_side = base_changes.get(branch.fork)
    return base_side is not None and may_conflict(base_side, branch.changes)


def _entangled_pairs(branches: Sequence[Branch]) -> set[tuple[int, int]]:
    """Pairs the prefilter cannot judge: shared commits (the merge base is then one of
    them), or a branch without a unique fork. They are always merged."""
    owners: dict[str, list[int]] = defaultdict(list)
    for branch in branches:
        for commit in branch.commits:
            owners[commit].append(branch.agent)
    found: set[tuple[int, int]] = set()
    for agents in owners.values():
        found |= _pairs(agents, agents)
    agents = [b.agent for b in branches]
    tangled = [b.agent for b in branches if not b.fork_is_unique]
    return found | _pairs(tangled, agents)


def _orphan_pairs(git: Git, branches: Sequence[Branch]) -> set[tuple[int, int]]:
    """Pairs without a common commit because a branch shares none with base.

    Such a branch has nothing in common with one grown from base; two of them
    may share history, which git is asked about.
    """
    orphans = [b for b in branches if not b.fork_bases]
    found = _pairs([b.agent for b in orphans], [b.agent for b in branches if b.fork_bases])
    among = list(combinations(orphans, 2))
    asked = gitmod.merge_bases(git, [(a.head, b.head) for a, b in among])
    return found | {
        (a.agent, b.agent) for (a, b), bases in zip(among, asked, strict=True) if not bases
    }


def _colliding_branches(
    git: Git, branches: Sequence[Branch]
) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Pairs whose changes, seen from the pair's own merge base, may conflict; and pairs
    whose forks share no commit (git refuses to merge them).

    Branches that left base at the same commit are compared as they are. Two
    branches from different forks are compared from the forks' merge base, with
    their exact changes since then (one more ``diff-tree`` for all of them).
    """
    groups: dict[str, list[Branch]] = defaultdict(list)
    for branch in branches:
        if branch.fork_is_unique:
            groups[branch.fork].append(branch)
    found: set[tuple[int, int]] = set()
    unrelated: set[tuple[int, int]] = set()
    for members in groups.values():
        found |= colliding_pairs({b.agent: b.changes for b in members})
    fork_pairs = list(combinations(sorted(groups), 2))
    merge_bases = gitmod.merge_bases(git, fork_pairs)
    views = _views_from(git, groups, fork_pairs, merge_bases)
    for (f, g), bases in zip(fork_pairs, merge_bases, strict=True):
        across = _pairs([b.agent for b in groups[f]], [b.agent for b in groups[g]])
        if not bases:
            unrelated |= across
        elif len(bases) > 1:  # several merge bases: the prefilter cannot judge, merge them
            found |= across
        else:
            sides = {b.agent: views[(bases[0], b.head)] for b in (*groups[f], *groups[g])}
            found |= colliding_pairs(sides) & across
    return found, unrelated


def _views_from(
    git: Git,
    groups: Mapping[str, Sequence[Branch]],
    fork_pairs: Sequence[tuple[str, str]],
    merge_bases: Sequence[Sequence[str]],
) -> dict[tuple[str, str], Changes]:
    """(merge base, head) -> the changes from that merge base to that head."""
    views: dict[tuple[str, str], Changes] = {}
    wanted: set[tuple[str, str]] = set()
    for (f, g), bases in zip(fork_pairs, merge_bases, strict=True):
        if len(bases) != 1:
            continue
        for branch in (*groups[f], *groups[g]):
            if branch.fork == bases[0]:
                views[(branch.fork, branch.head)] = branch.changes
            else:
                wanted.add((bases[0], branch.head))
    order = sorted(wanted)
    for key, diff in zip(order, gitmod.diff_trees(git, order), strict=True):
        views[key] = Changes.of(diff)
    return views


def _run_merges(
    git: Git, base_commit: str, plans: Sequence[tuple[str, str]], cache: MergeCache
) -> dict[tuple[str, str], list[Conflict]]:
    """Conflicts of each planned merge: cached ones read, the rest computed by git."""
    results: dict[tuple[str, str], list[Conflict]] = {}
    todo: list[tuple[str, str]] = []
    for pair in plans:
        cached = cache.get(MergeCache.key(base_commit, *pair))
        if cached is None:
            todo.append(pair)
        else:
            results[pair] = cached
    for pair, conflicts in zip(todo, _merge_and_describe(git, todo), strict=True):
        results[pair] = conflicts
        cache.put(MergeCache.key(base_commit, *pair), conflicts)
    return results


def _merge_and_describe(git: Git, pairs: Sequence[tuple[str, str]]) -> list[list[Conflict]]:
    """The conflicts of merging each pair, the work split across the machine's cores.

    Each part is one ``merge-tree --stdin`` process, then one ``cat-file`` for
    its conflicted files. One git process is single-threaded: with enough
    merges to pay for another process, parts run side by side.
    """
    parts = len(pairs) // MERGES_PER_PROCESS
    if parts > 1:
        parts = min(parts, os.cpu_count() or 1)
    if parts <= 1:
        return describe_many(git, gitmod.merge_trees(git, pairs))
    from concurrent.futures import ThreadPoolExecutor

    size = -(-len(pairs) // parts)  # ceiling: every pair lands in a part
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        done = pool.map(lambda chunk: describe_many(git, gitmod.merge_trees(git, chunk)), chunks)
        return [conflicts for part in done for conflicts in part]


# -- the human view ---------------------------------------------------------------------------

MATRIX_LIMIT = 12  # more agents than this: list the pairs instead of a matrix


def render(report: Report) -> str:
    """The matrix of agents (clean / overlap / CONFLICT) and the details under it."""
    lines = [
        f"conflicts (base {report.base} @ {report.base_commit[:12]}; "
        f"{len(report.branches)} agent(s) with work)"
    ]
    lines += _agent_states(report)
    if not report.branches:
        return "\n".join(lines)
    lines.append("")
    if len(report.branches) <= MATRIX_LIMIT:
        lines += _matrix(report)
    else:
        lines += _pair_list(report)
    details = _details(report)
    if details:
        lines += ["", *details]
    lines += ["", _summary(report)]
    return "\n".join(lines)


def _agent_states(report: Report) -> list[str]:
    """Every agent grouped by state, with its issues: ``completed: agent 2 (#12)``.

    Without labels (a report built by hand) the agents without work are only listed.
    """
    if not report.labels:
        idle = ", ".join(f"agent {a}" for a in report.idle)
        return [f"no work yet: {idle}"] if idle else []
    with_work = {b.agent for b in report.branches}
    groups: dict[str, list[str]] = {label: [] for label in LABELS}
    for agent, label in sorted(report.labels.items()):
        shown = report.who(agent)
        if agent not in with_work and label.label not in WORKLESS:
            shown += " [no commits]"
        elif agent in with_work and label.label == IDLE:
            shown += " [commits outside any task]"
        groups[label.label].append(shown)
    width = max(len(label) for label, found in groups.items() if found) + 2
    return [
        f"  {(label + ':').ljust(width)}{', '.join(found)}"
        for label, found in groups.items()
        if found
    ]


def _matrix(report: Report) -> list[str]:
    agents = [b.agent for b in report.branches]
    width = 10
    rows = ["".ljust(width) + "".join(f"agent {a}".ljust(width) for a in agents)]
    for row in agents:
        cells = []
        for col in agents:
            pair = report.pair(row, col) if row != col else None
            cells.append((pair.state if pair else "-").ljust(width))
        rows.append(f"agent {row}".ljust(width) + "".join(cells))
    base_cells = ("CONFLICT" if b.conflict else "clean" for b in report.against_base)
    rows.append("base".ljust(width) + "".join(c.ljust(width) for c in base_cells))
    return [row.rstrip() for row in rows]


def _pair_list(report: Report) -> list[str]:
    noisy = [p for p in report.examined if p.state != "clean"]
    lines = [f"{report.who(p.agents[0])} x {report.who(p.agents[1])}: {p.state}" for p in noisy]
    lines += [f"{report.who(b.agent)} x base: CONFLICT" for b in report.against_base if b.conflict]
    return lines or ["every pair is clean"]


def _details(report: Report) -> list[str]:
    lines: list[str] = []
    for pair in report.examined:
        left, right = pair.agents
        names = f"{report.who(left)} x {report.who(right)}"
        if pair.conflict:
            lines.append(f"{names}: CONFLICT")
            lines += _conflict_lines(pair.conflicts, f"agent {left}", f"agent {right}")
            harmless = sorted(set(pair.overlap) - {c.path for c in pair.conflicts})
            if harmless:
                lines.append(f"  overlap without conflict: {', '.join(harmless)}")
        elif pair.overlap:
            lines.append(f"{names}: overlap, merges cleanly: {', '.join(pair.overlap)}")
    for against in report.against_base:
        if against.conflict:
            lines.append(f"{report.who(against.agent)} x base ({report.base}): CONFLICT")
            lines += _conflict_lines(against.conflicts, report.base, f"agent {against.agent}")
    return lines


def _conflict_lines(conflicts: Sequence[Conflict], ours: str, theirs: str) -> list[str]:
    lines: list[str] = []
    for conflict in conflicts:
        ranges = ", ".join(f"lines {h.start}-{h.end}" for h in conflict.hunks)
        lines.append(f"  {conflict.path}  {conflict.type}" + (f"  ({ranges})" if ranges else ""))
        for text in conflict.message.splitlines():
            lines.append(f"    {text}")
        for hunk in conflict.hunks:
            lines.append(f"    hunk {hunk.start}-{hunk.end}:")
            lines += _side(ours, hunk.ours)
            lines += _side(theirs, hunk.theirs)
    return lines


def _side(label: str, side: Sequence[str]) -> list[str]:
    shown = [f"      {label}: {line}" for line in side[:SHOWN_LINES]]
    if len(side) > SHOWN_LINES:
        shown.append(f"      {label}: ... {len(side) - SHOWN_LINES} more line(s)")
    return shown or [f"      {label}: (no lines)"]


def _summary(report: Report) -> str:
    overlaps = report.summary()["overlap"]
    return (
        f"{report.conflict_count} conflict(s), {overlaps} harmless overlap(s), "
        f"{report.pair_count} pair(s)"
    )


# -- watching -------------------------------------------------------------------------------


def snapshot_states(report: Report) -> dict[str, str]:
    """A short state per pair and per agent against base: what --watch compares."""
    states = {f"agent {b.agent}": b.head[:12] for b in report.branches}
    for pair in report.pairs:
        detail = ", ".join(c.path for c in pair.conflicts) or ", ".join(pair.overlap)
        states[f"agents {pair.agents[0]} x {pair.agents[1]}"] = (
            f"{pair.state} ({detail})" if detail else pair.state
        )
    for against in report.against_base:
        paths = ", ".join(c.path for c in against.conflicts)
        states[f"agent {against.agent} x base"] = f"CONFLICT ({paths})" if paths else "clean"
    return states


def changes_between(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """What --watch prints: entries that appeared, changed or went away."""
    lines = []
    for key in sorted(old.keys() | new.keys()):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if before is None:
            lines.append(f"{key}: {after}")
        elif after is None:
            lines.append(f"{key}: gone (was {before})")
        else:
            lines.append(f"{key}: {before} -> {after}")
    return lines


def parse_interval(text: str) -> float:
    """``--interval``: a finite number of seconds, at least 0.1 (a busy loop helps nobody)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0.1:
        raise PreconditionError(
            f"--interval must be a number of seconds of at least 0.1, not {text!r}"
        )
    return seconds


def watch(
    compute: Callable[[], Report],
    emit: Callable[[str], None],
    interval: float,
    iterations: int | None = None,
    sleep: Callable[[float], None] | None = None,
    as_json: bool = False,
    all_pairs: bool = False,
) -> None:
    """Re-check every ``interval`` seconds and emit only what changed (until interrupted).

    ``iterations`` and ``sleep`` exist so tests can drive the loop.
    """
    pause = sleep or time.sleep
    previous: dict[str, str] | None = None
    done = 0
    while iterations is None or done < iterations:
        if done:
            pause(interval)
        report = compute()
        states = snapshot_states(report)
        if previous is None:
            emit(json.dumps(report.to_json(all_pairs)) if as_json else render(report))
        elif states != previous:
            if as_json:
                emit(json.dumps(report.to_json(all_pairs)))
            else:
                stamp = time.strftime("%H:%M:%S")
                emit("\n".join(f"[{stamp}] {line}" for line in changes_between(previous, states)))
        previous = states
        done += 1
