"""Quiet between iterations (issue 17, item 1): an operation measured inside the default suite
must read like the same operation measured alone, not like its neighbours' leftovers.

One benchmark runs, on the local provider, through the real session (as ``sandbox-bench run``
does): the lifecycle workload alone (``--workloads lifecycle --iterations 60``, the issue's
figure) and the default suite of bench.toml (``make run``: its workloads, lifecycle among
them, 20 iterations each), twice each in the order alone, suite, alone, suite, so that a drift
of the machine's speed over the minutes it takes weighs on both alike. It reports both
``create`` p50s (warmups excluded, the two runs of each pooled), their ratio with a 95 %
bootstrap interval (scipy.stats.bootstrap, percentile), and each run's own p50 in
``extra_info``, and holds the suite's within GOAL of the alone figure. Both sides run with
the run defaults, ``cpu_latency = "hold"`` included (bench/cpu_latency.py).

Run: ``.venv/bin/pytest benchmarks/test_quiet_bench.py --benchmark-only -p no:cacheprovider
-o addopts="" -s`` (``-s`` prints the two figures). It takes a few minutes: the default suite
is most of it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tomllib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bench.config import build_config
from bench.records import RunStatus
from bench.session import run_session
from bench.store import load_run

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the local provider's full mode needs root"),
    pytest.mark.timeout(3600),
]
ROOT = Path(__file__).resolve().parents[1]
#: The suite's create p50 may exceed the alone figure by at most this fraction.
GOAL = 0.10
#: Alone then suite, this many times.
ROUNDS = 2


def _creates_ms(folder: Path) -> list[float]:
    return [
        s.duration_s * 1000
        for s in load_run(folder).samples
        if s.workload == "lifecycle" and s.operation == "create" and not s.warmup
        and s.status == "ok" and s.duration_s is not None
    ]  # fmt: skip


def _ratio_interval(alone: list[float], suite: list[float]) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of median(suite) / median(alone)."""
    result = stats.bootstrap(
        (np.asarray(alone), np.asarray(suite)),
        lambda a, b, axis=-1: np.median(b, axis=axis) / np.median(a, axis=axis),
        n_resamples=4000,
        method="percentile",
        random_state=np.random.default_rng(17),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _run(tables: dict, overrides: dict, output: Path) -> Path:
    config = build_config(tables, {**overrides, "output": output})
    folder, status = asyncio.run(run_session(config))
    assert status is RunStatus.COMPLETED
    return folder


def test_lifecycle_create_alone_and_inside_the_default_suite(benchmark, tmp_path):
    tables = tomllib.loads((ROOT / "bench.toml").read_text())
    tables["providers"] = {"local": {"state_dir": str(tmp_path / "state")}}
    runs: dict[str, list[list[float]]] = {"alone": [], "suite": []}

    def both() -> None:
        for round_ in range(ROUNDS):
            alone_dir, suite_dir = tmp_path / f"alone{round_}", tmp_path / f"suite{round_}"
            alone = _run(tables, {"workloads": "lifecycle", "iterations": 60}, alone_dir)
            suite = _run(tables, {}, suite_dir)
            runs["alone"].append(_creates_ms(alone))
            runs["suite"].append(_creates_ms(suite))
            manifest = load_run(suite).manifest
            assert manifest["quiet"]["teardown"].startswith("each iteration ends when")

    benchmark.pedantic(both, rounds=1, iterations=1)
    alone = [x for run in runs["alone"] for x in run]
    suite = [x for run in runs["suite"] for x in run]
    alone_ms, suite_ms = statistics.median(alone), statistics.median(suite)
    ratio = suite_ms / alone_ms
    low, high = _ratio_interval(alone, suite)
    benchmark.extra_info.update(
        {
            "create_p50_alone_ms": round(alone_ms, 3),
            "create_p50_suite_ms": round(suite_ms, 3),
            "n_alone": len(alone),
            "n_suite": len(suite),
            "suite_over_alone": round(ratio, 3),
            "ratio_95ci": [round(low, 3), round(high, 3)],
            "per_run_p50_ms": {
                side: [round(statistics.median(run), 3) for run in values]
                for side, values in runs.items()
            },
            "goal": f"suite within {GOAL:.0%} of alone",
        }
    )
    print(
        f"\nlifecycle create p50: alone {alone_ms:.2f} ms (n={len(alone)}), in the default suite "
        f"{suite_ms:.2f} ms (n={len(suite)}), ratio {ratio:.3f} (95 % CI {low:.3f}-{high:.3f}); "
        f"per run: {benchmark.extra_info['per_run_p50_ms']}"
    )
    assert ratio <= 1 + GOAL, f"the suite's create p50 is {ratio:.2f}x the alone figure"
