"""By location: the same operations measured from different places, side by side.

A run on a cluster (bench/cluster.py) measures from several locations; every sample names
its ``location`` (and its host in ``extra["host"]``). This table puts the medians of each
(provider, workload, operation) per location next to each other, and compares each location
with the first one by name: ratio of medians with its bootstrap interval and a Mann-Whitney U
p-value, the same method as the provider comparisons. It appears when any sample carries a
location; samples without one are shown as "unlabelled".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench import stats
from bench.report.tables import Table, make_table
from bench.report.views import View

if TYPE_CHECKING:
    from bench.report.data import ReportData

UNLABELLED = "unlabelled"


def _hosts(frame: pd.DataFrame) -> dict[str, list[str]]:
    if "host" not in frame.columns:
        return {}
    pairs = frame[["location", "host"]].dropna().drop_duplicates()
    out: dict[str, list[str]] = {}
    for location, host in zip(pairs["location"], pairs["host"], strict=True):
        out.setdefault(str(location), []).append(str(host))
    return {k: sorted(v) for k, v in out.items()}


def location_table(frame: pd.DataFrame, *, include_warmups: bool, seed: int) -> Table | None:
    """Medians per location and each location against the first; None without locations."""
    if frame.empty or "location" not in frame.columns or not frame["location"].notna().any():
        return None
    columns = ["provider", "workload", "operation", "status", "duration_s", "warmup"]
    sub = frame[columns].copy()
    sub["location"] = frame["location"].astype(object).where(frame["location"].notna(), UNLABELLED)
    sub["host"] = frame["host"] if "host" in frame.columns else None
    group_map = stats.groups(
        sub,
        include_warmups=include_warmups,
        keys=("provider", "workload", "operation", "location"),
    )
    locations = sorted({key[3] for key in group_map})
    if not locations:
        return None
    reference, others = locations[0], locations[1:]
    by_op: dict[tuple[str, str, str], dict[str, stats.Group]] = {}
    for key, group in group_map.items():
        by_op.setdefault(key[:3], {})[key[3]] = group
    rows = []
    for (provider, workload, operation), per_location in by_op.items():
        cells = [provider, workload, operation]
        for location in locations:
            group = per_location.get(location)
            cells.append(_median_cell(group, seed) if group is not None else "–")
        for location in others:
            a, b = per_location.get(reference), per_location.get(location)
            cells.append(_ratio_cell(a, b, seed, (provider, workload, operation, location)))
        rows.append(cells)
    hosts = _hosts(sub)
    where = "; ".join(f"{loc}: {', '.join(hosts.get(loc, [])) or 'host not recorded'}"
                      for loc in locations)  # fmt: skip
    caption = f"Median (n successful, failures) per location. Hosts — {where}."
    if others:
        caption += (
            f" The ratio columns divide each location's median by {reference}'s (above 1: "
            "slower there), with a 95 % bootstrap interval and the Mann-Whitney U p-value."
        )
    return make_table(
        "locations",
        ["Provider", "Workload", "Operation"]
        + [f"{loc} p50" for loc in locations]
        + [f"{loc} / {reference}" for loc in others],
        rows,
        title="By location",
        caption=caption,
        align="lll" + "r" * (len(locations) + len(others)),
    )


def _median_cell(group: stats.Group, seed: int) -> str:
    row: Mapping[str, object] = stats.summarize_group(group, seed=seed)
    text = f"{stats.format_cell(row, 'p50')} (n={group.n}"
    if group.failures:
        text += f", {group.failures} failed"
    return text + ")"


def _ratio_cell(
    a: stats.Group | None, b: stats.Group | None, seed: int, key: tuple[str, ...]
) -> str:
    if a is None or b is None:
        return "–"
    result = stats.compare_samples(
        a.ok_sorted_s, b.ok_sorted_s, seed=stats.group_seed(seed, "location", *key)
    )
    if not result.computed:
        return result.reason
    text = stats.format_ratio(result.ratio)
    if np.isfinite(result.ci_low) and np.isfinite(result.ci_high):
        text += f" ({result.ci_low:.2f}–{result.ci_high:.2f})"
    p = result.p_value
    return text + (f", p {'<0.001' if p < 0.001 else f'{p:.3f}'}" if np.isfinite(p) else "")


def locations(data: ReportData) -> View | None:
    """The section: None when no sample names a location."""
    table = location_table(data.frame, include_warmups=data.include_warmups, seed=data.seed)
    if table is None:
        return None
    return View(id="locations", title=table.title, nav="By location", blocks=(table,))
