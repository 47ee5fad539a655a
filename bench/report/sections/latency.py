"""Latency: per workload, one table, the workload's own parts, an ECDF and a box plot; and
the pairwise comparisons of providers (folded: see :func:`comparisons`).

The ECDF panels and the boxes follow each workload's declared order. Scaled operations
measured at two or more values (``checkpoint_16mb``, ``create_c10``) are left out of them:
the workload's scaling curves draw them against the scale instead of one box per size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from bench import stats
from bench.report import figures
from bench.report.data import ReportData
from bench.report.tables import Row, Table, make_table
from bench.report.views import Text, View
from bench.report.workload import report_for
from bench.workloads import registry
from bench.workloads.shape import Role

INTRO = (
    "Per workload: a table, an ECDF per operation and, folded, a box plot of the spread. "
    "Durations are measured on the client with a monotonic clock around each provider call."
)


def latency_table(workload: str, rows: Sequence[Mapping[str, Any]]) -> Table:
    columns = (
        "Provider",
        "Operation",
        "n",
        "Failures",
        "Not run",
        "p50",
        "p50 95% CI",
        "p90",
        "p95",
        "p95 95% CI",
        "p99",
        "Max",
        "Mean ± SD",
    )
    built = []
    for r in rows:
        not_run = []
        if r["unsupported"]:
            not_run.append("unsupported")
        if r["skipped"]:
            not_run.append(f"{r['skipped']} skipped")
        if r["n"] == 0 and r["unsupported"] and not r["attempts"]:
            cells = [r["provider"], r["operation"], "0", "–", ", ".join(not_run)] + ["–"] * 8
            built.append(Row(cells=tuple(cells), classes=("",) * 4 + ("muted",)))
            continue
        mean_sd = stats.format_cell(r, "mean")
        if r["n"] >= 2:
            mean_sd += f" ± {stats.format_cell(r, 'std')}"
        cells = [
            r["provider"],
            r["operation"],
            str(r["n"]),
            stats.format_cell(r, "failures"),
            ", ".join(not_run) or "–",
            stats.format_cell(r, "p50"),
            ci_cell(r, 50),
            stats.format_cell(r, "p90"),
            stats.format_cell(r, "p95"),
            ci_cell(r, 95),
            stats.format_cell(r, "p99"),
            stats.format_cell(r, "max"),
            mean_sd,
        ]
        failure_class = "bad" if stats.high_failure_rate(r) else ""
        classes = tuple(
            "muted" if c == stats.NOT_ENOUGH else (failure_class if i == 3 else "")
            for i, c in enumerate(cells)
        )
        built.append(Row(cells=tuple(cells), classes=classes))
    return make_table(
        f"latency-{workload}",
        columns,
        built,
        title=f"{workload}",
        align="llrrlrrrrrrrr",
    )


def ci_cell(row: Mapping[str, Any], p: int) -> str:
    if row["n"] == 0:
        return "–"
    if stats.is_withheld(row, f"p{p}"):
        return stats.NOT_ENOUGH
    text = stats.format_interval(row[f"p{p}_ci_low_s"], row[f"p{p}_ci_high_s"])
    return text or f"{stats.NOT_ENOUGH} (needs {stats.min_n_for_interval(p)})"


def drawn_operations(
    workload: str, ops: Mapping[str, Mapping[str, stats.Group]]
) -> dict[str, Mapping[str, stats.Group]]:
    """The operations of ``ops`` drawn as ECDF panels and boxes, in declared order: all but
    the scaled families measured at two or more values (the scaling curves draw those)."""
    values: dict[str, set[int]] = {}
    for op in ops:
        found = registry.find_operation(workload, op)
        if found is not None and found.value is not None:
            values.setdefault(found.operation.name, set()).add(found.value)
    drawn = {}
    for op in sorted(ops, key=lambda o: registry.operation_rank(workload, o)):
        found = registry.find_operation(workload, op)
        if found is not None and found.value is not None and len(values[found.operation.name]) > 1:
            continue
        drawn[op] = ops[op]
    return drawn


def workload_view(data: ReportData, workload: str) -> View:
    """One workload's part: its table, its own sections (``Workload.report``), its figures."""
    ops = drawn_operations(workload, data.by_workload[workload])
    own = report_for(workload)
    parts = [section(data, workload) for section in own.sections] if own is not None else []
    return View(
        id=f"workload-{workload}",
        title=workload,
        blocks=(
            latency_table(workload, data.rows_of(workload)),
            *parts,
            data.figure(figures.ecdf_figure(data.figures_dir, workload, ops, data.colors)),
            _spread(data, workload, ops),
        ),
    )


def _spread(data: ReportData, workload: str, ops: Mapping[str, Any]) -> View | None:
    """The box plot, folded; when no group has the samples a box needs, a line that says so
    (so that the report's outline does not depend on n)."""
    if not ops:
        return None
    box = data.figure(figures.box_figure(data.figures_dir, workload, ops, data.colors))
    if box is None:
        box = Text(text=f"No group has the {figures.MIN_BOX_N} successes a box needs.")
    return View(
        id=f"{workload}-spread",
        title="Spread per operation (box plot)",
        collapsed=True,
        blocks=(box,),
    )


def latency(data: ReportData) -> View:
    workloads = list(data.by_workload)
    return View(
        id="latency",
        title="Latency",
        nav="Latency",
        intro=(INTRO,),
        blocks=(
            Text(text="No samples were recorded.") if not workloads else None,
            *(workload_view(data, w) for w in workloads),
        ),
    )


# -- pairwise comparisons of providers ---------------------------------------------------------


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def comparison_table(
    pairs: pd.DataFrame, *, id: str = "comparisons", title: str = "", fold: bool = True
) -> Table:
    rows = []
    for r in pairs.to_dict("records"):
        if r["reason"]:
            ratio = r["reason"]
            ci = "–"
        else:
            ratio = stats.format_ratio(r["ratio"])
            low, high = r["ratio_ci_low"], r["ratio_ci_high"]
            ci = f"{stats.format_ratio(low)} – {stats.format_ratio(high)}"
        rows.append(
            [
                r["workload"],
                r["operation"],
                f"{r['provider_b']} vs {r['provider_a']}",
                stats.format_duration(r["p50_b_s"]),
                stats.format_duration(r["p50_a_s"]),
                ratio,
                ci,
                fmt_p(r["p_value"]),
                f"{r['n_b']} / {r['n_a']}",
            ]
        )
    return make_table(
        id,
        (
            "Workload",
            "Operation",
            "B vs A",
            "p50 B",
            "p50 A",
            "Median B / A",
            "95% CI",
            "Mann-Whitney p",
            "n B / A",
        ),
        rows,
        title=title,
        caption="Ratio of medians: below 1× B is faster than A, above 1× slower. The interval is "
        "a seeded percentile bootstrap; the p-value is a two-sided Mann-Whitney U test (with "
        "many comparisons, expect about 1 in 20 of them under 0.05 by chance alone).",
        align="lllrrrrrr",
        fold=fold,
    )


def decision_relevant(workload: str, operation: str) -> bool:
    """Whether the operation stands for a :class:`~bench.workloads.shape.Role` (create,
    ready, exec, checkpoint, restore, pause, resume, wake): what a choice rests on."""
    found = registry.find_operation(workload, operation)
    return found is not None and found.value is None and bool(found.operation.roles)


def _roles_text() -> str:
    named = [f"{op.name} ({w})" for role in Role for w, op in registry.with_role(role)]
    return ", ".join(dict.fromkeys(named))


def against_fastest(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (workload, operation) of ``pairs``: each provider against the fastest of that
    operation (n - 1 rows, oriented so that A is the fastest: ratio = B / fastest), and the
    other pairs as they are.

    The fastest is the lowest median among the providers with enough samples for a ratio
    (else among those with a median at all), ties broken by name. A pair stored the other way
    round (the fastest as B) is turned: the medians, counts and n swap, the ratio becomes
    1 / ratio and its interval (1 / high, 1 / low), the percentile bootstrap's interval of the
    inverse ratio; the two-sided p-value is the same. comparisons.csv keeps every pair as
    computed.
    """
    columns = list(pairs.columns)
    if pairs.empty:
        return pairs, pairs
    open_rows: list[dict[str, Any]] = []
    keep_out = pd.Series(True, index=pairs.index)
    for _, group in pairs.groupby(["workload", "operation"], sort=False):
        fastest = _fastest(group)
        if fastest is None:
            continue
        for index, r in group.iterrows():
            if fastest not in (r["provider_a"], r["provider_b"]):
                continue
            keep_out[index] = False
            open_rows.append(r.to_dict() if r["provider_a"] == fastest else _turned(r.to_dict()))
    return pd.DataFrame(open_rows, columns=columns), pairs[keep_out]


def _fastest(group: pd.DataFrame) -> str | None:
    medians: dict[str, tuple[float, int]] = {}
    for side in ("a", "b"):
        for name, p50, n in zip(
            group[f"provider_{side}"], group[f"p50_{side}_s"], group[f"n_{side}"], strict=True
        ):
            if p50 is not None and math.isfinite(p50):
                medians[str(name)] = (float(p50), int(n))
    if not medians:
        return None
    enough = {p: m for p, (m, n) in medians.items() if n >= stats.MIN_N_RATIO}
    pool = enough or {p: m for p, (m, _) in medians.items()}
    return min(pool, key=lambda p: (pool[p], p))


def _turned(r: dict[str, Any]) -> dict[str, Any]:
    """A pair with A and B swapped (see :func:`against_fastest`)."""
    out = dict(r)
    for a, b in (("provider_a", "provider_b"), ("n_a", "n_b"), ("p50_a_s", "p50_b_s")):
        out[a], out[b] = r[b], r[a]
    if r["reason"]:
        return out
    ratio, low, high = r["ratio"], r["ratio_ci_low"], r["ratio_ci_high"]
    if not ratio > 0:
        # The fastest's median is 0: no ratio against it.
        out.update(ratio=math.nan, ratio_ci_low=math.nan, ratio_ci_high=math.nan,
                   reason="median of the baseline is 0")  # fmt: skip
        return out
    out["ratio"] = 1.0 / ratio
    out["ratio_ci_low"] = 1.0 / high if high > 0 else math.nan
    out["ratio_ci_high"] = 1.0 / low if low > 0 else math.inf
    return out


def comparisons(data: ReportData) -> View:
    """On the operations a choice rests on (the workloads' Role declarations), each provider
    against the fastest of that operation, open; every other pair of those operations, and
    every pair of the other operations, folded below; all of them in the report's
    comparisons.csv."""
    pairs = data.pairs
    if pairs.empty:
        return View(
            id="comparisons", title="Pairwise comparisons", nav="Comparisons",
            blocks=(Text(text="Only one provider was measured."),),
        )  # fmt: skip
    key = [decision_relevant(w, op) for w, op in zip(pairs["workload"], pairs["operation"],
                                                      strict=True)]  # fmt: skip
    mask = pd.Series(key, index=pairs.index, dtype=bool)
    main, others = against_fastest(pairs[mask])
    rest = pairs[~mask]
    blocks: list[Any] = []
    if not main.empty:
        blocks.append(
            comparison_table(
                main,
                title="The operations a choice rests on: each provider against the fastest",
                fold=False,
            )
        )
    if not others.empty:
        blocks.append(
            View(
                id="comparisons-pairs-part",
                title=f"Every other pair of these operations ({len(others)} comparisons)",
                collapsed=True,
                blocks=(
                    comparison_table(
                        others, id="comparisons-pairs", title="Every other pair of these operations"
                    ),
                ),
            )
        )
    if not rest.empty:
        other = comparison_table(rest, id="comparisons-other", title="Every other operation")
        blocks.append(
            View(
                id="comparisons-other-part",
                title=f"Every other operation ({len(rest)} comparisons)",
                collapsed=not main.empty,
                blocks=(other,),
            )
        )
    return View(
        id="comparisons",
        title="Pairwise comparisons",
        nav="Comparisons",
        intro=(
            f"Shown first: on each operation a workload declares a choice rests on "
            f"({_roles_text()}), every provider against the fastest of that operation (A is "
            "the fastest: the lowest median among the providers with enough samples for a "
            "ratio). Folded below: every other pair of those operations, and every other "
            "operation. Every comparison is also in comparisons.csv beside this report.",
        ),
        blocks=tuple(blocks),
    )
