"""The runner: schedules workload iterations; every provider call is timed in one place.

* Every provider call goes through :meth:`IterationContext.timed` (bench/iteration.py, with the
  other types workloads and the runner share; this module re-exports them): one
  ``time.perf_counter_ns`` read on each side of the awaited call, inside a per-operation
  ``asyncio.timeout``.
* Every attempt becomes exactly one :class:`bench.records.Sample`, appended and flushed at
  once. A failure is recorded with its status, error class and a null duration; operations of
  an iteration that could not run after a failure are recorded as ``skipped``; operations a
  provider lacks are recorded as ``unsupported``.
* Iterations of all (provider, workload) pairs run in one seeded random order (warmups first,
  flagged), ``concurrency`` at a time.
* Every sandbox an iteration creates is destroyed in ``finally``, also on Ctrl-C, SIGTERM and
  errors, and written to the run's ledger when created and when destroyed.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.iteration import (
    CLEANUP_ATTEMPTS,
    CLEANUP_BACKOFF_S,
    CLEANUP_MAX_WAIT_S,
    CLEANUP_TIMEOUT_S,
    MAX_ERROR_CHARS,
    CheckFailed,
    IterationContext,
    Recorder,
    SampleSink,
    Share,
    StepFailed,
    WorkItem,
    destroy_gone_ok,
    retry_cleanup,
)
from bench.records import Sample
from bench.workloads.base import Workload
from providers.base import EXPIRES_LABEL, RUN_LABEL, Capabilities, Provider, Sandbox, SandboxSpec


@dataclass
class MemorySink:
    """Keeps samples in memory (tests, benchmarks)."""

    samples: list[Sample] = field(default_factory=list)
    ledger: list[dict[str, Any]] = field(default_factory=list)

    def add_sample(self, sample: Sample) -> None:
        self.samples.append(sample)

    def add_ledger(self, entry: dict[str, Any]) -> None:
        self.ledger.append(entry)


class SecretScrubber:
    """Replaces secret values (from the given environment variables) in free text."""

    def __init__(self, env_names: Iterable[str]) -> None:
        values = {os.environ.get(name, "") for name in env_names}
        self._secrets = sorted((v for v in values if len(v) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def expected_records(workload: Workload, caps: Capabilities) -> int:
    """How many samples one complete iteration of ``workload`` writes on a provider."""
    missing = [op for op in workload.requires if not caps.supports(op)]
    if missing:
        return sum(1 for needs in workload.capability_ops.values() if needs in missing)
    return len(workload.planned_ops(caps))


def remaining_plan(
    plan: Sequence[WorkItem],
    samples: Iterable[Sample],
    *,
    workloads: Mapping[str, Workload],
    capabilities: Mapping[str, Capabilities],
) -> list[WorkItem]:
    """The items of ``plan`` a crashed or interrupted run has not completed, in plan order.

    An item is complete when it has all its records and none says it was interrupted. One
    with some records is run again as a re-run (its samples marked), so the earlier partial
    records stay as what they were: real attempts.
    """
    counts: Counter[tuple[str, str, int, bool]] = Counter()
    interrupted: set[tuple[str, str, int, bool]] = set()
    for sample in samples:
        key = (sample.provider, sample.workload, sample.iteration, sample.warmup)
        counts[key] += 1
        if sample.error_type == "Interrupted":
            interrupted.add(key)
    remaining = []
    for item in plan:
        key = (item.provider, item.workload, item.iteration, item.warmup)
        wanted = expected_records(workloads[item.workload], capabilities[item.provider])
        if counts[key] >= wanted and key not in interrupted:
            continue
        remaining.append(replace(item, rerun=counts[key] > 0))
    return remaining


def make_plan(
    providers: Sequence[str],
    workloads: Sequence[str],
    *,
    iterations: int,
    warmup: int,
    seed: int,
) -> list[WorkItem]:
    """All iterations, warmups first, each group in one seeded random order."""
    rng = random.Random(seed)
    warm = [
        WorkItem(provider=p, workload=w, iteration=i, warmup=True)
        for p in providers
        for w in workloads
        for i in range(warmup)
    ]
    measured = [
        WorkItem(provider=p, workload=w, iteration=i, warmup=False)
        for p in providers
        for w in workloads
        for i in range(iterations)
    ]
    rng.shuffle(warm)
    rng.shuffle(measured)
    return warm + measured


class Runner:
    """Runs a plan of work items against opened providers."""

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        workloads: Mapping[str, Workload],
        spec: SandboxSpec,
        recorder: Recorder,
        timeout_s: float,
        concurrency: int = 1,
        on_item_done: Callable[[WorkItem], None] | None = None,
        admit: Callable[[WorkItem], bool] | None = None,
    ) -> None:
        self.providers = providers
        self.workloads = workloads
        self.spec = spec
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.on_item_done = on_item_done
        #: Asked before each iteration starts (the budget cap); False stops all scheduling.
        self.admit = admit
        self.stopped_by_admit = False
        self.completed: list[WorkItem] = []

    def _spec_for_run(self) -> SandboxSpec:
        expires = datetime.now(UTC) + timedelta(seconds=self.spec.lifetime_s)
        labels = {
            **self.spec.labels,
            RUN_LABEL: self.recorder.run_id,
            EXPIRES_LABEL: f"{expires:%Y%m%dT%H%M%SZ}",
        }
        return SandboxSpec(
            cpus=self.spec.cpus,
            memory_mb=self.spec.memory_mb,
            disk_mb=self.spec.disk_mb,
            template=self.spec.template,
            lifetime_s=self.spec.lifetime_s,
            max_pids=self.spec.max_pids,
            labels=labels,
        )

    async def run_item(self, item: WorkItem, *, share: Share | None = None) -> None:
        """Run one iteration (or, with ``share``, this client's part of it)."""
        provider = self.providers[item.provider]
        workload = self.workloads[item.workload]
        caps = provider.capabilities()
        missing = [op for op in workload.requires if not caps.supports(op)]
        if missing:
            ctx = IterationContext(
                item=item,
                provider=provider,
                spec=self._spec_for_run(),
                recorder=self.recorder,
                timeout_s=self.timeout_s,
                planned=(),
            )
            for operation, needs in workload.capability_ops.items():
                if needs in missing:
                    reason = caps.unsupported.get(str(needs), f"{item.provider} has no {needs}")
                    ctx.record_unsupported(operation, reason)
            return
        ctx = IterationContext(
            item=item,
            provider=provider,
            spec=self._spec_for_run(),
            recorder=self.recorder,
            timeout_s=self.timeout_s,
            planned=(
                workload.planned_ops(caps)
                if share is None
                else workload.planned_share_ops(caps, share)
            ),
            share=share,
        )
        try:
            await workload.run(ctx)
        except StepFailed as exc:
            ctx.record_missing_as_skipped(f"not attempted: {exc} failed earlier in the iteration")
        except asyncio.CancelledError:
            # "Interrupted" also when no call was in flight (a hold, an idle wait): a resume
            # runs such an iteration again (remaining_plan).
            ctx.record_missing_as_skipped(
                "not attempted: the run was interrupted", error_type="Interrupted"
            )
            raise
        else:
            ctx.record_missing_as_skipped("not attempted")
        finally:
            # Runs after a cancellation too: awaiting inside ``finally`` works until a second
            # cancel arrives, and cleanup() itself bounds each destroy with a timeout.
            await ctx.cleanup()

    async def run(self, plan: Sequence[WorkItem]) -> None:
        # A full cyclic GC over everything imported so far (SDKs, pandas) blocks the event loop
        # for 25-90 ms on a 2-core machine, and that pause lands in whatever call is in flight.
        # Collect once now and freeze the survivors: later collections scan only new objects.
        gc.collect()
        gc.freeze()
        try:
            await self._run(plan)
        finally:
            gc.unfreeze()

    async def _run(self, plan: Sequence[WorkItem]) -> None:
        queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        for item in plan:
            queue.put_nowait(item)

        async def worker() -> None:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if self.stopped_by_admit or (self.admit is not None and not self.admit(item)):
                    self.stopped_by_admit = True
                    return
                await self.run_item(item)
                self.completed.append(item)
                if self.on_item_done is not None:
                    self.on_item_done(item)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.concurrency, len(plan)) or 1):
                    group.create_task(worker())
        finally:
            await self.sweep()

    async def sweep(self) -> list[tuple[str, str]]:
        """Destroy anything still labelled with this run (e.g. a create that timed out on our
        side but completed on the provider's). Returns what it found; the ledger keeps it."""
        found: list[tuple[str, str]] = []
        for provider_id, provider in self.providers.items():
            try:
                leftovers = await retry_cleanup(
                    lambda provider=provider: provider.list_sandboxes(self.recorder.run_id)
                )
            except Exception as exc:  # noqa: BLE001 - a failed sweep is reported, not fatal
                self.recorder.sink.add_ledger(
                    {"event": "sweep_failed", "provider": provider_id, "error": repr(exc)}
                )
                continue
            for sandbox_id in leftovers:
                found.append((provider_id, sandbox_id))
                entry = {"provider": provider_id, "sandbox_id": sandbox_id}
                handle = Sandbox(id=sandbox_id, provider=provider_id)
                try:
                    await retry_cleanup(
                        lambda provider=provider, handle=handle: destroy_gone_ok(provider, handle)
                    )
                except Exception as exc:  # noqa: BLE001
                    self.recorder.sink.add_ledger(
                        {"event": "destroy_failed", "by": "sweep", "error": repr(exc), **entry}
                    )
                else:
                    self.recorder.sink.add_ledger({"event": "destroyed", "by": "sweep", **entry})
        return found


__all__ = [
    "CLEANUP_ATTEMPTS",
    "CLEANUP_BACKOFF_S",
    "CLEANUP_MAX_WAIT_S",
    "CLEANUP_TIMEOUT_S",
    "MAX_ERROR_CHARS",
    "CheckFailed",
    "IterationContext",
    "MemorySink",
    "Recorder",
    "Runner",
    "SampleSink",
    "SecretScrubber",
    "Share",
    "StepFailed",
    "WorkItem",
    "destroy_gone_ok",
    "expected_records",
    "make_plan",
    "remaining_plan",
    "retry_cleanup",
]
