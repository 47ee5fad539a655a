"""The command line as a user meets it: bad input, a real run, and Ctrl-C in the middle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.records import SCHEMA_VERSION
from bench.store import load_ledger, load_run
from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def write_config(folder: Path, body: str) -> Path:
    path = folder / "bench.toml"
    path.write_text(body)
    return path


LOCAL_STATE = """
[providers.local]
state_dir = "{state}"
"""


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--providers", "nosuch"], None, "unknown provider 'nosuch'"),
        (["--workloads", "lifecycle,nosuch"], None, "unknown workload 'nosuch'"),
        (["--iterations", "0"], None, "iterations must be at least 1"),
        (["--iterations", "-3"], None, "iterations must be at least 1"),
        (["--iterations", "ten"], None, "iterations must be a whole number"),
        (["--concurrency", "0"], None, "concurrency must be at least 1"),
        (["--timeout", "0"], None, "timeout_s must be greater than 0"),
        ([], "[run\niterations = 3\n", "is not valid TOML"),
        ([], "[run]\niteratons = 3\n", "unknown key(s) iteratons"),
        ([], "[spec]\ncpu = 3\n", "unknown key(s) cpu"),
        ([], "[workloads.exec]\nrepeat = 3\n", "unknown key(s) repeat"),
        ([], "[workloads.checkpoint]\nstate_mb = -1\n", "state_mb must be at least 1 MiB"),
        ([], "[workloads.burst]\nfirst_exec = 1\n", "first_exec must be true or false"),
        (["--cluster", "local:0"], None, "cluster local:K needs 1 <= K <= 64"),
        (["--output", "afile/results"], None, "is not a directory"),
        (["--providers", "e2b"], None, "set E2B_API_KEY"),
        (["--providers", "daytona"], None, "set DAYTONA_API_KEY"),
        (["--providers", "sprites"], None, "set SPRITES_TOKEN"),
    ],
)
def test_bad_input_is_refused_in_one_line_with_exit_2_and_nothing_created(
    tmp_path, args, config, message
):
    (tmp_path / "afile").write_text("not a folder")
    env = {k: "" for k in ("E2B_API_KEY", "DAYTONA_API_KEY", "SPRITES_TOKEN")}
    argv = ["run", "--output", str(tmp_path / "results"), *args]
    if config is not None:
        argv += ["--config", str(write_config(tmp_path, config))]
    result = cli(*argv, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "results").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["afile", *(["bench.toml"] if config is not None else [])]
    )


def test_an_unwritable_output_folder_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; the not-a-directory case covers root")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = cli("run", "--output", str(locked / "results"), cwd=tmp_path)
    assert result.returncode == 2 and "not writable" in result.stderr


def test_a_results_folder_of_an_unknown_schema_is_refused(tmp_path):
    folder = tmp_path / "results" / "old-run"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        json.dumps({"schema_version": SCHEMA_VERSION + 99, "run_id": "old-run"})
    )
    result = cli("show", "old-run", "--results", str(tmp_path / "results"), cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "schema version" in result.stderr


def test_providers_lists_every_provider_with_its_capabilities(tmp_path):
    result = cli("providers", cwd=tmp_path, env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    for provider_id in ("local", "e2b", "daytona", "sprites"):
        assert provider_id in result.stdout
    assert "checkpoint" in result.stdout


def _wait_for_samples(results: Path, *, min_bytes: int, poll_s: float = 0.1) -> Path:
    """The samples file of the run being written under ``results``, once it holds
    ``min_bytes``; fails if the run never gets that far within a minute."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list(results.glob("*/samples.jsonl"))
        if found and found[0].stat().st_size > min_bytes:
            return found[0]
        time.sleep(poll_s)
    raise AssertionError("the run never started recording")


def _leftovers(state_dir: Path, sandbox_ids: set[str]) -> list[str]:
    """Processes, cgroups and directories of the given sandboxes still on the host."""
    found = []
    sandboxes = state_dir / "sandboxes"
    if sandboxes.exists():
        found += [f"dir {p}" for p in sandboxes.iterdir()]
    for cgroup in Path("/sys/fs/cgroup").glob("*/sandbox-bench*/*"):
        if cgroup.name in sandbox_ids:
            found.append(f"cgroup {cgroup}")
    for cgroup in Path("/sys/fs/cgroup").glob("sandbox-bench*/*"):
        if cgroup.name in sandbox_ids:
            found.append(f"cgroup {cgroup}")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if any(sid.encode() in environ for sid in sandbox_ids):
            found.append(f"process {proc.name}")
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line}" for line in mounts.splitlines() if str(state_dir) in line]
    return found


def test_a_local_run_records_every_operation_and_show_prints_it(tmp_path):
    needs_root()
    state = tmp_path / "state"
    config = write_config(tmp_path, LOCAL_STATE.format(state=state))
    results = tmp_path / "results"
    run = cli(
        "run", "--config", str(config), "--iterations", "2", "--warmup", "1",
        "--output", str(results), "--seed", "5", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "results:" in run.stdout
    [folder] = list(results.iterdir())
    loaded = load_run(folder)
    assert loaded.manifest["status"] == "completed"
    assert loaded.manifest["seed"] == 5
    statuses = {(s.workload, s.operation): s.status for s in loaded.samples if not s.warmup}
    assert set(statuses.values()) == {"ok"}, [k for k, v in statuses.items() if v != "ok"]
    assert {w for w, _ in statuses} == {"lifecycle", "exec", "files", "checkpoint", "pause_resume"}
    assert any(s.warmup for s in loaded.samples)
    ledger, _ = load_ledger(folder)
    ids = {e["sandbox_id"] for e in ledger}
    assert _leftovers(state, ids) == []
    show = cli("show", str(folder), cwd=tmp_path, env={"COLUMNS": "200"})
    assert show.returncode == 0, show.stderr
    assert "first_exec" in show.stdout and "checkpoint" in show.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_run_and_leaves_nothing_behind(tmp_path, sig):
    needs_root()
    state = tmp_path / "state"
    config = write_config(tmp_path, LOCAL_STATE.format(state=state))
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench", "run", "--config", str(config),
            "--workloads", "pause_resume,lifecycle", "--iterations", "200",
            "--concurrency", "2", "--output", str(results),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        samples = _wait_for_samples(results, min_bytes=2000)
        time.sleep(0.7)  # land inside a pause_resume hold, with sandboxes alive
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    folder = samples.parent
    loaded = load_run(folder)
    assert loaded.manifest["status"] == "interrupted"
    ledger, _ = load_ledger(folder)
    created = {e["sandbox_id"] for e in ledger if e["event"] == "created"}
    destroyed = {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"}
    assert created and created == destroyed
    assert _leftovers(state, created) == []


def test_after_kill_9_the_run_folder_loads_and_reap_leaves_nothing(tmp_path):
    needs_root()
    state = tmp_path / "state"
    config = write_config(tmp_path, LOCAL_STATE.format(state=state))
    results = tmp_path / "results"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "bench", "run", "--config", str(config),
            "--workloads", "pause_resume,checkpoint", "--iterations", "200",
            "--concurrency", "2", "--output", str(results),
        ],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        _wait_for_samples(results, min_bytes=3000)
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    [folder] = list(results.iterdir())
    loaded = load_run(folder)  # a torn last line, if any, is skipped and reported
    assert loaded.manifest["status"] == "running"  # nobody could say otherwise
    assert loaded.samples
    reap = cli("reap", str(folder), cwd=tmp_path, env={"COLUMNS": "200"})
    assert reap.returncode == 0, reap.stdout + reap.stderr
    ledger, _ = load_ledger(folder)
    created = {e["sandbox_id"] for e in ledger if e["event"] == "created"}
    destroyed = {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"}
    assert created <= destroyed
    assert _leftovers(state, created) == []


def test_resume_finishes_a_killed_run_into_the_same_folder(tmp_path):
    needs_root()
    state = tmp_path / "state"
    config = write_config(tmp_path, LOCAL_STATE.format(state=state))
    results = tmp_path / "results"
    argv = [
        sys.executable, "-m", "bench", "run", "--config", str(config),
        "--workloads", "lifecycle,checkpoint", "--iterations", "12", "--warmup", "1",
        "--output", str(results), "--seed", "11",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    try:
        _wait_for_samples(results, min_bytes=6000, poll_s=0.02)  # kill it early in the run
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    [folder] = list(results.iterdir())
    before = load_run(folder)
    assert 0 < len({(s.workload, s.iteration, s.warmup) for s in before.samples}) < 26
    with (folder / "samples.jsonl").open("a") as fh:  # as if the kill tore a line
        fh.write('{"run_id": "torn')
    resumed = cli("run", "--resume", str(folder), cwd=tmp_path, env={"COLUMNS": "200"})
    assert resumed.returncode == 0, resumed.stderr
    after = load_run(folder)
    assert after.manifest["status"] == "completed"
    assert len(after.manifest["resumes"]) == 1
    assert any("torn line" in w for w in after.warnings)
    ids = [s.sample_id for s in after.samples]
    assert len(ids) == len(set(ids)), "sample ids must stay unique across the resume"
    per_item: dict = {}
    for s in after.samples:
        per_item.setdefault((s.workload, s.iteration, s.warmup), []).append(s)
    assert len(per_item) == 2 * 13  # every planned iteration, warmups included
    for (workload, _, _), samples in per_item.items():
        fresh = [s for s in samples if not s.extra.get("rerun")]
        rerun = [s for s in samples if s.extra.get("rerun")]
        complete = rerun or fresh
        want = 4 if workload == "lifecycle" else 10
        assert len(complete) == want and all(s.status == "ok" for s in complete)
    ledger, _ = load_ledger(folder)
    created = {e["sandbox_id"] for e in ledger if e["event"] == "created"}
    assert created <= {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"}
    assert _leftovers(state, created) == []
    again = cli("run", "--resume", str(folder), cwd=tmp_path)
    assert again.returncode == 2 and "nothing to resume" in again.stderr
    flags = cli("run", "--resume", str(folder), "--iterations", "3", cwd=tmp_path)
    assert flags.returncode == 2 and "drop --iterations" in flags.stderr
