"""What a report section returns: a generic view that both templates render the same way.

A :class:`View` has a title, optional intro paragraphs and an ordered list of blocks: a
:class:`~bench.report.tables.Table`, a :class:`Figure`, a :class:`Text` paragraph, a bullet
list of :class:`Notes`, a list of :class:`Warnings`, or another :class:`View` (a sub-section,
one heading level down, optionally collapsed). Long tables (more than :data:`FOLD_ROWS`
rows) are folded by the HTML template whatever section they are in; a section folds more
with a collapsed sub-view. Sections never write HTML or Markdown: the
templates (bench/report/templates/) lay out views, so a new section needs no template change
and the HTML and the Markdown report show the same tables (a test compares them).

Text in :class:`Text` and :class:`Notes` blocks built with ``markup=True`` may use
``**bold**``, ``*emphasis*`` and ``[links](#anchor)``; other text is shown as it is.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from bench.report.tables import Table

if TYPE_CHECKING:
    from bench.report.figures import FigureFile

#: Longest list of warnings of one kind; the rest are counted in one line.
MAX_LISTED = 12
#: Tables with more rows than this are drawn folded in the HTML (a ``<details>`` the reader
#: opens); the Markdown shows them whole.
FOLD_ROWS = 30


class Severity(StrEnum):
    """How much a warning matters; the report lists the most severe first."""

    #: The harness itself misbehaved (a bug of ours, not a provider's failure).
    BUG = "bug"
    #: Numbers to read with care, or not at all.
    WARNING = "warning"
    #: Context a reader should know (an operation a provider lacks).
    NOTE = "note"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReportWarning:
    #: A short label shown before the text ("failures", "small n").
    kind: str
    text: str
    severity: Severity = Severity.WARNING


def limited(
    kind: str, items: Sequence[str], severity: Severity = Severity.WARNING
) -> list[ReportWarning]:
    """One warning per item, at most :data:`MAX_LISTED`, and a count of the rest."""
    out = [ReportWarning(kind=kind, text=t, severity=severity) for t in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        more = f"… and {len(items) - MAX_LISTED} more"
        out.append(ReportWarning(kind=kind, text=more, severity=severity))
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Figure:
    """A figure as the report shows it: embedded in the HTML, linked from the Markdown."""

    kind: ClassVar[str] = "figure"
    id: str
    title: str
    caption: str
    #: Path relative to the report folder (``figures/<id>.svg``).
    filename: str
    data_uri: str

    @classmethod
    def of(cls, fig: FigureFile | None) -> Figure | None:
        """The view of a figure file (None passes through: a figure with nothing to draw)."""
        if fig is None:
            return None
        return cls(
            id=fig.id,
            title=fig.title,
            caption=fig.caption,
            filename=f"figures/{fig.path.name}",
            data_uri="data:image/svg+xml;base64," + base64.b64encode(fig.svg).decode("ascii"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Text:
    kind: ClassVar[str] = "text"
    text: str
    markup: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Notes:
    """A bullet list; ``style`` "howto" draws it as the report's reading guide box."""

    kind: ClassVar[str] = "notes"
    items: tuple[str, ...]
    markup: bool = False
    style: str = "notes"


@dataclass(frozen=True, kw_only=True, slots=True)
class Warnings:
    kind: ClassVar[str] = "warnings"
    items: tuple[ReportWarning, ...]


@dataclass(frozen=True, kw_only=True)
class View:
    """A section or sub-section of the report."""

    kind: ClassVar[str] = "view"
    #: The HTML anchor (``<section id>`` at the top level, the heading's id below); "" for none.
    id: str = ""
    #: "" for a part drawn without a heading (e.g. a figure that belongs to the section above).
    title: str = ""
    intro: tuple[str, ...] = ()
    blocks: tuple[Table | Figure | Text | Notes | Warnings | View, ...] = field(default=())
    #: Label in the table of contents (top-level views only); "" keeps it out.
    nav: str = ""
    #: Drawn closed (HTML ``<details>``) until the reader opens it.
    collapsed: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(b for b in self.blocks if b is not None))

    def walk(self) -> Iterator[Table | Figure | Text | Notes | Warnings | View]:
        """Every block, depth first, in the order the report shows them."""
        for block in self.blocks:
            yield block
            if isinstance(block, View):
                yield from block.walk()

    def tables(self) -> list[Table]:
        return [b for b in self.walk() if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for b in self.walk() if isinstance(b, Figure)]


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_EMPHASIS = re.compile(r"(?<![*\w])\*(?!\s)(.+?)(?<!\s)\*(?![*\w])")
_LINK = re.compile(r"\[([^\]]+)\]\((#[\w-]+)\)")


def inline_html(text: str) -> str:
    """``**bold**``, ``*emphasis*`` and ``[text](#anchor)`` as HTML, everything else escaped.

    Hand-written because it is three patterns; a Markdown library would also turn tables,
    headings and HTML in vendor-supplied notes into markup.
    """
    out = html.escape(text, quote=False)
    out = _LINK.sub(r'<a href="\2">\1</a>', out)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _EMPHASIS.sub(r"<em>\1</em>", out)


__all__ = [
    "FOLD_ROWS",
    "MAX_LISTED",
    "Figure",
    "Notes",
    "ReportWarning",
    "Severity",
    "Text",
    "View",
    "Warnings",
    "inline_html",
    "limited",
]
