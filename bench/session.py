"""One run's life, from a validated configuration to a finished run folder.

A :class:`Session` owns the lifecycle; an :class:`Executor` runs the plan, here
(:class:`LocalExecutor`, :class:`bench.runner.Runner` in this process) or on Dask workers
(:class:`bench.cluster.ClusterExecutor`). The phases, in order::

    check      executor: load adapters, check credentials (nothing is created)
    prepare    plan (seeded), run id; on --resume: the earlier manifest and records
    open       executor: providers opened here (and the network probed), or workers
               admitted; their capabilities and environments
    reap       on --resume only: what the interrupted attempt left alive is destroyed
    plan       on --resume: only the iterations without a complete set of records,
               per location (an iteration cut short runs again, marked ``rerun``)
    estimate   the plan's cost; refused before anything is created when over the cap
    manifest   written (a new run folder), or reopened with a ``resumes`` entry
    execute    executor: every iteration, records to the writer through the budget,
               which may stop scheduling before the cap
    finalize   executor's end-of-run sweep; manifest status, finished_at, spent_usd
               and the executor's facts; writer closed; executor closed

Bad input met on the way raises :class:`UsageError` (one line, exit code 2) before anything
is created. Nothing here prints: what a person should read goes to a :class:`Progress` the
caller supplies (the CLI prints it).

One writer per run: a new run holds its folder's lock from its creation; ``--resume`` takes
it before anything else (:class:`bench.store.RunLock`; a second writer gets RunLocked).

Interrupts (:meth:`Session.interrupt`, called by the CLI's signal handlers): the first stops
scheduling at once and cancels what is in flight (those records say ``Interrupted``); cleanup
then runs within the run's grace (``[run] grace_s``, :class:`bench.cleanup.Grace`); the second
ends the grace at once. The run ends ``interrupted``, and what is still alive is named in the
manifest's ``left_alive`` for ``sandbox-bench reap``.

Results that cannot be written (a full disk): the run stops, cleans up, and ends ``failed``
with the reason in the manifest's ``failure`` when the manifest can be written at all
(:class:`bench.store.RunWriter` keeps a reserve for it); :class:`bench.store.ResultsUnwritable`
reaches the caller. ``--resume`` first checks that the remaining iterations fit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bench import cpu_latency, netprobe
from bench.budget import Budget, Estimate, Planner
from bench.cleanup import DEFAULT_POLICY, Grace, describe_error, through_interrupt
from bench.config import RunConfig
from bench.cost import spec_shape
from bench.records import RunStatus
from bench.runner import (
    QUIET_POLICY,
    Recorder,
    Runner,
    SampleSink,
    SecretScrubber,
    WorkItem,
    make_plan,
    remaining_plan,
)
from bench.store import (
    RESERVE_BYTES,
    LoadedRun,
    ResultsUnwritable,
    RunLock,
    RunWriter,
    free_bytes,
    ledger_path,
    load_manifest,
    load_run,
    manifest_path,
    new_run_id,
    run_dir,
    samples_path,
    utc_now_iso,
)
from bench.workloads import WORKLOADS
from bench.workloads.base import Workload
from providers import UnknownProvider, provider_class
from providers.base import Capabilities, Provider


class UsageError(Exception):
    """Bad input found while preparing a run; one line for the user (exit code 2). Raised
    before the run creates anything."""


class NoSpace(Exception):
    """``--resume`` of a run whose remaining iterations would not fit on its filesystem;
    one line that says how much to free (exit code 1). Nothing was created."""


#: What the manifest says about retries: the harness never retries a measured call.
RETRY_POLICY = {
    "measured_operations": "none: each call is attempted once and recorded once, failed or not",
    "readiness": "first_exec and first_exec_after_* retry `true` every 50 ms until it exits 0 "
    "or the operation times out; the attempts are in extra.attempts",
    "sdk": "per provider in providers.<id>.environment.sdk_retries",
}

#: Planned iterations per location; the key None means "wherever the executor likes".
Plans = Mapping[str | None, Sequence[WorkItem]]


class Progress(Protocol):
    """Where a run tells a person what it does (the CLI prints; tests may stay quiet)."""

    def note(self, text: str) -> None:
        """One line for the reader (which config, the cost estimate)."""

    def start(self, description: str, total: int, items: Sequence[WorkItem] = ()) -> None:
        """The plan starts: ``total`` units of work, the work items ``items`` (one per unit,
        when given: progress per provider and workload)."""

    def advance(self, item: WorkItem | None = None) -> None:
        """One unit of work finished (``item``: which one, when known)."""

    def stop(self) -> None:
        """The run ended (called once, also after errors)."""


class QuietProgress:
    """A Progress that says nothing."""

    def note(self, text: str) -> None:
        pass

    def start(self, description: str, total: int, items: Sequence[WorkItem] = ()) -> None:
        pass

    def advance(self, item: WorkItem | None = None) -> None:
        pass

    def stop(self) -> None:
        pass


def harness_version() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("sandbox-bench")
    except PackageNotFoundError:
        ver = None
    root = Path(__file__).resolve().parents[1]
    sha = dirty = None
    if (root / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            dirty = bool(
                subprocess.run(
                    ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=True,
                ).stdout.strip()
            )
    return {"version": ver, "git_sha": sha, "git_dirty": dirty}


def client_facts(location: str) -> dict[str, Any]:
    memory_mb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_mb = int(line.split()[1]) // 1024
    return {
        "hostname": socket.gethostname(),
        "location": location or None,
        "platform": platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_mb": memory_mb,
    }


def instantiate_providers(config: RunConfig, *, here: bool = True) -> dict[str, Provider]:
    """Load adapters and check credentials and provider settings; creates nothing.

    ``here=False`` (a cluster driver, whose workers run the providers): only the settings
    are checked, by the adapters this machine has; SDKs and credentials are the workers'."""
    providers: dict[str, Provider] = {}
    for provider_id in config.providers:
        try:
            cls = provider_class(provider_id)
        except UnknownProvider as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:
            if not here:
                continue
            raise UsageError(
                f"provider {provider_id!r} needs its SDK ({exc.name or exc}): "
                f"pip install 'sandbox-bench[{provider_id}]'"
            ) from None
        missing = [name for name in cls.required_env if not os.environ.get(name)]
        if missing and here:
            raise UsageError(
                f"provider {provider_id!r} needs credentials: set {', '.join(missing)}"
            )
        try:
            providers[provider_id] = cls(config.provider_settings.get(provider_id, {}))
        except ValueError as exc:  # the adapter refused its [providers.<id>] table
            message = str(exc)
            where = f"[providers.{provider_id}]"
            raise UsageError(
                message if message.startswith(where) else f"{where}: {message}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - a constructor creates nothing: its failure
            # on a value of a surprising type (Path(5), "~nobody") is a refusal of that table
            raise UsageError(f"[providers.{provider_id}]: {type(exc).__name__}: {exc}") from None
    return providers


def checked_estimate(
    config: RunConfig,
    plan: Sequence[WorkItem],
    workloads: Mapping[str, Workload],
    capabilities: Mapping[str, Capabilities],
    progress: Progress,
) -> tuple[Planner, Estimate]:
    """The plan's cost estimate, told when it is priced or capped; UsageError (before
    anything is created) when it is over ``max_cost_usd``."""
    planner = Planner(
        catalog=config.pricing.load(),
        shape=spec_shape(asdict(config.spec)),
        assumed_op_s=config.assumed_op_s,
    )
    estimate = planner.estimate(plan, workloads, capabilities)
    if estimate.total_usd > 0 or config.max_cost_usd is not None:
        progress.note(estimate.describe())
    if config.max_cost_usd is not None and estimate.total_usd > config.max_cost_usd:
        raise UsageError(
            f"the plan's estimated cost ${estimate.total_usd:.4f} exceeds --max-cost-usd "
            f"${config.max_cost_usd:g}; nothing was created"
        )
    return planner, estimate


def new_manifest(
    config: RunConfig,
    *,
    run_id: str,
    seed: int,
    config_file: Path | None,
    client: Mapping[str, Any],
    workloads: Mapping[str, Workload],
    plan: Mapping[str, Any],
    providers: Mapping[str, Any],
    estimate: Estimate,
) -> dict[str, Any]:
    """A new run's manifest; ``plan`` holds the plan's own facts (its providers and
    scheduled iterations, at least)."""
    return {
        "run_id": run_id,
        "status": str(RunStatus.RUNNING),
        "started_at": utc_now_iso(),
        "finished_at": None,
        "harness": harness_version(),
        "client": dict(client),
        "seed": seed,
        "config_file": str(config_file.absolute()) if config_file is not None else None,
        "config": config.to_dict(),
        "spec": {k: v for k, v in asdict(config.spec).items() if k != "labels"},
        "plan": {
            "workloads": list(workloads),
            "iterations": config.iterations,
            "warmup": config.warmup,
            "concurrency": config.concurrency,
            **plan,
            "workload_params": {n: w.params for n, w in workloads.items()},
        },
        "providers": dict(providers),
        "retry_policy": RETRY_POLICY,
        "cleanup": {
            "retry_policy": DEFAULT_POLICY.to_dict(),
            "grace_s": config.grace_s,
            "after_grace": "what is still alive is named in left_alive for sandbox-bench reap",
        },
        "quiet": QUIET_POLICY,
        "budget": {
            "max_cost_usd": config.max_cost_usd,
            "estimate_usd": round(estimate.total_usd, 6),
            "estimate": estimate.describe(),
        },
    }


# -- executors ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Opened:
    """What an executor found when it opened: per provider, the capabilities and environment
    the manifest records, and facts about this client (the network probe, its role)."""

    capabilities: Mapping[str, Capabilities]
    environments: Mapping[str, Mapping[str, Any]]
    client: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Execution:
    """What an executor runs the plan with: where records go and the budget's hooks."""

    run_id: str
    folder: Path
    #: Every sample and ledger entry goes here (the budget, which passes them to the writer).
    sink: SampleSink
    budget: Budget
    first_sample_id: int
    progress: Progress
    #: Bounds cleanup after an interrupt (started by :meth:`Session.interrupt`).
    grace: Grace = field(default_factory=Grace)


class Executor(ABC):
    """Runs a session's plan somewhere. The session calls, in order: :meth:`check`,
    :meth:`open`, :meth:`reap` (resume only), :meth:`execute`, :meth:`finish` (when a run
    folder exists), :meth:`close` (always)."""

    def locations(self) -> tuple[str | None, ...]:
        """Where the whole plan runs once each (None: one plan, anywhere)."""
        return (None,)

    @abstractmethod
    def check(self) -> None:
        """Refuse (UsageError) what cannot run, creating nothing."""

    @abstractmethod
    async def open(self, *, run_id: str, workloads: Mapping[str, Workload]) -> Opened:
        """Open providers (or admit workers) for run ``run_id``."""

    @abstractmethod
    async def reap(self, folder: Path) -> None:
        """``run --resume``: destroy what the earlier attempt of the run left alive."""

    def plan_facts(self, plans: Plans, workloads: Mapping[str, Workload]) -> dict[str, Any]:
        """More facts about the plan for the manifest's ``plan``."""
        return {}

    @abstractmethod
    async def execute(self, plans: Plans, run: Execution) -> RunStatus:
        """Run every planned iteration; the status the run ends with (raises
        CancelledError when interrupted, after destroying what it created)."""

    async def finish(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """End-of-run cleanup that still records into the run folder (sweeps)."""

    def left_alive(self) -> list[dict[str, str]]:
        """What the run's ledger shows alive now (after cleanup): kind, provider, id."""
        return []

    def harness_errors(self) -> list[str]:
        """Harness errors no record could carry (the manifest keeps them)."""
        return []

    def manifest_facts(self) -> dict[str, Any]:
        """Top-level manifest keys of this executor (written at the start and the end)."""
        return {}

    @abstractmethod
    async def close(self) -> None:
        """Release providers, workers and connections; never raises."""


class LocalExecutor(Executor):
    """The plan runs in this process: :class:`bench.runner.Runner`, as it is."""

    def __init__(self, config: RunConfig, providers: Mapping[str, Provider] | None = None):
        self.config = config
        #: Given ones are used as they are (tests); otherwise :meth:`check` instantiates them.
        self.providers: dict[str, Provider] = dict(providers or {})
        self.workloads: dict[str, Workload] = {}
        self._opened: list[Provider] = []
        self.runner: Runner | None = None
        self._latency: cpu_latency.LatencyHold | None = None

    def check(self) -> None:
        if not self.providers:
            self.providers = instantiate_providers(self.config)

    async def open(self, *, run_id: str, workloads: Mapping[str, Workload]) -> Opened:
        self.workloads = dict(workloads)
        for provider in self.providers.values():
            await provider.open()
            self._opened.append(provider)
        environments = {pid: p.environment() for pid, p in self.providers.items()}
        network = await netprobe.measure(environments)
        # Held from here to close(): the iterations run in between (bench/cpu_latency.py).
        self._latency = cpu_latency.hold(self.config.cpu_latency)
        return Opened(
            capabilities={pid: p.capabilities() for pid, p in self.providers.items()},
            environments=environments,
            client={"network": network, "cpu_latency": self._latency.facts()},
        )

    async def reap(self, folder: Path) -> None:
        from bench.reap import reap_run

        await reap_run(folder, self.providers, locked=True)

    async def execute(self, plans: Plans, run: Execution) -> RunStatus:
        (plan,) = plans.values()
        config = self.config
        recorder = Recorder(
            run.sink,
            run_id=run.run_id,
            concurrency=config.concurrency,
            location=config.location,
            scrub=SecretScrubber([n for p in self.providers.values() for n in p.required_env]),
            first_sample_id=run.first_sample_id,
        )

        def done(item: WorkItem) -> None:
            run.budget.done(item)
            run.progress.advance(item)

        runner = Runner(
            providers=self.providers,
            workloads=self.workloads,
            spec=config.spec,
            recorder=recorder,
            timeout_s=config.timeout_s,
            concurrency=config.concurrency,
            on_item_done=done,
            admit=run.budget.admit,
            grace=run.grace,
        )
        self.runner = runner
        run.progress.start(f"run {run.run_id}", len(plan), plan)
        await runner.run(plan)
        return RunStatus.BUDGET_EXHAUSTED if runner.stopped_by_admit else RunStatus.COMPLETED

    def left_alive(self) -> list[dict[str, str]]:
        return self.runner.recorder.alive.names() if self.runner is not None else []

    def harness_errors(self) -> list[str]:
        return list(self.runner.recorder.harness_errors) if self.runner is not None else []

    async def close(self) -> None:
        if self._latency is not None:
            self._latency.release()
        for provider in self._opened:
            with contextlib.suppress(Exception):
                await provider.close()
        self._opened = []


# -- the session -------------------------------------------------------------------------------


def _samples_at(earlier: LoadedRun, location: str | None, locations: Sequence[str | None]):
    if locations == (None,):
        return earlier.samples
    return [s for s in earlier.samples if s.location == location]


class Session:
    """One run (or the resume of one) of ``config`` through ``executor``."""

    def __init__(
        self,
        config: RunConfig,
        executor: Executor,
        *,
        resume: Path | None = None,
        config_file: Path | None = None,
        announce: str | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.resume = resume
        self.config_file = config_file
        #: The first line told once the run passed every check that creates nothing.
        self.announce = announce
        self.progress: Progress = progress or QuietProgress()
        self.writer: RunWriter | None = None
        self.budget: Budget | None = None
        self.status = RunStatus.FAILED
        #: Why the run failed (a write that failed, a bug), for the manifest.
        self.failure: str | None = None
        self.grace = Grace(config.grace_s)
        self.interrupts = 0
        self.lock: RunLock | None = None
        #: What was still alive when the run ended (named for reap).
        self.left: list[dict[str, str]] = []
        self.folder: Path | None = None
        self._task: asyncio.Task[Any] | None = None
        #: Called once, right before the run first creates anything (opens providers): until
        #: then an interrupt may simply end the process (the CLI's start-up handler does, even
        #: in the middle of importing an SDK); from then on it must go through interrupt().
        self.starting: Callable[[], None] | None = None

    # -- interrupts --------------------------------------------------------------------------

    def interrupt(self) -> None:
        """An interrupt (call on the run's loop): the first cancels the run and starts the
        grace; the next ends the grace."""
        self.interrupts += 1
        if self.interrupts > 1:
            self.grace.skip()
            return
        self.grace.start()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    @property
    def interrupted(self) -> bool:
        return self.interrupts > 0

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> tuple[Path, RunStatus]:
        """Prepare, open, execute, finalize; the run folder and its final status."""
        self._task = asyncio.current_task()
        try:
            return await self._run()
        except asyncio.CancelledError:
            self.status = RunStatus.INTERRUPTED
            raise
        except ResultsUnwritable as exc:
            self.status = RunStatus.FAILED
            self.failure = f"results could not be written: {exc}"
            raise
        except (UsageError, NoSpace):
            raise
        except Exception as exc:
            self.status = RunStatus.FAILED
            self.failure = f"the harness failed: {describe_error(exc)}"
            raise
        finally:
            try:
                await self._finalize()
            finally:
                try:
                    await self._close()
                finally:
                    if self.lock is not None:
                        self.lock.release()
                    self.progress.stop()

    async def _close(self) -> None:
        # Bounded: after an interrupt the grace (plus a second) is all the time there is; a
        # provider client that does not close by then is abandoned (its process exits soon).
        limit = self.grace.remaining_s()
        limit = 120.0 if limit is None else limit + 1.0
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(limit):
                await self.executor.close()

    async def _run(self) -> tuple[Path, RunStatus]:
        config, executor = self.config, self.executor
        previous = None
        if self.resume is not None:
            previous = load_manifest(self.resume)
        executor.check()
        if self.resume is not None:
            # Before anything is written or opened: one writer per run.
            self.lock = RunLock.acquire(self.resume, purpose="resume")
        run_id = str(previous["run_id"]) if previous is not None else new_run_id()
        seed = config.resolved_seed()
        workloads = {
            name: WORKLOADS[name](config.workload_params.get(name, {}))
            for name in config.workload_names
        }
        plan = make_plan(
            list(config.providers), list(workloads), iterations=config.iterations,
            warmup=config.warmup, seed=seed,
        )  # fmt: skip
        if self.announce:
            self.progress.note(self.announce)

        if self.starting is not None:
            self.starting()
        opened = await executor.open(run_id=run_id, workloads=workloads)
        capabilities = dict(opened.capabilities)
        locations = executor.locations()
        first_sample_id = 1
        if self.resume is None:
            plans: dict[str | None, list[WorkItem]] = {loc: list(plan) for loc in locations}
        else:
            earlier = load_run(self.resume)
            check_space_to_resume(self.resume, earlier, len(plan) * len(locations))
            # What the interruption left alive goes first; then only what was not completed.
            await executor.reap(self.resume)
            earlier = load_run(self.resume)
            plans = {
                loc: remaining_plan(
                    plan,
                    _samples_at(earlier, loc, locations),
                    workloads=workloads,
                    capabilities=capabilities,
                )
                for loc in locations
            }
            first_sample_id = max((s.sample_id for s in earlier.samples), default=0) + 1
        every_item = [item for items in plans.values() for item in items]
        planner, estimate = checked_estimate(
            config, every_item, workloads, capabilities, self.progress
        )

        manifest = new_manifest(
            config,
            run_id=run_id,
            seed=seed,
            config_file=self.config_file,
            client={**client_facts(config.location), **opened.client},
            workloads=workloads,
            plan={
                "providers": list(config.providers),
                "scheduled_iterations": len(every_item),
                **executor.plan_facts(plans, workloads),
            },
            providers={
                pid: {
                    "capabilities": cap.to_dict(),
                    "environment": dict(opened.environments.get(pid, {})),
                }
                for pid, cap in capabilities.items()
            },
            estimate=estimate,
        )
        manifest.update(executor.manifest_facts())
        if previous is None:
            self.folder = run_dir(config.output, run_id)
            self.writer = RunWriter(self.folder, manifest)
        else:
            assert self.resume is not None
            resumes = [*previous.get("resumes", []), {
                "at": utc_now_iso(),
                "remaining_iterations": len(every_item),
                "reruns": sum(1 for item in every_item if item.rerun),
                "harness": manifest["harness"],
                "client": manifest["client"],
                **({"previous_cluster": previous["cluster"]} if "cluster" in previous else {}),
            }]  # fmt: skip
            self.folder = self.resume
            self.writer = RunWriter.reopen(
                self.resume,
                lock=self.lock,
                status=str(RunStatus.RUNNING),
                finished_at=None,
                failure=None,
                left_alive=[],
                resumes=resumes,
                **executor.manifest_facts(),
            )
            self.lock = None  # the writer holds it now, and releases it when it closes
        self.budget = planner.budget(self.writer, config.max_cost_usd)
        execution = Execution(
            run_id=run_id,
            folder=self.writer.folder,
            sink=self.budget,
            budget=self.budget,
            first_sample_id=first_sample_id,
            progress=self.progress,
            grace=self.grace,
        )
        self.status = await executor.execute(plans, execution)
        if self.writer.failure is not None:  # a write failed where nothing could raise it
            raise self.writer.failure
        return self.writer.folder, self.status

    async def _finalize(self) -> None:
        writer = self.writer
        if writer is None:
            return
        try:
            try:
                await through_interrupt(self.executor.finish())
            except Exception as exc:  # noqa: BLE001 - the manifest says so; reap can finish
                self.failure = self.failure or f"the end-of-run sweep failed: {describe_error(exc)}"
        finally:
            self.left = self.executor.left_alive()
            if writer.failure is not None and self.failure is None:
                self.status = RunStatus.FAILED
                self.failure = f"results could not be written: {writer.failure}"
            facts: dict[str, Any] = {
                "status": str(self.status),
                "finished_at": utc_now_iso(),
                "spent_usd": (
                    round(self.budget.spent_usd(), 6) if self.budget is not None else None
                ),
                "failure": self.failure,
                "left_alive": self.left,
                **self.executor.manifest_facts(),
            }
            errors = self.executor.harness_errors()
            if errors:
                facts["harness_errors"] = errors
            if writer.lost:
                facts["records_lost"] = writer.lost
            try:
                writer.update_manifest(**facts)
            except ResultsUnwritable:
                pass  # the caller says so; the temporary file is gone
            finally:
                writer.close()
            if writer.failure is None:
                from bench.columnar import write_at_finalize  # pyarrow, only once a run ends

                await asyncio.to_thread(write_at_finalize, writer.folder)


def check_space_to_resume(folder: Path, earlier: LoadedRun, planned: int) -> None:
    """NoSpace when the iterations left of ``earlier`` would not fit on its filesystem, by
    what the run's iterations took so far (a resume on a full disk says what to free)."""
    free = free_bytes(folder)
    if free is None:
        return
    done = {(s.provider, s.workload, s.iteration, s.warmup, s.location) for s in earlier.samples}
    used = 0
    for path in (samples_path(folder), ledger_path(folder)):
        with contextlib.suppress(OSError):
            used += path.stat().st_size
    per_iteration = used / max(1, len(done))
    left = max(0, planned - len(done)) + 1
    manifest = 0
    with contextlib.suppress(OSError):
        manifest = manifest_path(folder).stat().st_size
    need = int(per_iteration * left * 1.2) + max(RESERVE_BYTES, 2 * manifest) + 2 * manifest
    if free < need:
        mib = 1024 * 1024
        raise NoSpace(
            f"run {earlier.run_id} needs about {need / mib:.1f} MiB for its {left - 1} "
            f"remaining iteration(s) (at {per_iteration / 1024:.1f} KiB each so far), but the "
            f"filesystem of {folder} has {free / mib:.1f} MiB free: free at least "
            f"{(need - free) / mib:.1f} MiB there, then resume again"
        )


async def run_session(
    config: RunConfig,
    executor: Executor | None = None,
    *,
    resume: Path | None = None,
    config_file: Path | None = None,
    progress: Progress | None = None,
) -> tuple[Path, RunStatus]:
    """Run ``config`` through ``executor`` (default: this process) and return the run folder
    and its status."""
    session = Session(
        config,
        executor or LocalExecutor(config),
        resume=resume,
        config_file=config_file,
        progress=progress,
    )
    return await session.run()


__all__ = [
    "Execution",
    "Executor",
    "LocalExecutor",
    "NoSpace",
    "Opened",
    "Plans",
    "Progress",
    "QuietProgress",
    "Session",
    "UsageError",
    "check_space_to_resume",
    "instantiate_providers",
    "run_session",
]
