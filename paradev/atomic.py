"""Replacing a file whole: how every file paradev keeps is written.

A reader never sees half a file and a crash never leaves a truncated one:
the new content goes to a temporary file beside the target (one file system,
so the rename is atomic), is flushed to disk when it must survive a power
cut, and is renamed over the target. The temporary name is unique per call
(process, thread, random part) and created exclusively, so concurrent
writers never share one.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from contextlib import suppress
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    from typing import Any


def write_atomic(
    path: Path,
    data: str | bytes,
    *,
    durable: bool = True,
    keep_mode: bool = False,
    mode: int = 0o666,
) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8, line endings as given).

    ``durable``: fsync before the rename (state, plan); caches and records
    that are rebuilt or rewritten anyway skip the cost. ``keep_mode``: the new
    file keeps the permissions of the one it replaces. ``mode``: a new file's
    permissions, the umask applied. The temporary file never outlives a
    failure, which is raised.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    unique = f"{os.getpid()}-{threading.get_ident()}-{os.urandom(4).hex()}"
    tmp = path.with_name(f".{path.name}.{unique}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        if keep_mode:
            with suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON in place of ``path``: a record (not fsynced) no reader sees half of."""
    write_atomic(path, json.dumps(data), durable=False)
