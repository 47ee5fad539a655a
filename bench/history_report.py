"""The history's page: flagged changes, trend figures, the latest level of every series, the
runs; written as history.html, history.md, history.csv, changes.csv and figures/.

Trend figures (one per workload and location, a panel per operation): each provider's p50 as
a solid line with its 95 % interval as a band, its p95 dashed with a fainter band, over the
runs' start times, on a log time axis. A provider whose SDK version changed is drawn as
separate lines, each series with its own marker (the notes say where). A flagged change is
a red triangle at the first run of the new level (pointing up: slower).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np

from bench import pages
from bench.history import History, Point, SeriesKey
from bench.report import figures
from bench.report.tables import make_table
from bench.report.views import Figure, Notes, Text, View
from bench.stats import format_duration, format_interval, format_percent, sort_key

MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def _panel_key(key: SeriesKey) -> tuple[str, str]:
    return (key.workload, key.location)


def trend_figure(
    folder: Path,
    workload: str,
    location: str,
    series: Mapping[SeriesKey, Sequence[Point]],
    changes: Sequence,
    colors: Mapping[str, str],
    name: str,
) -> figures.FigureFile | None:
    ops: list[str] = []
    for key in series:
        if key.operation not in ops:
            ops.append(key.operation)
    if not ops:
        return None
    flagged = {(c.key, c.run_id, c.statistic) for c in changes}
    with plt.rc_context(figures.RC):
        fig, axes = figures._panel_grid(len(ops), panel_h=2.5, gap=0.8, bottom=0.55)
        sdk_index: dict[str, list[str]] = {}
        for ax, op in zip(axes.flat, ops, strict=False):
            drawn: list[float] = []
            for key, points in series.items():
                if key.operation != op:
                    continue
                sdks = sdk_index.setdefault(key.provider, [])
                if key.sdk not in sdks:
                    sdks.append(key.sdk)
                marker = MARKERS[sdks.index(key.sdk) % len(MARKERS)]
                color = colors[key.provider]
                x = np.array(
                    [p.started_at.astimezone(UTC).replace(tzinfo=None) for p in points],
                    dtype="datetime64[us]",
                )
                for stat, style, alpha in (("p50", "-", 0.22), ("p95", "--", 0.09)):
                    est = np.array([p.stat(stat)[0] for p in points])
                    low = np.array([p.stat(stat)[1] for p in points])
                    high = np.array([p.stat(stat)[2] for p in points])
                    shown = np.isfinite(est) & (est > 0)
                    if not shown.any():
                        continue
                    ax.plot(x[shown], est[shown], style, color=color, lw=1.3, marker=marker,
                            ms=3 if stat == "p50" else 0)  # fmt: skip
                    drawn.extend(est[shown].tolist())
                    band = shown & np.isfinite(low) & np.isfinite(high) & (low > 0)
                    if band.any():
                        drawn.extend(low[band].tolist() + high[band].tolist())
                        ax.fill_between(x[band], low[band], high[band], color=color,
                                        alpha=alpha, lw=0)  # fmt: skip
                    for i, p in enumerate(points):
                        if (key, p.run_id, stat) in flagged and shown[i]:
                            ax.plot([x[i]], [est[i]], marker="^", color="#b42318", ms=8,
                                    markeredgecolor="white", zorder=5)  # fmt: skip
            ax.set_title(op)
            if drawn:
                figures.seconds_axis(ax, "y", min(drawn), max(drawn))
            else:
                ax.set_yscale("log")
            locator = mdates.AutoDateLocator(minticks=3, maxticks=6)
            ax.xaxis.set_major_locator(locator)
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
            ax.set_ylabel("p50 (—), p95 (- -)")
        for ax in list(axes.flat)[len(ops) :]:
            ax.set_visible(False)
        figures._legend_on_top(fig, sorted(colors), colors)
        where = f" at {location}" if location else ""
        return figures.save(
            fig,
            folder,
            name,
            f"{workload}{where}: latency over time",
            "Each provider's p50 (solid, band: its 95 % interval) and p95 (dashed, fainter band) "
            "per run, by the run's start time; a red triangle marks a flagged change (the first "
            "run at the new level). Separate markers: separate SDK versions (separate series).",
        )


def _ci(point: Point, stat: str) -> str:
    est, low, high = point.stat(stat)
    if not math.isfinite(est):
        return "n too small"
    interval = format_interval(low, high)
    return f"{format_duration(est)}" + (f" ({interval})" if interval else "")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"


def views(history: History, figures_dir: Path, *, prefix: str = "history") -> tuple[View, ...]:
    """The page's sections: changes, trends, latest levels, runs."""
    providers = sorted({k.provider for k in history.series})
    colors = figures.provider_colors(providers)
    rule = (
        f"A change is flagged at a run when the 95 % intervals of the {history.window} runs "
        f"before it and the {history.window} runs from it on do not overlap, and the levels "
        f"differ by at least {history.threshold:.0%} (p50; p95 only where n >= 72). Series are "
        "per provider, operation, location and SDK version; nothing is compared across them."
    )
    if history.changes:
        rows = []
        for c in history.changes:
            rows.append(
                [
                    c.key.provider,
                    f"{c.key.workload}/{c.key.operation}",
                    c.key.location or "–",
                    c.statistic,
                    c.direction,
                    f"{c.ratio:.2f}×",
                    _when(c.started_at),
                    c.run_id,
                    "; ".join(_ci(p, c.statistic) for p in c.before),
                    "; ".join(_ci(p, c.statistic) for p in c.after),
                ]
            )
        block: object = make_table(
            f"{prefix}-changes",
            ("provider", "operation", "location", "stat", "change", "ratio", "from", "run",
             "before (95 % CI)", "after (95 % CI)"),
            rows,
            align="llllllllll",
        )  # fmt: skip
    else:
        block = Text(text=f"No change flagged over {len(history.runs)} runs.")
    changes = View(
        id=f"{prefix}-changes", title="Changes", nav="Changes", intro=(rule,), blocks=(block,)
    )

    by_panel: dict[tuple[str, str], dict[SeriesKey, Sequence[Point]]] = {}
    for key, points in history.series.items():
        by_panel.setdefault(_panel_key(key), {})[key] = points
    figure_views = []
    for (workload, location), series in by_panel.items():
        name = f"{prefix}-{workload}" + (f"-{location}" if location else "")
        mine = [c for c in history.changes if _panel_key(c.key) == (workload, location)]
        fig = trend_figure(figures_dir, workload, location, series, mine, colors, name)
        figure_views.append(Figure.of(fig))
    trends = View(id=f"{prefix}-trends", title="Trends", nav="Trends", blocks=tuple(figure_views))

    latest_rows = []
    for key, points in history.series.items():
        last = points[-1]
        attempts = sum(p.attempts for p in points)
        failures = sum(p.failures for p in points)
        latest_rows.append(
            [
                key.provider,
                f"{key.workload}/{key.operation}",
                key.location or "–",
                key.sdk or "–",
                str(len(points)),
                _when(last.started_at),
                _ci(last, "p50"),
                _ci(last, "p95"),
                format_percent(failures / attempts) if attempts else "–",
            ]
        )
    latest = View(
        id=f"{prefix}-series",
        title="Every series, latest run",
        nav="Series",
        collapsed=True,
        blocks=(
            make_table(
                f"{prefix}-series",
                (
                    "provider",
                    "operation",
                    "location",
                    "SDK",
                    "runs",
                    "latest run",
                    "p50 (95 % CI)",
                    "p95 (95 % CI)",
                    "failures (all runs)",
                ),
                latest_rows,
                align="llllrlrrr",
            ),
        ),
    )
    run_rows = [
        [
            r.run_id,
            _when(r.started_at),
            r.status,
            r.location or "–",
            f"{r.samples:,}",
            r.harness,
            "; ".join(f"{p}: {v}" for p, v in sorted(r.sdks.items()) if v) or "–",
        ]
        for r in history.runs
    ]
    notes = list(history.notes) + [f"left out: {s}" for s in history.skipped]
    notes += [f"{r.run_id}: {w}" for r in history.runs for w in r.warnings]
    runs = View(
        id=f"{prefix}-runs",
        title="Runs",
        nav="Runs",
        blocks=(
            Notes(items=tuple(notes)) if notes else None,
            make_table(
                f"{prefix}-runs",
                ("run", "started", "status", "location", "samples", "harness", "SDKs"),
                run_rows,
                align="llllrll",
            ),
        ),
    )
    return (changes, trends, latest, runs)


def order_key(key: SeriesKey) -> tuple:
    return (sort_key(key.provider, key.workload, key.operation), key.location, key.sdk)


def write_history(history: History, out: Path, *, sections: tuple[View, ...] | None = None) -> Path:
    """history.html, history.md, history.csv, changes.csv and figures/ in ``out``; returns
    history.html's path. ``sections``: the views already drawn into ``out/figures``."""
    import shutil

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if sections is None:
        figures_dir = out / "figures"
        if figures_dir.exists():
            shutil.rmtree(figures_dir)
        figures_dir.mkdir()
        sections = views(history, figures_dir)
    first, last = history.runs[0].started_at, history.runs[-1].started_at
    page = pages.Page(
        title="Sandbox benchmark history",
        subtitle=(
            f"{len(history.runs)} runs from {_when(first)} to {_when(last)} · "
            f"{len(history.series)} series · {len(history.changes)} change(s) flagged"
        ),
        generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        footer=(
            "Generated by sandbox-bench history from the raw samples of every run listed (through "
            "their summary caches). Every point is in history.csv, every flagged change in "
            "changes.csv; figures are in figures/."
        ),
        sections=sections,
        run_ids=tuple(r.run_id for r in history.runs),
    )
    history.points_frame().to_csv(out / "history.csv", index=False, float_format="%.9g")
    history.changes_frame().to_csv(out / "changes.csv", index=False, float_format="%.9g")
    (out / "history.md").write_text(pages.render_markdown(page), encoding="utf-8")
    path = out / "history.html"
    path.write_text(pages.render_html(page), encoding="utf-8")
    return path


__all__ = ["trend_figure", "views", "write_history"]
