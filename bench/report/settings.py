"""What a report includes, and what it overrides of the runs' own configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any

from bench import scenarios as scenarios_mod
from bench.cost import SessionScenario
from bench.report.registry import section_names
from providers.settings import parse


@dataclass(frozen=True, kw_only=True)
class ReportSettings:
    """Settings of one report; every bad value is a ValueError with a one-line message.

    By default a report prices and costs each run the way it was run: the pricing catalog and
    local rate of its ``[pricing]`` table, the session scenario of its ``[scenario]`` table
    (defaults for runs that have none). The fields below override them for this report.
    """

    #: Count warmup iterations in every statistic.
    include_warmups: bool = False
    #: Seed of every bootstrap interval in the report.
    seed: int = 0
    #: Pricing catalog instead of the runs' ``[pricing] catalog`` (default providers/pricing.toml).
    pricing_path: Path | None = None
    #: Price of a local (self-hosted) sandbox-hour instead of the runs' own.
    local_rate_usd_per_hour: float | None = None
    #: Vendor claims file; None means providers/claims.toml.
    claims_path: Path | None = None
    #: Session scenario keys (:class:`bench.cost.SessionScenario`) set over each run's own
    #: (the persistent_agent scenario's).
    scenario: Mapping[str, Any] = field(default_factory=dict)
    #: Named scenario tables (bench/scenarios.py) set over the runs' own, as in
    #: ``[scenario.NAME]``: a built-in's keys, or a new scenario with its ``kind``.
    scenarios: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The report's date, for the 90-day price check (default: today).
    as_of: date | None = None
    #: The sections to show (names from :func:`bench.report.registry.section_names`), in
    #: report order whatever the order given; None shows every section.
    sections: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.include_warmups, bool):
            raise ValueError(f"include_warmups must be true or false, got {self.include_warmups!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"report seed must be a non-negative integer, got {self.seed!r}")
        rate = self.local_rate_usd_per_hour
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"local rate must be a number of USD per hour, got {rate!r}")
            if not math.isfinite(rate) or rate < 0:
                raise ValueError(
                    f"local rate must be a non-negative USD amount per hour, got {rate}"
                )
        for name in ("pricing_path", "claims_path"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str | Path) or not str(value):
                raise ValueError(f"{name} must be a file path, got {value!r}")
            if not Path(value).is_file():
                raise ValueError(f"{name} {value} is not a file")
            object.__setattr__(self, name, Path(value))
        if not isinstance(self.scenario, Mapping):
            raise ValueError(f"scenario must be a table of scenario keys, got {self.scenario!r}")
        parse(SessionScenario, self.scenario, where="scenario")  # SettingError is a ValueError
        object.__setattr__(self, "scenario", MappingProxyType(dict(self.scenario)))
        if not isinstance(self.scenarios, Mapping) or not all(
            isinstance(v, Mapping) for v in self.scenarios.values()
        ):
            raise ValueError(
                f"scenarios must be a table of scenario tables, got {self.scenarios!r}"
            )
        if self.scenario and scenarios_mod.SESSION in self.scenarios:
            raise ValueError(
                f"set the persistent agent's keys in scenario or in "
                f"scenarios[{scenarios_mod.SESSION!r}], not both"
            )
        scenarios_mod.parse_scenarios(dict(self.scenarios), where="scenario")
        object.__setattr__(
            self,
            "scenarios",
            MappingProxyType(
                {str(k): MappingProxyType(dict(v)) for k, v in self.scenarios.items()}
            ),
        )
        if self.as_of is not None and not isinstance(self.as_of, date):
            raise ValueError(f"as_of must be a date, got {self.as_of!r}")
        if self.sections is not None:
            if isinstance(self.sections, str) or not all(isinstance(s, str) for s in self.sections):
                raise ValueError(f"sections must be a list of names, got {self.sections!r}")
            known = section_names()
            unknown = [s for s in self.sections if s not in known]
            if unknown:
                raise ValueError(
                    f"unknown report section(s) {', '.join(unknown)} (known: {', '.join(known)})"
                )
            object.__setattr__(self, "sections", tuple(s for s in known if s in self.sections))

    def shows(self, section: str) -> bool:
        return self.sections is None or section in self.sections


__all__ = ["ReportSettings"]
