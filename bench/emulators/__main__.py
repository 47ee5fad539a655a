"""``python -m bench.emulators PROVIDER[,...]|all [options]``: ``sandbox-bench emulate``
without importing the rest of the CLI (tests start emulators this way: it starts faster)."""

import sys

from bench.emulators.cli import main

sys.exit(main())
