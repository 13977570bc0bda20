"""Starting a git process to read later: the one place its pipes, text mode and environment
are chosen, for ``paradev.git.Processes`` and for the processes ``status`` starts before it
loads the modules it needs (``paradev.context.start_statuses``)."""

from __future__ import annotations

import subprocess

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy knows the name)
if TYPE_CHECKING:
    import os
    from collections.abc import Mapping, Sequence

# git output is bytes: a path that is not UTF-8 must not crash a command, and a path read
# from git must reach git again unchanged.
GIT_TEXT_ERRORS = "surrogateescape"


def start_git(
    cwd: str | os.PathLike[str], args: Sequence[str], env: Mapping[str, str]
) -> subprocess.Popen[str]:
    """``git ARGS`` running in ``cwd``, its output to be read with ``communicate``."""
    return subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors=GIT_TEXT_ERRORS,
        env=env,
    )
