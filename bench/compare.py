"""Compare two runs: what got faster or slower from run A to run B, and what else differs.

For every (provider, workload, operation) measured in both runs, the ratio of medians B/A
with a 95 % percentile-bootstrap interval and a two-sided Mann-Whitney U p-value (see
:mod:`bench.stats` for both), warmups excluded.

Verdict rule (statistical, per row):

* **slower**: the ratio's whole interval lies above 1 (B's median is longer and noise alone
  does not explain it);
* **faster**: the whole interval lies below 1;
* **unchanged**: the interval contains 1;
* **n too small**: either run has fewer than ``stats.MIN_N_RATIO`` (10) successful samples
  (below that the ratio's bootstrap interval covers too rarely; the medians themselves are
  shown from ``stats.MIN_N_ANY`` (5) samples);
* **only in A** / **only in B**: the operation was measured in one run only.

A row is **beyond the threshold** when it is slower and its interval's lower bound is above
1 + threshold: we are 95 % confident B's median is more than ``threshold`` (default 10 %)
slower than A's. Failure rates of both runs are shown beside each row but do not enter the
verdict.

Before judging, the two manifests are compared (:func:`differences`) for everything that can
move latency besides the providers themselves: the plan (concurrency, warmup, timeout, where
the plan ran), the sandbox spec, workload parameters, provider settings and environment
(connection mode, endpoint, SDK versions), the client (host, location, Python, kernel, CPUs)
and the harness (version and commit). Each difference names the rows it can move (every row,
one provider's, or one workload's). A row beyond the threshold is a **regression** only when
no difference applies to it, or when the caller forces the judgement (``force``; the row then
carries the differences that apply to it). Otherwise it is reported as slower, *not judged*.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.text import Text

from bench import columnar, stats
from bench.terminal import Column, Grid, print_tables
from bench.workloads import registry
from bench.workloads.task import register_from_manifest

VERDICTS = ("slower", "faster", "unchanged", "n too small", "only in A", "only in B")


@dataclass(frozen=True, kw_only=True, slots=True)
class Difference:
    """One way the two runs differ that can move latency."""

    #: A few words: the label a forced row carries ("concurrency", "e2b SDK e2b").
    label: str
    #: The whole sentence, in plain words.
    text: str
    #: The rows it can move: None for every row, else this provider's / this workload's.
    provider: str | None = None
    workload: str | None = None

    def applies(self, provider: str, workload: str) -> bool:
        return (self.provider is None or self.provider == provider) and (
            self.workload is None or self.workload == workload
        )


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
    #: Slower beyond the threshold, whatever else differs between the runs.
    beyond_threshold: bool
    #: Labels of the differences between the runs that can move this row.
    differences: tuple[str, ...]
    #: Beyond the threshold and judged: no difference applies, or the judgement was forced.
    regression: bool


@dataclass(frozen=True, kw_only=True)
class Comparison:
    run_a: str
    run_b: str
    threshold: float
    rows: tuple[ComparisonRow, ...]
    #: What differs between the runs' plans and environments that can move latency.
    differences: tuple[Difference, ...] = ()
    #: Other facts worth knowing that do not move latency (a run not completed, fewer
    #: iterations).
    notes: tuple[str, ...] = ()
    #: The judgement was asked for despite the differences (``compare --force``).
    forced: bool = False

    @property
    def regressions(self) -> tuple[ComparisonRow, ...]:
        return tuple(r for r in self.rows if r.regression)

    @property
    def not_judged(self) -> tuple[ComparisonRow, ...]:
        """Rows beyond the threshold that a difference between the runs may explain."""
        return tuple(r for r in self.rows if r.beyond_threshold and not r.regression)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (one column per :class:`ComparisonRow` field)."""
        columns = [f.name for f in fields(ComparisonRow)]
        return pd.DataFrame([self.record(r) for r in self.rows], columns=columns)

    @staticmethod
    def record(row: ComparisonRow) -> dict[str, Any]:
        return {**asdict(row), "differences": list(row.differences)}

    def to_dict(self) -> dict[str, Any]:
        """Everything, for ``compare --format json``."""
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "threshold": self.threshold,
            "forced": self.forced,
            "differences": [asdict(d) for d in self.differences],
            "notes": list(self.notes),
            "rows": [self.record(r) for r in self.rows],
            "regressions": len(self.regressions),
            "not_judged": len(self.not_judged),
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """The one summary line."""
        counts = {v: sum(1 for r in self.rows if r.verdict == v) for v in VERDICTS}
        text = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "nothing to compare"
        text += f"; {len(self.regressions)} regression(s) beyond {self.threshold:.0%}"
        if self.not_judged:
            labels = _unique(label for r in self.not_judged for label in r.differences)
            why = ", ".join(labels) if len(labels) <= 2 else f"{len(labels)} ways listed above"
            text += (
                f"; {len(self.not_judged)} more slower beyond {self.threshold:.0%} not judged "
                f"(the runs differ in {why}; --force judges them)"
            )
        elif self.forced and any(r.differences for r in self.regressions):
            text += " (--force: judged despite the differences)"
        return text

    def render(self, console: Console, *, everything: bool = False) -> None:
        """The differences, one table per workload (rows that changed, or ``everything``),
        and the summary line, on ``console``."""
        console.print(
            Text(
                f"B: {self.run_b} against A: {self.run_a}; regression threshold "
                f"{self.threshold:.0%}",
                style="bold",
            )
        )
        for line in self.difference_lines():
            console.print(Text(line), overflow="fold")
        for note in self.notes:
            console.print(Text(f"note: {note}"), overflow="fold")
        hidden, grids = 0, []
        for workload, rows in _by_workload(self.rows):
            shown = [r for r in rows if everything or r.verdict != "unchanged"]
            hidden += len(rows) - len(shown)
            if shown:
                grids.append(self._grid(workload, shown))
        if grids:
            console.print()
            print_tables(console, grids)
        if hidden:
            console.print(Text(f"{hidden} unchanged row(s) not listed (--all lists them)"))
        console.print(Text(self.summary()), overflow="fold")  # wraps at spaces to fit

    def difference_lines(self) -> list[str]:
        if not self.differences:
            return [
                "The runs' plans and environments match in everything that can move latency "
                "(concurrency, spec, workload parameters, provider settings, SDK versions, "
                "client, connection mode, harness)."
            ]
        verb = "judged anyway (--force)" if self.forced else "not judged as regressions"
        lines = [f"The runs differ in ways that can move latency; the rows they touch are {verb}:"]
        lines += [f"  ({k}) {d.text}" for k, d in enumerate(self.differences, 1)]
        return lines

    def _grid(self, workload: str, rows: Sequence[ComparisonRow]) -> Grid:
        labelled = any(r.differences for r in rows)
        columns = [
            Column(name="operation", abbreviate=True),
            Column(name="provider"),
            Column(name="p50 A", justify="right", wrap=False),
            Column(name="p50 B", justify="right", wrap=False),
            Column(name="B/A", justify="right", wrap=False),
            Column(name="95% CI", justify="right", wrap=False),
            Column(name="p", justify="right", wrap=False, optional=2),
            Column(name="fail A/B", justify="right", wrap=False, optional=1),
            Column(name="verdict"),
        ]
        if labelled:
            columns.append(Column(name="differs", wrap=True))
        number: dict[str, str] = {}
        for k, d in enumerate(self.differences, 1):
            number.setdefault(d.label, str(k))
        cells, styles = [], []
        for r in rows:
            row = [
                r.operation,
                r.provider,
                stats.format_duration(r.p50_a_s),
                stats.format_duration(r.p50_b_s),
                stats.format_ratio(r.ratio),
                _ci_text(r),
                _p_text(r.p_value),
                f"{_percent(r.failure_rate_a)} / {_percent(r.failure_rate_b)}",
                self._verdict_text(r),
            ]
            if labelled:
                row.append(" ".join(_unique(number[label] for label in r.differences)) or "–")
            cells.append(tuple(row))
            styles.append(self._style(r))
        notes: tuple[str, ...] = ()
        if any(r.beyond_threshold and not r.regression for r in rows):
            notes = ("not judged: slower beyond the threshold, but a difference between the "
                     "runs listed above may explain it",)  # fmt: skip
        if labelled:
            notes += ("differs: the numbers of the differences listed above that can move "
                      "the row",)  # fmt: skip
        return Grid(
            title=workload, columns=tuple(columns), rows=tuple(cells), styles=tuple(styles),
            notes=notes,
        )  # fmt: skip

    @staticmethod
    def _verdict_text(row: ComparisonRow) -> str:
        if row.regression:
            return "REGRESSION"
        if row.beyond_threshold:
            return "not judged"
        return row.verdict

    @staticmethod
    def _style(row: ComparisonRow) -> str:
        if row.regression:
            return "bold red"
        return {"slower": "red", "faster": "green", "unchanged": ""}.get(row.verdict, "dim")


def _by_workload(rows: Sequence[ComparisonRow]) -> Iterator[tuple[str, list[ComparisonRow]]]:
    """Rows per workload (registry order), each ordered by operation, then provider."""
    workloads: dict[str, list[ComparisonRow]] = {}
    for r in rows:
        workloads.setdefault(r.workload, []).append(r)
    for workload in sorted(workloads, key=registry.workload_rank):
        yield (
            workload,
            sorted(
                workloads[workload],
                key=lambda r: (registry.operation_rank(workload, r.operation), r.provider),
            ),
        )


def _unique(items: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _percent(fraction: float) -> str:
    return stats.format_percent(fraction).replace(" ", "")


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
    """Whether an interval with this lower bound is beyond the threshold."""
    return math.isfinite(ci_low) and ci_low > 1.0 + threshold


def compare_runs(
    a: Path, b: Path, *, threshold: float = 0.10, seed: int = 0, force: bool = False
) -> Comparison:
    """Compare run folder ``b`` against run folder ``a`` (see the module docstring)."""
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative fraction, got {threshold}")
    # From each run's Parquet copy when it matches its JSONL (bench/columnar.py).
    run_a, run_b = (columnar.load(Path(r), columns=columnar.FRAME_SOURCE_COLUMNS, save=True)
                    for r in (a, b))  # fmt: skip
    for run in (run_a, run_b):
        register_from_manifest(run.manifest)  # configured tasks: their steps' order, spans
    found = tuple(differences(run_a.manifest, run_b.manifest))
    groups_a = stats.groups(run_a.frame())
    groups_b = stats.groups(run_b.frame())
    nan = float("nan")
    rows = []
    keys = sorted(set(groups_a) | set(groups_b), key=lambda k: stats.sort_key(*k))
    for key in keys:
        provider, workload, operation = key
        ga, gb = groups_a.get(key), groups_b.get(key)
        labels = tuple(d.label for d in found if d.applies(provider, workload))
        common = {
            "provider": provider,
            "workload": workload,
            "operation": operation,
            "p50_a_s": _median(ga),
            "p50_b_s": _median(gb),
            "failure_rate_a": _failure_rate(ga),
            "failure_rate_b": _failure_rate(gb),
            "differences": labels,
        }
        if ga is None or gb is None or (ga.n == 0 and gb.n == 0):
            if ga is None or gb is None:
                verdict = "only in B" if ga is None else "only in A"
            else:
                verdict = "n too small"
            rows.append(
                ComparisonRow(
                    **common,
                    n_a=ga.n if ga else 0,
                    n_b=gb.n if gb else 0,
                    ratio=nan,
                    ci_low=nan,
                    ci_high=nan,
                    p_value=nan,
                    verdict=verdict,
                    beyond_threshold=False,
                    regression=False,
                )
            )
            continue
        result = stats.compare_samples(
            ga.ok_sorted_s, gb.ok_sorted_s, seed=stats.group_seed(seed, "runs", *key)
        )
        if result.computed:
            verdict = verdict_for(result.ci_low, result.ci_high)
            beyond = verdict == "slower" and is_regression(result.ci_low, threshold)
        else:
            verdict, beyond = "n too small", False
        rows.append(
            ComparisonRow(
                **common,
                n_a=result.n_a,
                n_b=result.n_b,
                ratio=result.ratio,
                ci_low=result.ci_low,
                ci_high=result.ci_high,
                p_value=result.p_value,
                verdict=verdict,
                beyond_threshold=beyond,
                regression=beyond and (force or not labels),
            )
        )
    return Comparison(
        run_a=run_a.run_id,
        run_b=run_b.run_id,
        threshold=threshold,
        rows=tuple(rows),
        differences=found,
        notes=tuple(_notes(run_a.manifest, run_b.manifest)),
        forced=force,
    )


def _median(group: stats.Group | None) -> float:
    """The median under the stats rule: NaN below ``stats.MIN_N_ANY`` successful samples."""
    if group is None or not stats.supports(group.n, 50):
        return float("nan")
    return stats.percentile(group.ok_sorted_s, 50)


def _failure_rate(group: stats.Group | None) -> float:
    if group is None:
        return float("nan")
    attempts = group.n + group.failures
    return group.failures / attempts if attempts else float("nan")


# -- what differs between two manifests --------------------------------------------------------

#: Plain names of spec keys (providers/base.py SandboxSpec); others are shown by their key.
SPEC_NAMES = {
    "cpus": "CPUs",
    "memory_mb": "memory",
    "disk_mb": "disk",
    "template": "template",
    "lifetime_s": "lifetime",
    "max_pids": "process limit",
}
#: Plain names of the client facts that can move latency (the manifest's ``client``).
CLIENT_NAMES = {
    "hostname": "client host",
    "location": "client location",
    "python": "client Python",
    "kernel": "client kernel",
    "cpus": "client CPUs",
}
#: Provider environment keys that are not settings of the measured system: SDK versions are
#: compared one package at a time.
_ENVIRONMENT_SKIP = frozenset({"sdk_versions"})


def plain(value: Any, key: str = "") -> str:
    """A manifest value in words: units from the key's suffix, lists and tables spelt out."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        if not value:
            return "none"
        return ", ".join(f"{k} {plain(v, str(k))}" for k, v in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) if value else "none"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    for suffix, unit in (("_mb", "MiB"), ("_gib", "GiB"), ("_s", "s"), ("_ms", "ms")):
        if key.endswith(suffix) and isinstance(value, int | float):
            return f"{value} {unit}"
    return str(value)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _get(manifest: Mapping[str, Any], *path: str) -> Any:
    value: Any = manifest
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _table(manifest: Mapping[str, Any], *path: str) -> Mapping[str, Any]:
    value = _get(manifest, *path)
    return value if isinstance(value, Mapping) else {}


def _in_a_and_b(name: str, a: Any, b: Any, key: str = "") -> str:
    return f"{name}: {plain(a, key)} in A, {plain(b, key)} in B"


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> Iterator[Difference]:
    """What differs between manifests ``a`` and ``b`` that can move latency (see the module
    docstring), in plain words, each scoped to the rows it can move."""

    def differ(x: Any, y: Any) -> bool:
        return plain(x) != plain(y)

    # The plan.
    for key, name in (("concurrency", "concurrency"), ("warmup", "warmup iterations")):
        va = _get(a, "plan", key) if _get(a, "plan", key) is not None else _get(a, "config", key)
        vb = _get(b, "plan", key) if _get(b, "plan", key) is not None else _get(b, "config", key)
        if differ(va, vb):
            yield Difference(label=name, text=_in_a_and_b(name, va, vb))
    for key, name in (("timeout_s", "operation timeout"), ("cluster", "executor cluster"),
                      ("locations", "cluster locations")):  # fmt: skip
        va, vb = _get(a, "config", key), _get(b, "config", key)
        if differ(va or None, vb or None):
            yield Difference(label=name, text=_in_a_and_b(name, va or None, vb or None, key))
    # The sandbox spec.
    spec_a, spec_b = _table(a, "spec"), _table(b, "spec")
    for key in sorted(set(spec_a) | set(spec_b)):
        if differ(spec_a.get(key), spec_b.get(key)):
            name = f"sandbox {SPEC_NAMES.get(key, key)}"
            yield Difference(
                label=name, text=_in_a_and_b(name, spec_a.get(key), spec_b.get(key), key)
            )
    # Workload parameters, for workloads both runs planned.
    params_a, params_b = _table(a, "plan", "workload_params"), _table(b, "plan", "workload_params")
    for workload in [w for w in params_a if w in params_b]:
        pa = _flatten(_table(params_a, workload))
        pb = _flatten(_table(params_b, workload))
        for key in sorted(set(pa) | set(pb)):
            if differ(pa.get(key), pb.get(key)):
                yield Difference(
                    label=f"{workload} {key}",
                    text=_in_a_and_b(f"workload {workload}'s {key}", pa.get(key), pb.get(key), key),
                    workload=workload,
                )
    # Providers: settings and environment (connection mode, endpoint, ...), SDK versions.
    providers_a, providers_b = _table(a, "providers"), _table(b, "providers")
    settings_a = _table(a, "config", "provider_settings")
    settings_b = _table(b, "config", "provider_settings")
    for provider in sorted(set(providers_a) & set(providers_b)):
        env_a = _flatten(
            {k: v for k, v in _table(providers_a, provider, "environment").items()
             if k not in _ENVIRONMENT_SKIP}
        )  # fmt: skip
        env_b = _flatten(
            {k: v for k, v in _table(providers_b, provider, "environment").items()
             if k not in _ENVIRONMENT_SKIP}
        )  # fmt: skip
        # Settings the environment does not echo (adapters that record few facts).
        for key, value in _flatten(_table(settings_a, provider)).items():
            env_a.setdefault(key, value)
        for key, value in _flatten(_table(settings_b, provider)).items():
            env_b.setdefault(key, value)
        for key in sorted(set(env_a) | set(env_b)):
            if differ(env_a.get(key), env_b.get(key)):
                name = "connection mode" if key == "connection" else key
                yield Difference(
                    label=f"{provider} {name}",
                    text=_in_a_and_b(f"{provider}'s {name}", env_a.get(key), env_b.get(key), key),
                    provider=provider,
                )
        sdk_a = _table(providers_a, provider, "environment", "sdk_versions")
        sdk_b = _table(providers_b, provider, "environment", "sdk_versions")
        for package in sorted(set(sdk_a) | set(sdk_b)):
            if differ(sdk_a.get(package), sdk_b.get(package)):
                yield Difference(
                    label=f"{provider} SDK {package}",
                    text=_in_a_and_b(
                        f"{provider}'s SDK {package}",
                        sdk_a.get(package) or "not installed",
                        sdk_b.get(package) or "not installed",
                    ),
                    provider=provider,
                )
    if differ(a.get("connection_mode"), b.get("connection_mode")):
        yield Difference(
            label="connection mode",
            text=_in_a_and_b("connection mode", a.get("connection_mode"), b.get("connection_mode")),
        )
    # The client that measured.
    for key, name in CLIENT_NAMES.items():
        va, vb = _get(a, "client", key), _get(b, "client", key)
        if key == "location":  # where the run says it ran, else where the config says
            va = va or _get(a, "config", "location") or None
            vb = vb or _get(b, "config", "location") or None
        if differ(va, vb):
            yield Difference(label=name, text=_in_a_and_b(name, va, vb))
    # The harness.
    version_a, version_b = _get(a, "harness", "version"), _get(b, "harness", "version")
    if differ(version_a, version_b):
        yield Difference(
            label="harness version", text=_in_a_and_b("harness version", version_a, version_b)
        )
    sha_a, sha_b = _get(a, "harness", "git_sha"), _get(b, "harness", "git_sha")
    if sha_a and sha_b and sha_a != sha_b:
        yield Difference(
            label="harness commit", text=_in_a_and_b("harness commit", sha_a[:12], sha_b[:12])
        )


def _notes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Differences that do not move latency but change what the comparison can say."""
    notes = []
    for name, run in (("A", a), ("B", b)):
        if run.get("status") != "completed":
            notes.append(f"run {name} ({run.get('run_id')}) is {run.get('status')}, not completed")
    iterations_a, iterations_b = _get(a, "plan", "iterations"), _get(b, "plan", "iterations")
    if iterations_a != iterations_b:
        notes.append(
            f"iterations: {plain(iterations_a)} in A, {plain(iterations_b)} in B (the "
            "intervals are wider for the run with fewer)"
        )
    return notes


__all__ = [
    "VERDICTS",
    "Comparison",
    "ComparisonRow",
    "Difference",
    "compare_runs",
    "differences",
    "is_regression",
    "plain",
    "verdict_for",
]
