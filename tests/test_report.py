"""Reports: files written, tables identical in HTML and Markdown, merging, warnings, and the
HTML report opened in a real headless Chromium (``-m browser``)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from bench import records
from bench.records import SchemaError
from bench.report import ReportSettings, report_dir_name, write_report
from bench.stats import SUMMARY_COLUMNS
from tests.report_parsing import html_tables, markdown_tables
from tests.synthetic import EXTRA_WORKLOADS, make_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
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


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    run = make_run(root / "results", iterations=20, seed=7)
    return write_report([run], root / "reports")


# -- the report files -----------------------------------------------------------------------


def test_report_folder_holds_html_markdown_figures_and_summary(report):
    folder = report.parent
    assert report.name == "report.html"
    assert folder.name == "20261128T100000Z-aaaaaa"
    assert (folder / "report.md").is_file()
    figures = sorted(p.name for p in (folder / "figures").iterdir())
    for workload in ("lifecycle", "exec", "files", "checkpoint", "pause_resume"):
        assert f"ecdf-{workload}.svg" in figures
        assert f"box-{workload}.svg" in figures
    assert "cost-session.svg" in figures
    for name in figures:
        assert (folder / "figures" / name).read_bytes().startswith(b"<?xml")


def test_html_is_self_contained(report):
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html
    assert not re.search(r"""(?:src|href)=["']https?:""", html)
    assert not re.search(r"""<link[^>]+stylesheet""", html)
    images = re.findall(r'<img src="([^"]+)"', html)
    assert images and all(src.startswith("data:image/svg+xml;base64,") for src in images)
    assert len(images) == len(list((report.parent / "figures").iterdir()))


def test_markdown_renders_the_same_tables_as_the_html(report):
    html = html_tables(report.read_text(encoding="utf-8"))
    md = markdown_tables((report.parent / "report.md").read_text(encoding="utf-8"))
    assert len(html) == len(md) >= 10
    for (table_id, html_rows), md_rows in zip(html, md, strict=True):
        assert html_rows == md_rows, table_id


def test_report_has_every_section_a_buyer_needs(report):
    ids = {table_id for table_id, _ in html_tables(report.read_text(encoding="utf-8"))}
    expected = {
        "table-glance",
        "table-details",
        "table-capabilities",
        "table-latency-lifecycle",
        "table-latency-checkpoint",
        "table-pricing",
        "table-operation-costs",
        "table-workload-costs",
        "table-session-costs",
        "table-claims",
        "table-comparisons",
    }
    assert expected <= ids
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    for heading in ("How to read this", "Warnings", "Method", "Where, when and how"):
        assert f"## {heading}" in md


def test_comparisons_open_each_provider_against_the_fastest_and_keep_every_pair(report):
    from bench.report.sections.latency import decision_relevant

    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    with (report.parent / "comparisons.csv").open(encoding="utf-8") as fh:
        every = list(csv.DictReader(fh))
    shown = [r for t in ("comparisons", "comparisons-pairs", "comparisons-other")
             for r in tables[f"table-{t}"][1:]]  # fmt: skip
    assert len(shown) == len(every)  # every pair once: open or folded, and in the CSV
    _, *open_rows = tables["table-comparisons"]
    by_op: dict[tuple[str, str], list[list[str]]] = {}
    for row in open_rows:
        by_op.setdefault((row[0], row[1]), []).append(row)
    relevant = {(r["workload"], r["operation"]) for r in every
                if decision_relevant(r["workload"], r["operation"])}  # fmt: skip
    assert set(by_op) == relevant and len(relevant) >= 5
    for (workload, op), rows in by_op.items():
        pairs = [r for r in every if (r["workload"], r["operation"]) == (workload, op)]
        medians = {}
        for r in pairs:
            for side in "ab":
                if r[f"p50_{side}_s"] and int(r[f"n_{side}"]) >= 10:
                    medians[r[f"provider_{side}"]] = float(r[f"p50_{side}_s"])
        fastest = min(medians, key=lambda p: (medians[p], p))
        providers = {r[f"provider_{side}"] for r in pairs for side in "ab"}
        assert len(rows) == len(providers) - 1, (workload, op)  # n - 1 rows
        for row in rows:
            b, a = row[2].split(" vs ")
            assert a == fastest and b != fastest
            pair = next(r for r in pairs if {r["provider_a"], r["provider_b"]} == {a, b})
            if pair["reason"]:
                continue
            ratio = float(pair["ratio"])
            expected = ratio if pair["provider_a"] == a else 1 / ratio
            assert row[5] == f"{expected:.2f}×"
            assert expected >= 1 or medians.get(b) is None  # B is no faster than the fastest


def test_at_a_glance_leaves_out_a_column_no_provider_has_a_value_for(report):
    from bench.report.sections.overview import CAPTIONS, GLANCE_ROLES

    header, *rows = dict(html_tables(report.read_text(encoding="utf-8")))["table-glance"]
    # guest_perf did not run: no CPU column; the others keep their order.
    every = ["Provider", *(label for _, label in GLANCE_ROLES), *CAPTIONS]
    assert "CPU (sha256) p50" not in header
    assert header == [c for c in every if c in header]
    assert {"Create p50", "Checkpoint p50", "Agent session cost"} <= set(header)
    for i in range(1, len(header)):
        assert any(row[i] != "–" for row in rows), header[i]
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    caption = md.split("## At a glance", 1)[1].split("\n\n")[2]
    assert caption.startswith("Medians from the lifecycle, exec, checkpoint and pause_resume ")
    assert "guest_perf" not in caption


def test_capability_matrix_says_what_checkpoints_capture_and_why_ops_are_missing(report):
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    rows = {r[0]: r for r in tables["table-capabilities"][1:]}
    assert "in place" in rows["sprites"][3]
    assert "filesystem only" in rows["sprites"][2]
    assert "new sandbox" in rows["e2b"][3]
    assert "memory" in rows["e2b"][2]
    assert "pause: no pause API" in rows["sprites"][6]


def test_latency_table_shows_intervals_and_n_too_small(report):
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    header, *rows = tables["table-latency-lifecycle"]
    assert header[:6] == ["Provider", "Operation", "n", "Failures", "Not run", "p50"]
    create = next(r for r in rows if r[:2] == ["e2b", "create"])
    assert " – " in create[header.index("p50 95% CI")]
    assert create[header.index("p99")] == "n too small"  # 20 iterations cannot support p99


def test_claims_table_has_a_verdict_for_every_claim_of_the_runs_providers(report):
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    header, *rows = tables["table-claims"]
    verdicts = {r[header.index("Verdict")] for r in rows}
    assert verdicts <= {"within", "slower", "faster", "not measured"}
    sprites_wake = next(r for r in rows if r[1] == "idle_wake/exec_after_idle")
    assert sprites_wake[header.index("Verdict")] == "not measured"
    assert "no exec_after_idle samples for sprites" in sprites_wake[-1]


def test_session_cost_table_shows_the_assumed_scenario(report):
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    assert "Scenario: 4 h session, active 15% of the time, 4 checkpoint(s), 4 resume(s)" in md
    assert "sprites: billed at the fixed 8 vCPU / 4 GiB shape" in md


def test_summary_csv_has_the_statistics_and_the_cost_of_each_operation(report):
    with (report.parent / "summary.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert set(SUMMARY_COLUMNS) <= set(rows[0])
    assert {"runs", "p50_usd", "p95_usd", "usd_per_hour"} <= set(rows[0])
    key = ("e2b", "lifecycle", "create")
    create = next(r for r in rows if (r["provider"], r["workload"], r["operation"]) == key)
    assert float(create["p50_usd"]) == pytest.approx(
        float(create["p50_s"]) * float(create["usd_per_hour"]) / 3600
    )
    p99 = next(r for r in rows if r["operation"] == "create")["p99_s"]
    assert p99 == ""  # withheld: empty in the CSV, named in the withheld column


def test_warnings_cover_status_torn_lines_failures_and_unsupported(tmp_path):
    run = make_run(
        tmp_path / "results",
        "R-interrupted",
        providers=("e2b", "sprites"),
        workloads=("lifecycle", "pause_resume"),
        iterations=8,
        failure_rate=0.2,
        status="interrupted",
        manifest_extra={"load_warnings": ["host load average 7.9 on 2 CPUs during the run"]},
    )
    with (run / "samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"run_id": "R-interr')  # a crash mid-write
    (run / "ledger.jsonl").write_text(
        json.dumps({"at": "x", "event": "destroy_failed", "provider": "e2b"}) + "\n"
    )
    md = (write_report([run], tmp_path / "reports").parent / "report.md").read_text()
    warnings = md.split("## Warnings")[1].split("## Capabilities")[0]
    assert "**run status**: run R-interrupted is 'interrupted'" in warnings
    assert "torn last line" in warnings
    assert "host load average 7.9" in warnings
    assert "destroy_failed" in warnings
    assert "**failures**" in warnings
    assert "**unsupported**: sprites: pause unsupported" in warnings
    assert "p99 withheld" in warnings


def test_several_runs_are_merged_into_one_report_labelled_by_run(tmp_path):
    small = {"providers": ("e2b", "local"), "workloads": ("lifecycle",), "iterations": 6}
    a = make_run(tmp_path / "results", "A-1", seed=1, **small)
    b = make_run(tmp_path / "results", "B-2", seed=2, hostname="other-host", **small)
    c = make_run(tmp_path / "results", "C-3", seed=3, **small)
    path = write_report([a, b, c], tmp_path / "reports")
    assert path.parent.name == "A-1+2" == report_dir_name(["A-1", "B-2", "C-3"])
    md = (path.parent / "report.md").read_text()
    details = dict(html_tables(path.read_text()))["table-details"]
    assert details[0] == ["", "A-1", "B-2", "C-3"]
    assert "merged runs differ in client host" in md
    with (path.parent / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["runs"] == "A-1 B-2 C-3"
    create = next(r for r in rows if r["provider"] == "e2b" and r["operation"] == "create")
    assert int(create["attempts"]) == 18  # 6 iterations from each run


def test_merging_runs_of_different_schema_versions_is_refused(tmp_path, monkeypatch):
    small = {"providers": ("e2b",), "workloads": ("lifecycle",), "iterations": 5}
    a = make_run(tmp_path, "A-v1", **small)
    b = make_run(tmp_path, "B-v2", **small)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["schema_version"] = 2
    (b / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(records, "SUPPORTED_SCHEMA_VERSIONS", frozenset({1, 2}))
    with pytest.raises(SchemaError, match="different schema versions") as info:
        write_report([a, b], tmp_path / "reports")
    assert "\n" not in str(info.value)


def test_bad_input_is_refused_with_one_line_messages(tmp_path):
    with pytest.raises(ValueError, match="no runs given"):
        write_report([], tmp_path)
    with pytest.raises(SchemaError, match="not a sandbox-bench run folder"):
        write_report([tmp_path], tmp_path / "reports")
    run = make_run(tmp_path, "A-twice", providers=("e2b",), workloads=("lifecycle",), iterations=5)
    with pytest.raises(ValueError, match="given twice"):
        write_report([run, run], tmp_path / "reports")
    for bad in (
        {"scenario": {"active_fraction": 2.0}},
        {"scenario": {"hourz": 4}},
        {"scenario": {"checkpoints": 1.5}},
        {"seed": -1},
        {"seed": True},
        {"local_rate_usd_per_hour": -3.0},
        {"local_rate_usd_per_hour": float("nan")},
        {"pricing_path": tmp_path / "no-such-catalog.toml"},
        {"claims_path": tmp_path},
        {"sections": ("glance", "latencies")},
        {"sections": "glance"},
        {"include_warmups": "yes"},
    ):
        with pytest.raises(ValueError) as info:
            ReportSettings(**bad)
        assert "\n" not in str(info.value), bad


def test_settings_change_warmups_scenario_and_local_rate(tmp_path):
    run = make_run(
        tmp_path, "A-settings", providers=("local",), workloads=("lifecycle",), iterations=6
    )
    settings = ReportSettings(
        include_warmups=True,
        scenario={"hours": 8, "active_fraction": 0.5},
        local_rate_usd_per_hour=0.5,
    )
    md = (write_report([run], tmp_path / "out", settings=settings).parent / "report.md").read_text()
    assert "Scenario: 8 h session, active 50% of the time" in md
    assert "with active_fraction, hours set for this report" in md
    # Local cannot sleep, so the whole 8 hours are billed at $0.50 per hour: $4.00, plus its
    # checkpoints, whose time this run did not measure (and no one claims): at least that.
    assert "| local | 2 vCPU / 1 GiB | ≥ 8.00 h (idle billed) | ≥ $4.00 |" in md
    assert "| $4.00 – ? |" in md
    assert "warmup samples (included)" in md


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> Path:
    """Four providers and every workload `make run` runs (bench.toml)."""
    from bench.config import load_toml

    root = tmp_path_factory.mktemp("full")
    workloads = tuple(load_toml(ROOT / "bench.toml")["run"]["workloads"])
    run = make_run(root / "results", "R-full", workloads=workloads, iterations=20, seed=11)
    return write_report([run], root / "reports")


@pytest.mark.browser
def test_html_report_renders_in_headless_chromium(full_report):
    """Every figure loads, nothing is fetched, the long tables are folded (the page's height
    before and after opening every fold goes to test-artifacts/report-height.txt), and the
    page and the README's kind of picture (at a glance, an ECDF, a scaling curve) are saved
    in test-artifacts/."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    from tests.report_screenshot import VIEWPORT, compose, parts

    report = full_report
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console {m.type}: {m.text}")
                    if m.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri())
            page.wait_for_load_state("load")
            title = page.title()
            folded_height = page.evaluate("document.documentElement.scrollHeight")
            closed = page.eval_on_selector_all(
                "details:not([open]) table.data", "els => els.map(e => e.id)"
            )
            open_tables = page.eval_on_selector_all(
                "table.data", "els => els.filter(e => !e.closest('details')).map(e => e.id)"
            )
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
            (ARTIFACTS / "report-screenshot.png").write_bytes(compose(parts(page)))
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            unfolded_height = page.evaluate("document.documentElement.scrollHeight")
            images = page.eval_on_selector_all(
                "figure img",
                """els => els.map(e => { const r = e.getBoundingClientRect();
                    return {alt: e.alt, complete: e.complete, nw: e.naturalWidth,
                            nh: e.naturalHeight, w: r.width, h: r.height}; })""",
            )
            tables = page.eval_on_selector_all(
                "table.data", "els => els.map(e => [e.id, e.rows.length, e.offsetHeight])"
            )
        finally:
            browser.close()
    (ARTIFACTS / "report-height.txt").write_text(
        f"{report}: {folded_height} px folded, {unfolded_height} px with every fold open\n"
    )
    assert problems == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert "Sandbox benchmark report" in title
    figure_files = list((report.parent / "figures").iterdir())
    assert len(images) == len(figure_files)
    for image in images:
        assert image["complete"], image
        assert image["nw"] > 0 and image["nh"] > 0, image
        assert image["w"] > 100 and image["h"] > 50, image
    by_id = {table_id: (rows, height) for table_id, rows, height in tables}
    for table_id in ("table-glance", "table-latency-exec", "table-session-costs", "table-claims"):
        rows, height = by_id[table_id]
        assert rows > 1 and height > 0, table_id
    # Open: on the decision-relevant operations, each provider against the fastest; folded:
    # the other pairs of those operations, and the other operations.
    assert "table-comparisons" in open_tables and "table-glance" in open_tables
    assert "table-comparisons-pairs" in closed and "table-comparisons-other" in closed
    assert "table-latency-checkpoint_scaling" in closed  # long: folded whatever the section
    assert unfolded_height > folded_height * 1.5
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000
    assert (ARTIFACTS / "report-screenshot.png").stat().st_size > 10_000


def test_scaling_open_loop_probe_and_wake_workloads_get_their_figures_and_warnings(tmp_path):
    run = make_run(
        tmp_path / "results",
        "R-extra",
        providers=("e2b", "sprites"),
        workloads=EXTRA_WORKLOADS,
        iterations=6,
        failure_rate=0,
        idle_s=45,
        lag_s=0.02,
        spec_mismatch={"e2b": ["cpus 1 < 2"]},
    )
    # What the run measured of the network: e2b's endpoint answered, sprites' did not.
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["client"]["network"] = {
        "e2b": {"endpoint": "api.e2b.app:443", "tcp_connect_s": [0.021, 0.019], "median_s": 0.02},
        "sprites": {"endpoint": "api.sprites.dev:443", "tcp_connect_s": [], "errors": ["x"]},
    }
    manifest_path.write_text(json.dumps(manifest))
    report = write_report([run], tmp_path / "reports")
    folder = report.parent
    figures = {p.name for p in (folder / "figures").iterdir()}
    assert {"scaling-checkpoint_scaling.svg", "scaling-concurrency_scaling.svg"} <= figures
    html = report.read_text(encoding="utf-8")
    md = (folder / "report.md").read_text(encoding="utf-8")
    tables = dict(html_tables(html))
    header, *rows = tables["table-lag-burst"]
    assert header == [
        "Provider",
        "Scheduled starts",
        "Lag p50",
        "Lag p95",
        "Lag max",
        "Loop delay max",
    ]
    assert [r[0] for r in rows] == ["e2b", "sprites"]
    assert rows[0][4] == "80.0 ms"  # the 5th create of a burst started 4 × 20 ms late
    assert rows[0][5] == "–"  # these synthetic records carry no loop-delay readings
    # The probe's findings, per provider.
    header, *rows = tables["table-findings-probe"]
    assert header[:4] == ["Provider", "Sandboxes probed", "Recycled", "Distinct boot ids"]
    found = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert found["e2b"]["CPUs seen"] == "1" and found["e2b"]["Below spec"] == "6"
    assert found["sprites"]["CPUs seen"] == "2" and found["sprites"]["Below spec"] == "0"
    assert found["e2b"]["Distinct boot ids"] == "6 of 6"
    assert found["sprites"]["Memory seen"] == "2,048 MiB"
    assert "Asked for 2.0 vCPU and 1024 MiB" in md
    # The round-trip table: measured, unreachable.
    header, *rows = tables["table-network"]
    net = {r[header.index("Provider")]: r for r in rows}
    assert net["e2b"][header.index("TCP connect p50")] == "20.0 ms"
    assert net["e2b"][header.index("Rounds")] == "2"
    assert net["sprites"][header.index("Note")] == "unreachable"
    assert "### Network round trip to each provider" in md
    warnings = md.split("## Warnings")[1].split("## Capabilities")[0]
    assert "**schedule lag**: e2b/burst: the client started scheduled operations up to 80.0 ms" in (
        warnings
    )
    assert "**comparability**: e2b: 6 probe(s) found the sandbox smaller than the spec" in warnings
    # The Sprites wake claim is judged on execs after at least 30 s of idle (45 s here).
    claims = dict(html_tables(html))["table-claims"]
    wake = next(r for r in claims[1:] if r[1] == "idle_wake/exec_after_idle")
    assert wake[claims[0].index("n")] == "6"
    assert wake[claims[0].index("Verdict")] in {"within", "faster", "slower"}
    assert html_tables(html) and len(html_tables(html)) == len(markdown_tables(md))


def test_the_round_trip_table_says_when_a_provider_has_no_endpoint_or_was_not_measured(
    tmp_path,
):
    run = make_run(tmp_path / "results", "R-net", providers=("local", "e2b"), iterations=5)
    manifest_path = run / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["providers"]["e2b"].setdefault("environment", {})["endpoint"] = "https://e2b.dev"
    manifest["client"]["network"] = {}  # measured before the run, yet no entry for e2b
    manifest_path.write_text(json.dumps(manifest))
    report = write_report([run], tmp_path / "reports")
    header, *rows = dict(html_tables(report.read_text(encoding="utf-8")))["table-network"]
    notes = {r[header.index("Provider")]: r[header.index("Note")] for r in rows}
    assert notes == {
        "local": "no network endpoint: runs on the client machine",
        "e2b": "not measured",
    }


def test_a_short_idle_never_counts_as_a_wake(tmp_path):
    run = make_run(
        tmp_path / "results",
        "R-short-idle",
        providers=("sprites",),
        workloads=("idle_wake",),
        iterations=6,
        failure_rate=0,
        idle_s=1.0,
    )
    md = (write_report([run], tmp_path / "reports").parent / "report.md").read_text()
    claims = markdown_tables(md.split("## Vendor claims")[1])[0]
    wake = next(r for r in claims[1:] if r[1] == "idle_wake/exec_after_idle")
    assert wake[claims[0].index("Verdict")] == "not measured"
    assert "after 30 s or more of idle" in wake[-1]


def test_the_concurrency_table_divides_each_level_by_its_median_round_time():
    from bench.records import Sample
    from bench.stats import summarize
    from bench.workloads.scaling_report import throughput_table

    samples = []
    for i in range(10):
        for op, d in (("round_c4", 0.2), ("create_c4", 0.05), ("exec_c4", 0.01), ("round_c1", 0.1)):
            samples.append(
                Sample(
                    run_id="r", sample_id=len(samples) + 1, provider="p",
                    workload="concurrency_scaling", operation=op, iteration=i, warmup=False,
                    concurrency=1, started_at="2026-11-28T00:00:00+00:00", duration_s=d,
                    status="ok",
                )
            )  # fmt: skip
    rows = summarize(samples).to_dict("records")
    table = throughput_table("concurrency_scaling", rows)
    assert table is not None
    cells = [list(row.cells) for row in table.rows]
    assert [c[1] for c in cells] == ["1", "4"]
    assert cells[0][3] == "10.0/s" and cells[1][3] == "20.0/s"
    assert cells[1][5] == "n too small"  # p99 of 10 creates is not claimed
    assert throughput_table("lifecycle", [r for r in rows if "round" not in r["operation"]]) is None


def test_a_provider_measured_on_a_loopback_emulator_is_never_passed_off_as_the_real_one(tmp_path):
    import json

    from bench.report import write_report
    from tests.synthetic import make_run

    run = make_run(tmp_path / "results", iterations=20, seed=3)
    manifest = json.loads((run / "manifest.json").read_text())
    emulated = sorted(manifest["providers"])[0]
    real = [p for p in manifest["providers"] if p != emulated]
    manifest["providers"][emulated]["environment"]["endpoint"] = "http://127.0.0.1:40000/api"
    for p in real:
        manifest["providers"][p]["environment"]["endpoint"] = f"https://api.{p}.example"
    (run / "manifest.json").write_text(json.dumps(manifest))
    markdown = write_report([run], tmp_path / "reports").with_name("report.md").read_text()
    assert f"**emulated**: {emulated} ran against a loopback endpoint" in markdown
    assert f"| {emulated} (emulated) |" in markdown
    for p in real:
        assert f"{p} ran against a loopback" not in markdown
    claim_rows = [line for line in markdown.splitlines() if line.startswith(f"| {emulated} |")]
    claim_rows = [line for line in claim_rows if "“" in line]  # the claims table's rows
    assert claim_rows and all("not comparable" in line for line in claim_rows)
