"""Answers kept between runs, keyed by the identity of the files they were read from.

``check`` runs before every edit an agent makes: it must answer in the time
Python takes to start. Its answers (where the repository's branches point,
what each branch and work tree changed, what the plan says) are kept in
files under ``<common>/paradev``, each with a *key*: the identity (device,
inode, mode, size, modification and change times) of every file the answer
was read from. An answer is used only while its key is unchanged.

A file written twice within one tick of the file system's clock keeps its
size and times: like git's racy-clean rule, no key is made while any of its
files is younger than ``RACY_MARGIN_NS`` before the moment it is taken.

This module imports nothing beyond Python's built-in modules: no ``json``
(which loads ``re`` and ``enum``, ~13 ms), no ``pathlib``, no ``typing``. A
kept file is a header, a digest and a ``marshal`` payload: the digest is
checked before the payload is read, so a corrupt, truncated or foreign file
is ignored (and the answer asked again), never trusted.
"""

from __future__ import annotations

import marshal
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

RACY_MARGIN_NS = 2_000_000_000  # clock ticks, and file systems whose clock is not ours
DIGEST_SIZE = 20
MAX_KEPT_BYTES = 64_000_000  # far above 512 kept answers; a larger file is not ours
# Which Python wrote the payload: marshal's format changes between versions.
_HEADER = f"paradev kept 1 {sys.implementation.cache_tag}\n".encode()


class NotKeyableError(Exception):
    """The answer cannot be keyed exactly: git must be asked."""


def digest(data: bytes) -> bytes:
    """A 20-byte BLAKE2b digest. ``_blake2`` directly: ``hashlib`` loads OpenSSL first (~5 ms)."""
    try:
        from _blake2 import blake2b
    except ImportError:  # another Python than CPython
        from hashlib import blake2b
    return blake2b(data, digest_size=DIGEST_SIZE).digest()


def figures(st: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is replaced, written, resized, chmod-ed or touched."""
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Stamps:
    """The files an answer depends on, written down as one key; refused when racy."""

    def __init__(self, since_ns: int, root: str = "") -> None:
        self.parts: list[object] = []  # names, stat figures and texts: their repr is the key
        self.racy_after = since_ns - RACY_MARGIN_NS
        self.root = root  # left out of the names in the key (a tree's own folder)

    def _name(self, path: str) -> str:
        return path[len(self.root) :] if self.root and path.startswith(self.root) else path

    def _lstat(self, path: str) -> os.stat_result | None:
        """The entry at ``path`` (not followed); None, written down as absent, when missing."""
        try:
            return os.lstat(path)
        except FileNotFoundError:
            self.parts.append((self._name(path), None))
            return None
        except OSError as exc:
            raise NotKeyableError(str(exc)) from None

    def file(self, path: str) -> os.stat_result | None:
        """The file's whole identity (None when absent); racy times refuse the key."""
        st = self._lstat(path)
        if st is None:
            return None
        if st.st_mtime_ns >= self.racy_after or st.st_ctime_ns >= self.racy_after:
            raise NotKeyableError(f"{path} changed moments ago")
        self.parts.append((self._name(path), *figures(st)))
        return st

    def files(self, paths: Sequence[str]) -> None:
        for path in paths:
            self.file(path)

    def text(self, path: str) -> str:
        """The file's identity and its text ("" when absent)."""
        if self.file(path) is None:
            return ""
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return handle.read()
        except OSError as exc:
            raise NotKeyableError(str(exc)) from None

    def identity(self, path: str) -> os.stat_result | None:
        """Which file or folder is there (device, inode, type), not its times: a folder on
        the way to the paths asked changes its times whenever a sibling is added."""
        st = self._lstat(path)
        if st is not None:
            self.parts.append((self._name(path), st.st_dev, st.st_ino, st.st_mode))
        return st

    def key(self) -> str:
        """The parts' digest: a file's key is ~2 KB, a folder's one per entry, and every
        check reads its kept files whole."""
        return digest(repr(self.parts).encode("utf-8", "surrogateescape")).hex()


def load(path: str) -> object:
    """The value kept in ``path``; None when missing, unreadable, corrupt or foreign."""
    from paradev.limits import read_bounded

    try:
        data = read_bounded(path, MAX_KEPT_BYTES, path)  # a FIFO planted there: refused
    except (OSError, ValueError):
        return None
    start = len(_HEADER) + DIGEST_SIZE
    if not data.startswith(_HEADER) or data[len(_HEADER) : start] != digest(data[start:]):
        return None
    try:
        return marshal.loads(data[start:])
    except (ValueError, EOFError, TypeError):
        return None


def save(path: str, value: Any) -> None:
    """Keep ``value`` in ``path`` (replaced whole, by rename), when paradev's folder exists.

    Concurrent writers may each write: the last one wins, and an answer lost
    that way is only asked again. A failure to write keeps nothing.
    """
    if not os.path.isdir(os.path.dirname(path)):
        return
    from contextlib import suppress
    from pathlib import Path

    from paradev.atomic import write_atomic

    payload = marshal.dumps(value)
    with suppress(OSError):
        write_atomic(Path(path), _HEADER + digest(payload) + payload, durable=False)
