"""Answers computed from commit ids alone, kept between runs of the commands run in loops.

A commit id names its whole history, so an answer keyed by the ids it was
computed from (how far a branch is ahead of base, the paths a branch changed)
cannot go stale: when a branch moves, its id and so the key change and the
answer is computed anew. Replace refs, grafts and shallow clones break that
rule; callers then keep nothing (``git.resolve_refs_of_plain_history``).
"""

from __future__ import annotations

import os

from paradev.kept import load, save

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TypeVar

    _K = TypeVar("_K")


class CommitCache:
    """One file of key -> answer (``paradev.kept``'s format); a save keeps only the answers
    this run asked for."""

    def __init__(self, path: str | os.PathLike[str], enabled: bool = True) -> None:
        self.path, self.enabled = os.fspath(path), enabled
        self._kept: dict[str, Any] | None = None
        self._used: dict[str, Any] = {}
        self._new = False

    def get(self, key: str) -> Any:
        """The answer kept for ``key``; None when there is none (or caching is off)."""
        if not self.enabled:
            return None
        if self._kept is None:
            self._kept = _load(self.path)
        found = self._kept.get(key)
        if found is not None:
            self._used[key] = found
        return found

    def put(self, key: str, answer: Any) -> None:
        if self.enabled:
            self._used[key] = answer
            self._new = True

    def lookup(
        self,
        keys: Mapping[_K, str],
        valid: Callable[[Any], bool],
        compute: Callable[[list[_K]], Mapping[_K, Any]],
    ) -> dict[_K, Any]:
        """Each item's answer: the kept one when ``valid`` accepts it, else computed and kept.

        The missing items are computed by one ``compute`` call (the caller runs
        them side by side); a None answer is returned but not kept. Saves.
        """
        found: dict[_K, Any] = {}
        for item, key in keys.items():
            kept = self.get(key)
            if valid(kept):
                found[item] = kept
        missing = [item for item in keys if item not in found]
        if missing:
            for item, answer in compute(missing).items():
                found[item] = answer
                if answer is not None:
                    self.put(keys[item], answer)
        self.save()
        return found

    def save(self) -> None:
        """Replace the file when something new was computed (``paradev.kept.save``)."""
        if self._new:
            save(self.path, self._used)
            self._new = False


def _load(path: str) -> dict[str, Any]:
    """The kept answers; nothing when the file is missing or not of our making."""
    data = load(path)
    return data if isinstance(data, dict) else {}
