"""The merge train: land each agent's branch on base, never leaving base broken.

The package, in reading order: ``journal`` (the ``Train`` in progress, its
driver and locks), ``steps`` (preconditions and each step of one landing),
``gate`` (one gate run, and the gate slots of the queue), ``candidates``
(the merge queue: speculative candidates, batches, ejection), ``drive``
(the entry points below: the serial train or the queue), ``dryrun`` (what a
train would do, changing nothing), ``landing`` (patch, marker and trailer
checks on commits) and ``messages`` (commit-message rules). Choosing what
lands is ``paradev.order.select_agents``; the agent a conflict is handed
back to is launched by a function the caller passes in (``hand_back``).
"""

from __future__ import annotations

from paradev.train.drive import Options, abort, merge, resume, skip
from paradev.train.journal import BACKUP_PREFIX, HandBack, Output, Train
from paradev.train.messages import squash_message
from paradev.train.steps import marker_hunks, merge_order, preflight

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
