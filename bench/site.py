"""The static site: ``sandbox-bench site OUT/`` writes plain files any static host serves.

::

    OUT/index.html          the latest decision (per location), the history's changes and
                            trends, links to the history page and to every report
    OUT/history/            the history page (bench/history_report.py): history.html, .md,
                            history.csv, changes.csv, figures/
    OUT/reports/<name>/     every report folder found under the reports folder, copied
                            (report.html is self-contained; report.md, figures/, summary.csv)
    OUT/decision/<loc>/     figures of the decision section, if it draws any
    OUT/.nojekyll           so GitHub Pages serves the files as they are
    OUT/samples.parquet     linked when there (``sandbox-bench export --parquet`` writes it)

Nothing is fetched from anywhere: styles are inline, figures are SVG (embedded as data URIs,
and as files beside the pages), links are relative. The folders above are the site's own and
are replaced on every build; other files in OUT are left alone.

**The decision.** The index shows the report section registered as ``"decision"``
(bench/report/registry.py), built for the latest finished run of each location, the same view
a report shows. Where no such section is registered, the index says so and links the reports.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from bench import pages
from bench.history import History, RunEntry, build_history
from bench.history_report import views as history_views
from bench.history_report import write_history
from bench.report.views import Text, View

DECISION = "decision"
#: An export of every sample (``sandbox-bench export --parquet OUT/samples.parquet``) that the
#: index links when it is there.
SAMPLES = "samples.parquet"


def latest_per_location(history: History) -> list[RunEntry]:
    """The latest run of each location, by location name."""
    latest: dict[str, RunEntry] = {}
    for run in history.runs:  # in start order
        latest[run.location] = run
    return [latest[k] for k in sorted(latest)]


def decision_views(runs: Iterable[RunEntry], figures_root: Path) -> View:
    """The decision section of each run given (one sub-section per location), or a note."""
    from bench.report.registry import SECTIONS, load

    runs = list(runs)
    intro = (
        "What the latest run of each location says for a buyer, as its report's decision "
        "section shows it.",
    )
    if DECISION not in SECTIONS:
        return View(
            id="decision",
            title="Decision",
            nav="Decision",
            intro=intro,
            blocks=(
                Text(
                    text="This sandbox-bench has no decision section (scenarios and rankings); "
                    "the reports below have every number it would rank."
                ),
            ),
        )
    from bench.report.data import ReportData
    from bench.report.runs import load_runs
    from bench.report.settings import ReportSettings

    builder = load(SECTIONS[DECISION], default_attribute=DECISION)
    blocks: list[View | Text] = []
    for run in runs:
        where = run.location or "an unrecorded location"
        title = f"From {where}: run {run.run_id} ({run.started_at:%Y-%m-%d %H:%M})"
        folder = figures_root / (run.location or "unknown")
        folder.mkdir(parents=True, exist_ok=True)
        try:
            data = ReportData(load_runs([run.folder]), ReportSettings(), folder)
        except ValueError as exc:  # the run's own catalog or scenario cannot be used
            blocks.append(View(title=title, blocks=(Text(text=f"No decision: {exc}"),)))
            continue
        view = builder(data)
        if view is None:
            view = View(blocks=(Text(text="The decision section has nothing to show."),))
        blocks.append(View(title=title, blocks=(view,)))
    return View(id="decision", title="Decision", nav="Decision", intro=intro, blocks=tuple(blocks))


def _reports(reports: Path, out: Path, history: History) -> tuple[pages.Link, ...]:
    """Copy every report folder (one holding report.html) into ``out``; their links."""
    links = []
    by_id = {r.run_id: r for r in history.runs}
    if not reports.is_dir():
        return ()
    found = sorted((p.parent for p in reports.glob("*/report.html")), reverse=True)
    for folder in found:
        target = out / folder.name
        shutil.copytree(folder, target)
        first = folder.name.split("+")[0]
        run = by_id.get(first)
        note = ""
        if run is not None:
            where = f" at {run.location}" if run.location else ""
            note = f"{run.started_at:%Y-%m-%d %H:%M}{where}, {run.status}"
        if "+" in folder.name:
            note = (note + "; " if note else "") + f"{int(folder.name.split('+')[1]) + 1} runs"
        links.append(
            pages.Link(label=folder.name, href=f"reports/{folder.name}/report.html", note=note)
        )
    return tuple(links)


def write_site(
    out: Path,
    folders: Iterable[Path],
    *,
    reports: Path = Path("reports"),
    progress: Callable[[str], None] | None = None,
    **history_options,
) -> Path:
    """Build the site of ``folders`` (and the reports under ``reports``) in ``out``; returns
    index.html's path. Raises ValueError when there is no finished run."""
    out = Path(out)
    history = build_history(folders, progress=progress, **history_options)
    out.mkdir(parents=True, exist_ok=True)
    for own in ("history", "reports", "decision"):
        if (out / own).is_dir():
            shutil.rmtree(out / own)
    (out / "history" / "figures").mkdir(parents=True)
    sections = history_views(history, out / "history" / "figures")
    write_history(history, out / "history", sections=sections)
    (out / "reports").mkdir()
    report_links = _reports(Path(reports), out / "reports", history)
    decision = decision_views(latest_per_location(history), out / "decision")
    changes, trends = sections[0], sections[1]
    samples = (
        (pages.Link(label=SAMPLES, href=SAMPLES, note="every sample (sandbox-bench export)"),)
        if (out / SAMPLES).is_file()
        else ()
    )
    first, last = history.runs[0].started_at, history.runs[-1].started_at
    locations = sorted({r.location or "unrecorded" for r in history.runs})
    page = pages.Page(
        title="Sandbox benchmarks",
        subtitle=(
            f"{len(history.runs)} runs from {first:%Y-%m-%d} to {last:%Y-%m-%d} · "
            f"location{'s' if len(locations) > 1 else ''} {', '.join(locations)} · "
            f"{len(history.changes)} change(s) flagged"
        ),
        generated_at=datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        footer=(
            f"Generated by sandbox-bench site on "
            f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} from the raw samples of "
            f"{len(history.runs)} runs. Every point of the history is in history/history.csv."
        ),
        sections=(decision, changes, trends),
        link_sections=(
            pages.LinkSection(
                id="history",
                title="History",
                intro=("Every series with its latest level, every run, and the data as CSV.",),
                links=(
                    pages.Link(label="History page", href="history/history.html"),
                    pages.Link(
                        label="history.csv",
                        href="history/history.csv",
                        note="one row per series and run",
                    ),
                    pages.Link(
                        label="changes.csv",
                        href="history/changes.csv",
                        note="one row per flagged change",
                    ),
                    *samples,
                ),
            ),
            pages.LinkSection(
                id="reports",
                title="Reports",
                intro=(
                    ()
                    if report_links
                    else (f"No report found under {reports} (sandbox-bench report RUN).",)
                ),
                links=report_links,
            ),
        ),
        run_ids=tuple(r.run_id for r in history.runs),
    )
    (out / ".nojekyll").write_text("")
    path = out / "index.html"
    path.write_text(pages.render_html(page), encoding="utf-8")
    return path


__all__ = ["DECISION", "decision_views", "latest_per_location", "write_site"]
