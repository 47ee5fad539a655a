"""Speed of ``providers.local`` against its goals on a 2-core machine (issue 17, item 2):

    create (returns when the agent has answered)       p50 <= 5 ms, p90 <= 1.5 x p50
    create to ready (create + first exec of ``true``)  reported beside it
    exec of ``true``                                    p50 <= 0.9 ms
    pause, resume                                       p50 <= 1 ms each
    checkpoint of 50 MiB of dirty files (ext4)          p50 <= 37 ms
    restore of 50 MiB (+ first exec)                    p50 <= 45 ms
    fork of a sandbox with 1 MiB written, 1 and 4 children, and destroy: reported

Run: ``PYTHONPATH=$PWD .venv/bin/pytest benchmarks/test_local_bench.py --benchmark-only
-p no:cacheprovider -o addopts=""``. pytest-benchmark's ``Median`` column is the p50 to hold
against the goals; each benchmark also carries its goal, its p90, the host's load average
before it ran and whether the goal was met in ``extra_info`` (``--benchmark-json`` keeps them).
The goals are reported, not asserted: other processes on a shared machine move the figures,
and a failed speed goal is a finding, not a broken build.

The kernel's own floor on this VM, measured with a C program doing the same system calls as
a sandbox (directory, four cgroups joined, namespaces, the agent's fork, three overlays,
proc, dev, tmpfs, lo, pivot_root, bounding set): 2.2 ms p50 (1.7-2.6 ms without the
directory and cgroups, by the load); a fork of a 20 MiB process: 1.0 ms to the child
running, of a 1 MiB one 0.23 ms; ``posix_spawn`` of ``true`` with two pipes and a wait:
0.53-0.55 ms. The provider's module docstring says where the rest goes. Each benchmark's
``extra_info`` also says which path built the sandboxes' roots (``pid1_root``: ``native``
when scripts/setup.sh compiled providers/local/sbnative.c, else ``python (why)``) and which
exec agent served (``agent``: ``native`` for the compiled sbagent.c) and which PID 1
(``pid1``: ``native (sb-init)`` for the compiled sbinit.c, exec'd by the zygote). Like a run
(``[run] cpu_latency = "hold"``, bench/cpu_latency.py), the module holds a 0 us CPU wake-up
latency request while it measures (``SANDBOX_BENCH_CPU_LATENCY=system`` measures without it);
``extra_info["cpu_latency_held"]`` says whether it was held.
"""

from __future__ import annotations

import asyncio
import os
import statistics

import pytest

from bench import cpu_latency
from providers.base import RUN_LABEL, SandboxSpec
from providers.local import LocalProvider

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the local provider's full mode needs root"),
    pytest.mark.timeout(600),
]
SPEC = SandboxSpec(labels={RUN_LABEL: "local-bench"})
MIB = 1024 * 1024
_FACTS: dict[str, object] = {}


class Env:
    def __init__(self, loop: asyncio.AbstractEventLoop, provider: LocalProvider) -> None:
        self.loop = loop
        self.provider = provider

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def sh(self, sandbox, command: str):
        result = self.run(self.provider.exec(sandbox, command, timeout_s=60))
        assert result.exit_code == 0, result.stderr
        return result


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    loop = asyncio.new_event_loop()
    provider = LocalProvider({"state_dir": str(tmp_path_factory.mktemp("local-bench"))})
    loop.run_until_complete(provider.open())
    held = cpu_latency.hold(os.environ.get("SANDBOX_BENCH_CPU_LATENCY", "hold"))
    _FACTS["pid1_root"], _FACTS["cpu_latency_held"] = provider.pid1_root, held.held
    _FACTS["agent"], _FACTS["pid1"] = provider.agent, provider.pid1
    yield Env(loop, provider)
    held.release()
    loop.run_until_complete(provider.close())
    loop.close()


@pytest.fixture
def sandbox(env):
    sb = env.run(env.provider.create(SPEC))
    yield sb
    env.run(env.provider.destroy(sb))


def goal(benchmark, *, p50_ms: float | None, p90_over_p50: float | None = None, **extra):
    """Record the goal now; :func:`verdict` adds p90 and the verdict after the run."""
    benchmark.extra_info.update(goal_p50_ms=p50_ms, goal_p90_over_p50=p90_over_p50, **extra)
    # which path built the sandboxes' roots: "native" (sbnative.c) or "python (why)"
    benchmark.extra_info["pid1_root"] = _FACTS.get("pid1_root")
    benchmark.extra_info["agent"] = _FACTS.get("agent")  # "native" (sbagent.c) or "python (why)"
    benchmark.extra_info["pid1"] = _FACTS.get("pid1")  # "native (sb-init)" or "python (why)"
    benchmark.extra_info["cpu_latency_held"] = _FACTS.get("cpu_latency_held")
    benchmark.extra_info["load_before"] = os.getloadavg()[0]


def verdict(benchmark) -> None:
    data = sorted(benchmark.stats.stats.data)
    p50 = statistics.median(data) * 1e3
    p90 = statistics.quantiles(data, n=10, method="inclusive")[8] * 1e3
    info = benchmark.extra_info
    info.update(p50_ms=round(p50, 3), p90_ms=round(p90, 3), load_after=os.getloadavg()[0])
    met = info["goal_p50_ms"] is None or p50 <= info["goal_p50_ms"]
    if info.get("goal_p90_over_p50") is not None:
        met = met and p90 <= info["goal_p90_over_p50"] * p50
    info["goal_met"] = met if info["goal_p50_ms"] is not None else None


def dirty(env: Env, sandbox, mib: int) -> None:
    """(Re)write ``mib`` MiB of fresh data in 1 MiB files under /root/dirty."""
    env.sh(
        sandbox,
        f"mkdir -p /root/dirty && for i in $(seq {mib}); do "
        f"head -c {MIB} /dev/urandom > /root/dirty/f$i; done",
    )


def test_create(benchmark, env):
    made = []

    def teardown():
        while made:
            env.run(env.provider.destroy(made.pop()))

    goal(benchmark, p50_ms=5, p90_over_p50=1.5)
    benchmark.pedantic(
        lambda: made.append(env.run(env.provider.create(SPEC))),
        teardown=teardown,
        rounds=60,
        warmup_rounds=3,
    )
    verdict(benchmark)


def test_create_to_ready(benchmark, env):
    made = []

    async def create_and_first_exec():
        sb = await env.provider.create(SPEC)
        made.append(sb)
        return await env.provider.exec(sb, ["true"], timeout_s=30)

    def teardown():
        while made:
            env.run(env.provider.destroy(made.pop()))

    goal(benchmark, p50_ms=None)
    result = benchmark.pedantic(
        lambda: env.run(create_and_first_exec()), teardown=teardown, rounds=40, warmup_rounds=3
    )
    verdict(benchmark)
    assert result.exit_code == 0


def test_destroy(benchmark, env):
    made = []
    goal(benchmark, p50_ms=None)
    benchmark.pedantic(
        lambda: env.run(env.provider.destroy(made.pop())),
        setup=lambda: made.append(env.run(env.provider.create(SPEC))),
        rounds=40,
        warmup_rounds=2,
    )
    verdict(benchmark)


def test_exec_true(benchmark, env, sandbox):
    goal(benchmark, p50_ms=0.9)
    result = benchmark.pedantic(
        lambda: env.run(env.provider.exec(sandbox, ["true"], timeout_s=30)),
        rounds=300,
        warmup_rounds=10,
    )
    verdict(benchmark)
    assert result.exit_code == 0


def test_pause(benchmark, env, sandbox):
    env.sh(sandbox, "sleep 1000 >/dev/null 2>&1 &")  # one more process to freeze
    goal(benchmark, p50_ms=1)
    benchmark.pedantic(
        lambda: env.run(env.provider.pause(sandbox)),
        teardown=lambda: env.run(env.provider.resume(sandbox)),
        rounds=200,
        warmup_rounds=5,
    )
    verdict(benchmark)


BUSY = (
    "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/counter; sleep 0.01; done' "
    ">/dev/null 2>&1 & nohup sh -c 'while :; do :; done' >/dev/null 2>&1 &"
)


def test_pause_busy(benchmark, env):
    """Pause of a sandbox that forks (a counter loop) and burns CPU (a busy loop)."""
    sandbox = env.run(env.provider.create(SandboxSpec(cpus=0.5, labels=SPEC.labels)))
    try:
        env.sh(sandbox, BUSY)
        goal(benchmark, p50_ms=1)
        benchmark.pedantic(
            lambda: env.run(env.provider.pause(sandbox)),
            teardown=lambda: env.run(env.provider.resume(sandbox)),
            rounds=200,
            warmup_rounds=5,
        )
        verdict(benchmark)
    finally:
        env.run(env.provider.destroy(sandbox))


def test_resume(benchmark, env, sandbox):
    env.sh(sandbox, "sleep 1000 >/dev/null 2>&1 &")
    goal(benchmark, p50_ms=1)
    benchmark.pedantic(
        lambda: env.run(env.provider.resume(sandbox)),
        setup=lambda: env.run(env.provider.pause(sandbox)),
        rounds=200,
        warmup_rounds=5,
    )
    verdict(benchmark)


@pytest.mark.parametrize("mib", [1, 50])
def test_checkpoint(benchmark, env, sandbox, mib):
    refs = []

    def setup():
        dirty(env, sandbox, mib)

    def teardown():
        while refs:
            env.run(env.provider.delete_checkpoint(refs.pop()))

    def checkpoint():
        refs.append(env.run(env.provider.checkpoint(sandbox)))

    goal(benchmark, p50_ms=37 if mib == 50 else None, method=env.provider.checkpoint_method)
    benchmark.pedantic(
        checkpoint, setup=setup, teardown=teardown, rounds=15 if mib == 50 else 30,
        warmup_rounds=1,
    )  # fmt: skip
    verdict(benchmark)


@pytest.mark.parametrize("mib", [1, 50])
def test_restore(benchmark, env, sandbox, mib):
    dirty(env, sandbox, mib)
    ref = env.run(env.provider.checkpoint(sandbox))
    made = []

    async def restore_and_first_exec():
        sb = await env.provider.restore(ref)
        made.append(sb)
        return await env.provider.exec(sb, ["true"], timeout_s=30)

    def teardown():
        while made:
            env.run(env.provider.destroy(made.pop()))

    goal(benchmark, p50_ms=45 if mib == 50 else None, method=env.provider.checkpoint_method)
    try:
        result = benchmark.pedantic(
            lambda: env.run(restore_and_first_exec()), teardown=teardown,
            rounds=15 if mib == 50 else 30, warmup_rounds=1,
        )  # fmt: skip
        verdict(benchmark)
        assert result.exit_code == 0
    finally:
        env.run(env.provider.delete_checkpoint(ref))


@pytest.mark.parametrize("count", [1, 4])
def test_fork(benchmark, env, sandbox, count):
    dirty(env, sandbox, 1)
    made = []

    def teardown():
        while made:
            env.run(env.provider.destroy(made.pop()))

    goal(benchmark, p50_ms=None, method=env.provider.capabilities().fork_method)
    benchmark.pedantic(
        lambda: made.extend(env.run(env.provider.fork(sandbox, count=count))),
        teardown=teardown,
        rounds=15,
        warmup_rounds=1,
    )
    verdict(benchmark)
