"""Vendor claims against measurements.

Claims live in ``providers/claims.toml`` (provider, operation, claimed value, source, date).
Each is judged on the measured **median** (p50) of the matching samples, using the median's
95 % bootstrap interval from :mod:`bench.stats` so that noise alone never turns a claim into
a miss.

Verdict rule:

1. The claim becomes a band of durations: "about X" (``approx``) is [X / 1.25, X × 1.25]
   (a quarter either way, on a ratio scale); "under X" (``at_most``) is [0, X]; "X to Y"
   (``range``) is [X, Y].
2. **not measured** when the run has fewer samples than the median's interval needs (6, the
   stats rule), including none at all or an operation the provider does not support; the reason
   says which (an operation's capabilities are the ones its workload declares). A wake claim
   (``min_idle_s``) counts only samples taken after at least that much idle time (read from
   the extra the operation declares as ``after_idle``), since a shorter idle never let the
   sandbox sleep.
3. **slower** when the whole interval of the median lies above the band; **faster** when it
   lies wholly below the band; otherwise **within** (the interval overlaps the band).

The p95 is shown beside the verdict for context; it does not enter the verdict, since
vendors quote typical (median-like) figures.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import stats
from bench.workloads import registry

DEFAULT_CLAIMS = Path(__file__).resolve().parent.parent / "providers" / "claims.toml"
CLAIMS_SCHEMA_VERSION = 1
#: "About X" means within this factor of X either way.
APPROX_FACTOR = 1.25


class Verdict(StrEnum):
    WITHIN = "within"
    SLOWER = "slower"
    FASTER = "faster"
    NOT_MEASURED = "not measured"
    #: The run measured a stand-in (a loopback emulator), not the provider the claim is about.
    NOT_COMPARABLE = "not comparable"


class ClaimKind(StrEnum):
    APPROX = "approx"
    AT_MOST = "at_most"
    RANGE = "range"


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    provider: str
    operation: str
    workload: str | None
    kind: ClaimKind
    low_s: float
    high_s: float
    quote: str
    source: str
    date: str
    note: str = ""
    #: Judge only samples that followed at least this much idle time (``extra.idle_s``),
    #: for wake claims: a shorter idle never let the sandbox sleep.
    min_idle_s: float | None = None

    @property
    def band_s(self) -> tuple[float, float]:
        """The durations the claim allows (see the module docstring)."""
        if self.kind is ClaimKind.APPROX:
            return (self.low_s / APPROX_FACTOR, self.low_s * APPROX_FACTOR)
        if self.kind is ClaimKind.AT_MOST:
            return (0.0, self.high_s)
        return (self.low_s, self.high_s)

    def describe(self) -> str:
        f = stats.format_duration
        if self.kind is ClaimKind.APPROX:
            return f"~{f(self.low_s)}"
        if self.kind is ClaimKind.AT_MOST:
            return f"< {f(self.high_s)}"
        return f"{f(self.low_s)} – {f(self.high_s)}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ClaimResult:
    claim: Claim
    n: int
    p50_s: float
    p95_s: float
    p50_ci_low_s: float
    p50_ci_high_s: float
    verdict: Verdict
    reason: str


def _positive(entry: Mapping[str, Any], key: str, where: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: {key} must be a number of seconds, got {value!r}")
    if value < 0:
        raise ValueError(f"{where}: {key} must not be negative, got {value}")
    return float(value)


def parse_claim(entry: Mapping[str, Any], where: str = "claim") -> Claim:
    for key in ("provider", "operation", "kind", "quote", "source", "date"):
        if not str(entry.get(key, "")).strip():
            raise ValueError(f"{where}: missing {key!r}")
    try:
        kind = ClaimKind(entry["kind"])
    except ValueError:
        known = ", ".join(k.value for k in ClaimKind)
        raise ValueError(f"{where}: kind must be one of {known}, got {entry['kind']!r}") from None
    if kind is ClaimKind.RANGE:
        low = _positive(entry, "low_s", where)
        high = _positive(entry, "high_s", where)
        if low > high:
            raise ValueError(f"{where}: low_s {low} is above high_s {high}")
    else:
        low = high = _positive(entry, "value_s", where)
    workload = entry.get("workload")
    min_idle = _positive(entry, "min_idle_s", where) if "min_idle_s" in entry else None
    return Claim(
        provider=str(entry["provider"]),
        operation=str(entry["operation"]),
        workload=str(workload) if workload else None,
        kind=kind,
        low_s=low,
        high_s=high,
        quote=str(entry["quote"]),
        source=str(entry["source"]),
        date=str(entry["date"]),
        note=str(entry.get("note", "")),
        min_idle_s=min_idle,
    )


def load_claims(path: Path | None = None) -> list[Claim]:
    path = Path(path) if path is not None else DEFAULT_CLAIMS
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"claims file {path} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"claims file {path}: not valid TOML ({exc})") from None
    if data.get("schema_version") != CLAIMS_SCHEMA_VERSION:
        raise ValueError(
            f"claims file {path}: schema_version {data.get('schema_version')!r} is not "
            f"{CLAIMS_SCHEMA_VERSION}"
        )
    entries = data.get("claims", [])
    if not isinstance(entries, list):
        raise ValueError(f"claims file {path}: 'claims' must be an array of tables")
    return [parse_claim(e, f"claims file {path}, claim {i + 1}") for i, e in enumerate(entries)]


def verdict_for(band_s: tuple[float, float], ci_s: tuple[float, float]) -> Verdict:
    """The verdict rule's step 3 on a band and the median's interval."""
    band_low, band_high = band_s
    ci_low, ci_high = ci_s
    if ci_low > band_high:
        return Verdict.SLOWER
    if ci_high < band_low:
        return Verdict.FASTER
    return Verdict.WITHIN


def evaluate_claims(
    claims: Sequence[Claim],
    group_map: Mapping[tuple[str, ...], stats.Group],
    *,
    seed: int = 0,
    unsupported_reasons: Mapping[str, Mapping[str, str]] | None = None,
    frame: pd.DataFrame | None = None,
    include_warmups: bool = False,
) -> list[ClaimResult]:
    """Judge every claim on the run's groups (from :func:`bench.stats.groups`).

    ``unsupported_reasons`` maps provider -> operation -> reason (the manifest's
    capabilities), used to say why an operation was not measured. Claims with
    ``min_idle_s`` are judged on the samples of ``frame`` that idled at least that long.
    """
    unsupported_reasons = unsupported_reasons or {}
    results = []
    nan = float("nan")
    for claim in claims:
        matching = [
            g
            for g in group_map.values()
            if g.provider == claim.provider
            and g.operation == claim.operation
            and (claim.workload is None or g.workload == claim.workload)
        ]
        values = (
            np.sort(np.concatenate([g.ok_sorted_s for g in matching])) if matching else np.empty(0)
        )
        if claim.min_idle_s is not None:
            values = _after_idle(claim, frame, include_warmups)
        n = int(values.size)
        p50 = stats.percentile(values, 50) if stats.supports(n, 50) else nan
        p95 = stats.percentile(values, 95) if stats.supports(n, 95) else nan
        if n < stats.min_n_for_interval(50):
            reason = _not_measured_reason(claim, matching, n, unsupported_reasons)
            if claim.min_idle_s is not None and matching and n == 0:
                idle = _idle_extra(claim) or "idle"
                where = claim.workload or "its"
                reason = (
                    f"no {claim.operation} samples after {claim.min_idle_s:g} s or more of idle "
                    f"(set the {where} workload's {idle} that high)"
                )
            results.append(
                ClaimResult(
                    claim=claim,
                    n=n,
                    p50_s=p50,
                    p95_s=p95,
                    p50_ci_low_s=nan,
                    p50_ci_high_s=nan,
                    verdict=Verdict.NOT_MEASURED,
                    reason=reason,
                )
            )
            continue
        ci = stats.quantile_ci(values, 50)
        verdict = verdict_for(claim.band_s, ci)
        band = claim.band_s
        results.append(
            ClaimResult(
                claim=claim,
                n=n,
                p50_s=p50,
                p95_s=p95,
                p50_ci_low_s=ci[0],
                p50_ci_high_s=ci[1],
                verdict=verdict,
                reason=(
                    f"median interval {stats.format_interval(*ci)} vs claimed band "
                    f"{stats.format_duration(band[0])} – {stats.format_duration(band[1])}"
                ),
            )
        )
    return results


def _idle_extra(claim: Claim) -> str | None:
    """The extra holding the idle time before ``claim``'s operation, as its workload declares."""
    names = [claim.workload] if claim.workload is not None else list(registry.WORKLOADS)
    for name in names:
        found = registry.find_operation(name, claim.operation)
        if found is not None and found.operation.after_idle is not None:
            return found.operation.after_idle
    return None


def _after_idle(claim: Claim, frame: pd.DataFrame | None, include_warmups: bool) -> np.ndarray:
    column = _idle_extra(claim)
    if frame is None or frame.empty or column is None or column not in frame.columns:
        return np.empty(0)
    mask = (
        (frame["provider"] == claim.provider)
        & (frame["operation"] == claim.operation)
        & (frame["status"] == "ok")
        & (frame[column] >= claim.min_idle_s)
    )
    if claim.workload is not None:
        mask &= frame["workload"] == claim.workload
    if not include_warmups:
        mask &= ~frame["warmup"].astype(bool)
    return np.sort(frame.loc[mask, "duration_s"].to_numpy(dtype=np.float64))


def _not_measured_reason(
    claim: Claim,
    matching: Sequence[stats.Group],
    n: int,
    unsupported_reasons: Mapping[str, Mapping[str, str]],
) -> str:
    reasons = unsupported_reasons.get(claim.provider, {})
    for key in (claim.operation, *registry.capability_needs(claim.workload, claim.operation)):
        if key in reasons:
            return f"unsupported: {key}: {reasons[key]}"
    if not matching:
        where = f"the {claim.workload} workload" if claim.workload else "any workload"
        return f"no {claim.operation} samples for {claim.provider} in {where}"
    if any(g.unsupported for g in matching) and n == 0:
        return "unsupported on this provider"
    if n == 0:
        failures = sum(g.failures for g in matching)
        return f"no successful samples ({failures} failed)"
    return f"n too small (n={n}; the median's interval needs {stats.min_n_for_interval(50)})"
