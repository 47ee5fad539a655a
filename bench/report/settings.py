"""What a report includes, and what it overrides of the runs' own configuration."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

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
    #: Session scenario keys (:class:`bench.cost.SessionScenario`) set over each run's own.
    scenario: Mapping[str, Any] = field(default_factory=dict)
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
