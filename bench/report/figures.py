"""Report figures, drawn with matplotlib's Agg backend and saved as SVG (text kept as text).

* ECDF per operation, one panel per operation of a workload in its declared order, every
  provider overlaid, on a log time axis. A line with more than :data:`ECDF_POINTS` samples is
  drawn through that many evenly spaced quantiles (the exact ECDF evaluated on a grid), which
  is indistinguishable at this size and keeps a million-sample report small.
* Box plot per workload, horizontal: one row per operation (declared order, names written out
  level), one box per provider; the box spans p25-p75, the line is the median and the
  whiskers reach p5 and p95 (drawn from precomputed percentiles, so no individual outliers are
  plotted). Groups with fewer than 5 samples are left out.
* Session cost per provider, stacked by compute, storage and snapshots.
* Cost of one workload iteration (p50) per provider.
* Latency against a scale (state size, concurrency): p50 with its interval and p95, for
  workloads that declare scaled operations (their report parts call it); those operations
  are drawn there as curves, not as one box and one panel per size.

What every figure shares: each provider has one colour in every figure and every report
(:data:`PROVIDER_COLORS`, a fixed map, so adding a provider never recolours the others);
legends sit outside the plotting area; log time axes label decades, and 2 and 5 between them
only where the labels fit (:func:`log_ticks`), computed from the axis' length and the
labels' widths, so tick labels never overlap (a test checks every figure's SVG).
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
from collections.abc import Callable, Collection, Mapping, Sequence
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
import matplotlib.transforms
import numpy as np
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from bench import stats

ECDF_POINTS = 512
MIN_BOX_N = stats.MIN_N_ANY
FONT_SIZE = 9.0

#: One colour per provider, the same in every figure and report. Okabe & Ito's colour-blind
#: safe palette first, then Paul Tol's muted scheme; black and yellow left out (black is the
#: median line, yellow vanishes on white). ``local`` and ``stub`` are greys: baselines.
PROVIDER_COLORS: dict[str, str] = {
    "e2b": "#E69F00",
    "daytona": "#0072B2",
    "sprites": "#CC79A7",
    "runloop": "#009E73",
    "modal": "#D55E00",
    "codesandbox": "#882255",
    "vercel": "#332288",
    "northflank": "#44AA99",
    "local": "#5F5F5F",
    "stub": "#ABABAB",
}
#: Colours of providers the map does not name, chosen by a hash of the name (stable).
SPARE_COLORS = ("#56B4E9", "#999933", "#AA4499", "#117733", "#CC6677", "#DDCC77", "#88CCEE")

RC = {
    "font.family": "DejaVu Sans",
    "font.size": FONT_SIZE,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    # A fixed title height: matplotlib otherwise measures every tick label of the axes on
    # each draw to lift the title over labels on top, and these axes have none there.
    "axes.titley": 1.0,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
    "svg.hashsalt": "sandbox-bench",
    # Text stays text: smaller files, selectable in the browser, and the tick-overlap test
    # reads labels from the SVG. DejaVu Sans is what matplotlib measures with.
    "svg.fonttype": "none",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class FigureFile:
    id: str
    path: Path
    title: str
    caption: str
    svg: bytes


def provider_color(provider: str) -> str:
    """The provider's colour: from :data:`PROVIDER_COLORS`, else from a hash of its name."""
    if provider in PROVIDER_COLORS:
        return PROVIDER_COLORS[provider]
    digest = hashlib.sha256(provider.encode()).digest()
    return SPARE_COLORS[digest[0] % len(SPARE_COLORS)]


def provider_colors(providers: Sequence[str]) -> dict[str, str]:
    """Colour per provider (see :func:`provider_color`); two unnamed providers of one report
    whose hashes collide get the next spare colours, in name order."""
    colors: dict[str, str] = {}
    used = {PROVIDER_COLORS[p] for p in providers if p in PROVIDER_COLORS}
    for provider in sorted(providers):
        color = provider_color(provider)
        if provider not in PROVIDER_COLORS and color in used:
            start = SPARE_COLORS.index(color)
            free = [SPARE_COLORS[(start + k) % len(SPARE_COLORS)] for k in range(1, 8)]
            color = next((c for c in free if c not in used), color)
        colors[provider] = color
        used.add(color)
    return colors


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


def seconds_label(value: float) -> str:
    """A tick label in seconds: 1 µs, 10 ms, 2 s."""
    if value >= 1:
        return f"{value:g} s"
    if value >= 1e-3:
        return f"{round(value * 1e3, 9):g} ms"
    return f"{round(value * 1e6, 9):g} µs"


@functools.lru_cache(maxsize=4096)
def text_width_pt(text: str, size: float = FONT_SIZE) -> float:
    """Width of ``text`` in DejaVu Sans at ``size`` points, in points (as matplotlib draws)."""
    prop = FontProperties(family="DejaVu Sans", size=size)
    return float(_TEXT_TO_PATH.get_text_width_height_descent(text, prop, ismath=False)[0])


_TEXT_TO_PATH = TextToPath()
#: A label's height in ems (DejaVu Sans' ascent plus descent).
LINE_EM = 1.17
#: Least room between two labels along an axis, in points.
LABEL_GAP_PT = 5.0


def _fits(
    values: Sequence[float],
    lo: float,
    hi: float,
    length_pt: float,
    extent: Callable[[float], float],
) -> bool:
    """Whether labels at ``values`` (log axis from ``lo`` to ``hi``, ``length_pt`` long), each
    ``extent(value)`` points long along the axis, leave :data:`LABEL_GAP_PT` between them."""
    span = math.log10(hi) - math.log10(lo)
    spots = sorted((length_pt * (math.log10(v) - math.log10(lo)) / span, extent(v)) for v in values)
    return all(
        b[0] - b[1] / 2 - (a[0] + a[1] / 2) >= LABEL_GAP_PT for a, b in itertools.pairwise(spots)
    )


def _ticks(lo: float, hi: float, subs: Sequence[int], stride: int = 1) -> list[float]:
    """Every ``m × 10**k`` (m in ``subs``, every ``stride``-th decade) within [lo, hi]."""
    out = []
    for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        if k % stride:
            continue
        for m in subs:
            v = float(f"{m}e{k}")  # exact decimal: 0.3, not 0.30000000000000004
            if lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
                out.append(v)
    return out


ALL_SUBS = (1, 2, 3, 4, 5, 6, 7, 8, 9)


def log_ticks(
    lo: float,
    hi: float,
    length_pt: float,
    *,
    horizontal: bool,
    label: Callable[[float], str] = seconds_label,
    size: float = FONT_SIZE,
) -> tuple[list[float], list[float], float, float]:
    """Labelled and unlabelled ticks of a log axis, and its limits (maybe widened).

    Labelled: the decades (every second, third ... one when even those do not fit), then 5
    and 2 of each decade wherever their labels fit. When the view holds fewer than two
    decades, 5 and 2 (and under a decade, every 1-9 step) wherever they fit; when that makes
    fewer than two labels (a narrow range, 52 to 58 ms), the view widens to the nearest 1-9
    steps around it (50 and 60 ms). Unlabelled: the other 1-9 steps. Labels never overlap
    (:func:`_fits`)."""

    def extent(value: float) -> float:
        return text_width_pt(label(value), size) if horizontal else LINE_EM * size

    def fits(values: Sequence[float]) -> bool:
        return _fits(values, lo, hi, length_pt, extent)

    def add_where_they_fit(chosen: list[float], candidates: Sequence[float]) -> list[float]:
        for v in sorted(candidates, key=lambda v: (_rank(v), v)):
            if v not in chosen and fits([*chosen, v]):
                chosen.append(v)
        return sorted(chosen)

    decades = _ticks(lo, hi, (1,))
    if len(decades) >= 2:
        for stride in range(1, 10):
            chosen = _ticks(lo, hi, (1,), stride)
            if (len(chosen) >= 2 and fits(chosen)) or stride == 9:
                break
        if stride == 1:
            chosen = add_where_they_fit(list(chosen), _ticks(lo, hi, (5, 2)))
        return chosen, _minor(lo, hi, chosen), lo, hi
    # A decade or more: 1-2-5 steps read as a scale; under a decade, any step does.
    steps = (5, 2) if hi / lo >= 10 else ALL_SUBS
    chosen = add_where_they_fit(list(decades), _ticks(lo, hi, steps))
    if len(chosen) < 2:  # widen to the 1-9 steps around the data
        below = [v for v in _ticks(lo / 10, lo, ALL_SUBS) if v <= lo]
        above = [v for v in _ticks(hi, hi * 10, ALL_SUBS) if v >= hi]
        lo, hi = (below[-1] if below else lo), (above[0] if above else hi)
        ends = _ticks(lo, hi, ALL_SUBS)
        chosen = add_where_they_fit([ends[0], ends[-1]], ends[1:-1])
    return chosen, _minor(lo, hi, chosen), lo, hi


def _rank(value: float) -> int:
    """Decades, then 5, then 2, then the other steps."""
    m = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
    return {1: 0, 5: 1, 2: 2}.get(m, 3)


def _minor(lo: float, hi: float, labelled: Sequence[float]) -> list[float]:
    taken = set(labelled)
    return [v for v in _ticks(lo, hi, ALL_SUBS) if v not in taken]


def _axis_length_pt(ax: Any, axis: str) -> float:
    box = ax.get_position()
    fig = ax.get_figure()
    if axis == "x":
        return box.width * fig.get_figwidth() * 72
    return box.height * fig.get_figheight() * 72


def seconds_axis(ax: Any, axis: str, low: float, high: float) -> None:
    """A log axis of seconds on ``ax`` (``axis`` "x" or "y") showing ``low`` to ``high`` (with
    a margin), ticks from :func:`log_ticks`."""
    low, high = max(low, 1e-6), max(high, low * 1.01, 1e-6)
    lo, hi = low / 1.15, high * 1.15
    major, minor, lo, hi = log_ticks(lo, hi, _axis_length_pt(ax, axis), horizontal=axis == "x")
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    target.set_major_locator(matplotlib.ticker.FixedLocator(major))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: seconds_label(v)))
    # The unlabelled 1-9 steps are drawn as one line of tick-shaped markers, not as minor
    # Tick objects: each Tick is several artists that matplotlib builds and lays out on every
    # draw, which made most of a million-sample report's figure time (~60 a panel).
    target.set_minor_locator(matplotlib.ticker.NullLocator())
    _minor_marks(ax, axis, minor)


def _minor_marks(ax: Any, axis: str, values: Sequence[float]) -> None:
    """Short marks outside ``axis`` of ``ax`` at ``values`` (data coordinates), sized and
    coloured like matplotlib's minor ticks (the ``xtick.minor.*`` / ``ytick.minor.*`` rc)."""
    if not values:
        return
    rc = matplotlib.rcParams
    prefix = "xtick" if axis == "x" else "ytick"
    if axis == "x":
        transform = matplotlib.transforms.blended_transform_factory(ax.transData, ax.transAxes)
        xs, ys, marker = list(values), [0.0] * len(values), matplotlib.lines.TICKDOWN
    else:
        transform = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
        xs, ys, marker = [0.0] * len(values), list(values), matplotlib.lines.TICKLEFT
    ax.plot(
        xs,
        ys,
        linestyle="none",
        marker=marker,
        markersize=rc[f"{prefix}.minor.size"],
        markeredgewidth=rc[f"{prefix}.minor.width"],
        color=rc[f"{prefix}.color"],
        transform=transform,
        clip_on=False,
        scalex=False,
        scaley=False,
        label="_minor ticks",
        zorder=2.5,
    )


def value_axis(ax: Any, values: Sequence[float], label: Callable[[float], str]) -> None:
    """A log x axis labelled at the measured ``values`` (sizes, concurrency levels): the ends
    first, then the others where their labels fit."""
    values = sorted(set(values))
    lo, hi = values[0] / 1.3, values[-1] * 1.3
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    length = _axis_length_pt(ax, "x")

    def extent(v: float) -> float:
        return text_width_pt(label(v))

    chosen = [values[0], values[-1]] if len(values) > 1 else list(values)
    for v in values[1:-1]:
        if _fits([*chosen, v], lo, hi, length, extent):
            chosen.append(v)
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(chosen)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: label(v)))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _ecdf_points(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = sorted_values.size
    if n <= ECDF_POINTS:
        return sorted_values, np.arange(1, n + 1) / n
    levels = np.linspace(0.0, 1.0, ECDF_POINTS)
    return np.quantile(sorted_values, levels), levels


#: Height above the panels for the provider legend, in inches.
LEGEND_H = 0.4


def _panel_grid(
    panels: int, *, panel_h: float, gap: float, bottom: float
) -> tuple[Any, np.ndarray]:
    """Up to three panels a row, 3.7 inches wide each, ``panel_h`` high, ``gap`` inches
    between rows (their titles and tick labels), ``bottom`` below the last row; room for
    the legend above the panels."""
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    top = LEGEND_H + 0.3
    width = 3.7 * ncols
    height = top + bottom + nrows * panel_h + (nrows - 1) * gap
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.75 / width,
        right=1 - 0.2 / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=0.3,
        hspace=gap / panel_h,
    )
    return fig, axes


def _legend_on_top(fig: Any, providers: Sequence[str], colors: Mapping[str, str], *,
                   patches: bool = False) -> None:  # fmt: skip
    """One provider legend above the plotting area, centred, in as many rows as it needs."""
    if patches:
        handles: list[Any] = [
            matplotlib.patches.Patch(facecolor=colors[p], alpha=0.8, label=p) for p in providers
        ]
    else:
        handles = [
            matplotlib.lines.Line2D([], [], color=colors[p], lw=2, label=p) for p in providers
        ]
    height = fig.get_figheight()
    fig.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.04 / height),
        ncols=min(len(handles), 6),
    )  # fmt: skip


def ecdf_figure(
    folder: Path,
    workload: str,
    groups_by_op: Mapping[str, Mapping[str, stats.Group]],
    colors: Mapping[str, str],
) -> FigureFile | None:
    """One panel per operation of ``groups_by_op`` (in its order) with any success."""
    ops = [op for op, by_provider in groups_by_op.items() if any(g.n for g in by_provider.values())]
    if not ops:
        return None
    providers = sorted({p for op in ops for p, g in groups_by_op[op].items() if g.n})
    with plt.rc_context(RC):
        fig, axes = _panel_grid(len(ops), panel_h=2.0, gap=0.7, bottom=0.4)
        for ax, op in zip(axes.flat, ops, strict=False):
            drawn = []
            for provider, group in sorted(groups_by_op[op].items()):
                if group.n == 0:
                    continue
                x, y = _ecdf_points(group.ok_sorted_s)
                x = np.maximum(x, 1e-6)  # a log axis cannot show 0 s
                ax.step(x, y, where="post", color=colors[provider], lw=1.4, label=provider)
                drawn.append(x)
            ax.set_title(op)
            ax.set_ylim(0, 1.02)
            seconds_axis(ax, "x", min(float(x[0]) for x in drawn), max(float(x[-1]) for x in drawn))
            ax.set_ylabel("fraction ≤ x")
        for ax in list(axes.flat)[len(ops) :]:
            ax.set_visible(False)
        _legend_on_top(fig, providers, colors)
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
    """One row per operation of ``groups_by_op`` (in its order), one box per provider."""
    ops = [
        op
        for op, by_provider in groups_by_op.items()
        if any(g.n >= MIN_BOX_N for g in by_provider.values())
    ]
    if not ops:
        return None
    providers = sorted({p for op in ops for p, g in groups_by_op[op].items() if g.n >= MIN_BOX_N})
    band = 0.8 / len(providers)
    with plt.rc_context(RC):
        row_h = max(0.38, 0.13 * len(providers) + 0.1)
        label_w = max(text_width_pt(op) for op in ops) / 72 + 0.25
        top, bottom = LEGEND_H + 0.15, 0.55
        fig_w, fig_h = 9.0, row_h * len(ops) + top + bottom
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=label_w / fig_w, right=1 - 0.25 / fig_w, bottom=bottom / fig_h,
            top=1 - top / fig_h,
        )  # fmt: skip
        low, high = math.inf, 0.0
        for j, provider in enumerate(providers):
            boxes, positions = [], []
            for i, op in enumerate(ops):
                group = groups_by_op[op].get(provider)
                if group is None or group.n < MIN_BOX_N:
                    continue
                p5, p25, p50, p75, p95 = np.quantile(
                    group.ok_sorted_s, [0.05, 0.25, 0.5, 0.75, 0.95]
                )
                p5 = max(p5, 1e-6)
                low, high = min(low, p5), max(high, p95)
                boxes.append(
                    {"med": p50, "q1": p25, "q3": p75, "whislo": p5, "whishi": p95,
                     "fliers": [], "label": op}
                )  # fmt: skip
                positions.append(i - 0.4 + band * (j + 0.5))
            if not boxes:
                continue
            ax.bxp(
                boxes,
                positions=positions,
                widths=band * 0.8,
                orientation="horizontal",
                showfliers=False,
                patch_artist=True,
                manage_ticks=False,
                boxprops={"facecolor": colors[provider], "alpha": 0.8, "lw": 0.8},
                medianprops={"color": "black", "lw": 1.2},
                whiskerprops={"color": colors[provider], "lw": 1},
                capprops={"color": colors[provider], "lw": 1},
            )
        ax.set_yticks(range(len(ops)), ops)
        ax.set_ylim(len(ops) - 0.5, -0.5)  # the first operation on top
        ax.grid(axis="y", visible=False)
        seconds_axis(ax, "x", low, high)
        ax.set_xlabel("duration")
        _legend_on_top(fig, providers, colors, patches=True)
        return save(
            fig,
            folder,
            f"box-{workload}",
            f"{workload}: spread per operation",
            "Box p25–p75, black line the median, whiskers p5–p95 (log scale); "
            f"groups with fewer than {MIN_BOX_N} successes are left out.",
        )


def _usd_axis(ax: Any) -> None:
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5, min_n_ticks=2))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _p: f"${v:.4g}"))


def session_cost_figure(
    folder: Path,
    rows: Sequence[tuple[str, float, float, float | None]],
    colors: Mapping[str, str],
    scenario_text: str,
    *,
    open_high: Collection[str] = (),
) -> FigureFile | None:
    """``rows``: (provider, compute_usd, storage_usd, snapshot_usd or None); the providers in
    ``open_high`` have no known upper end (a time neither measured nor claimed, counted at
    0 s): their bar is a lower bound, labelled "$x – ?"."""
    if not rows:
        return None
    with plt.rc_context(RC):
        names = [r[0] for r in rows]
        label_w = max(text_width_pt(n) for n in names) / 72 + 0.25
        top = LEGEND_H + 0.1
        width, height = 8.0, 0.45 * len(rows) + top + 0.55
        fig, ax = plt.subplots(figsize=(width, height))
        fig.subplots_adjust(
            left=label_w / width, right=1 - 0.2 / width, bottom=0.55 / height,
            top=1 - top / height,
        )  # fmt: skip
        compute = np.array([r[1] for r in rows])
        storage = np.array([r[2] for r in rows])
        snapshot = np.array([r[3] or 0.0 for r in rows])
        y = np.arange(len(rows))
        ax.barh(y, compute, color=[colors.get(n, "#888") for n in names], label="compute")
        ax.barh(y, storage, left=compute, color="#9aa5b1", label="storage")
        ax.barh(y, snapshot, left=compute + storage, color="#cbd2d9", label="snapshots")
        totals = compute + storage + snapshot
        for yi, total, row in zip(y, totals, rows, strict=True):
            label = f" ${total:.3f} – ?" if row[0] in open_high else f" ${total:.3f}"
            if row[3] is None:
                label += " + unknown snapshots"
            ax.text(total, yi, label, va="center", fontsize=8)
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlabel("USD per session")
        ax.set_xlim(0, max(float(totals.max()) * 1.45, 0.01))
        _usd_axis(ax)
        ax.grid(axis="y", visible=False)
        fig.legend(
            handles=[
                matplotlib.patches.Patch(facecolor="#5F5F5F", label="compute (provider colour)"),
                matplotlib.patches.Patch(facecolor="#9aa5b1", label="storage"),
                matplotlib.patches.Patch(facecolor="#cbd2d9", label="snapshots"),
            ],
            loc="upper center", bbox_to_anchor=(0.5, 1 - 0.04 / height), ncols=3,
        )  # fmt: skip
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
    """``rows``: (provider, workload, usd_p50 per iteration); one row per workload, one bar
    per provider."""
    rows = [r for r in rows if math.isfinite(r[2])]
    if not rows:
        return None
    workloads = list(dict.fromkeys(r[1] for r in rows))
    providers = sorted({r[0] for r in rows})
    band = 0.8 / len(providers)
    values = {(r[0], r[1]): r[2] for r in rows}
    with plt.rc_context(RC):
        row_h = max(0.4, 0.14 * len(providers) + 0.1)
        label_w = max(text_width_pt(w) for w in workloads) / 72 + 0.25
        top = LEGEND_H + 0.1
        fig_w, fig_h = 8.0, row_h * len(workloads) + top + 0.55
        fig, ax = plt.subplots(figsize=(fig_w, fig_h))
        fig.subplots_adjust(
            left=label_w / fig_w, right=1 - 0.3 / fig_w, bottom=0.55 / fig_h,
            top=1 - top / fig_h,
        )  # fmt: skip
        for j, provider in enumerate(providers):
            ys = [i - 0.4 + band * (j + 0.5) for i in range(len(workloads))]
            xs = [values.get((provider, w), 0.0) for w in workloads]
            ax.barh(ys, xs, height=band * 0.9, color=colors.get(provider, "#888"), label=provider)
        ax.set_yticks(range(len(workloads)), workloads)
        ax.set_ylim(len(workloads) - 0.5, -0.5)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("USD per iteration (p50)")
        _usd_axis(ax)
        _legend_on_top(fig, providers, {p: colors.get(p, "#888") for p in providers},
                       patches=True)  # fmt: skip
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
    ``scaled`` is operation -> provider -> points sorted by scale, in the order the panels
    are drawn (at most six); ``axis`` labels the x axis and ``noun`` names the scale in the
    title."""
    if not scaled:
        return None
    bases = list(scaled)[:6]
    providers = sorted({p for base in bases for p in scaled[base]})
    with plt.rc_context(RC):
        fig, axes = _panel_grid(len(bases), panel_h=2.2, gap=0.85, bottom=0.55)
        for ax, base in zip(axes.flat, bases, strict=False):
            xs: list[float] = []
            ys: list[float] = []
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
                    yerr=[np.nan_to_num(np.clip(p50 - low, 0, None)),
                          np.nan_to_num(np.clip(high - p50, 0, None))],
                    color=color,
                    marker="o",
                    ms=3.5,
                    lw=1.4,
                    capsize=2,
                    label=provider,
                )  # fmt: skip
                shown = np.isfinite(p95)
                if shown.any():
                    ax.plot(x[shown], p95[shown], color=color, lw=1, ls="--", alpha=0.7)
                xs += list(x)
                ys += [v for v in (*p50, *low, *high, *p95) if math.isfinite(v) and v > 0]
            ax.set_title(base)
            value_axis(ax, xs, lambda v: f"{v:g}")
            seconds_axis(ax, "y", min(ys), max(ys))
            ax.set_xlabel(axis)
        for ax in list(axes.flat)[len(bases) :]:
            ax.set_visible(False)
        _legend_on_top(fig, providers, {p: colors.get(p, "#888") for p in providers})
        return save(
            fig,
            folder,
            f"scaling-{workload}",
            f"{workload}: latency against {noun}",
            "Solid line: p50 with its 95 % interval; dashed: p95 where n supports it (log "
            "scales). A line that rises faster than the x axis means the cost grows faster "
            "than the work.",
        )
