"""E2B is billed at its template's size, whatever the run's spec: end to end through the real
``e2b`` SDK against its loopback emulator (root needed, as for every emulator test)."""

from __future__ import annotations

import aiohttp
import pytest

from bench.config import build_config
from bench.cost import Shape
from bench.report import ReportSettings, write_report
from bench.report.data import ReportData
from bench.report.decision import decision_of
from bench.report.runs import load_runs
from bench.session import run_session
from providers.base import RUN_LABEL, SandboxSpec
from providers.e2b import E2BProvider
from tests.conftest import emulator_env
from tests.report_parsing import html_tables

ENV_VARS = ("E2B_API_KEY", "E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DOMAIN", "E2B_DEBUG")

pytestmark = pytest.mark.timeout(300)


async def _template_size(url: str, token: str) -> Shape:
    """What the emulator says a sandbox of the base template has (E2B's list answer)."""
    provider = E2BProvider({})
    await provider.open()
    sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "billing-test"}, lifetime_s=120))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/v2/sandboxes", headers={"X-API-KEY": token}) as answer,
        ):
            answer.raise_for_status()
            [listed] = await answer.json()
    finally:
        await provider.destroy(sandbox)
        await provider.close()
    assert listed["templateID"] == "base"
    return Shape(cpus=float(listed["cpuCount"]), memory_gib=listed["memoryMB"] / 1024)


async def test_e2b_is_billed_at_its_templates_two_vcpus_not_the_runs_spec(tmp_path, monkeypatch):
    async with emulator_env("e2b", tmp_path / "emu", monkeypatch, clear=ENV_VARS) as emu:
        reported = await _template_size(emu.url, emu.token)
        config = build_config(
            {
                "run": {
                    "providers": ["e2b"],
                    "workloads": ["lifecycle", "probe"],
                    "iterations": 2,
                    "warmup": 0,
                    "output": str(tmp_path / "results"),
                },
                "spec": {"cpus": 1, "memory_mb": 1024},
            }
        )
        folder, _ = await run_session(config)
    assert reported == Shape(cpus=2, memory_gib=0.5)  # the emulator's template, as E2B's base

    data = ReportData(load_runs([folder]), ReportSettings(), tmp_path / "figures")
    size = data.sizes["e2b"]
    # Declared (the catalog's size of the template the run used) over the spec; the probe ran,
    # but inside the emulator's sandboxes, which are not E2B's, so it is not used, and said.
    assert (size.origin, size.shape) == ("declared", reported)
    assert "template 'base'" in size.source
    assert "describe the emulator's sandboxes" in size.note
    agent = next(d for d in decision_of(data).scenarios if d.scenario.name == "persistent_agent")
    price = agent.costs["e2b"].price
    assert price.billed_shape == reported
    assert any("billed at the declared size of its template, 2 vCPU / 0.5 GiB" in n
               for n in price.notes)  # fmt: skip

    report = write_report([folder], tmp_path / "reports")
    tables = dict(html_tables(report.read_text(encoding="utf-8")))
    e2b = next(r for r in tables["table-session-costs"][1:] if r[0] == "e2b")
    assert e2b[1] == "2 vCPU / 0.5 GiB"
    md = (report.parent / "report.md").read_text(encoding="utf-8")
    e2b_lines = [line for line in md.splitlines() if line.lstrip("- ").startswith("e2b:")]
    assert e2b_lines
    assert not any("the run's spec, 1 vCPU / 1 GiB" in line for line in e2b_lines)
