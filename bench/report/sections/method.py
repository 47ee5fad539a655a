"""Method: how every number in the report was computed."""

from __future__ import annotations

from bench import stats
from bench.report.data import ReportData
from bench.report.views import Notes, View
from bench.report.workload import workload_flags


def _joined(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def method_notes(data: ReportData) -> list[str]:
    include_warmups, seed = data.include_warmups, data.seed
    flagged = [
        f"failure rates above {stats.HIGH_FAILURE_RATE:.0%} (with at least "
        f"{stats.HIGH_FAILURE_MIN} failures)",
        f"a coefficient of variation (SD / mean) of {stats.HIGH_CV} or more",
        *workload_flags(),
    ]
    return [
        "n counts successful samples only. Failures (error, timeout) are reported beside the "
        "percentiles, never turned into durations; unsupported and skipped operations are "
        "counted apart.",
        "Warmup iterations are "
        + ("included." if include_warmups else "excluded (pass include_warmups to keep them)."),
        "Percentiles use numpy's default linear interpolation (type 7).",
        "A percentile is shown only when n supports it: at least 5 samples and at least one "
        "expected sample above it (p50 needs 5, p90 10, p95 20, p99 100); otherwise the cell "
        "says 'n too small'.",
        "95 % intervals: the distribution-free order-statistic (binomial) interval, whose "
        "coverage is at least 95 % for any continuous distribution, wherever n allows one "
        "(p50 from 6 samples, p95 from 72); below that a percentile bootstrap with "
        f"{stats.BOOTSTRAP_RESAMPLES:,} resamples, seed {seed}. Bootstrap p95 intervals are "
        "optimistic: measured over 1,000 seeded repetitions they covered the truth only about "
        "87 % of the time at n = 50.",
        "Provider comparisons: ratio of medians with a bootstrap interval, and a two-sided "
        "Mann-Whitney U p-value (scipy).",
        "Fidelity checks are declared by the workloads (the operation that judges each); a "
        "record fails one when it carries the check's error class or flag, passes when its "
        "call returned otherwise, and is not judged when its call failed. Whether destroyed "
        "sandboxes were gone is judged from the ledger: the end-of-run sweep lists the run's "
        "sandboxes and destroys what it finds.",
        f"Warnings flag {_joined(flagged)}.",
        "Costs are computed now from the raw durations and the pricing catalog "
        f"{data.pricing.label}; nothing derived is stored in the results.",
    ]


def method(data: ReportData) -> View:
    return View(
        id="method", title="Method", nav="Method", blocks=(Notes(items=tuple(method_notes(data))),)
    )
