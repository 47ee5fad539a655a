"""A burst of 100 creates from this one machine against an emulator that adds 100 ms.

Goals (issue 6): schedule lag p99 under 10 ms, and the measured create p50 within 10 % of the
truth (100 ms). The e2b emulator (its SDK has the least client-side cost of the three: one
HTTP request per create) runs on its stub backend with ``--latency-mode total``: it handles
each create at once and sends the answer exactly 100 ms after the request reached it, so the
server's time *is* the truth, whatever its own work; and on uvloop, the fastest loop it can
take, so its own ingest of 100 requests at once is as short as it gets. Variants:

* ``test_burst_workload``: the ``burst`` workload (size 100) through
  :class:`bench.runner.Runner`, as ``sandbox-bench run`` runs it: creates released at one
  instant, each sandbox's first exec as soon as its create returns, then the destroys.
* ``test_burst_split``: the same through ``sandbox-bench run --cluster local:2`` with
  ``clients = 2``: two worker processes of this machine release 50 creates each, on one
  timeline (bench/cluster.py).
* ``test_creates_only[e2b-sdk]``: the ``burst`` workload with ``first_exec = false``: only
  the 100 creates (then the destroys), no first execs competing for the client.
* ``test_creates_only[raw-http]``: the same with a bare aiohttp POST instead of the SDK: the
  harness's open-loop release and timing with the leanest Python client, i.e. the floor of
  this machine.

Each round's figures are in ``extra_info`` (medians over rounds, and the worst round); the
one-process variants add a decomposition from the emulator's call log on the same monotonic
clock: when requests reached the server (``arrive``), when it answered (``answered``, arrival
+ 100 ms), the server's own excess over the 100 ms (``server_own``, near 0 in total mode), and
the client's time after the answer. The two variants with first execs watch the client's
loop (``watch_loop = true``): ``loop_delay_max_ms`` is the longest it kept ready work waiting
(bench/workloads/open_loop.py, ``_LoopDelay``, which costs the median create 1.3-3 ms here and
is therefore off in the creates-only variants that carry the goal).

Run: ``.venv/bin/pytest benchmarks/test_burst_bench.py --benchmark-only -o addopts=""
-p no:cacheprovider -s``.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from bench.calibration import LatencyModel
from bench.cluster import ClusterExecutor
from bench.config import build_config
from bench.emulators.control import emulator_args, running
from bench.records import RunStatus
from bench.runner import MemorySink, Recorder, Runner, WorkItem
from bench.session import run_session
from bench.store import load_run
from bench.workloads import WORKLOADS
from providers.base import Capabilities, Op, Sandbox, SandboxSpec

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulators need root"),
    pytest.mark.timeout(600),
]

SIZE = 100
LATENCY_S = 0.100
CREATE = ("POST", "/v2/sandboxes")
GOAL_LAG_P99_S = 0.010
GOAL_P50_ERROR = 0.10
ROUNDS = 5


class RawHTTP:
    """Just enough of a provider for a create burst: one aiohttp POST per create, no SDK."""

    id = "raw"

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"X-API-KEY": token}
        self.session: aiohttp.ClientSession | None = None

    def capabilities(self) -> Capabilities:
        return Capabilities(operations=frozenset({Op.CREATE, Op.DESTROY}))

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def create(self, spec: SandboxSpec) -> Sandbox:
        assert self.session is not None
        body = {"templateID": "base", "timeout": 300, "metadata": dict(spec.labels)}
        async with self.session.post(
            f"{self.url}/v2/sandboxes", json=body, headers=self.headers
        ) as answer:
            data = await answer.json()
        return Sandbox(id=data["sandboxID"], provider=self.id)

    async def destroy(self, sandbox: Sandbox) -> None:
        assert self.session is not None
        async with self.session.delete(
            f"{self.url}/sandboxes/{sandbox.id}", headers=self.headers
        ) as answer:
            await answer.read()


class Env:
    def __init__(self, loop, emulator, sdk, raw, folder: Path) -> None:
        self.loop = loop
        self.emulator = emulator
        self.providers = {"e2b-sdk": sdk, "raw-http": raw}
        self.folder = folder

    def run(self, coro):
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from providers.e2b import E2BProvider

    loop = asyncio.new_event_loop()
    options = emulator_args(
        latency=LatencyModel(fixed_s=LATENCY_S),
        latency_match=" ".join(CREATE),
        latency_mode="total",
        backend="stub",
        seed=1,
    )
    context = running(
        "e2b", tmp_path_factory.mktemp("e2b-emu"), extra_args=[*options, "--loop", "uvloop"]
    )
    emulator = loop.run_until_complete(context.__aenter__())
    saved = {k: os.environ.get(k) for k in emulator.client_env()}
    os.environ.update(emulator.client_env())
    sdk = E2BProvider({})
    raw = RawHTTP(emulator.url, emulator.token)
    loop.run_until_complete(sdk.open())
    loop.run_until_complete(raw.open())
    try:
        yield Env(loop, emulator, sdk, raw, tmp_path_factory.mktemp("burst-runs"))
    finally:
        loop.run_until_complete(sdk.close())
        loop.run_until_complete(raw.close())
        left = loop.run_until_complete(emulator.live_sandboxes())
        loop.run_until_complete(context.__aexit__(None, None, None))
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        loop.close()
        assert left == [], f"the emulator still holds {len(left)} sandboxes"


async def _burst(
    provider, *, first_exec: bool, watch_loop: bool = False
) -> tuple[MemorySink, int, float]:
    """One iteration of the ``burst`` workload (size 100) through the runner, as
    ``sandbox-bench run`` runs it on one machine."""
    params = {"size": SIZE, "first_exec": first_exec, "watch_loop": watch_loop}
    sink = MemorySink()
    recorder = Recorder(sink, run_id=f"burst-{uuid.uuid4().hex[:8]}", concurrency=1)
    runner = Runner(
        providers={"e2b": provider},
        workloads={"burst": WORKLOADS["burst"](params)},
        spec=SandboxSpec(),
        recorder=recorder,
        timeout_s=30.0,
    )
    # The runner collects and freezes the heap first; the workload pauses the collector.
    started = time.thread_time()
    await runner.run([WorkItem(provider="e2b", workload="burst", iteration=0, warmup=False)])
    # The whole iteration: every create (and first exec), then every destroy.
    return sink, recorder.origin_ns, time.thread_time() - started


async def _burst_workload(provider) -> tuple[MemorySink, int, float]:
    # The SDK's own cost is the story here: watch the client's loop (see _LoopDelay).
    return await _burst(provider, first_exec=True, watch_loop=True)


async def _creates_only(provider) -> tuple[MemorySink, int, float]:
    return await _burst(provider, first_exec=False)


def _client_figures(creates: list) -> dict[str, float]:
    assert len(creates) == SIZE and all(s.status == "ok" for s in creates)
    lag = np.sort([s.actual_start_s - s.intended_start_s for s in creates])
    durations = np.sort([s.duration_s for s in creates])
    delays = [s.extra.get("client_loop_delay_s") for s in creates if s.extra]
    ms = 1e3
    figures = {
        "lag_p50_ms": np.percentile(lag, 50) * ms,
        "lag_p99_ms": np.percentile(lag, 99) * ms,
        "create_p50_ms": np.percentile(durations, 50) * ms,
        "create_p95_ms": np.percentile(durations, 95) * ms,
    }
    if any(d is not None for d in delays):
        figures["loop_delay_max_ms"] = max(d for d in delays if d is not None) * ms
    return figures


def _server_figures(calls: list[dict], *, due_s: float | None) -> dict[str, float]:
    mine = [c for c in calls if (c["method"], c["path"]) == CREATE]
    assert len(mine) == SIZE
    ms = 1e3
    figures = {
        "server_own_p50_ms": np.percentile([c["answered_s"] - c["added_s"] for c in mine], 50) * ms,
    }
    if due_s is not None:
        arrive = np.sort([c["at"] - due_s for c in mine])
        answered = np.sort([c["at"] + c["answered_s"] - due_s for c in mine])
        figures["arrive_p50_ms"] = np.percentile(arrive, 50) * ms
        figures["arrive_max_ms"] = arrive[-1] * ms
        figures["answered_p50_ms"] = np.percentile(answered, 50) * ms
    return figures


def _report(benchmark, rounds: list[dict[str, float]], *, client: str, label: str) -> None:
    summary = {key: float(np.median([r[key] for r in rounds])) for key in rounds[0]}
    summary["worst_lag_p99_ms"] = max(r["lag_p99_ms"] for r in rounds)
    summary["worst_create_p50_ms"] = max(r["create_p50_ms"] for r in rounds)
    if "answered_p50_ms" in summary:
        summary["client_after_answer_p50_ms"] = (
            summary["create_p50_ms"] - summary["answered_p50_ms"]
        )
    p50_error = summary["create_p50_ms"] / (LATENCY_S * 1e3) - 1
    benchmark.extra_info.update(
        {k: round(v, 2) for k, v in summary.items()},
        true_p50_ms=LATENCY_S * 1e3,
        p50_error=round(p50_error, 3),
        goal_lag_p99_ms=GOAL_LAG_P99_S * 1e3,
        goal_p50_error=GOAL_P50_ERROR,
        goal_met=bool(
            summary["lag_p99_ms"] < GOAL_LAG_P99_S * 1e3 and abs(p50_error) <= GOAL_P50_ERROR
        ),
        client=client,
        rounds=len(rounds),
    )
    parts = [
        f"lag p50 {summary['lag_p50_ms']:.1f} ms p99 {summary['lag_p99_ms']:.1f} ms (worst "
        f"round {summary['worst_lag_p99_ms']:.1f})",
        f"create p50 {summary['create_p50_ms']:.1f} ms ({p50_error:+.1%} vs 100 ms; worst "
        f"round {summary['worst_create_p50_ms']:.1f}), p95 {summary['create_p95_ms']:.1f} ms",
        f"server's own time over the 100 ms p50 {summary['server_own_p50_ms']:.2f} ms",
    ]
    if "arrive_p50_ms" in summary:
        parts.append(
            f"requests reach the server at p50 {summary['arrive_p50_ms']:.1f} ms (last "
            f"{summary['arrive_max_ms']:.1f}), answered p50 {summary['answered_p50_ms']:.1f} ms, "
            f"client after the answer p50 {summary['client_after_answer_p50_ms']:.1f} ms"
        )
    if "loop_delay_max_ms" in summary:
        parts.append(f"client loop delay max {summary['loop_delay_max_ms']:.1f} ms")
    if "client_cpu_ms_per_sandbox" in summary:
        parts.append(
            f"client CPU {summary['client_cpu_ms_per_sandbox']:.2f} ms per sandbox (whole "
            "iteration, destroys included)"
        )
    print(f"\n{label}, {client}: " + "; ".join(parts))


def _measure(benchmark, env: Env, name: str, burst, *, label: str) -> None:
    provider = env.providers[name]
    rounds: list[dict[str, float]] = []

    def one_round() -> None:
        env.run(env.emulator.clear_calls())
        sink, origin_ns, cpu_s = env.run(burst(provider))
        creates = [s for s in sink.samples if s.operation == "create"]
        due_s = origin_ns / 1e9 + creates[0].intended_start_s
        figures = _client_figures(creates)
        figures.update(_server_figures(env.run(env.emulator.calls()), due_s=due_s))
        figures["client_cpu_ms_per_sandbox"] = cpu_s / SIZE * 1e3
        rounds.append(figures)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    _report(benchmark, rounds[1:], client=name, label=label)  # the warmup round is dropped


def test_burst_workload(benchmark, env):
    _measure(
        benchmark,
        env,
        "e2b-sdk",
        _burst_workload,
        label="burst workload (create, first exec, destroy), one process",
    )


def test_burst_split(benchmark, env):
    """``sandbox-bench run --cluster local:2`` with ``clients = 2``: two worker processes."""
    config = build_config(
        {"workloads": {"burst": {"size": SIZE, "clients": 2, "watch_loop": True}}},
        {
            "providers": "e2b",
            "workloads": "burst",
            "iterations": ROUNDS - 1,
            "warmup": 1,
            "cluster": "local:2",
            "output": env.folder,
            "timeout_s": 30,
            "seed": 1,
        },
    )
    runs: list[Path] = []

    def whole_run() -> None:
        env.run(env.emulator.clear_calls())
        folder, status = env.run(run_session(config, ClusterExecutor(config)))
        assert status is RunStatus.COMPLETED
        runs.append(folder)

    # One run of ROUNDS iterations (the first a warmup), with the cluster started once.
    benchmark.pedantic(whole_run, rounds=1, warmup_rounds=0)
    run = load_run(runs[0])
    calls = env.run(env.emulator.calls())
    creates = [c for c in calls if (c["method"], c["path"]) == CREATE]
    rounds = []
    for iteration in range(ROUNDS - 1):
        mine = [
            s
            for s in run.samples
            if s.operation == "create" and not s.warmup and s.iteration == iteration
        ]
        rounds.append(_client_figures(mine))
    # The server's own excess over the truth, over every measured create of the run.
    measured = creates[SIZE:]  # the warmup iteration's creates come first
    server_own = np.percentile([c["answered_s"] - c["added_s"] for c in measured], 50) * 1e3
    for figures in rounds:
        figures["server_own_p50_ms"] = server_own
    _report(
        benchmark,
        rounds,
        client="e2b-sdk",
        label="burst workload split over 2 processes (--cluster local:2, clients = 2)",
    )


@pytest.mark.parametrize("client", ["e2b-sdk", "raw-http"])
def test_creates_only(benchmark, env, client):
    _measure(benchmark, env, client, _creates_only, label="creates only, one process")
