"""The names of the files paradev keeps under ``<common dir>/paradev`` (shared by every work
tree): in a module of their own, so a command that only reads one of them (``check``) does
not load the module that writes it."""

from __future__ import annotations

STORE_DIR = "paradev"  # under the git common dir
STATE_FILE = "state.json"  # tasks, agents, landings (paradev.state)
JOURNAL_FILE = "train.json"  # the merge train's journal while one runs (paradev.state)
VERSION_STAMP = "git-version"  # the git program whose version was last found new enough
