"""``python -m bench.workloads.fetch_agent_data [--check] [--quiet]``: fetch (from PyPI, with
pip) and build the built-in agent tasks' files into the cache (bench/workloads/agent_data.py).

A module of its own because ``bench.workloads`` imports agent_data: running that module with
``-m`` would load it twice. ``scripts/setup.sh`` runs this.
"""

from __future__ import annotations

import sys

from bench.workloads.agent_data import main

if __name__ == "__main__":
    sys.exit(main())
