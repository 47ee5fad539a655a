"""Each emulator, started as a script, says where it listens and what to export."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import needs_root

ROOT = Path(__file__).resolve().parents[1]

#: What each emulator prints after ``LISTENING <url>``; ``{url}`` is that URL.
EXPORTS = {
    "e2b": [
        "export E2B_API_KEY=tok",
        "export E2B_API_URL={url}",
        "export E2B_SANDBOX_URL={url}",
    ],
    "daytona": [
        "export DAYTONA_API_KEY=tok",
        "export DAYTONA_API_URL={url}/api",
        "export DAYTONA_USE_DEPRECATED_POLLING=true",
    ],
    "sprites": [
        "export SPRITES_TOKEN=tok",
        "export SPRITES_API_URL={url}",
        "export SPRITES_CLIENT_SIGNALS=off",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
async def test_the_emulator_script_prints_the_export_lines_after_listening(tmp_path, name):
    needs_root()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"tests.emulators.{name}", "--port", "0",
        "--state-dir", str(tmp_path / "emu"), "--token", "tok",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [
            (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
            for _ in range(1 + len(EXPORTS[name]))
        ]
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
    url = lines[0].removeprefix("LISTENING ")
    assert lines[0].startswith("LISTENING http://127.0.0.1:")
    assert lines[1:] == [line.format(url=url) for line in EXPORTS[name]]
