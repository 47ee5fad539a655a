"""One benchmark run across many machines and regions, on Dask.

``sandbox-bench run --cluster tcp://HOST:PORT`` (or ``cluster`` in ``[run]``) makes this
process the *driver*. The run's life is the same as on one machine (:mod:`bench.session`:
plan, resume bookkeeping, estimate, manifest, one run folder with one manifest, one
samples.jsonl, one ledger.jsonl, finalization); :class:`ClusterExecutor` is the session's
executor and holds only what is cluster-specific: admitting workers, placing each planned
iteration on one of them as a task, clock offsets, split shares, lost workers and the sweeps.
Without ``--cluster`` this module is not imported, and neither is Dask.

Workers and locations
---------------------
A worker is ``dask worker tcp://HOST:PORT --nthreads 8 --resources region-fra=1`` on a machine
with sandbox-bench installed (``pip install 'sandbox-bench[cluster,clouds]'``) and the
providers' credentials in *its own* environment; the driver needs none. Its location label is
the name of its Dask resource that starts with ``region-`` (``region-fra`` is location
``fra``; the amount is ignored, because tasks are placed by worker address, never by resource
amounts; a worker with several such resources takes the first by name). A worker without one
is unlabelled. Each worker runs up to ``concurrency`` iterations at once, and never more than
its ``--nthreads`` (Dask runs no more tasks than that on it).

``--cluster local:K`` (``local``: one worker per CPU) needs no scheduler: the driver starts one
and K worker processes on 127.0.0.1 for the run (:func:`local_cluster`) and stops them after,
so one machine can spread a split burst's SDK work over K event loops and cores.

What runs where
---------------
* The driver admits each worker that joins: it measures the worker's clock offset, then a
  task opens the worker's *runtime* for this run: an event loop on a thread of its own (never
  Dask's loop, whose traffic must not share the loop being timed) with the worker's own
  provider clients, opened once. A worker whose providers cannot open (no credentials, no
  SDK) is left out, and the manifest's warnings say why.
* Each planned iteration is one task, pinned to one worker (``workers=[address]``). Without
  ``locations`` the plan is spread over every worker; with ``locations = ["fra", "iad"]`` the
  whole plan runs once from each listed location, on that location's workers.
* Workers stream every record and ledger entry to the driver the moment it is made (Dask
  worker events through the scheduler, in order per worker). Ledger entries are written at
  once, tagged with the worker's host, location and address. An iteration's samples are
  written when its task ends (its result carries them, so each is written exactly once),
  numbered by the driver (sample ids stay unique across workers) and tagged
  ``extra["host"]`` (the worker's hostname); ``location`` is the worker's label.

Bursts across machines
----------------------
``burst`` and ``ramp`` with ``clients = K`` split each iteration into K shares
(bench/workloads/open_loop.py), placed together on K different workers (fewer if fewer are
eligible) when each has a free slot. The driver picks one start instant on its own wall clock
``SPLIT_LEAD_S`` ahead, and each worker turns it into an instant of its own monotonic clock
with its measured offset, so all K clients release their creates together. Each worker turns
the run's origin the same way, so ``intended_start_s`` and ``actual_start_s`` of every worker
lie on one timeline. Clock offsets are measured NTP-style: of ``CLOCK_ROUNDS`` round trips
driver -> scheduler -> worker -> driver, the fastest gives offset = worker clock minus the
midpoint of the driver's clock; its error is at most half that round trip. The manifest keeps
every worker's offset and round trip.

Faults
------
* A worker that dies loses no finished iteration: those are written already. What it had in
  flight is abandoned: the records it had streamed go to ``abandoned.jsonl`` in the run
  folder (with the reason; never mixed into samples.jsonl, so each planned operation keeps
  exactly one record there), and the iteration runs again on another worker of the same
  location (a share of a split burst runs again alone, with a start of its own), its samples
  marked ``extra["rerun"] = True``. The manifest lists every re-run with its reason.
* Every sandbox a worker creates is in the ledger the moment the driver hears of it. When all
  iterations are done, one surviving worker per host destroys what the ledger shows alive on
  that host and what the providers list under the run's label (one worker's sweep covers a
  cloud provider; a host-bound provider such as ``local`` is swept on each host). A sandbox
  left on a host without a surviving worker is named in the manifest's warnings:
  ``sandbox-bench reap RUN`` on that host destroys it (SIGKILL of a worker already takes its
  ``local`` sandboxes down with it; only their folders stay).
* The window between a sandbox's creation and its ledger entry reaching the scheduler is a
  few milliseconds; a sandbox created in it on a machine that dies is still found by the
  sweep's listing by run label.
* Ctrl-C or SIGTERM on the driver stops every worker's iterations as on one machine (the rest
  of each iteration recorded as skipped, everything destroyed within the run's grace, which
  each worker starts when told to stop), then sweeps; the driver waits no longer than the
  grace, and a second signal ends its wait at once. What the ledger still shows alive is
  named in the manifest's ``left_alive`` for ``sandbox-bench reap``.
* Cleanup on the workers is bench/cleanup.py's, as on one machine: one retry policy, one sweep
  (checkpoints included: the ledger has them too).
* ``run --resume RUN`` of a cluster run admits workers again, sweeps on each host what the
  ledger shows the interrupted attempt left alive there (and what the providers list under the
  run's label), then runs, per location, only the iterations without a complete set of
  records (:func:`bench.runner.remaining_plan`); sample ids go on from the largest one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cleanup as cleaning
from bench import cpu_latency, netprobe
from bench.cleanup import Alive, Grace
from bench.config import RunConfig, local_cluster_workers
from bench.records import RunStatus, Sample
from bench.runner import CLEANUP_TIMEOUT_S, Recorder, Runner, SecretScrubber, WorkItem
from bench.session import Execution, Executor, Opened, Plans, UsageError, instantiate_providers
from bench.store import JsonlAppender, ledger_path, load_ledger, utc_now_iso
from bench.workloads import WORKLOADS
from bench.workloads.base import Share, Workload
from bench.workloads.task import TABLE, register_tasks
from providers.base import Provider

#: A worker's location is the name of its Dask resource with this prefix, minus the prefix.
LOCATION_PREFIX = "region-"
#: Round trips per worker for its clock offset; the fastest one counts.
CLOCK_ROUNDS = 7
#: How far ahead of now the driver puts the common start of a split burst or ramp.
SPLIT_LEAD_S = 1.0
CONNECT_TIMEOUT_S = 20.0
#: How long the driver waits at the start for workers (of every listed location).
WORKER_WAIT_S = 30.0
#: How long opening a worker's runtime may take.
ADMIT_TIMEOUT_S = 120.0
#: Queued iterations whose location has had no live worker this long fail.
STRANDED_S = 60.0
#: Attempts of one iteration before it is given up (a worker lost, or the task failed).
MAX_ATTEMPTS = 3
#: A runtime no task has used this long closes itself (a driver that died cannot close it).
RUNTIME_IDLE_S = 900.0
ABANDONED = "abandoned.jsonl"


def location_of(resources: Mapping[str, Any]) -> str | None:
    """The location label in a worker's Dask resources (``region-fra`` -> ``fra``)."""
    labels = sorted(
        name[len(LOCATION_PREFIX) :]
        for name in resources
        if name.startswith(LOCATION_PREFIX) and len(name) > len(LOCATION_PREFIX)
    )
    return labels[0] if labels else None


# -- the worker side -------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """What a worker needs to run its share of one run."""

    run_id: str
    topic: str
    config: RunConfig
    workloads: tuple[str, ...]
    location: str | None
    address: str
    #: The run's origin on the driver's wall clock, and this worker's clock minus the driver's.
    origin_wall_ns: int
    offset_ns: int


_RUNTIMES: dict[str, _Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


class _StreamSink:
    """The Recorder's sink on a worker: streams each record to the driver as it is made."""

    def __init__(self, runtime: _Runtime, attempt: str) -> None:
        self.runtime = runtime
        self.attempt = attempt
        self.samples: list[dict[str, Any]] = []

    def add_sample(self, sample: Sample) -> None:
        record = sample.to_json_dict()
        self.samples.append(record)
        self.runtime.emit({"kind": "sample", "attempt": self.attempt, "sample": record})

    def add_ledger(self, entry: dict[str, Any]) -> None:
        rt = self.runtime
        entry = {
            "at": utc_now_iso(),
            **entry,
            "host": rt.host,
            "location": rt.spec.location,
            "worker": rt.spec.address,
        }
        rt.emit({"kind": "ledger", "attempt": self.attempt, "entry": entry})


class _Runtime:
    """One run on one worker: its own event loop thread and its own provider clients."""

    def __init__(self, spec: RuntimeSpec, worker: Any) -> None:
        self.spec = spec
        self._worker = worker
        self.host = socket.gethostname()
        self.loop = asyncio.new_event_loop()
        self.providers: dict[str, Provider] = {}
        self.workloads: dict[str, Workload] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self.closed = False
        self.last_used = time.monotonic()
        self.origin_ns = 0
        self.scrub: Any = str
        #: Bounds this worker's cleanup once the driver stops the run (started by stop()).
        self.grace = Grace(spec.config.grace_s)
        self._keep: set[asyncio.Task[Any]] = set()
        self._latency: cpu_latency.LatencyHold | None = None
        self._thread = threading.Thread(
            target=self._serve, name=f"sandbox-bench-{spec.run_id}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def emit(self, msg: dict[str, Any]) -> None:
        try:
            self._worker.log_event(self.spec.topic, msg)
        except TypeError:  # not msgpack-able (an odd value in extra): send its JSON form
            self._worker.log_event(self.spec.topic, json.loads(json.dumps(msg, default=str)))

    def perf_at(self, driver_wall_ns: int) -> int:
        """This machine's ``perf_counter_ns`` at the instant the driver's clock reads
        ``driver_wall_ns``."""
        return time.perf_counter_ns() + (driver_wall_ns + self.spec.offset_ns - time.time_ns())

    async def open(self) -> dict[str, Any]:
        providers = instantiate_providers(self.spec.config)
        opened: list[Provider] = []
        try:
            for provider in providers.values():
                await provider.open()
                opened.append(provider)
        except BaseException:
            for provider in opened:
                with contextlib.suppress(Exception):
                    await provider.close()
            raise
        self.providers = providers
        params = self.spec.config.workload_params
        # The driver's configured tasks (task_NAME), as its config resolved them: their files
        # are read at upload from the same paths, checked against the recorded sha256.
        register_tasks(params.get(TABLE, {}), check_files=False)
        self.workloads = {n: WORKLOADS[n](params.get(n, {})) for n in self.spec.workloads}
        self.scrub = SecretScrubber([n for p in providers.values() for n in p.required_env])
        self.origin_ns = self.perf_at(self.spec.origin_wall_ns)
        environments = {pid: p.environment() for pid, p in providers.items()}
        watch = asyncio.get_running_loop().create_task(self._idle_watch())
        self._keep.add(watch)
        network = await netprobe.measure(environments)
        # Held until close(): this worker's iterations run in between (bench/cpu_latency.py).
        self._latency = cpu_latency.hold(self.spec.config.cpu_latency)
        return {
            "host": self.host,
            "pid": os.getpid(),
            "capabilities": {pid: p.capabilities() for pid, p in providers.items()},
            "environments": environments,
            "network": network,
            "cpu_latency": self._latency.facts(),
        }

    def _recorder(self, sink: _StreamSink) -> Recorder:
        return Recorder(
            sink,
            run_id=self.spec.run_id,
            concurrency=self.spec.config.concurrency,
            location=self.spec.location,
            scrub=self.scrub,
            origin_ns=self.origin_ns,
        )

    def _runner(self, recorder: Recorder) -> Runner:
        config = self.spec.config
        return Runner(
            providers=self.providers,
            workloads=self.workloads,
            spec=config.spec,
            recorder=recorder,
            timeout_s=config.timeout_s,
            grace=self.grace,
        )

    async def run_unit(
        self,
        attempt: str,
        item: WorkItem,
        share: tuple[int, int] | None,
        start_wall_ns: int | None,
    ) -> dict[str, Any]:
        self.last_used = time.monotonic()
        if self.stopping or self.closed:
            return {"attempt": attempt, "host": self.host, "samples": [], "interrupted": True}
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        sink = _StreamSink(self, attempt)
        part = None
        if share is not None:
            start = self.perf_at(start_wall_ns) if start_wall_ns is not None else None
            part = Share(index=share[0], count=share[1], start_ns=start)
        self.emit({"kind": "start", "attempt": attempt})
        interrupted = False
        try:
            await self._runner(self._recorder(sink)).run_item(item, share=part)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # The driver stopped the run: the iteration recorded its remaining operations
            # as skipped and destroyed its sandboxes, as on one machine; hand that back.
            interrupted = True
        finally:
            self.tasks.discard(task)
            self.last_used = time.monotonic()
        return {
            "attempt": attempt,
            "host": self.host,
            "samples": sink.samples,
            "interrupted": interrupted,
        }

    def stop(self) -> None:
        """Cancel every iteration in flight, their cleanup within the grace (runs on the
        runtime's loop)."""
        self.stopping = True
        self.grace.start()
        for task in list(self.tasks):
            task.cancel()

    async def sweep(self, alive: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Destroy what the ledger shows alive on this host (ledger entries: sandboxes and
        checkpoints), then what the providers list under the run's label
        (:func:`bench.cleanup.sweep`, as on one machine)."""
        self.last_used = time.monotonic()
        sink = _StreamSink(self, "sweep")
        state = cleaning.alive_from(alive)
        results = await cleaning.sweep(
            self.providers,
            self.spec.run_id,
            sink.add_ledger,
            alive=state,
            policy=cleaning.patient(cleaning.DEFAULT_POLICY),
            grace=self.grace,
        )
        return {
            "destroyed": sum(len(r.destroyed) for r in results),
            "found_by_label": [[r.provider, s] for r in results for s in r.found],
        }

    async def close(self) -> None:
        self.closed = True
        if self._latency is not None:
            self._latency.release()
        for task in self._keep:
            if task is not asyncio.current_task():
                task.cancel()
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        self.providers = {}

    def end(self) -> None:
        """Stop the loop thread (from any other thread; does not wait)."""
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _idle_watch(self) -> None:
        while not self.closed:
            await asyncio.sleep(min(60.0, RUNTIME_IDLE_S))
            if not self.tasks and time.monotonic() - self.last_used > RUNTIME_IDLE_S:
                with _RUNTIMES_LOCK:
                    if _RUNTIMES.get(self.spec.run_id) is self:
                        del _RUNTIMES[self.spec.run_id]
                await self.close()
                self.loop.stop()


def _runtime(run_id: str) -> _Runtime:
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(run_id)
    if runtime is None or runtime.closed:
        raise RuntimeError(f"no sandbox-bench runtime for run {run_id} on this worker")
    return runtime


async def _open_runtime_task(spec: RuntimeSpec) -> dict[str, Any]:
    """Dask task: open this worker's runtime for the run; its facts, or why it cannot."""
    from distributed import get_worker

    runtime = _Runtime(spec, get_worker())
    try:
        facts = await asyncio.wrap_future(runtime.call(runtime.open()))
    except Exception as exc:  # noqa: BLE001 - the driver leaves this worker out and says why
        runtime.end()
        return {"ok": False, "error": str(exc) or type(exc).__name__}
    with _RUNTIMES_LOCK:
        _RUNTIMES[spec.run_id] = runtime
    return {"ok": True, **facts}


async def _unit_task(
    run_id: str,
    attempt: str,
    item: WorkItem,
    share: tuple[int, int] | None,
    start_wall_ns: int | None,
) -> dict[str, Any]:
    """Dask task: one iteration (or one share of a split one) on this worker's runtime."""
    runtime = _runtime(run_id)
    return await asyncio.wrap_future(
        runtime.call(runtime.run_unit(attempt, item, share, start_wall_ns))
    )


async def _sweep_task(run_id: str, alive: list[dict[str, Any]]) -> dict[str, Any]:
    runtime = _runtime(run_id)
    return await asyncio.wrap_future(runtime.call(runtime.sweep(alive)))


def _stop_runtime(run_id: str) -> bool:
    """``Client.run`` target (on the worker's own loop; must not block)."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(run_id)
    if runtime is not None:
        runtime.loop.call_soon_threadsafe(runtime.stop)
    return runtime is not None


async def _close_runtime(run_id: str) -> bool:
    """``Client.run`` target: close the run's provider clients and end its loop thread."""
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.pop(run_id, None)
    if runtime is None:
        return False
    with contextlib.suppress(Exception):
        await asyncio.wrap_future(runtime.call(runtime.close()))
    runtime.end()
    return True


def _wall_ns() -> int:
    return time.time_ns()


# -- the driver side -------------------------------------------------------------------------


@dataclass(eq=False, kw_only=True)
class _Unit:
    """One task's worth of the plan: an iteration, or one share of a split one."""

    key: str
    item: WorkItem
    location: str | None
    share: tuple[int, int] | None
    gang: int
    attempts: int = 0
    done: bool = False
    failed: str | None = None


@dataclass(eq=False, kw_only=True)
class _Worker:
    address: str
    name: str
    ip: str
    location: str | None
    nthreads: int
    state: str = "joining"  # joining, ready, excluded, lost
    hostname: str | None = None
    pid: int | None = None
    offset_ns: int = 0
    rtt_ns: int | None = None
    error: str | None = None
    joined_at: str = field(default_factory=utc_now_iso)
    left_at: str | None = None
    dispatched: int = 0
    capabilities: dict[str, Any] = field(default_factory=dict)
    environments: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    cpu_latency: dict[str, Any] = field(default_factory=dict)
    in_flight: dict[str, _Attempt] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.hostname,
            "ip": self.ip,
            "pid": self.pid,
            "location": self.location,
            "nthreads": self.nthreads,
            "state": self.state,
            "error": self.error,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
            "clock_offset_s": self.offset_ns / 1e9,
            "clock_rtt_s": self.rtt_ns / 1e9 if self.rtt_ns is not None else None,
            "iterations_sent": self.dispatched,
            "providers": {pid: {"environment": env} for pid, env in self.environments.items()},
            "network": self.network,
            "cpu_latency": self.cpu_latency,
        }


@dataclass(eq=False, kw_only=True)
class _Attempt:
    id: str
    unit: _Unit
    worker: _Worker
    future: Any
    started: bool = False
    closed: bool = False
    streamed: list[dict[str, Any]] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None


class ClusterExecutor(Executor):
    """The driver of one run on a Dask cluster: the session's executor for ``cluster``."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.workloads: dict[str, Workload] = {}
        self.client: Any = None
        self.run_id = ""
        self.topic = ""
        self.origin_wall_ns = time.time_ns()
        self.folder: Path | None = None
        self._stack = contextlib.AsyncExitStack()
        self._subscribed = False
        self.workers: dict[str, _Worker] = {}
        self.attempts: dict[str, _Attempt] = {}
        self.units: list[_Unit] = []
        self.queues: dict[str | None, deque[list[_Unit]]] = {}
        self.gang_left: dict[int, int] = {}
        self.stranded_since: dict[str | None, float] = {}
        self.sink: Any = None
        self.budget: Any = None
        self.budget_stopped = False
        self.abandoned: JsonlAppender | None = None
        self.abandoned_count = 0
        self.pending_ledger: list[dict[str, Any]] = []
        #: What the ledger shows alive (each creating entry names its host).
        self.alive = Alive()
        self.grace = Grace(config.grace_s)
        self.reruns: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.split_starts: list[dict[str, Any]] = []
        self.ids = itertools.count(1)
        self.stopping = False
        self.wake = asyncio.Event()
        self.membership_changed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._progress: Any = None
        self.opened = False
        self._membership: asyncio.Task[Any] | None = None

    # -- events from the scheduler ---------------------------------------------------------

    def _on_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if not isinstance(msg, dict):
            return
        kind = msg.get("kind")
        if kind == "ledger":
            self._ledger(dict(msg["entry"]))
            return
        attempt = self.attempts.get(str(msg.get("attempt")))
        if attempt is None or attempt.closed:
            return
        if kind == "sample":
            attempt.streamed.append(msg["sample"])
        elif kind == "start":
            attempt.started = True

    def _on_scheduler_event(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("action") in ("add-worker", "remove-worker"):
            self.membership_changed.set()

    def _ledger(self, entry: dict[str, Any]) -> None:
        self.alive.apply(entry)
        if self.sink is None:
            self.pending_ledger.append(entry)
        else:
            self.sink.add_ledger(entry)

    # -- membership --------------------------------------------------------------------------

    async def _refresh(self) -> None:
        identity = await self.client.scheduler.identity()
        current: dict[str, Any] = identity.get("workers") or {}
        for address, worker in list(self.workers.items()):
            if worker.state in ("joining", "ready") and address not in current:
                self._worker_lost(worker)
        for address, info in current.items():
            if address in self.workers:
                continue
            worker = _Worker(
                address=address,
                name=str(info.get("name")),
                ip=str(info.get("host")),
                location=location_of(info.get("resources") or {}),
                nthreads=int(info.get("nthreads") or 1),
            )
            self.workers[address] = worker
            self._spawn(self._admit(worker))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _membership_loop(self) -> None:
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.membership_changed.wait()
            self.membership_changed.clear()
            try:
                await self._refresh()
                failures = 0
            except (OSError, TimeoutError):
                failures += 1
                if failures >= 30:
                    raise

    async def _clock(self, address: str) -> tuple[int, int]:
        best: tuple[int, int] | None = None
        for _ in range(CLOCK_ROUNDS):
            t0 = time.time_ns()
            answer = await self.client.run(_wall_ns, workers=[address])
            t1 = time.time_ns()
            rtt = t1 - t0
            offset = int(answer[address]) - (t0 + t1) // 2
            if best is None or rtt < best[1]:
                best = (offset, rtt)
        assert best is not None
        return best

    async def _admit(self, worker: _Worker) -> None:
        try:
            worker.offset_ns, worker.rtt_ns = await self._clock(worker.address)
            spec = RuntimeSpec(
                run_id=self.run_id,
                topic=self.topic,
                config=self.config,
                workloads=tuple(self.workloads),
                location=worker.location,
                address=worker.address,
                origin_wall_ns=self.origin_wall_ns,
                offset_ns=worker.offset_ns,
            )
            future = self.client.submit(
                _open_runtime_task,
                spec,
                key=f"sandbox-bench-open-{self.run_id}-{uuid.uuid4().hex[:8]}",
                workers=[worker.address],
                allow_other_workers=False,
                pure=False,
            )
            async with asyncio.timeout(ADMIT_TIMEOUT_S):
                facts = await future
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a worker that cannot join is left out
            facts = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if worker.state != "joining":
            return
        if not facts["ok"]:
            worker.state = "excluded"
            worker.error = str(facts["error"])
            self.warnings.append(
                f"worker {worker.name} ({worker.address}, location {worker.location}) was "
                f"left out: {worker.error}"
            )
        else:
            worker.state = "ready"
            worker.hostname = facts["host"]
            worker.pid = facts["pid"]
            worker.capabilities = facts["capabilities"]
            worker.environments = facts["environments"]
            worker.network = facts["network"]
            worker.cpu_latency = facts.get("cpu_latency", {})
            if worker.nthreads < self.config.concurrency:
                self.warnings.append(
                    f"worker {worker.name} has {worker.nthreads} thread(s): it runs at most "
                    f"that many iterations at once, not concurrency {self.config.concurrency}"
                )
        self.wake.set()

    def _worker_lost(self, worker: _Worker) -> None:
        was_ready = worker.state == "ready"
        worker.state = "lost"
        worker.left_at = utc_now_iso()
        if was_ready and not self.stopping:
            self.warnings.append(
                f"worker {worker.name} ({worker.address}, host {worker.hostname}, location "
                f"{worker.location}) was lost during the run; {len(worker.in_flight)} "
                "iteration(s) it had in flight were run again elsewhere"
            )
        reason = f"worker {worker.address} (host {worker.hostname}) was lost"
        for attempt in list(worker.in_flight.values()):
            self._abandon(attempt, reason)
        self.wake.set()

    # -- planning and placement --------------------------------------------------------------

    def _build_units(self, plans: Plans) -> None:
        gangs = itertools.count()
        for location, plan in plans.items():
            queue: deque[list[_Unit]] = deque()
            for index, item in enumerate(plan):
                base = f"{location or '*'}/{index}"
                k = self.workloads[item.workload].clients()
                gang = next(gangs)
                if k <= 1:
                    units = [_Unit(key=base, item=item, location=location, share=None, gang=gang)]
                else:
                    units = [
                        _Unit(
                            key=f"{base}/s{j}",
                            item=item,
                            location=location,
                            share=(j, k),
                            gang=gang,
                        )
                        for j in range(k)
                    ]
                self.gang_left[gang] = len(units)
                self.units += units
                queue.append(units)
            self.queues[location] = queue

    def _slots(self, worker: _Worker) -> int:
        return max(1, min(self.config.concurrency, worker.nthreads))

    def _free(self, worker: _Worker) -> int:
        return self._slots(worker) - len(worker.in_flight)

    def _eligible(self, location: str | None, states: Sequence[str] = ("ready",)) -> list[_Worker]:
        return [
            w
            for w in self.workers.values()
            if w.state in states and (location is None or w.location == location)
        ]

    def _place(self, gang: list[_Unit], location: str | None) -> list[_Worker] | None:
        eligible = self._eligible(location)
        free = sorted(
            (w for w in eligible if self._free(w) > 0),
            key=lambda w: (-self._free(w), w.dispatched),
        )
        need = min(len(gang), len(eligible))
        if not free or len(free) < need:
            return None
        chosen = free[:need]
        return [chosen[i % need] for i in range(len(gang))]

    def _dispatch(self) -> None:
        for location, queue in self.queues.items():
            while queue and not self.stopping and not self.budget_stopped:
                gang = queue[0]
                placement = self._place(gang, location)
                if placement is None:
                    break
                first = all(u.attempts == 0 for u in gang)
                if first and self.budget is not None and not self.budget.admit(gang[0].item):
                    self.budget_stopped = True
                    break
                queue.popleft()
                start = None
                if any(u.share is not None for u in gang):
                    start = time.time_ns() + int(SPLIT_LEAD_S * 1e9)
                    if len(self.split_starts) < 1000:
                        self.split_starts.append(
                            {
                                "provider": gang[0].item.provider,
                                "workload": gang[0].item.workload,
                                "iteration": gang[0].item.iteration,
                                "warmup": gang[0].item.warmup,
                                "units": [u.key for u in gang],
                                "start_wall_ns": start,
                                "workers": [w.address for w in placement],
                            }
                        )
                for unit, worker in zip(gang, placement, strict=True):
                    self._submit(unit, worker, start)

    def _submit(self, unit: _Unit, worker: _Worker, start_wall_ns: int | None) -> None:
        unit.attempts += 1
        attempt_id = uuid.uuid4().hex[:12]
        # An earlier attempt was sent and lost: this one's samples say they are a re-run.
        item = replace(unit.item, rerun=True) if unit.attempts > 1 else unit.item
        future = self.client.submit(
            _unit_task,
            self.run_id,
            attempt_id,
            item,
            unit.share,
            start_wall_ns,
            key=f"sandbox-bench-{self.run_id}-{unit.key}-{attempt_id}",
            workers=[worker.address],
            allow_other_workers=False,
            pure=False,
        )
        attempt = _Attempt(id=attempt_id, unit=unit, worker=worker, future=future)
        self.attempts[attempt_id] = attempt
        worker.in_flight[attempt_id] = attempt
        worker.dispatched += 1
        attempt.watcher = self._spawn(self._watch(attempt))

    async def _watch(self, attempt: _Attempt) -> None:
        try:
            result = await attempt.future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if attempt.closed or (task is not None and task.cancelling()):
                raise
            self._abandon(attempt, "the task was cancelled on the scheduler")
        except Exception as exc:  # noqa: BLE001 - the iteration runs again elsewhere
            self._abandon(attempt, f"the task failed: {type(exc).__name__}: {exc}")
        else:
            self._commit(attempt, result)
        finally:
            self.wake.set()

    def _commit(self, attempt: _Attempt, result: Mapping[str, Any]) -> None:
        if attempt.closed:
            return
        attempt.closed = True
        attempt.streamed = []
        attempt.worker.in_flight.pop(attempt.id, None)
        unit = attempt.unit
        unit.done = True
        host = result.get("host")
        for record in result["samples"]:
            extra = {**(record.get("extra") or {}), "host": host}
            self.sink.add_sample(
                Sample.from_json_dict({**record, "sample_id": next(self.ids), "extra": extra})
            )
        self._release(attempt)
        self._unit_finished(unit)

    def _unit_finished(self, unit: _Unit) -> None:
        self.gang_left[unit.gang] -= 1
        if self.gang_left[unit.gang] == 0 and self.budget is not None:
            self.budget.done(unit.item)
        if self._progress is not None:
            self._progress.advance(unit.item)

    def _release(self, attempt: _Attempt) -> None:
        async def cancel() -> None:
            with contextlib.suppress(Exception):
                await self.client.cancel([attempt.future])

        self._spawn(cancel())

    def _abandon(self, attempt: _Attempt, reason: str) -> None:
        """The attempt will never report: keep what it streamed, run the iteration again."""
        if attempt.closed:
            return
        attempt.closed = True
        attempt.worker.in_flight.pop(attempt.id, None)
        if attempt.watcher is not None and attempt.watcher is not asyncio.current_task():
            attempt.watcher.cancel()
        self._release(attempt)
        unit = attempt.unit
        if attempt.streamed and self.folder is not None:
            if self.abandoned is None:
                self.abandoned = JsonlAppender(self.folder / ABANDONED)
            for record in attempt.streamed:
                extra = {
                    **(record.get("extra") or {}),
                    "host": attempt.worker.hostname,
                    "abandoned": reason,
                }
                self.abandoned.append({**record, "sample_id": next(self.ids), "extra": extra})
                self.abandoned_count += 1
        self.reruns.append(
            {
                "unit": unit.key,
                "provider": unit.item.provider,
                "workload": unit.item.workload,
                "iteration": unit.item.iteration,
                "warmup": unit.item.warmup,
                "location": unit.location,
                "share": list(unit.share) if unit.share else None,
                "lost_attempt": attempt.id,
                "worker": attempt.worker.address,
                "host": attempt.worker.hostname,
                "started": attempt.started,
                "records_streamed": len(attempt.streamed),
                "reason": reason,
                "run_again": not self.stopping and unit.attempts < MAX_ATTEMPTS,
            }
        )
        attempt.streamed = []
        if self.stopping:
            return
        if unit.attempts >= MAX_ATTEMPTS:
            self._give_up(unit, f"{unit.attempts} attempts failed; the last: {reason}")
        else:
            self.queues[unit.location].appendleft([unit])
        self.wake.set()

    def _give_up(self, unit: _Unit, reason: str) -> None:
        unit.failed = reason
        self.warnings.append(
            f"{unit.item.provider}/{unit.item.workload} iteration {unit.item.iteration}"
            f"{' (warmup)' if unit.item.warmup else ''} at location {unit.location or 'any'} "
            f"has no records: {reason}"
        )
        self._unit_finished(unit)

    def _check_stranded(self) -> None:
        now = time.monotonic()
        for location, queue in self.queues.items():
            if not queue or self._eligible(location, ("joining", "ready")):
                self.stranded_since.pop(location, None)
                continue
            since = self.stranded_since.setdefault(location, now)
            if now - since < STRANDED_S:
                continue
            where = f"at location {location}" if location else "at all"
            while queue:
                for unit in queue.popleft():
                    self._give_up(unit, f"no live worker {where} for {STRANDED_S:g} s")

    def _finished(self) -> bool:
        in_flight = any(w.in_flight for w in self.workers.values())
        if in_flight:
            return False
        return self.budget_stopped or self.stopping or not any(self.queues.values())

    # -- the run -----------------------------------------------------------------------------

    async def _wait_for_workers(self) -> None:
        wanted = set(self.config.locations)
        deadline = time.monotonic() + WORKER_WAIT_S
        while True:
            await self._refresh()
            joining = [w for w in self.workers.values() if w.state == "joining"]
            ready = {w.location for w in self.workers.values() if w.state == "ready"}
            # A location is settled once a worker there is ready, or every worker there was
            # left out (waiting longer would not help); one without workers may still come.
            seen = {w.location for w in self.workers.values()}
            settled = all(loc in ready or loc in seen for loc in wanted)
            complete = settled if wanted else bool(ready)
            if (complete and not joining) or time.monotonic() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await self.wake.wait()
            self.wake.clear()
        ready_workers = [w for w in self.workers.values() if w.state == "ready"]
        why = "; ".join(f"{w.name}: {w.error}" for w in self.workers.values() if w.error)
        if not ready_workers:
            raise UsageError(
                f"no usable Dask worker at {self.config.cluster} after {WORKER_WAIT_S:g} s"
                + (f" ({why})" if why else "")
            )
        have = {w.location for w in ready_workers}
        missing = sorted(wanted - have)  # type: ignore[operator]
        if missing:
            labels = ", ".join(sorted(str(x) for x in have))
            raise UsageError(
                f"no usable worker at location(s) {', '.join(missing)} (workers carry "
                f"{LOCATION_PREFIX}<location> resources; found: {labels or 'none'})"
                + (f"; {why}" if why else "")
            )

    def _capabilities(self) -> dict[str, Any]:
        caps: dict[str, Any] = {}
        for worker in self.workers.values():
            if worker.state != "ready":
                continue
            for pid, cap in worker.capabilities.items():
                if pid not in caps:
                    caps[pid] = cap
                elif cap.to_dict() != caps[pid].to_dict():
                    self.warnings.append(
                        f"{pid}: worker {worker.name} detected other capabilities than the "
                        "first worker; the manifest keeps the first worker's"
                    )
        return caps

    def _cluster_facts(self) -> dict[str, Any]:
        return {
            "scheduler": self.config.cluster,
            "location_resource_prefix": LOCATION_PREFIX,
            "locations": sorted(
                {str(w.location) for w in self.workers.values() if w.location is not None}
            ),
            "origin_wall_ns": self.origin_wall_ns,
            "origin": datetime.fromtimestamp(self.origin_wall_ns / 1e9, UTC).isoformat(),
            "clock": (
                "clock_offset_s: the worker's wall clock minus the driver's, from the fastest "
                f"of {CLOCK_ROUNDS} round trips driver -> scheduler -> worker (error at most "
                "clock_rtt_s / 2); open-loop start times of every worker are on the driver's "
                "timeline through it"
            ),
            "split_lead_s": SPLIT_LEAD_S,
            "workers": {address: w.facts() for address, w in self.workers.items()},
            "reruns": self.reruns,
            "abandoned_samples": self.abandoned_count,
            "abandoned_file": ABANDONED if self.abandoned_count else None,
            "split_starts": self.split_starts,
        }

    async def _loop(self) -> None:
        while not self._finished():
            if self._membership is not None and self._membership.done():
                self._membership.result()  # the scheduler is gone: raise why
                raise RuntimeError("lost track of the cluster's workers")
            self._dispatch()
            self._check_stranded()
            if self._finished():
                break
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.wake.wait()

    async def _stop_and_drain(self) -> None:
        """Ctrl-C or SIGTERM: stop every worker's iterations and collect what they recorded."""
        self.stopping = True
        ready = [w.address for w in self.workers.values() if w.state == "ready"]
        if ready:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await self.client.run(
                        _stop_runtime, self.run_id, workers=ready, on_error="ignore"
                    )
        watchers = [
            a.watcher
            for w in self.workers.values()
            for a in w.in_flight.values()
            if a.watcher is not None
        ]
        if watchers:
            # The workers' iterations clean up within their part of the grace; wait that long
            # (and a little for their answers), or until a second signal ends the grace: the
            # sweep (finish) keeps the rest.
            limit = self.config.grace_s * cleaning.ITERATIONS_SHARE + 1.0
            with contextlib.suppress(TimeoutError):
                async with self.grace.bounded(limit):
                    await asyncio.wait(watchers)
        for worker in self.workers.values():
            for attempt in list(worker.in_flight.values()):
                self._abandon(attempt, "the run was interrupted and the worker did not answer")

    async def _sweep(self, alive: Alive) -> None:
        """On one ready worker per host: destroy what ``alive`` shows alive on that host, then
        what the providers list under the run's label."""
        sweepers: dict[str | None, _Worker] = {}
        for worker in self.workers.values():
            if worker.state == "ready":
                sweepers.setdefault(worker.hostname, worker)
        entries = [
            *alive.sandboxes.values(),
            *alive.checkpoints.values(),
        ]
        futures = []
        for host, worker in sweepers.items():
            mine = [dict(e) for e in entries if e.get("host") == host]
            futures.append(
                self.client.submit(
                    _sweep_task,
                    self.run_id,
                    mine,
                    key=f"sandbox-bench-sweep-{self.run_id}-{uuid.uuid4().hex[:8]}",
                    workers=[worker.address],
                    allow_other_workers=False,
                    pure=False,
                )
            )
        for future in futures:
            try:
                async with self.grace.bounded(CLEANUP_TIMEOUT_S * 2):
                    await future
            except Exception as exc:  # noqa: BLE001 - reported; reap can finish the job
                self.warnings.append(f"a sweep failed on a worker: {exc!r}")

    async def _close_runtimes(self) -> None:
        addresses = [w.address for w in self.workers.values() if w.state in ("ready", "joining")]
        if not addresses:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                await self.client.run(
                    _close_runtime, self.run_id, workers=addresses, on_error="ignore"
                )

    # -- the executor ------------------------------------------------------------------------

    def locations(self) -> tuple[str | None, ...]:
        return tuple(self.config.locations) or (None,)

    def check(self) -> None:
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise UsageError("--cluster needs Dask: pip install 'sandbox-bench[cluster]'") from None
        # [providers.<id>] tables refused here, not as every worker left out.
        instantiate_providers(self.config, here=False)

    async def open(self, *, run_id: str, workloads: Mapping[str, Workload]) -> Opened:
        """Connect to the scheduler (or start ``local:K``), admit the workers that join."""
        from distributed import Client

        self.run_id = run_id
        self.topic = f"sandbox-bench/{run_id}"
        self.workloads = dict(workloads)
        self.origin_wall_ns = time.time_ns()
        workers = local_cluster_workers(self.config.cluster)
        if workers is not None:
            address: Any = await self._stack.enter_async_context(
                local_cluster(workers, threads=max(1, self.config.concurrency))
            )
        else:
            address = self.config.cluster
        try:
            self.client = await Client(address, asynchronous=True, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise UsageError(
                f"cannot reach the Dask scheduler at {self.config.cluster}: {exc}"
            ) from None
        self.client.subscribe_topic(self.topic, self._on_event)
        self.client.subscribe_topic("all", self._on_scheduler_event)
        self._subscribed = True
        self.opened = True
        await self._wait_for_workers()
        capabilities = self._capabilities()
        first = next(w for w in self.workers.values() if w.state == "ready")
        return Opened(
            capabilities=capabilities,
            environments={pid: first.environments.get(pid, {}) for pid in capabilities},
            client={"role": "cluster driver"},
        )

    async def reap(self, folder: Path) -> None:
        """What the interrupted attempt left alive, on each host it was created on, and what
        the providers list under the run's label; written to the run's ledger now."""
        entries, _ = load_ledger(folder)
        earlier = cleaning.alive_from(entries)
        await self._sweep(earlier)
        hosts = {w.hostname for w in self.workers.values() if w.state == "ready"}
        left = (*earlier.sandboxes.values(), *earlier.checkpoints.values())
        where = [e.get("host") for e in left]
        stranded = sorted({str(h) for h in where if h not in hosts})
        if stranded:
            self.warnings.append(
                "the interrupted attempt left sandbox(es) on host(s) without a worker now "
                f"({', '.join(stranded)}): run `sandbox-bench reap {self.run_id}` there"
            )
        # The sweep's ledger entries, written before the run folder is reopened.
        ledger = JsonlAppender(ledger_path(folder))
        try:
            for entry in self.pending_ledger:
                ledger.append({"at": utc_now_iso(), **entry})
        finally:
            ledger.close()
        self.pending_ledger = []

    def plan_facts(self, plans: Plans, workloads: Mapping[str, Workload]) -> dict[str, Any]:
        tasks = sum(workloads[i.workload].clients() for items in plans.values() for i in items)
        return {"scheduled_tasks": tasks, "locations": list(self.config.locations)}

    def manifest_facts(self) -> dict[str, Any]:
        return {"cluster": self._cluster_facts(), "warnings": list(self.warnings)}

    async def execute(self, plans: Plans, run: Execution) -> RunStatus:
        self.folder = run.folder
        self.grace = run.grace
        self.budget = run.budget
        self.sink = run.sink
        self.ids = itertools.count(run.first_sample_id)
        for entry in self.pending_ledger:
            self.sink.add_ledger(entry)
        self.pending_ledger = []
        self._build_units(plans)
        self._membership = self._spawn(self._membership_loop())
        self._progress = run.progress
        run.progress.start(
            f"run {self.run_id} on {self.config.cluster}",
            len(self.units),
            [u.item for u in self.units],
        )
        try:
            await self._loop()
        except asyncio.CancelledError:
            await self._stop_and_drain()
            raise
        if self.budget_stopped:
            return RunStatus.BUDGET_EXHAUSTED
        if any(u.failed for u in self.units):
            return RunStatus.FAILED
        return RunStatus.COMPLETED

    async def finish(self) -> None:
        """The end-of-run sweep (one worker per host), recorded in the run's ledger."""
        if self._membership is not None:
            self._membership.cancel()
        self.stopping = True
        await self._sweep(self.alive)
        if self.alive:
            left = [*self.alive.sandboxes.values(), *self.alive.checkpoints.values()]
            hosts = sorted({str(e.get("host")) for e in left})
            self.warnings.append(
                f"{self.alive.summary()} the ledger shows alive were not destroyed "
                f"(created on {', '.join(hosts)}): run `sandbox-bench reap {self.run_id}` there"
            )

    def left_alive(self) -> list[dict[str, str]]:
        return self.alive.names()

    async def close(self) -> None:
        if self._membership is not None:
            self._membership.cancel()
        if self.abandoned is not None:
            self.abandoned.close()
        if self.client is not None:
            await self._close_runtimes()
        for task in list(self._background):
            task.cancel()
        if self._subscribed:
            for topic in (self.topic, "all"):
                with contextlib.suppress(Exception):
                    self.client.unsubscribe_topic(topic)
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.close()
        with contextlib.suppress(Exception):
            await self._stack.aclose()


@contextlib.asynccontextmanager
async def local_cluster(workers: int, *, threads: int) -> AsyncIterator[Any]:
    """``cluster = "local:K"``: a scheduler and K worker processes on 127.0.0.1 for this run.

    Each worker is a separate process with its own event loop and provider clients, so a burst
    split with ``clients = K`` spends K processes' CPU on the SDKs' own per-call work instead of
    one event loop's (issue 6: one loop cannot release 100 SDK creates together). The workers
    inherit this process's environment (credentials included) and are stopped, by Dask, when
    the run ends; their local sandboxes go with them (the zygote of each worker destroys its
    own on exit, and the end-of-run sweep runs on a worker before that).
    """
    import logging

    from distributed import LocalCluster

    cluster = await LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        asynchronous=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        yield cluster
    finally:
        await cluster.close()
