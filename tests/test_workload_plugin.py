"""A workload defined in this file alone, registered like a plugin, is everywhere a built-in is.

The toy declares its operations (a derived span among them), an extra with its unit, its
settings, and a report section of its own (a table, a figure and a collapsed part) and a
warning check. It runs through the real runner on the emulators' stub backend (no root, no
processes), into a real run folder; then ``sandbox-bench show``, the report (HTML, Markdown,
figures) and summary.csv include it, in its declared order, without any other module knowing
its name.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import matplotlib.pyplot as plt
import pytest

from bench import cost, stats
from bench.report import (
    Figure,
    Notes,
    ReportData,
    ReportSettings,
    ReportWarning,
    Severity,
    View,
    WorkloadReport,
    make_table,
    write_report,
)
from bench.report import figures as report_figures
from bench.runner import Recorder, Runner, make_plan
from bench.store import RunWriter, load_run, utc_now_iso
from bench.workloads import (
    WORKLOADS,
    Extra,
    Operation,
    Workload,
    register_workload,
    unregister_workload,
)
from bench.workloads.base import exit_zero
from providers.base import SandboxSpec
from providers.settings import setting
from providers.stub import StubProvider
from tests.report_parsing import html_tables, markdown_tables
from tests.synthetic import manifest

ITERATIONS = 6


# -- the toy: one file, nothing else edited -----------------------------------------------------


def cups_poured(data: ReportData, workload: str) -> View | None:
    """The toy's own section: cups per provider, a figure of them, a collapsed note."""
    frame = data.measured_frame()
    sub = frame[(frame["workload"].astype(str) == workload) & frame["cups"].notna()]
    if sub.empty:
        return None
    by_provider = sub.groupby(sub["provider"].astype(str), observed=True)["cups"].sum()
    table = make_table(
        f"{workload}-cups",
        ("Provider", "Cups poured"),
        [[p, f"{total:g}"] for p, total in by_provider.items()],
        title=f"{workload}: cups poured",
        caption="Every pour's cups (extra.cups), summed.",
        align="lr",
    )
    with plt.rc_context(report_figures.RC):
        fig, ax = plt.subplots(figsize=(4, 2.5))
        ax.bar(list(by_provider.index), list(by_provider.values))
        ax.set_ylabel("cups")
        drawn = report_figures.save(
            fig, data.figures_dir, f"{workload}-cups", f"{workload}: cups", "Cups per provider."
        )
    how = View(
        id=f"{workload}-how",
        title="How the toy pours",
        collapsed=True,
        blocks=(Notes(items=("One byte per cup, written with the provider's file API.",)),),
    )
    return View(title=table.title, blocks=(table, Figure.of(drawn), how))


def too_many_cups(data: ReportData) -> Iterator[ReportWarning]:
    frame = data.frame
    if "cups" in frame.columns and frame["cups"].max() > 1:
        yield ReportWarning(
            kind="toy", text="the toy poured more than one cup at once", severity=Severity.BUG
        )


TOY_REPORT = WorkloadReport(
    sections=(cups_poured,), checks=(too_many_cups,), flags=("toys that pour too much",)
)


@dataclass(frozen=True, kw_only=True)
class ToySettings:
    cups: int = setting(2, help="cups poured per iteration", unit="cups", minimum=1, maximum=9)


class Toy(Workload):
    """toy: create | boil (`true`) | pour (write ``cups`` bytes) | destroy; ``steep`` is the
    span from boil's start to pour's end (derived)."""

    name: ClassVar[str] = "toy"
    Settings: ClassVar[type] = ToySettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("boil", help="`true` in the sandbox"),
        Operation("steep", help="boil's start to pour's end", derived=True),
        Operation("pour", help="write the cups"),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (Extra("cups", int, unit="cups", help="cups poured"),)
    report: ClassVar[Any] = TOY_REPORT

    async def run(self, ctx) -> None:
        sandbox = await ctx.create()
        started_at, t0 = utc_now_iso(), time.perf_counter_ns()
        await ctx.timed(
            "boil",
            lambda: ctx.provider.exec(sandbox, ["true"], timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=exit_zero,
        )
        cups = self.settings.cups
        await ctx.timed(
            "pour",
            lambda: ctx.provider.write_file(sandbox, "/tmp/cups", b"c" * cups),
            sandbox=sandbox,
            extra={"cups": cups},
        )
        ctx.record_span(
            "steep",
            started_at=started_at,
            duration_s=(time.perf_counter_ns() - t0) / 1e9,
            sandbox=sandbox,
        )
        await ctx.destroy(sandbox)


# -- the run --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Iterator[Path]:
    register_workload(Toy)
    try:
        folder = tmp_path_factory.mktemp("results") / "20261128T130000Z-toytoy"
        provider = StubProvider()
        meta = manifest(
            folder.name, providers=("stub",), workloads=("toy",), iterations=ITERATIONS,
            warmup=0, seed=1,
        )  # fmt: skip
        meta["providers"] = {
            "stub": {
                "capabilities": provider.capabilities().to_dict(),
                "environment": provider.environment(),
            }
        }
        workload = WORKLOADS["toy"]({"cups": 3})
        meta["plan"]["workload_params"] = {"toy": workload.params}
        writer = RunWriter(folder, meta)
        try:
            runner = Runner(
                providers={"stub": provider},
                workloads={"toy": workload},
                spec=SandboxSpec(),
                recorder=Recorder(writer, run_id=folder.name, concurrency=1),
                timeout_s=30,
            )
            plan = make_plan(["stub"], ["toy"], iterations=ITERATIONS, warmup=0, seed=1)
            asyncio.run(runner.run(plan))
        finally:
            writer.close()
        yield folder
    finally:
        unregister_workload("toy")


@pytest.fixture
def registered():
    register_workload(Toy)
    yield
    unregister_workload("toy")


def test_the_toy_runs_through_the_real_runner_with_one_record_per_declared_operation(toy_run):
    run = load_run(toy_run)
    ops = [s.operation for s in run.samples]
    assert sorted(set(ops)) == ["boil", "create", "destroy", "pour", "steep"]
    assert len(ops) == 5 * ITERATIONS
    assert all(s.status == "ok" for s in run.samples)
    assert {s.extra.get("cups") for s in run.samples if s.operation == "pour"} == {3}


def test_show_lists_the_toy_in_its_declared_order(toy_run, registered, capsys):
    from bench.cli import main

    assert main(["show", str(toy_run)]) == 0
    out = capsys.readouterr().out
    # The toy's own table: under its title, one row per operation and provider.
    table = out.split("\ntoy\n", 1)[1].split("\n\n", 1)[0]
    lines = [line for line in table.splitlines() if " stub " in line]
    order = [next(op for op in ("create", "boil", "steep", "pour", "destroy") if op in line)
             for line in lines]  # fmt: skip
    assert order == ["create", "boil", "steep", "pour", "destroy"]  # not alphabetical


def test_the_report_shows_the_toys_tables_figures_section_and_warning(
    toy_run, registered, tmp_path
):
    report = write_report([toy_run], tmp_path / "reports")
    html = report.read_text(encoding="utf-8")
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    tables = dict(html_tables(html))
    _, *rows = tables["table-latency-toy"]
    assert [r[1] for r in rows] == ["create", "boil", "steep", "pour", "destroy"]
    assert tables["table-toy-cups"] == [["Provider", "Cups poured"], ["stub", f"{3 * ITERATIONS}"]]
    assert len(markdown_tables(md)) == len(html_tables(html))
    figures = {p.name for p in (report.parent / "figures").iterdir()}
    assert {"ecdf-toy.svg", "box-toy.svg", "toy-cups.svg"} <= figures
    assert 'id="fig-toy-cups"' in html and "](figures/toy-cups.svg)" in md
    assert '<details id="toy-how"><summary>How the toy pours</summary>' in html
    assert "#### How the toy pours" in md
    # Its check's warning is a harness bug, so it comes first; its flag is in the method.
    warnings = md.split("## Warnings")[1].split("## Capabilities")[0]
    first = next(line for line in warnings.splitlines() if line.startswith("- "))
    assert first == "- **toy**: the toy poured more than one cup at once"
    assert "toys that pour too much." in md
    with (report.parent / "summary.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["workload"] == "toy"]
    assert [r["operation"] for r in rows] == ["create", "boil", "steep", "pour", "destroy"]
    assert all(int(r["n"]) == ITERATIONS for r in rows)


def test_the_toys_derived_span_is_not_billed_and_its_extra_is_a_column(toy_run, registered):
    frame = stats.samples_frame(load_run(toy_run).samples)
    assert "cups" in stats.frame_columns() and set(frame["cups"].dropna()) == {3.0}
    assert stats.is_derived("steep", "toy") and not stats.is_derived("pour", "toy")
    spec = cost.Shape(cpus=1, memory_gib=1)
    [row] = cost.workload_costs(frame, cost.load_catalog(), spec).to_dict("records")
    ok = frame[frame["operation"].astype(str) != "steep"]
    per_iteration = ok.groupby("iteration")["duration_s"].sum().sort_values()
    assert row["billed_p50_s"] == pytest.approx(per_iteration.median())  # stub is not priced


def test_unregistered_the_toys_records_still_report_in_a_stable_order(toy_run, tmp_path):
    assert "toy" not in WORKLOADS
    report = write_report([toy_run], tmp_path / "reports")
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    ops = [r[1] for r in tables["table-latency-toy"][1:]]
    assert ops[0] == "create" and set(ops) == {"create", "boil", "steep", "pour", "destroy"}
    assert "table-toy-cups" not in tables  # its own section comes with its registration


def test_a_report_shows_only_the_sections_asked_for_in_report_order(toy_run, registered, tmp_path):
    settings = ReportSettings(sections=("warnings", "glance"))
    report = write_report([toy_run], tmp_path / "reports", settings=settings)
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert headings == ["## At a glance", "## Warnings"]
    html = report.read_text(encoding="utf-8")
    assert '<a href="#latency">' not in html and '<a href="#glance">' in html
    assert (report.parent / "summary.csv").is_file()  # the CSV is written whatever is shown


def test_a_plugin_section_goes_where_it_is_registered_and_can_be_chosen(toy_run, tmp_path):
    from bench.report import register_section, section_names
    from bench.report.registry import SECTIONS

    def runs_counted(data: ReportData) -> View:
        return View(id="counted", title="Runs counted", nav="Counted",
                    intro=(f"{len(data.run_ids)} run(s).",))  # fmt: skip

    saved = dict(SECTIONS)
    try:
        register_section("counted", runs_counted, before="warnings")
        assert section_names().index("counted") == section_names().index("warnings") - 1
        with pytest.raises(ValueError, match="already registered"):
            register_section("counted", runs_counted)
        settings = ReportSettings(sections=("counted", "run"))
        md = write_report([toy_run], tmp_path / "r", settings=settings).parent / "report.md"
        headings = [line for line in md.read_text().splitlines() if line.startswith("## ")]
        assert headings == ["## Where, when and how", "## Runs counted"]
        assert "1 run(s)." in md.read_text()
    finally:
        SECTIONS.clear()
        SECTIONS.update(saved)
    with pytest.raises(ValueError, match="unknown report section"):
        ReportSettings(sections=("counted",))
