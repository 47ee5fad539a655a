"""The runner's own overhead: a timed exec through IterationContext.timed against the same
exec called directly on the adapter. Goal: under 5 % of a local exec.

The difference of two ~1 ms exec means is noisy, so a third benchmark times the runner's
wrapper around a call that does nothing: that is the overhead itself, clock reads, timeout
scope, record building and the flushed write included (to an in-memory sink here; the file
sink adds one buffered write and flush).

Run: ``make bench`` or ``.venv/bin/pytest benchmarks/test_runner_bench.py --benchmark-only
-o addopts="" -p no:cacheprovider``
"""

from __future__ import annotations

import asyncio
import os

import pytest

from bench.runner import IterationContext, MemorySink, Recorder, WorkItem
from bench.workloads.base import exit_zero
from providers import provider_class
from providers.base import RUN_LABEL, SandboxSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")

ROUNDS = 400


@pytest.fixture(scope="module")
def sandbox_env(tmp_path_factory):
    loop = asyncio.new_event_loop()
    provider = provider_class("local")({"state_dir": str(tmp_path_factory.mktemp("state"))})
    loop.run_until_complete(provider.open())
    sandbox = loop.run_until_complete(provider.create(SandboxSpec(labels={RUN_LABEL: "bench"})))
    yield loop, provider, sandbox
    loop.run_until_complete(provider.destroy(sandbox))
    loop.run_until_complete(provider.close())
    loop.close()


def test_direct_adapter_exec(benchmark, sandbox_env):
    loop, provider, sandbox = sandbox_env

    def call():
        return loop.run_until_complete(provider.exec(sandbox, ["true"], timeout_s=30))

    result = benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=20)
    assert result.exit_code == 0


def test_exec_timed_through_the_runner(benchmark, sandbox_env):
    loop, provider, sandbox = sandbox_env
    sink = MemorySink()
    ctx = IterationContext(
        item=WorkItem(provider="local", workload="exec", iteration=0, warmup=False),
        provider=provider,
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="bench", concurrency=1),
        timeout_s=30,
        planned=(),
    )

    def call():
        return loop.run_until_complete(
            ctx.timed(
                "exec_true",
                lambda: provider.exec(sandbox, ["true"], timeout_s=30),
                sandbox=sandbox,
                check=exit_zero,
            )
        )

    result = benchmark.pedantic(call, rounds=ROUNDS, warmup_rounds=20)
    assert result.exit_code == 0
    assert len(sink.samples) == ROUNDS + 20


def test_runner_overhead_around_a_call_that_does_nothing(benchmark):
    loop = asyncio.new_event_loop()
    sink = MemorySink()
    ctx = IterationContext(
        item=WorkItem(provider="local", workload="exec", iteration=0, warmup=False),
        provider=_NoProvider(),
        spec=SandboxSpec(),
        recorder=Recorder(sink, run_id="bench", concurrency=1),
        timeout_s=30,
        planned=(),
    )

    async def nothing():
        return None

    async def many():
        for _ in range(1000):
            await ctx.timed("noop", nothing)

    benchmark.pedantic(lambda: loop.run_until_complete(many()), rounds=20, warmup_rounds=2)
    loop.close()
    assert len(sink.samples) == 22 * 1000


class _NoProvider:
    """Only what IterationContext reads at construction; the timed call touches no provider."""

    def capabilities(self):
        return None
