"""The budget cap: refuse a plan estimated over the cap; stop scheduling once spending nears it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.store import load_ledger, load_run
from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[1]


def _catalog(tmp_path: Path) -> Path:
    """The real catalog with the local provider billed per millisecond (so that estimates
    and measured spending are not both rounded up to the same whole second)."""
    text = (ROOT / "providers" / "pricing.toml").read_text()
    head, local = text.split("[providers.local]", 1)
    local = re.sub(r"(?m)^granularity_s = .*$", "granularity_s = 0.001", local, count=1)
    path = tmp_path / "pricing.toml"
    path.write_text(head + "[providers.local]" + local)
    return path


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    config = tmp_path / "bench.toml"
    config.write_text(
        f'[run]\noutput = "{tmp_path / "results"}"\nassumed_op_s = 0.001\n'
        f'[pricing]\nlocal_usd_per_hour = 36\ncatalog = "{_catalog(tmp_path)}"\n'
        f'[providers.local]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "bench", "run", "--config", str(config), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_a_plan_estimated_over_the_cap_is_refused_before_anything_is_created(tmp_path):
    needs_root()
    result = _run(tmp_path, "--workloads", "pause_resume", "--iterations", "10",
                  "--warmup", "0", "--max-cost-usd", "0.05")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "estimated cost $0.1" in result.stderr  # 10 x ~1.6 s of waits at $0.01/s
    assert "exceeds --max-cost-usd $0.05; nothing was created" in result.stderr
    assert not (tmp_path / "results").exists()
    assert not list((tmp_path / "state" / "sandboxes").glob("*"))


def test_a_run_whose_spending_reaches_the_cap_stops_scheduling(tmp_path):
    needs_root()
    # lifecycle is estimated at 4 x 1 ms of operations but really takes tens of ms per
    # iteration, so spending overtakes the estimate and the cap stops the run part-way.
    result = _run(tmp_path, "--workloads", "lifecycle", "--iterations", "200",
                  "--warmup", "0", "--max-cost-usd", "0.01", "--seed", "3")  # fmt: skip
    assert result.returncode == 1, result.stderr
    [folder] = list((tmp_path / "results").iterdir())
    run = load_run(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "budget_exhausted"
    assert manifest["spent_usd"] <= 0.01
    assert manifest["budget"]["max_cost_usd"] == 0.01
    iterations = {s.iteration for s in run.samples}
    assert 0 < len(iterations) < 200
    # every iteration that started finished: four records each, and nothing left alive
    assert len(run.samples) == 4 * len(iterations)
    ledger, _ = load_ledger(folder)
    created = {e["sandbox_id"] for e in ledger if e["event"] == "created"}
    assert created == {e["sandbox_id"] for e in ledger if e["event"] == "destroyed"}


def test_the_cap_prices_at_the_highest_sourced_rate(tmp_path):
    """Sprites' CPU rate has two sourced values ($0.07 and about $0.0275 per vCPU-hour). In a
    catalog that lists the lower first (its primary value), the estimate and the spend still
    use the higher, so the cap holds whichever source is right."""
    from bench.budget import Budget, highest, item_estimate_usd
    from bench.cost import Shape, load_catalog
    from bench.runner import MemorySink
    from bench.workloads import WORKLOADS
    from providers import provider_class

    text = (ROOT / "providers" / "pricing.toml").read_text()
    high, low = text.split("[[providers.sprites.compute.cpu.values]]\n")[1:3]
    low = low.split("\n\n")[0] + "\n\n"
    assert "usd = 0.07\n" in high and "0.00000764" in low
    swapped = (
        text.replace(high.split("\n\n")[0] + "\n\n", "@@HIGH@@", 1)
        .replace(low, high.split("\n\n")[0] + "\n\n", 1)
        .replace("@@HIGH@@", low, 1)
    )
    path = tmp_path / "pricing.toml"
    path.write_text(swapped)
    catalog = load_catalog(path)
    sprites = catalog.get("sprites")
    shape = Shape(cpus=1, memory_gib=1)
    rate = {end: sprites.at(end).usd_per_s(sprites.shape_for(shape)) for end in ("primary", "high")}
    assert rate["primary"] < rate["high"]  # the lower rate is now the catalog's primary
    top = highest(catalog, "sprites")
    assert top.usd_per_s(top.shape_for(shape)) == rate["high"]
    assert highest(catalog, "no-such-provider") is None

    budget = Budget(MemorySink(), cap_usd=None, catalog=catalog, shape=shape, item_cost={})
    budget.add_ledger({"event": "created", "provider": "sprites", "sandbox_id": "s1"})
    budget._alive[("sprites", "s1")] -= 3600.0  # alive for an hour
    budget.add_ledger({"event": "destroyed", "provider": "sprites", "sandbox_id": "s1"})
    hour = top.billed_seconds(3600.0) * rate["high"]
    assert hour <= budget.spent_usd() < hour * 1.01  # plus the test's own instants

    estimate = item_estimate_usd(
        workload=WORKLOADS["lifecycle"]({}), caps=provider_class("sprites")({}).capabilities(),
        pricing=top, shape=shape, assumed_op_s=1.0,
    )  # fmt: skip
    at_primary = item_estimate_usd(
        workload=WORKLOADS["lifecycle"]({}), caps=provider_class("sprites")({}).capabilities(),
        pricing=sprites, shape=shape, assumed_op_s=1.0,
    )  # fmt: skip
    assert estimate > at_primary
