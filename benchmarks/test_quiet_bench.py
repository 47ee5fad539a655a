"""Quiet between iterations (issue 17, item 1): an operation measured inside the default suite
must read like the same operation measured alone, not like its neighbours' leftovers.

One benchmark runs, on the local provider, through the real session (as ``sandbox-bench run``
does): the lifecycle workload alone (``--workloads lifecycle --iterations 60``, the issue's
figure) and the default suite of bench.toml (``make run``: its workloads, lifecycle among
them, 20 iterations each, all iterations in one seeded random order). Each suite is bracketed
by alone runs (alone, suite, alone, suite, alone): an alone run lasts about a second and a
suite two minutes, so one alone run is a snapshot of the machine's speed, and bracketing
lets a drift over the suite's minutes weigh on both sides alike. It reports both ``create``
p50s (warmups excluded, runs of each side pooled), their ratio with a 95 % bootstrap interval
(scipy.stats.bootstrap, percentile; within-run sampling only, the spread between runs is in
``per_run_p50_ms``), and, to tell a neighbour's leftovers from the machine's state, the suite's
create p50 by the workload whose iteration ran just before (``after_workload``). It holds
the suite's p50 within GOAL of the alone figure. Both sides run with the run defaults,
``cpu_latency = "hold"`` included (bench/cpu_latency.py).

Run: ``.venv/bin/pytest benchmarks/test_quiet_bench.py --benchmark-only -p no:cacheprovider
-o addopts="" -s`` (``-s`` prints the figures). It takes about five minutes: the default
suite is most of it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tomllib
from datetime import datetime
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
#: Suites, each between two alone runs.
ROUNDS = 2


def _creates_ms(folder: Path) -> list[float]:
    return [ms for ms, _ in _creates_after(folder)]


def _creates_after(folder: Path) -> list[tuple[float, str | None]]:
    """Each measured lifecycle create (ms) with the workload of the iteration that started
    just before its own (None for the run's first); concurrency is 1, so that iteration had
    ended, teardown included, when this one began."""
    samples = sorted(load_run(folder).samples, key=lambda s: s.sample_id)
    started: dict[tuple[str, int, bool], datetime] = {}
    for s in samples:  # the earliest record of each iteration marks its start
        at, key = datetime.fromisoformat(s.started_at), (s.workload, s.iteration, s.warmup)
        started[key] = min(started.get(key, at), at)
    order = sorted(started, key=lambda key: started[key])
    before = {key: (order[i - 1][0] if i else None) for i, key in enumerate(order)}
    return [
        (s.duration_s * 1000, before[(s.workload, s.iteration, s.warmup)])
        for s in samples
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
    after: dict[str | None, list[float]] = {}

    def run_alone(index: int) -> None:
        folder = _run(tables, {"workloads": "lifecycle", "iterations": 60}, tmp_path / f"a{index}")
        runs["alone"].append(_creates_ms(folder))

    def both() -> None:
        run_alone(0)
        for round_ in range(ROUNDS):
            suite = _run(tables, {}, tmp_path / f"suite{round_}")
            pairs = _creates_after(suite)
            runs["suite"].append([ms for ms, _ in pairs])
            for ms, workload in pairs:
                after.setdefault(workload, []).append(ms)
            manifest = load_run(suite).manifest
            assert manifest["quiet"]["teardown"].startswith("each iteration ends when")
            run_alone(round_ + 1)

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
            "after_workload": {
                str(workload): {"n": len(values), "p50_ms": round(statistics.median(values), 3)}
                for workload, values in sorted(after.items(), key=lambda kv: str(kv[0]))
            },
            "goal": f"suite within {GOAL:.0%} of alone",
        }
    )
    print(
        f"\nlifecycle create p50: alone {alone_ms:.2f} ms (n={len(alone)}), in the default suite "
        f"{suite_ms:.2f} ms (n={len(suite)}), ratio {ratio:.3f} (95 % CI {low:.3f}-{high:.3f}); "
        f"per run: {benchmark.extra_info['per_run_p50_ms']}; in the suite after each workload: "
        f"{benchmark.extra_info['after_workload']}"
    )
    assert ratio <= 1 + GOAL, f"the suite's create p50 is {ratio:.2f}x the alone figure"
