"""Report figures, drawn with matplotlib's Agg backend and saved as SVG.

* ECDF per operation, one panel per operation of a workload, every provider overlaid, on a
  log time axis. A line with more than :data:`ECDF_POINTS` samples is drawn through that many
  evenly spaced quantiles (the exact ECDF evaluated on a grid): 512 levels on a panel 2.5
  inches high are steps of under half a pixel, indistinguishable from the full ECDF, and keep
  a million-sample report small and fast.
* Log time axes carry major ticks only (decades, or 1-2-5 / 1-3 steps on a narrow range,
  each with its grid line): matplotlib builds every minor tick as objects of its own, which
  cost a quarter of a million-sample report's figure time for marks without labels.
* Box plot per workload: one box per (operation, provider); the box spans p25-p75, the line
  is the median and the whiskers reach p5 and p95 (drawn from precomputed percentiles, so no
  individual outliers are plotted). Groups with fewer than 5 samples are left out.
* Session cost per provider, stacked by compute, storage and snapshots.
* Cost of one workload iteration (p50) per provider.
* Latency against a scale (state size, concurrency): p50 with its interval and p95, for
  workloads that declare scaled operations (their report parts call it).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

# The backend is chosen above, before pyplot loads.
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from bench import stats

ECDF_POINTS = 512
MIN_BOX_N = stats.MIN_N_ANY

#: Colour-blind-safe palette (Okabe & Ito), one colour per provider in name order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")

RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "svg.hashsalt": "sandbox-bench",
    "svg.fonttype": "path",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class FigureFile:
    id: str
    path: Path
    title: str
    caption: str
    svg: bytes


def provider_colors(providers: Sequence[str]) -> dict[str, str]:
    return {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(sorted(providers))}


def save(fig: Figure, folder: Path, name: str, title: str, caption: str) -> FigureFile:
    """Write ``fig`` as ``<folder>/<name>.svg`` and close it; ``name`` is also its HTML id
    (``fig-<name>``), so it must be unique in the report. Draw inside
    ``plt.rc_context(RC)`` to match the report's other figures."""
    buffer = io.BytesIO()
    # Fixed margins (set per figure) rather than constrained layout or bbox_inches="tight":
    # both lay the figure out again and double the time a million-sample report spends here.
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    data = buffer.getvalue()
    path = folder / f"{name}.svg"
    path.write_bytes(data)
    return FigureFile(id=name, path=path, title=title, caption=caption, svg=data)


def _seconds_formatter(value: float, _pos: int) -> str:
    """Axis ticks on a log scale: 1 ms, 10 ms, 100 ms, 1 s, 10 s."""
    if value >= 1:
        return f"{value:g} s"
    if value >= 1e-3:
        return f"{value * 1e3:g} ms"
    return f"{value * 1e6:g} µs"


def _seconds_axis(axis: Any) -> None:
    """Log-scale seconds: when the view spans under two decades (so it may hold a single
    decade tick), label 1-2-5 steps (1-3 on a horizontal axis, where labels are wider);
    decades otherwise."""
    low, high = axis.get_view_interval()
    narrow = low > 0 and high / low < 100
    if not narrow:
        subs: tuple[float, ...] = (1.0,)
    elif axis.axis_name == "x":
        subs = (1.0, 3.0)
    else:
        subs = (1.0, 2.0, 5.0)
    axis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(_seconds_formatter))
    axis.set_minor_locator(matplotlib.ticker.NullLocator())


def _ecdf_points(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = sorted_values.size
    if n <= ECDF_POINTS:
        return sorted_values, np.arange(1, n + 1) / n
    levels = np.linspace(0.0, 1.0, ECDF_POINTS)
    return np.quantile(sorted_values, levels), levels


def _panel_grid(
    panels: int, *, panel_h: float, extra_h: float, bottom: float, hspace: float
) -> tuple[Any, np.ndarray, float]:
    """Up to three panels a row, 3.7 inches wide each; margins in inches. Returns the figure,
    its axes grid and its height (for the legend's placement)."""
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    width, height = 3.7 * ncols, panel_h * nrows + extra_h
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.15 / width,
        bottom=bottom / height,
        top=1 - 0.75 / height,
        wspace=0.3,
        hspace=hspace * panel_h / 2.1,
    )
    return fig, axes, height


def _finish_grid(
    fig: Any, axes: np.ndarray, used: int, colors: Mapping[str, str], height: float
) -> None:
    """Hide the unused panels and put one provider legend across the top."""
    for ax in list(axes.flat)[used:]:
        ax.set_visible(False)
    handles = [
        matplotlib.lines.Line2D([], [], color=colors[p], lw=2, label=p) for p in sorted(colors)
    ]
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.02 / height),
        ncols=len(handles),
    )  # fmt: skip


def ecdf_figure(
    folder: Path,
    workload: str,
    groups_by_op: Mapping[str, Mapping[str, stats.Group]],
    colors: Mapping[str, str],
) -> FigureFile | None:
    ops = [op for op, by_provider in groups_by_op.items() if any(g.n for g in by_provider.values())]
    if not ops:
        return None
    with plt.rc_context(RC):
        fig, axes, height = _panel_grid(
            len(ops), panel_h=2.5, extra_h=0.45, bottom=0.4, hspace=0.55
        )
        for ax, op in zip(axes.flat, ops, strict=False):
            for provider, group in sorted(groups_by_op[op].items()):
                if group.n == 0:
                    continue
                x, y = _ecdf_points(group.ok_sorted_s)
                x = np.maximum(x, 1e-6)  # a log axis cannot show 0 s
                ax.step(x, y, where="post", color=colors[provider], lw=1.4, label=provider)
            ax.set_xscale("log")
            ax.set_title(op)
            ax.set_ylim(0, 1.02)
            _seconds_axis(ax.xaxis)
            ax.set_ylabel("fraction ≤ x")
        _finish_grid(fig, axes, len(ops), colors, height)
        return save(
            fig,
            folder,
            f"ecdf-{workload}",
            f"{workload}: latency ECDF per operation",
            "Each line is one provider's distribution of successful durations (log scale); "
            "further left is faster, a long flat tail is a slow minority.",
        )


def box_figure(
    folder: Path,
    workload: str,
    groups_by_op: Mapping[str, Mapping[str, stats.Group]],
    colors: Mapping[str, str],
) -> FigureFile | None:
    ops = [
        op
        for op, by_provider in groups_by_op.items()
        if any(g.n >= MIN_BOX_N for g in by_provider.values())
    ]
    if not ops:
        return None
    providers = sorted(colors)
    width = 0.8 / len(providers)
    with plt.rc_context(RC):
        fig_w, fig_h = max(6.0, 1.2 * len(ops) + 2), 3.8
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=0.8 / fig_w, right=1 - 0.15 / fig_w, bottom=1.05 / fig_h, top=1 - 0.15 / fig_h
        )
        for j, provider in enumerate(providers):
            boxes, positions = [], []
            for i, op in enumerate(ops):
                group = groups_by_op[op].get(provider)
                if group is None or group.n < MIN_BOX_N:
                    continue
                p5, p25, p50, p75, p95 = np.quantile(
                    group.ok_sorted_s, [0.05, 0.25, 0.5, 0.75, 0.95]
                )
                boxes.append(
                    {
                        "med": p50,
                        "q1": p25,
                        "q3": p75,
                        "whislo": max(p5, 1e-6),
                        "whishi": p95,
                        "fliers": [],
                        "label": op,
                    }
                )
                positions.append(i - 0.4 + width * (j + 0.5))
            if not boxes:
                continue
            ax.bxp(
                boxes,
                positions=positions,
                widths=width * 0.85,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": colors[provider], "alpha": 0.75, "lw": 0.8},
                medianprops={"color": "black", "lw": 1.2},
                whiskerprops={"color": colors[provider], "lw": 1},
                capprops={"color": colors[provider], "lw": 1},
            )
        ax.set_yscale("log")
        _seconds_axis(ax.yaxis)
        ax.set_xticks(range(len(ops)), ops, rotation=20, ha="right")
        ax.set_xlim(-0.6, len(ops) - 0.4)
        ax.set_ylabel("duration")
        handles = [
            matplotlib.patches.Patch(facecolor=colors[p], alpha=0.75, label=p) for p in providers
        ]
        ax.legend(handles=handles, loc="upper left", ncols=len(providers), fontsize=8)
        return save(
            fig,
            folder,
            f"box-{workload}",
            f"{workload}: spread per operation",
            "Box p25–p75, black line the median, whiskers p5–p95 (log scale); "
            f"groups with fewer than {MIN_BOX_N} successes are left out.",
        )


def session_cost_figure(
    folder: Path,
    rows: Sequence[tuple[str, float, float, float | None]],
    colors: Mapping[str, str],
    scenario_text: str,
) -> FigureFile | None:
    """``rows``: (provider, compute_usd, storage_usd, snapshot_usd or None)."""
    if not rows:
        return None
    with plt.rc_context(RC):
        width, height = 7.0, 0.55 * len(rows) + 1.0
        fig, ax = plt.subplots(figsize=(width, height))
        fig.subplots_adjust(
            left=0.9 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.1 / height
        )
        names = [r[0] for r in rows]
        compute = np.array([r[1] for r in rows])
        storage = np.array([r[2] for r in rows])
        snapshot = np.array([r[3] or 0.0 for r in rows])
        y = np.arange(len(rows))
        ax.barh(y, compute, color=[colors.get(n, "#888") for n in names], label="compute")
        ax.barh(y, storage, left=compute, color="#9aa5b1", label="storage")
        ax.barh(y, snapshot, left=compute + storage, color="#cbd2d9", label="snapshots")
        totals = compute + storage + snapshot
        for yi, total, row in zip(y, totals, rows, strict=True):
            label = f" ${total:.3f}" + (" + unknown snapshots" if row[3] is None else "")
            ax.text(total, yi, label, va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("USD per session")
        ax.set_xlim(0, max(float(totals.max()) * 1.35, 0.01))
        ax.grid(axis="y", visible=False)
        ax.legend(loc="lower right", fontsize=8)
        return save(
            fig,
            folder,
            "cost-session",
            "Session scenario cost per provider",
            scenario_text,
        )


def workload_cost_figure(
    folder: Path,
    rows: Sequence[tuple[str, str, float]],
    colors: Mapping[str, str],
) -> FigureFile | None:
    """``rows``: (provider, workload, usd_p50 per iteration)."""
    rows = [r for r in rows if math.isfinite(r[2])]
    if not rows:
        return None
    workloads = list(dict.fromkeys(r[1] for r in rows))
    providers = sorted({r[0] for r in rows})
    width = 0.8 / len(providers)
    values = {(r[0], r[1]): r[2] for r in rows}
    with plt.rc_context(RC):
        fig_w, fig_h = max(6.0, 1.3 * len(workloads) + 2), 3.2
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=0.95 / fig_w, right=1 - 0.15 / fig_w, bottom=0.45 / fig_h, top=1 - 0.15 / fig_h
        )
        for j, provider in enumerate(providers):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(workloads))]
            ys = [values.get((provider, w), 0.0) for w in workloads]
            ax.bar(xs, ys, width=width * 0.9, color=colors.get(provider, "#888"), label=provider)
        ax.set_xticks(range(len(workloads)), workloads)
        ax.set_ylabel("USD per iteration (p50)")
        ax.legend(loc="upper left", ncols=len(providers), fontsize=8)
        return save(
            fig,
            folder,
            "cost-workload",
            "Cost of one workload iteration (p50)",
            "Measured time of one iteration's operations on one sandbox × the provider's rate "
            "for the billed size.",
        )


#: One point of a scaling curve: (scale, p50, p50 interval low, high, p95), in seconds.
ScalePoint = tuple[float, float, float, float, float]


def scaling_figure(
    folder: Path,
    workload: str,
    scaled: Mapping[str, Mapping[str, Sequence[ScalePoint]]],
    colors: Mapping[str, str],
    *,
    axis: str,
    noun: str,
) -> FigureFile | None:
    """p50 (with its 95 % interval) and p95 against a scale (state size, concurrency):
    ``scaled`` is operation -> provider -> points sorted by scale; ``axis`` labels the x axis
    and ``noun`` names the scale in the title."""
    if not scaled:
        return None
    bases = list(scaled)[:6]
    with plt.rc_context(RC):
        fig, axes, height = _panel_grid(
            len(bases), panel_h=2.6, extra_h=0.5, bottom=0.55, hspace=0.6
        )
        for ax, base in zip(axes.flat, bases, strict=False):
            for provider, points in sorted(scaled[base].items()):
                x = np.array([p[0] for p in points])
                p50 = np.array([p[1] for p in points])
                low = np.array([p[2] for p in points])
                high = np.array([p[3] for p in points])
                p95 = np.array([p[4] for p in points])
                color = colors.get(provider, "#888")
                ax.errorbar(
                    x,
                    p50,
                    yerr=[np.clip(p50 - low, 0, None), np.clip(high - p50, 0, None)],
                    color=color,
                    marker="o",
                    ms=3.5,
                    lw=1.4,
                    capsize=2,
                    label=provider,
                )
                shown = np.isfinite(p95)
                if shown.any():
                    ax.plot(x[shown], p95[shown], color=color, lw=1, ls="--", alpha=0.7)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(base)
            _seconds_axis(ax.yaxis)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(axis)
        _finish_grid(fig, axes, len(bases), colors, height)
        return save(
            fig,
            folder,
            f"scaling-{workload}",
            f"{workload}: latency against {noun}",
            "Solid line: p50 with its 95 % interval; dashed: p95 where n supports it (log "
            "scales). A line that rises faster than the x axis means the cost grows faster "
            "than the work.",
        )
