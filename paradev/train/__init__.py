"""The merge train: land each agent's branch on base, never leaving base broken.

The package, in reading order: ``journal`` (the ``Train`` in progress, its
driver and locks), ``steps`` (the serial loop), the steps of one landing
(``checks``: preconditions, ``backup``, ``rebase`` with conflict hand-back,
``rewrite``: squash, trailers and the check before the gate, ``advance``:
gate, fast-forward, push, mark, hooks),
``gate`` (one gate run, and the gate slots of the queue), ``candidates``
(the merge queue: speculative candidates, batches, ejection), ``drive``
(the entry points below: the serial train or the queue), ``dryrun`` (what a
train would do, changing nothing), ``landing`` (patch, marker and trailer
checks on commits) and ``messages`` (commit-message rules). Choosing what
lands is ``paradev.order.select_agents``; the agent a conflict is handed
back to is launched by a function the caller passes in (``hand_back``).
"""

from __future__ import annotations

from paradev.train.checks import merge_order, preflight
from paradev.train.drive import Options, abort, merge, resume, skip
from paradev.train.journal import BACKUP_PREFIX, HandBack, Output, Train
from paradev.train.messages import squash_message
from paradev.train.rebase import marker_hunks

__all__ = [
    "BACKUP_PREFIX",
    "HandBack",
    "Options",
    "Output",
    "Train",
    "abort",
    "marker_hunks",
    "merge",
    "merge_order",
    "preflight",
    "resume",
    "skip",
    "squash_message",
]
