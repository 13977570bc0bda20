"""An exclusive lock on a file (``flock``), re-entrant within one thread: every lock paradev
takes between its processes (state, train, agents, worktree records, setup runs).

They were ``filelock.FileLock``: importing that package
(logging, secrets, typing) cost ~70 ms, a tenth of a ten-branch merge train.
This is the part paradev uses, with the same lock on the same file: ``flock``
of the whole file, which stays in place on release, so a ``filelock`` of
another paradev version and this one exclude each other. As ``FileLock`` by
default, the hold is per instance and per thread: a second thread, or a
second instance for the same file, waits like another process. The
operating system releases the lock when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from errno import EACCES, EAGAIN, EWOULDBLOCK

POLL_INTERVAL = 0.05  # the most seconds between attempts while another holder has it
FIRST_POLL = 0.001  # the first wait, doubled at each attempt up to POLL_INTERVAL
_BUSY = frozenset({EACCES, EAGAIN, EWOULDBLOCK})


class LockBusyError(Exception):
    """Another holder kept the lock for longer than the wait allowed."""


class LockFile:
    """``acquire``/``release`` an exclusive lock on ``path`` (created if missing)."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self._held: dict[int, tuple[int, int]] = {}  # thread id -> (descriptor, depth)

    @property
    def is_locked(self) -> bool:
        """Whether the calling thread holds it."""
        return threading.get_ident() in self._held

    def acquire(self) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (0: not at all); LockBusyError if not.

        OSError when the file cannot be opened (e.g. a folder in its place).
        """
        me = threading.get_ident()
        if me in self._held:
            fd, depth = self._held[me]
            self._held[me] = (fd, depth + 1)
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited (PEP 446)
        try:
            self._wait_for(fd)
        except BaseException:
            os.close(fd)
            raise
        self._held[me] = (fd, 1)

    def _wait_for(self, fd: int) -> None:
        """Attempt after waits that double from a millisecond: the state is held a few
        milliseconds per write, and ``paradev run`` and its merge train take turns with it
        on the critical path (a fixed 50 ms made each turn cost 25 ms on average)."""
        deadline = time.monotonic() + self.timeout
        interval = FIRST_POLL
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in _BUSY:
                    raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise LockBusyError(self.path)
            time.sleep(min(interval, left))
            interval = min(interval * 2, POLL_INTERVAL)

    def release(self) -> None:
        """Let go of one ``acquire`` of the calling thread; the last one unlocks the file."""
        me = threading.get_ident()
        fd, depth = self._held[me]
        if depth > 1:
            self._held[me] = (fd, depth - 1)
            return
        del self._held[me]
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
