"""[run] cpu_latency: the client's PM QoS request is held while iterations run, released after,
and a machine that refuses it is a recorded fact, never a failed run (bench/cpu_latency.py)."""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path

import pytest

from bench import cpu_latency
from bench.config import ConfigError, build_config
from bench.records import RunStatus
from bench.session import LocalExecutor, run_session
from providers.stub import StubProvider


def test_hold_writes_zero_keeps_the_file_open_and_release_closes_it(tmp_path):
    device = tmp_path / "cpu_dma_latency"  # a plain file takes the same write and read
    device.write_bytes(struct.pack("i", 2_000_000_000))
    held = cpu_latency.hold("hold", device)
    assert held.held and held.observed_us == 0
    fd = held._fd
    assert fd is not None and os.fstat(fd)  # open while held: the kernel keeps the request
    assert struct.unpack("i", device.read_bytes()[:4])[0] == 0
    held.release()
    with pytest.raises(OSError):
        os.fstat(fd)
    held.release()  # twice is harmless


@pytest.mark.parametrize(
    ("device", "words"),
    [
        (Path("/nonexistent/cpu_dma_latency"), "could not be opened"),
        (Path("/dev/full"), "refused the request"),  # every write fails with ENOSPC
    ],
)
def test_a_machine_that_refuses_is_a_fact_not_an_error(device, words):
    held = cpu_latency.hold("hold", device)
    facts = held.facts()
    assert not held.held and facts["held"] is False and facts["observed_us"] is None
    assert words in facts["reason"] and facts["requested"] == "hold"
    held.release()


def test_system_asks_for_nothing(tmp_path):
    device = tmp_path / "untouched"
    held = cpu_latency.hold("system", device)
    assert not held.held and "as asked" in held.reason and not device.exists()


def _run(tmp_path: Path, **run: object) -> dict:
    config = build_config(
        {"run": {"providers": ["stub"], "workloads": ["lifecycle"], "iterations": 2, **run}},
        {"output": tmp_path / "results"},
    )
    executor = LocalExecutor(config, {"stub": StubProvider()})
    folder, status = asyncio.run(run_session(config, executor))
    assert status is RunStatus.COMPLETED
    assert executor._latency is not None and executor._latency._fd is None  # released
    return json.loads((folder / "manifest.json").read_text())


def test_a_run_records_what_it_asked_for_and_what_it_got(tmp_path):
    manifest = _run(tmp_path)
    facts = manifest["client"]["cpu_latency"]
    assert manifest["config"]["cpu_latency"] == "hold" and facts["requested"] == "hold"
    if os.geteuid() == 0 and cpu_latency.DEVICE.exists():
        assert facts["held"] is True and facts["observed_us"] == 0
    else:
        assert facts["held"] is False and facts["reason"]
    assert "client_cpu" in manifest["quiet"]


def test_a_refused_request_does_not_stop_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_latency, "DEVICE", Path("/nonexistent/cpu_dma_latency"))
    facts = _run(tmp_path)["client"]["cpu_latency"]
    assert facts["held"] is False and "could not be opened" in facts["reason"]


def test_system_is_recorded_and_a_bad_value_is_refused(tmp_path):
    facts = _run(tmp_path, cpu_latency="system")["client"]["cpu_latency"]
    assert facts["requested"] == "system" and facts["held"] is False
    with pytest.raises(ConfigError, match="cpu_latency must be one of hold, system"):
        build_config({"run": {"cpu_latency": "fast"}}, {})
