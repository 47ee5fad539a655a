"""One run across machines on Dask (bench/cluster.py).

A real ``distributed.LocalCluster`` whose workers are separate processes (each under its
nanny), labelled with locations as Dask resources (``region-fra``, ``region-iad``), runs the
plan against the real local provider and the e2b adapter pointed at its loopback emulator
(the workers get the emulator's variables through their environment). Everything listens on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bench.cluster import ClusterExecutor
from bench.config import RunConfig, build_config
from bench.emulators.control import Emulator, running
from bench.reap import alive_in_ledger
from bench.records import RunStatus
from bench.report import write_report
from bench.session import LocalExecutor, UsageError, run_session
from bench.stats import summarize
from bench.store import load_ledger, load_run
from bench.workloads import WORKLOADS
from providers.local.provider import list_sandboxes
from tests.conftest import needs_root

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]


@contextlib.asynccontextmanager
async def labelled_cluster(
    locations: dict[str, str],
    env: dict[str, str],
    worker_env: dict[str, dict[str, str]] | None = None,
) -> AsyncIterator[tuple[Any, Any]]:
    """A LocalCluster with one worker process per ``name: location``; ``worker_env`` changes
    the environment of single workers."""
    from distributed import Client, LocalCluster

    cluster = await LocalCluster(
        n_workers=0,
        processes=True,
        asynchronous=True,
        host="127.0.0.1",
        dashboard_address=None,
        env=env,
        silence_logs=logging.CRITICAL,
    )
    try:
        for name, location in locations.items():
            options = {
                **cluster.new_spec["options"],
                "name": name,
                "nthreads": 4,
                "resources": {f"region-{location}": 1},
                "env": {**env, **(worker_env or {}).get(name, {})},
            }
            cluster.worker_spec[name] = {**cluster.new_spec, "options": options}
        scaled = cluster.scale(len(cluster.worker_spec))
        if scaled is not None:
            await scaled
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(len(locations), timeout=60)
            yield cluster, client
    finally:
        await cluster.close()


@contextlib.asynccontextmanager
async def e2b(tmp_path: Path, latency_ms: float = 0.0) -> AsyncIterator[Emulator]:
    async with running("e2b", tmp_path / "e2b-emu", latency_ms=latency_ms) as emu:
        yield emu


async def _run(config: RunConfig, *, resume: Path | None = None) -> tuple[Path, RunStatus]:
    """One session of ``config``: on its cluster, or in this process."""
    executor = ClusterExecutor(config) if config.cluster else LocalExecutor(config)
    return await run_session(config, executor, resume=resume)


def make_config(tmp_path: Path, **run: Any) -> RunConfig:
    data = {
        "providers": {"local": {"state_dir": str(tmp_path / "local-state")}},
        "workloads": {"burst": {"size": 4, "clients": 2}},
    }
    overrides = {
        "providers": "local,e2b",
        "workloads": "lifecycle",
        "iterations": 3,
        "warmup": 0,
        "concurrency": 2,
        "seed": 7,
        "output": tmp_path / "results",
        "timeout_s": 60,
        **run,
    }
    return build_config(data, overrides)


def planned_records(config: RunConfig) -> Counter[tuple[str, str, int, bool]]:
    """Records each planned iteration writes: (provider, workload, iteration, warmup) -> n."""
    wanted: Counter[tuple[str, str, int, bool]] = Counter()
    for workload in config.workloads:
        ops = WORKLOADS[workload](config.workload_params.get(workload, {})).planned_ops(None)
        for provider in config.providers:
            for i in range(config.iterations):
                wanted[(provider, workload, i, False)] += len(ops)
    return wanted


def record_keys(samples) -> Counter[tuple[str, str, int, bool]]:
    return Counter((s.provider, s.workload, s.iteration, s.warmup) for s in samples)


def assert_nothing_left(
    folder: Path, run_id: str, state_dir: Path, live: list[str], *, cluster: bool = True
) -> None:
    assert live == [], f"the emulator still holds {live}"
    assert list_sandboxes(str(state_dir), run_id) == []
    assert all(not ids for ids in alive_in_ledger(folder).values()), alive_in_ledger(folder)
    entries, _ = load_ledger(folder)
    created = {e["sandbox_id"] for e in entries if e["event"] == "created"}
    assert created, "the ledger names no sandbox"
    if cluster:
        assert all(e["host"] and e["worker"] for e in entries if e["event"] == "created")


async def test_a_run_from_two_locations_is_one_complete_folder_reported_by_location(
    tmp_path, monkeypatch
):
    needs_root()
    async with e2b(tmp_path) as emu:
        env = emu.client_env()
        async with labelled_cluster({"w-fra": "fra", "w-iad": "iad"}, env) as (cluster, _):
            config = make_config(tmp_path, cluster=cluster.scheduler_address, locations="fra,iad")
            folder, status = await _run(config)
        cluster_live = await emu.live_sandboxes()

        # The same plan on this machine alone, for comparison.
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        single_config = make_config(tmp_path, location="here")
        single_folder, single_status = await _run(single_config)
        single_live = await emu.live_sandboxes()

    assert status is RunStatus.COMPLETED and single_status is RunStatus.COMPLETED
    run = load_run(folder)
    manifest = run.manifest
    assert manifest["plan"]["locations"] == ["fra", "iad"]
    assert manifest["plan"]["scheduled_iterations"] == 2 * 2 * 3
    assert not (folder / "abandoned.jsonl").exists()
    assert not manifest["cluster"]["reruns"]
    workers = manifest["cluster"]["workers"]
    assert {w["location"] for w in workers.values()} == {"fra", "iad"}
    assert all(w["clock_rtt_s"] is not None and w["state"] == "ready" for w in workers.values())

    # One folder whose record count equals the plan, from both locations, ids unique.
    wanted = planned_records(config)
    assert len(run.samples) == 2 * sum(wanted.values())
    assert len({s.sample_id for s in run.samples}) == len(run.samples)
    for location in ("fra", "iad"):
        mine = [s for s in run.samples if s.location == location]
        assert record_keys(mine) == wanted
        assert all(s.extra["host"] for s in mine)
        assert all(s.status == "ok" for s in mine), [s for s in mine if s.status != "ok"][:3]
    assert not any(s.extra.get("rerun") for s in run.samples)
    assert_nothing_left(folder, manifest["run_id"], tmp_path / "local-state", cluster_live)

    # The single-machine run of the same plan loads and reports the same way.
    single = load_run(single_folder)
    assert single.manifest["schema_version"] == manifest["schema_version"]
    assert record_keys(single.samples) == wanted
    assert_nothing_left(
        single_folder, single.run_id, tmp_path / "local-state", single_live, cluster=False
    )
    by_location = summarize([s for s in run.samples if s.location == "fra"])
    alone = summarize(single.samples)
    key = ["provider", "workload", "operation", "attempts", "n", "failures"]
    assert by_location[key].equals(alone[key])

    reports = tmp_path / "reports"
    html = write_report([folder], reports)
    single_html = write_report([single_folder], reports)
    md = (html.parent / "report.md").read_text()
    single_md = (single_html.parent / "report.md").read_text()

    def headings(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("#")]

    assert headings(md) == headings(single_md)
    assert "## By location" in md
    section = md.split("## By location", 1)[1].split("\n## ", 1)[0]
    assert "| fra p50 | iad p50 | iad / fra |" in section
    assert "fra: " in section and "iad: " in section
    assert "here p50" in single_md.split("## By location", 1)[1]
    assert 'id="table-locations"' in html.read_text()


async def _wait_for_live_sandbox(
    folder_root: Path, worker: str, provider: str, timeout_s: float
) -> None:
    """Until the ledger shows a ``provider`` sandbox that ``worker`` created and has not
    destroyed (an e2b one: every emulated call takes the emulator's latency, so the iteration
    is still running when the worker is killed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        for ledger in folder_root.glob("*/ledger.jsonl"):
            entries, _ = load_ledger(ledger.parent)
            alive: set[str] = set()
            for e in entries:
                mine = e.get("worker") == worker and e.get("provider") == provider
                if e.get("event") == "created" and mine:
                    alive.add(e["sandbox_id"])
                elif e.get("event") == "destroyed":
                    alive.discard(e["sandbox_id"])
            if alive:
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"worker {worker} created no sandbox within {timeout_s} s")


async def test_a_worker_killed_mid_run_loses_nothing_and_its_iterations_run_again(tmp_path):
    needs_root()
    async with e2b(tmp_path, latency_ms=100) as emu:
        env = emu.client_env()
        async with labelled_cluster({"w-fra": "fra", "w-iad": "iad"}, env) as (cluster, client):
            pids = await client.run(os.getpid)
            info = (await client.scheduler.identity())["workers"]
            victim = next(a for a, w in info.items() if w["name"] == "w-fra")
            config = make_config(
                tmp_path,
                cluster=cluster.scheduler_address,
                workloads="lifecycle,burst",
                iterations=4,
            )
            run_task = asyncio.create_task(_run(config))
            await _wait_for_live_sandbox(tmp_path / "results", victim, "e2b", timeout_s=60)
            os.kill(pids[victim], signal.SIGKILL)
            folder, status = await asyncio.wait_for(run_task, timeout=120)
        live = await emu.live_sandboxes()

    assert status is RunStatus.COMPLETED
    run = load_run(folder)
    cluster_facts = run.manifest["cluster"]
    reruns = cluster_facts["reruns"]
    assert reruns and all(r["worker"] == victim and r["run_again"] for r in reruns)
    assert cluster_facts["workers"][victim]["state"] == "lost"
    assert any("was lost during the run" in w for w in run.manifest["warnings"])

    # Complete: every planned operation has exactly one record in samples.jsonl.
    wanted = planned_records(config)
    assert record_keys(run.samples) == wanted
    assert len(run.samples) == sum(wanted.values())
    assert len({s.sample_id for s in run.samples}) == len(run.samples)
    # The re-run iterations are marked, and only they.
    rerun_keys = {(r["provider"], r["workload"], r["iteration"]) for r in reruns}
    marked = {(s.provider, s.workload, s.iteration) for s in run.samples if s.extra.get("rerun")}
    assert marked == rerun_keys
    # What the lost attempts had streamed is kept apart, with the reason.
    streamed = sum(r["records_streamed"] for r in reruns)
    assert cluster_facts["abandoned_samples"] == streamed
    if streamed:
        lines = (folder / "abandoned.jsonl").read_text().splitlines()
        assert len(lines) == streamed and all("was lost" in line for line in lines)
    # Nothing leaked: the lost worker's sandboxes were swept by the survivors.
    assert_nothing_left(folder, run.run_id, tmp_path / "local-state", live)
    # The report says what ran again and where the lost attempts' records are.
    report = write_report([folder], tmp_path / "reports")
    text = (report.parent / "report.md").read_text()
    assert f"**rerun**: {run.run_id}: {len(reruns)} iteration(s) ran again" in text
    assert f"the {streamed} record(s) the lost attempts had made are kept apart" in text

    # A burst split over both workers released its creates at one common instant.
    lost_units = {r["unit"] for r in reruns}
    together = [
        start
        for start in cluster_facts["split_starts"]
        if len(set(start["workers"])) == 2 and not lost_units & set(start["units"])
    ]
    assert together, "no burst was split over the two workers"
    for start in together:
        creates = [
            s
            for s in run.samples
            if (s.workload, s.provider, s.iteration)
            == ("burst", start["provider"], start["iteration"])
            and s.operation == "create"
        ]
        assert len(creates) == 4
        assert len({s.location for s in creates}) == 2
        # One instant on the driver's clock; each worker reads its own clocks to place it.
        starts = [s.intended_start_s for s in creates]
        assert max(starts) - min(starts) < 1e-3, starts
        lag = max(s.actual_start_s - s.intended_start_s for s in creates)
        assert 0 <= lag < 0.5


async def test_a_worker_without_credentials_is_left_out_and_says_why(tmp_path):
    needs_root()
    async with e2b(tmp_path) as emu:
        env = emu.client_env()
        async with labelled_cluster(
            {"w-fra": "fra", "w-iad": "iad"}, env, worker_env={"w-iad": {"E2B_API_KEY": ""}}
        ) as (cluster, _):
            config = make_config(tmp_path, cluster=cluster.scheduler_address, iterations=2)
            folder, status = await _run(config)
            # A location whose only worker cannot run the providers is refused up front.
            with pytest.raises(UsageError, match="no usable worker at location"):
                await _run(
                    make_config(tmp_path, cluster=cluster.scheduler_address, locations="iad")
                )
        live = await emu.live_sandboxes()

    assert status is RunStatus.COMPLETED
    run = load_run(folder)
    assert {s.location for s in run.samples} == {"fra"}
    assert record_keys(run.samples) == planned_records(config)
    (warning,) = [w for w in run.manifest["warnings"] if "left out" in w]
    assert "w-iad" in warning and "set E2B_API_KEY" in warning
    assert_nothing_left(folder, run.run_id, tmp_path / "local-state", live)


def test_without_cluster_dask_is_never_imported(tmp_path):
    code = (
        "import sys\n"
        "from bench.cli import build_parser\n"
        "from bench.config import build_config\n"
        "import bench.report, bench.runner, bench.workloads\n"
        f"build_config({{}}, {{'output': {str(tmp_path)!r}}})\n"
        "build_parser().parse_args(['run', '--iterations', '1'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cluster": "http://x:1"}, "cluster must be a scheduler address"),
        ({"cluster": "127.0.0.1"}, "cluster must be a scheduler address"),
        ({"locations": "fra"}, "locations needs cluster"),
        ({"cluster": "127.0.0.1:8786", "locations": "fra,fra"}, "lists a value twice"),
    ],
)
def test_bad_cluster_settings_are_refused(tmp_path, overrides, message):
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_config({}, {"output": tmp_path, **overrides})


@pytest.mark.timeout(180)
async def test_local_k_splits_a_burst_over_k_worker_processes_of_this_machine(tmp_path):
    needs_root()
    config = make_config(
        tmp_path, providers="local", workloads="burst", iterations=2, cluster="local:2"
    )
    folder, status = await asyncio.wait_for(_run(config), timeout=150)
    assert status is RunStatus.COMPLETED
    run = load_run(folder)
    facts = run.manifest["cluster"]
    assert facts["scheduler"] == "local:2"
    workers = facts["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers.values()}) == 2
    assert all(w["ip"] == "127.0.0.1" for w in workers.values())
    # Each iteration of the burst (size 4, clients 2) ran as two shares on the two processes.
    assert {len(set(start["workers"])) for start in facts["split_starts"]} == {2}
    assert record_keys(run.samples) == planned_records(config)
    assert all(s.status == "ok" for s in run.samples)
    state = tmp_path / "local-state"
    assert_nothing_left(folder, run.manifest["run_id"], state, [])
    # The worker processes are gone with the run.
    for worker in workers.values():
        with pytest.raises(ProcessLookupError):
            os.kill(worker["pid"], 0)


def test_local_cluster_settings(tmp_path):
    from bench.config import ConfigError, local_cluster_workers

    config = build_config({"run": {"cluster": "local"}}, {"output": tmp_path})
    assert config.cluster == f"local:{os.cpu_count()}"
    assert local_cluster_workers(config.cluster) == os.cpu_count()
    assert build_config({}, {"output": tmp_path, "cluster": "local:3"}).cluster == "local:3"
    assert local_cluster_workers("tcp://127.0.0.1:8786") is None
    for bad in ("local:0", "local:65", "local:x"):
        with pytest.raises(ConfigError, match="cluster"):
            build_config({}, {"output": tmp_path, "cluster": bad})


def test_a_cluster_address_without_a_scheme_is_tcp(tmp_path):
    config = build_config({"run": {"cluster": "127.0.0.1:8786"}}, {"output": tmp_path})
    assert config.cluster == "tcp://127.0.0.1:8786"
    assert config.to_dict()["cluster"] == "tcp://127.0.0.1:8786"


async def test_an_unreachable_scheduler_is_a_usage_error(tmp_path, monkeypatch):
    from bench import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2.0)
    config = make_config(tmp_path, cluster="tcp://127.0.0.1:9")
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler"):
        await asyncio.wait_for(_run(config), timeout=60)
    assert not (tmp_path / "results").exists()


def test_a_split_burst_deals_every_slot_to_exactly_one_client():
    from bench.workloads.base import Share

    burst = WORKLOADS["burst"]({"size": 5, "clients": 2})
    assert burst.clients() == 2
    shares = [Share(index=i, count=2) for i in range(2)]
    slots = [list(burst._slots(share)) for share in shares]
    assert slots == [[0, 2, 4], [1, 3]]
    assert [len(burst.planned_share_ops(None, s)) for s in shares] == [9, 6]
    assert WORKLOADS["lifecycle"]({}).clients() == 1
    with pytest.raises(ValueError, match="clients must be a whole number"):
        WORKLOADS["ramp"]({"clients": 1.5})


def test_a_worker_location_is_its_region_resource():
    from bench.cluster import location_of

    assert location_of({"region-fra": 1, "GPU": 2}) == "fra"
    assert location_of({"region-iad": 1, "region-fra": 1}) == "fra"
    assert location_of({"region-": 1, "memory": 4}) is None


def test_the_location_table_compares_each_location_with_the_first():
    from bench.records import Sample
    from bench.report.locations import location_table
    from bench.stats import samples_frame

    samples = []
    for location, base in (("fra", 0.010), ("iad", 0.020), (None, 0.015)):
        for i in range(30):
            samples.append(
                Sample(
                    run_id="r",
                    sample_id=len(samples) + 1,
                    provider="local",
                    workload="lifecycle",
                    operation="create",
                    iteration=i,
                    warmup=False,
                    concurrency=1,
                    started_at="2026-11-28T00:00:00+00:00",
                    duration_s=base + i * 1e-5,
                    status="ok",
                    location=location,
                    extra={"host": f"host-{location}"} if location else {},
                )
            )
    table = location_table(samples_frame(samples), include_warmups=False, seed=0)
    assert table is not None
    assert table.columns == (
        "Provider",
        "Workload",
        "Operation",
        "fra p50",
        "iad p50",
        "unlabelled p50",
        "iad / fra",
        "unlabelled / fra",
    )
    (row,) = table.rows
    assert row.cells[3].endswith("(n=30)") and row.cells[6].startswith("1.99×")
    assert "fra: host-fra" in table.caption and "iad: host-iad" in table.caption
    unlabelled = [s for s in samples if s.location is None]
    assert location_table(samples_frame(unlabelled), include_warmups=False, seed=0) is None


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


@pytest.mark.timeout(300)
def test_an_interrupted_cluster_run_resumed_has_one_record_per_planned_operation(tmp_path):
    needs_root()
    state = tmp_path / "local-state"
    config = tmp_path / "bench.toml"
    config.write_text(
        '[run]\nproviders = ["local"]\nworkloads = ["pause_resume", "lifecycle"]\n'
        f'iterations = 8\nwarmup = 1\nconcurrency = 2\nseed = 3\ncluster = "local:2"\n'
        f'output = "{tmp_path / "results"}"\n'
        f'[workloads.pause_resume]\nhold_s = 0.5\n[providers.local]\nstate_dir = "{state}"\n'
    )
    first = _cli("run", cwd=tmp_path)  # reads ./bench.toml
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # a few iterations written, more in flight
            found = list((tmp_path / "results").glob("*/samples.jsonl"))
            if found and len(found[0].read_text().splitlines()) >= 12:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the cluster run never recorded anything")
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr
    assert stderr.splitlines()[0].startswith("config: bench.toml (found in the current folder")
    [folder] = list((tmp_path / "results").iterdir())
    before = load_run(folder)
    assert before.manifest["status"] == "interrupted"
    assert before.manifest["config_file"] == str(config)
    done_before = {(s.workload, s.iteration, s.warmup) for s in before.samples}
    assert 0 < len(done_before) < 18

    resumed = _cli("run", "--resume", str(folder), cwd=tmp_path)
    _, stderr = resumed.communicate(timeout=150)
    assert resumed.returncode == 0, stderr
    after = load_run(folder)
    manifest = after.manifest
    assert manifest["status"] == "completed"
    assert len(manifest["resumes"]) == 1 and "previous_cluster" in manifest["resumes"][0]
    assert manifest["cluster"]["scheduler"] == "local:2"
    ids = [s.sample_id for s in after.samples]
    assert len(ids) == len(set(ids)), "sample ids must stay unique across the resume"
    # One complete set of records per planned iteration: its last attempt's.
    per_item: dict = {}
    for s in after.samples:
        per_item.setdefault((s.workload, s.iteration, s.warmup), []).append(s)
    assert len(per_item) == 2 * 9
    want = {
        name: len(WORKLOADS[name](params).planned_ops(None))
        for name, params in (("pause_resume", {"hold_s": 0.5}), ("lifecycle", {}))
    }
    for (workload, _, _), samples in per_item.items():
        rerun = [s for s in samples if s.extra.get("rerun")]
        complete = rerun or samples
        assert len(complete) == want[workload], (workload, [s.operation for s in complete])
        assert all(s.status == "ok" for s in complete)
        assert all(s.extra["host"] for s in complete)
    assert any(s.extra.get("rerun") for s in after.samples), "no iteration was cut short"
    assert_nothing_left(folder, after.run_id, state, [])
