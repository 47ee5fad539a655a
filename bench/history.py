"""History: how each provider's latency moved over many runs, and where it changed.

``sandbox-bench history RUN...|--all`` reads any number of runs (e.g. a daily scheduled run
per location) through their per-run summary caches (bench/columnar.py) and writes
``history.html``, ``history.md``, ``history.csv`` (one row per series and run),
``changes.csv`` and ``figures/``.

**Series.** A series is one (provider, workload, operation, location, SDK versions). The
location is the sample's own, else its run's ``client.location``; the SDK versions are the
provider's pinned packages as the run's manifest recorded them. Runs from different locations
or with different SDK versions are therefore never pooled into one line: a new SDK version
starts a new series (drawn with its own marker, listed in the notes), and no change is
flagged across that boundary. Other differences that may move numbers (harness version, spec,
connection mode, client host) do not split series; they are listed as notes at the run where
they happened. Runs still ``running`` are left out (their numbers are partial and growing).

**Points.** Each run contributes, per series, the statistics of bench/stats.py for its
samples (warmups excluded): p50 and p95 with their 95 % intervals, n and failures. A
statistic the run cannot support (n too small) is a gap.

**The change rule** (for p50, and for p95 where its interval is the distribution-free one,
n >= 72): in a series whose points are in run order, a change is flagged at run *i* when

1. *separation*: the intervals of the :data:`WINDOW` (2) points before *i* and of the
   ``WINDOW`` points from *i* on do not overlap: every interval before lies wholly below
   every interval after (slower), or wholly above (faster); and
2. *size*: the median of the after-window's estimates over the median of the before-window's
   is at least 1 + :data:`THRESHOLD` (10 %), or at most 1 / (1 + ``THRESHOLD``).

Where neighbouring positions both qualify (a change spread over runs), the one with the
largest ratio is flagged. A change therefore needs ``WINDOW`` runs at the new level to be
flagged: with the default, one day of a daily schedule late, and never from one odd run.

*Why this guards against multiple comparisons.* A history of 50 runs and 100 series makes
thousands of comparisons; two 95 % intervals of the same distribution fail to overlap about
0.5 % of the time, which would flag dozens of false changes. Requiring four intervals (two
before, two after) to separate in one direction, and the estimates to differ by 10 %, makes a
false flag rare: a seeded simulation (tests/test_history.py) of 300 series of 40 runs with no
change (lognormal samples, n = 30 to 300 per run) flags none. The price is power: a change
smaller than the runs' interval widths, or one that lasts a single run, is not flagged (it is
still drawn); in the same simulation (sigma 0.5, 100 series each) a doubling was found in all
series at n = 100 a run and in about two thirds at n = 30, a 1.5x step at n = 100 in 78 %, a
1.1x step at n = 1000 in 41 %.
Interval widths describe sampling noise within a run only: day-to-day variation of a service
beyond that (a busier region on Mondays) is real and can be flagged; raise ``--window`` or
``--threshold`` to ask for more persistent or larger changes.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import math
import multiprocessing
import os
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench import columnar
from bench.stats import order_statistic_ranks

WINDOW = 2
THRESHOLD = 0.10
#: Statistics a change can be flagged on, with the columns of their estimate and interval.
FLAGGED: dict[str, tuple[str, str, str]] = {
    "p50": ("p50_s", "p50_ci_low_s", "p50_ci_high_s"),
    "p95": ("p95_s", "p95_ci_low_s", "p95_ci_high_s"),
}
#: Bytes of JSONL to read (runs without a usable cache) from which they are read by worker
#: processes in parallel: below it, starting the workers (each imports pandas, scipy and
#: pyarrow) costs more than it saves.
PARALLEL_FROM_BYTES = 64 * 2**20


@dataclass(frozen=True, kw_only=True)
class RunEntry:
    """One run of the history, as its manifest describes it."""

    run_id: str
    folder: Path
    started_at: datetime
    status: str
    location: str
    #: provider -> "package version, ..." ("" when the provider has no SDK).
    sdks: Mapping[str, str]
    harness: str
    host: str
    spec: str
    connection: str
    samples: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, order=True)
class SeriesKey:
    provider: str
    workload: str
    operation: str
    location: str
    sdk: str

    @property
    def label(self) -> str:
        where = f" @ {self.location}" if self.location else ""
        sdk = f" ({self.sdk})" if self.sdk else ""
        return f"{self.provider} {self.workload}/{self.operation}{where}{sdk}"


@dataclass(frozen=True, kw_only=True)
class Point:
    run_id: str
    started_at: datetime
    n: int
    attempts: int
    failures: int
    values: Mapping[str, float]  # the summary's p50_s, p50_ci_low_s, ... for this run

    def stat(self, name: str) -> tuple[float, float, float]:
        estimate, low, high = FLAGGED[name]
        return self.values[estimate], self.values[low], self.values[high]


@dataclass(frozen=True, kw_only=True)
class Change:
    key: SeriesKey
    statistic: str
    #: The first run at the new level.
    run_id: str
    started_at: datetime
    direction: str  # "slower" or "faster"
    ratio: float
    before: tuple[Point, ...]
    after: tuple[Point, ...]

    def describe(self) -> str:
        from bench.stats import format_duration

        def level(points: Sequence[Point]) -> str:
            return ", ".join(format_duration(p.stat(self.statistic)[0]) for p in points)

        return (
            f"{self.key.label}: {self.statistic} {self.direction} from "
            f"{self.started_at:%Y-%m-%d %H:%M} (run {self.run_id}): {self.ratio:.2f}× "
            f"({level(self.before)} → {level(self.after)})"
        )


@dataclass(frozen=True, kw_only=True)
class History:
    runs: tuple[RunEntry, ...]
    series: Mapping[SeriesKey, tuple[Point, ...]]
    changes: tuple[Change, ...]
    notes: tuple[str, ...]
    skipped: tuple[str, ...] = ()
    window: int = WINDOW
    threshold: float = THRESHOLD
    #: run_id -> where its summary came from ("summary cache", "cache", "arrow", "load_run").
    sources: Mapping[str, str] = field(default_factory=dict)

    def points_frame(self) -> pd.DataFrame:
        """history.csv: one row per series and run."""
        rows = []
        for key, points in self.series.items():
            for p in points:
                rows.append(
                    {
                        "provider": key.provider,
                        "workload": key.workload,
                        "operation": key.operation,
                        "location": key.location,
                        "sdk": key.sdk,
                        "run_id": p.run_id,
                        "started_at": p.started_at.isoformat(),
                        "n": p.n,
                        "attempts": p.attempts,
                        "failures": p.failures,
                        **{k: p.values[k] for col in FLAGGED.values() for k in col},
                    }
                )
        columns = ["provider", "workload", "operation", "location", "sdk", "run_id",
                   "started_at", "n", "attempts", "failures",
                   *[k for col in FLAGGED.values() for k in col]]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)

    def changes_frame(self) -> pd.DataFrame:
        """changes.csv: one row per flagged change."""
        rows = [
            {
                "provider": c.key.provider,
                "workload": c.key.workload,
                "operation": c.key.operation,
                "location": c.key.location,
                "sdk": c.key.sdk,
                "statistic": c.statistic,
                "direction": c.direction,
                "ratio": c.ratio,
                "run_id": c.run_id,
                "started_at": c.started_at.isoformat(),
                "before_runs": " ".join(p.run_id for p in c.before),
                "after_runs": " ".join(p.run_id for p in c.after),
            }
            for c in self.changes
        ]
        columns = [
            *("provider", "workload", "operation", "location", "sdk", "statistic"),
            *("direction", "ratio", "run_id", "started_at", "before_runs", "after_runs"),
        ]
        return pd.DataFrame(rows, columns=columns)


# -- the rule -----------------------------------------------------------------------------------


def detect_changes(
    intervals: Sequence[tuple[float, float, float]],
    *,
    window: int = WINDOW,
    threshold: float = THRESHOLD,
) -> list[tuple[int, str, float]]:
    """Positions in ``intervals`` (estimate, low, high per run, in run order; NaN where not
    reported) where the change rule of the module docstring flags a change: (index of the
    first run at the new level, "slower" or "faster", ratio after/before)."""
    if window < 1:
        raise ValueError("window must be at least 1")
    valid = [i for i, (e, lo, hi) in enumerate(intervals)
             if all(math.isfinite(v) for v in (e, lo, hi)) and e > 0]  # fmt: skip
    limit = math.log1p(threshold)
    candidates: list[tuple[int, str, float]] = []
    for j in range(window, len(valid) - window + 1):
        before = [intervals[i] for i in valid[j - window : j]]
        after = [intervals[i] for i in valid[j : j + window]]
        if max(b[2] for b in before) < min(a[1] for a in after):
            direction = "slower"
        elif min(b[1] for b in before) > max(a[2] for a in after):
            direction = "faster"
        else:
            continue
        ratio = statistics.median(a[0] for a in after) / statistics.median(b[0] for b in before)
        if abs(math.log(ratio)) + 1e-12 < limit:
            continue
        candidates.append((j, direction, ratio))
    # Neighbouring positions flagged in the same direction are one change spread over runs:
    # keep the largest of each such cluster.
    flagged: list[tuple[int, str, float]] = []
    previous: tuple[int, str] | None = None
    for j, direction, ratio in candidates:
        if previous == (j - 1, direction):
            if abs(math.log(ratio)) > abs(math.log(flagged[-1][2])):
                flagged[-1] = (j, direction, ratio)
        else:
            flagged.append((j, direction, ratio))
        previous = (j, direction)
    return [(valid[j], direction, ratio) for j, direction, ratio in flagged]


# -- building -----------------------------------------------------------------------------------


def _started(manifest: Mapping[str, Any], run_id: str) -> datetime:
    text = manifest.get("started_at")
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        except ValueError:
            pass
    try:  # the run id starts with its UTC start time
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _sdks(manifest: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for pid, entry in (manifest.get("providers") or {}).items():
        versions = ((entry or {}).get("environment") or {}).get("sdk_versions") or {}
        out[str(pid)] = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
    return out


def _entry(summary: columnar.RunSummary) -> RunEntry:
    m = summary.manifest
    run_id = str(m.get("run_id"))
    client = m.get("client") or {}
    spec = m.get("spec") or {}
    return RunEntry(
        run_id=run_id,
        folder=summary.folder,
        started_at=_started(m, run_id),
        status=str(m.get("status") or "?"),
        location=columnar.run_location(m),
        sdks=_sdks(m),
        harness=str((m.get("harness") or {}).get("version") or "?"),
        host=str(client.get("hostname") or "?"),
        spec=", ".join(f"{k} {v}" for k, v in sorted(spec.items()) if v is not None),
        connection=str(m.get("connection_mode") or ""),
        samples=summary.samples,
        warnings=tuple(summary.warnings),
    )


def _summarize(folder: Path, include_warmups: bool, seed: int) -> columnar.RunSummary:
    """One run's summary by location (a worker process's job; also run in-process)."""
    return columnar.load_summary(
        folder, include_warmups=include_warmups, seed=seed, by_location=True
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _summaries(
    folders: Sequence[Path],
    *,
    include_warmups: bool,
    seed: int,
    jobs: int,
    progress: Callable[[str], None] | None,
) -> list[columnar.RunSummary]:
    """Every run's summary: from its cache where that matches, the others computed (in
    ``jobs`` worker processes when there are several)."""
    out: dict[int, columnar.RunSummary] = {}
    missing = []
    for i, folder in enumerate(folders):
        cached = columnar.cached_summary(
            folder, include_warmups=include_warmups, seed=seed, by_location=True
        )
        if cached is not None:
            out[i] = cached
        else:
            missing.append(i)
    if progress is not None and missing:
        progress(f"history: {len(out)} run(s) from their caches, {len(missing)} to read")
    to_read = sum(_size(columnar.samples_path(folders[i])) for i in missing)
    if jobs > 1 and len(missing) > 1 and to_read >= PARALLEL_FROM_BYTES:
        # Spawned, not forked: pyarrow's thread pools do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {
                pool.submit(_summarize, folders[i], include_warmups, seed): i for i in missing
            }
            for future in concurrent.futures.as_completed(futures):
                out[futures[future]] = future.result()
    else:
        for i in missing:
            out[i] = _summarize(folders[i], include_warmups, seed)
    return [out[i] for i in range(len(folders))]


def build_history(
    folders: Iterable[Path],
    *,
    window: int = WINDOW,
    threshold: float = THRESHOLD,
    include_warmups: bool = False,
    seed: int = 0,
    jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> History:
    """The history of ``folders`` (see the module docstring). Raises what
    :func:`bench.store.load_run` raises for a run it refuses, and ValueError for a run given
    twice or no run to show."""
    from bench.workloads.task import register_from_manifest

    folders = [Path(f) for f in folders]
    if not folders:
        raise ValueError("no runs given")
    jobs = jobs if jobs is not None else min(2, os.cpu_count() or 1)
    summaries = _summaries(
        folders, include_warmups=include_warmups, seed=seed, jobs=jobs, progress=progress
    )
    entries: list[tuple[RunEntry, pd.DataFrame]] = []
    skipped = []
    seen: set[str] = set()
    for summary in summaries:
        entry = _entry(summary)
        if entry.run_id in seen:
            raise ValueError(f"run {entry.run_id} given twice")
        seen.add(entry.run_id)
        if entry.status == "running":
            skipped.append(f"{entry.run_id}: still running (its numbers are partial)")
            continue
        register_from_manifest(summary.manifest)
        entries.append((entry, summary.summary))
    if not entries:
        raise ValueError("no finished run to show: " + "; ".join(skipped))
    entries.sort(key=lambda e: (e[0].started_at, e[0].run_id))
    series: dict[SeriesKey, list[Point]] = {}
    for entry, summary in entries:
        for row in summary.to_dict("records"):
            if int(row["n"]) == 0 and int(row["attempts"]) == 0:
                continue  # unsupported or skipped only: nothing measured
            key = SeriesKey(
                provider=str(row["provider"]),
                workload=str(row["workload"]),
                operation=str(row["operation"]),
                location=str(row["location"] or ""),
                sdk=entry.sdks.get(str(row["provider"]), ""),
            )
            series.setdefault(key, []).append(
                Point(
                    run_id=entry.run_id,
                    started_at=entry.started_at,
                    n=int(row["n"]),
                    attempts=int(row["attempts"]),
                    failures=int(row["failures"]),
                    values={k: float(row[k]) for col in FLAGGED.values() for k in col},
                )
            )
    from bench.stats import sort_key

    ordered = dict(
        sorted(
            ((k, tuple(v)) for k, v in series.items()),
            key=lambda kv: (sort_key(kv[0].provider, kv[0].workload, kv[0].operation),
                            kv[0].location, kv[0].sdk, kv[1][0].started_at),
        )
    )  # fmt: skip
    changes = []
    for key, points in ordered.items():
        for name in FLAGGED:
            intervals = [_interval_of(p, name) for p in points]
            for index, direction, ratio in detect_changes(
                intervals, window=window, threshold=threshold
            ):
                valid = [i for i, v in enumerate(intervals) if math.isfinite(v[0])]
                at = valid.index(index)
                changes.append(
                    Change(
                        key=key,
                        statistic=name,
                        run_id=points[index].run_id,
                        started_at=points[index].started_at,
                        direction=direction,
                        ratio=ratio,
                        before=tuple(points[i] for i in valid[max(0, at - window) : at]),
                        after=tuple(points[i] for i in valid[at : at + window]),
                    )
                )
    changes.sort(key=lambda c: (c.started_at, c.key))
    return History(
        runs=tuple(e for e, _ in entries),
        series=ordered,
        changes=tuple(changes),
        notes=tuple(_notes([e for e, _ in entries], ordered)),
        skipped=tuple(skipped),
        window=window,
        threshold=threshold,
        sources={s.manifest.get("run_id"): s.source for s in summaries},
    )


def _interval_of(point: Point, name: str) -> tuple[float, float, float]:
    estimate, low, high = point.stat(name)
    if name == "p95" and order_statistic_ranks(point.n, 0.95) is None:
        # Below 72 samples the p95 interval is a bootstrap one, which under-covers: shown,
        # never used to flag a change.
        return (math.nan, math.nan, math.nan)
    return estimate, low, high


def _notes(runs: Sequence[RunEntry], series: Mapping[SeriesKey, Sequence[Point]]) -> list[str]:
    """What differs between runs: SDK versions (separate series), locations (separate
    series), and what may move numbers without splitting a series."""
    notes = []
    locations = sorted({r.location or "(not recorded)" for r in runs})
    if len(locations) > 1:
        notes.append(
            f"runs from {len(locations)} locations ({', '.join(locations)}): each location is "
            "its own series, never pooled"
        )
    by_provider: dict[str, list[tuple[RunEntry, str]]] = {}
    for run in runs:
        for provider, sdk in run.sdks.items():
            by_provider.setdefault(provider, []).append((run, sdk))
    for provider, seen in sorted(by_provider.items()):
        for (_, old), (run, new) in itertools.pairwise(seen):
            if old != new:
                notes.append(
                    f"{provider}: SDK {old or 'none'} → {new or 'none'} from run {run.run_id} "
                    f"({run.started_at:%Y-%m-%d}); a new series starts there and no change is "
                    "flagged across it"
                )
    for name, get in (
        ("harness version", lambda r: r.harness),
        ("sandbox spec", lambda r: r.spec),
        ("connection mode", lambda r: r.connection),
        ("client host", lambda r: r.host),
    ):
        by_location: dict[str, list[RunEntry]] = {}
        for run in runs:
            by_location.setdefault(run.location, []).append(run)
        for location, group in sorted(by_location.items()):
            for old, new in itertools.pairwise(group):
                if get(old) != get(new):
                    where = f" at {location}" if location else ""
                    notes.append(
                        f"{name}{where} changed from run {new.run_id} "
                        f"({new.started_at:%Y-%m-%d}): {get(old)} → {get(new)} (same series; "
                        "read changes there with this in mind)"
                    )
    return notes


__all__ = [
    "THRESHOLD",
    "WINDOW",
    "Change",
    "History",
    "Point",
    "RunEntry",
    "SeriesKey",
    "build_history",
    "detect_changes",
]
