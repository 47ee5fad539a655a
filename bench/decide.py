"""Ranking rules of the report's decision section: ranks that only separate what the data
separate.

Pure functions; the report (bench/report/decision.py) gathers the inputs.

**Latency.** Providers are ranked on the median of the scenario's latency. Two providers are
*separated* when the 95 % interval of the ratio of their medians (slower / faster,
:func:`bench.stats.compare_samples`, seeded per pair) lies wholly above 1; otherwise they are
*tied*. **Cost.** Each provider's monthly cost is a range (every sourced rate, every billing
reading, the measured times at their interval's ends); two providers are separated when one's
whole range lies below the other's by more than :data:`COST_TOLERANCE` (1 %: published rates
carry two or three significant figures), tied otherwise.

**Ranks.** A provider's rank is 1 + the number of providers separated from it and better
(faster, or cheaper over the whole range). So providers that no one beats share rank 1, two
providers tied with each other share a rank whenever the same providers beat both, and a gap
in the numbers (1, 1, 3) says how many are clearly ahead. Separation need not be transitive
(A ties B, B ties C, A beats C): then B keeps A's rank and C is ranked behind A alone; every
pair's own verdict is listed too (:attr:`Ranking.pairs`), so nothing is read into a rank
that the pair's interval does not say.

**Withheld.** Nothing is ranked on latency from fewer than :data:`MIN_N_RANK` successful
samples (the ratio's interval needs 10 a side for its measured coverage), from a loopback
emulator (it measures the emulator), or from vendor claims; nothing is ranked on cost without
a price (a self-hosted provider without a host price), when no published plan allows the
scenario, or when a time the cost needs was neither measured nor claimed (its range has no
upper end) unless that provably cannot change a rank (:func:`rank_ranges`). Each withheld
provider carries its reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench import stats

#: Successful samples a provider needs before it is ranked on latency.
MIN_N_RANK = stats.MIN_N_RATIO
#: Cost ranges closer than this (relative) are not separated: published rates carry two or
#: three significant figures, so a smaller difference is within their rounding.
COST_TOLERANCE = 0.01


@dataclass(frozen=True, kw_only=True, slots=True)
class Span:
    """A value with its lower and upper ends (an interval or a range); ``mid`` is the point
    estimate. ``high`` may be ``inf`` where the upper end is unknown."""

    low: float
    mid: float
    high: float

    def __post_init__(self) -> None:
        if not (self.low <= self.mid <= self.high):
            raise ValueError(f"span out of order: {self.low} <= {self.mid} <= {self.high}")

    @classmethod
    def point(cls, value: float) -> Span:
        return cls(low=value, mid=value, high=value)

    def scaled(self, factor: float) -> Span:
        if factor == 0:  # none of something costs nothing, however open its range
            return Span.point(0.0)
        return Span(low=self.low * factor, mid=self.mid * factor, high=self.high * factor)

    @property
    def open(self) -> bool:
        """The upper end is unknown (``inf``)."""
        return math.isinf(self.high)

    def opened(self) -> Span:
        """This span with its upper end unknown."""
        return Span(low=self.low, mid=self.mid, high=math.inf)

    def __add__(self, other: Span) -> Span:
        return Span(low=self.low + other.low, mid=self.mid + other.mid, high=self.high + other.high)

    def below(self, other: Span, tolerance: float = 0.0) -> bool:
        """The whole of this span lies below the whole of ``other`` (by more than
        ``tolerance``, relative)."""
        return self.high * (1.0 + tolerance) < other.low

    @property
    def is_point(self) -> bool:
        return self.low == self.high


@dataclass(frozen=True, kw_only=True, slots=True)
class Pair:
    """One pair's verdict: ``better`` is ahead of ``worse`` by ``ratio`` (worse / better), with
    its 95 % interval (latency) or the two ranges (cost)."""

    better: str
    worse: str
    ratio: float
    low: float
    high: float
    separated: bool


@dataclass(frozen=True, kw_only=True)
class Ranking:
    """Ranks of the providers that could be ranked, every pair's verdict, and why the others
    were not ranked."""

    #: provider -> rank (1 is best), ranked providers only, best first.
    ranks: Mapping[str, int]
    pairs: tuple[Pair, ...]
    withheld: Mapping[str, str] = field(default_factory=dict)

    def tied_with(self, provider: str) -> tuple[str, ...]:
        """The ranked providers not separated from ``provider``."""
        out = []
        for p in self.pairs:
            if not p.separated and provider in (p.better, p.worse):
                out.append(p.worse if p.better == provider else p.better)
        return tuple(sorted(out, key=lambda q: (self.ranks.get(q, 0), q)))

    def pair(self, a: str, b: str) -> Pair | None:
        for p in self.pairs:
            if {p.better, p.worse} == {a, b}:
                return p
        return None

    def leader(self) -> str | None:
        return next(iter(self.ranks), None)


def dominance_ranks(
    order: Sequence[str], separated_better: Callable[[str, str], bool]
) -> dict[str, int]:
    """rank(b) = 1 + #{a : a is separated from b and better}; ``order`` is best-first by the
    point estimate, which breaks nothing but the listing order of equal ranks."""
    ranks = {b: 1 + sum(1 for a in order if a != b and separated_better(a, b)) for b in order}
    return dict(sorted(ranks.items(), key=lambda kv: (kv[1], order.index(kv[0]))))


def rank_latency(
    samples: Mapping[str, np.ndarray],
    *,
    seed: int,
    key: Sequence[object] = (),
    withheld: Mapping[str, str] | None = None,
) -> Ranking:
    """Rank providers on the median of their sorted ``samples`` (see the module docstring).

    Providers with fewer than :data:`MIN_N_RANK` samples are withheld; ``withheld`` adds
    providers withheld for other reasons (emulated, not measured). ``key`` goes into each
    pair's seed so two scenarios' comparisons draw independently.
    """
    out_withheld = dict(withheld or {})
    eligible = {}
    for provider, values in samples.items():
        if provider in out_withheld:
            continue
        if values.size < MIN_N_RANK:
            out_withheld[provider] = (
                f"{values.size} successful sample(s); ranking needs {MIN_N_RANK}"
                if values.size
                else "no successful samples"
            )
            continue
        eligible[provider] = np.sort(np.asarray(values, dtype=np.float64))
    order = sorted(eligible, key=lambda p: (stats.percentile(eligible[p], 50), p))
    pairs = []
    verdict: dict[tuple[str, str], bool] = {}
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            result = stats.compare_samples(
                eligible[a], eligible[b], seed=stats.group_seed(seed, "decide", *key, a, b)
            )
            separated = result.computed and result.ci_low > 1.0
            verdict[(a, b)] = separated
            pairs.append(
                Pair(
                    better=a,
                    worse=b,
                    ratio=result.ratio,
                    low=result.ci_low,
                    high=result.ci_high,
                    separated=separated,
                )
            )
    ranks = dominance_ranks(order, lambda a, b: verdict.get((a, b), False))
    return Ranking(ranks=ranks, pairs=tuple(pairs), withheld=out_withheld)


def rank_ranges(
    spans: Mapping[str, Span],
    *,
    withheld: Mapping[str, str] | None = None,
    open_high: Mapping[str, str] | None = None,
    tolerance: float = COST_TOLERANCE,
) -> Ranking:
    """Rank providers on ranges where lower is better: separated only when one range lies
    wholly below the other, by more than ``tolerance`` (see the module docstring).

    ``open_high`` names the providers whose range has no known upper end (a cost that needs a
    time nobody measured or claimed), each with the reason; their span in ``spans`` is the
    known part (the unknown counted at its least). Such a provider is ranked, with an open
    upper end, only when the unknown part provably cannot change any rank: counting the known
    part alone it is separated ahead of no one (a higher upper end only removes separations
    ahead of others, and its own rank depends on its lower end alone). Otherwise it is
    withheld with the reason.
    """
    out_withheld = dict(withheld or {})
    candidates = {p: s for p, s in spans.items() if p not in out_withheld}
    for provider, reason in (open_high or {}).items():
        known = candidates.get(provider)
        if known is None:
            continue
        ahead = [q for q, s in candidates.items() if q != provider and known.below(s, tolerance)]
        if ahead:
            out_withheld[provider] = reason
    eligible = {
        p: (s.opened() if p in (open_high or {}) else s)
        for p, s in candidates.items()
        if p not in out_withheld
    }
    order = sorted(eligible, key=lambda p: (eligible[p].mid, eligible[p].high, p))
    pairs = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            sa, sb = eligible[a], eligible[b]
            ratio = sb.mid / sa.mid if sa.mid > 0 else math.inf
            pairs.append(
                Pair(
                    better=a,
                    worse=b,
                    ratio=ratio,
                    low=sa.high,
                    high=sb.low,
                    separated=sa.below(sb, tolerance),
                )
            )
    ranks = dominance_ranks(order, lambda a, b: eligible[a].below(eligible[b], tolerance))
    return Ranking(ranks=ranks, pairs=tuple(pairs), withheld=out_withheld)


__all__ = [
    "MIN_N_RANK",
    "Pair",
    "Ranking",
    "Span",
    "dominance_ranks",
    "rank_latency",
    "rank_ranges",
]
