"""The history (``sandbox-bench history --all``) over 50 runs of 200,000 samples each.

Goals on a 2-core machine (issue 17): the first history, which parses every run's JSONL and
writes its Parquet copy and summary cache, in under 60 s and under 2 GiB; the second, from
those caches, in under 10 s. Each history is built by ``sandbox-bench history`` in a fresh
process (its start and imports included); runs without a cache are read by two worker
processes (bench/history.py), so the peak memory is the command's own resident set plus that
of its two workers at their largest (``RUSAGE_CHILDREN`` gives the largest child): an upper
bound of what was resident at once. CPU time (the command's and its workers') is reported
beside the wall time. The 50 synthetic runs (a day apart; e2b twice as slow from day 25) are
written once per session and are not timed; the history must flag that change.

Run: ``.venv/bin/pytest benchmarks/test_history_bench.py --benchmark-only -o addopts="" -p
no:cacheprovider -s``
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.store import samples_path, write_json_atomic  # noqa: E402 - needs the path set above
from tests.synthetic import write_large_run  # noqa: E402 - needs the path set above

N_RUNS = 50
PER_RUN = 200_000
CHANGE_DAY = 25
FIRST_GOAL_S = 60.0
FIRST_GOAL_PEAK_BYTES = 2 * 1024**3
SECOND_GOAL_S = 10.0
WORKERS = 2

# Writing 50 runs of 200,000 samples takes minutes before anything is timed.
pytestmark = pytest.mark.timeout(3600)

CHILD = """
import json, resource, sys, time
t0 = time.perf_counter()
from bench.cli import main
code = main(["history", "--all", "--results", sys.argv[1], "--out", sys.argv[2]])
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({
    "code": code,
    "elapsed_s": time.perf_counter() - t0,
    "cpu_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    "peak_rss_bytes": me.ru_maxrss * 1024,
    "worker_peak_rss_bytes": kids.ru_maxrss * 1024,
}))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    start = datetime(2026, 12, 1, 6, tzinfo=UTC)
    for day in range(N_RUNS):
        moment = start + timedelta(days=day)
        run_id = f"{moment:%Y%m%dT%H%M%SZ}-{day:06x}"
        folder = write_large_run(root, PER_RUN, run_id, seed=day)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["started_at"] = moment.isoformat()
        write_json_atomic(folder / "manifest.json", manifest)
        if day >= CHANGE_DAY:  # e2b twice as slow from here on
            _scale(samples_path(folder), "e2b", 2.0)
    return root


def _scale(path: Path, provider: str, factor: float) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        record = json.loads(line)
        if record["provider"] == provider and record["duration_s"] is not None:
            record["duration_s"] *= factor
        out.append(json.dumps(record, separators=(",", ":")))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _history(results: Path, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(results), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=1200,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    return result


def _record(benchmark, result: dict, label: str, prefix: str) -> int:
    peak = result["peak_rss_bytes"] + WORKERS * result["worker_peak_rss_bytes"]
    benchmark.extra_info.update(runs=N_RUNS, samples=N_RUNS * PER_RUN)
    benchmark.extra_info.update(
        {
            f"{prefix}_elapsed_s": round(result["elapsed_s"], 2),
            f"{prefix}_cpu_s": round(result["cpu_s"], 2),
            f"{prefix}_peak_rss_mib": round(result["peak_rss_bytes"] / 2**20),
            f"{prefix}_worker_peak_rss_mib": round(result["worker_peak_rss_bytes"] / 2**20),
        }
    )
    print(
        f"\nhistory of {N_RUNS} runs × {PER_RUN:,} samples ({label}): "
        f"{result['elapsed_s']:.1f} s (CPU {result['cpu_s']:.1f} s), peak RSS "
        f"{result['peak_rss_bytes'] / 2**20:,.0f} MiB + {WORKERS} × "
        f"{result['worker_peak_rss_bytes'] / 2**20:,.0f} MiB workers"
    )
    return peak


def test_history_of_fifty_runs_first_from_jsonl_then_from_the_caches(benchmark, results, tmp_path):
    out = tmp_path / "history"
    first = _history(results, out)
    peak = _record(benchmark, first, "first: JSONL parsed, caches written", "first")
    with (out / "changes.csv").open(encoding="utf-8") as fh:
        changes = list(csv.DictReader(fh))
    assert changes and {c["provider"] for c in changes} == {"e2b"}
    day = (datetime(2026, 12, 1, 6, tzinfo=UTC) + timedelta(days=CHANGE_DAY)).isoformat()
    assert {c["started_at"] for c in changes} == {day}
    assert np.median([float(c["ratio"]) for c in changes]) == pytest.approx(2.0, rel=0.1)

    measured: list[dict] = []
    benchmark.pedantic(
        lambda: measured.append(_history(results, tmp_path / "again")), rounds=1, iterations=1
    )
    second = measured[-1]
    _record(benchmark, second, "second: from the caches", "second")
    assert (tmp_path / "again" / "changes.csv").read_text() == (out / "changes.csv").read_text()
    assert first["elapsed_s"] < FIRST_GOAL_S
    assert peak < FIRST_GOAL_PEAK_BYTES
    assert second["elapsed_s"] < SECOND_GOAL_S
