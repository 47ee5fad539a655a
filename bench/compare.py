"""Compare two runs: what got faster or slower from run A to run B.

For every (provider, workload, operation) measured in both runs, the ratio of medians B/A
with a 95 % percentile-bootstrap interval and a two-sided Mann-Whitney U p-value (see
:mod:`bench.stats` for both), warmups excluded.

Verdict rule (statistical, per row):

* **slower**: the ratio's whole interval lies above 1 (B's median is longer and noise alone
  does not explain it);
* **faster**: the whole interval lies below 1;
* **unchanged**: the interval contains 1;
* **n too small**: either run has fewer than 5 successful samples (the median's rule);
* **only in a** / **only in b**: the operation was measured in one run only.

A **regression** is a slower row whose interval's lower bound is above 1 + threshold: we are
95 % confident B's median is more than ``threshold`` (default 10 %) slower than A's. A row that
is slower but might be within the threshold is reported, not counted as a regression. Failure
rates of both runs are shown beside each row but do not enter the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from bench import columnar, stats
from bench.workloads.task import register_from_manifest

VERDICTS = ("slower", "faster", "unchanged", "n too small", "only in a", "only in b")


@dataclass(frozen=True, kw_only=True, slots=True)
class ComparisonRow:
    provider: str
    workload: str
    operation: str
    n_a: int
    n_b: int
    p50_a_s: float
    p50_b_s: float
    #: Median of B over median of A, with its 95 % interval (NaN when not computed).
    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    failure_rate_a: float
    failure_rate_b: float
    verdict: str
    regression: bool


@dataclass(frozen=True, kw_only=True)
class Comparison:
    run_a: str
    run_b: str
    threshold: float
    rows: tuple[ComparisonRow, ...]
    #: Differences between the runs that make a comparison less clean (spec, host, ...).
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> tuple[ComparisonRow, ...]:
        return tuple(r for r in self.rows if r.regression)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (one column per :class:`ComparisonRow` field)."""
        columns = [f.name for f in fields(ComparisonRow)]
        return pd.DataFrame([asdict(r) for r in self.rows], columns=columns)

    def render(self, console: Console) -> None:
        table = Table(
            title=f"{self.run_b} (B) against {self.run_a} (A); regression threshold "
            f"{self.threshold:.0%}",
            title_justify="left",
        )
        for name, justify in (
            ("provider", "left"),
            ("workload", "left"),
            ("operation", "left"),
            ("p50 A", "right"),
            ("p50 B", "right"),
            ("B/A", "right"),
            ("95% CI", "right"),
            ("p", "right"),
            ("fail A/B", "right"),
            ("verdict", "left"),
        ):
            table.add_column(name, justify=justify)
        styles = {"slower": "red", "faster": "green", "unchanged": "", "n too small": "dim"}
        for r in self.rows:
            verdict = r.verdict + (" (regression)" if r.regression else "")
            style = "bold red" if r.regression else styles.get(r.verdict, "dim")
            table.add_row(
                r.provider,
                r.workload,
                r.operation,
                stats.format_duration(r.p50_a_s),
                stats.format_duration(r.p50_b_s),
                stats.format_ratio(r.ratio),
                _ci_text(r),
                _p_text(r.p_value),
                f"{stats.format_percent(r.failure_rate_a)} / "
                f"{stats.format_percent(r.failure_rate_b)}",
                f"[{style}]{verdict}[/]" if style else verdict,
            )
        console.print(table)
        for note in self.notes:
            console.print(f"note: {note}", markup=False)
        counts = {v: sum(1 for r in self.rows if r.verdict == v) for v in VERDICTS}
        summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        console.print(
            f"{summary or 'nothing to compare'}; {len(self.regressions)} regression(s) beyond "
            f"{self.threshold:.0%}",
            markup=False,
        )


def _ci_text(row: ComparisonRow) -> str:
    if not (math.isfinite(row.ci_low) and math.isfinite(row.ci_high)):
        return "–"
    return f"{stats.format_ratio(row.ci_low)}–{stats.format_ratio(row.ci_high)}"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def verdict_for(ci_low: float, ci_high: float) -> str:
    """The module docstring's statistical verdict for an interval of the ratio B/A."""
    if ci_low > 1.0:
        return "slower"
    if ci_high < 1.0:
        return "faster"
    return "unchanged"


def is_regression(ci_low: float, threshold: float) -> bool:
    return math.isfinite(ci_low) and ci_low > 1.0 + threshold


def compare_runs(a: Path, b: Path, *, threshold: float = 0.10, seed: int = 0) -> Comparison:
    """Compare run folder ``b`` against run folder ``a`` (see the module docstring)."""
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative fraction, got {threshold}")
    # From each run's Parquet copy when it matches its JSONL (bench/columnar.py).
    run_a, run_b = (columnar.load(Path(r), columns=columnar.FRAME_SOURCE_COLUMNS, save=True)
                    for r in (a, b))  # fmt: skip
    for run in (run_a, run_b):
        register_from_manifest(run.manifest)  # configured tasks: their steps' order, spans
    groups_a = stats.groups(run_a.frame())
    groups_b = stats.groups(run_b.frame())
    nan = float("nan")
    rows = []
    keys = sorted(set(groups_a) | set(groups_b), key=lambda k: stats.sort_key(*k))
    for key in keys:
        ga, gb = groups_a.get(key), groups_b.get(key)
        fr_a = _failure_rate(ga)
        fr_b = _failure_rate(gb)
        if ga is None or gb is None or (ga.n == 0 and gb.n == 0):
            if ga is None or gb is None:
                verdict = "only in b" if ga is None else "only in a"
            else:
                verdict = "n too small"
            rows.append(
                ComparisonRow(
                    provider=key[0],
                    workload=key[1],
                    operation=key[2],
                    n_a=ga.n if ga else 0,
                    n_b=gb.n if gb else 0,
                    p50_a_s=_median(ga),
                    p50_b_s=_median(gb),
                    ratio=nan,
                    ci_low=nan,
                    ci_high=nan,
                    p_value=nan,
                    failure_rate_a=fr_a,
                    failure_rate_b=fr_b,
                    verdict=verdict,
                    regression=False,
                )
            )
            continue
        result = stats.compare_samples(
            ga.ok_sorted_s, gb.ok_sorted_s, seed=stats.group_seed(seed, "runs", *key)
        )
        if result.computed:
            verdict = verdict_for(result.ci_low, result.ci_high)
            regression = verdict == "slower" and is_regression(result.ci_low, threshold)
        else:
            verdict, regression = "n too small", False
        rows.append(
            ComparisonRow(
                provider=key[0],
                workload=key[1],
                operation=key[2],
                n_a=result.n_a,
                n_b=result.n_b,
                p50_a_s=_median(ga),
                p50_b_s=_median(gb),
                ratio=result.ratio,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                p_value=result.p_value,
                failure_rate_a=fr_a,
                failure_rate_b=fr_b,
                verdict=verdict,
                regression=regression,
            )
        )
    return Comparison(
        run_a=run_a.run_id,
        run_b=run_b.run_id,
        threshold=threshold,
        rows=tuple(rows),
        notes=tuple(_notes(run_a.manifest, run_b.manifest)),
    )


def _median(group: stats.Group | None) -> float:
    """The median under the stats rule: NaN below 5 successful samples."""
    if group is None or not stats.supports(group.n, 50):
        return float("nan")
    return stats.percentile(group.ok_sorted_s, 50)


def _failure_rate(group: stats.Group | None) -> float:
    if group is None:
        return float("nan")
    attempts = group.n + group.failures
    return group.failures / attempts if attempts else float("nan")


def _notes(a: dict, b: dict) -> list[str]:
    notes = []
    for name, get in (
        ("spec", lambda m: m.get("spec")),
        ("client host", lambda m: (m.get("client") or {}).get("hostname")),
        ("client location", lambda m: (m.get("client") or {}).get("location")),
        ("harness version", lambda m: (m.get("harness") or {}).get("version")),
        ("connection mode", lambda m: m.get("connection_mode")),
    ):
        if get(a) != get(b):
            notes.append(f"the runs differ in {name}: A {get(a)!r}, B {get(b)!r}")
    for run in (a, b):
        if run.get("status") != "completed":
            notes.append(f"run {run.get('run_id')} is {run.get('status')!r}, not completed")
    return notes
