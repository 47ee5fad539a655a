"""guest_perf's unhappy paths on real local sandboxes: a missing tool, wrong answers, a lying
clock, reachable and unreachable network targets; and its pure parts (what a sandbox cannot
measure and why, the inspect parser, the settings)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.records import Sample, Status
from bench.runner import MemorySink, Recorder, Runner, make_plan
from bench.workloads import WORKLOADS
from bench.workloads.guest_perf import (
    GuestPerfSettings,
    key_values,
    parse_inspect,
    unsupported_reasons,
    zeros_digest,
)
from providers.base import Command, ExecResult, Provider, Sandbox, SandboxSpec
from providers.settings import SettingError
from tests.wrapped_provider import Wrapped, replace_output, text_of

TINY: dict[str, Any] = {"cpu_mb": 2, "py_loops": 20_000, "mem_mb": 2, "mem_repeats": 2,
                        "write_mb": 2, "io_file_mb": 2, "read_ops": 50, "write_ops": 5}  # fmt: skip
PORT = 8765


async def run_guest_perf(provider: Provider, params: dict[str, Any]) -> dict[str, Sample]:
    sink = MemorySink()
    runner = Runner(
        providers={"local": provider},
        workloads={"guest_perf": WORKLOADS["guest_perf"]({**TINY, **params})},
        spec=SandboxSpec(cpus=1, memory_mb=1024),
        recorder=Recorder(sink, run_id="guest-perf-test", concurrency=1),
        timeout_s=60,
    )
    await runner.run(make_plan(["local"], ["guest_perf"], iterations=1, warmup=0, seed=1))
    assert await provider.list_sandboxes("guest-perf-test") == []
    found = {s.operation: s for s in sink.samples}
    assert len(found) == len(sink.samples)  # one record per operation
    return found


def _is(command: Command, *markers: str) -> bool:
    text = text_of(command)
    return all(m in text for m in markers)


async def test_without_python3_memory_and_disk_writes_fall_back_to_dd_and_the_rest_say_why(
    open_provider,
):
    def no_python(command: Command, result: ExecResult) -> ExecResult:
        if _is(command, 'echo "tool=$t"'):  # the inspect script: python3 is not there
            return replace_output(result, b"tool=python3\n", b"")
        return result

    async with open_provider("local") as (local, _):
        ops = await run_guest_perf(Wrapped(local, exec_hook=no_python), {})
    assert "python3" not in ops["inspect"].extra["tools"]
    for op in ("cpu_python", "disk_rand_read", "disk_rand_write"):
        assert ops[op].status == Status.UNSUPPORTED, op
        assert ops[op].error_message == "the sandbox has no python3 (not found by `command -v`)"
    assert ops["mem_bandwidth"].status == Status.OK
    assert ops["mem_bandwidth"].extra["mem_method"] == "dd_zero"
    assert ops["mem_bandwidth"].extra["mem_gib_per_s"] > 0
    assert ops["disk_seq_write"].status == Status.OK
    assert ops["disk_seq_write"].extra["io_method"] == "dd_zeros"
    assert ops["disk_seq_write"].extra["seq_write_mib_per_s"] > 0
    assert ops["cpu_sha256"].status == ops["cpu_parallel"].status == Status.OK


async def test_wrong_answers_are_errors_and_the_next_measurement_goes_on(open_provider):
    def lie(command: Command, result: ExecResult) -> ExecResult:
        text = text_of(command)
        if "while [" in text:  # cpu_parallel: one process never answers
            return replace_output(result, b"digest=", b"lost=")
        if "sha256sum" in text and "digest=" in text:  # cpu_sha256: a wrong digest
            return replace_output(result, zeros_digest(2 << 20).encode(), b"0" * 64)
        if "s += i * i" in text:
            return replace_output(result, b"sum=", b"sum=1")
        if "dst[:] = src" in text:
            return replace_output(result, b"ok=1", b"ok=0")
        if "os.fsync(fd)" in text and "seq" in text:
            return replace_output(result, b"size=", b"size=1")
        if "preadv" in text:
            return replace_output(result, b"ops=", b"ops=1")
        return result

    async with open_provider("local") as (local, _):
        ops = await run_guest_perf(Wrapped(local, exec_hook=lie), {})
    wrong = {op: (s.status, s.error_type) for op, s in ops.items() if s.status != Status.OK}
    assert wrong == {
        "cpu_sha256": (Status.ERROR, "WrongAnswer"),
        "cpu_kernel": (Status.SKIPPED, None),  # no hashing time to show without a right digest
        "cpu_python": (Status.ERROR, "WrongAnswer"),
        "cpu_parallel": (Status.ERROR, "UnexpectedOutput"),
        "mem_bandwidth": (Status.ERROR, "WrongAnswer"),
        "disk_seq_write": (Status.ERROR, "WrongAnswer"),
        "disk_rand_read": (Status.ERROR, "WrongAnswer"),
        "disk_rand_write": (Status.ERROR, "WrongAnswer"),
        "net_dns": (Status.UNSUPPORTED, None),
        "net_https": (Status.UNSUPPORTED, None),
    }
    assert all(ops[op].duration_s is None for op in wrong)
    assert ops["destroy"].status == Status.OK  # every measurement was still attempted


async def test_a_clock_that_runs_ahead_of_the_exec_is_implausible(open_provider):
    def slow_clock(command: Command, result: ExecResult) -> ExecResult:
        if _is(command, "sha256sum", "digest="):
            return replace_output(result, b"ns=", b"ns=9")  # 9 s and more: longer than the exec
        if _is(command, "s += i * i"):
            return replace_output(result, b"s=", b"s=-")
        return result

    async with open_provider("local") as (local, _):
        ops = await run_guest_perf(Wrapped(local, exec_hook=slow_clock), {})
    for op in ("cpu_sha256", "cpu_parallel", "cpu_python"):
        assert (ops[op].status, ops[op].error_type) == (Status.ERROR, "Implausible"), op
    assert "longer than the" in ops["cpu_sha256"].error_message
    assert ops["mem_bandwidth"].status == Status.OK


async def test_loopback_targets_are_reached_and_unreachable_ones_are_errors(open_provider):
    async def serve(inner: Provider, sandbox: Sandbox) -> None:
        start = (
            f"nohup python3 -m http.server {PORT} --bind 127.0.0.1 >/dev/null 2>&1 &\n"
            f"for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:{PORT}/ && exit 0; "
            "sleep 0.05; done; exit 1"
        )
        assert (await inner.exec(sandbox, start, timeout_s=30)).exit_code == 0

    reached = {"dns_name": "localhost", "https_url": f"http://127.0.0.1:{PORT}/"}
    missed = {"dns_name": "no-such-name.localhost", "https_url": "http://127.0.0.1:9/"}
    async with open_provider("local") as (local, _):
        ok = await run_guest_perf(Wrapped(local, after_create=serve), reached)
        bad = await run_guest_perf(local, missed)
    assert ok["net_dns"].status == Status.OK and ok["net_dns"].extra["net_tool"] == "getent"
    assert 0 < ok["net_dns"].extra["dns_s"] <= ok["net_dns"].duration_s
    assert ok["net_https"].status == Status.OK and ok["net_https"].extra["net_tool"] == "curl"
    assert ok["net_https"].extra["http_status"] == 200
    assert 0 < ok["net_https"].extra["https_s"] <= ok["net_https"].duration_s
    for op in ("net_dns", "net_https"):
        assert (bad[op].status, bad[op].error_type) == (Status.ERROR, "Unreachable"), op
    assert "no-such-name.localhost did not resolve (getent)" in bad["net_dns"].error_message
    assert "http://127.0.0.1:9/: curl exited 7" in bad["net_https"].error_message
    assert "error=" not in bad["net_https"].error_message  # curl's own words, unprefixed
    assert bad["destroy"].status == Status.OK


# -- pure parts ---------------------------------------------------------------------------------

FOUND = {"tools": ["curl", "getent", "head", "python3", "sha256sum"], "clock": True,
         "netdev": True, "net_interfaces": ["eth0"]}  # fmt: skip
SETTINGS = GuestPerfSettings()


def test_a_complete_sandbox_with_a_route_can_measure_everything():
    assert unsupported_reasons(FOUND, SETTINGS) == {}


def test_what_each_missing_tool_takes_away():
    bare = {**FOUND, "tools": [], "clock": False}
    assert set(unsupported_reasons(bare, SETTINGS)) == {
        "cpu_sha256", "cpu_python", "cpu_parallel", "mem_bandwidth", "disk_seq_write",
        "disk_rand_read", "disk_rand_write", "net_dns", "net_https",
    }  # fmt: skip
    # Without python3 a clock is enough for memory and sequential writes (dd), getent with a
    # clock for DNS, curl for HTTPS.
    no_python = {**FOUND, "tools": ["curl", "getent", "head", "sha256sum"]}
    assert set(unsupported_reasons(no_python, SETTINGS)) == {
        "cpu_python", "disk_rand_read", "disk_rand_write",
    }  # fmt: skip
    no_clock = {**FOUND, "clock": False}
    reasons = unsupported_reasons(no_clock, SETTINGS)
    assert set(reasons) == {"cpu_sha256", "cpu_parallel"}
    assert "no nanosecond clock" in reasons["cpu_sha256"]
    only_lo = {**FOUND, "net_interfaces": []}
    assert set(unsupported_reasons(only_lo, SETTINGS)) == {"net_dns", "net_https"}
    loopback = GuestPerfSettings(dns_name="localhost", https_url="http://127.0.0.1:1/")
    assert unsupported_reasons(only_lo, loopback) == {}  # a route to lo always exists


@given(
    tools=st.sets(st.sampled_from(["curl", "getent", "head", "python3", "sha256sum"])),
    clock=st.booleans(),
    netdev=st.booleans(),
    ifaces=st.lists(st.sampled_from(["eth0", "ens5"]), max_size=2),
)
def test_every_reason_names_what_is_missing_and_fits_the_frames_list_format(
    tools, clock, netdev, ifaces
):
    found = {"tools": sorted(tools), "clock": clock, "netdev": netdev, "net_interfaces": ifaces}
    reasons = unsupported_reasons(found, SETTINGS)
    for op, why in reasons.items():
        assert "; " not in why  # the report splits the recorded list on "; "
        assert why.startswith(("the sandbox has no", "no route to")), (op, why)
        named = [t for t in ("curl", "getent", "head", "python3", "sha256sum") if f"no {t} " in why]
        assert all(t not in tools for t in named)
    if {"python3"} <= tools:
        assert not {"cpu_python", "disk_rand_read", "disk_rand_write"} & set(reasons)


@given(st.text())
def test_the_inspect_parser_never_fails_on_any_output(text):
    found = parse_inspect(text)
    assert found["nproc"] is None or found["nproc"] > 0
    assert isinstance(found["tools"], list) and isinstance(found["clock"], bool)


def test_key_values_keep_repeats_and_ignore_noise():
    text = "digest=aa\nnoise\n  digest=bb  \nns=12\ncurl: (7) failed\nweird key=1\n"
    assert key_values(text) == {"digest": ["aa", "bb"], "ns": ["12"]}


def test_zeros_digest_is_sha256_of_zeros():
    for size in (0, 1, (1 << 20) + 3):
        assert zeros_digest(size) == hashlib.sha256(bytes(size)).hexdigest()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"dns_name": "bad name; rm -rf /"}, "dns_name: not a host name"),
        ({"https_url": "ftp://example.com/"}, "https_url: not an http(s) URL"),
        ({"https_url": "https://exa mple.com/"}, "https_url: must not contain spaces"),
        ({"cpu_mb": 0}, "cpu_mb must be at least 1"),
        ({"processes": 257}, "processes must be at most 256"),
    ],
)
def test_bad_settings_are_refused_in_one_line(table, message):
    with pytest.raises(ValueError) as info:
        WORKLOADS["guest_perf"].validate_params(table)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, SettingError | ValueError)


# -- the report's CPU warnings ------------------------------------------------------------------


def test_sandboxes_short_of_their_billed_cpus_are_warned_about(tmp_path):
    """From records as the workload writes them (not emulated: real endpoints): e2b's two
    processes ran at half the speed of one; a Sprite shows 2 CPUs of the 8 it is billed for;
    a daytona sandbox shows 4 CPUs but delivers one; local does what it is billed for."""
    from bench.records import Status as S
    from bench.report import ReportData, ReportSettings
    from bench.report.runs import load_runs
    from bench.store import RunWriter
    from bench.workloads.guest_perf_report import cpu_warnings
    from tests.synthetic import manifest

    folder = tmp_path / "20261130T020000Z-cpus"
    spec = {"cpus": 2.0, "memory_mb": 2048, "disk_mb": None, "template": None,
            "lifetime_s": 900, "max_pids": 512}  # fmt: skip
    providers = ("daytona", "e2b", "local", "sprites")
    meta = manifest(folder.name, providers=providers, workloads=("guest_perf",), iterations=3,
                    warmup=0, seed=1, spec=spec)  # fmt: skip
    meta["providers"] = {p: {"capabilities": {}, "environment": {"endpoint": f"https://{p}.io"}}
                         for p in providers}  # fmt: skip
    seen = {  # provider: (nproc, processes, speedup)
        "e2b": (2, 2, 0.5),
        "sprites": (2, 2, 1.9),
        "daytona": (4, 4, 1.0),
        "local": (2, 2, 1.95),
    }
    writer = RunWriter(folder, meta)
    sample_id = 0
    for provider, (nproc, procs, speedup) in seen.items():
        for iteration in range(3):
            sample_id += 1
            writer.add_sample(Sample(
                run_id=folder.name, sample_id=sample_id, provider=provider,
                workload="guest_perf", operation="cpu_parallel", iteration=iteration,
                warmup=False, concurrency=1, started_at="2026-11-30T02:00:00+00:00",
                duration_s=1.0, status=S.OK,
                extra={"nproc": nproc, "processes": procs, "speedup": speedup,
                       "mem_method": "dd_zero" if provider == "local" else "python_memcpy"},
            ))  # fmt: skip
    writer.close()
    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    texts = {(w.kind, w.text.split(":")[0]): w.text for w in cpu_warnings(data)}
    assert "delivers about 0.5 of the 2 vCPUs" in texts[("cpus delivered", "e2b")]
    assert "shows 2 CPUs (nproc) of the 8 vCPUs" in texts[("cpus delivered", "sprites")]
    assert "oversubscribes" in texts[("nproc", "daytona")]
    assert not any(p == "local" for kind, p in texts if kind != "comparability")
    assert "different methods" in texts[("comparability", "guest_perf")]
