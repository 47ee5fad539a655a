"""Pages of report views outside a report: the history page and the static site's index.

A :class:`Page` is laid out by ``page.html.j2`` and ``page.md.j2``, which import the report
templates' own macros (so a view looks the same on a page as in a report) and the report's
stylesheet, taken from report.html.j2 when a page is rendered (so a style a report section
adds is on the page too). Pages fetch nothing: styles are inline, figures are data URIs or
files beside the page, links are relative.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import markupsafe

from bench.report.build import TEMPLATES, _environment
from bench.report.views import View


@dataclass(frozen=True, kw_only=True, slots=True)
class Link:
    label: str
    href: str
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkSection:
    """A section that lists links (to reports, to the history page)."""

    id: str
    title: str
    intro: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Page:
    title: str
    subtitle: str
    generated_at: str
    footer: str
    sections: tuple[View, ...]
    link_sections: tuple[LinkSection, ...] = ()
    #: The report template's header reads these when its macros are imported.
    run_ids: tuple[str, ...] = field(default=())


_STYLE = re.compile(r"<style>\n?(.*?)</style>", re.S)


def report_css() -> str:
    """The stylesheet of report.html.j2."""
    found = _STYLE.search((TEMPLATES / "report.html.j2").read_text(encoding="utf-8"))
    return found.group(1) if found else ""


def render_html(page: Page) -> str:
    css = markupsafe.Markup(report_css())
    return _environment(True).get_template("page.html.j2").render(r=page, css=css)


def render_markdown(page: Page) -> str:
    return _environment(False).get_template("page.md.j2").render(r=page)


__all__ = ["Link", "LinkSection", "Page", "render_html", "render_markdown", "report_css"]
