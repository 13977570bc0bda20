"""``python -m paradev``: the same program as the console script."""

from paradev.cli import main

main()
