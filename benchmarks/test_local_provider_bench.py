"""Speed of the ``local`` provider's operations against the goals of issue 2 (p50 on a
2-core machine): create to ready <= 30 ms, exec of ``true`` <= 2 ms, pause and resume <= 1 ms,
checkpoint of 50 MiB of dirty files <= 100 ms; restore reported.

Run: ``make bench`` or ``.venv/bin/pytest benchmarks/test_local_provider_bench.py
--benchmark-only -o addopts="" -p no:cacheprovider`` (pytest-benchmark prints the median
column; that is the p50 to hold against the goals).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from providers import provider_class
from providers.base import RUN_LABEL, SandboxSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local provider needs root")
SPEC = SandboxSpec(labels={RUN_LABEL: "bench"})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    loop = asyncio.new_event_loop()
    provider = provider_class("local")({"state_dir": str(tmp_path_factory.mktemp("state"))})
    loop.run_until_complete(provider.open())
    sandbox = loop.run_until_complete(provider.create(SPEC))
    yield loop, provider, sandbox
    loop.run_until_complete(provider.destroy(sandbox))
    loop.run_until_complete(provider.close())
    loop.close()


def test_create_to_ready(benchmark, env):
    loop, provider, _ = env
    made = []

    async def create_and_first_exec():
        sandbox = await provider.create(SPEC)
        made.append(sandbox)
        return await provider.exec(sandbox, ["true"], timeout_s=30)

    def teardown():
        while made:
            loop.run_until_complete(provider.destroy(made.pop()))

    result = benchmark.pedantic(
        lambda: loop.run_until_complete(create_and_first_exec()),
        teardown=teardown,
        rounds=40,
        warmup_rounds=3,
    )
    assert result.exit_code == 0


def test_exec_true(benchmark, env):
    loop, provider, sandbox = env
    result = benchmark.pedantic(
        lambda: loop.run_until_complete(provider.exec(sandbox, ["true"], timeout_s=30)),
        rounds=300,
        warmup_rounds=10,
    )
    assert result.exit_code == 0


def test_pause(benchmark, env):
    loop, provider, sandbox = env
    benchmark.pedantic(
        lambda: loop.run_until_complete(provider.pause(sandbox)),
        teardown=lambda: loop.run_until_complete(provider.resume(sandbox)),
        rounds=200,
        warmup_rounds=5,
    )


def test_resume(benchmark, env):
    loop, provider, sandbox = env
    benchmark.pedantic(
        lambda: loop.run_until_complete(provider.resume(sandbox)),
        setup=lambda: loop.run_until_complete(provider.pause(sandbox)),
        rounds=200,
        warmup_rounds=5,
    )


def _dirty(loop, provider, sandbox, mib: int) -> None:
    files = max(mib, 1)
    script = (
        "rm -rf /root/state && mkdir -p /root/state && "
        f"for i in $(seq {files}); do head -c {mib * 1024 * 1024 // files} /dev/urandom "
        "> /root/state/f$i; done"
    )
    result = loop.run_until_complete(provider.exec(sandbox, script, timeout_s=60))
    assert result.exit_code == 0


@pytest.mark.parametrize("mib", [1, 50])
def test_checkpoint(benchmark, env, mib):
    loop, provider, sandbox = env
    _dirty(loop, provider, sandbox, mib)
    refs = []

    def checkpoint():
        refs.append(loop.run_until_complete(provider.checkpoint(sandbox)))

    def teardown():
        while refs:
            loop.run_until_complete(provider.delete_checkpoint(refs.pop()))

    benchmark.pedantic(checkpoint, teardown=teardown, rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("mib", [1, 50])
def test_restore_to_first_exec(benchmark, env, mib):
    loop, provider, sandbox = env
    _dirty(loop, provider, sandbox, mib)
    ref = loop.run_until_complete(provider.checkpoint(sandbox))
    made = []

    async def restore():
        restored = await provider.restore(ref)
        made.append(restored)
        return await provider.exec(restored, ["true"], timeout_s=30)

    def teardown():
        while made:
            loop.run_until_complete(provider.destroy(made.pop()))

    result = benchmark.pedantic(
        lambda: loop.run_until_complete(restore()), teardown=teardown, rounds=15, warmup_rounds=2
    )
    loop.run_until_complete(provider.delete_checkpoint(ref))
    assert result.exit_code == 0
