"""Cost model: what measured operations, workloads and agent sessions cost on each provider.

Costs are computed at report time from the raw results and the pricing catalog
(``providers/pricing.toml``), never stored in results: a price change means running the report
again. Every amount is in US dollars (``_usd``); durations are seconds (``_s``) or hours
(``_h``); sizes are GiB (``_gib``).

Assumptions (the report prints them next to the numbers):

* **Size.** A sandbox's billed size is the provider's fixed ``billed_shape`` when the catalog
  has one (Sprites bill 8 vCPU / 4 GB whenever active, per its billing page), else the
  sandbox's own size: measured by the probe workload, else declared by the catalog's
  ``sandbox_size`` for the template the run used (E2B: the template's 2 vCPU / 512 MiB, the
  spec is ignored), else the run's spec (``cpus``, ``memory_mb`` read as MiB)
  (:func:`bench.scenarios.sandbox_size`). Vendors' "GB" of RAM is read as GiB.
* **Prices that are not one number.** A rate may carry several sourced, dated values and the
  billing basis several readings (:class:`BillingAlternative`); the float rates of a
  :class:`ProviderPricing` are the first-listed (primary) values, :meth:`ProviderPricing.at`
  gives the lowest or highest of each, and the scenarios (bench/scenarios.py) report costs as
  ranges over them.
* **Operation cost** = measured duration × the per-second rate of that size: the marginal
  cost of the time the operation keeps one sandbox running. No granularity or minimum is
  applied to a single operation (billing increments apply to a sandbox's whole life).
* **Workload cost** (per iteration) = the sum of the measured durations of the iteration's
  operations on one sandbox (derived spans such as ``ready`` excluded, since they overlap
  ``create`` and ``first_exec``), rounded up to the billing granularity and raised to the
  minimum, × the rate. The harness's own gaps between calls are not counted, and a
  new-sandbox restore's second sandbox is not billed separately, so this is a lower bound
  of a real bill for the same steps.
* **Session scenario** (:class:`SessionScenario`): an agent session of ``hours`` during which
  the sandbox is busy a fraction ``active_fraction`` of the time, takes ``checkpoints``
  checkpoints and is resumed ``resumes`` times after idle gaps. Per provider:

  - compute is billed for the active time, plus the measured p50 time of each checkpoint,
    pause and resume; idle time is billed too unless the provider stops billing when idle:
    ``auto_sleep`` providers (Sprites) always sleep when idle; ``pause``/``stop`` providers
    do when ``resumes`` > 0 (the agent pauses or stops the sandbox in its idle gaps);
    ``none`` never does;
  - storage tiers bill ``disk_gib`` (less any free allowance) for the whole session
    (``always``), for the billed compute time (``running``), or not at all (``included``);
  - each checkpoint keeps ``snapshot_gib`` until the session ends; taken evenly through the
    session, they are kept hours × checkpoints / 2 GiB-hours in all; where no snapshot price
    is published the snapshot cost is unknown and left out of the total, and the report
    says so;
  - the user-visible wait is checkpoints × p50(checkpoint) + resumes × (p50(resume) +
    p50(first_exec_after_resume)), from the run's measurements where it has them; for a
    provider that sleeps on idle, "resume" is its wake: the operation declared with the
    ``wake`` role, counted only after an idle at least as long as the provider's published
    sleep threshold.

  Which operation is "checkpoint", "pause", "resume", "first_exec_after_resume" and "wake" is
  declared by the workloads (:class:`bench.workloads.shape.Role`); the first registered
  workload that declares the role and measured it wins.

A month is 730 hours (365 × 24 / 12).
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import Status
from bench.stats import format_duration, percentile, sort_key, supports
from bench.workloads import registry
from bench.workloads.shape import Role
from providers.settings import SettingError, parse, setting

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "providers" / "pricing.toml"
CATALOG_SCHEMA_VERSION = 1

BILLING_BASES = frozenset({"allocated", "active_usage"})
IDLE_MODES = frozenset({"auto_sleep", "pause", "stop", "none"})
PAUSED_PAYS = frozenset({"nothing", "storage", "full"})
STORAGE_BILLED = frozenset({"always", "running", "included"})

_SECONDS = {"second": 1.0, "hour": 3600.0}
#: unit -> (resource, seconds per time unit). Month units are handled with hours_per_month.
_COMPUTE_UNITS = {
    "vcpu_second": ("cpu", 1.0),
    "vcpu_hour": ("cpu", 3600.0),
    "gib_second": ("memory", 1.0),
    "gib_hour": ("memory", 3600.0),
    "gb_second": ("memory", 1.0),
    "gb_hour": ("memory", 3600.0),
    "sandbox_second": ("sandbox", 1.0),
    "sandbox_hour": ("sandbox", 3600.0),
}
_STORAGE_UNITS = {"gib_hour", "gb_hour", "gib_month", "gb_month"}


class CatalogError(ValueError):
    """The pricing catalog is not in the expected shape."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Shape:
    """A billed sandbox size."""

    cpus: float
    memory_gib: float

    def describe(self) -> str:
        return f"{self.cpus:g} vCPU / {self.memory_gib:g} GiB"


def spec_shape(spec: Mapping[str, Any] | None) -> Shape:
    """The size a run's spec asked for; ``memory_mb`` is MiB."""
    spec = spec or {}
    cpus = float(spec.get("cpus") or 1.0)
    memory_gib = float(spec.get("memory_mb") or 512) / 1024.0
    return Shape(cpus=cpus, memory_gib=memory_gib)


#: The ``checked`` of an entry whose date is free text, not a date: its age is unknown.
UNKNOWN_DATE = date.min

#: Which of a rate's sourced values a priced copy of the catalog uses (:meth:`ProviderPricing.at`).
ENDS = ("primary", "low", "high")


@dataclass(frozen=True, kw_only=True, slots=True)
class SourcedValue:
    """One published figure for a rate, with where it was read and when."""

    #: Normalised: USD per second of a vCPU, GiB or sandbox (compute), or per GiB-hour (storage).
    usd: float
    #: As the vendor writes it, e.g. "$0.07 per vCPU-hour".
    display: str
    source: str
    #: When the source was read (ISO date).
    checked: date
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rate:
    """A priced item (compute cpu, memory, a storage tier, snapshot storage) and every sourced
    value the catalog has for it; the first is the catalog's preferred (primary) one."""

    item: str
    values: tuple[SourcedValue, ...]

    @property
    def primary(self) -> float:
        return self.values[0].usd

    @property
    def low(self) -> float:
        return min(v.usd for v in self.values)

    @property
    def high(self) -> float:
        return max(v.usd for v in self.values)

    def at(self, end: str) -> float:
        return {"primary": self.primary, "low": self.low, "high": self.high}[end]

    @property
    def uncertain(self) -> bool:
        return len({v.usd for v in self.values}) > 1

    @property
    def last_checked(self) -> date:
        """The most recent reading of this price, by any of its sources."""
        return max(v.checked for v in self.values)


@dataclass(frozen=True, kw_only=True, slots=True)
class StorageTier:
    name: str
    usd_per_gib_h: float
    billed: str
    free_gib: float
    #: The rate as the vendor writes it, e.g. "$0.50 per GB-month" (the primary value).
    display: str
    note: str = ""
    rate: Rate | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class BillingAlternative:
    """One reading of how a provider bills compute, where its sources disagree (Sprites:
    a fixed 8 vCPU / 4 GB while active per the billing page, self-reported use per the
    vendor's staff). Costs are computed under each and shown as a range."""

    name: str
    #: The size billed whatever the sandbox is; None bills the sandbox's own size.
    billed_shape: Shape | None
    source: str
    checked: date | None
    note: str = ""


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanLimit:
    """A plan's limits that decide whether a scenario can run on it at all."""

    name: str
    usd_per_month: float
    #: Sandboxes running at once; None when the plan publishes no cap.
    max_concurrent: int | None
    #: Longest a sandbox may run continuously, in hours; None when not capped.
    max_session_h: float | None
    source: str
    checked: date
    note: str = ""

    def describe(self) -> str:
        fee = f"${self.usd_per_month:,.0f}/month" if self.usd_per_month else "no fee"
        caps = []
        if self.max_concurrent is not None:
            caps.append(f"{self.max_concurrent:,} concurrent")
        if self.max_session_h is not None:
            caps.append(f"sessions up to {self.max_session_h:g} h")
        return f"{self.name} ({fee}" + (", " + ", ".join(caps) if caps else "") + ")"


@dataclass(frozen=True, kw_only=True, slots=True)
class SandboxSize:
    """Where a provider's sandbox size comes from when it is not the run's spec (E2B: the
    template's, set when the template is built)."""

    #: False when the provider ignores the spec's cpus and memory.
    from_spec: bool
    #: Template name -> its size, as published.
    templates: Mapping[str, Shape]
    default_template: str
    source: str
    checked: date
    note: str = ""
    #: The provider setting (in the manifest's environment) naming the template.
    template_setting: str = "template"
    #: A provider setting that, when set, makes the spec apply again (Daytona's ``image``).
    spec_when_setting: str = ""

    def declared(
        self, spec: Mapping[str, Any] | None, environment: Mapping[str, Any] | None
    ) -> tuple[Shape | None, str]:
        """The size a run's sandboxes had by declaration, and why: (None, reason) when the
        spec applies or the template's size is not in the catalog."""
        spec, environment = spec or {}, environment or {}
        if self.from_spec or (self.spec_when_setting and environment.get(self.spec_when_setting)):
            return None, "the provider applies the spec"
        name = spec.get("template") or environment.get(self.template_setting)
        name = str(name or self.default_template)
        shape = self.templates.get(name)
        if shape is None:
            return None, f"template {name!r}'s size is not in the pricing catalog"
        return shape, f"template {name!r}"


@dataclass(frozen=True, kw_only=True, slots=True)
class PublishedExample:
    """A vendor's or a brief's own cost example, shown against the catalog's range."""

    what: str
    usd: float
    #: Persistent-agent session keys (:class:`SessionScenario`) that reproduce the example.
    scenario: Mapping[str, Any]
    source: str
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class ProviderPricing:
    """One provider's catalog entry, normalised to per-second and per-GiB-hour rates.

    The float rates are the catalog's primary (first-listed) values; :meth:`at` gives a copy
    at the lowest or highest of every rate's sourced values, and :attr:`alternatives` the
    readings of the billing basis where sources disagree."""

    provider: str
    display_name: str
    billing_basis: str
    basis_note: str
    cpu_usd_per_vcpu_s: float
    memory_usd_per_gib_s: float
    sandbox_usd_per_s: float
    billed_shape: Shape | None
    shape_note: str
    granularity_s: float
    minimum_s: float
    idle: str
    paused_pays: str
    paused_note: str
    #: Idle seconds after which an ``auto_sleep`` provider sleeps (None when not published).
    sleeps_after_s: float | None
    storage: tuple[StorageTier, ...]
    snapshot_usd_per_gib_h: float | None
    snapshot_display: str
    snapshot_note: str
    plans: str
    source: str
    checked: str
    superseded: str
    #: (item, "$0.07 per vCPU-hour") rows as the vendor writes them, for the report.
    rate_rows: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    #: Compute rates by resource ("cpu", "memory", "sandbox"), each item with its values.
    compute_rates: Mapping[str, tuple[Rate, ...]] = field(default_factory=dict)
    snapshot_rate: Rate | None = None
    alternatives: tuple[BillingAlternative, ...] = ()
    plan_limits: tuple[PlanLimit, ...] = ()
    sandbox_size: SandboxSize | None = None
    #: Self-hosted (the local provider): costed only when the user gives a host price.
    self_hosted: bool = False
    examples: tuple[PublishedExample, ...] = ()

    def shape_for(self, spec: Shape) -> Shape:
        return self.billed_shape or spec

    def usd_per_s(self, shape: Shape) -> float:
        """Compute price per second of a running (active) sandbox of ``shape``."""
        return (
            self.cpu_usd_per_vcpu_s * shape.cpus
            + self.memory_usd_per_gib_s * shape.memory_gib
            + self.sandbox_usd_per_s
        )

    def billed_seconds(self, duration_s: float) -> float:
        """Round a sandbox's billed time up to the granularity, then raise it to the minimum."""
        if duration_s <= 0:
            return 0.0
        g = self.granularity_s
        billed = math.ceil(duration_s / g - 1e-9) * g if g > 0 else duration_s
        return max(billed, self.minimum_s)

    @property
    def priced(self) -> bool:
        """False for a self-hosted entry nobody gave a price: it is left out of costs (never
        shown as $0)."""
        if not self.self_hosted:
            return True
        return any(r.high > 0 for rates in self.compute_rates.values() for r in rates)

    @property
    def uncertain(self) -> bool:
        """True when a rate has sourced values that disagree or the billing has alternatives."""
        return len(self.alternatives) > 1 or any(r.uncertain for r in self.rates())

    def rates(self) -> list[Rate]:
        """Every rate of the entry: compute, storage tiers, snapshot storage."""
        out = [r for rates in self.compute_rates.values() for r in rates]
        out += [t.rate for t in self.storage if t.rate is not None]
        if self.snapshot_rate is not None:
            out.append(self.snapshot_rate)
        return out

    def at(self, end: str) -> ProviderPricing:
        """A copy whose float rates are every rate's ``end`` value ("primary", "low", "high").

        Costs grow with every rate, so the cost at "low" and at "high" bound every mix of the
        sourced values."""
        if end not in ENDS:
            raise ValueError(f"end must be one of {', '.join(ENDS)}, got {end!r}")
        per_s = {
            resource: sum(r.at(end) for r in self.compute_rates.get(resource, ()))
            for resource in ("cpu", "memory", "sandbox")
        }
        tiers = tuple(
            replace(t, usd_per_gib_h=t.rate.at(end)) if t.rate is not None else t
            for t in self.storage
        )
        return replace(
            self,
            cpu_usd_per_vcpu_s=per_s["cpu"],
            memory_usd_per_gib_s=per_s["memory"],
            sandbox_usd_per_s=per_s["sandbox"],
            storage=tiers,
            snapshot_usd_per_gib_h=(
                self.snapshot_rate.at(end) if self.snapshot_rate is not None else None
            ),
        )

    def with_alternative(self, alternative: BillingAlternative) -> ProviderPricing:
        """A copy billing compute as ``alternative`` reads it."""
        return replace(self, billed_shape=alternative.billed_shape)

    def last_checked(self) -> list[tuple[str, date]]:
        """(item, the most recent reading of its price) for every rate."""
        return [(r.item, r.last_checked) for r in self.rates()]


@dataclass(frozen=True, kw_only=True)
class Catalog:
    providers: Mapping[str, ProviderPricing]
    hours_per_month: float
    path: Path
    currency: str = "USD"

    def get(self, provider: str) -> ProviderPricing | None:
        return self.providers.get(provider)

    def dearest_storage_usd_per_gib_h(self) -> float:
        """The highest storage or snapshot rate any entry publishes: the upper bound the
        scenarios assume for a snapshot price a provider does not publish."""
        rates = [
            r.high
            for p in self.providers.values()
            for r in p.rates()
            if r.item.startswith(("storage", "snapshot"))
        ]
        return max(rates, default=0.0)


def _money(value: float) -> str:
    """A published rate as written: all its digits, at least two decimals."""
    if not value:
        return "$0"
    text = f"{value:.10f}".rstrip("0")
    decimals = len(text.split(".")[1])
    return f"${value:.{max(2, decimals)}f}"


def _unit_label(per: str) -> str:
    labels = {
        "vcpu_second": "vCPU-second",
        "vcpu_hour": "vCPU-hour",
        "gib_second": "GiB-second",
        "gib_hour": "GiB-hour",
        "gb_second": "GB-second",
        "gb_hour": "GB-hour",
        "gib_month": "GiB-month",
        "gb_month": "GB-month",
        "sandbox_second": "sandbox-second",
        "sandbox_hour": "sandbox-hour",
    }
    return labels.get(per, per)


def _number(entry: Mapping[str, Any], key: str, where: str, *, default: float | None = None):
    if key not in entry:
        if default is not None:
            return default
        raise CatalogError(f"{where}: missing {key!r}")
    value = entry[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CatalogError(f"{where}: {key} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise CatalogError(f"{where}: {key} must be a finite non-negative number, got {value}")
    return float(value)


def _choice(entry: Mapping[str, Any], key: str, allowed: frozenset[str], where: str) -> str:
    value = entry.get(key)
    if value not in allowed:
        raise CatalogError(
            f"{where}: {key} must be one of {', '.join(sorted(allowed))}, got {value!r}"
        )
    return str(value)


def _text(entry: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise CatalogError(f"{where}: {key} must be text, got {value!r}")
    if required and not value.strip():
        raise CatalogError(f"{where}: missing {key!r}")
    return value


def _date(value: Any, where: str) -> date:
    """A ``checked`` date: a TOML date or an ISO ``YYYY-MM-DD`` string."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise CatalogError(f"{where}: checked must be a date (YYYY-MM-DD), got {value!r}") from None


def _storage_per_gib_h(usd: float, per: str, hours_per_month: float, where: str) -> float:
    if per not in _STORAGE_UNITS:
        raise CatalogError(f"{where}: unknown storage unit {per!r}")
    return usd / hours_per_month if per.endswith("_month") else usd


@dataclass(frozen=True, kw_only=True, slots=True)
class _Defaults:
    """What a value without its own source and date inherits: the entry's."""

    source: str
    checked: Any
    where: str


def _tables(
    raw: Any, key: str, where: str, *, non_empty: bool = False
) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Each table of the array ``raw`` (``key`` of ``where``) with where it stands, checked as
    it is reached (an error names the first bad place, as a parse in order would)."""
    if not isinstance(raw, list) or (non_empty and not raw):
        array = "a non-empty array" if non_empty else "an array"
        raise CatalogError(f"{where}: {key} must be {array} of tables")
    for i, table in enumerate(raw):
        tw = f"{where} {key}[{i}]"
        if not isinstance(table, Mapping):
            raise CatalogError(f"{tw} must be a table")
        yield tw, table


def _rate(
    item: str,
    entry: Mapping[str, Any],
    where: str,
    normalise: Any,
    defaults: _Defaults,
) -> tuple[Rate, str]:
    """A rate from ``{usd, per}`` (one value, the entry's source and date) or ``{per, values =
    [{usd, per?, source, checked, note?}, ...]}`` (several sourced values); ``normalise(usd,
    per, where)`` gives the value in the catalog's units. Returns the rate and the unit."""
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where} must be a table")
    if "usd" in entry and "values" in entry:
        raise CatalogError(f"{where}: give usd or values, not both")
    per = entry.get("per")
    if "values" not in entry:
        usd = _number(entry, "usd", where)
        value = SourcedValue(
            usd=normalise(usd, per, where),
            display=f"{_money(usd)} per {_unit_label(str(per))}",
            source=defaults.source,
            checked=_date(defaults.checked, defaults.where),
            note=_text(entry, "note", where),
        )
        return Rate(item=item, values=(value,)), str(per)
    values = []
    for vw, v in _tables(entry["values"], "values", where, non_empty=True):
        usd = _number(v, "usd", vw)
        vper = v.get("per", per)
        if "checked" not in v:
            raise CatalogError(f"{vw}: missing 'checked'")
        values.append(
            SourcedValue(
                usd=normalise(usd, vper, vw),
                display=f"{_money(usd)} per {_unit_label(str(vper))}",
                source=_text(v, "source", vw, required=True),
                checked=_date(v["checked"], vw),
                note=_text(v, "note", vw),
            )
        )
    return Rate(item=item, values=tuple(values)), str(per)


def _shape_table(value: Any, where: str) -> Shape:
    if not isinstance(value, Mapping):
        raise CatalogError(f"{where} must be a table of cpus and memory_gib")
    return Shape(cpus=_number(value, "cpus", where), memory_gib=_number(value, "memory_gib", where))


def _alternatives(
    entry: Mapping[str, Any], where: str, default_shape: Shape | None, defaults: _Defaults
) -> tuple[BillingAlternative, ...]:
    raw = entry.get("alternatives")
    if raw is None:
        return (
            BillingAlternative(
                name="as published",
                billed_shape=default_shape,
                source=defaults.source,
                checked=None,
            ),
        )
    out = []
    for aw, alt in _tables(raw, "alternatives", where, non_empty=True):
        shape_value = alt.get("billed_shape", "sandbox")
        if shape_value == "sandbox":
            shape = None
        else:
            shape = _shape_table(shape_value, f"{aw} billed_shape")
        out.append(
            BillingAlternative(
                name=_text(alt, "name", aw, required=True),
                billed_shape=shape,
                source=_text(alt, "source", aw, required=True),
                checked=_date(alt["checked"], aw) if "checked" in alt else None,
                note=_text(alt, "note", aw),
            )
        )
    return tuple(out)


def _plan_limits(entry: Mapping[str, Any], where: str) -> tuple[PlanLimit, ...]:
    out = []
    for pw, plan in _tables(entry.get("plan_limits", []), "plan_limits", where):
        concurrent = plan.get("max_concurrent")
        if concurrent is not None and (
            isinstance(concurrent, bool) or not isinstance(concurrent, int) or concurrent < 1
        ):
            raise CatalogError(f"{pw}: max_concurrent must be a whole number >= 1")
        if "checked" not in plan:
            raise CatalogError(f"{pw}: missing 'checked'")
        out.append(
            PlanLimit(
                name=_text(plan, "name", pw, required=True),
                usd_per_month=_number(plan, "usd_per_month", pw, default=0.0),
                max_concurrent=concurrent,
                max_session_h=(
                    _number(plan, "max_session_h", pw) if "max_session_h" in plan else None
                ),
                source=_text(plan, "source", pw, required=True),
                checked=_date(plan["checked"], pw),
                note=_text(plan, "note", pw),
            )
        )
    return tuple(out)


def _sandbox_size(entry: Mapping[str, Any], where: str) -> SandboxSize | None:
    raw = entry.get("sandbox_size")
    if raw is None:
        return None
    sw = f"{where} sandbox_size"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{sw} must be a table")
    templates = raw.get("templates", {})
    if not isinstance(templates, Mapping):
        raise CatalogError(f"{sw}: templates must be a table of name = {{cpus, memory_gib}}")
    from_spec = raw.get("from_spec", True)
    if not isinstance(from_spec, bool):
        raise CatalogError(f"{sw}: from_spec must be true or false")
    default = _text(raw, "default_template", sw)
    shapes = {str(k): _shape_table(v, f"{sw} templates.{k}") for k, v in templates.items()}
    if default and default not in shapes:
        raise CatalogError(f"{sw}: default_template {default!r} is not in templates")
    if "checked" not in raw:
        raise CatalogError(f"{sw}: missing 'checked'")
    return SandboxSize(
        from_spec=from_spec,
        templates=shapes,
        default_template=default,
        source=_text(raw, "source", sw, required=True),
        checked=_date(raw["checked"], sw),
        note=_text(raw, "note", sw),
        template_setting=_text(raw, "template_setting", sw) or "template",
        spec_when_setting=_text(raw, "spec_when_setting", sw),
    )


def _examples(entry: Mapping[str, Any], where: str) -> tuple[PublishedExample, ...]:
    out = []
    for ew, ex in _tables(entry.get("examples", []), "examples", where):
        scenario = ex.get("scenario", {})
        if not isinstance(scenario, Mapping):
            raise CatalogError(f"{ew}: scenario must be a table of session keys")
        try:
            parse(SessionScenario, scenario, where=f"{ew} scenario")
        except SettingError as exc:
            raise CatalogError(str(exc)) from None
        out.append(
            PublishedExample(
                what=_text(ex, "what", ew, required=True),
                usd=_number(ex, "usd", ew),
                scenario=dict(scenario),
                source=_text(ex, "source", ew, required=True),
                note=_text(ex, "note", ew),
            )
        )
    return tuple(out)


def _parse_provider(pid: str, entry: Mapping[str, Any], hours_per_month: float) -> ProviderPricing:
    where = f"pricing catalog [providers.{pid}]"
    if not isinstance(entry, Mapping):
        raise CatalogError(f"{where} must be a table")
    compute = entry.get("compute")
    if not isinstance(compute, Mapping) or not compute:
        raise CatalogError(f"{where}: needs a compute table")
    # A value without its own source and date inherits the entry's. The entry's ``checked``
    # has always been free text (entries written before dates were read stay valid); one that
    # is not a date makes the price's age unknown (UNKNOWN_DATE), which the report says.
    try:
        inherited = _date(entry.get("checked", ""), where)
    except CatalogError:
        inherited = UNKNOWN_DATE
    defaults = _Defaults(source=str(entry.get("source", "")), checked=inherited, where=where)

    def compute_unit(usd: float, per: Any, w: str) -> float:
        if per not in _COMPUTE_UNITS:
            raise CatalogError(f"{w} has unknown unit {per!r}")
        return usd / _COMPUTE_UNITS[per][1]

    def storage_unit(usd: float, per: Any, w: str) -> float:
        return _storage_per_gib_h(usd, str(per or ""), hours_per_month, w)

    compute_rates: dict[str, list[Rate]] = {"cpu": [], "memory": [], "sandbox": []}
    rate_rows = []
    for item, raw in compute.items():
        iw = f"{where} compute.{item}"
        if not isinstance(raw, Mapping):
            raise CatalogError(f"{where}: compute.{item} must be a table")
        per = raw.get("per")
        if per not in _COMPUTE_UNITS:
            raise CatalogError(f"{where}: compute.{item} has unknown unit {per!r}")
        rate, _ = _rate(str(item), raw, iw, compute_unit, defaults)
        compute_rates[_COMPUTE_UNITS[per][0]].append(rate)
        rate_rows.append((str(item), "; ".join(v.display for v in rate.values)))
    shape = entry.get("billed_shape")
    billed_shape = None if shape is None else _shape_table(shape, f"{where} billed_shape")
    tiers = []
    for i, tier in enumerate(entry.get("storage", [])):
        tw = f"{where} storage[{i}]"
        if not isinstance(tier, Mapping):
            raise CatalogError(f"{tw} must be a table")
        name = str(tier.get("name", f"storage {i}"))
        rate, _ = _rate(f"storage: {name}", tier, tw, storage_unit, defaults)
        tiers.append(
            StorageTier(
                name=name,
                usd_per_gib_h=rate.primary,
                billed=_choice(tier, "billed", STORAGE_BILLED, tw),
                free_gib=_number(tier, "free_gib", tw, default=0.0),
                display=rate.values[0].display,
                note=str(tier.get("note", "")),
                rate=rate,
            )
        )
        rate_rows.append((f"storage: {name}", "; ".join(v.display for v in rate.values)))
    snap = entry.get("snapshot_storage") or {}
    if not isinstance(snap, Mapping):
        raise CatalogError(f"{where}: snapshot_storage must be a table")
    snapshot_rate = None
    snapshot_display = "not published"
    if "usd" in snap or "values" in snap:
        snapshot_rate, _ = _rate(
            "snapshot storage", snap, f"{where} snapshot_storage", storage_unit, defaults
        )
        snapshot_display = "; ".join(v.display for v in snapshot_rate.values)
    rate_rows.append(("snapshot storage", snapshot_display))
    basis = _choice(entry, "billing_basis", BILLING_BASES, where)
    idle = _choice(entry, "idle", IDLE_MODES, where)
    paused_pays = _choice(entry, "paused_pays", PAUSED_PAYS, where)
    for key in ("source", "checked"):
        if not str(entry.get(key, "")).strip():
            raise CatalogError(f"{where}: missing {key!r}")
    self_hosted = entry.get("self_hosted", False)
    if not isinstance(self_hosted, bool):
        raise CatalogError(f"{where}: self_hosted must be true or false")
    pricing = ProviderPricing(
        provider=pid,
        display_name=str(entry.get("display_name", pid)),
        billing_basis=basis,
        basis_note=str(entry.get("basis_note", "")),
        cpu_usd_per_vcpu_s=sum(r.primary for r in compute_rates["cpu"]),
        memory_usd_per_gib_s=sum(r.primary for r in compute_rates["memory"]),
        sandbox_usd_per_s=sum(r.primary for r in compute_rates["sandbox"]),
        billed_shape=billed_shape,
        shape_note=str(entry.get("shape_note", "")),
        granularity_s=_number(entry, "granularity_s", where),
        minimum_s=_number(entry, "minimum_s", where),
        idle=idle,
        paused_pays=paused_pays,
        paused_note=str(entry.get("paused_note", "")),
        sleeps_after_s=(
            _number(entry, "sleeps_after_s", where) if "sleeps_after_s" in entry else None
        ),
        storage=tuple(tiers),
        snapshot_usd_per_gib_h=snapshot_rate.primary if snapshot_rate is not None else None,
        snapshot_display=snapshot_display,
        snapshot_note=str(snap.get("note", "")),
        plans=str(entry.get("plans", "")),
        source=str(entry["source"]),
        checked=str(entry["checked"]),
        superseded=str(entry.get("superseded", "")),
        rate_rows=tuple(rate_rows),
        compute_rates={k: tuple(v) for k, v in compute_rates.items()},
        snapshot_rate=snapshot_rate,
        alternatives=_alternatives(entry, where, billed_shape, defaults),
        plan_limits=_plan_limits(entry, where),
        sandbox_size=_sandbox_size(entry, where),
        self_hosted=self_hosted,
        examples=_examples(entry, where),
    )
    return pricing


def load_catalog(
    path: Path | None = None,
    *,
    local_rate_usd_per_hour: float | None = None,
    local_rate_source: str = "set for this report (local_rate_usd_per_hour)",
) -> Catalog:
    """Read and validate the pricing catalog; ``local_rate_usd_per_hour`` overrides the
    self-hosted ``local`` rate (a price per sandbox-hour), and ``local_rate_source`` says
    where that rate came from (shown as the price's source)."""
    path = Path(path) if path is not None else DEFAULT_CATALOG
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"pricing catalog {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"pricing catalog {path}: not valid TOML ({exc})") from None
    if data.get("schema_version") != CATALOG_SCHEMA_VERSION:
        raise CatalogError(
            f"pricing catalog {path}: schema_version {data.get('schema_version')!r} is not "
            f"{CATALOG_SCHEMA_VERSION}"
        )
    hours_per_month = _number(data, "hours_per_month", f"pricing catalog {path}", default=730.0)
    entries = data.get("providers")
    if not isinstance(entries, Mapping) or not entries:
        raise CatalogError(f"pricing catalog {path}: no [providers.*] entries")
    providers = {pid: _parse_provider(pid, e, hours_per_month) for pid, e in entries.items()}
    if local_rate_usd_per_hour is not None:
        if not math.isfinite(local_rate_usd_per_hour) or local_rate_usd_per_hour < 0:
            raise ValueError(
                f"local rate must be a non-negative number of USD per hour, "
                f"got {local_rate_usd_per_hour}"
            )
        base = providers.get("local")
        if base is None:
            raise CatalogError(f"pricing catalog {path}: no local entry to override")
        display = f"{_money(local_rate_usd_per_hour)} per sandbox-hour"
        value = SourcedValue(
            usd=local_rate_usd_per_hour / 3600.0,
            display=display,
            source=local_rate_source,
            checked=date.today(),
        )
        providers["local"] = replace(
            base,
            sandbox_usd_per_s=local_rate_usd_per_hour / 3600.0,
            cpu_usd_per_vcpu_s=0.0,
            memory_usd_per_gib_s=0.0,
            compute_rates={
                "cpu": (),
                "memory": (),
                "sandbox": (Rate(item="sandbox", values=(value,)),),
            },
            rate_rows=(
                ("sandbox", display),
                *(r for r in base.rate_rows if not r[0].startswith(("sandbox", "cpu", "mem"))),
            ),
            source=local_rate_source,
        )
    return Catalog(
        providers=providers,
        hours_per_month=hours_per_month,
        path=path,
        currency=str(data.get("currency", "USD")),
    )


def usage_cost_usd(pricing: ProviderPricing, *, vcpu_hours: float, gib_hours: float) -> float:
    """Compute cost of a metered usage in vCPU-hours and GiB-hours at the provider's rates."""
    return (
        pricing.cpu_usd_per_vcpu_s * 3600.0 * vcpu_hours
        + pricing.memory_usd_per_gib_s * 3600.0 * gib_hours
    )


# -- measured operations and workloads --------------------------------------------------------


def provider_shapes(
    catalog: Catalog, providers: Sequence[str], spec: Shape
) -> dict[str, tuple[Shape, str]]:
    """Billed size per provider, with where it came from ("spec" or "billed shape")."""
    result = {}
    for provider in providers:
        pricing = catalog.get(provider)
        if pricing is not None and pricing.billed_shape is not None:
            result[provider] = (pricing.billed_shape, "fixed billed shape")
        else:
            result[provider] = (spec, "run spec")
    return result


def operation_costs(
    summary: pd.DataFrame,
    catalog: Catalog,
    spec: Shape,
    sizes: Mapping[str, Shape] | None = None,
) -> pd.DataFrame:
    """Cost of one operation at its measured p50 and p95, per summary row, at the catalog's
    primary rates; ``sizes`` gives a provider's sandbox size where it is not the spec.

    Columns: provider, workload, operation, shape, usd_per_hour, p50_usd, p95_usd, mean_usd,
    priced (False when the catalog has no entry for the provider, or it is self-hosted and
    nobody gave a host price: its costs are then NaN, never $0).
    """
    sizes = sizes or {}
    rows = []
    for row in summary.to_dict("records"):
        pricing = catalog.get(row["provider"])
        own = sizes.get(row["provider"], spec)
        if pricing is None or not pricing.priced:
            rate = float("nan")
            shape = own
        else:
            shape = pricing.shape_for(own)
            rate = pricing.usd_per_s(shape)
        rows.append(
            {
                "provider": row["provider"],
                "workload": row["workload"],
                "operation": row["operation"],
                "shape": shape.describe(),
                "usd_per_hour": rate * 3600.0,
                "p50_usd": row["p50_s"] * rate,
                "p95_usd": row["p95_s"] * rate,
                "mean_usd": row["mean_s"] * rate,
                "priced": pricing is not None and pricing.priced,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "provider",
            "workload",
            "operation",
            "shape",
            "usd_per_hour",
            "p50_usd",
            "p95_usd",
            "mean_usd",
            "priced",
        ],
    )


def _derived_mask(frame: pd.DataFrame) -> np.ndarray:
    """True for rows of declared derived spans (looked up once per distinct pair)."""
    pairs = frame.groupby(["workload", "operation"], observed=True, sort=False).indices
    mask = np.zeros(len(frame), dtype=bool)
    for (workload, operation), idx in pairs.items():
        if registry.is_derived(str(operation), str(workload)):
            mask[idx] = True
    return mask


def workload_costs(
    frame: pd.DataFrame,
    catalog: Catalog,
    spec: Shape,
    *,
    include_warmups: bool = False,
    sizes: Mapping[str, Shape] | None = None,
) -> pd.DataFrame:
    """Cost of one workload iteration per provider (see the module docstring).

    Columns: provider, workload, iterations, billed_p50_s, usd_p50, usd_mean, usd_total.
    """
    columns = [
        "provider",
        "workload",
        "iterations",
        "billed_p50_s",
        "usd_p50",
        "usd_mean",
        "usd_total",
    ]
    if frame.empty:
        return pd.DataFrame([], columns=columns)
    mask = (frame["status"] == str(Status.OK)).to_numpy(dtype=bool, copy=True)
    if not include_warmups:
        mask &= ~frame["warmup"].to_numpy(dtype=bool)
    mask &= ~_derived_mask(frame)
    ok = frame.loc[mask, ["run_id", "provider", "workload", "iteration", "duration_s"]]
    if ok.empty:
        return pd.DataFrame([], columns=columns)
    per_iteration = ok.groupby(
        ["run_id", "provider", "workload", "iteration"], observed=True, sort=False
    )["duration_s"].sum()
    rows = []
    for (provider, workload), seconds in per_iteration.groupby(
        level=["provider", "workload"], observed=True, sort=True
    ):
        pricing = catalog.get(str(provider))
        values = seconds.to_numpy(dtype=np.float64)
        if pricing is None or not pricing.priced:
            billed = values
            rate = float("nan")
        else:
            billed = np.array([pricing.billed_seconds(v) for v in values])
            rate = pricing.usd_per_s(pricing.shape_for((sizes or {}).get(str(provider), spec)))
        usd = billed * rate
        rows.append(
            {
                "provider": str(provider),
                "workload": str(workload),
                "iterations": int(values.size),
                "billed_p50_s": float(np.quantile(billed, 0.5)),
                "usd_p50": float(np.quantile(usd, 0.5)),
                "usd_mean": float(usd.mean()),
                "usd_total": float(usd.sum()),
            }
        )
    rows.sort(key=lambda r: sort_key(r["provider"], r["workload"], ""))
    return pd.DataFrame(rows, columns=columns)


# -- session scenarios ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionScenario:
    """An agent session (see the module docstring for how each provider is billed)."""

    hours: float = setting(
        4.0, help="length of one agent session", unit="h", minimum=0.001, maximum=8760
    )
    active_fraction: float = setting(
        0.15, help="share of the session the agent is working (not idle)", minimum=0, maximum=1
    )
    checkpoints: int = setting(4, help="checkpoints taken per session", minimum=0, maximum=10_000)
    resumes: int = setting(4, help="pauses and resumes per session", minimum=0, maximum=10_000)
    disk_gib: float = setting(
        5.0, help="disk the session keeps", unit="GiB", minimum=0, maximum=100_000
    )
    snapshot_gib: float = setting(
        1.0, help="size of one checkpoint", unit="GiB", minimum=0, maximum=100_000
    )
    sessions_per_day: float = setting(
        6.0,
        help="agent sessions a day (for the daily and monthly cost)",
        minimum=0.001,
        maximum=10_000_000,
    )
    concurrency: int = setting(
        1,
        help="agent sessions running at once (checked against plan limits)",
        minimum=1,
        maximum=1_000_000,
    )

    def __post_init__(self) -> None:
        checks = {
            "hours": self.hours > 0 and math.isfinite(self.hours),
            "active_fraction": 0 <= self.active_fraction <= 1,
            "checkpoints": isinstance(self.checkpoints, int) and self.checkpoints >= 0,
            "resumes": isinstance(self.resumes, int) and self.resumes >= 0,
            "disk_gib": self.disk_gib >= 0 and math.isfinite(self.disk_gib),
            "snapshot_gib": self.snapshot_gib >= 0 and math.isfinite(self.snapshot_gib),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"session scenario: invalid {name} {getattr(self, name)!r}")

    def describe(self) -> str:
        return (
            f"{self.hours:g} h session, active {self.active_fraction:.0%} of the time, "
            f"{self.checkpoints} checkpoint(s), {self.resumes} resume(s), "
            f"{self.disk_gib:g} GiB on disk, {self.snapshot_gib:g} GiB per checkpoint; "
            f"{self.sessions_per_day:g} session(s) a day, {self.concurrency} at once"
        )


@dataclass(frozen=True, kw_only=True)
class SessionCost:
    provider: str
    shape: Shape
    active_h: float
    idle_billed: bool
    transition_s: float
    compute_h: float
    compute_usd: float
    storage_usd: float
    #: compute_usd split by what is priced: vCPUs, memory, a flat per-sandbox rate.
    cpu_usd: float = 0.0
    memory_usd: float = 0.0
    sandbox_usd: float = 0.0
    #: None when the provider publishes no snapshot price (left out of total_usd).
    snapshot_usd: float | None
    total_usd: float
    wait_s: float
    assumptions: tuple[str, ...]


#: The roles whose measured p50 the scenario uses, under the names :func:`session_cost` reads.
SCENARIO_ROLES: tuple[Role, ...] = (
    Role.CHECKPOINT,
    Role.PAUSE,
    Role.RESUME,
    Role.FIRST_EXEC_AFTER_RESUME,
)


def scenario_latencies(summary: pd.DataFrame, provider: str) -> dict[str, float]:
    """p50 seconds of the operations the scenario needs, for one provider (missing if not
    measured or withheld), keyed by role: the first declaring workload that measured it."""
    result: dict[str, float] = {}
    rows = summary[summary["provider"] == provider]
    for role in SCENARIO_ROLES:
        for workload, op in registry.with_role(role):
            match = rows[(rows["workload"] == workload) & (rows["operation"] == op.name)]
            if not match.empty and np.isfinite(match["p50_s"].iloc[0]):
                result[str(role)] = float(match["p50_s"].iloc[0])
                break
    return result


def wake_latency_s(
    frame: pd.DataFrame, provider: str, min_idle_s: float, *, include_warmups: bool = False
) -> float | None:
    """p50 of the wake (the operation declared with the ``wake`` role) after at least
    ``min_idle_s`` of idle time: the wake of a provider that sleeps on idle. None below the
    median's minimum n."""
    if frame.empty:
        return None
    for workload, op in registry.with_role(Role.WAKE):
        if op.after_idle not in frame.columns:
            continue
        mask = (
            (frame["provider"] == provider)
            & (frame["workload"] == workload)
            & (frame["operation"] == op.name)
            & (frame["status"] == str(Status.OK))
            & (frame[op.after_idle] >= min_idle_s)
        )
        if not include_warmups:
            mask &= ~frame["warmup"].astype(bool)
        values = np.sort(frame.loc[mask, "duration_s"].to_numpy(dtype=np.float64))
        if supports(values.size, 50):
            return percentile(values, 50)
    return None


#: How a session's cost says it counted a missing time as 0 s.
COUNTED_AS_ZERO = "not measured, so counted as 0 s and the cost is a lower bound"


def session_cost(
    pricing: ProviderPricing,
    scenario: SessionScenario,
    spec: Shape,
    latencies_s: Mapping[str, float] | None = None,
    *,
    size_source: str = "the run's spec",
) -> SessionCost:
    """One provider's cost of ``scenario`` (see the module docstring for the rules).

    ``spec`` is the sandbox's own size and ``size_source`` where it came from (the run's
    spec, the provider's declared template, the probe's measurement); a provider that bills
    a fixed shape is billed at that instead."""
    latencies_s = dict(latencies_s or {})
    shape = pricing.shape_for(spec)
    notes = []
    if pricing.billed_shape is not None:
        notes.append(f"billed at the fixed {shape.describe()} shape ({pricing.shape_note})")
    else:
        notes.append(f"billed at {size_source}, {shape.describe()}")

    def p50(name: str) -> float:
        if name in latencies_s:
            return latencies_s[name]
        return 0.0

    active_h = scenario.hours * scenario.active_fraction
    idle_h = scenario.hours - active_h
    if pricing.idle == "auto_sleep":
        idle_billed = False
        notes.append("idle time is not billed: the provider sleeps the sandbox when idle")
    elif pricing.idle in ("pause", "stop") and scenario.resumes > 0:
        idle_billed = pricing.paused_pays == "full"
        state = "paused" if pricing.idle == "pause" else "stopped"
        notes.append(
            f"the agent {'pauses' if pricing.idle == 'pause' else 'stops'} the sandbox in its "
            f"{scenario.resumes} idle gap(s); a {state} sandbox pays {pricing.paused_pays}"
        )
    else:
        idle_billed = True
        if pricing.idle == "none":
            notes.append("idle time is billed: the sandbox cannot sleep")
        else:
            notes.append("idle time is billed: with no resumes the sandbox is never paused")
    # Billed transitions: each checkpoint; each pause and resume when the agent pauses;
    # each wake when the provider sleeps the sandbox by itself.
    used: list[tuple[str, int]] = [("checkpoint", scenario.checkpoints)]
    if pricing.idle == "auto_sleep":
        used.append(("resume", scenario.resumes))
    elif pricing.idle in ("pause", "stop") and scenario.resumes > 0:
        used += [("pause", scenario.resumes), ("resume", scenario.resumes)]
    transitions_s = sum(count * p50(name) for name, count in used)
    missing = sorted({name for name, count in used if count and name not in latencies_s})
    if missing:
        notes.append(f"{COUNTED_AS_ZERO}: " + ", ".join(missing))
    compute_h = active_h + (idle_h if idle_billed else 0.0) + transitions_s / 3600.0
    compute_s = compute_h * 3600.0
    cpu_usd = compute_s * pricing.cpu_usd_per_vcpu_s * shape.cpus
    memory_usd = compute_s * pricing.memory_usd_per_gib_s * shape.memory_gib
    sandbox_usd = compute_s * pricing.sandbox_usd_per_s
    compute_usd = cpu_usd + memory_usd + sandbox_usd
    storage_usd = 0.0
    for tier in pricing.storage:
        billable_gib = max(0.0, scenario.disk_gib - tier.free_gib)
        if tier.billed == "always":
            hours = scenario.hours
        elif tier.billed == "running":
            hours = compute_h
        else:
            hours = 0.0
        storage_usd += billable_gib * hours * tier.usd_per_gib_h
    snapshot_gib_h = scenario.snapshot_gib * scenario.hours * scenario.checkpoints / 2.0
    if scenario.checkpoints == 0 or scenario.snapshot_gib == 0:
        snapshot_usd: float | None = 0.0
    elif pricing.snapshot_usd_per_gib_h is None:
        snapshot_usd = None
        notes.append("snapshot storage price not published: left out of the total")
    else:
        snapshot_usd = snapshot_gib_h * pricing.snapshot_usd_per_gib_h
    total = compute_usd + storage_usd + (snapshot_usd or 0.0)
    sleeps = pricing.idle == "auto_sleep" or (
        pricing.idle in ("pause", "stop") and scenario.resumes > 0
    )
    wait_s = scenario.checkpoints * p50("checkpoint")
    if sleeps:
        wait_s += scenario.resumes * (p50("resume") + p50("first_exec_after_resume"))
    return SessionCost(
        provider=pricing.provider,
        shape=shape,
        active_h=active_h,
        idle_billed=idle_billed,
        transition_s=transitions_s,
        compute_h=compute_h,
        compute_usd=compute_usd,
        storage_usd=storage_usd,
        cpu_usd=cpu_usd,
        memory_usd=memory_usd,
        sandbox_usd=sandbox_usd,
        snapshot_usd=snapshot_usd,
        total_usd=total,
        wait_s=wait_s,
        assumptions=tuple(notes),
    )


def session_costs(
    catalog: Catalog,
    scenario: SessionScenario,
    spec: Shape,
    providers: Sequence[str],
    summary: pd.DataFrame | None = None,
    frame: pd.DataFrame | None = None,
    *,
    include_warmups: bool = False,
) -> list[SessionCost]:
    """The scenario on every provider of the run that the catalog prices.

    For a provider that sleeps on idle, its "resume" is its measured wake after at least the
    provider's ``sleeps_after_s`` of idle (shorter idles never slept).
    """
    result = []
    for provider in providers:
        pricing = catalog.get(provider)
        if pricing is None:
            continue
        latencies = scenario_latencies(summary, provider) if summary is not None else {}
        if pricing.idle == "auto_sleep" and frame is not None:
            latencies.pop("resume", None)
            if pricing.sleeps_after_s is not None:
                wake = wake_latency_s(
                    frame, provider, pricing.sleeps_after_s, include_warmups=include_warmups
                )
                if wake is not None:
                    latencies["resume"] = wake
        result.append(session_cost(pricing, scenario, spec, latencies))
    return result


def format_usd(value: float | None) -> str:
    """Dollars with enough digits for sub-cent amounts (one operation costs micro-dollars)."""
    if value is None or not math.isfinite(value):
        return "–"
    if value == 0:
        return "$0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"${value:,.0f}"
    if magnitude >= 1:
        return f"${value:.2f}"
    if magnitude >= 0.01:
        return f"${value:.3f}"
    # Three significant figures for small amounts, e.g. $0.0000123.
    digits = -math.floor(math.log10(magnitude)) + 2
    return f"${value:.{digits}f}"


def format_usd_range(low: float, high: float) -> str:
    """ "$0.043–$0.44", or one amount when both ends print the same; "$0.12 – ?" when the
    upper end is unknown."""
    if not math.isfinite(high):
        return f"{format_usd(low)} – ?"
    a, b = format_usd(low), format_usd(high)
    return a if a == b else f"{a}–{b}"


def describe_latency(seconds: float | None) -> str:
    return format_duration(seconds)
