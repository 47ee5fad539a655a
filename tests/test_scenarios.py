"""Scenarios as data: declaration, [scenario.NAME] tables, manifests old and new, plan limits,
the billed size (measured over declared over spec), and what each scenario costs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import cost
from bench import scenarios as sc
from bench.config import ConfigError, build_config, config_from_manifest
from bench.decide import Span
from bench.report import ReportSettings
from bench.report.data import ReportData
from bench.report.decision import decision_of
from bench.report.runs import load_runs
from providers.settings import SettingError, declared
from tests.synthetic import make_run


@pytest.fixture(scope="module")
def catalog() -> cost.Catalog:
    return cost.load_catalog()


def _config(tmp_path: Path, scenario: dict) -> object:
    return build_config({"run": {"output": str(tmp_path)}, "scenario": scenario})


# -- declaration and parsing ------------------------------------------------------------------


def test_three_built_in_scenarios_each_declare_their_keys():
    built = sc.builtin_scenarios()
    assert {n: s.kind.name for n, s in built.items()} == {
        "batch_evaluation": "batch",
        "persistent_agent": "agent",
        "interactive": "interactive",
    }
    for scenario in built.values():
        keys = declared(scenario.kind.params)
        assert keys and all(d.info.help for d in keys)
        assert scenario.table()["kind"] == scenario.kind.name
    assert {d.name for d in declared(sc.BatchScenario)} == {
        "sandboxes_per_day",
        "task_s",
        "concurrency",
    }


def test_flat_scenario_keys_stay_the_persistent_agents_and_named_tables_add_scenarios(tmp_path):
    config = _config(
        tmp_path,
        {
            "hours": 8,
            "batch_evaluation": {"concurrency": 200},
            "nightly": {"kind": "batch", "sandboxes_per_day": 20000, "task_s": 30},
        },
    )
    assert config.scenario.hours == 8.0  # the flat keys, as before
    assert config.scenarios["persistent_agent"].params.hours == 8.0
    assert config.scenarios["batch_evaluation"].params.concurrency == 200
    nightly = config.scenarios["nightly"]
    assert (nightly.kind.name, nightly.params.task_s, nightly.builtin) == ("batch", 30.0, False)
    manifest = config.to_dict()
    assert manifest["scenario"]["hours"] == 8.0  # the flat table older reports read
    assert manifest["scenarios"]["nightly"] == {
        "kind": "batch",
        "sandboxes_per_day": 20000,
        "task_s": 30.0,
        "concurrency": 50,
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"hours": 8, "persistent_agent": {"hours": 2}}, "not both"),
        ({"nightly": {"task_s": 3}}, "needs kind = one of batch, agent, interactive"),
        ({"nightly": {"kind": "weekly"}}, "scenario.nightly.kind must be one of"),
        ({"interactive": {"kind": "batch"}}, "is the built-in interactive scenario"),
        ({"Bad Name": {"kind": "batch"}}, "a scenario name is lower-case letters"),
        ({"nightly": {"kind": "batch", "task_s": -1}}, "scenario.nightly.task_s must be at least"),
        ({"nightly": {"kind": "batch", "weeks": 1}}, "unknown key(s) weeks"),
        ({"batch_evaluation": {"concurrency": 0}}, "concurrency must be at least 1"),
        ({"weeks": 1}, "unknown key(s) weeks"),
    ],
)
def test_a_bad_scenario_table_is_refused_in_one_line(tmp_path, table, message):
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, table)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_run_resumes_with_its_named_scenarios(tmp_path):
    config = _config(tmp_path, {"nightly": {"kind": "batch", "task_s": 30}})
    manifest = {
        "run_id": "R",
        "plan": {"providers": ["local"], "workloads": ["lifecycle"]},
        "config": config.to_dict(),
        "spec": {},
        "seed": 1,
    }
    again = config_from_manifest(manifest, tmp_path / "R")
    assert again.scenarios["nightly"].params.task_s == 30.0
    assert again.scenarios.keys() == config.scenarios.keys()


def test_an_old_manifests_flat_scenario_is_the_persistent_agents(tmp_path):
    old = {"config": {"iterations": 6, "warmup": 0, "scenario": {"hours": 2.0, "resumes": 0}}}
    run = make_run(tmp_path, "OLD", providers=("e2b",), workloads=("lifecycle",), iterations=6,
                   manifest_extra=old)  # fmt: skip
    data = ReportData(load_runs([run]), ReportSettings(), tmp_path / "f")
    scenarios = data.scenario_set.scenarios
    assert scenarios["persistent_agent"].params.hours == 2.0
    assert scenarios["persistent_agent"].params.resumes == 0
    assert scenarios["batch_evaluation"].params == sc.BatchScenario()  # the defaults
    assert data.scenario_set.sources["persistent_agent"] == "as run OLD set it"


def test_a_reports_scenarios_override_the_runs_and_add_new_ones(tmp_path):
    run = make_run(tmp_path, "S", providers=("e2b",), workloads=("lifecycle",), iterations=6)
    settings = ReportSettings(
        scenario={"hours": 1.0},
        scenarios={"batch_evaluation": {"concurrency": 5}, "tiny": {"kind": "interactive"}},
    )
    data = ReportData(load_runs([run]), settings, tmp_path / "f")
    chosen = data.scenario_set.scenarios
    assert chosen["persistent_agent"].params.hours == 1.0
    assert chosen["batch_evaluation"].params.concurrency == 5
    assert chosen["tiny"].kind.name == "interactive"
    assert data.scenario_set.sources["tiny"] == "set for this report"
    with pytest.raises(ValueError, match="not both"):
        ReportSettings(scenario={"hours": 1.0}, scenarios={"persistent_agent": {"hours": 2}})
    with pytest.raises(ValueError, match="needs kind"):
        ReportSettings(scenarios={"mystery": {"task_s": 1}})


# -- plan limits ------------------------------------------------------------------------------


def test_a_scenario_needing_50_sandboxes_at_once_flags_the_plans_whose_cap_is_lower(catalog):
    needs = sc.Needs(concurrency=50, session_h=0.1)
    plan, short, none_fits = sc.check_plans(catalog.get("sprites"), needs)
    assert plan is None and none_fits
    assert short == (
        "Pay as you go: 3 sandboxes at once < 50 needed",
        "Level 10: 10 sandboxes at once < 50 needed",
    )
    plan, short, none_fits = sc.check_plans(catalog.get("e2b"), needs)
    assert plan.name == "Pro" and not none_fits
    assert short == ("Hobby: 20 sandboxes at once < 50 needed",)
    # Daytona publishes no plan limits: nothing to flag, nothing assumed.
    assert sc.check_plans(catalog.get("daytona"), needs) == (None, (), False)
    # A session longer than a plan's cap is flagged too.
    _, short, _ = sc.check_plans(catalog.get("e2b"), sc.Needs(concurrency=1, session_h=4))
    assert short == ("Hobby: sessions capped at 1 h < 4 h",)


def test_the_batch_scenario_at_50_leaves_a_provider_no_plan_fits_out_of_the_cost_ranks(tmp_path):
    run = make_run(tmp_path, "P", providers=("e2b",), workloads=("lifecycle",), iterations=6)
    settings = ReportSettings(scenarios={"batch_evaluation": {"concurrency": 50}})
    data = ReportData(load_runs([run]), settings, tmp_path / "f")
    batch = next(d for d in decision_of(data).scenarios if d.scenario.name == "batch_evaluation")
    assert "no published plan allows it" in batch.cost_ranking.withheld["sprites"]
    e2b = batch.costs["e2b"].price
    assert e2b.plan.name == "Pro" and e2b.month_with_plan.low == pytest.approx(
        e2b.per_month.low + 150
    )
    settings = ReportSettings(scenarios={"batch_evaluation": {"concurrency": 3}})
    data = ReportData(load_runs([run]), settings, tmp_path / "g")
    batch = next(d for d in decision_of(data).scenarios if d.scenario.name == "batch_evaluation")
    assert "sprites" in batch.cost_ranking.ranks
    assert batch.costs["sprites"].price.plan.name == "Pay as you go"


# -- the billed size --------------------------------------------------------------------------


def test_e2b_is_billed_at_its_templates_size_not_the_spec(catalog):
    e2b = catalog.get("e2b")
    spec = {"cpus": 1, "memory_mb": 512, "template": None}
    size = sc.sandbox_size(e2b, spec, {"template": "base"})
    assert size.origin == "declared"
    assert size.shape == cost.Shape(cpus=2, memory_gib=0.5)
    assert "template 'base'" in size.source
    # The figure: a 4 h session at 2 vCPU / 0.5 GiB costs about $0.065, not $0.035.
    session = cost.session_cost(
        e2b, cost.SessionScenario(), size.shape, {}, size_source=size.phrase
    )
    assert session.total_usd == pytest.approx(0.0654, abs=0.0005)
    at_spec = cost.session_cost(e2b, cost.SessionScenario(), cost.spec_shape(spec), {})
    assert at_spec.total_usd == pytest.approx(0.0351, abs=0.0005)
    # A template the catalog does not know falls back to the spec, and says so.
    other = sc.sandbox_size(e2b, {"template": "big", "cpus": 4, "memory_mb": 4096}, {})
    assert other.origin == "spec" and "'big''s size is not in the pricing catalog" in other.note


def test_measured_size_wins_over_declared_over_spec(catalog):
    e2b = catalog.get("e2b")
    spec = {"cpus": 1, "memory_mb": 1024}
    # A probe near the declared size confirms it (VMs show a little less memory).
    near = sc.sandbox_size(e2b, spec, {}, probe=cost.Shape(cpus=2, memory_gib=0.47))
    assert near.origin == "declared" and "confirmed by the probe" in near.source
    assert near.shape == cost.Shape(cpus=2, memory_gib=0.5)
    # A probe far from it is used, and the declaration is named.
    far = sc.sandbox_size(e2b, spec, {}, probe=cost.Shape(cpus=4, memory_gib=8))
    assert far.origin == "measured" and far.shape == cost.Shape(cpus=4, memory_gib=8)
    assert "declared template 'base' is 2 vCPU / 0.5 GiB" in far.note
    # No probe, no declaration: the spec.
    local = sc.sandbox_size(catalog.get("local"), spec, {})
    assert local.origin == "spec" and local.shape == cost.Shape(cpus=1, memory_gib=1)
    # Daytona's image path sends the spec, so the spec applies there.
    daytona = catalog.get("daytona")
    assert sc.sandbox_size(daytona, spec, {"image": "python:3.12"}).origin == "spec"
    assert sc.sandbox_size(daytona, spec, {"snapshot": None}).shape == cost.Shape(
        cpus=1, memory_gib=1
    )


# -- prices as ranges -------------------------------------------------------------------------


def test_the_product_briefs_sprites_example_is_inside_the_catalogs_range(catalog):
    """About $0.44 for a 4-hour Sprites session at $0.07 per CPU-hour and $0.04375 per
    GB-hour: the catalog has two CPU rates ($0.07 and $0.0275 per vCPU-hour) and two billing
    readings (a fixed 8 vCPU / 4 GB, or self-reported use of the sandbox's own size)."""
    sprites = catalog.get("sprites")
    [example] = sprites.examples
    size = sc.sandbox_size(sprites, {"cpus": 1, "memory_mb": 1024}, {})
    check = sc.check_example(
        example, sprites, size, hours_per_month=730, dearest_snapshot_usd_per_gib_h=0.0
    )
    low, high = check.price.per_unit.low, check.price.per_unit.high
    # 0.6 active hours: usage at 1 vCPU / 1 GiB at the lower CPU rate; the fixed shape at the
    # higher one.
    assert low == pytest.approx(0.6 * (0.00000764 * 3600 + 0.00001215 * 3600), rel=1e-6)
    assert high == pytest.approx(0.6 * (8 * 0.07 + 4 * 0.04375), rel=1e-6)
    assert check.inside
    assert "The published $0.44 is inside this range" in check.text()
    fixed, used = check.price.by_alternative
    assert (
        fixed.name.startswith("fixed 8 vCPU") and used.billed_shape.describe() == "1 vCPU / 1 GiB"
    )
    assert fixed.per_unit.low == pytest.approx(0.6 * (8 * 0.0275 + 4 * 0.04374), rel=1e-3)
    # A figure the range does not hold is said to be outside.
    dearer = cost.PublishedExample(what="x", usd=2.94, scenario=example.scenario, source="s")
    outside = sc.check_example(
        dearer, sprites, size, hours_per_month=730, dearest_snapshot_usd_per_gib_h=0.0
    )
    assert not outside.inside and "is outside this range" in outside.text()


def test_an_unpublished_snapshot_price_widens_the_range_to_the_dearest_storage_rate(catalog):
    daytona = catalog.get("daytona")
    scenario = sc.builtin_scenarios()["persistent_agent"]
    size = sc.sandbox_size(daytona, {}, {})
    price = sc.price(
        scenario,
        daytona,
        size,
        {k: Span.point(0.0) for k in scenario.kind.times},
        hours_per_month=730,
        dearest_snapshot_usd_per_gib_h=0.5 / 730,
    )
    assert price.snapshot_unknown
    gib_h = 1.0 * 4 * 4 / 2  # 4 checkpoints of 1 GiB kept half the 4 h session on average
    assert price.per_unit.high - price.per_unit.low == pytest.approx(gib_h * 0.5 / 730)
    assert any("dearest storage rate" in n for n in price.notes)


def test_measured_times_move_the_cost_within_their_interval(catalog):
    e2b = catalog.get("e2b")
    scenario = sc.builtin_scenarios()["batch_evaluation"]
    size = sc.sandbox_size(e2b, {}, {})
    price = sc.price(
        scenario,
        e2b,
        size,
        {"overhead": Span(low=1.0, mid=2.0, high=5.0)},
        hours_per_month=730,
        dearest_snapshot_usd_per_gib_h=0.0,
    )
    rate = 2 * 0.000014 + 0.5 * 0.0000045
    assert price.per_unit.low == pytest.approx((120 + 1) * rate)
    assert price.per_unit.mid == pytest.approx((120 + 2) * rate)
    assert price.per_unit.high == pytest.approx((120 + 5) * rate)
    assert price.per_day.mid == pytest.approx(1000 * price.per_unit.mid)
    assert price.per_month.mid == pytest.approx(price.per_day.mid * 730 / 24)


def test_settings_refuse_a_scenarios_table_that_is_not_one():
    for bad in ({"x": 1}, "batch", {"batch_evaluation": {"task_s": "long"}}):
        with pytest.raises((ValueError, SettingError)) as info:
            ReportSettings(scenarios=bad)
        assert "\n" not in str(info.value)
    assert not math.isnan(sc.BatchScenario().task_s)


def test_report_scenario_flags_set_and_add_scenarios_and_refuse_bad_ones(tmp_path, capsys):
    import json

    from bench.cli import main

    make_run(tmp_path / "results", "F", providers=("e2b",), workloads=("lifecycle",), iterations=6)
    argv = ["report", "F", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out")]
    flags = ["nightly.kind=batch", "nightly.task_s=30", "batch_evaluation.concurrency=5"]
    code = main([*argv, *(f for x in flags for f in ("--scenario", x)), "--scenario-hours", "2"])
    assert code == 0
    decision = json.loads((tmp_path / "out" / "F" / "decision.json").read_text(encoding="utf-8"))
    params = {s["name"]: s["parameters"] for s in decision["scenarios"]}
    assert params["nightly"]["task_s"] == 30.0 and params["nightly"]["kind"] == "batch"
    assert params["batch_evaluation"]["concurrency"] == 5
    assert params["persistent_agent"]["hours"] == 2.0
    capsys.readouterr()
    for bad, message in (
        ("nightly=batch", "--scenario wants NAME.KEY=VALUE"),
        ("nightly.task_s=30", "needs kind"),
        ("interactive.session_minutes=soon", "session_minutes must be a number"),
    ):
        assert main([*argv, "--scenario", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err
