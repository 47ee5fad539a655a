"""Figures that read at a glance: every figure of a four-provider report over all the default
workloads has tick labels that do not overlap (read from the SVGs), log axes with at least
two labels, one colour per provider everywhere, operations in declared order, scaled
operations as curves."""

from __future__ import annotations

import itertools
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextToPath

from bench.config import load_toml
from bench.report import ReportSettings, write_report
from bench.report.figures import (
    LABEL_GAP_PT,
    PROVIDER_COLORS,
    log_ticks,
    provider_colors,
    seconds_label,
    text_width_pt,
)
from bench.report.sections.latency import drawn_operations
from tests.synthetic import PROVIDERS, make_run

ROOT = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"
#: The workloads `make run` runs (bench.toml).
DEFAULT_WORKLOADS = tuple(load_toml(ROOT / "bench.toml")["run"]["workloads"])


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("figures")
    run = make_run(
        root / "results", providers=PROVIDERS, workloads=DEFAULT_WORKLOADS, iterations=20, seed=3
    )
    report = write_report([run], root / "reports", settings=ReportSettings())
    return report.parent / "figures"


def _rotation(transform: str) -> tuple[float, float, float]:
    found = re.search(r"rotate\(([-\d.e]+)(?:[ ,]+([-\d.e]+)[ ,]+([-\d.e]+))?\)", transform or "")
    if found is None:
        return 0.0, 0.0, 0.0
    return float(found[1]), float(found[2] or 0), float(found[3] or 0)


def tick_labels(svg: bytes) -> list[tuple[str, str, tuple[float, float, float, float]]]:
    """(axis id, text, box x0, y0, x1, y1 in SVG points) of every tick label, from the
    ``<text>`` elements matplotlib writes in each ``xtick_N`` / ``ytick_N`` group, measured
    with the font it names (DejaVu Sans)."""
    root = ET.fromstring(svg)
    measure = TextToPath()
    out = []
    for axis in root.iter(f"{SVG}g"):
        if not (axis.get("id") or "").startswith("matplotlib.axis_"):
            continue
        for tick in axis:
            if not re.fullmatch(r"[xy]tick_\d+", tick.get("id") or ""):
                continue
            for text in tick.iter(f"{SVG}text"):
                content = "".join(text.itertext()).strip()
                if not content:
                    continue
                style = text.get("style") or ""
                size = float(re.search(r"font-size: ([\d.]+)px", style)[1])
                anchor = (re.search(r"text-anchor: (\w+)", style) or [None, "start"])[1]
                prop = FontProperties(family="DejaVu Sans", size=size)
                width, height, descent = measure.get_text_width_height_descent(
                    content, prop, ismath=False
                )
                x, y = float(text.get("x")), float(text.get("y"))
                x0 = {"middle": x - width / 2, "end": x - width}.get(anchor, x)
                corners = [(x0, y - height + descent), (x0 + width, y + descent)]
                corners += [(x0, y + descent), (x0 + width, y - height + descent)]
                angle, cx, cy = _rotation(text.get("transform"))
                if angle:
                    a = math.radians(angle)
                    corners = [
                        (cx + (px - cx) * math.cos(a) - (py - cy) * math.sin(a),
                         cy + (px - cx) * math.sin(a) + (py - cy) * math.cos(a))
                        for px, py in corners
                    ]  # fmt: skip
                xs, ys = [c[0] for c in corners], [c[1] for c in corners]
                out.append((axis.get("id"), content, (min(xs), min(ys), max(xs), max(ys))))
    return out


def overlap(a: tuple[float, ...], b: tuple[float, ...], tolerance: float = 0.5) -> bool:
    return (
        a[0] < b[2] - tolerance
        and b[0] < a[2] - tolerance
        and a[1] < b[3] - tolerance
        and b[1] < a[3] - tolerance
    )


def test_the_report_has_every_figure_kind(figures_dir):
    names = {p.name for p in figures_dir.iterdir()}
    for workload in ("lifecycle", "checkpoint", "pause_resume", "idle_wake"):
        assert {f"ecdf-{workload}.svg", f"box-{workload}.svg"} <= names
    assert {"scaling-checkpoint_scaling.svg", "scaling-concurrency_scaling.svg"} <= names
    assert {"cost-session.svg", "cost-workload.svg"} <= names


def test_no_two_tick_labels_overlap_in_any_figure(figures_dir):
    figures = sorted(figures_dir.glob("*.svg"))
    assert len(figures) >= 20
    for path in figures:
        labels = tick_labels(path.read_bytes())
        assert labels, f"{path.name}: no tick labels found (text drawn as paths?)"
        for (axis_a, text_a, box_a), (axis_b, text_b, box_b) in itertools.combinations(labels, 2):
            assert not overlap(box_a, box_b), (
                f"{path.name}: {text_a!r} ({axis_a}) overlaps {text_b!r} ({axis_b})"
            )


def test_every_axis_has_at_least_two_labels(figures_dir):
    for path in sorted(figures_dir.glob("*.svg")):
        per_axis: dict[str, int] = {}
        for axis, _text, _box in tick_labels(path.read_bytes()):
            per_axis[axis] = per_axis.get(axis, 0) + 1
        for axis, count in per_axis.items():
            assert count >= 2, f"{path.name}: {axis} has {count} label"


def test_a_provider_has_one_colour_in_every_figure(figures_dir):
    for path in figures_dir.glob("*.svg"):
        text = path.read_text()
        for provider in PROVIDERS:
            if f">{provider}<" in text:  # in the figure's legend or labels
                assert PROVIDER_COLORS[provider].lower() in text.lower(), (path.name, provider)


def test_scaled_operations_are_curves_not_boxes(figures_dir):
    box = (figures_dir / "box-checkpoint_scaling.svg").read_text()
    assert "checkpoint_16mb" not in box and ">create<" in box
    assert not (figures_dir / "box-concurrency_scaling.svg").exists()  # all of it is scaled
    curves = (figures_dir / "scaling-checkpoint_scaling.svg").read_text()
    assert ">checkpoint<" in curves and ">restore<" in curves


def test_operations_are_in_declared_order_not_alphabetical():
    ops = {name: {} for name in ("restore", "create", "checkpoint", "write_state", "verify")}
    assert list(drawn_operations("checkpoint", ops)) == [
        "create", "write_state", "checkpoint", "restore", "verify"
    ]  # fmt: skip
    scaled = {name: {} for name in ("checkpoint_64mb", "create", "checkpoint_1mb", "destroy")}
    assert list(drawn_operations("checkpoint_scaling", scaled)) == ["create", "destroy"]
    single = {name: {} for name in ("checkpoint_64mb", "create")}  # one size: no curve
    assert list(drawn_operations("checkpoint_scaling", single)) == ["create", "checkpoint_64mb"]


def test_colours_are_fixed_when_providers_are_added():
    few = provider_colors(["e2b", "local"])
    many = provider_colors(["e2b", "local", "modal", "daytona", "acme", "zeta"])
    assert few["e2b"] == many["e2b"] == PROVIDER_COLORS["e2b"]
    assert few["local"] == many["local"]
    assert provider_colors(["acme"])["acme"] == provider_colors(["acme", "e2b"])["acme"]
    assert len(set(many.values())) == len(many)


@settings(max_examples=300, deadline=None)
@given(
    low=st.floats(1e-6, 100.0),
    ratio=st.floats(1.001, 1e7),
    length=st.floats(120.0, 800.0),
    horizontal=st.booleans(),
)
def test_log_ticks_label_at_least_two_values_that_never_overlap(low, ratio, length, horizontal):
    hi = low * ratio
    major, minor, lo2, hi2 = log_ticks(low, hi, length, horizontal=horizontal)
    assert lo2 <= low and hi2 >= hi
    assert len(major) >= 2
    assert all(lo2 * (1 - 1e-9) <= v <= hi2 * (1 + 1e-9) for v in major)
    assert not set(major) & set(minor)
    span = math.log10(hi2) - math.log10(lo2)

    def extent(v: float) -> float:
        return text_width_pt(seconds_label(v)) if horizontal else 1.17 * 9

    spots = sorted((length * (math.log10(v) - math.log10(lo2)) / span, extent(v)) for v in major)
    for (p, w), (q, u) in itertools.pairwise(spots):
        assert q - u / 2 - (p + w / 2) >= LABEL_GAP_PT - 1e-6


def test_a_narrow_range_widens_to_the_steps_around_it():
    major, _minor, lo, hi = log_ticks(0.052, 0.058, 200, horizontal=True)
    assert (lo, hi) == (0.05, 0.06)
    assert [seconds_label(v) for v in major] == ["50 ms", "60 ms"]


def test_decades_first_and_minor_labels_only_where_they_fit():
    wide = log_ticks(0.001, 10.0, 600, horizontal=True)[0]
    assert [seconds_label(v) for v in wide][:4] == ["1 ms", "2 ms", "5 ms", "10 ms"]
    narrow = log_ticks(0.001, 10.0, 150, horizontal=True)[0]
    assert all(round(math.log10(v), 9).is_integer() for v in narrow)


def test_the_overlap_check_finds_crowded_labels():
    """The check itself can fail: matplotlib's own 1-9 log ticks, all labelled, on a short
    axis overlap, and the boxes read back from the SVG say so."""
    import io

    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from bench.report.figures import RC

    with plt.rc_context(RC):
        fig, ax = plt.subplots(figsize=(2.5, 1.5))
        ax.set_xscale("log")
        ax.set_xlim(0.05, 0.5)
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=range(1, 10)))
        ax.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _p: seconds_label(v))
        )
        buffer = io.BytesIO()
        fig.savefig(buffer, format="svg")
        plt.close(fig)
    labels = tick_labels(buffer.getvalue())
    assert len(labels) > 5
    assert any(overlap(a[2], b[2]) for a, b in itertools.combinations(labels, 2))
