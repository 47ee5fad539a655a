"""Cost model: what measured operations, workloads and agent sessions cost on each provider.

Costs are computed at report time from the raw results and the pricing catalog
(``providers/pricing.toml``), never stored in results: a price change means running the report
again. Every amount is in US dollars (``_usd``); durations are seconds (``_s``) or hours
(``_h``); sizes are GiB (``_gib``).

Assumptions (the report prints them next to the numbers):

* **Size.** A sandbox's billed size is the provider's fixed ``billed_shape`` when the catalog
  has one (Sprites bill 8 vCPU / 4 GB whenever active), else the run's spec (``cpus``,
  ``memory_mb`` read as MiB). Vendors' "GB" of RAM is read as GiB.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.records import Status
from bench.stats import format_duration, percentile, sort_key, supports
from bench.workloads import registry
from bench.workloads.shape import Role
from providers.settings import setting

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


@dataclass(frozen=True, kw_only=True, slots=True)
class StorageTier:
    name: str
    usd_per_gib_h: float
    billed: str
    free_gib: float
    #: The rate as the vendor writes it, e.g. "$0.50 per GB-month".
    display: str
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class ProviderPricing:
    """One provider's catalog entry, normalised to per-second and per-GiB-hour rates."""

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


@dataclass(frozen=True, kw_only=True)
class Catalog:
    providers: Mapping[str, ProviderPricing]
    hours_per_month: float
    path: Path
    currency: str = "USD"

    def get(self, provider: str) -> ProviderPricing | None:
        return self.providers.get(provider)


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


def _storage_per_gib_h(usd: float, per: str, hours_per_month: float, where: str) -> float:
    if per not in _STORAGE_UNITS:
        raise CatalogError(f"{where}: unknown storage unit {per!r}")
    return usd / hours_per_month if per.endswith("_month") else usd


def _parse_provider(pid: str, entry: Mapping[str, Any], hours_per_month: float) -> ProviderPricing:
    where = f"pricing catalog [providers.{pid}]"
    compute = entry.get("compute")
    if not isinstance(compute, Mapping) or not compute:
        raise CatalogError(f"{where}: needs a compute table")
    per_s = {"cpu": 0.0, "memory": 0.0, "sandbox": 0.0}
    rate_rows = []
    for item, rate in compute.items():
        if not isinstance(rate, Mapping):
            raise CatalogError(f"{where}: compute.{item} must be a table")
        usd = _number(rate, "usd", f"{where} compute.{item}")
        per = rate.get("per")
        if per not in _COMPUTE_UNITS:
            raise CatalogError(f"{where}: compute.{item} has unknown unit {per!r}")
        resource, seconds = _COMPUTE_UNITS[per]
        per_s[resource] += usd / seconds
        rate_rows.append((item, f"{_money(usd)} per {_unit_label(per)}"))
    shape = entry.get("billed_shape")
    billed_shape = None
    if shape is not None:
        billed_shape = Shape(
            cpus=_number(shape, "cpus", f"{where} billed_shape"),
            memory_gib=_number(shape, "memory_gib", f"{where} billed_shape"),
        )
    tiers = []
    for i, tier in enumerate(entry.get("storage", [])):
        tw = f"{where} storage[{i}]"
        usd = _number(tier, "usd", tw)
        per = str(tier.get("per", ""))
        tiers.append(
            StorageTier(
                name=str(tier.get("name", f"storage {i}")),
                usd_per_gib_h=_storage_per_gib_h(usd, per, hours_per_month, tw),
                billed=_choice(tier, "billed", STORAGE_BILLED, tw),
                free_gib=_number(tier, "free_gib", tw, default=0.0),
                display=f"{_money(usd)} per {_unit_label(per)}",
                note=str(tier.get("note", "")),
            )
        )
        rate_rows.append((f"storage: {tiers[-1].name}", tiers[-1].display))
    snap = entry.get("snapshot_storage") or {}
    snapshot_rate = None
    snapshot_display = "not published"
    if "usd" in snap:
        sw = f"{where} snapshot_storage"
        usd = _number(snap, "usd", sw)
        per = str(snap.get("per", ""))
        snapshot_rate = _storage_per_gib_h(usd, per, hours_per_month, sw)
        snapshot_display = f"{_money(usd)} per {_unit_label(per)}"
    rate_rows.append(("snapshot storage", snapshot_display))
    for key in ("source", "checked"):
        if not str(entry.get(key, "")).strip():
            raise CatalogError(f"{where}: missing {key!r}")
    return ProviderPricing(
        provider=pid,
        display_name=str(entry.get("display_name", pid)),
        billing_basis=_choice(entry, "billing_basis", BILLING_BASES, where),
        basis_note=str(entry.get("basis_note", "")),
        cpu_usd_per_vcpu_s=per_s["cpu"],
        memory_usd_per_gib_s=per_s["memory"],
        sandbox_usd_per_s=per_s["sandbox"],
        billed_shape=billed_shape,
        shape_note=str(entry.get("shape_note", "")),
        granularity_s=_number(entry, "granularity_s", where),
        minimum_s=_number(entry, "minimum_s", where),
        idle=_choice(entry, "idle", IDLE_MODES, where),
        paused_pays=_choice(entry, "paused_pays", PAUSED_PAYS, where),
        paused_note=str(entry.get("paused_note", "")),
        sleeps_after_s=(
            _number(entry, "sleeps_after_s", where) if "sleeps_after_s" in entry else None
        ),
        storage=tuple(tiers),
        snapshot_usd_per_gib_h=snapshot_rate,
        snapshot_display=snapshot_display,
        snapshot_note=str(snap.get("note", "")),
        plans=str(entry.get("plans", "")),
        source=str(entry["source"]),
        checked=str(entry["checked"]),
        superseded=str(entry.get("superseded", "")),
        rate_rows=tuple(rate_rows),
    )


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
        providers["local"] = replace(
            base,
            sandbox_usd_per_s=local_rate_usd_per_hour / 3600.0,
            cpu_usd_per_vcpu_s=0.0,
            memory_usd_per_gib_s=0.0,
            rate_rows=(
                ("sandbox", f"{_money(local_rate_usd_per_hour)} per sandbox-hour"),
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


def operation_costs(summary: pd.DataFrame, catalog: Catalog, spec: Shape) -> pd.DataFrame:
    """Cost of one operation at its measured p50 and p95, per summary row.

    Columns: provider, workload, operation, shape, usd_per_hour, p50_usd, p95_usd, mean_usd,
    priced (False when the catalog has no entry for the provider).
    """
    rows = []
    for row in summary.to_dict("records"):
        pricing = catalog.get(row["provider"])
        if pricing is None:
            rate = float("nan")
            shape = spec
        else:
            shape = pricing.shape_for(spec)
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
                "priced": pricing is not None,
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
    frame: pd.DataFrame, catalog: Catalog, spec: Shape, *, include_warmups: bool = False
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
        if pricing is None:
            billed = values
            rate = float("nan")
        else:
            billed = np.array([pricing.billed_seconds(v) for v in values])
            rate = pricing.usd_per_s(pricing.shape_for(spec))
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
            f"{self.disk_gib:g} GiB on disk, {self.snapshot_gib:g} GiB per checkpoint"
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


def session_cost(
    pricing: ProviderPricing,
    scenario: SessionScenario,
    spec: Shape,
    latencies_s: Mapping[str, float] | None = None,
) -> SessionCost:
    """One provider's cost of ``scenario`` (see the module docstring for the rules)."""
    latencies_s = dict(latencies_s or {})
    shape = pricing.shape_for(spec)
    notes = []
    if pricing.billed_shape is not None:
        notes.append(f"billed at the fixed {shape.describe()} shape ({pricing.shape_note})")
    else:
        notes.append(f"billed at the run's spec, {shape.describe()}")

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
        notes.append("not measured in this run, so billed as 0 s: " + ", ".join(missing))
    compute_h = active_h + (idle_h if idle_billed else 0.0) + transitions_s / 3600.0
    compute_usd = compute_h * 3600.0 * pricing.usd_per_s(shape)
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


def describe_latency(seconds: float | None) -> str:
    return format_duration(seconds)
