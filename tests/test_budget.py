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
