"""The ParadevError hierarchy: every expected failure carries its exit code.

The one error boundary (``paradev.tasks``) turns these into a single line on
stderr and the exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FOUND = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class ParadevError(Exception):
    """A failure the user can act on; ``str(err)`` is the whole message."""

    exit_code = EXIT_USAGE


class PlanError(ParadevError):
    """plan.toml is missing, malformed or invalid."""


class StateError(ParadevError):
    """The shared state file is unreadable or inconsistent."""


class GitError(ParadevError):
    """A git command failed, or the repository is not usable."""


class PreconditionError(ParadevError):
    """The request is valid but the repository is not in a state to do it."""


class Stopped(ParadevError):  # noqa: N818 - reads as "the run stopped"
    """A run stopped on purpose (conflict, failed gate, failed task): exit 1."""

    exit_code = EXIT_FOUND
