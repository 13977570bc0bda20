"""Checks on what a landing holds, and the trailers it carries: pure git, no train state.

Before base moves, the merge train asks: does the landing add whole
conflict-marker blocks, and does it hold all of the agent's completed work?
Every landed commit names its task in a ``Paradev-Issue: N`` trailer, which
``reset`` reads to recognise landed work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from paradev import git as gitmod
from paradev.errors import GitError
from paradev.git import Git

MARKER_START, MARKER_MIDDLE, MARKER_END = "<<<<<<<", "=======", ">>>>>>>"
ISSUE_TRAILER = "Paradev-Issue"


def has_marker_block(lines: Sequence[str]) -> bool:
    """Whether ``lines`` hold a whole conflict block: ``<<<<<<<``, ``=======``, ``>>>>>>>``.

    A lone ``=======`` (a heading underline) or a stray marker is not a block.
    """
    wanted = 0
    for line in lines:
        text = line.rstrip("\r")
        if wanted == 0 and _is_marker(text, MARKER_START):
            wanted = 1
        elif wanted == 1 and text == MARKER_MIDDLE:
            wanted = 2
        elif wanted == 2 and _is_marker(text, MARKER_END):
            return True
    return False


def _is_marker(text: str, marker: str) -> bool:
    return text == marker or text.startswith(marker + " ")


def files_with_markers(git: Git, base: str, head: str) -> list[str]:
    """Paths to which ``head`` adds a whole conflict-marker block (relative to ``base``)."""
    added = gitmod.added_lines(git, base, head)
    return sorted(path for path, lines in added.items() if has_marker_block(lines))


@dataclass(frozen=True)
class Missing:
    """Work of the agent that a landing lacks: the paths, and the commits that changed them."""

    paths: list[str]
    commits: list[str]


def missing_work(
    git: Git, base: str, landing: str, work: str, resolved: Sequence[str] = ()
) -> Missing | None:
    """What of the change fork point -> ``work`` the ``landing`` (on ``base``) lacks, if anything.

    The agent's combined change is merged once more into the landing: their
    merge base is the fork point of ``work`` and ``base`` (the landing is base
    plus rewritten commits, none of them in ``work``). Every path where that
    changes anything (or conflicts) is work the landing lost. Changes base
    already has merge to nothing, squashing changes no tree, and ``resolved``
    paths (a recorded conflict resolution) are the resolver's call, as are
    files to which the work itself adds conflict markers (taking them out
    loses nothing). A change the landing holds with more around it is not lost
    either (``changes_held``). One git process when nothing is lost: the
    landing merged with itself gives its own tree to compare with.
    """
    try:
        merge, own = gitmod.merge_trees(git, [(landing, work), (landing, landing)])
    except GitError:  # unrelated histories: no fork point, nothing to compare with
        if gitmod.merge_base(git, base, work) is None:
            return None
        raise
    if merge.clean and merge.tree == own.tree:
        return None
    lost = set(merge.conflicted_paths)
    lost |= set(gitmod.tree_diff_paths(git, own.tree, merge.tree))
    lost -= set(resolved)
    fork = gitmod.merge_base(git, base, work) if lost else None
    if fork is not None:
        lost -= set(files_with_markers(git, fork, work))
        lost -= set(gitmod.changes_held(git, fork, work, landing, sorted(lost)) if lost else ())
    if not lost:
        return None
    paths = sorted(lost)
    return Missing(paths, gitmod.log_touching(git, fork or base, work, paths))


def colliding(untracked: Sequence[str], added: Sequence[str]) -> list[str]:
    """Untracked paths a checkout adding ``added`` would overwrite (a file or a folder's place)."""
    folders = {"/".join(p.split("/")[:n]) for p in added for n in range(1, p.count("/") + 1)}
    wanted = set(added)
    return [p for p in untracked if p in wanted or p in folders]


def fast_forward_blocked(
    git: Git, base: str, holder: Path, untracked: Sequence[str], old: str, new: str, then: str
) -> str:
    """Why git would refuse to fast-forward ``base`` (checked out in ``holder``), or ""."""
    found = colliding(untracked, gitmod.added_paths(git, old, new)) if untracked else []
    if not found:
        return ""
    return (
        f"the fast-forward of {base} in {holder} would overwrite its untracked files "
        f"{', '.join(found[:5])}; commit, move or remove them, then run {then}"
    )


def issue_trailers(issues: Sequence[int]) -> str:
    """The trailer block naming ``issues``, to end a commit message with."""
    return "\n" + "".join(f"{ISSUE_TRAILER}: {issue}\n" for issue in issues)


def with_issue_trailers(
    git: Git,
    base: str,
    commits: Sequence[str],
    issues: Sequence[list[int]],
    raw: Sequence[gitmod.RawCommit] | None = None,
    objects: Path | None = None,
) -> str:
    """``commits`` (a chain on ``base``) again, each message carrying its ``issues`` trailers.

    Same trees, authors, committers and dates: the same commits every time.
    Commits that already carry them (and whose parents did not change) are kept.
    A few git processes for the whole chain: one reads every commit (none
    when the caller read them: ``raw``), one adds the trailers per set of
    issues (none for a plain message), and one writes the new commits (none
    given the repository's ``objects`` folder).
    """
    raw = list(raw) if raw is not None else gitmod.read_commits(git, commits)
    messages = [commit.message for commit in raw]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, of_commit in enumerate(issues):
        groups.setdefault(tuple(of_commit), []).append(index)
    for wanted, indexes in groups.items():
        values = [str(issue) for issue in wanted]
        added = gitmod.add_trailers_to_each(
            git, [messages[i] for i in indexes], ISSUE_TRAILER, values
        )
        for index, message in zip(indexes, added, strict=True):
            messages[index] = message
    kept = 0
    while kept < len(raw) and messages[kept] == raw[kept].message:  # they carry them already
        kept += 1
    parent = commits[kept - 1] if kept else base
    rest = [old._replace(message=m) for old, m in zip(raw[kept:], messages[kept:], strict=True)]
    return ([parent, *gitmod.write_commit_chain(git, parent, rest, objects)])[-1]


def missing_range_work(
    git: Git, landing: str, work: str, start: str, resolved: Sequence[str] = ()
) -> Missing | None:
    """What of the change ``start`` -> ``work`` the ``landing`` lacks: ``missing_work`` for a
    range replayed from ``start`` (``git rebase --onto``), whose earlier commits landed rewritten.

    ``start`` is no ancestor of the landing, so the merge base is given by
    three commits made for the comparison alone (no ref names them): the
    landing's and the work's trees, each on ``start``'s.
    """
    root = gitmod.commit_tree(git, gitmod.tree_of(git, start), [], "range start\n")
    ours = gitmod.commit_tree(git, gitmod.tree_of(git, landing), [root], "landing\n")
    theirs = gitmod.commit_tree(git, gitmod.tree_of(git, work), [root], "work\n")
    merge, own = gitmod.merge_trees(git, [(ours, theirs), (ours, ours)])
    if merge.clean and merge.tree == own.tree:
        return None
    lost = set(merge.conflicted_paths) | set(gitmod.tree_diff_paths(git, own.tree, merge.tree))
    lost -= set(resolved) | set(files_with_markers(git, start, work))
    lost -= set(gitmod.changes_held(git, start, work, landing, sorted(lost)) if lost else ())
    if not lost:
        return None
    paths = sorted(lost)
    return Missing(paths, gitmod.log_touching(git, start, work, paths))
