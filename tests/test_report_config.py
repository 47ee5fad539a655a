"""A report prices and costs runs the way they were run: their [pricing] catalog and local rate,
their session scenario; the report's settings override them, and runs that disagree are said
to."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import ReportSettings, write_report
from tests.conftest import needs_root
from tests.report_parsing import html_tables
from tests.synthetic import make_run

ROOT = Path(__file__).resolve().parents[1]

SMALL_CATALOG = """
schema_version = 1
hours_per_month = 730

[providers.local]
display_name = "local, priced by the test"
billing_basis = "allocated"
granularity_s = 0.001
minimum_s = 0
idle = "none"
paused_pays = "full"
compute.sandbox = {{ usd = {rate}, per = "sandbox_hour" }}
source = "tests/test_report_config.py"
checked = "2026-11-29"

[providers.e2b]
display_name = "E2B, priced by the test"
billing_basis = "active_usage"
granularity_s = 1
minimum_s = 0
idle = "pause"
paused_pays = "storage"
compute.cpu = {{ usd = {rate}, per = "vcpu_hour" }}
source = "tests/test_report_config.py"
checked = "2026-11-29"
"""


def _catalog(folder: Path, rate: float, name: str = "prices.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(SMALL_CATALOG.format(rate=rate), encoding="utf-8")
    return path


def _csv(report: Path) -> list[dict[str, str]]:
    with (report.parent / "summary.csv").open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _rate(report: Path) -> float:
    """The one price per hour every row of summary.csv was costed at."""
    rates = {round(float(r["usd_per_hour"]), 9) for r in _csv(report)}
    assert len(rates) == 1, rates
    return rates.pop()


def _config(**tables) -> dict:
    return {"manifest_extra": {"config": {"iterations": 6, "warmup": 1, **tables}}}


def test_a_run_made_with_a_custom_catalog_is_reported_at_that_catalogs_prices(tmp_path):
    """End to end: `sandbox-bench run` with a [pricing] catalog, then the report."""
    needs_root()
    catalog = _catalog(tmp_path, 7.2)
    config = tmp_path / "bench.toml"
    config.write_text(
        f'[run]\noutput = "{tmp_path / "results"}"\n'
        f'[pricing]\ncatalog = "{catalog}"\n'
        f'[providers.local]\nstate_dir = "{tmp_path / "state"}"\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--config", str(config), "--providers", "local",
         "--workloads", "lifecycle", "--iterations", "5", "--warmup", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [folder] = list((tmp_path / "results").iterdir())
    report = write_report([folder], tmp_path / "reports")
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    # Every priced provider of the catalog is listed, measured or not (issue 18).
    local = next(r for r in tables["table-pricing"][1:] if r[0].startswith("local"))
    assert local[0] == "local, priced by the test"
    assert "$7.20 per sandbox-hour" in local[2]
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    assert f"From {catalog} (the runs' [pricing] catalog)." in md
    rows = {r["operation"]: r for r in _csv(report) if r["provider"] == "local"}
    create = rows["create"]
    assert float(create["usd_per_hour"]) == pytest.approx(7.2)
    assert float(create["p50_usd"]) == pytest.approx(float(create["p50_s"]) * 7.2 / 3600)


def test_the_reports_own_catalog_and_local_rate_win_over_the_runs(tmp_path):
    theirs = _catalog(tmp_path / "theirs", 3.6)
    ours = _catalog(tmp_path / "ours", 0.36)
    run = make_run(
        tmp_path / "results", "R-cat", providers=("local",), workloads=("lifecycle",),
        iterations=6, **_config(pricing={"catalog": str(theirs)}),
    )  # fmt: skip
    assert _rate(write_report([run], tmp_path / "a")) == pytest.approx(3.6)
    settings = ReportSettings(pricing_path=ours)
    assert _rate(write_report([run], tmp_path / "b", settings=settings)) == pytest.approx(0.36)
    settings = ReportSettings(pricing_path=ours, local_rate_usd_per_hour=1.8)
    assert _rate(write_report([run], tmp_path / "c", settings=settings)) == pytest.approx(1.8)


def test_the_runs_own_local_rate_prices_local_sandboxes(tmp_path):
    run = make_run(
        tmp_path / "results", "R-rate", providers=("local",), workloads=("lifecycle",),
        iterations=6, **_config(pricing={"local_usd_per_hour": 0.72}),
    )  # fmt: skip
    report = write_report([run], tmp_path / "reports")
    assert _rate(report) == pytest.approx(0.72)
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    assert "the run's [pricing] local_usd_per_hour (R-rate)" in md


def test_runs_priced_with_different_catalogs_are_priced_with_the_first_and_a_warning(tmp_path):
    a = make_run(
        tmp_path / "results", "A-cat", providers=("e2b",), workloads=("lifecycle",),
        iterations=6, **_config(pricing={"catalog": str(_catalog(tmp_path / "a", 0.5))}),
    )  # fmt: skip
    b = make_run(
        tmp_path / "results", "B-cat", providers=("e2b",), workloads=("lifecycle",),
        iterations=6, seed=2, **_config(pricing={"catalog": str(_catalog(tmp_path / "b", 5.0))}),
    )  # fmt: skip
    report = write_report([a, b], tmp_path / "reports")
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    warnings = md.split("## Warnings")[1].split("## Capabilities")[0]
    assert "the runs were priced with different catalogs" in warnings
    assert f"this report prices every run with {tmp_path / 'a' / 'prices.toml'}" in warnings
    # e2b bills 2 vCPU of the synthetic spec at the first catalog's $0.50 per vCPU-hour.
    assert _rate(report) == pytest.approx(1.0)


def test_a_catalog_that_is_gone_is_refused_in_one_line_before_anything_is_written(tmp_path):
    run = make_run(
        tmp_path / "results", "R-gone", providers=("local",), workloads=("lifecycle",),
        iterations=6, **_config(pricing={"catalog": str(tmp_path / "gone.toml")}),
    )  # fmt: skip
    with pytest.raises(ValueError, match="R-gone was priced with the catalog") as info:
        write_report([run], tmp_path / "reports")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "reports").exists()
    # With a catalog given to the report it is reported.
    settings = ReportSettings(pricing_path=_catalog(tmp_path, 1.0))
    assert write_report([run], tmp_path / "reports", settings=settings).is_file()


def test_the_session_scenario_comes_from_the_run_and_the_report_overrides_keys(tmp_path):
    run = make_run(
        tmp_path / "results", "R-scn", providers=("local",), workloads=("lifecycle",),
        iterations=6, **_config(scenario={"hours": 2.0, "resumes": 0}),
    )  # fmt: skip
    md = (write_report([run], tmp_path / "a").parent / "report.md").read_text(encoding="utf-8")
    assert "Scenario: 2 h session, active 15% of the time, 4 checkpoint(s), 0 resume(s)" in md
    assert "(as run R-scn set it)" in md
    settings = ReportSettings(scenario={"checkpoints": 1})
    md = (write_report([run], tmp_path / "b", settings=settings).parent / "report.md").read_text()
    assert "Scenario: 2 h session, active 15% of the time, 1 checkpoint(s), 0 resume(s)" in md
    assert "(as run R-scn set it, with checkpoints set for this report)" in md


def test_runs_made_with_different_scenarios_use_the_first_and_say_so(tmp_path):
    common = {"providers": ("local",), "workloads": ("lifecycle",), "iterations": 6}
    a = make_run(tmp_path / "results", "A-scn", **common, **_config(scenario={"hours": 2.0}))
    b = make_run(tmp_path / "results", "B-scn", seed=3, **common, **_config(scenario={"hours": 9}))
    md = (write_report([a, b], tmp_path / "reports").parent / "report.md").read_text()
    assert "the runs were made with different session scenarios" in md
    assert "the session costs use A-scn's" in md
    assert "Scenario: 2 h session" in md


def test_a_bad_scenario_in_a_runs_manifest_is_refused_in_one_line(tmp_path):
    run = make_run(
        tmp_path / "results", "R-bad", providers=("local",), workloads=("lifecycle",),
        iterations=6, **_config(scenario={"hours": -1}),
    )  # fmt: skip
    with pytest.raises(ValueError, match="R-bad") as info:
        write_report([run], tmp_path / "reports")
    assert "\n" not in str(info.value)
