"""The static site (bench/site.py) and the CI workflow that publishes it
(examples/ci/publish.yml)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from bench.cli import build_parser, main
from bench.report import write_report
from bench.report.registry import SECTIONS
from bench.report.views import Text, View
from bench.site import write_site
from providers import REGISTRY, provider_class
from tests.test_history import daily_runs
from tests.test_report import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "publish.yml"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    folders = daily_runs(root / "results", 6, slower_from=3)
    for folder in (folders[0], folders[-1]):
        write_report([folder], root / "reports")
    write_report(folders[:2], root / "reports")
    out = root / "public"
    out.mkdir()
    assert main(["export", "--all", "--results", str(root / "results"),
                 "--parquet", str(out / "samples.parquet")]) == 0  # fmt: skip
    write_site(out, folders, reports=root / "reports")
    return out


def test_the_site_holds_the_index_history_and_a_copy_of_every_report(site):
    index = (site / "index.html").read_text()
    for part in ("Decision", "Changes", "Trends", "History", "Reports"):
        assert part in index
    # The latest run's decision section, as its report draws it, under its location.
    assert "no decision section" not in index
    assert re.search(r"From fra: run 20261206T060000Z-\d+", index)
    assert "Batch evaluation" in index and "Latency rank" in index
    hrefs = re.findall(r'href="([^"#]+)"', index)
    assert hrefs, "the index links nothing"
    for href in hrefs:
        if href.startswith("data:"):
            continue
        assert not href.startswith(("http:", "https:", "//")), href
        assert (site / href).is_file(), href
    reports = sorted(p.parent.name for p in site.glob("reports/*/report.html"))
    assert reports == sorted(
        ["20261201T060000Z-000000", "20261206T060000Z-000005", "20261201T060000Z-000000+1"]
    )
    assert "samples.parquet" in hrefs
    assert (site / ".nojekyll").exists()
    assert not re.search(r'(src|href)="(https?:)?//', index)


def test_a_registered_decision_section_is_shown_for_the_latest_run_of_each_location(
    tmp_path, monkeypatch
):
    seen = []

    def decision(data):
        seen.append(data.run_ids)
        return View(id="decision", title="Decision", blocks=(Text(text="rank: e2b first"),))

    monkeypatch.setitem(SECTIONS, "decision", decision)
    folders = daily_runs(tmp_path / "results", 3)
    path = write_site(tmp_path / "public", folders, reports=tmp_path / "none")
    html = path.read_text()
    assert "rank: e2b first" in html
    assert seen == [(folders[-1].name,)]
    assert "From fra: run 20261203T060000Z-000002" in html


@pytest.mark.browser
@pytest.mark.parametrize(
    "page", ["index.html", "history/history.html", "reports/20261206T060000Z-000005/report.html"]
)
def test_every_page_opens_in_headless_chromium_with_every_figure_drawn(site, page):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": 1300, "height": 900})
            tab.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto((site / page).as_uri())
            tab.wait_for_load_state("load")
            images = tab.eval_on_selector_all(
                "img",
                """els => els.map(e => { const r = e.getBoundingClientRect();
                    return {alt: e.alt, complete: e.complete, nw: e.naturalWidth,
                            nh: e.naturalHeight, w: r.width, h: r.height}; })""",
            )
            if page == "index.html":
                ARTIFACTS.mkdir(exist_ok=True)
                tab.screenshot(path=str(ARTIFACTS / "site.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert images, "no figure on the page"
    for image in images:
        assert image["complete"] and image["nw"] > 0 and image["nh"] > 0, image
        assert image["w"] > 100 and image["h"] > 50, image


def test_site_command_builds_from_every_run_by_default(tmp_path, capsys):
    daily_runs(tmp_path / "results", 2)
    out = tmp_path / "public"
    assert main(["site", str(out), "--results", str(tmp_path / "results"),
                 "--reports", str(tmp_path / "reports")]) == 0  # fmt: skip
    assert (out / "index.html").is_file() and (out / "history" / "history.html").is_file()
    assert "site:" in capsys.readouterr().out


# -- the CI workflow -----------------------------------------------------------------------------


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def commands() -> list[list[str]]:
    """Every sandbox-bench command line of the workflow, with ${{ ... }} and shell variables
    replaced by plain words."""
    out = []
    for job in workflow()["jobs"].values():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                line = re.sub(r"\$\{\{[^}]*\}\}", "X", line)
                line = re.sub(r'"\$[A-Za-z_]+"|\$[A-Za-z_]+', "X", line)
                if line.strip().startswith("sandbox-bench "):
                    out.append(shlex.split(line)[1:])
    return out


def test_the_workflow_runs_on_a_schedule_per_location_and_publishes_pages():
    flow = workflow()
    on = flow.get("on", flow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on["schedule"][0]["cron"]
    run, publish = flow["jobs"]["run"], flow["jobs"]["publish"]
    assert len(run["strategy"]["matrix"]["location"]) >= 2
    assert "${{ matrix.location }}" in str(run["runs-on"])
    uses = [s.get("uses", "") for s in publish["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact") for u in uses)
    assert any(u.startswith("actions/deploy-pages") for u in uses)
    assert flow["permissions"]["pages"] == "write"


def test_every_command_of_the_workflow_is_one_sandbox_bench_accepts():
    found = commands()
    assert {c[0] for c in found} >= {"run", "report", "history", "site", "export"}
    parser = build_parser()
    for argv in found:
        parser.parse_args(argv)  # exits 2 on anything it does not accept


def test_the_workflow_takes_every_credential_from_the_secret_store_and_nothing_else():
    text = WORKFLOW.read_text()
    needed = set()
    for provider_id in REGISTRY:
        try:
            needed.update(provider_class(provider_id).required_env)
        except ImportError:
            continue
    benchmark = next(s for s in workflow()["jobs"]["run"]["steps"] if s.get("name") == "Benchmark")
    assert set(benchmark["env"]) == needed
    for name, value in benchmark["env"].items():
        assert value == f"${{{{ secrets.{name} }}}}", name
    # no value that looks like a key is written into the file
    assert not re.search(r"(?i)(key|token)\s*[:=]\s*['\"]?[A-Za-z0-9_\-]{16,}", text)
