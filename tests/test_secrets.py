"""A planted API key never reaches results, manifests, ledgers, reports or logs, even when
the provider fails and SDK errors could echo what they sent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from bench.emulators.control import running
from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[1]
PLANTED = "sk_planted_0123456789abcdef_SECRET"


async def test_a_planted_key_is_found_nowhere(tmp_path):
    needs_root()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    async with (
        running("e2b", tmp_path / "e2b", token=PLANTED) as e2b,
        running("daytona", tmp_path / "daytona", token=PLANTED) as daytona,
        running("sprites", tmp_path / "sprites", token=PLANTED) as sprites,
        running("vercel", tmp_path / "vercel", token=PLANTED) as vercel,
    ):
        for emulator in (e2b, daytona, sprites, vercel):
            env.update(emulator.client_env())
            # failures whose messages an SDK might fill with request details
            await emulator.inject(401, count=2)
            await emulator.inject(500, count=2)
        assert env["E2B_API_KEY"] == PLANTED
        results, reports = tmp_path / "results", tmp_path / "reports"
        logs = []
        for argv in (
            ["run", "--providers", "e2b,daytona,sprites,vercel", "--workloads", "lifecycle,files",
             "--iterations", "2", "--warmup", "0", "--output", str(results)],
            ["report", "latest", "--results", str(results), "--out", str(reports)],
            ["show", "latest", "--results", str(results)],
            ["providers"],
        ):  # fmt: skip
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bench", *argv],
                cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
            )  # fmt: skip
            logs.append(done.stdout + done.stderr)
            assert done.returncode in (0, 1), done.stderr
    samples = next(results.glob("*/samples.jsonl")).read_text()
    assert '"status":"error"' in samples, "the injected failures should be in the run"
    for text in logs:
        assert PLANTED not in text
    files = [p for p in (*results.rglob("*"), *reports.rglob("*")) if p.is_file()]
    assert files
    for path in files:
        assert PLANTED.encode() not in path.read_bytes(), f"key leaked into {path}"
