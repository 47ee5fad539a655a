"""Report tables as data, rendered the same way to HTML (Jinja2 template) and Markdown.

Every table of the report is a :class:`Table` of already formatted text cells, so the HTML
and the Markdown report show exactly the same numbers (a test compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, kw_only=True, slots=True)
class Row:
    cells: tuple[str, ...]
    #: Optional CSS class per cell (HTML only; e.g. a verdict badge).
    classes: tuple[str, ...] = ()

    def cls(self, i: int) -> str:
        return self.classes[i] if i < len(self.classes) else ""


@dataclass(frozen=True, kw_only=True)
class Table:
    #: What a template draws it as (see bench/report/views.py).
    kind: ClassVar[str] = "table"
    id: str
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    title: str = ""
    caption: str = ""
    #: "l" or "r" per column; numbers are right-aligned.
    align: tuple[str, ...] = field(default_factory=tuple)
    #: The HTML may fold it when it is long (``views.FOLD_ROWS``); False keeps it open.
    fold: bool = True

    def alignment(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else "l"

    @property
    def empty(self) -> bool:
        return not self.rows


def make_table(
    id: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str] | Row],
    *,
    title: str = "",
    caption: str = "",
    align: Sequence[str] | str = "",
    fold: bool = True,
) -> Table:
    """Build a table; ``align`` is a string like ``"lllrr"`` or a sequence of "l"/"r"."""
    built = []
    for row in rows:
        cells = row if isinstance(row, Row) else Row(cells=tuple(str(c) for c in row))
        if len(cells.cells) != len(columns):
            raise ValueError(f"table {id}: row has {len(cells.cells)} cells for {len(columns)}")
        built.append(cells)
    return Table(
        id=id,
        title=title,
        caption=caption,
        columns=tuple(columns),
        rows=tuple(built),
        align=tuple(align),
        fold=fold,
    )


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>")


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown pipe table (title and caption are left to the template)."""
    if not table.columns:
        return ""
    header = "| " + " | ".join(_md_cell(c) for c in table.columns) + " |"
    rule = (
        "|"
        + "|".join(
            "---:" if table.alignment(i) == "r" else "---" for i in range(len(table.columns))
        )
        + "|"
    )
    lines = [header, rule]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row.cells) + " |")
    return "\n".join(lines)
