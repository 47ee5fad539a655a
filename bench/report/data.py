"""Everything a report's sections read, computed once: :class:`ReportData`.

Sections take one ``ReportData`` and read what they need from it; each derived table
(statistics, costs, claim verdicts, comparisons) is a cached property, computed the first time
a section asks for it (pytest-benchmark's ``stats.py`` declares its statistics the same way),
so a report restricted to a few sections computes only what they show.

What is checked when it is built, before anything is written: the pricing catalog and the
scenarios each run was made with (its manifest's ``config.pricing``, ``config.scenarios`` and,
for runs made before named scenarios existed, the flat ``config.scenario``: the persistent
agent's keys; runs made before any was recorded have the defaults), the report's overrides of
them, and the claims file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from bench import claims as claims_mod
from bench import cost, stats
from bench import scenarios as scenarios_mod
from bench.report import figures
from bench.report.runs import RunSet, capabilities_of, emulated_providers, plan_providers
from bench.report.settings import ReportSettings
from bench.report.views import Figure
from providers.settings import SettingError

T = TypeVar("T")

#: How a report names the catalog shipped with the harness.
DEFAULT_CATALOG_LABEL = "providers/pricing.toml"


@dataclass(frozen=True, kw_only=True)
class PricingChoice:
    """The catalog the report prices with, and where that choice came from."""

    catalog: cost.Catalog
    #: The catalog's name in the report: "providers/pricing.toml" or the path given.
    label: str
    #: Why this catalog: the runs' ``[pricing]``, the default, or set for this report.
    source: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ScenarioChoice:
    """The session scenario the costs use, and where it came from."""

    scenario: cost.SessionScenario
    source: str
    warnings: tuple[str, ...] = ()


def _run_pricing(run_id: str, manifest: Mapping[str, Any]) -> tuple[str | None, float | None]:
    """(catalog path, local rate) of a run's ``[pricing]`` table, None where it set none."""
    pricing = (manifest.get("config") or {}).get("pricing") or {}
    if not isinstance(pricing, Mapping):
        raise ValueError(f"run {run_id}: config.pricing in its manifest is not a table")
    catalog = pricing.get("catalog")
    if catalog is not None and (not isinstance(catalog, str) or not catalog):
        raise ValueError(f"run {run_id}: config.pricing.catalog is not a path: {catalog!r}")
    rate = pricing.get("local_usd_per_hour")
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or rate < 0
    ):
        raise ValueError(
            f"run {run_id}: config.pricing.local_usd_per_hour is not a price: {rate!r}"
        )
    return catalog, None if rate is None else float(rate)


def _catalog_label(path: Path | None) -> str:
    if path is None or Path(path).resolve() == cost.DEFAULT_CATALOG:
        return DEFAULT_CATALOG_LABEL
    return str(path)


def choose_pricing(run_ids: Sequence[str], manifests: Sequence[Mapping[str, Any]],
                   settings: ReportSettings) -> PricingChoice:  # fmt: skip
    """The first run's ``[pricing]`` (or the report's overrides); a warning when the runs
    were priced differently."""
    per_run = [_run_pricing(r, m) for r, m in zip(run_ids, manifests, strict=True)]
    warnings = []
    catalogs = [_catalog_label(Path(c) if c else None) for c, _ in per_run]
    first_catalog, first_rate = per_run[0]
    if settings.pricing_path is not None:
        path: Path | None = settings.pricing_path
        source = "set for this report"
    else:
        path = Path(first_catalog) if first_catalog else None
        source = "the runs' [pricing] catalog" if first_catalog else "the default catalog"
        if path is not None and not path.is_file():
            raise ValueError(
                f"run {run_ids[0]} was priced with the catalog {path}, which is not there now; "
                "give the report a catalog (pricing_path, report --pricing FILE)"
            )
    label = _catalog_label(path)
    if len(set(catalogs)) > 1:
        detail = "; ".join(f"{r}: {c}" for r, c in zip(run_ids, catalogs, strict=True))
        warnings.append(
            f"the runs were priced with different catalogs ({detail}); this report prices "
            f"every run with {label}"
        )
    rates = [r for _, r in per_run]
    rate = settings.local_rate_usd_per_hour
    rate_source = "set for this report (local_rate_usd_per_hour)"
    if rate is None and first_rate is not None:
        rate, rate_source = first_rate, f"the run's [pricing] local_usd_per_hour ({run_ids[0]})"
    if len(set(rates)) > 1:
        shown = "; ".join(
            f"{r}: {'catalog' if x is None else cost.format_usd(x) + '/h'}"
            for r, x in zip(run_ids, rates, strict=True)
        )
        used = "the catalog's" if rate is None else f"{cost.format_usd(rate)}/h"
        warnings.append(
            f"the runs set different local rates ({shown}); this report uses {used} for all"
        )
    catalog = cost.load_catalog(path, local_rate_usd_per_hour=rate, local_rate_source=rate_source)
    return PricingChoice(catalog=catalog, label=label, source=source, warnings=tuple(warnings))


@dataclass(frozen=True, kw_only=True)
class ScenarioSet:
    """Every scenario the report decides for, and where each one's keys came from."""

    scenarios: Mapping[str, scenarios_mod.Scenario]
    sources: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _run_scenarios(run_id: str, manifest: Mapping[str, Any]) -> tuple[dict, bool]:
    """A run's scenarios (built-ins with what it set over them) and whether it set any."""
    config = manifest.get("config") or {}
    named = config.get("scenarios")
    flat = config.get("scenario")
    for key, value in (("scenarios", named), ("scenario", flat)):
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"run {run_id}: config.{key} in its manifest is not a table")
    try:
        if named is not None:
            return scenarios_mod.parse_scenarios(named, where=f"{run_id} scenario"), True
        return scenarios_mod.parse_scenarios(
            flat or {}, where=f"{run_id} scenario"
        ), flat is not None
    except SettingError as exc:
        raise ValueError(f"run {run_id}: {exc}") from None


def choose_scenarios(run_ids: Sequence[str], manifests: Sequence[Mapping[str, Any]],
                     settings: ReportSettings) -> ScenarioSet:  # fmt: skip
    """The first run's scenarios with the report's overrides set over them (its flat
    ``scenario`` keys on the persistent agent, its ``scenarios`` tables by name); a warning
    when the runs were made with different ones."""
    per_run = [_run_scenarios(r, m) for r, m in zip(run_ids, manifests, strict=True)]
    first, recorded = per_run[0]
    overrides: dict[str, Any] = {
        **{k: dict(v) for k, v in settings.scenarios.items()},
        **dict(settings.scenario),
    }
    try:
        chosen = scenarios_mod.parse_scenarios(overrides, where="scenario", base=first)
    except SettingError as exc:
        raise ValueError(str(exc)) from None
    sources = {}
    for name in chosen:
        if name in first and recorded:
            text = f"as run {run_ids[0]} set it"
        elif name in first:
            text = "the defaults: the run set no scenario"
        else:
            text = "set for this report"
        set_here = sorted(settings.scenarios.get(name, {}))
        if name == scenarios_mod.SESSION:
            set_here += sorted(settings.scenario)
        if set_here and name in first:
            text += f", with {', '.join(set_here)} set for this report"
        sources[name] = text
    warnings = []
    tables = [scenarios_mod.to_tables(s) for s, _ in per_run]
    differing = sorted({n for t in tables for n in t if any(o.get(n) != t.get(n) for o in tables)})
    if differing:
        detail = "; ".join(
            f"{name}: "
            + ", ".join(
                f"{r}: {s[name].describe() if name in s else 'not set'}"
                for r, (s, _) in zip(run_ids, per_run, strict=True)
            )
            for name in differing
        )
        warnings.append(
            f"the runs were made with different session scenarios ({detail}); the session "
            f"costs use {run_ids[0]}'s" + (" with this report's overrides" if overrides else "")
        )
    return ScenarioSet(scenarios=chosen, sources=sources, warnings=tuple(warnings))


class ReportData:
    """The loaded runs, the report's settings, and what sections compute from them."""

    def __init__(self, runset: RunSet, settings: ReportSettings, figures_dir: Path) -> None:
        self.runset = runset
        self.settings = settings
        self.figures_dir = figures_dir
        self.frame = runset.frame
        self.include_warmups = settings.include_warmups
        self.seed = settings.seed
        self.manifests = [r.manifest for r in runset.runs]
        self.run_ids = tuple(r.run_id for r in runset.runs)
        #: The last run's manifest: its spec is the one the report costs at.
        self.last = self.manifests[-1]
        # Checked now, before a file is written: a bad catalog or scenario is a one-line error.
        self.pricing = choose_pricing(self.run_ids, self.manifests, settings)
        self.scenario_set = choose_scenarios(self.run_ids, self.manifests, settings)
        session = scenarios_mod.SESSION
        #: The persistent agent's session (the scenario of reports before named scenarios).
        self.scenario_choice = ScenarioChoice(
            scenario=self.scenario_set.scenarios[session].params,
            source=self.scenario_set.sources.get(session, ""),
            warnings=self.scenario_set.warnings,
        )
        self.claim_list = claims_mod.load_claims(settings.claims_path)
        #: The report's date: prices read more than 90 days before it are flagged.
        self.as_of: date = settings.as_of or date.today()
        self._derived: dict[str, Any] = {}

    # -- statistics ---------------------------------------------------------------------------

    @cached_property
    def group_map(self) -> dict[tuple[str, ...], stats.Group]:
        return stats.groups(self.frame, include_warmups=self.include_warmups)

    @cached_property
    def summary(self) -> pd.DataFrame:
        return pd.DataFrame(
            [stats.summarize_group(g, seed=self.seed) for g in self.group_map.values()],
            columns=list(stats.SUMMARY_COLUMNS),
        )

    @cached_property
    def summary_rows(self) -> list[dict[str, Any]]:
        return self.summary.to_dict("records")

    @cached_property
    def by_workload(self) -> dict[str, dict[str, dict[str, stats.Group]]]:
        """workload -> operation -> provider -> group, in display order."""
        out: dict[str, dict[str, dict[str, stats.Group]]] = {}
        for g in self.group_map.values():
            out.setdefault(g.workload, {}).setdefault(g.operation, {})[g.provider] = g
        return out

    def rows_of(self, workload: str) -> list[dict[str, Any]]:
        """Summary rows of one workload, in display order."""
        return [r for r in self.summary_rows if r["workload"] == workload]

    @cached_property
    def pairs(self) -> pd.DataFrame:
        return stats.compare_providers(self.group_map, seed=self.seed)

    # -- the runs ----------------------------------------------------------------------------

    @cached_property
    def providers(self) -> list[str]:
        """Every provider measured or planned, by name."""
        measured = {g.provider for g in self.group_map.values()}
        return sorted(measured | set(plan_providers(self.manifests)))

    @cached_property
    def colors(self) -> dict[str, str]:
        return figures.provider_colors(self.providers)

    @cached_property
    def capabilities(self) -> dict[str, dict[str, Any]]:
        return capabilities_of(self.manifests)

    @cached_property
    def emulated(self) -> set[str]:
        return emulated_providers(self.manifests)

    @property
    def spec_table(self) -> Mapping[str, Any]:
        """The sandbox spec the last run asked for (its manifest's ``spec``)."""
        return self.last.get("spec") or {}

    @cached_property
    def spec(self) -> cost.Shape:
        return cost.spec_shape(self.last.get("spec"))

    # -- costs and claims --------------------------------------------------------------------

    @property
    def catalog(self) -> cost.Catalog:
        return self.pricing.catalog

    @property
    def scenario(self) -> cost.SessionScenario:
        return self.scenario_choice.scenario

    def derived(self, key: str, build: Callable[[ReportData], T]) -> T:
        """What a module this one does not import computes from this data (the decision,
        bench/report/decision.py), built once per report and kept under ``key``."""
        if key not in self._derived:
            self._derived[key] = build(self)
        return self._derived[key]

    @cached_property
    def sizes(self) -> dict[str, scenarios_mod.SizeChoice]:
        """provider -> the size its sandboxes are costed at, and where that came from: measured
        by the probe, else declared, else the spec (:func:`bench.scenarios.sandbox_size`),
        for every provider measured or priced."""
        frame = self.measured_frame()
        out = {}
        for p in sorted(set(self.providers) | set(self.catalog.providers)):
            env = ((self.last.get("providers") or {}).get(p) or {}).get("environment")
            probe, note = scenarios_mod.probe_size(frame, p, emulated=p in self.emulated)
            out[p] = scenarios_mod.sandbox_size(
                self.catalog.get(p), self.spec_table, env, probe=probe, probe_note=note
            )
        return out

    @cached_property
    def operation_costs(self) -> pd.DataFrame:
        shapes = {p: s.shape for p, s in self.sizes.items()}
        return cost.operation_costs(self.summary, self.catalog, self.spec, shapes)

    @cached_property
    def workload_costs(self) -> pd.DataFrame:
        return cost.workload_costs(
            self.frame,
            self.catalog,
            self.spec,
            include_warmups=self.include_warmups,
            sizes={p: s.shape for p, s in self.sizes.items()},
        )

    @cached_property
    def claim_results(self) -> list[claims_mod.ClaimResult]:
        unsupported = {p: dict(c.get("unsupported") or {}) for p, c in self.capabilities.items()}
        results = claims_mod.evaluate_claims(
            [c for c in self.claim_list if c.provider in self.providers],
            self.group_map,
            seed=self.seed,
            unsupported_reasons=unsupported,
            frame=self.frame,
            include_warmups=self.include_warmups,
        )
        return [
            replace(
                r,
                verdict=claims_mod.Verdict.NOT_COMPARABLE,
                reason="measured against a loopback emulator, not the provider's service",
            )
            if r.claim.provider in self.emulated
            else r
            for r in results
        ]

    # -- helpers for sections ----------------------------------------------------------------

    def measured_frame(self) -> pd.DataFrame:
        """The samples the statistics count (warmups left out unless asked for)."""
        if self.include_warmups:
            return self.frame
        return self.frame.loc[~self.frame["warmup"].to_numpy(dtype=bool)]

    def figure(self, fig: figures.FigureFile | None) -> Figure | None:
        return Figure.of(fig)


__all__ = [
    "DEFAULT_CATALOG_LABEL",
    "PricingChoice",
    "ReportData",
    "ScenarioChoice",
    "ScenarioSet",
    "choose_scenarios",
]
