"""The budget cap: estimate a run's cost before it starts, track what it spends as it runs.

Spending is the time each sandbox the run created has been alive (from the ledger's
``created`` to its ``destroyed`` event, or to now while it is alive) times the catalog's
per-second price of its billed size (``bench.cost``: the run's spec, or the provider's fixed
billed shape), each sandbox's time rounded up to the provider's billing granularity and raised
to its minimum. It is an approximation of the provider's bill, measured on the client.

The estimate before the run cannot know latencies yet, so it assumes each planned operation
keeps one sandbox alive for ``assumed_op_s`` seconds (default 1 s, a cloud-typical figure;
set it in ``[run]``), plus each workload's deliberate waits (pause holds, idle times), and
applies each sandbox's billing minimum once per iteration. The estimate and its assumptions
are printed for every run on a priced provider; a run whose estimate exceeds the cap is
refused before anything is created. During the run the runner asks :meth:`admit` before each
iteration: once the spend so far plus what the iterations in flight and the next one will
probably cost would cross the cap, it schedules nothing more and the manifest says
``budget_exhausted``. "Probably cost" is the larger of the estimate and twice the average
spend per finished iteration so far: the estimate alone may be far off (it is made before any
latency is known), and the factor two is a margin for the variance of one iteration.

Where the sources of a price disagree (a catalog rate with several sourced values), both the
estimate and the spend use the highest of them (``ProviderPricing.at("high")``): a cap is a
promise not to spend more, so it must hold whichever source is right.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.cost import Catalog, ProviderPricing, Shape
from bench.runner import SampleSink, WorkItem
from bench.workloads.base import Workload
from providers.base import Capabilities

DEFAULT_ASSUMED_OP_S = 1.0


@dataclass(frozen=True, kw_only=True)
class Estimate:
    total_usd: float
    per_provider_usd: Mapping[str, float]
    assumed_op_s: float
    unpriced: tuple[str, ...]

    def describe(self) -> str:
        parts = ", ".join(f"{p} ${v:.4f}" for p, v in self.per_provider_usd.items())
        text = (
            f"estimated cost ${self.total_usd:.4f} ({parts}; assuming {self.assumed_op_s:g} s "
            "per operation plus each workload's waits, billing minimums applied)"
        )
        if self.unpriced:
            text += f"; no price in the catalog for {', '.join(self.unpriced)}"
        return text


def highest(catalog: Catalog, provider: str) -> ProviderPricing | None:
    """``provider``'s pricing at the highest of its sourced rates (None: not in the catalog)."""
    pricing = catalog.get(provider)
    return pricing.at("high") if pricing is not None else None


def _rate(pricing: ProviderPricing | None, shape: Shape) -> float:
    return pricing.usd_per_s(pricing.shape_for(shape)) if pricing is not None else 0.0


def item_estimate_usd(
    *,
    workload: Workload,
    caps: Capabilities,
    pricing: ProviderPricing | None,
    shape: Shape,
    assumed_op_s: float,
) -> float:
    if pricing is None:
        return 0.0
    ops = workload.planned_ops(caps)
    creates = max(1, sum(1 for op in ops if op.startswith(("create", "restore"))))
    alive_s = len(ops) * assumed_op_s + workload.waits_s()
    # each sandbox pays its billing minimum at least once
    billed = max(pricing.billed_seconds(alive_s), creates * pricing.minimum_s)
    return billed * _rate(pricing, shape)


class Budget(SampleSink):
    """Wraps the run's sink: passes everything on and keeps the running spend."""

    def __init__(
        self,
        sink: SampleSink,
        *,
        cap_usd: float | None,
        catalog: Catalog,
        shape: Shape,
        item_cost: Mapping[tuple[str, str], float],
    ) -> None:
        self.sink = sink
        self.cap_usd = cap_usd
        self.catalog = catalog
        self.shape = shape
        self.item_cost = item_cost
        self.exhausted = False
        self.admitted = 0
        self.finished = 0
        self._alive: dict[tuple[str, str], float] = {}
        self._closed_usd = 0.0
        self._lock = threading.Lock()
        self._pricing: dict[str, ProviderPricing | None] = {}

    # -- SampleSink --------------------------------------------------------------------------

    def add_sample(self, sample: Any) -> None:
        self.sink.add_sample(sample)

    def add_ledger(self, entry: dict[str, Any]) -> None:
        self.sink.add_ledger(entry)
        key = (str(entry.get("provider")), str(entry.get("sandbox_id")))
        now = time.monotonic()
        with self._lock:
            if entry.get("event") == "created":
                self._alive.setdefault(key, now)
            elif entry.get("event") == "destroyed" and key in self._alive:
                self._closed_usd += self._cost(key[0], now - self._alive.pop(key))

    # -- accounting --------------------------------------------------------------------------

    def _cost(self, provider: str, alive_s: float) -> float:
        if provider not in self._pricing:
            self._pricing[provider] = highest(self.catalog, provider)
        pricing = self._pricing[provider]
        if pricing is None:
            return 0.0
        return pricing.billed_seconds(alive_s) * _rate(pricing, self.shape)

    def spent_usd(self) -> float:
        now = time.monotonic()
        with self._lock:
            open_usd = sum(self._cost(p, now - t) for (p, _), t in self._alive.items())
            return self._closed_usd + open_usd

    def admit(self, item: WorkItem) -> bool:
        """May this iteration start without the run crossing its cap?"""
        if self.cap_usd is None:
            return True
        if self.exhausted:
            return False
        spent = self.spent_usd()
        average = spent / self.finished if self.finished else 0.0
        next_usd = max(self.item_cost[(item.provider, item.workload)], 2 * average)
        in_flight = self.admitted - self.finished
        if spent + next_usd * (in_flight + 1) > self.cap_usd:
            self.exhausted = True
            return False
        self.admitted += 1
        return True

    def done(self, item: WorkItem) -> None:
        """The runner finished ``item`` (its sandboxes are destroyed)."""
        self.finished += 1


@dataclass(kw_only=True)
class Planner:
    """Per (provider, workload) iteration estimates and the run's total."""

    catalog: Catalog
    shape: Shape
    assumed_op_s: float = DEFAULT_ASSUMED_OP_S
    item_cost: dict[tuple[str, str], float] = field(default_factory=dict)

    def budget(self, sink: SampleSink, cap_usd: float | None) -> Budget:
        """The run's spend tracker, priced as this planner estimated."""
        return Budget(
            sink,
            cap_usd=cap_usd,
            catalog=self.catalog,
            shape=self.shape,
            item_cost=self.item_cost,
        )

    def estimate(
        self,
        plan: Sequence[WorkItem],
        workloads: Mapping[str, Workload],
        capabilities: Mapping[str, Capabilities],
    ) -> Estimate:
        per_provider: dict[str, float] = {}
        for item in plan:
            key = (item.provider, item.workload)
            if key not in self.item_cost:
                self.item_cost[key] = item_estimate_usd(
                    workload=workloads[item.workload],
                    caps=capabilities[item.provider],
                    pricing=highest(self.catalog, item.provider),
                    shape=self.shape,
                    assumed_op_s=self.assumed_op_s,
                )
            per_provider[item.provider] = per_provider.get(item.provider, 0.0) + self.item_cost[key]
        unpriced = tuple(sorted({i.provider for i in plan if self.catalog.get(i.provider) is None}))
        return Estimate(
            total_usd=sum(per_provider.values()),
            per_provider_usd=per_provider,
            assumed_op_s=self.assumed_op_s,
            unpriced=unpriced,
        )
