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
        "95 % intervals of p50 and p95 come from order statistics: the distribution-free "
        "binomial interval, or, where its coverage would exceed 97.5 % (the binomial's "
        "discreteness), each end interpolated between two neighbouring order statistics "
        "(Hettmansperger-Sheather, Nyblom). A seeded simulation over lognormal and bimodal "
        "samples measured their coverage at 94-98 %. An interval is shown only where one can "
        f"exist inside the sample: p50 from {stats.min_n_for_interval(50)} samples, p95 from "
        f"{stats.min_n_for_interval(95)}; below that the cell says 'n too small'.",
        "Provider comparisons: ratio of medians with a percentile-bootstrap interval "
        f"({stats.BOOTSTRAP_RESAMPLES:,} resamples, seed {seed}; measured coverage 95-97 %), "
        "and a two-sided Mann-Whitney U p-value (scipy).",
        "Fidelity checks are declared by the workloads (the operation that judges each); a "
        "record fails one when it carries the check's error class or flag, passes when its "
        "call returned otherwise, and is not judged when its call failed. Whether destroyed "
        "sandboxes were gone is judged from the ledger: the end-of-run sweep lists the run's "
        "sandboxes and destroys what it finds.",
        f"Warnings flag {_joined(flagged)}.",
        "Costs are computed now from the raw durations and the pricing catalog "
        f"{data.pricing.label}; nothing derived is stored in the results. Where a price has "
        "several sourced values or the billing basis several readings, costs are ranges over "
        "them, with measured times at the ends of their intervals.",
        "Decision ranks: latency on the median, two providers tied unless the 95 % interval of "
        "the ratio of their medians excludes 1; cost on the monthly range, tied unless one "
        "range lies wholly below the other; a rank is 1 + the number of providers clearly "
        "better. No latency rank from fewer than 10 samples, an emulator or a vendor claim; no "
        "cost rank without a price or a plan that allows the scenario, nor from a range whose "
        "upper end is unknown (a time the cost needs neither measured nor claimed) unless "
        "that cannot change a rank.",
    ]


def method(data: ReportData) -> View:
    return View(
        id="method", title="Method", nav="Method", blocks=(Notes(items=tuple(method_notes(data))),)
    )
