"""Cost arithmetic: the pricing catalog, per-operation and per-workload costs, sessions."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pandas as pd
import pytest

from bench import cost, stats
from bench.records import Sample, Status
from bench.report import write_report
from tests.synthetic import make_run

SPEC = cost.Shape(cpus=2.0, memory_gib=1.0)


@pytest.fixture(scope="module")
def catalog() -> cost.Catalog:
    return cost.load_catalog()


def test_published_sprites_example_four_hour_session_costs_about_44_cents(catalog):
    """Fly's example: a 4-hour Sprites session for about $0.44 at $0.07 per CPU-hour and
    $0.04375 per GB-hour.

    Sprites bill a fixed 8 vCPU / 4 GB shape while active and nothing while hibernated, so
    the example implies the Sprite was active 15 % of the 4 hours (36 minutes): 0.6 active
    hours × (8 × $0.07 + 4 × $0.04375) = 0.6 × $0.735 = $0.441, i.e. 4.8 vCPU-hours and
    2.4 GB-hours of metered use. (Billed the whole 4 hours, the same shape would cost $2.94;
    any metered use on the line 0.07·cpu_h + 0.04375·gb_h = 0.44 reproduces it too.)
    """
    sprites = catalog.get("sprites")
    assert sprites.cpu_usd_per_vcpu_s * 3600 == pytest.approx(0.07)
    assert sprites.memory_usd_per_gib_s * 3600 == pytest.approx(0.04375)

    assert cost.usage_cost_usd(sprites, vcpu_hours=4.8, gib_hours=2.4) == pytest.approx(0.441)

    scenario = cost.SessionScenario(
        hours=4, active_fraction=0.15, checkpoints=0, resumes=0, disk_gib=0
    )
    session = cost.session_cost(sprites, scenario, SPEC)
    assert session.shape == cost.Shape(cpus=8, memory_gib=4)
    assert session.compute_h == pytest.approx(0.6)
    assert session.total_usd == pytest.approx(0.441)
    assert round(session.total_usd, 2) == 0.44
    assert not session.idle_billed

    always_on = cost.session_cost(
        sprites,
        cost.SessionScenario(hours=4, active_fraction=1.0, checkpoints=0, resumes=0, disk_gib=0),
        SPEC,
    )
    assert always_on.total_usd == pytest.approx(2.94)


def test_catalog_has_every_provider_with_basis_source_and_date(catalog):
    assert set(catalog.providers) >= {"sprites", "e2b", "daytona", "local"}
    for pricing in catalog.providers.values():
        assert pricing.billing_basis in cost.BILLING_BASES
        assert pricing.source and pricing.checked
        assert pricing.idle in cost.IDLE_MODES
        assert pricing.granularity_s == 1 and pricing.minimum_s == 0
    assert catalog.get("sprites").billing_basis == "active_usage"
    assert catalog.get("e2b").billing_basis == "allocated"
    assert catalog.get("local").usd_per_s(SPEC) == 0


def test_rates_are_normalised_to_the_same_units_whatever_the_vendor_writes(catalog):
    e2b, daytona = catalog.get("e2b"), catalog.get("daytona")
    # E2B publishes per second, Daytona per hour; the figures are the same price.
    assert e2b.cpu_usd_per_vcpu_s == pytest.approx(0.000014)
    assert daytona.cpu_usd_per_vcpu_s == pytest.approx(0.0504 / 3600)
    assert e2b.cpu_usd_per_vcpu_s == pytest.approx(daytona.cpu_usd_per_vcpu_s, rel=1e-6)
    assert e2b.memory_usd_per_gib_s == pytest.approx(daytona.memory_usd_per_gib_s, rel=1e-6)
    # Sprites' storage is published per GB-month; a month is 730 hours.
    hot = next(t for t in catalog.get("sprites").storage if t.billed == "running")
    assert hot.usd_per_gib_h == pytest.approx(0.50 / 730)


def test_operation_cost_is_duration_times_the_rate_of_the_billed_size(catalog):
    summary = pd.DataFrame(
        [
            {
                "provider": "e2b",
                "workload": "lifecycle",
                "operation": "create",
                "p50_s": 2.0,
                "p95_s": 4.0,
                "mean_s": 2.5,
            },
            {
                "provider": "sprites",
                "workload": "lifecycle",
                "operation": "create",
                "p50_s": 2.0,
                "p95_s": float("nan"),
                "mean_s": 2.0,
            },
            {
                "provider": "mystery",
                "workload": "lifecycle",
                "operation": "create",
                "p50_s": 2.0,
                "p95_s": 2.0,
                "mean_s": 2.0,
            },
        ]
    )
    costs = cost.operation_costs(summary, catalog, SPEC).set_index("provider")
    e2b_rate = 2 * 0.000014 + 1 * 0.0000045
    assert costs.loc["e2b", "p50_usd"] == pytest.approx(2.0 * e2b_rate)
    assert costs.loc["e2b", "p95_usd"] == pytest.approx(4.0 * e2b_rate)
    assert costs.loc["e2b", "usd_per_hour"] == pytest.approx(e2b_rate * 3600)
    assert costs.loc["sprites", "p50_usd"] == pytest.approx(2.0 * 0.735 / 3600)
    assert costs.loc["sprites", "shape"] == "8 vCPU / 4 GiB"
    assert pd.isna(costs.loc["sprites", "p95_usd"])  # a withheld percentile has no cost
    assert not costs.loc["mystery", "priced"]


def _ok(i: int, operation: str, duration: float, iteration: int, workload="lifecycle"):
    return Sample(
        run_id="r",
        sample_id=i,
        provider="e2b",
        workload=workload,
        operation=operation,
        iteration=iteration,
        warmup=False,
        concurrency=1,
        started_at="2026-11-28T00:00:00+00:00",
        duration_s=duration,
        status=Status.OK,
    )


def test_workload_cost_sums_an_iterations_operations_but_not_derived_spans(catalog):
    samples = []
    for it in range(3):
        samples += [
            _ok(len(samples), "create", 1.2, it),
            _ok(len(samples) + 1, "first_exec", 0.3, it),
            _ok(len(samples) + 2, "ready", 1.5, it),  # overlaps create + first_exec
            _ok(len(samples) + 3, "destroy", 0.2, it),
        ]
    frame = stats.samples_frame(samples)
    row = cost.workload_costs(frame, catalog, SPEC).iloc[0]
    rate = 2 * 0.000014 + 1 * 0.0000045
    assert row["iterations"] == 3
    # 1.7 s of operations, rounded up to E2B's 1 s granularity: 2 s billed.
    assert row["billed_p50_s"] == 2.0
    assert row["usd_p50"] == pytest.approx(2.0 * rate)
    assert row["usd_total"] == pytest.approx(3 * 2.0 * rate)


def _catalog_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "pricing.toml"
    path.write_text("schema_version = 1\nhours_per_month = 730\n" + body, encoding="utf-8")
    return path


def test_granularity_and_minimum_apply_to_a_sandboxs_billed_time(tmp_path):
    path = _catalog_file(
        tmp_path,
        """
[providers.minutely]
billing_basis = "allocated"
granularity_s = 60
minimum_s = 300
idle = "none"
paused_pays = "full"
compute.sandbox = { usd = 0.60, per = "sandbox_hour" }
source = "test"
checked = "2026-11-28"
""",
    )
    pricing = cost.load_catalog(path).get("minutely")
    assert pricing.billed_seconds(0) == 0
    assert pricing.billed_seconds(10) == 300
    assert pricing.billed_seconds(301) == 360
    assert pricing.billed_seconds(360) == 360
    assert pricing.usd_per_s(SPEC) * 360 == pytest.approx(0.06)


def test_session_on_an_allocated_provider_bills_idle_time_unless_paused(catalog):
    e2b = catalog.get("e2b")
    rate_h = e2b.usd_per_s(SPEC) * 3600
    latencies = {"checkpoint": 2.0, "pause": 3.0, "resume": 1.0, "first_exec_after_resume": 0.5}
    never_paused = cost.session_cost(
        e2b,
        cost.SessionScenario(hours=4, active_fraction=0.25, checkpoints=2, resumes=0),
        SPEC,
        latencies,
    )
    assert never_paused.idle_billed
    assert never_paused.compute_h == pytest.approx(4 + 2 * 2.0 / 3600)
    assert never_paused.compute_usd == pytest.approx(never_paused.compute_h * rate_h)

    paused = cost.session_cost(
        e2b,
        cost.SessionScenario(hours=4, active_fraction=0.25, checkpoints=2, resumes=3),
        SPEC,
        latencies,
    )
    assert not paused.idle_billed
    transitions_s = 2 * 2.0 + 3 * (3.0 + 1.0)
    assert paused.transition_s == pytest.approx(transitions_s)
    assert paused.compute_h == pytest.approx(1.0 + transitions_s / 3600)
    assert paused.wait_s == pytest.approx(2 * 2.0 + 3 * (1.0 + 0.5))
    # E2B publishes no snapshot price: unknown, left out of the total, and said so.
    assert paused.snapshot_usd is None
    assert paused.total_usd == pytest.approx(paused.compute_usd + paused.storage_usd)
    assert any("not published" in a for a in paused.assumptions)


def test_session_storage_bills_disk_beyond_the_free_allowance_for_the_whole_session(catalog):
    daytona = catalog.get("daytona")
    scenario = cost.SessionScenario(
        hours=10, active_fraction=0.5, checkpoints=0, resumes=1, disk_gib=8
    )
    session = cost.session_cost(daytona, scenario, SPEC)
    # 8 GiB on disk, the first 5 free: 3 GiB × 10 h × $0.000108.
    assert session.storage_usd == pytest.approx(3 * 10 * 0.000108)


def test_a_sleeping_providers_resume_is_its_wake_after_a_long_enough_idle(catalog, tmp_path):
    def run(name: str, idle_s: float) -> pd.DataFrame:
        folder = make_run(
            tmp_path, name, providers=("sprites",), workloads=("idle_wake",), iterations=8,
            failure_rate=0, idle_s=idle_s,
        )  # fmt: skip
        from bench.store import load_run

        return stats.samples_frame(load_run(folder).samples)

    long_idle, short_idle = run("A-long", 45.0), run("B-short", 5.0)
    wake = cost.wake_latency_s(long_idle, "sprites", 30.0)
    assert wake is not None and wake > 0
    assert cost.wake_latency_s(short_idle, "sprites", 30.0) is None
    scenario = cost.SessionScenario(checkpoints=0, resumes=4, disk_gib=0)
    summary = stats.summarize(long_idle)
    [session] = cost.session_costs(catalog, scenario, SPEC, ["sprites"], summary, long_idle)
    assert session.transition_s == pytest.approx(4 * wake)
    assert session.wait_s == pytest.approx(4 * wake)
    [unmeasured] = cost.session_costs(
        catalog, scenario, SPEC, ["sprites"], stats.summarize(short_idle), short_idle
    )
    assert unmeasured.transition_s == 0
    assert any("not measured" in a and "resume" in a for a in unmeasured.assumptions)


def test_concurrency_rounds_are_not_added_to_a_workloads_billed_time(catalog, tmp_path):
    folder = make_run(
        tmp_path, "C-rounds", providers=("e2b",), workloads=("concurrency_scaling",),
        iterations=3, failure_rate=0,
    )  # fmt: skip
    from bench.store import load_run

    frame = stats.samples_frame(load_run(folder).samples)
    ok = frame[(frame["status"] == "ok") & ~frame["warmup"]]
    tasks = ok[~ok["operation"].astype(str).str.startswith("round_c")]
    per_iteration = tasks.groupby("iteration")["duration_s"].sum()
    row = cost.workload_costs(frame, catalog, SPEC).iloc[0]
    billed = sorted(math.ceil(v) for v in per_iteration)
    assert row["billed_p50_s"] == billed[1]


def test_session_lists_operations_it_had_to_bill_as_zero(catalog):
    session = cost.session_cost(catalog.get("e2b"), cost.SessionScenario(), SPEC, {})
    assert any("not measured" in a and "checkpoint" in a for a in session.assumptions)


def test_local_rate_can_be_set_for_a_report(catalog, tmp_path):
    local = cost.load_catalog(local_rate_usd_per_hour=0.36).get("local")
    assert local.usd_per_s(SPEC) * 3600 == pytest.approx(0.36)
    assert catalog.get("local").usd_per_s(SPEC) == 0
    with pytest.raises(ValueError, match="local rate"):
        cost.load_catalog(local_rate_usd_per_hour=-1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no \\[providers"),
        ('[providers.x]\nbilling_basis = "monthly"\n', "needs a compute table"),
        (
            '[providers.x]\nbilling_basis = "monthly"\ncompute.cpu = {usd = 1, per = "vcpu_hour"}\n'
            'granularity_s = 1\nminimum_s = 0\nidle = "none"\npaused_pays = "full"\n'
            'source = "s"\nchecked = "d"\n',
            "billing_basis must be one of",
        ),
        (
            '[providers.x]\ncompute.cpu = {usd = -1, per = "vcpu_hour"}\n',
            "non-negative",
        ),
        (
            '[providers.x]\ncompute.cpu = {usd = 1, per = "cpu_fortnight"}\n',
            "unknown unit",
        ),
    ],
)
def test_a_bad_catalog_is_refused_with_a_one_line_message(tmp_path, body, message):
    with pytest.raises(cost.CatalogError, match=message) as info:
        cost.load_catalog(_catalog_file(tmp_path, body))
    assert "\n" not in str(info.value)


def test_bad_session_parameters_are_refused():
    with pytest.raises(ValueError, match="active_fraction"):
        cost.SessionScenario(active_fraction=1.5)
    with pytest.raises(ValueError, match="hours"):
        cost.SessionScenario(hours=0)


@pytest.mark.parametrize(
    ("usd", "text"),
    [(0, "$0"), (0.441, "$0.441"), (2.94, "$2.94"), (0.0000123, "$0.0000123"), (1234, "$1,234")],
)
def test_dollars_print_with_enough_digits_for_sub_cent_amounts(usd, text):
    assert cost.format_usd(usd) == text


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "cache" not in p.relative_to(folder).parts  # derived, rebuildable
    }


def test_costs_are_computed_at_report_time_and_never_written_into_results(tmp_path):
    run = make_run(tmp_path / "results", providers=("e2b",), workloads=("lifecycle",), iterations=6)
    before = _tree_digest(run)
    write_report([run], tmp_path / "reports")
    assert _tree_digest(run) == before
    assert "usd" not in (run / "samples.jsonl").read_text() + (run / "manifest.json").read_text()


# -- prices that are not one number -----------------------------------------------------------

ENTRY = """
[providers.x]
billing_basis = "active_usage"
granularity_s = 1
minimum_s = 0
idle = "auto_sleep"
paused_pays = "storage"
source = "the entry's page"
checked = "2026-11-01"
compute.memory = { usd = 0.04, per = "gb_hour" }
compute.cpu.per = "vcpu_hour"
"""
VALUES = """
[[providers.x.compute.cpu.values]]
usd = 0.07
source = "the pricing page"
checked = 2026-08-07

[[providers.x.compute.cpu.values]]
usd = 0.00000764
per = "vcpu_second"
source = "the billing page"
checked = "2026-11-28"
"""


def test_a_rate_may_carry_several_sourced_values_and_costs_span_them(tmp_path):
    x = cost.load_catalog(_catalog_file(tmp_path, ENTRY + VALUES)).get("x")
    [cpu] = x.compute_rates["cpu"]
    assert [v.source for v in cpu.values] == ["the pricing page", "the billing page"]
    assert [v.checked.isoformat() for v in cpu.values] == ["2026-08-07", "2026-11-28"]
    assert cpu.low * 3600 == pytest.approx(0.027504) and cpu.high * 3600 == pytest.approx(0.07)
    assert x.cpu_usd_per_vcpu_s * 3600 == pytest.approx(0.07)  # the first listed is primary
    assert x.at("low").cpu_usd_per_vcpu_s * 3600 == pytest.approx(0.027504)
    assert x.uncertain and cpu.last_checked.isoformat() == "2026-11-28"
    # A single number keeps the entry's source and date.
    [memory] = x.compute_rates["memory"]
    assert memory.values[0].source == "the entry's page" and not memory.uncertain
    assert [a.name for a in x.alternatives] == ["as published"]


def test_billing_alternatives_plan_limits_and_declared_sizes_parse(tmp_path):
    more = """
[[providers.x.alternatives]]
name = "fixed"
billed_shape = { cpus = 8, memory_gib = 4 }
source = "billing page"
checked = 2026-11-28

[[providers.x.alternatives]]
name = "used"
billed_shape = "sandbox"
source = "staff post"

[[providers.x.plan_limits]]
name = "Free"
max_concurrent = 3
max_session_h = 1
source = "plans page"
checked = 2026-11-28

[providers.x.sandbox_size]
from_spec = false
templates = { base = { cpus = 2, memory_gib = 0.5 } }
default_template = "base"
source = "docs"
checked = 2026-11-28
"""
    x = cost.load_catalog(_catalog_file(tmp_path, ENTRY + VALUES + more)).get("x")
    fixed, used = x.alternatives
    assert fixed.billed_shape == cost.Shape(cpus=8, memory_gib=4) and used.billed_shape is None
    assert x.with_alternative(used).shape_for(SPEC) == SPEC
    [free] = x.plan_limits
    assert (free.max_concurrent, free.max_session_h, free.usd_per_month) == (3, 1.0, 0.0)
    assert x.sandbox_size.declared({}, {})[0] == cost.Shape(cpus=2, memory_gib=0.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('compute.sandbox = { usd = 1, values = [], per = "sandbox_hour" }', "not both"),
        ('compute.sandbox = { values = [], per = "sandbox_hour" }', "non-empty array"),
        (
            'compute.sandbox = { per = "sandbox_hour", values = [{ usd = 1, source = "s" }] }',
            "missing 'checked'",
        ),
        (
            'compute.sandbox = { per = "sandbox_hour", values = [{ usd = 1, checked = "x", '
            'source = "s" }] }',
            "checked must be a date",
        ),
        ('alternatives = [{ name = "a", billed_shape = 3, source = "s" }]', "billed_shape"),
        (
            'plan_limits = [{ name = "p", max_concurrent = 0, source = "s", '
            "checked = 2026-01-01 }]",
            "max_concurrent must be a whole number",
        ),
        (
            'sandbox_size = { templates = {}, default_template = "base", source = "s", '
            "checked = 2026-01-01 }",
            "default_template 'base' is not in templates",
        ),
        ("self_hosted = 1", "self_hosted must be true or false"),
    ],
)
def test_a_bad_extended_entry_is_refused_with_a_one_line_message(tmp_path, extra, message):
    body = ENTRY.replace('compute.cpu.per = "vcpu_hour"\n', "") + extra + "\n"
    with pytest.raises(cost.CatalogError, match=message) as info:
        cost.load_catalog(_catalog_file(tmp_path, body))
    assert "\n" not in str(info.value)


def test_the_shipped_catalog_keeps_sprites_disagreeing_sources_and_plan_limits(catalog):
    sprites = catalog.get("sprites")
    [cpu] = sprites.compute_rates["cpu"]
    assert sorted(round(v.usd * 3600, 4) for v in cpu.values) == [0.0275, 0.07]
    assert all(v.source and v.checked for v in cpu.values)
    assert [a.billed_shape for a in sprites.alternatives] == [
        cost.Shape(cpus=8, memory_gib=4),
        None,
    ]
    assert {p.name: p.max_concurrent for p in sprites.plan_limits} == {
        "Pay as you go": 3,
        "Level 10": 10,
    }
    assert {p.name: p.max_concurrent for p in catalog.get("e2b").plan_limits} == {
        "Hobby": 20,
        "Pro": 100,
    }
    assert not catalog.get("local").priced and catalog.get("local").self_hosted


def test_a_price_read_more_than_90_days_before_the_report_is_flagged(catalog):
    from datetime import date

    from bench.report.decision import stale_prices

    fresh = stale_prices(catalog, ["sprites", "e2b", "local"], date(2026, 9, 1))
    assert fresh == []
    late = stale_prices(catalog, ["sprites", "e2b", "local"], date(2026, 11, 29))
    assert len(late) == 2  # local is not costed, so not checked
    e2b = next(w for w in late if w.startswith("e2b"))
    assert "cpu (2026-08-08, 113 days)" in e2b
    sprites = next(w for w in late if w.startswith("sprites"))
    assert "cpu" not in sprites.split(":", 1)[1].split("(")[0]  # re-read 2026-11-28
    assert "hot NVMe cache (2026-08-07, 114 days)" in sprites


def test_an_entrys_free_text_checked_date_stays_valid_and_its_age_is_said_unknown(tmp_path):
    from datetime import date

    from bench.report.decision import stale_prices

    body = ENTRY.replace('checked = "2026-11-01"', 'checked = "late 2026, from the docs"')
    catalog = cost.load_catalog(_catalog_file(tmp_path, body.replace("compute.cpu.per", "#")))
    [warning] = stale_prices(catalog, ["x"], date(2026, 11, 29))
    assert "'late 2026, from the docs' is not a date" in warning
