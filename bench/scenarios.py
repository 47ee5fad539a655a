"""Scenarios: what a buyer uses sandboxes for, as data, and what each costs per provider.

A scenario is a named table of parameters of one **kind**. Three kinds are declared here, and
one scenario of each is built in:

============================  =============  ==================================================
built-in scenario             kind           what it is
============================  =============  ==================================================
``batch_evaluation``          ``batch``      N short sandboxes a day: create, one task,
                                             destroy, so many at once
``persistent_agent``          ``agent``      agent sessions of H hours, busy a share of the
                                             time, checkpointed and resumed, keeping a disk
``interactive``               ``interactive``  a person waits for a sandbox, then works in it
============================  =============  ==================================================

Each kind declares its keys as a settings dataclass (:mod:`providers.settings`: type, unit,
range, help, default), so validation, ``--help``, the manifest and the README come from one
declaration (:class:`BatchScenario`, :class:`bench.cost.SessionScenario` for the agent, whose
keys are the historical flat ``[scenario]`` table, :class:`InteractiveScenario`), plus:

* the **latency that matters** (:class:`LatencyMetric`): roles of operations (declared by the
  workloads, bench/workloads/shape.py) summed per iteration: *batch*: the whole life of a
  sandbox in the workload that measures ``ready`` (create, first command, destroy); *agent*:
  resume plus the first command after it, or, for a provider that sleeps on idle, its wake
  after an idle long enough to sleep; *interactive*: ``ready``, create to the first command;
* what **one unit** (a sandbox, a session) costs under one price reading, and how many units a
  day there are; a month is the catalog's ``hours_per_month`` / 24 days;
* what it **needs** from a plan: sandboxes at once and the longest continuous run.

In ``bench.toml`` (or a report's settings)::

    [scenario]                 # the flat keys: the persistent_agent scenario (as before)
    hours = 8

    [scenario.batch_evaluation]  # a built-in's name: its keys set over the defaults
    concurrency = 200

    [scenario.nightly]           # a new scenario: its kind and keys
    kind = "batch"
    sandboxes_per_day = 20000
    task_s = 30

A manifest records every scenario the run was made with (``config.scenarios``) besides the
flat ``config.scenario`` table older reports read; runs made before scenarios existed have
only the flat table, read as ``persistent_agent``'s keys.

Costs per provider (:func:`price`) are ranges: every rate's lowest and highest sourced value,
every billing reading of the catalog (:attr:`bench.cost.ProviderPricing.alternatives`), and
the times at the ends of their 95 % intervals; a snapshot price the provider does not publish
is counted as 0 at the low end and at the dearest storage rate of the catalog at the high end,
and said so. A time neither measured nor claimed (its span's upper end ``inf``) counts 0 s, its
least, at every end; if it moves the cost at all, the cost has no upper end (``inf``), never a
number that counts it as 0 s (:attr:`ScenarioPrice.open_times`). The billed size is the
sandbox's own (measured by the probe, else declared by the provider's template, else the run's
spec: :func:`sandbox_size`) unless a billing reading fixes it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from bench import cost
from bench.decide import Span
from bench.workloads.shape import Role
from providers.settings import SettingError, parse, setting, to_table

#: A scenario's name: what [scenario.NAME] may be called.
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


@dataclass(frozen=True, kw_only=True)
class BatchScenario:
    """N short sandboxes a day, each created, given one task and destroyed."""

    sandboxes_per_day: int = setting(
        1000, help="sandboxes created a day, one task each", minimum=1, maximum=100_000_000
    )
    task_s: float = setting(
        120.0, help="how long one task runs in its sandbox", unit="s", minimum=0, maximum=86_400
    )
    concurrency: int = setting(
        50,
        help="sandboxes running at once (checked against plan limits)",
        minimum=1,
        maximum=1_000_000,
    )

    def describe(self) -> str:
        return (
            f"{self.sandboxes_per_day:,} sandboxes a day, one {self.task_s:g} s task each, "
            f"{self.concurrency:,} at once"
        )


@dataclass(frozen=True, kw_only=True)
class InteractiveScenario:
    """A person asks for a sandbox, waits for its first command, then works in it."""

    sessions_per_day: float = setting(
        200.0, help="interactive sessions a day", minimum=0.001, maximum=100_000_000
    )
    session_minutes: float = setting(
        20.0,
        help="how long one session keeps its sandbox",
        unit="min",
        minimum=0.01,
        maximum=10_080,
    )
    active_fraction: float = setting(
        0.5, help="share of the session the sandbox is busy (not idle)", minimum=0, maximum=1
    )
    concurrency: int = setting(
        10, help="sessions at once (checked against plan limits)", minimum=1, maximum=1_000_000
    )

    def describe(self) -> str:
        return (
            f"{self.sessions_per_day:g} sessions a day of {self.session_minutes:g} min, busy "
            f"{self.active_fraction:.0%} of the time, {self.concurrency:,} at once"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LatencyMetric:
    """The latency that matters for a kind of scenario (see the module docstring)."""

    label: str
    #: Operations of these roles, summed per iteration, in the first workload declaring them.
    roles: tuple[Role, ...]
    #: Instead: every non-derived operation of the iteration of the workload declaring roles[0].
    whole_iteration: bool = False
    #: A provider that sleeps on idle is measured by its wake (Role.WAKE) after sleeping.
    wake_when_sleeping: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Needs:
    """What a scenario needs from a plan."""

    concurrency: int
    #: Longest continuous run of one sandbox, hours.
    session_h: float


@dataclass(frozen=True, kw_only=True, slots=True)
class UnitCost:
    """One unit (a sandbox or a session) of a scenario under one price reading."""

    cpu_usd: float
    memory_usd: float
    sandbox_usd: float
    storage_usd: float
    #: None when the provider publishes no snapshot price.
    snapshot_usd: float | None
    billed_h: float
    notes: tuple[str, ...] = ()

    @property
    def compute_usd(self) -> float:
        return self.cpu_usd + self.memory_usd + self.sandbox_usd

    @property
    def total_usd(self) -> float:
        """Everything priced (an unpublished snapshot price counts 0 here)."""
        return self.compute_usd + self.storage_usd + (self.snapshot_usd or 0.0)


CostFn = Callable[[Any, cost.ProviderPricing, cost.Shape, Mapping[str, float], str], UnitCost]


@dataclass(frozen=True, kw_only=True)
class ScenarioKind:
    """The declaration of a kind of scenario (register more with :func:`register_kind`)."""

    name: str
    title: str
    #: The settings dataclass of its keys (declared with providers.settings.setting).
    params: type
    #: "sandbox" or "session": what :attr:`cost` prices one of.
    unit: str
    latency: LatencyMetric
    #: (params, pricing at one reading, the sandbox's size, times in s, where the size came
    #: from) -> the cost of one unit.
    cost: CostFn
    units_per_day: Callable[[Any], float]
    needs: Callable[[Any], Needs]
    #: The names of the times ``cost`` reads (seconds), gathered by the report.
    times: tuple[str, ...]
    #: The times ``cost`` reads for a provider, where that depends on how it bills idle time
    #: (default: all of :attr:`times`).
    times_used: Callable[[Any, cost.ProviderPricing], tuple[str, ...]] | None = None

    def times_for(self, params: Any, pricing: cost.ProviderPricing) -> tuple[str, ...]:
        return self.times if self.times_used is None else self.times_used(params, pricing)


def _batch_cost(
    params: BatchScenario,
    pricing: cost.ProviderPricing,
    size: cost.Shape,
    times: Mapping[str, float],
    size_source: str,
) -> UnitCost:
    shape = pricing.shape_for(size)
    known = "overhead" in times
    life_s = times.get("overhead", 0.0) + params.task_s
    billed_s = pricing.billed_seconds(life_s)
    notes = [
        f"billed at {'the fixed ' + shape.describe() if pricing.billed_shape else size_source}"
        f"{'' if pricing.billed_shape else ', ' + shape.describe()}",
        f"one sandbox lives {life_s:.1f} s (create, first command, task, destroy), billed "
        f"{billed_s:.0f} s"
        if known
        else f"one sandbox lives at least its {life_s:.1f} s task (the time of create, first "
        f"command and destroy is not known), billed at least {billed_s:.0f} s",
    ]
    if pricing.minimum_s and billed_s == pricing.minimum_s:
        notes.append(f"raised to the {pricing.minimum_s:g} s billing minimum")
    return UnitCost(
        cpu_usd=billed_s * pricing.cpu_usd_per_vcpu_s * shape.cpus,
        memory_usd=billed_s * pricing.memory_usd_per_gib_s * shape.memory_gib,
        sandbox_usd=billed_s * pricing.sandbox_usd_per_s,
        storage_usd=0.0,
        snapshot_usd=0.0,
        billed_h=billed_s / 3600.0,
        notes=tuple(notes),
    )


def _session_unit(session: cost.SessionCost) -> UnitCost:
    return UnitCost(
        cpu_usd=session.cpu_usd,
        memory_usd=session.memory_usd,
        sandbox_usd=session.sandbox_usd,
        storage_usd=session.storage_usd,
        snapshot_usd=session.snapshot_usd,
        billed_h=session.compute_h,
        notes=session.assumptions,
    )


def _agent_cost(
    params: cost.SessionScenario,
    pricing: cost.ProviderPricing,
    size: cost.Shape,
    times: Mapping[str, float],
    size_source: str,
) -> UnitCost:
    return _session_unit(cost.session_cost(pricing, params, size, times, size_source=size_source))


def _interactive_cost(
    params: InteractiveScenario,
    pricing: cost.ProviderPricing,
    size: cost.Shape,
    times: Mapping[str, float],
    size_source: str,
) -> UnitCost:
    ready_s = times.get("ready", 0.0)
    session = cost.SessionScenario(
        hours=params.session_minutes / 60.0 + ready_s / 3600.0,
        active_fraction=min(1.0, params.active_fraction),
        checkpoints=0,
        resumes=0,
        disk_gib=0.0,
        snapshot_gib=0.0,
    )
    unit = _session_unit(cost.session_cost(pricing, session, size, {}, size_source=size_source))
    wait = f"{ready_s:.2f} s" if "ready" in times else "its time not known"
    note = f"the wait for the first command ({wait}) is billed too"
    return replace(unit, notes=(*unit.notes, note))


def _agent_times(params: cost.SessionScenario, pricing: cost.ProviderPricing) -> tuple[str, ...]:
    """What :func:`bench.cost.session_cost` bills and waits on for this provider: a sleeping
    provider's resume is its wake (the first command included); a provider that pauses or
    stops does so only when the session resumes."""
    if pricing.idle == "auto_sleep":
        return ("checkpoint", "resume")
    if pricing.idle in ("pause", "stop") and params.resumes > 0:
        return ("checkpoint", "pause", "resume", "first_exec_after_resume")
    return ("checkpoint",)


KINDS: dict[str, ScenarioKind] = {}


def register_kind(kind: ScenarioKind) -> ScenarioKind:
    if kind.name in KINDS:
        raise ValueError(f"scenario kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


register_kind(
    ScenarioKind(
        name="batch",
        title="Batch evaluation",
        params=BatchScenario,
        unit="sandbox",
        latency=LatencyMetric(
            label="sandbox overhead per task (create, first command, destroy)",
            roles=(Role.READY,),
            whole_iteration=True,
        ),
        cost=_batch_cost,
        units_per_day=lambda p: float(p.sandboxes_per_day),
        needs=lambda p: Needs(concurrency=p.concurrency, session_h=p.task_s / 3600.0),
        times=("overhead",),
    )
)
register_kind(
    ScenarioKind(
        name="agent",
        title="Persistent agent",
        params=cost.SessionScenario,
        unit="session",
        latency=LatencyMetric(
            label="back to work after idle (resume and the first command after it)",
            roles=(Role.RESUME, Role.FIRST_EXEC_AFTER_RESUME),
            wake_when_sleeping=True,
        ),
        cost=_agent_cost,
        units_per_day=lambda p: float(p.sessions_per_day),
        needs=lambda p: Needs(concurrency=p.concurrency, session_h=p.hours),
        times=("checkpoint", "pause", "resume", "first_exec_after_resume"),
        times_used=lambda p, pricing: _agent_times(p, pricing),
    )
)
register_kind(
    ScenarioKind(
        name="interactive",
        title="Interactive",
        params=InteractiveScenario,
        unit="session",
        latency=LatencyMetric(
            label="time to first command (create to a first command)", roles=(Role.READY,)
        ),
        cost=_interactive_cost,
        units_per_day=lambda p: float(p.sessions_per_day),
        needs=lambda p: Needs(concurrency=p.concurrency, session_h=p.session_minutes / 60.0),
        times=("ready",),
    )
)

#: Built-in scenarios: name -> kind (their keys take the kind's defaults).
BUILTINS: dict[str, str] = {
    "batch_evaluation": "batch",
    "persistent_agent": "agent",
    "interactive": "interactive",
}
#: The scenario the flat ``[scenario]`` keys (and the ``--scenario-<key>`` flags) set.
SESSION = "persistent_agent"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One named scenario: its kind and its validated parameters."""

    name: str
    kind: ScenarioKind
    params: Any
    builtin: bool

    @property
    def title(self) -> str:
        return self.kind.title if self.builtin else f"{self.name} ({self.kind.title.lower()})"

    def describe(self) -> str:
        return self.params.describe()

    def table(self) -> dict[str, Any]:
        """The manifest's form: ``{"kind": ..., every key}``."""
        return {"kind": self.kind.name, **to_table(self.params)}

    def needs(self) -> Needs:
        return self.kind.needs(self.params)


def _kind_of(name: str, table: Mapping[str, Any], where: str) -> ScenarioKind:
    kind = table.get("kind", BUILTINS.get(name))
    if kind is None:
        raise SettingError(
            f"[{where}] needs kind = one of {', '.join(KINDS)} (it is not a built-in scenario: "
            f"{', '.join(BUILTINS)})"
        )
    if kind not in KINDS:
        raise SettingError(f"{where}.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if name in BUILTINS and kind != BUILTINS[name]:
        raise SettingError(
            f"{where}.kind: {name} is the built-in {BUILTINS[name]} scenario; name a "
            f"{kind} scenario something else"
        )
    return KINDS[kind]


def parse_scenario(
    name: str,
    table: Mapping[str, Any],
    *,
    where: str,
    from_text: bool = False,
    base: Scenario | None = None,
) -> Scenario:
    """One ``[scenario.NAME]`` table (keys over ``base``'s, or the kind's defaults)."""
    if not NAME.fullmatch(name):
        raise SettingError(
            f"[{where}]: a scenario name is lower-case letters, digits and _, starting with a "
            f"letter, at most 40 characters, got {name!r}"
        )
    if not isinstance(table, Mapping):
        raise SettingError(f"[{where}] must be a table, got {type(table).__name__}")
    kind = _kind_of(name, table if base is None else {"kind": base.kind.name, **table}, where)
    keys = {k: v for k, v in table.items() if k != "kind"}
    params = parse(
        kind.params,
        keys,
        where=where,
        from_text=from_text,
        base=base.params if base is not None else None,
    )
    return Scenario(name=name, kind=kind, params=params, builtin=name in BUILTINS)


def builtin_scenarios() -> dict[str, Scenario]:
    return {
        name: Scenario(name=name, kind=KINDS[kind], params=KINDS[kind].params(), builtin=True)
        for name, kind in BUILTINS.items()
    }


def split_table(table: Mapping[str, Any], *, where: str = "scenario") -> tuple[dict, dict]:
    """A ``[scenario]`` table split into its flat keys (the persistent agent's) and its named
    sub-tables; both at once for the persistent agent is refused."""
    if not isinstance(table, Mapping):
        raise SettingError(f"[{where}] must be a table, got {type(table).__name__}")
    flat = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    named = {str(k): v for k, v in table.items() if isinstance(v, Mapping)}
    if flat and SESSION in named:
        raise SettingError(
            f"[{where}]: the flat keys ({', '.join(sorted(flat))}) are {SESSION}'s; set them "
            f"there or in [{where}.{SESSION}], not both"
        )
    return flat, named


def parse_scenarios(
    table: Mapping[str, Any] | None,
    *,
    where: str = "scenario",
    base: Mapping[str, Scenario] | None = None,
    from_text: bool = False,
) -> dict[str, Scenario]:
    """Every scenario: the built-ins (or ``base``) with ``table`` set over them; ``table`` is
    a ``[scenario]`` table: flat persistent-agent keys and/or ``NAME = {kind, keys}``."""
    scenarios = dict(base) if base is not None else builtin_scenarios()
    flat, named = split_table(table or {}, where=where)
    if flat:
        session = scenarios[SESSION]
        params = parse(
            cost.SessionScenario, flat, where=where, from_text=from_text, base=session.params
        )
        scenarios[SESSION] = replace(session, params=params)
    for name, sub in named.items():
        scenarios[name] = parse_scenario(
            name, sub, where=f"{where}.{name}", from_text=from_text, base=scenarios.get(name)
        )
    return scenarios


def to_tables(scenarios: Mapping[str, Scenario]) -> dict[str, dict[str, Any]]:
    """Every scenario in the manifest's form (``config.scenarios``)."""
    return {name: s.table() for name, s in scenarios.items()}


# -- what a scenario costs on one provider ----------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SizeChoice:
    """The sandbox's own size for costing, and where it came from."""

    shape: cost.Shape
    #: "measured", "declared" or "spec".
    origin: str
    #: How the report says it: "template 'base' (2 vCPU / 0.5 GiB), as the pricing catalog
    #: declares it".
    source: str
    note: str = ""

    @property
    def phrase(self) -> str:
        """Short, for "billed at ...": "the size the probe measured"."""
        return {
            "measured": "the size the probe measured",
            "declared": "the declared size of its template",
        }.get(self.origin, "the run's spec")


def sandbox_size(
    pricing: cost.ProviderPricing | None,
    spec: Mapping[str, Any] | None,
    environment: Mapping[str, Any] | None,
    *,
    probe: cost.Shape | None = None,
    probe_note: str = "",
) -> SizeChoice:
    """Measured (the probe workload's median of what the sandboxes saw) over declared (the
    catalog's size of the template the run used) over the run's spec.

    Memory seen inside a VM is a little under what it was given (the kernel keeps some), so a
    measurement within 85-105 % of the declared size confirms the declaration (which is then
    used, being what the vendor bills); a measurement further off is used instead, and said.
    """
    spec_shape = cost.spec_shape(spec)
    declared, why = (
        pricing.sandbox_size.declared(spec, environment)
        if pricing is not None and pricing.sandbox_size is not None
        else (None, "")
    )
    declared_source = (
        f"{why} ({declared.describe()}), as the pricing catalog declares it"
        if declared is not None
        else ""
    )
    if probe is not None:
        seen = f"the probe saw {probe.cpus:g} CPU(s) and {probe.memory_gib * 1024:.0f} MiB"
        if declared is not None:
            close = abs(probe.cpus - declared.cpus) <= 0.05 * declared.cpus and (
                0.85 * declared.memory_gib <= probe.memory_gib <= 1.05 * declared.memory_gib
            )
            if close:
                return SizeChoice(
                    shape=declared,
                    origin="declared",
                    source=f"{why} ({declared.describe()}), confirmed by the probe ({seen})",
                )
            return SizeChoice(
                shape=probe,
                origin="measured",
                source=f"measured by the probe ({seen})",
                note=f"declared {why} is {declared.describe()}; the measurement is used",
            )
        return SizeChoice(shape=probe, origin="measured", source=f"measured by the probe ({seen})")
    note = probe_note
    if declared is not None:
        return SizeChoice(shape=declared, origin="declared", source=declared_source, note=note)
    if why and pricing is not None and pricing.sandbox_size and not pricing.sandbox_size.from_spec:
        note = "; ".join(x for x in (note, f"{why}: billed at the spec, which may be wrong") if x)
    return SizeChoice(shape=spec_shape, origin="spec", source="the run's spec", note=note)


def probe_size(
    frame: pd.DataFrame, provider: str, *, emulated: bool
) -> tuple[cost.Shape | None, str]:
    """The median size the probe workload saw inside ``provider``'s sandboxes (``frame``: the
    samples the statistics count), or None with why not: it did not run, or it ran against an
    emulator, whose sandboxes are not the provider's."""
    if frame.empty or "effective_cpus" not in frame.columns:
        return None, ""
    seen = frame.loc[frame["effective_cpus"].notna().to_numpy(dtype=bool)]
    sub = seen.loc[(seen["provider"].astype(str) == provider).to_numpy(dtype=bool)]
    if sub.empty:
        return None, ""
    if emulated:
        return None, (
            "the probe's findings describe the emulator's sandboxes, not the provider's, so "
            "they are not used"
        )
    cpus = float(np.nanmedian(sub["effective_cpus"].to_numpy(dtype=np.float64)))
    memory = sub["effective_memory_mb"].to_numpy(dtype=np.float64)
    if not np.isfinite(memory).any():
        return None, ""
    return cost.Shape(cpus=cpus, memory_gib=float(np.nanmedian(memory)) / 1024.0), ""


@dataclass(frozen=True, kw_only=True)
class AlternativeCost:
    name: str
    per_unit: Span
    source: str
    #: The size billed under this reading.
    billed_shape: cost.Shape


@dataclass(frozen=True, kw_only=True)
class ScenarioPrice:
    """A scenario's cost on one provider, as ranges (see the module docstring)."""

    provider: str
    per_unit: Span
    per_day: Span
    per_month: Span
    #: The cheapest plan whose limits allow the scenario (None: none published, or none fits).
    plan: cost.PlanLimit | None
    #: Plans whose limits the scenario exceeds, each with why.
    plans_too_small: tuple[str, ...]
    #: True when plans are published and none fits.
    no_plan_fits: bool
    by_alternative: tuple[AlternativeCost, ...]
    #: The primary reading (first-listed rates, first billing reading, the times' estimates).
    primary: UnitCost
    #: The shape billed under the primary reading.
    billed_shape: cost.Shape
    size: SizeChoice
    snapshot_unknown: bool
    notes: tuple[str, ...]
    #: The times whose upper end is unknown (neither measured nor claimed) and that move the
    #: cost: then every range's upper end is ``inf`` (unknown).
    open_times: tuple[str, ...] = ()
    #: The times whose upper end is unknown but that do not move this provider's cost.
    idle_times: tuple[str, ...] = ()
    #: The monthly range without its unknown part (the open times counted at their least,
    #: 0 s): a lower bound of the cost at every reading, for the rank rules only.
    known_per_month: Span | None = None

    @property
    def high_unknown(self) -> bool:
        return bool(self.open_times)

    @property
    def month_with_plan(self) -> Span:
        """The monthly range with the cheapest fitting plan's fee added."""
        return self._with_fee(self.per_month)

    @property
    def known_month_with_plan(self) -> Span:
        """:attr:`month_with_plan` with its unknown part left out (see
        :func:`bench.decide.rank_ranges`, ``open_high``)."""
        return self._with_fee(self.known_per_month or self.per_month)

    def _with_fee(self, span: Span) -> Span:
        fee = self.plan.usd_per_month if self.plan is not None else 0.0
        return Span(low=span.low + fee, mid=span.mid + fee, high=span.high + fee)


#: A time no one measured or claimed is tried at this (about four months, longer than any
#: billing minimum or granularity in the catalog) to see whether it moves a cost.
OPEN_PROBE_S = 1e7


def check_plans(
    pricing: cost.ProviderPricing, needs: Needs
) -> tuple[cost.PlanLimit | None, tuple[str, ...], bool]:
    """(the cheapest plan that allows ``needs``, the plans too small and why, whether plans
    are published and none fits)."""
    fits, short = [], []
    for plan in pricing.plan_limits:
        why = []
        if plan.max_concurrent is not None and needs.concurrency > plan.max_concurrent:
            why.append(f"{plan.max_concurrent:,} sandboxes at once < {needs.concurrency:,} needed")
        if plan.max_session_h is not None and needs.session_h > plan.max_session_h:
            why.append(f"sessions capped at {plan.max_session_h:g} h < {needs.session_h:g} h")
        if why:
            short.append(f"{plan.name}: " + "; ".join(why))
        else:
            fits.append(plan)
    best = min(fits, key=lambda p: p.usd_per_month) if fits else None
    return best, tuple(short), bool(pricing.plan_limits) and not fits


def price(
    scenario: Scenario,
    pricing: cost.ProviderPricing,
    size: SizeChoice,
    times: Mapping[str, Span],
    *,
    hours_per_month: float,
    dearest_snapshot_usd_per_gib_h: float,
) -> ScenarioPrice:
    """The scenario on one provider over every price reading and the times' ranges.

    A time whose span has no upper end (``inf``: neither measured nor claimed) is left out of
    the times the kind's cost reads (each counts a missing time as 0 s, its least, and says
    so); if it moves the cost (:data:`OPEN_PROBE_S` of it costs more than its lower
    end at some reading: every cost grows with every time), every range's upper end is
    unknown (``inf``) and the time is named in :attr:`ScenarioPrice.open_times`.
    """
    kind = scenario.kind
    per_day_units = kind.units_per_day(scenario.params)
    days = hours_per_month / 24.0
    unknown = [k for k, v in times.items() if v.open]

    def unit(
        end: str,
        alternative: cost.BillingAlternative,
        which: str,
        probe: str | None = None,
    ) -> UnitCost:
        priced = pricing.at(end).with_alternative(alternative)
        # An open time is left out (each cost counts a missing time as 0 s and says so),
        # except where it is probed.
        chosen = {k: getattr(v, which) for k, v in times.items() if not v.open}
        if probe is not None:
            chosen[probe] = OPEN_PROBE_S
        result = kind.cost(scenario.params, priced, size.shape, chosen, size.phrase)
        if result.snapshot_usd is None and which == "high":
            # Unpublished snapshot price: the high end assumes the dearest storage rate.
            gib_h = _snapshot_gib_h(scenario)
            result = replace(result, snapshot_usd=gib_h * dearest_snapshot_usd_per_gib_h)
        return result

    by_alt = []
    lows, highs = [], []
    mids = []
    for alternative in pricing.alternatives:
        low = unit("low", alternative, "low").total_usd
        high = unit("high", alternative, "high").total_usd
        mid = min(max(unit("primary", alternative, "mid").total_usd, low), high)
        lows.append(low)
        highs.append(high)
        mids.append(mid)
        by_alt.append(
            AlternativeCost(
                name=alternative.name,
                per_unit=Span(low=low, mid=mid, high=high),
                source=alternative.source,
                billed_shape=alternative.billed_shape or size.shape,
            )
        )
    primary_alt = pricing.alternatives[0]
    primary = unit("primary", primary_alt, "mid")
    per_unit = Span(low=min(lows), mid=mids[0], high=max(highs))
    open_times = tuple(
        k
        for k in unknown
        if any(
            unit("high", a, "high", probe=k).total_usd > unit("high", a, "high").total_usd
            for a in pricing.alternatives
        )
    )
    known_per_month = per_unit.scaled(per_day_units * days)
    if open_times:
        per_unit = per_unit.opened()
        by_alt = [replace(a, per_unit=a.per_unit.opened()) for a in by_alt]
    plan, short, none_fits = check_plans(pricing, scenario.needs())
    snapshot_unknown = primary.snapshot_usd is None
    notes = list(primary.notes)
    if snapshot_unknown:
        notes = [n for n in notes if not n.startswith("snapshot storage price not published")]
        notes.append(
            "snapshot storage price not published: counted as $0 at the low end and at the "
            "dearest storage rate in the catalog at the high end"
        )
    if unknown:
        # This note says it for the scenario (the session's own note would repeat it).
        notes = [n for n in notes if not n.startswith(cost.COUNTED_AS_ZERO)]
    if open_times:
        notes.append(
            f"{times_phrase(open_times)} neither measured nor claimed: the cost's upper end "
            "is unknown (its lower end counts 0 s)"
        )
    if size.note:
        notes.append(size.note)
    return ScenarioPrice(
        provider=pricing.provider,
        per_unit=per_unit,
        per_day=per_unit.scaled(per_day_units),
        per_month=per_unit.scaled(per_day_units * days),
        plan=plan,
        plans_too_small=short,
        no_plan_fits=none_fits,
        by_alternative=tuple(by_alt),
        primary=primary,
        billed_shape=primary_alt.billed_shape or size.shape,
        size=size,
        snapshot_unknown=snapshot_unknown,
        notes=tuple(notes),
        open_times=open_times,
        idle_times=tuple(k for k in unknown if k not in open_times),
        known_per_month=known_per_month,
    )


def times_phrase(keys: tuple[str, ...]) -> str:
    """The times named in words: "the time of resume is", "the times of a and b are"."""
    if len(keys) == 1:
        return f"the time of {keys[0]} is"
    return f"the times of {', '.join(keys[:-1])} and {keys[-1]} are"


@dataclass(frozen=True, kw_only=True)
class ExampleCheck:
    """A published cost example against the range the catalog gives for it."""

    provider: str
    example: cost.PublishedExample
    price: ScenarioPrice
    #: The example's figure lies in the range (to the cent it is published to).
    inside: bool

    def text(self) -> str:
        p, ex = self.price, self.example
        rng = cost.format_usd_range(p.per_unit.low, p.per_unit.high)
        readings = "; ".join(
            f"{a.name} ({a.billed_shape.describe()}): "
            f"{cost.format_usd_range(a.per_unit.low, a.per_unit.high)}"
            for a in p.by_alternative
        )
        where = "inside" if self.inside else "outside"
        return (
            f"{self.provider}: {ex.what} ({ex.source}). Priced from the catalog over every "
            f"sourced rate and billing reading ({readings}): {rng} per session. "
            f"The published ${ex.usd:,.2f} is {where} this range. {ex.note}"
        ).strip()


def check_example(
    example: cost.PublishedExample,
    pricing: cost.ProviderPricing,
    size: SizeChoice,
    *,
    hours_per_month: float,
    dearest_snapshot_usd_per_gib_h: float,
) -> ExampleCheck:
    """Price ``example``'s session on ``pricing`` (no transitions: the example's own keys)."""
    params = parse(cost.SessionScenario, example.scenario, where="example")
    scenario = Scenario(name="example", kind=KINDS["agent"], params=params, builtin=False)
    result = price(
        scenario,
        pricing,
        size,
        {},
        hours_per_month=hours_per_month,
        dearest_snapshot_usd_per_gib_h=dearest_snapshot_usd_per_gib_h,
    )
    half_cent = 0.005
    inside = result.per_unit.low - half_cent <= example.usd <= result.per_unit.high + half_cent
    return ExampleCheck(provider=pricing.provider, example=example, price=result, inside=inside)


def _snapshot_gib_h(scenario: Scenario) -> float:
    params = scenario.params
    if isinstance(params, cost.SessionScenario):
        return params.snapshot_gib * params.hours * params.checkpoints / 2.0
    return 0.0


__all__ = [
    "BUILTINS",
    "KINDS",
    "SESSION",
    "AlternativeCost",
    "BatchScenario",
    "ExampleCheck",
    "InteractiveScenario",
    "LatencyMetric",
    "Needs",
    "Scenario",
    "ScenarioKind",
    "ScenarioPrice",
    "SizeChoice",
    "UnitCost",
    "builtin_scenarios",
    "check_example",
    "check_plans",
    "parse_scenario",
    "parse_scenarios",
    "price",
    "probe_size",
    "register_kind",
    "sandbox_size",
    "split_table",
    "to_tables",
]
