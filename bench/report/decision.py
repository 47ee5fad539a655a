"""The decision data: per scenario, every provider's latency that matters, its cost, and the
ranks on both (rules in bench/decide.py), from a set of loaded runs.

:func:`decide` builds it from a :class:`bench.report.data.ReportData` (the report caches it as
``ReportData.decision``); :func:`decide_runs` from run folders, for tools that want the
decision without a report (history, a static site). :meth:`Decision.rows` and
:meth:`Decision.to_json` are its machine-readable forms (``decision.csv``, ``decision.json``).

What goes in, per provider and scenario:

* **Latency**: the scenario's metric (:class:`bench.scenarios.LatencyMetric`) per iteration
  of the workload that measures it, from successful iterations only; an iteration with a
  failed step is a failure (the failure rate is failures / attempted iterations). A provider
  measured on a loopback emulator is shown but not ranked; a provider not in the runs shows
  its vendor claim, "vendor claim, not measured", and is not ranked.
* **Cost**: the scenario on the provider's catalog entry (bench/scenarios.py), with the times it
  needs from this run where they were measured (the interval of each median, its ends giving
  the cost range) and from vendor claims otherwise (the claim's band), said per provider.
  A time neither measured nor claimed has no upper end: when it moves the cost, the cost's
  upper end is unknown (shown as "?", null in the CSV and JSON, never a number counted at
  0 s) and the provider is not ranked on cost, with that reason, unless the unknown part
  provably cannot change a rank (:func:`bench.decide.rank_ranges`). A self-hosted provider
  without a host price and a provider missing from the catalog are listed with that reason,
  never as $0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench import claims as claims_mod
from bench import cost, stats
from bench import scenarios as sc
from bench.decide import Ranking, Span, rank_latency, rank_ranges
from bench.records import Status
from bench.workloads import registry
from bench.workloads.shape import Role

if TYPE_CHECKING:
    from bench.report.data import ReportData
    from bench.report.settings import ReportSettings

#: A price read longer ago than this before the report is flagged.
STALE_AFTER = timedelta(days=90)

PAUSE_SEMANTICS = {
    "freeze": "resume of a paused sandbox: memory and processes kept",
    "stop_start": "start of a stopped sandbox: filesystem only, processes restart",
    "auto_sleep": "wake after sleeping on idle: filesystem only",
}


@dataclass(frozen=True, kw_only=True)
class ProviderLatency:
    """One provider's latency for one scenario."""

    provider: str
    #: "measured", "emulated", "not measured".
    origin: str
    n: int
    attempts: int
    failures: int
    p50_s: float
    p50_low_s: float
    p50_high_s: float
    p95_s: float
    p95_low_s: float
    p95_high_s: float
    #: Which records: "lifecycle: create + first_exec + destroy".
    measured_as: str = ""
    #: What the operation means on this provider, where providers differ.
    semantics: str = ""
    #: The vendor's claims for these operations, as text.
    claims: tuple[str, ...] = ()
    #: Why it is not ranked ("" when it is).
    reason: str = ""
    values_s: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def failure_rate(self) -> float:
        return self.failures / self.attempts if self.attempts else math.nan


#: Where a time a cost needs came from (:attr:`ProviderCost.times_origin`).
MEASURED = "measured"
CLAIMED = "vendor claim, not measured"
UNKNOWN = "neither measured nor claimed"
UNKNOWN_IDLE = "neither measured nor claimed, does not change the cost"
ORIGINS = (MEASURED, CLAIMED, UNKNOWN, UNKNOWN_IDLE)


@dataclass(frozen=True, kw_only=True)
class ProviderCost:
    """One provider's cost of one scenario (None price: not costed, with the reason)."""

    provider: str
    display_name: str
    price: sc.ScenarioPrice | None
    #: Where each time the cost needs came from: {"resume": "measured", ...}.
    times_origin: Mapping[str, str] = field(default_factory=dict)
    #: Why it is not ranked on cost ("" when it is), or why it is not costed at all.
    reason: str = ""

    @property
    def times_summary(self) -> str:
        origins = set(self.times_origin.values())
        if not origins:
            return "–"
        if origins == {MEASURED}:
            return MEASURED
        parts = []
        for origin in ORIGINS:
            keys = [k for k, v in self.times_origin.items() if v == origin]
            if keys:
                parts.append(f"{origin} ({', '.join(keys)})")
        other = sorted(origins - set(ORIGINS))
        return "; ".join(parts + other)

    @property
    def high_unknown(self) -> str:
        """Why the cost has no upper end ("" when it has one)."""
        if self.price is None or not self.price.open_times:
            return ""
        return f"{sc.times_phrase(self.price.open_times)} neither measured nor claimed"


@dataclass(frozen=True, kw_only=True)
class ScenarioDecision:
    scenario: sc.Scenario
    #: Where the scenario's keys came from ("the defaults", "as run X set it", ...).
    source: str
    latency: Mapping[str, ProviderLatency]
    latency_ranking: Ranking
    costs: Mapping[str, ProviderCost]
    cost_ranking: Ranking

    def latency_statements(self) -> list[str]:
        return latency_statements(self)

    def cost_statements(self) -> list[str]:
        return cost_statements(self)


@dataclass(frozen=True, kw_only=True)
class Decision:
    run_ids: tuple[str, ...]
    as_of: date
    scenarios: tuple[ScenarioDecision, ...]
    #: Prices read longer than 90 days before the report, per provider.
    price_warnings: tuple[str, ...] = ()

    def rows(self) -> list[dict[str, Any]]:
        """One row per (scenario, provider): the decision tables, flat (decision.csv)."""
        out = []
        for d in self.scenarios:
            for provider in sorted(set(d.latency) | set(d.costs)):
                lat = d.latency.get(provider)
                c = d.costs.get(provider)
                p = c.price if c is not None else None
                month = p.month_with_plan if p is not None else None
                # An unknown upper end is no number (null), and with it the estimate.
                month_mid = (
                    math.nan if month is None or (p is not None and p.high_unknown) else month.mid
                )
                out.append(
                    {
                        "scenario": d.scenario.name,
                        "kind": d.scenario.kind.name,
                        "provider": provider,
                        "latency_metric": d.scenario.kind.latency.label,
                        "latency_origin": lat.origin if lat else "",
                        "latency_n": lat.n if lat else 0,
                        "latency_p50_s": lat.p50_s if lat else math.nan,
                        "latency_p50_ci_low_s": lat.p50_low_s if lat else math.nan,
                        "latency_p50_ci_high_s": lat.p50_high_s if lat else math.nan,
                        "latency_p95_s": lat.p95_s if lat else math.nan,
                        "failures": lat.failures if lat else 0,
                        "attempts": lat.attempts if lat else 0,
                        "failure_rate": lat.failure_rate if lat else math.nan,
                        "latency_rank": d.latency_ranking.ranks.get(provider),
                        "latency_tied_with": " ".join(d.latency_ranking.tied_with(provider))
                        if provider in d.latency_ranking.ranks
                        else "",
                        "latency_not_ranked_because": (
                            d.latency_ranking.withheld.get(provider, "") if lat else ""
                        ),
                        "cost_per_unit_low_usd": p.per_unit.low if p else math.nan,
                        "cost_per_unit_high_usd": _finite(p.per_unit.high) if p else math.nan,
                        "cost_per_day_low_usd": p.per_day.low if p else math.nan,
                        "cost_per_day_high_usd": _finite(p.per_day.high) if p else math.nan,
                        "cost_per_month_low_usd": month.low if month else math.nan,
                        "cost_per_month_mid_usd": month_mid,
                        "cost_per_month_high_usd": _finite(month.high) if month else math.nan,
                        "cost_high_unknown_because": c.high_unknown if c else "",
                        "plan": p.plan.name if p and p.plan else "",
                        "plan_usd_per_month": p.plan.usd_per_month if p and p.plan else math.nan,
                        "plans_too_small": "; ".join(p.plans_too_small) if p else "",
                        "billed_vcpus": p.billed_shape.cpus if p else math.nan,
                        "billed_memory_gib": p.billed_shape.memory_gib if p else math.nan,
                        "size_source": p.size.source if p else "",
                        "cost_times": c.times_summary if c else "",
                        "snapshot_price_unknown": bool(p and p.snapshot_unknown),
                        "cost_rank": d.cost_ranking.ranks.get(provider),
                        "cost_tied_with": " ".join(d.cost_ranking.tied_with(provider))
                        if provider in d.cost_ranking.ranks
                        else "",
                        "cost_not_ranked_because": c.reason if c else "",
                    }
                )
        return out

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON-ready data (decision.json); NaN becomes null."""
        scenarios = []
        for d in self.scenarios:
            scenarios.append(
                {
                    "name": d.scenario.name,
                    "kind": d.scenario.kind.name,
                    "title": d.scenario.title,
                    "parameters": d.scenario.table(),
                    "described": d.scenario.describe(),
                    "source": d.source,
                    "latency_metric": d.scenario.kind.latency.label,
                    "latency_ranks": dict(d.latency_ranking.ranks),
                    "latency_not_ranked": dict(d.latency_ranking.withheld),
                    "latency_pairs": [_pair_json(p) for p in d.latency_ranking.pairs],
                    "cost_ranks": dict(d.cost_ranking.ranks),
                    "cost_not_ranked": dict(d.cost_ranking.withheld),
                    "cost_pairs": [_pair_json(p) for p in d.cost_ranking.pairs],
                    "statements": [*d.latency_statements(), *d.cost_statements()],
                    "providers": [r for r in self.rows() if r["scenario"] == d.scenario.name],
                }
            )
        return _clean(
            {
                "runs": list(self.run_ids),
                "as_of": self.as_of.isoformat(),
                "rules": RULES,
                "price_warnings": list(self.price_warnings),
                "scenarios": scenarios,
            }
        )


def _finite(value: float) -> float:
    """NaN (no number: null in the JSON, empty in the CSV) for an unknown end."""
    return value if math.isfinite(value) else math.nan


RULES = (
    "Latency ranks use the median of the scenario's latency; two providers are tied unless the "
    "95 % bootstrap interval of the ratio of their medians lies wholly above 1. Cost ranks use "
    "the monthly cost range (every sourced rate, every billing reading, the measured times at "
    "their interval's ends, the cheapest plan that allows the scenario); two providers are "
    "tied unless one range lies wholly below the other. A rank is 1 + the number of providers "
    "separated from it and better. Not ranked on latency: fewer than "
    f"{stats.MIN_N_RATIO} successful samples, a loopback emulator, or no measurement; not "
    "ranked on cost: no price, no published plan allows the scenario, or a time the cost "
    "needs was neither measured nor claimed (the range has no upper end, shown as ?) unless "
    "the unknown part cannot change a rank (with the unknown times counted as 0 s the "
    "provider is ahead of no one)."
)


def _pair_json(p: Any) -> dict[str, Any]:
    return {
        "better": p.better,
        "worse": p.worse,
        "ratio": p.ratio,
        "low": p.low,
        "high": p.high,
        "separated": p.separated,
    }


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.floating):
        return _clean(float(value))
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# -- samples of a scenario's latency ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MetricSamples:
    values: np.ndarray
    attempts: int
    failures: int
    measured_as: str


def _ops_for(metric: sc.LatencyMetric) -> list[tuple[str, list[str]]]:
    """(workload, its operations summed per iteration) candidates, in registry order."""
    out = []
    for workload, op in registry.with_role(metric.roles[0]):
        cls = registry.WORKLOADS.get(workload)
        if cls is None:
            continue
        if metric.whole_iteration:
            ops = [o.name for o in cls.operations if not o.derived and o.scale is None]
        else:
            ops = [op.name]
            for role in metric.roles[1:]:
                found = next((o.name for o in cls.operations if role in o.roles), None)
                if found is None:
                    break
                ops.append(found)
            else:
                out.append((workload, ops))
            continue
        out.append((workload, ops))
    return out


def _measured_frame(data: ReportData) -> pd.DataFrame:
    return data.measured_frame()


class FrameIndex:
    """A samples frame's rows by (provider, workload), found once: the decision reads them per
    scenario and provider, and a million-sample frame is not scanned each time."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self._rows: dict[tuple[str, str], np.ndarray] = {}
        if not frame.empty:
            groups = frame.groupby(["provider", "workload"], observed=True, sort=False).indices
            self._rows = {(str(p), str(w)): idx for (p, w), idx in groups.items()}

    def providers(self) -> set[str]:
        """The providers with any record in the frame."""
        return {p for p, _ in self._rows}

    def rows(self, provider: str, workload: str) -> pd.DataFrame:
        idx = self._rows.get((provider, workload))
        return self.frame.iloc[idx] if idx is not None else self.frame.iloc[0:0]


def _index(frame: pd.DataFrame | FrameIndex) -> FrameIndex:
    return frame if isinstance(frame, FrameIndex) else FrameIndex(frame)


def iteration_sums(
    frame: pd.DataFrame | FrameIndex, provider: str, workload: str, ops: Sequence[str]
) -> MetricSamples:
    """Per iteration of ``workload`` on ``provider``: the sum of ``ops`` when every one of
    them succeeded; an iteration where one failed (error, timeout) is a failure."""
    rows = _index(frame).rows(provider, workload)
    mask = rows["operation"].astype(str).isin(list(ops)).to_numpy(dtype=bool)
    sub = rows.loc[mask, ["run_id", "location", "iteration", "operation", "status", "duration_s"]]
    what = f"{workload}: {' + '.join(ops)}"
    if sub.empty:
        return MetricSamples(values=np.empty(0), attempts=0, failures=0, measured_as=what)
    status = sub["status"].astype(str)
    sub = sub.assign(
        ok=(status == str(Status.OK)).to_numpy(),
        failed=status.isin([str(Status.ERROR), str(Status.TIMEOUT)]).to_numpy(),
        run=sub["run_id"].astype(str),
        where=sub["location"].astype(str),
        op=sub["operation"].astype(str),
        seconds=sub["duration_s"].where(status == str(Status.OK), 0.0),
    )
    grouped = sub.groupby(["run", "where", "iteration"], sort=False, dropna=False)
    agg = grouped.agg(
        ok=("ok", "sum"),
        failed=("failed", "any"),
        ops=("op", "nunique"),
        seconds=("seconds", "sum"),
    )
    ok_ops = (
        sub[sub["ok"]]
        .groupby(["run", "where", "iteration"], sort=False, dropna=False)["op"]
        .nunique()
    )
    agg["ok_ops"] = ok_ops.reindex(agg.index).fillna(0).astype(int)
    complete = (~agg["failed"]) & (agg["ok_ops"] == len(set(ops)))
    attempted = agg["failed"] | (agg["ok"] > 0)
    values = np.sort(agg.loc[complete, "seconds"].to_numpy(dtype=np.float64))
    return MetricSamples(
        values=values,
        attempts=int(attempted.sum()),
        failures=int(agg["failed"].sum()),
        measured_as=what,
    )


def wake_samples(
    frame: pd.DataFrame | FrameIndex, provider: str, min_idle_s: float
) -> MetricSamples | None:
    """The wake (Role.WAKE) of a provider that sleeps on idle, after at least ``min_idle_s``."""
    index = _index(frame)
    for workload, op in registry.with_role(Role.WAKE):
        if op.after_idle not in index.frame.columns:
            continue
        rows = index.rows(provider, workload)
        sub = rows.loc[(rows["operation"].astype(str) == op.name).to_numpy(dtype=bool)]
        if sub.empty:
            continue
        status = sub["status"].astype(str)
        idle = sub[op.after_idle].to_numpy(dtype=np.float64)
        ok = (status == str(Status.OK)).to_numpy() & (idle >= min_idle_s)
        failed = status.isin([str(Status.ERROR), str(Status.TIMEOUT)]).to_numpy()
        values = np.sort(sub["duration_s"].to_numpy(dtype=np.float64)[ok])
        return MetricSamples(
            values=values,
            attempts=int(ok.sum() + failed.sum()),
            failures=int(failed.sum()),
            measured_as=f"{workload}: {op.name} after at least {min_idle_s:g} s idle",
        )
    return None


def metric_samples(
    frame: pd.DataFrame | FrameIndex,
    provider: str,
    metric: sc.LatencyMetric,
    *,
    sleeps_after_s: float | None = None,
) -> MetricSamples:
    """The scenario's latency samples for one provider (see the module docstring)."""
    frame = _index(frame)
    if metric.wake_when_sleeping and sleeps_after_s is not None:
        found = wake_samples(frame, provider, sleeps_after_s)
        if found is not None:
            return found
        return MetricSamples(
            values=np.empty(0),
            attempts=0,
            failures=0,
            measured_as=f"its wake after at least {sleeps_after_s:g} s idle (not recorded)",
        )
    first = None
    for workload, ops in _ops_for(metric):
        found = iteration_sums(frame, provider, workload, ops)
        first = first or found
        if found.attempts:
            return found
    return first or MetricSamples(values=np.empty(0), attempts=0, failures=0, measured_as="")


def summary_of(values: np.ndarray) -> dict[str, float]:
    nan = math.nan
    n = values.size
    out = {
        "p50_s": nan,
        "p50_low_s": nan,
        "p50_high_s": nan,
        "p95_s": nan,
        "p95_low_s": nan,
        "p95_high_s": nan,
    }
    for p in (50, 95):
        if stats.supports(n, p):
            out[f"p{p}_s"] = stats.percentile(values, p)
            out[f"p{p}_low_s"], out[f"p{p}_high_s"] = stats.quantile_ci(values, p)
    return out


def measured_span(values: np.ndarray) -> Span | None:
    """A time for a cost: the median with its interval's ends (the sample's ends at n = 5,
    where no interval exists); None below the median's minimum n."""
    n = values.size
    if not stats.supports(n, 50):
        return None
    mid = stats.percentile(values, 50)
    low, high = stats.quantile_ci(values, 50)
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = float(values[0]), float(values[-1])
    return Span(low=min(low, mid), mid=mid, high=max(high, mid))


def claim_span(claims: Iterable[claims_mod.Claim]) -> Span | None:
    """The band of a provider's claims for one operation (their union), the first claim's
    value as the estimate."""
    bands, mids = [], []
    for c in claims:
        low, high = c.band_s
        bands.append((low, high))
        if c.kind is claims_mod.ClaimKind.APPROX:
            mids.append(c.low_s)
        elif c.kind is claims_mod.ClaimKind.AT_MOST:
            mids.append(c.high_s)
        else:
            mids.append((c.low_s + c.high_s) / 2)
    if not bands:
        return None
    low, high = min(b[0] for b in bands), max(b[1] for b in bands)
    return Span(low=low, mid=min(max(mids[0], low), high), high=high)


# -- building the decision --------------------------------------------------------------------


def _role_ops(role: Role) -> list[tuple[str, str]]:
    return [(w, op.name) for w, op in registry.with_role(role)]


#: The role whose operation stands for each time a scenario's cost reads.
TIME_ROLES: dict[str, Role] = {
    "checkpoint": Role.CHECKPOINT,
    "pause": Role.PAUSE,
    "resume": Role.RESUME,
    "first_exec_after_resume": Role.FIRST_EXEC_AFTER_RESUME,
    "ready": Role.READY,
}


def _claims_for(
    claims: Sequence[claims_mod.Claim], provider: str, ops: Iterable[tuple[str, str]]
) -> list[claims_mod.Claim]:
    wanted = set(ops)
    return [
        c
        for c in claims
        if c.provider == provider
        and any(c.operation == op and (c.workload in (None, w)) for w, op in wanted)
    ]


def _claim_text(c: claims_mod.Claim) -> str:
    return f"{c.operation}: {c.describe()} ({c.source}, {c.date})"


class _Builder:
    """Gathers one report's decision (see the module docstring)."""

    def __init__(self, data: ReportData) -> None:
        self.data = data
        self.frame = _measured_frame(data)
        self.index = FrameIndex(self.frame)
        self.catalog = data.catalog
        self.claims = data.claim_list
        self.measured = self.index.providers()
        self.providers = sorted(
            set(data.providers) | {p for p, pr in self.catalog.providers.items()}
        )
        self.dearest = self.catalog.dearest_storage_usd_per_gib_h()

    # -- latency

    def _sleeps(self, provider: str) -> float | None:
        pricing = self.catalog.get(provider)
        caps = self.data.capabilities.get(provider) or {}
        sleeps = caps.get("pause_kind") == "auto_sleep" or (
            pricing is not None and pricing.idle == "auto_sleep"
        )
        if not sleeps:
            return None
        if pricing is not None and pricing.sleeps_after_s is not None:
            return pricing.sleeps_after_s
        return 0.0

    def latency(self, scenario: sc.Scenario, provider: str) -> ProviderLatency:
        metric = scenario.kind.latency
        sleeps = self._sleeps(provider) if metric.wake_when_sleeping else None
        samples = metric_samples(self.index, provider, metric, sleeps_after_s=sleeps)
        caps = self.data.capabilities.get(provider) or {}
        semantics = ""
        if metric.wake_when_sleeping:
            kind = "auto_sleep" if sleeps is not None else str(caps.get("pause_kind") or "")
            semantics = PAUSE_SEMANTICS.get(kind, "")
        claim_ops: list[tuple[str, str]] = []
        for workload, _ in _ops_for(metric):
            cls = registry.WORKLOADS[workload]
            claim_ops += [(workload, o.name) for o in cls.operations]
        if metric.wake_when_sleeping:
            claim_ops += _role_ops(Role.WAKE)
        claims = tuple(_claim_text(c) for c in _claims_for(self.claims, provider, claim_ops))
        if provider in self.data.emulated:
            origin = "emulated"
            reason = (
                "endpoint on this machine (a loopback emulator): it measures the emulator, "
                f"not {provider}'s service"
            )
        elif provider in self.measured and samples.attempts:
            origin, reason = "measured", ""
        else:
            origin = "not measured"
            unsupported = (caps.get("unsupported") or {}) if provider in self.measured else {}
            needs = {
                n
                for w, ops in _ops_for(metric)
                for o in ops
                for n in registry.capability_needs(w, o)
            }
            why = next((f"{k} unsupported: {v}" for k, v in unsupported.items() if k in needs), "")
            reason = why or (
                "not measured in these runs"
                + (f" (no samples of {samples.measured_as})" if provider in self.measured else "")
            )
        return ProviderLatency(
            provider=provider,
            origin=origin,
            n=int(samples.values.size),
            attempts=samples.attempts,
            failures=samples.failures,
            measured_as=samples.measured_as,
            semantics=semantics,
            claims=claims,
            reason=reason,
            values_s=samples.values,
            **summary_of(samples.values),
        )

    # -- times for costs

    def times(
        self, scenario: sc.Scenario, provider: str, latency: ProviderLatency
    ) -> tuple[dict[str, Span], dict[str, str]]:
        out: dict[str, Span] = {}
        origin: dict[str, str] = {}
        real = provider in self.measured and provider not in self.data.emulated
        pricing = self.catalog.get(provider)
        keys = scenario.kind.times_for(scenario.params, pricing) if pricing else scenario.kind.times
        for key in keys:
            span = None
            ops: list[tuple[str, str]] = []
            if key == "overhead":
                ops = [(w, o) for w, opnames in _ops_for(scenario.kind.latency) for o in opnames]
                if real:
                    span = measured_span(latency.values_s)
                claims = _claims_for(self.claims, provider, ops)
            else:
                role = TIME_ROLES[key]
                ops = _role_ops(role)
                sleeps = self._sleeps(provider)
                if key == "resume" and sleeps is not None:
                    ops = _role_ops(Role.WAKE)
                    if real:
                        found = wake_samples(self.index, provider, sleeps)
                        span = measured_span(found.values) if found is not None else None
                elif real:
                    for workload, op in ops:
                        values = self._ok_values(provider, workload, op)
                        if values.size:
                            span = measured_span(values)
                            break
                claims = _claims_for(self.claims, provider, ops)
                if key == "ready" and not claims:  # a create claim bounds ready from below
                    claims = _claims_for(self.claims, provider, _role_ops(Role.CREATE))
            if key == "overhead" and not claims:
                claims = _claims_for(self.claims, provider, _role_ops(Role.CREATE))
            if span is not None:
                out[key], origin[key] = span, MEASURED
                continue
            claimed = claim_span(claims)
            if claimed is not None:
                out[key], origin[key] = claimed, CLAIMED
            else:
                # No number: at least 0 s, with no known upper end (never counted as 0 s).
                out[key], origin[key] = Span(low=0.0, mid=0.0, high=math.inf), UNKNOWN
        return out, origin

    def _ok_values(self, provider: str, workload: str, operation: str) -> np.ndarray:
        g = self.data.group_map.get((provider, workload, operation))
        return g.ok_sorted_s if g is not None else np.empty(0)

    # -- sizes

    def size(self, provider: str, pricing: cost.ProviderPricing) -> sc.SizeChoice:
        return self.data.sizes[provider]

    # -- costs

    def cost(self, scenario: sc.Scenario, provider: str, latency: ProviderLatency) -> ProviderCost:
        pricing = self.catalog.get(provider)
        if pricing is None:
            return ProviderCost(
                provider=provider,
                display_name=provider,
                price=None,
                reason="not in the pricing catalog",
            )
        if not pricing.priced:
            return ProviderCost(
                provider=provider,
                display_name=pricing.display_name,
                price=None,
                reason="self-hosted, and no host price was given (set local_usd_per_hour in "
                "[pricing] or report --local-usd-per-hour)",
            )
        times, origin = self.times(scenario, provider, latency)
        price = sc.price(
            scenario,
            pricing,
            self.size(provider, pricing),
            times,
            hours_per_month=self.catalog.hours_per_month,
            dearest_snapshot_usd_per_gib_h=self.dearest,
        )
        for key in price.idle_times:
            origin[key] = UNKNOWN_IDLE
        reason = ""
        if price.no_plan_fits:
            reason = "no published plan allows it: " + "; ".join(price.plans_too_small)
        return ProviderCost(
            provider=provider,
            display_name=pricing.display_name,
            price=price,
            times_origin=origin,
            reason=reason,
        )

    def scenario(self, scenario: sc.Scenario, source: str) -> ScenarioDecision:
        latency = {p: self.latency(scenario, p) for p in self.providers}
        withheld = {p: lat.reason for p, lat in latency.items() if lat.reason}
        ranking = rank_latency(
            {p: lat.values_s for p, lat in latency.items()},
            seed=self.data.seed,
            key=(scenario.name,),
            withheld=withheld,
        )
        costs = {p: self.cost(scenario, p, latency[p]) for p in self.providers}
        cost_ranking = rank_ranges(
            {p: c.price.known_month_with_plan for p, c in costs.items() if c.price is not None},
            withheld={p: c.reason for p, c in costs.items() if c.reason},
            open_high={p: c.high_unknown for p, c in costs.items() if c.high_unknown},
        )
        costs = {
            p: replace(c, reason=cost_ranking.withheld[p])
            if not c.reason and p in cost_ranking.withheld
            else c
            for p, c in costs.items()
        }
        return ScenarioDecision(
            scenario=scenario,
            source=source,
            latency=latency,
            latency_ranking=ranking,
            costs=costs,
            cost_ranking=cost_ranking,
        )


def stale_prices(catalog: cost.Catalog, providers: Iterable[str], as_of: date) -> list[str]:
    """One line per provider whose prices were last read more than 90 days before ``as_of``."""
    out = []
    for provider in providers:
        pricing = catalog.get(provider)
        if pricing is None or not pricing.priced:
            continue
        checks = pricing.last_checked()
        if any(when == cost.UNKNOWN_DATE for _, when in checks):
            out.append(
                f"{provider}: the catalog's checked date {pricing.checked!r} is not a date, so "
                "the age of its prices is unknown; check them again before buying"
            )
        old = [
            (item, when)
            for item, when in checks
            if when != cost.UNKNOWN_DATE and as_of - when > STALE_AFTER
        ]
        if old:
            items = ", ".join(
                f"{item} ({when.isoformat()}, {(as_of - when).days} days)" for item, when in old
            )
            out.append(
                f"{provider}: prices last checked more than {STALE_AFTER.days} days before this "
                f"report: {items}; check them again before buying"
            )
    return out


def decision_of(data: ReportData) -> Decision:
    """The decision of a report's data, computed once per report."""
    return data.derived("decision", decide)


def decide(data: ReportData) -> Decision:
    """The decision for the runs and settings of ``data``."""
    builder = _Builder(data)
    choice = data.scenario_set
    scenarios = tuple(
        builder.scenario(s, choice.sources.get(name, "")) for name, s in choice.scenarios.items()
    )
    as_of = data.as_of
    return Decision(
        run_ids=data.run_ids,
        as_of=as_of,
        scenarios=scenarios,
        price_warnings=tuple(stale_prices(data.catalog, builder.providers, as_of)),
    )


def decide_runs(run_folders: Sequence[Path], settings: ReportSettings | None = None) -> Decision:
    """The decision for run folders without writing a report (history, a site)."""
    import tempfile

    from bench.report.data import ReportData
    from bench.report.runs import load_runs
    from bench.report.settings import ReportSettings

    runset = load_runs([Path(f) for f in run_folders])
    with tempfile.TemporaryDirectory() as tmp:
        return decide(ReportData(runset, settings or ReportSettings(), Path(tmp)))


# -- statements -------------------------------------------------------------------------------


def _interval(low: float, high: float) -> str:
    return f"{low:.2f}–{high:.2f}" if math.isfinite(low) and math.isfinite(high) else "–"


def latency_statements(d: ScenarioDecision) -> list[str]:
    """Each ranked provider against the fastest, with the measured ratio and its interval;
    each provider not ranked, with the reason."""
    r = d.latency_ranking
    label = d.scenario.kind.latency.label.split(" (")[0]
    out = []
    leader = r.leader()
    if leader is not None:
        lat = d.latency[leader]
        tied = r.tied_with(leader)
        out.append(
            f"{leader} has the lowest {label} p50: {stats.format_duration(lat.p50_s)} (95 % CI "
            f"{stats.format_interval(lat.p50_low_s, lat.p50_high_s) or '–'}, n={lat.n})"
            + (f"; tied with {', '.join(tied)}" if tied else "")
            + "."
        )
        for provider, rank in r.ranks.items():
            if provider == leader:
                continue
            pair = r.pair(leader, provider)
            if pair is None:
                continue
            verdict = (
                f"rank {rank}: slower"
                if pair.separated
                else f"rank {rank}: tied (the interval includes 1)"
            )
            out.append(
                f"{provider} {label} p50 is {pair.ratio:.2f}× {leader}'s "
                f"(95 % CI {_interval(pair.low, pair.high)}): {verdict}."
            )
    for provider, reason in r.withheld.items():
        lat = d.latency.get(provider)
        claim = (
            f" Vendor claim, not measured: {'; '.join(lat.claims)}."
            if lat and lat.claims and lat.origin != "measured"
            else ""
        )
        out.append(f"{provider}: not ranked on latency: {reason}.{claim}")
    return out


def cost_statements(d: ScenarioDecision) -> list[str]:
    """Each costed provider's monthly range and rank; separations named; the others' reasons."""
    r = d.cost_ranking
    out = []
    for provider, rank in r.ranks.items():
        c = d.costs[provider]
        p = c.price
        assert p is not None
        month = p.month_with_plan
        tied = r.tied_with(provider)
        plan = f", on the {p.plan.name} plan" if p.plan is not None else ""
        times = "" if c.times_summary == MEASURED else f"; times: {c.times_summary}"
        unknown = (
            f"; no upper end: {c.high_unknown}; even with them counted as 0 s it is ahead of "
            "no one, so they cannot change a rank"
            if c.high_unknown
            else ""
        )
        out.append(
            f"{provider}: {cost.format_usd_range(month.low, month.high)} a month"
            f"{plan}: cost rank {rank}"
            + (f", tied with {', '.join(tied)}" if tied else "")
            + times
            + unknown
            + "."
        )
    for pair in r.pairs:
        if pair.separated:
            a, b = d.costs[pair.better].price, d.costs[pair.worse].price
            assert a is not None and b is not None
            out.append(
                f"{pair.better} costs less than {pair.worse} at every sourced price: at most "
                f"{cost.format_usd(a.month_with_plan.high)} against at least "
                f"{cost.format_usd(b.month_with_plan.low)} a month."
            )
    for provider, reason in r.withheld.items():
        c = d.costs.get(provider)
        month = c.price.month_with_plan if c is not None and c.price is not None else None
        shown = f" ({cost.format_usd_range(month.low, month.high)} a month)" if month else ""
        out.append(f"{provider}: not ranked on cost{shown}: {reason}.")
    return out


__all__ = [
    "Decision",
    "ProviderCost",
    "ProviderLatency",
    "ScenarioDecision",
    "decide",
    "decide_runs",
    "decision_of",
    "iteration_sums",
    "metric_samples",
    "stale_prices",
]
