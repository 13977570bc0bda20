"""A ``paradev`` process started ahead of need: imports done, it waits for its arguments.

``paradev run`` keeps one ready for the next landing, so a landing does not
wait for Python to start and import the merge train. The arguments come as
one JSON list on stdin; end of input (the run ended, or was killed) exits 0
without doing anything. What follows the arguments is the run's word to a
train it started (``paradev.train.join.listen``).
"""

from __future__ import annotations

import json
import os
import sys
import tomllib

import paradev.handlers
import paradev.hooks
import paradev.lifecycle
import paradev.runner
import paradev.supervise
import paradev.train
import paradev.train.join
from paradev.cli import main as cli_main

# Imported for their import time, not their names: a landing imported these
# lazily, a quarter of a second per train on a loaded machine (cProfile).
WARMED = (
    tomllib,
    paradev.handlers,
    paradev.hooks,
    paradev.lifecycle,
    paradev.runner,
    paradev.supervise,
    paradev.train,
)


def main() -> int:
    line = _first_line()
    if not line.strip():
        return 0
    args = json.loads(line)
    paradev.train.join.listen(os.dup(0))  # the rest of the input: the run's word to the train
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # what it starts must not read the run's pipe
    os.close(devnull)
    return cli_main([str(arg) for arg in args])


def _first_line() -> bytes:
    """The arguments' line, read a byte at a time: nothing after it is taken from the pipe."""
    line = b""
    while not line.endswith(b"\n") and (byte := os.read(0, 1)):
        line += byte
    return line


if __name__ == "__main__":
    sys.exit(main())
