"""The decision: ranks that tie what the data cannot separate, and say why a provider is not
ranked; the decision section at the top of the report and its CSV and JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import decide
from bench.decide import Span
from bench.report import ReportSettings, write_report
from bench.report.data import ReportData
from bench.report.decision import decision_of
from bench.report.runs import load_runs
from tests.report_parsing import html_tables
from tests.synthetic import capabilities, make_run


def _lognormal(seed: int, median: float, n: int = 40, sigma: float = 0.3) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).lognormal(math.log(median), sigma, n))


# -- latency ranks ----------------------------------------------------------------------------


def test_overlapping_distributions_are_tied_and_separated_ones_ranked_apart():
    tied = decide.rank_latency({"a": _lognormal(1, 0.50), "b": _lognormal(2, 0.52)}, seed=0)
    assert tied.ranks == {"a": 1, "b": 1}
    pair = tied.pair("a", "b")
    assert not pair.separated and pair.low <= 1.0 <= pair.high
    assert tied.tied_with("a") == ("b",)

    apart = decide.rank_latency({"a": _lognormal(1, 0.50), "b": _lognormal(2, 1.0)}, seed=0)
    assert apart.ranks == {"a": 1, "b": 2}
    pair = apart.pair("a", "b")
    assert pair.separated and 1.0 < pair.low <= pair.ratio <= pair.high
    assert pair.ratio == pytest.approx(2.0, rel=0.25)
    assert apart.tied_with("b") == ()


def test_a_provider_tied_with_two_that_are_apart_keeps_the_leaders_rank():
    # A ties B, B ties C, A is clearly ahead of C: A and B share rank 1, C is behind A alone.
    samples = {
        "a": _lognormal(1, 0.50, n=30, sigma=0.15),
        "b": _lognormal(2, 0.58, n=30, sigma=0.6),
        "c": _lognormal(3, 0.68, n=30, sigma=0.15),
    }
    ranking = decide.rank_latency(samples, seed=3)
    assert ranking.pair("a", "c").separated
    assert not ranking.pair("a", "b").separated and not ranking.pair("b", "c").separated
    assert ranking.ranks == {"a": 1, "b": 1, "c": 2}


def test_nothing_is_ranked_from_too_few_samples_and_the_reason_is_given():
    ranking = decide.rank_latency(
        {"a": _lognormal(1, 0.5), "few": _lognormal(2, 0.1, n=9), "none": np.empty(0)},
        seed=0,
        withheld={"emu": "endpoint on this machine"},
    )
    assert ranking.ranks == {"a": 1}
    assert ranking.withheld["few"] == "9 successful sample(s); ranking needs 10"
    assert ranking.withheld["none"] == "no successful samples"
    assert ranking.withheld["emu"] == "endpoint on this machine"


def test_cost_ranges_separate_only_when_one_lies_wholly_below_the_other():
    ranking = decide.rank_ranges(
        {
            "cheap": Span(low=10, mid=11, high=12),
            "overlap": Span(low=11.5, mid=20, high=30),
            "dear": Span(low=29, mid=35, high=40),
            "rounding": Span(low=40.2, mid=40.2, high=40.2),  # within 1 % of dear's top
        },
        withheld={"local": "no host price"},
    )
    assert ranking.ranks["cheap"] == ranking.ranks["overlap"] == 1
    assert ranking.ranks["dear"] == 2  # cheap is wholly below it; overlap is not
    assert ranking.ranks["rounding"] == 3  # below cheap and overlap, tied with dear
    assert ranking.tied_with("rounding") == ("dear",)
    assert "local" not in ranking.ranks and ranking.withheld["local"] == "no host price"


spans = st.builds(
    lambda low, width: Span(low=low, mid=low + width / 2, high=low + width),
    st.floats(min_value=0, max_value=1e4),
    st.floats(min_value=0, max_value=1e3),
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefg"), spans, min_size=1))
def test_property_a_rank_counts_exactly_the_ranges_wholly_below(ranges):
    ranking = decide.rank_ranges(ranges, tolerance=0.0)
    assert set(ranking.ranks) == set(ranges)
    for b, sb in ranges.items():
        below = sum(1 for a, sa in ranges.items() if a != b and sa.high < sb.low)
        assert ranking.ranks[b] == 1 + below
        for a, sa in ranges.items():
            if sa.high < sb.low:
                assert ranking.ranks[a] < ranking.ranks[b]
    assert min(ranking.ranks.values()) == 1


# -- the report -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two providers measured twice: once alike (e2b scaled to daytona), once apart."""
    root = tmp_path_factory.mktemp("decide")
    common = dict(providers=("daytona", "e2b"), workloads=("lifecycle",), iterations=30,
                  failure_rate=0.0, sigma=0.25)  # fmt: skip
    # synthetic medians: daytona create 0.2 s, e2b 0.45 s; scaled so they match, or not.
    alike = make_run(root, "A-alike", scale={"e2b": 0.2 / 0.45}, **common)
    apart = make_run(root, "B-apart", scale={"e2b": 1.0}, seed=5, **common)
    return alike, apart


def _decision(folder: Path, **settings):
    data = ReportData(load_runs([folder]), ReportSettings(**settings), folder / "fig")
    return data, {d.scenario.name: d for d in decision_of(data).scenarios}


def test_the_report_ties_alike_providers_and_ranks_apart_ones_with_the_ratio(two_runs):
    alike, apart = two_runs
    _, same = _decision(alike)
    ranks = same["interactive"].latency_ranking.ranks
    assert ranks["daytona"] == ranks["e2b"] == 1
    _, diff = _decision(apart)
    d = diff["interactive"]
    assert d.latency_ranking.ranks == {"daytona": 1, "e2b": 2}
    statement = next(s for s in d.latency_statements() if s.startswith("e2b"))
    pair = d.latency_ranking.pair("daytona", "e2b")
    assert f"is {pair.ratio:.2f}× daytona's (95 % CI {pair.low:.2f}–{pair.high:.2f})" in statement
    assert "slower" in statement
    # Providers the run did not measure are still priced, marked, never ranked on latency.
    assert d.latency["sprites"].origin == "not measured"
    assert "sprites" not in d.latency_ranking.ranks
    assert d.costs["sprites"].price is not None
    assert "vendor claim, not measured" in d.costs["sprites"].times_summary


def test_an_emulated_provider_is_shown_but_never_ranked(tmp_path):
    endpoints = {"e2b": "http://127.0.0.1:8123", "daytona": "https://app.daytona.io/api"}
    loopback = {
        "providers": {
            p: {"capabilities": capabilities(p), "environment": {"endpoint": url}}
            for p, url in endpoints.items()
        }
    }
    run = make_run(
        tmp_path,
        "E-emu",
        providers=("daytona", "e2b"),
        workloads=("lifecycle",),
        iterations=20,
        manifest_extra=loopback,
    )
    _, by_name = _decision(run)
    d = by_name["interactive"]
    assert d.latency["e2b"].origin == "emulated" and d.latency["e2b"].n >= 10
    assert "loopback emulator" in d.latency_ranking.withheld["e2b"]
    assert d.latency_ranking.ranks == {"daytona": 1}
    # Its cost uses vendor claims, not the emulator's times.
    assert d.costs["e2b"].times_origin["ready"] == "vendor claim, not measured"


def test_local_is_not_costed_without_a_host_price_and_never_shown_as_zero(tmp_path):
    run = make_run(tmp_path, "L-local", providers=("local",), workloads=("lifecycle",),
                   iterations=10)  # fmt: skip
    report = write_report([run], tmp_path / "reports")
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    local_rows = [line for line in md.splitlines() if line.startswith("| local ")]
    assert local_rows and not any("$0 " in r or "$0 |" in r for r in local_rows)
    assert "not costed" in md and "local_usd_per_hour" in md
    _, by_name = _decision(run)
    assert "local" in by_name["batch_evaluation"].cost_ranking.withheld
    # Every priced provider of the catalog is in the cost tables, measured or not.
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    priced = {r[0] for r in tables["table-session-costs"][1:]}
    assert {"sprites", "e2b", "daytona", "local"} <= priced

    with_price = write_report(
        [run], tmp_path / "priced", settings=ReportSettings(local_rate_usd_per_hour=0.5)
    )
    rows = dict(html_tables(with_price.read_text(encoding="utf-8")))["table-session-costs"]
    local = next(r for r in rows if r[0] == "local")
    assert local[1] != "not costed" and local[3] != "$0"
    _, by_name = _decision(run, local_rate_usd_per_hour=0.5)
    assert "local" in by_name["batch_evaluation"].cost_ranking.ranks


def test_the_decision_section_comes_first_and_its_tables_are_written_as_csv_and_json(two_runs):
    _, apart = two_runs
    report = write_report([apart], apart.parent / "reports")
    folder = report.parent
    md = (folder / "report.md").read_text(encoding="utf-8")
    first = next(line for line in md.splitlines() if line.startswith("## "))
    assert first == "## Decision"
    for title in ("### Batch evaluation", "### Persistent agent", "### Interactive"):
        assert title in md
    with (folder / "decision.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["scenario"], r["provider"]) for r in rows} >= {
        (s, p)
        for s in ("batch_evaluation", "persistent_agent", "interactive")
        for p in ("daytona", "e2b", "sprites", "local")
    }
    row = next(r for r in rows if (r["scenario"], r["provider"]) == ("interactive", "e2b"))
    assert row["latency_rank"] == "2" and row["latency_origin"] == "measured"
    decision = json.loads((folder / "decision.json").read_text(encoding="utf-8"))
    interactive = next(s for s in decision["scenarios"] if s["name"] == "interactive")
    assert interactive["latency_ranks"] == {"daytona": 1, "e2b": 2}
    assert interactive["parameters"]["kind"] == "interactive"
    assert any("× daytona's (95 % CI" in s for s in interactive["statements"])
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    with (folder / "summary.csv").open(encoding="utf-8") as fh:
        assert len(summary["rows"]) == len(list(csv.DictReader(fh)))


# -- a time neither measured nor claimed: an open upper end, never a number counted at 0 s --


def test_an_open_range_is_withheld_unless_it_is_ahead_of_no_one():
    # "open" is known to cost at least 5 (its known part 5-6), upper end unknown: it might
    # or might not be below "dear" (from 20), so a rank from it would be a guess.
    ranges = {
        "cheap": Span(low=1, mid=1.5, high=2),
        "open": Span(low=5, mid=5.5, high=6),
        "dear": Span(low=20, mid=21, high=22),
    }
    reason = "the time of overhead is neither measured nor claimed"
    ranking = decide.rank_ranges(ranges, open_high={"open": reason})
    assert ranking.withheld == {"open": reason}
    assert ranking.ranks == {"cheap": 1, "dear": 2}
    # Ahead of no one even at its lower end: whatever the unknown is, no rank moves, so it is
    # ranked, behind "cheap", tied with "dear" (its range may reach over it).
    ranges["dear"] = Span(low=5.5, mid=8, high=9)
    ranking = decide.rank_ranges(ranges, open_high={"open": reason})
    assert ranking.withheld == {}
    assert ranking.ranks == {"cheap": 1, "open": 2, "dear": 2}
    assert ranking.tied_with("open") == ("dear",)
    assert ranking.pair("cheap", "open").separated


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefg"), spans, min_size=1),
    st.sets(st.sampled_from("abcdefg")),
    st.lists(
        st.one_of(st.floats(min_value=0, max_value=1e5), st.just(math.inf)), min_size=7, max_size=7
    ),
)
def test_property_an_open_range_is_ranked_only_where_its_unknown_part_changes_no_rank(
    ranges, opened, extra
):
    opened = {p: "unknown" for p in opened if p in ranges}
    ranking = decide.rank_ranges(ranges, open_high=opened, tolerance=0.0)
    assert set(ranking.ranks) | set(ranking.withheld) == set(ranges)
    assert set(ranking.withheld) <= set(opened)
    # Whatever the unknown parts turn out to be, the ranked providers' ranks stay the same.
    kept = set(ranking.ranks)
    assert not any(pair.separated for pair in ranking.pairs if pair.better in opened)
    truth = decide.rank_ranges(
        {
            p: Span(low=s.low, mid=s.mid, high=s.high + extra[i]) if p in opened else s
            for i, (p, s) in enumerate(sorted(ranges.items()))
            if p in kept
        },
        tolerance=0.0,
    )
    assert truth.ranks == ranking.ranks


def test_a_time_neither_measured_nor_claimed_leaves_the_cost_open_not_zero():
    from bench import cost
    from bench import scenarios as sc

    catalog = cost.load_catalog()
    scenario = sc.builtin_scenarios()["batch_evaluation"]
    e2b = catalog.get("e2b")
    size = sc.sandbox_size(e2b, {}, {})
    unknown = {"overhead": Span(low=0.0, mid=0.0, high=math.inf)}
    price = sc.price(scenario, e2b, size, unknown, hours_per_month=730,
                     dearest_snapshot_usd_per_gib_h=0.0)  # fmt: skip
    rate = 2 * 0.000014 + 0.5 * 0.0000045
    assert price.per_unit.low == pytest.approx(120 * rate)  # the task alone: a lower bound
    assert math.isinf(price.per_unit.high) and math.isinf(price.month_with_plan.high)
    assert price.open_times == ("overhead",) and price.high_unknown
    assert price.known_month_with_plan.high == pytest.approx(price.month_with_plan.low)
    assert any("neither measured nor claimed" in n for n in price.notes)
    assert not any("lives 120.0 s (create" in n for n in price.notes)
    # A time that does not move the cost (no checkpoints: their time is never billed) keeps
    # the range closed, and is named as such.
    agent = sc.parse_scenario("a", {"kind": "agent", "checkpoints": 0, "resumes": 0}, where="t")
    daytona = catalog.get("daytona")
    closed = sc.price(agent, daytona, sc.sandbox_size(daytona, {}, {}),
                      {"checkpoint": Span(low=0.0, mid=0.0, high=math.inf)},
                      hours_per_month=730, dearest_snapshot_usd_per_gib_h=0.0)  # fmt: skip
    assert math.isfinite(closed.per_unit.high) and not closed.high_unknown
    assert closed.idle_times == ("checkpoint",)


def test_the_report_leaves_an_unknown_time_open_and_out_of_the_cost_ranks(two_runs, tmp_path):
    # No claims at all: a provider the runs did not measure has no time for its overhead.
    claims = tmp_path / "claims.toml"
    claims.write_text("schema_version = 1\n", encoding="utf-8")
    _, apart = two_runs
    settings = ReportSettings(claims_path=claims)
    _, by_name = _decision(apart, claims_path=claims)
    d = by_name["batch_evaluation"]
    for provider in ("daytona", "e2b"):  # measured here: closed ranges, ranked
        assert not d.costs[provider].high_unknown and provider in d.cost_ranking.ranks
    open_ = {p for p, c in d.costs.items() if c.high_unknown}
    assert {"sprites", "runloop", "modal"} <= open_
    # (sprites is withheld anyway: no plan of it allows 50 sandboxes at once)
    fits = {p for p in open_ if not d.costs[p].price.no_plan_fits}
    withheld = {p for p in fits if p in d.cost_ranking.withheld}
    assert withheld, "an open provider cheaper than a measured one at its lower end"
    for p in fits:
        c = d.costs[p]
        assert c.times_origin["overhead"] == "neither measured nor claimed"
        assert c.high_unknown == "the time of overhead is neither measured nor claimed"
        assert math.isinf(c.price.month_with_plan.high)
        if p in withheld:
            assert d.cost_ranking.withheld[p] == c.high_unknown == c.reason
        else:  # ranked only when even its lower end is ahead of no one
            known = c.price.known_month_with_plan
            assert not any(
                known.below(d.costs[q].price.known_month_with_plan, decide.COST_TOLERANCE)
                for q in d.cost_ranking.ranks
                if q != p
            )
    statements = d.cost_statements()
    for p in withheld:
        assert any(s.startswith(f"{p}: not ranked on cost (") and "– ?" in s for s in statements)

    report = write_report([apart], tmp_path / "reports", settings=settings)
    folder = report.parent
    table = dict(html_tables(report.read_text(encoding="utf-8")))["table-decision-batch_evaluation"]
    rows = {r[0]: r for r in table[1:]}
    for p in withheld:
        assert rows[p][5].endswith(" – ?") and rows[p][7] == "not ranked"
        assert "neither measured nor claimed" in rows[p][8]
    with (folder / "decision.csv").open(encoding="utf-8") as fh:
        csv_rows = {
            r["provider"]: r for r in csv.DictReader(fh) if r["scenario"] == "batch_evaluation"
        }
    decision = json.loads((folder / "decision.json").read_text(encoding="utf-8"))
    batch = next(s for s in decision["scenarios"] if s["name"] == "batch_evaluation")
    json_rows = {r["provider"]: r for r in batch["providers"]}
    for p in open_:
        assert (
            csv_rows[p]["cost_per_month_high_usd"] == "" and csv_rows[p]["cost_per_month_low_usd"]
        )
        assert csv_rows[p]["cost_per_month_mid_usd"] == ""
        assert csv_rows[p]["cost_high_unknown_because"] == d.costs[p].high_unknown
        assert json_rows[p]["cost_per_month_high_usd"] is None
        assert json_rows[p]["cost_per_month_low_usd"] > 0
    for p in withheld:
        assert csv_rows[p]["cost_rank"] == "" and batch["cost_not_ranked"][p] == (
            "the time of overhead is neither measured nor claimed"
        )
    assert csv_rows["e2b"]["cost_per_month_high_usd"] and csv_rows["e2b"]["cost_rank"]
    # The session cost figure draws an open cost as a lower bound, labelled so.
    agent = by_name["persistent_agent"]
    figure = (folder / "figures" / "cost-session.svg").read_text(encoding="utf-8")
    for p, c in agent.costs.items():
        if c.price is not None:
            total = c.price.primary.total_usd
            label = f"${total:.3f} – ?" if c.high_unknown else f"${total:.3f}"
            assert label in figure, p
    assert any(c.high_unknown for c in agent.costs.values())
