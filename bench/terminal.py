"""What the CLI prints: tables that fit the terminal, the same rows as CSV or JSON, progress.

**Tables** (:func:`print_table`). A :class:`Grid` is a title, :class:`Column` declarations and
rows of text cells. It is laid out for the console's width (rich's, which reads ``COLUMNS``)
by the first of these that fits (:func:`layout`):

1. every column as wide as its longest line;
2. columns narrowed, never below their longest word (or their longest line, for columns that
   do not wrap), the spare width shared in proportion to what each still lacks: cells wrap at
   spaces only, so no word is ever split;
3. the same, leaving out the columns declared ``optional`` (highest first); a line under the
   table names them and says where to find them (``--format csv``);
4. the same, with long identifiers (``first_exec_after_restore``) of the columns declared
   ``abbreviate`` shortened to initials plus their last part (``fea_restore``), listed in a
   legend under the table;
5. one block per row (the row's first cell, then one ``column  value`` line per other cell,
   values wrapping at spaces): a pivot that fits any width a word fits in.

Nothing is cut with an ellipsis. Rich decides widths on its own by shrinking the widest column
first, which splits words ("credential s"); here the widths are computed and handed to rich
fixed, so rich only wraps.

**Formats** (:func:`emit`): ``table`` (the above), ``csv`` and ``json`` of the same records
with raw values (seconds as numbers, not "40.2 ms"), for scripts.

**Progress** (:class:`TerminalProgress`): the session's progress on stderr: a rich bar on a
terminal, and on anything else (CI logs) a line each time a provider's workload finishes and
at every tenth of the plan, each with counts and the elapsed time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


class Format(StrEnum):
    """``--format`` of ``providers``, ``show`` and ``compare``."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, kw_only=True, slots=True)
class Column:
    name: str
    #: "left" or "right" (numbers).
    justify: str = "left"
    #: Cells may wrap at spaces; False keeps each line of a cell whole (numbers, "40.2 ms").
    wrap: bool = True
    #: Long identifiers may be shortened, with a legend.
    abbreviate: bool = False
    #: May be left out when nothing else fits; higher goes first (0: never).
    optional: int = 0
    #: Narrowest width worth showing a wrapping column at (prose squeezed narrower reads
    #: worse than the one-block-per-row layout).
    min_width: int = 0


@dataclass(frozen=True, kw_only=True)
class Grid:
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    #: A rich style per row ("" for none), e.g. red for a regression.
    styles: tuple[str, ...] = ()
    #: Lines printed under the table whatever the layout (a legend of the cells' own marks).
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"{self.title}: a row of {len(row)} cells for {len(self.columns)}")


#: The lines under tables: the abbreviations' legend, the columns left out.
ABBREVIATIONS = "abbreviations: {}"
NOT_SHOWN = "not shown at this width: {} (a wider terminal or --format csv shows them)"
#: :attr:`Layout.step` of the one-block-per-row layout.
RECORDS = 1_000
#: Spaces between two columns (rich: one padding cell plus the box's blank divider).
GAP = 2
#: Identifiers shorter than this are never abbreviated.
ABBREVIATE_FROM = 12
_WORD = re.compile(r"\S+")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_-][A-Za-z0-9]+)+")


def words(text: str) -> list[str]:
    """The words rich wraps between: runs of non-space characters."""
    return _WORD.findall(text)


def _longest_line(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _longest_word(text: str) -> int:
    return max((cell_len(w) for w in words(text)), default=0)


def abbreviation(word: str) -> str | None:
    """``first_exec_after_restore`` -> ``fea_restore``; None when it would not be shorter."""
    if cell_len(word) < ABBREVIATE_FROM or not _IDENTIFIER.fullmatch(word):
        return None
    parts = re.split(r"[_-]", word)
    short = "".join(p[0] for p in parts[:-1]) + "_" + parts[-1]
    return short if len(short) < len(word) else None


@dataclass(frozen=True, kw_only=True)
class Layout:
    """How a grid is drawn at one width."""

    #: "grid" (a table) or "records" (one block per row).
    mode: str
    #: Indexes of the columns shown, in order.
    shown: tuple[int, ...]
    #: Width of each shown column (grid mode).
    widths: tuple[int, ...] = ()
    #: Short form -> full word, for the legend.
    abbreviations: Mapping[str, str] = field(default_factory=dict)
    #: Identifiers longer than this are abbreviated (when ``abbreviations``).
    longer_than: int = 0
    #: Which step of the module docstring's list it is (0-based; :data:`RECORDS` for step 5).
    step: int = 0

    def dropped(self, grid: Grid) -> list[str]:
        return [c.name for i, c in enumerate(grid.columns) if i not in self.shown]


def _abbreviate(grid: Grid, longer_than: int = 0) -> tuple[Grid, dict[str, str]]:
    """The grid with the identifiers of its abbreviable columns longer than ``longer_than``
    shortened; the legend."""
    full_of: dict[str, str] = {}
    short_of: dict[str, str] = {}
    taken = {w for row in grid.rows for cell in row for w in words(cell)}

    def short(word: str) -> str:
        if word in short_of:
            return short_of[word]
        found = abbreviation(word) if cell_len(word) > longer_than else None
        if found is None:
            return word
        candidate, k = found, 2
        while candidate in full_of or (candidate in taken and candidate != word):
            candidate, k = f"{found}{k}", k + 1
        short_of[word], full_of[candidate] = candidate, word
        return candidate

    rows = []
    for row in grid.rows:
        cells = []
        for column, cell in zip(grid.columns, row, strict=True):
            if column.abbreviate:
                cell = re.sub(r"\S+", lambda m: short(m.group(0)), cell)
            cells.append(cell)
        rows.append(tuple(cells))
    return replace(grid, rows=tuple(rows)), full_of


def _widths(grid: Grid, shown: Sequence[int], width: int) -> tuple[int, ...] | None:
    """Column widths that fit ``width`` without splitting a word (step 1 or 2), or None."""
    natural, minimum = [], []
    for i in shown:
        column = grid.columns[i]
        cells = [row[i] for row in grid.rows]
        longest = max([_longest_line(c) for c in cells] + [_longest_line(column.name)])
        if column.wrap:
            least = max([_longest_word(c) for c in cells] + [_longest_word(column.name)])
            least = max(least, min(column.min_width, longest))
        else:  # the header may still wrap at its spaces
            least = max([_longest_line(c) for c in cells] + [_longest_word(column.name)])
        natural.append(max(longest, 1))
        minimum.append(max(least, 1))
    room = width - GAP * (len(shown) - 1)
    if sum(natural) <= room:
        return tuple(natural)
    if sum(minimum) > room:
        return None
    # Max-min fair shares of the spare width: columns that lack little (a "new sandbox") get
    # their natural width first; the rest share what is left equally (prose wraps anyway).
    widths = list(minimum)
    spare = room - sum(minimum)
    lacking = [i for i in range(len(widths)) if natural[i] > widths[i]]
    while spare > 0 and lacking:
        share = spare // len(lacking)
        satisfied = [i for i in lacking if natural[i] - widths[i] <= max(share, 0)]
        if not satisfied:
            for k, i in enumerate(lacking):
                widths[i] += share + (1 if k < spare - share * len(lacking) else 0)
            break
        for i in satisfied:
            spare -= natural[i] - widths[i]
            widths[i] = natural[i]
        lacking = [i for i in lacking if i not in satisfied]
    return tuple(widths)


def _candidates(grid: Grid) -> list[tuple[tuple[int, ...], bool]]:
    """Steps 1-4 in order, each no wider than the one before: (columns shown, abbreviated)."""
    shown = tuple(range(len(grid.columns)))
    out = [(shown, False)]
    for level in sorted({c.optional for c in grid.columns if c.optional}, reverse=True):
        shown = tuple(i for i in shown if not grid.columns[i].optional >= level)
        out.append((shown, False))
    if any(c.abbreviate for c in grid.columns):
        out.append((shown, True))
    return out


def _layout_at(grid: Grid, width: int, step: int) -> Layout | None:
    candidates = _candidates(grid)
    if step >= len(candidates):
        return None
    shown, abbreviated = candidates[step]
    if not abbreviated:
        widths = _widths(grid, shown, width)
        if widths is None:
            return None
        return Layout(mode="grid", shown=shown, widths=widths, step=step)
    # Only as many identifiers as it takes: the longest first.
    lengths = sorted(
        {
            cell_len(w)
            for row in grid.rows
            for i in shown
            if grid.columns[i].abbreviate
            for w in words(row[i])
            if abbreviation(w) is not None
        },
        reverse=True,
    )
    for longer_than in [*lengths[1:], 0]:
        drawn, legend = _abbreviate(grid, longer_than)
        widths = _widths(drawn, shown, width)
        if widths is not None:
            used = {w for row in drawn.rows for i in shown for w in words(row[i])}
            legend = {s: full for s, full in legend.items() if s in used}
            return Layout(
                mode="grid",
                shown=shown,
                widths=widths,
                abbreviations=legend,
                step=step,
                longer_than=longer_than,
            )
    return None


def layout(grid: Grid, width: int, *, from_step: int = 0) -> Layout:
    """The first layout of the module docstring's list that fits ``width``, starting at
    step ``from_step`` (0: every column, nothing abbreviated)."""
    for step in range(from_step, len(_candidates(grid))):
        found = _layout_at(grid, width, step)
        if found is not None:
            return found
    return Layout(mode="records", shown=tuple(range(len(grid.columns))), step=RECORDS)


def layouts(grids: Sequence[Grid], width: int) -> list[Layout]:
    """Layouts of tables printed together: each at the step the narrowest needs, so that
    they all show the same columns the same way."""
    step = max((layout(g, width).step for g in grids), default=0)
    return [layout(g, width, from_step=step) if step != RECORDS else _records(g) for g in grids]


def _records(grid: Grid) -> Layout:
    return Layout(mode="records", shown=tuple(range(len(grid.columns))), step=RECORDS)


def print_table(console: Console, grid: Grid) -> Layout:
    """Print ``grid`` laid out for ``console.width``; returns the layout used."""
    return print_tables(console, [grid])[0]


def print_tables(console: Console, grids: Sequence[Grid], *, gap: bool = True) -> list[Layout]:
    """Print ``grids`` one after the other (a blank line between, with ``gap``), laid out
    together (:func:`layouts`); then, once, the abbreviations, the columns left out and the
    grids' notes."""
    chosen = layouts(grids, console.width)
    legend: dict[str, str] = {}
    dropped: list[str] = []
    notes: list[str] = []
    for k, (grid, how) in enumerate(zip(grids, chosen, strict=True)):
        if gap and k:
            console.print()
        if how.mode == "records":
            _print_records(console, grid)
        else:
            _print_grid(console, grid, how)
        legend.update(how.abbreviations)
        dropped += [name for name in how.dropped(grid) if name not in dropped]
        notes += [note for note in grid.notes if note not in notes]
    if legend:
        text = "; ".join(f"{s} = {full}" for s, full in sorted(legend.items()))
        _print_line(console, ABBREVIATIONS.format(text))
    if dropped:
        _print_line(console, NOT_SHOWN.format(", ".join(dropped)))
    for note in notes:
        _print_line(console, note)
    return chosen


def _print_grid(console: Console, grid: Grid, how: Layout) -> None:
    drawn = _abbreviate(grid, how.longer_than)[0] if how.abbreviations else grid
    if grid.title:  # above the table, not its title: rich wraps a title to the table's width
        console.print(Text(grid.title, style="bold"), overflow="fold")
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, GAP - 1, 0, 0),
    )
    for i, w in zip(how.shown, how.widths, strict=True):
        column = grid.columns[i]
        table.add_column(
            column.name,
            justify=column.justify,  # type: ignore[arg-type]
            width=w,
            no_wrap=False,
            overflow="fold",  # never reached: every width holds its longest word
        )
    for k, row in enumerate(drawn.rows):
        style = grid.styles[k] if k < len(grid.styles) else ""
        table.add_row(*(Text(row[i]) for i in how.shown), style=style or None)
    console.print(table)


def _print_line(console: Console, text: str) -> None:
    console.print(Text(text), overflow="fold")


def _print_records(console: Console, grid: Grid) -> None:
    """Step 5: one block per row, ``column  value`` lines under the row's first cell."""
    if grid.title:
        console.print(Text(grid.title, style="bold"))
    key_width = max(cell_len(c.name) for c in grid.columns[1:]) if len(grid.columns) > 1 else 0
    for k, row in enumerate(grid.rows):
        style = grid.styles[k] if k < len(grid.styles) else ""
        console.print()
        console.print(Text(row[0], style=f"bold {style}".strip()))
        block = Table.grid(padding=(0, GAP, 0, 2))
        block.add_column(width=key_width, no_wrap=True, style="dim")
        block.add_column(overflow="fold")
        for column, cell in zip(grid.columns[1:], row[1:], strict=True):
            block.add_row(column.name, Text(cell or "–", style=style or ""))
        console.print(block)


# -- machine-readable formats -----------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities as null, numpy scalars as Python numbers."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(data: Any) -> str:
    return json.dumps(_plain(data), indent=2, allow_nan=False, ensure_ascii=False)


def to_csv(records: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """One line per record; lists joined with "; ", mappings as JSON, NaN as empty."""
    names = list(columns or (records[0].keys() if records else []))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for record in records:
        cells = []
        for name in names:
            value = _plain(record.get(name))
            if value is None:
                cells.append("")
            elif isinstance(value, float):
                cells.append(f"{value:.9g}")
            elif isinstance(value, list):
                cells.append("; ".join(str(v) for v in value))
            elif isinstance(value, dict):
                cells.append(json.dumps(value, sort_keys=True))
            else:
                cells.append(str(value))
        writer.writerow(cells)
    return out.getvalue()


def print_raw(console: Console, text: str) -> None:
    """Machine-readable text on ``console``'s stream as it is: no wrapping, no markup."""
    console.file.write(text if text.endswith("\n") else text + "\n")
    console.file.flush()


# -- progress ---------------------------------------------------------------------------------


def format_elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _key(item: Any) -> tuple[Any, ...]:
    """An iteration's identity (a cluster hands over one unit per client of it)."""
    return tuple(getattr(item, name, None) for name in ("provider", "workload", "iteration",
                                                        "warmup", "rerun"))  # fmt: skip


def _group_of(item: Any) -> str | None:
    provider, workload = getattr(item, "provider", None), getattr(item, "workload", None)
    return f"{provider}/{workload}" if provider and workload else None


class TerminalProgress:
    """The session's :class:`bench.session.Progress` on ``console`` (the CLI's stderr).

    On a terminal: a bar with the count and the elapsed time, and above it a line each time a
    provider's workload finishes. Elsewhere (``live=False``: a pipe, a CI log): that line,
    and one each time another tenth of the plan is done (at most one every
    ``heartbeat_s``), each with counts and the elapsed time."""

    def __init__(
        self,
        console: Console,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        heartbeat_s: float = 5.0,
    ) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.clock = clock
        self.heartbeat_s = heartbeat_s
        self._bar: Progress | None = None
        self._task: Any = None
        self._description = ""
        self._total = 0
        self._done = 0
        self._started = self._said = 0.0
        self._tenths = 0
        self._group_total: Counter[str] = Counter()
        self._group_warmups: Counter[str] = Counter()
        self._group_items: Counter[str] = Counter()
        self._group_done: Counter[str] = Counter()

    def note(self, text: str) -> None:
        self._say(text)

    def start(self, description: str, total: int, items: Iterable[Any] = ()) -> None:
        self._description, self._total, self._done, self._tenths = description, total, 0, 0
        self._started = self._said = self.clock()
        self._group_total, self._group_warmups = Counter(), Counter()
        self._group_items = Counter()
        seen: set[Any] = set()
        for item in items:
            group = _group_of(item)
            if group is None:
                continue
            self._group_total[group] += 1  # units: a cluster runs some iterations as several
            if _key(item) not in seen:
                seen.add(_key(item))
                self._group_items[group] += 1
                self._group_warmups[group] += bool(getattr(item, "warmup", False))
        self._group_done = Counter()
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)
        else:
            self._say(f"{description}: {total} to do")

    def advance(self, item: Any = None) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.advance(self._task)
        now = self.clock()
        elapsed = format_elapsed(now - self._started)
        group = _group_of(item)
        if group is not None and group in self._group_total:
            self._group_done[group] += 1
            if self._group_done[group] == self._group_total[group]:
                warmups = self._group_warmups[group]
                self._say(
                    f"done: {group}, {self._group_items[group]} iterations"
                    + (f" ({warmups} warmup)" if warmups else "")
                    + f"; {self._done}/{self._total} in all, {elapsed} elapsed"
                )
        if not self.live and self._total and self._done < self._total:
            tenths = self._done * 10 // self._total
            if tenths > self._tenths and now - self._said >= self.heartbeat_s:
                self._tenths = tenths
                self._say(
                    f"{self._description}: {self._done}/{self._total} "
                    f"({self._done * 100 // self._total} %), {elapsed} elapsed"
                )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._total and not self.live:
            elapsed = format_elapsed(self.clock() - self._started)
            self._say(f"{self._description}: {self._done}/{self._total} done, {elapsed} elapsed")
        self._total = 0

    def _say(self, text: str) -> None:
        self._said = self.clock()
        self.console.print(Text(text), soft_wrap=True)


__all__ = [
    "Column",
    "Format",
    "Grid",
    "Layout",
    "TerminalProgress",
    "abbreviation",
    "format_elapsed",
    "layout",
    "layouts",
    "print_raw",
    "print_table",
    "print_tables",
    "to_csv",
    "to_json",
    "words",
]
