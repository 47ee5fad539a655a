"""What the CLI prints fits the terminal: tables at any width (property tests), the real
``providers``, ``show`` and ``compare`` at 80 and 120 columns (no word split, no cell cut
without a legend), their CSV and JSON, and the progress lines of a run outside a terminal."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from bench.cli import provider_records, providers_grid, show_grids
from bench.compare import compare_runs
from bench.stats import summarize
from bench.store import load_run
from bench.terminal import (
    ABBREVIATIONS,
    NOT_SHOWN,
    RECORDS,
    Column,
    Grid,
    TerminalProgress,
    abbreviation,
    format_elapsed,
    layouts,
    print_tables,
    words,
)
from tests.synthetic import EXTRA_WORKLOADS, WORKLOADS, make_run

ROOT = Path(__file__).resolve().parents[1]
WIDTHS = (80, 120)


def normal(token: str) -> str:
    """A word without the punctuation prose puts around it."""
    return token.strip("()").rstrip(";,:").strip("()")


def legend_of(text: str) -> dict[str, str]:
    """Short form -> full word, from an ``abbreviations:`` paragraph (it wraps at spaces)."""
    joined = " ".join(line.strip() for line in text.splitlines())
    found = re.search(r"abbreviations: (.*?)(?: not shown at this width| abbreviations:|$)", joined)
    if found is None:
        return {}
    return dict(re.findall(r"(\S+) = (\S+?)(?:;|$|\s)", found.group(1)))


def check_fits(text: str, width: int, grids: list[Grid], also: str = "") -> None:
    """``text`` (what was printed at ``width``) has no line wider than ``width``, no word
    that is not a word of the tables (or of ``also``: the other lines the command prints),
    every word of every shown cell (whole, or abbreviated with a legend), and names the
    columns it left out."""
    lines = text.splitlines()
    assert all(cell_len(line.rstrip()) <= width for line in lines), "a line is too wide"
    assert "…" not in text
    legend = legend_of(text)
    vocabulary = {normal(w) for w in words(also)}
    vocabulary |= {normal(w) for w in words(ABBREVIATIONS + " " + NOT_SHOWN)}
    vocabulary |= {"=", "–", *legend, *legend.values()}  # "–": an empty cell in a block
    for grid in grids:
        vocabulary |= {normal(w) for w in words(grid.title + " " + " ".join(grid.notes))}
        for column in grid.columns:
            vocabulary |= {normal(w) for w in words(column.name)}
        vocabulary |= {normal(w) for row in grid.rows for cell in row for w in words(cell)}
    printed = {normal(w) for w in words(text) if not re.fullmatch("─+", w)}  # header rules
    assert printed - vocabulary == set(), "split or unknown words"
    short_of = {full: short for short, full in legend.items()}
    for grid, how in zip(grids, layouts(grids, width), strict=True):
        for i in how.shown:
            for row in grid.rows:
                for word in words(row[i]):
                    shown = normal(short_of.get(word, word))
                    assert shown in printed, f"{word!r} of {grid.columns[i].name} is missing"
        for name in how.dropped(grid):
            joined = " ".join(line.strip() for line in lines)
            assert re.search(r"not shown at this width: [^(]*" + re.escape(name), joined), name


def cli(*args: str, width: int) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": str(width)},
    )
    assert result.returncode in (0, 3), result.stderr
    return result


# -- tables at any width ----------------------------------------------------------------------

_word = st.text(alphabet="abcdefghij", min_size=1, max_size=8)
_identifier = st.lists(_word, min_size=2, max_size=3).map("_".join)
_cell = st.lists(st.one_of(_word, _identifier), min_size=0, max_size=5).map(" ".join)


@st.composite
def grids(draw) -> Grid:
    ncols = draw(st.integers(1, 7))
    columns = tuple(
        Column(
            name=f"c{i}" + draw(st.sampled_from(["", " name", "_long_name"])),
            justify=draw(st.sampled_from(["left", "right"])),
            wrap=draw(st.booleans()),
            abbreviate=draw(st.booleans()),
            optional=0 if i == 0 else draw(st.integers(0, 2)),
            min_width=draw(st.sampled_from([0, 0, 15])),
        )
        for i in range(ncols)
    )
    rows = draw(st.lists(st.tuples(*[_cell] * ncols), min_size=0, max_size=6))
    return Grid(title=draw(_word), columns=columns, rows=tuple(rows))


@settings(max_examples=150, deadline=None)
@given(grid=grids(), width=st.integers(40, 200))
def test_a_table_fits_any_width_without_splitting_a_word(grid, width):
    console = Console(width=width, record=True, file=io.StringIO())
    print_tables(console, [grid])
    check_fits(console.export_text(), width, [grid])


@settings(max_examples=60, deadline=None)
@given(grid=grids(), width=st.integers(40, 200))
def test_the_layout_takes_the_first_step_that_fits(grid, width):
    (how,) = layouts([grid], width)
    if how.step == RECORDS:
        return
    used = sum(how.widths) + 2 * (len(how.shown) - 1)
    assert used <= width
    if how.step == 0:
        assert how.shown == tuple(range(len(grid.columns))) and not how.abbreviations


def test_tables_printed_together_show_the_same_columns():
    columns = (Column(name="operation", abbreviate=True), Column(name="p", optional=1))
    narrow = Grid(title="a", columns=columns, rows=(("first_exec_after_restore", "0.5"),))
    wide = Grid(title="b", columns=columns, rows=(("create", "0.5"),))
    first, second = layouts([narrow, wide], 26)
    assert first.shown == second.shown == (0,)


def test_identifiers_are_abbreviated_to_initials_and_their_last_part():
    assert abbreviation("first_exec_after_restore") == "fea_restore"
    assert abbreviation("delete_checkpoint_64mb") == "dc_64mb"
    assert abbreviation("create") is None  # short words stay
    assert abbreviation("capabilities") is None  # not an identifier


def test_columns_left_out_are_named_under_the_table():
    grid = Grid(
        title="t",
        columns=(
            Column(name="name"),
            Column(name="detail", wrap=False, optional=1),
        ),
        rows=(("alpha", "x" * 30),),
    )
    console = Console(width=20, record=True, file=io.StringIO())
    print_tables(console, [grid])
    text = console.export_text()
    assert "alpha" in text and "xxxx" not in text
    assert "not shown at this width: detail" in " ".join(text.split())


# -- the commands at 80 and 120 columns -------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A run, one with e2b slower, and one with e2b slower and other SDKs and concurrency."""
    root = tmp_path_factory.mktemp("results")
    every = WORKLOADS + EXTRA_WORKLOADS
    a = make_run(root, "A-terminal", workloads=every, iterations=12, seed=1)
    b = make_run(root, "B-terminal", workloads=every, iterations=12, seed=2, scale={"e2b": 1.5})
    c = make_run(root, "C-terminal", workloads=every, iterations=12, seed=3, scale={"e2b": 1.5})
    manifest = json.loads((c / "manifest.json").read_text())
    manifest["plan"]["concurrency"] = 4
    manifest["providers"]["e2b"]["environment"]["sdk_versions"] = {"e2b-sdk": "9.0.0"}
    (c / "manifest.json").write_text(json.dumps(manifest))
    return a, b, c


@pytest.mark.parametrize("width", WIDTHS)
def test_providers_fits_the_terminal(width):
    grids = [providers_grid(provider_records())]
    result = cli("providers", width=width)
    check_fits(result.stdout, width, grids)


@pytest.mark.parametrize("width", WIDTHS)
def test_show_fits_the_terminal(runs, width):
    rows = summarize(load_run(runs[0]).samples).to_dict("records")
    grids = show_grids(rows)
    wide = cli("show", str(runs[0]), width=400).stdout
    result = cli("show", str(runs[0]), width=width)
    check_fits(result.stdout, width, grids, also=wide)
    assert "checkpoint_scaling" in result.stdout


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("other", ["slower", "slower and different"])
def test_compare_fits_the_terminal(runs, width, other):
    a, b = runs[0], runs[1] if other == "slower" else runs[2]
    force = () if other == "slower" else ("--force",)
    comparison = compare_runs(a, b, force=bool(force))
    grids = [comparison._grid(w, rows) for w, rows in _workloads(comparison)]
    wide = cli("compare", str(a), str(b), "--all", *force, width=400).stdout
    result = cli("compare", str(a), str(b), "--all", *force, width=width)
    check_fits(result.stdout, width, grids, also=wide)
    assert " ".join(result.stdout.split()).endswith(" ".join(comparison.summary().split()))
    if force:
        assert "differs" in result.stdout and "(2) e2b's SDK e2b-sdk" in result.stdout


def _workloads(comparison):
    from bench.compare import _by_workload

    return list(_by_workload(comparison.rows))


def test_show_csv_and_json_parse(runs):
    as_csv = cli("show", str(runs[0]), "--format", "csv", width=80).stdout
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    as_json = json.loads(cli("show", str(runs[0]), "--format", "json", width=80).stdout)
    assert len(rows) == len(as_json["rows"]) > 100
    assert float(rows[0]["p50_s"]) == pytest.approx(as_json["rows"][0]["p50_s"])
    assert as_json["run_id"] == "A-terminal"


def test_providers_csv_and_json_parse():
    as_json = json.loads(cli("providers", "--format", "json", width=80).stdout)
    rows = list(csv.DictReader(io.StringIO(cli("providers", "--format", "csv", width=80).stdout)))
    assert [r["provider"] for r in as_json] == [r["provider"] for r in rows]
    assert {"local", "stub", "e2b"} <= {r["provider"] for r in as_json}
    local = next(r for r in as_json if r["provider"] == "local")
    assert "create" in local["operations"] and local["credentials"] == []


# -- progress ---------------------------------------------------------------------------------


class Item:
    def __init__(self, provider: str, workload: str, warmup: bool = False, i: int = 0) -> None:
        self.provider, self.workload, self.warmup, self.iteration = provider, workload, warmup, i


def test_progress_off_a_terminal_prints_a_line_per_finished_workload_and_each_tenth():
    now = [0.0]
    out = io.StringIO()
    progress = TerminalProgress(Console(file=out, width=200), live=False, clock=lambda: now[0])
    plan = [Item("e2b", "exec", warmup=True)] + [Item("e2b", "exec", i=i) for i in range(9)]
    plan += [Item("local", "exec", i=i) for i in range(10)]
    progress.start("run X", len(plan), plan)
    for item in plan:
        now[0] += 3.0
        progress.advance(item)
    progress.stop()
    lines = out.getvalue().splitlines()
    assert lines[0] == "run X: 20 to do"
    assert "done: e2b/exec, 10 iterations (1 warmup); 10/20 in all, 30.0 s elapsed" in lines
    assert "done: local/exec, 10 iterations; 20/20 in all, 1 min 00 s elapsed" in lines
    beats = [line for line in lines if re.fullmatch(r"run X: \d+/20 \(\d+ %\), .*", line)]
    # Every tenth, 6 s apart, but the last and the fifth, whose "done" line was just printed.
    assert [int(b.split()[2].split("/")[0]) for b in beats] == [2, 4, 6, 8, 12, 14, 16, 18]
    assert lines[-1] == "run X: 20/20 done, 1 min 00 s elapsed"


def test_progress_counts_iterations_run_as_several_units_once():
    out = io.StringIO()
    progress = TerminalProgress(Console(file=out, width=200), live=False)
    # A cluster runs each burst iteration as two units (one per client).
    units = [Item("e2b", "burst", i=i) for i in range(3) for _client in range(2)]
    progress.start("run Z", len(units), units)
    for unit in units:
        progress.advance(unit)
    assert "done: e2b/burst, 3 iterations; 6/6 in all" in out.getvalue()


def test_progress_heartbeats_wait_at_least_their_interval():
    now = [0.0]
    out = io.StringIO()
    progress = TerminalProgress(Console(file=out, width=200), live=False, clock=lambda: now[0])
    plan = [Item("stub", "lifecycle")] * 100
    progress.start("run Y", len(plan), plan)
    for item in plan:
        now[0] += 0.01
        progress.advance(item)
    progress.stop()
    assert not [line for line in out.getvalue().splitlines() if "%" in line]


def test_elapsed_time_reads_in_seconds_minutes_and_hours():
    assert format_elapsed(4.25) == "4.2 s"
    assert format_elapsed(125) == "2 min 05 s"
    assert format_elapsed(7300) == "2 h 01 min"


def test_a_run_off_a_terminal_prints_progress_lines(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--config", "none", "--providers", "stub",
         "--workloads", "lifecycle,exec", "--iterations", "3", "--warmup", "1",
         "--output", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "config: none (defaults and flags only)"
    assert any(re.fullmatch(r"run \S+: 8 to do", line) for line in lines)
    for workload in ("lifecycle", "exec"):
        assert any(
            re.fullmatch(
                rf"done: stub/{workload}, 4 iterations \(1 warmup\); \d/8 in all, .* elapsed", line
            )
            for line in lines
        ), lines
    assert re.fullmatch(r"run \S+: 8/8 done, .* elapsed", lines[-1])
