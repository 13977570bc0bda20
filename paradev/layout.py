"""The names of the files paradev keeps under ``<common dir>/paradev`` (shared by every work
tree): in a module of their own, so a command that only reads one of them (``check``) does
not load the module that writes it."""

from __future__ import annotations

import os

STORE_DIR = "paradev"  # under the git common dir
STATE_FILE = "state.json"  # tasks, agents, landings (paradev.state)
JOURNAL_FILE = "train.json"  # the merge train's journal while one runs (paradev.state)
VERSION_STAMP = "git-version"  # the git program whose version was last found new enough
PLAN_FILE = "plan.toml"  # in the main work tree, unless PARADEV_PLAN names another


def plan_file(main_root: str, explicit: str | None = None) -> str:
    """The plan file: ``explicit``, else $PARADEV_PLAN (from the current folder, links
    followed), else plan.toml in the main work tree."""
    chosen = explicit or os.environ.get("PARADEV_PLAN")
    return os.path.realpath(chosen) if chosen else os.path.join(main_root, PLAN_FILE)
