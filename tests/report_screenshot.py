"""A picture of a report at a glance: its header and at-a-glance table, one workload's ECDF
and a scaling curve, one above the other, from the HTML in headless Chromium.

The browser test writes it to ``test-artifacts/report-screenshot.png``; the README's picture
(docs/report-screenshot.png) is made the same way from a real report::

    python -m tests.report_screenshot reports/<run>/report.html docs/report-screenshot.png
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: The parts shown, in order: the page's header, these sections (the decision section above
#: the glance table is long, so the picture shows the header and the glance table apart),
#: then these figures (the first of each list the report has).
HEADER = "header.top"
SECTIONS = ("#glance",)
FIGURES = (
    ("#fig-ecdf-lifecycle", "#fig-ecdf-exec", "figure[id^='fig-ecdf-']"),
    ("#fig-scaling-checkpoint_scaling", "figure[id^='fig-scaling-']"),
)
VIEWPORT = {"width": 1300, "height": 900}


def _first(page: Any, selectors: Sequence[str]) -> Any | None:
    for selector in selectors:
        found = page.query_selector(selector)
        if found is not None:
            return found
    return None


def parts(page: Any) -> list[bytes]:
    """PNG screenshots of the parts, from a page showing a report."""
    shots = []
    for selector in (HEADER, *SECTIONS):
        found = page.query_selector(selector)
        if found is not None:
            shots.append(found.screenshot())
    for selectors in FIGURES:
        found = _first(page, selectors)
        if found is not None:
            shots.append(found.screenshot())
    return shots


def compose(shots: Sequence[bytes], *, gap: int = 16, width: int | None = None) -> bytes:
    """The shots one above the other on white, as one PNG (256 colours: small enough to
    keep in the repository)."""
    from PIL import Image

    images = [Image.open(io.BytesIO(s)).convert("RGB") for s in shots]
    width = width or max(i.width for i in images)
    height = sum(i.height for i in images) + gap * (len(images) + 1)
    canvas = Image.new("RGB", (width + 2 * gap, height), "white")
    y = gap
    for image in images:
        canvas.paste(image, (gap + (width - image.width) // 2, y))
        y += image.height + gap
    out = io.BytesIO()
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, "PNG", optimize=True)
    return out.getvalue()


def screenshot(report: Path, out: Path) -> Path:
    """Open ``report`` in headless Chromium and write the composed picture to ``out``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(Path(report).resolve().as_uri())
            page.wait_for_load_state("load")
            shots = parts(page)
        finally:
            browser.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(compose(shots))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m tests.report_screenshot REPORT.html OUT.png")
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
