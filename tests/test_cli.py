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


NO_PLAN = json.dumps({"schema_version": SCHEMA_VERSION, "run_id": "noplan", "status": "failed"})
LONG_NAME = "x" * 300

#: Bad input at the command line's boundary (issue 19): (argv, files to write first, the one
#: line expected on stderr). Every case must exit 2 with that one line and create nothing.
#: ``{tmp}`` is the test's folder; ``c.toml`` is passed as --config when a case writes it.
BAD_INPUT = {
    # flags of `run`, checked by their declarations
    "unknown provider": (["--providers", "nosuch"], {}, "unknown provider 'nosuch'"),
    "unknown workload": (["--workloads", "lifecycle,nosuch"], {}, "unknown workload 'nosuch'"),
    "iterations 0": (["--iterations", "0"], {}, "iterations must be at least 1"),
    "iterations -3": (["--iterations", "-3"], {}, "iterations must be at least 1"),
    "iterations ten": (["--iterations", "ten"], {}, "iterations must be a whole number"),
    "iterations 1e10": (
        ["--iterations", "10000000000"], {},
        "argument --iterations: iterations must be at most 100000, got 1e+10",
    ),
    "plan too large": (
        ["--iterations", "100000", "--providers", "local,e2b,daytona,sprites"], {},
        "the plan has 2,000,020 iterations",
    ),
    "concurrency 0": (["--concurrency", "0"], {}, "concurrency must be at least 1"),
    "timeout 0": (["--timeout", "0"], {}, "timeout_s must be at least 0.001 s"),
    "timeout inf": (["--timeout", "inf"], {}, "timeout_s must be a finite number, got inf"),
    "timeout nan": (["--timeout", "nan"], {}, "timeout_s must be a finite number, got nan"),
    "max cost 0": (["--max-cost-usd", "0"], {}, "max_cost_usd must be at least 0.0001 USD"),
    "cluster local:0": (["--cluster", "local:0"], {}, "cluster local:K needs 1 <= K <= 64"),
    "locations without cluster": (["--locations", "fra"], {}, "locations needs cluster"),
    "output under a file": (["--output", "{tmp}/afile/results"], {}, "is not a directory"),
    "output in /proc": (["--output", "/proc/x"], {}, "output folder /proc/x is on a kernel"),
    "output in /sys": (["--output", "/sys/x"], {}, "output folder /sys/x is on a kernel"),
    "output 300 chars": (["--output", LONG_NAME], {}, "is 300 bytes long; at most 255"),
    "credentials e2b": (["--providers", "e2b"], {}, "set E2B_API_KEY"),
    "credentials daytona": (["--providers", "daytona"], {}, "set DAYTONA_API_KEY"),
    "credentials sprites": (["--providers", "sprites"], {}, "set SPRITES_TOKEN"),
    "credentials vercel": (["--providers", "vercel"], {}, "set VERCEL_TOKEN"),
    # the config file
    "config missing": (["--config", "{tmp}/nope.toml"], {}, "config file"),
    "config a device": (["--config", "/dev/zero"], {}, "/dev/zero is not a regular file"),
    "config binary": ([], {"c.toml": b"\x80\xff\x00[run]"}, "is not UTF-8 text"),
    "config bad TOML": ([], {"c.toml": "[run\niterations = 3\n"}, "is not valid TOML"),
    "unknown top key": ([], {"c.toml": "[runs]\n"}, "config: unknown key(s) runs"),
    "unknown run key": ([], {"c.toml": "[run]\niteratons = 3\n"}, "unknown key(s) iteratons"),
    "unknown spec key": ([], {"c.toml": "[spec]\ncpu = 3\n"}, "unknown key(s) cpu"),
    "top providers": (
        [], {"c.toml": 'providers = "local"\n'},
        "providers = 'local' at the top of the config must be a table",
    ),
    "top workloads": (
        [], {"c.toml": "workloads = 3\n"}, "workloads = 3 at the top of the config must be a table"
    ),
    "top run": ([], {"c.toml": "run = 5\n"}, "[run] must be a table, got int"),
    "top spec": ([], {"c.toml": 'spec = "x"\n'}, "[spec] must be a table, got str"),
    "run iterations text": (
        [], {"c.toml": '[run]\niterations = "3"\n'}, "run.iterations must be a whole number"
    ),
    "run timeout nan": (
        [], {"c.toml": "[run]\ntimeout_s = nan\n"}, "run.timeout_s must be a finite number"
    ),
    "spec memory huge": (
        [], {"c.toml": "[spec]\nmemory_mb = 99999999999999\n"},
        "spec.memory_mb must be at most 262144 MiB, got 1e+14",
    ),
    "spec cpus 0": ([], {"c.toml": "[spec]\ncpus = 0\n"}, "spec.cpus must be at least 0.1"),
    "pricing catalog /etc/passwd": (
        [], {"c.toml": '[pricing]\ncatalog = "/etc/passwd"\n'},
        "pricing catalog /etc/passwd: not valid TOML",
    ),
    "pricing catalog folder": (
        [], {"c.toml": '[pricing]\ncatalog = "/tmp"\n'}, "pricing catalog /tmp is not a regular"
    ),
    "pricing rate negative": (
        [], {"c.toml": "[pricing]\nlocal_usd_per_hour = -1\n"},
        "pricing.local_usd_per_hour must be at least 0",
    ),
    "scenario hours 0": (
        [], {"c.toml": "[scenario]\nhours = 0\n"}, "scenario.hours must be at least 0.001 h"
    ),
    "scenario unknown key": ([], {"c.toml": "[scenario]\nweeks = 1\n"}, "unknown key(s) weeks"),
    "workload unknown key": (
        [], {"c.toml": "[workloads.exec]\nrepeat = 3\n"}, "unknown key(s) repeat"
    ),
    "workload negative": (
        [], {"c.toml": "[workloads.checkpoint]\nstate_mb = -1\n"}, "state_mb"
    ),
    "workload bool": (
        [], {"c.toml": "[workloads.burst]\nfirst_exec = 1\n"}, "first_exec must be true or false"
    ),
    # the workload's own refusal, or the plan bound until it declares a range: either names it
    "workload repeats 1e30": ([], {"c.toml": "[workloads.exec]\nrepeats = 1e30\n"}, "exec"),
    "provider table not a table": (
        [], {"c.toml": '[providers]\nlocal = "x"\n'}, "[providers.local] must be a table"
    ),
    "provider setting refused": (
        [], {"c.toml": "[providers.local]\nstate_dir = 5\n"}, "[providers.local]:"
    ),
    "cluster provider setting refused": (
        ["--cluster", "local:1"], {"c.toml": "[providers.local]\nstate_dir = 5\n"},
        "[providers.local]:",
    ),
    # --resume
    "resume without plan": (
        ["--resume", "{tmp}/results/noplan"], {"results/noplan/manifest.json": NO_PLAN},
        "run noplan cannot be resumed: its manifest has no plan",
    ),
    "resume of a list": (
        ["--resume", "{tmp}/results/list"], {"results/list/manifest.json": "[]"},
        "not a JSON object",
    ),
    "resume with flags": (
        ["--resume", "{tmp}/results/noplan", "--iterations", "3"],
        {"results/noplan/manifest.json": NO_PLAN}, "drop --iterations",
    ),
}  # fmt: skip

#: The same for the other commands (argv complete).
BAD_OTHER = {
    "compare threshold nan": (
        ["compare", "a", "b", "--threshold", "nan"], {},
        "argument --threshold: threshold must be a finite number, got nan",
    ),
    "compare threshold -1": (
        ["compare", "a", "b", "--threshold", "-1"], {},
        "argument --threshold: threshold must be at least 0, got -1",
    ),
    "report out on a file": (
        ["report", "latest", "--out", "{tmp}/afile"], {}, "--out folder {tmp}/afile is not a dir"
    ),
    "report pricing /etc/passwd": (
        ["report", "latest", "--pricing", "/etc/passwd"], {}, "/etc/passwd: not valid TOML"
    ),
    "report scenario nan": (
        ["report", "latest", "--scenario-hours", "nan"], {},
        "argument --scenario-hours: hours must be a finite number",
    ),
    "report no runs": (["report", "latest", "--results", "{tmp}/none"], {}, "no runs in"),
    "show a list manifest": (
        ["show", "{tmp}/results/list"], {"results/list/manifest.json": "[]"},
        "not a JSON object but list",
    ),
}  # fmt: skip


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def _refused(tmp_path: Path, argv: list[str], files: dict, message: str) -> None:
    (tmp_path / "afile").write_text("not a folder")
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = _tree(tmp_path)
    env = {k: "" for k in ("E2B_API_KEY", "DAYTONA_API_KEY", "SPRITES_TOKEN")}
    result = cli(*argv, cwd=tmp_path, env={**env, "COLUMNS": "80"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sandbox-bench: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert _tree(tmp_path) == before, "a refused command created or changed files"


@pytest.mark.parametrize(("args", "files", "message"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_run_input_is_refused_in_one_line_with_exit_2_and_nothing_created(
    tmp_path, args, files, message
):
    argv = ["run", "--output", str(tmp_path / "results"), *args]
    if "c.toml" in files:
        argv += ["--config", str(tmp_path / "c.toml")]
    elif "--config" not in args and "--resume" not in args:
        argv += ["--config", "none"]
    if "--resume" in args:
        argv.remove("--output")
        argv.remove(str(tmp_path / "results"))
    _refused(tmp_path, argv, files, message)


@pytest.mark.parametrize(("argv", "files", "message"), BAD_OTHER.values(), ids=BAD_OTHER.keys())
def test_bad_input_of_other_commands_is_refused_in_one_line_with_exit_2(
    tmp_path, argv, files, message
):
    _refused(tmp_path, argv, files, message)


def test_run_reads_bench_toml_here_unless_told_otherwise(tmp_path):
    (tmp_path / "bench.toml").write_text("[run\n")  # broken, so reading it shows
    read = cli("run", "--locations", "fra", cwd=tmp_path)
    assert read.returncode == 2 and "config file bench.toml is not valid TOML" in read.stderr
    ignored = cli("run", "--config", "none", "--locations", "fra", cwd=tmp_path)
    assert ignored.returncode == 2 and "locations needs cluster" in ignored.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.toml"]


def test_a_run_says_which_config_it_used_and_records_it_resolved(tmp_path):
    needs_root()
    (tmp_path / "bench.toml").write_text(
        '[run]\nworkloads = ["lifecycle"]\niterations = 1\nwarmup = 0\n'
        "[scenario]\nhours = 8\n[pricing]\nlocal_usd_per_hour = 0.5\n"
        + LOCAL_STATE.format(state=tmp_path / "state")
    )
    run = cli("run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[0] == (
        "config: bench.toml (found in the current folder; --config none to run without it)"
    )
    assert lines[1].startswith("estimated cost $")
    [folder] = list((tmp_path / "results").iterdir())
    manifest = load_run(folder).manifest
    assert manifest["config_file"] == str(tmp_path / "bench.toml")
    assert manifest["config"]["scenario"]["hours"] == 8.0
    assert manifest["config"]["scenario"]["checkpoints"] == 4  # the declared default
    assert manifest["config"]["pricing"] == {"catalog": None, "local_usd_per_hour": 0.5}
    assert manifest["plan"]["workloads"] == ["lifecycle"]


def test_every_command_has_help_with_a_line_per_option_and_an_example(tmp_path):
    import argparse

    from bench.cli import build_parser
    from bench.config import RunConfig
    from providers.settings import declared

    commands = ("run", "providers", "show", "report", "reap", "compare", "history", "site",
                "export", "emulate")  # fmt: skip
    for command in commands:
        result = cli(command, "--help", cwd=tmp_path, env={"COLUMNS": "100"})
        assert result.returncode == 0, result.stderr
        assert "examples:" in result.stdout, command
        assert f"  sandbox-bench {command} " in result.stdout, command
    # Every command is covered, and each of its options and arguments says what it is.
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == set(commands)
    for command, parser in sub.choices.items():
        assert parser.epilog and "examples:" in parser.epilog, command
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help and action.help.strip(), (command, action.dest)
    run_help = cli("run", "--help", cwd=tmp_path, env={"COLUMNS": "100"}).stdout
    flat = " ".join(run_help.split())
    for decl in declared(RunConfig):
        if decl.info.flag:
            assert decl.info.flag in run_help
            assert " ".join(decl.describe().removesuffix("; default ").split()) in flat
    report_help = " ".join(cli("report", "--help", cwd=tmp_path).stdout.split())
    flags = ("--pricing", "--local-usd-per-hour", "--scenario-hours", "--scenario-active-fraction",
             "--scenario-snapshot-gib", "--sections")  # fmt: skip
    assert all(flag in report_help for flag in flags)


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
    for provider_id in ("local", "e2b", "daytona", "sprites", "vercel"):
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


def test_report_flags_reach_the_report_settings_as_agreed(tmp_path, monkeypatch, capsys):
    """The CLI side of the report's settings (bench.report.ReportSettings: include_warmups,
    seed, pricing_path, local_rate_usd_per_hour, claims_path, scenario overrides by
    SessionScenario key, sections; ValueError for a bad one), with a stand-in that records
    what it is given and refuses an unknown section as the real one does."""
    import bench.report
    from bench import cli as cli_module

    given: list[dict] = []

    class Settings:
        def __init__(self, **kwargs):
            if "nope" in kwargs.get("sections", ()):
                raise ValueError("unknown report section(s) nope (known: summary, costs)")
            given.append(kwargs)

    written: list = []
    monkeypatch.setattr(bench.report, "ReportSettings", Settings)
    monkeypatch.setattr(bench.report, "write_report", lambda f, o, settings: written.append(f))
    (tmp_path / "results" / "r1").mkdir(parents=True)
    (tmp_path / "results" / "r1" / "manifest.json").write_text("{}")
    catalog = tmp_path / "prices.toml"
    catalog.write_text((ROOT / "providers" / "pricing.toml").read_text())
    argv = ["report", "r1", "--results", str(tmp_path / "results"), "--out", str(tmp_path)]
    code = cli_module.main([
        *argv, "--pricing", str(catalog), "--local-usd-per-hour", "0.2",
        "--scenario-hours", "8", "--scenario-resumes", "0", "--sections", "summary, costs",
        "--seed", "3", "--include-warmups",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert given == [
        {
            "include_warmups": True,
            "seed": 3,
            "pricing_path": catalog,
            "local_rate_usd_per_hour": 0.2,
            "scenario": {"hours": 8.0, "resumes": 0},
            "sections": ("summary", "costs"),
        }
    ]
    assert written == [[tmp_path / "results" / "r1"]]
    assert cli_module.main([*argv]) == 0 and given[-1] == {"include_warmups": False}
    capsys.readouterr()
    assert cli_module.main([*argv, "--sections", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sandbox-bench: error: report: unknown report section(s) nope (known: "
                   "summary, costs)"]  # fmt: skip
