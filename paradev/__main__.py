"""``python -m paradev``: the same program as the console script."""

import sys

from paradev.cli import main

sys.exit(main())
