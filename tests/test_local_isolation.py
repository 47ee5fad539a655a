"""The local provider's sandboxes are isolated from the host and clean up after themselves."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from providers.base import RUN_LABEL, SandboxSpec
from providers.nsbox.provider import CGROUP_GROUP, CGROUP_ROOT, agent_socket

ROOT = Path(__file__).resolve().parents[1]


async def run(provider, sandbox, command, timeout_s=30):
    return await provider.exec(sandbox, command, timeout_s=timeout_s)


async def test_the_sandbox_sees_none_of_the_hosts_private_files(open_provider):
    marker = f"sandbox-bench-marker-{secrets.token_hex(4)}"
    host_files = [Path("/tmp") / marker, Path("/root") / marker]
    for path in host_files:
        path.write_text("host secret")
    try:
        async with open_provider("local") as (provider, _):
            sandbox = await provider.create(SandboxSpec())
            try:
                for path in host_files:
                    result = await run(provider, sandbox, ["test", "-e", str(path)])
                    assert result.exit_code == 1, f"{path} is visible inside the sandbox"
                listing = await run(provider, sandbox, "ls /home /work /var/lib 2>&1; true")
                assert marker.encode() not in listing.stdout
                assert b"main" not in listing.stdout  # the repository under /work
                state = await run(provider, sandbox, ["test", "-e", str(provider.state_dir)])
                assert state.exit_code == 1
                # ...while the system directories are there, so tools work
                python = await run(provider, sandbox, ["python3", "-c", "print(6 * 7)"])
                assert python.stdout.strip() == b"42"
            finally:
                await provider.destroy(sandbox)
    finally:
        for path in host_files:
            path.unlink()


async def test_the_sandbox_sees_only_its_own_processes_and_only_loopback(open_provider):
    async with open_provider("local") as (provider, _):
        sandbox = await provider.create(SandboxSpec())
        try:
            pids = await run(provider, sandbox, "ls /proc | grep -E '^[0-9]+$'")
            numbers = sorted(int(p) for p in pids.stdout.split())
            assert numbers[0] == 1 and len(numbers) < 10, numbers
            assert str(os.getpid()).encode() not in pids.stdout.split()
            interfaces = await run(provider, sandbox, "tail -n +3 /proc/net/dev | cut -d: -f1")
            assert interfaces.stdout.split() == [b"lo"]
            hostname = await run(provider, sandbox, ["hostname"])
            assert hostname.stdout.strip() == sandbox.id.encode()
            assert hostname.stdout.strip() != os.uname().nodename.encode()
        finally:
            await provider.destroy(sandbox)


async def test_writes_stay_in_the_sandbox_even_to_system_directories(open_provider):
    name = f"sandbox-bench-{secrets.token_hex(4)}"
    async with open_provider("local") as (provider, _):
        sandbox = await provider.create(SandboxSpec())
        try:
            for folder in ("/usr/local/bin", "/etc", "/root", "/var/lib"):
                result = await run(
                    provider, sandbox, f"echo x > {folder}/{name} && cat {folder}/{name}"
                )
                assert result.exit_code == 0 and result.stdout == b"x\n", folder
                assert not Path(folder, name).exists(), f"a write to {folder} reached the host"
        finally:
            await provider.destroy(sandbox)


async def test_pause_freezes_every_process_and_exec_waits_for_resume(open_provider):
    async with open_provider("local") as (provider, _):
        sandbox = await provider.create(SandboxSpec())
        try:
            await provider.pause(sandbox)
            pending = asyncio.ensure_future(run(provider, sandbox, ["echo", "after"]))
            await asyncio.sleep(0.3)
            assert not pending.done(), "exec completed inside a frozen sandbox"
            await provider.resume(sandbox)
            result = await asyncio.wait_for(pending, timeout=10)
            assert result.stdout == b"after\n"
        finally:
            await provider.destroy(sandbox)


async def test_an_exec_over_its_timeout_is_killed_and_reported(open_provider):
    from providers.errors import OperationTimeout

    async with open_provider("local") as (provider, _):
        sandbox = await provider.create(SandboxSpec())
        try:
            with pytest.raises(OperationTimeout):
                await run(provider, sandbox, "sleep 30", timeout_s=0.3)
            survivors = await run(provider, sandbox, "ps -eo comm | grep -c '^sleep$'; true")
            assert survivors.stdout.strip() == b"0"
        finally:
            await provider.destroy(sandbox)


async def test_limits_contain_a_fork_bomb_and_a_memory_hog(open_provider):
    async with open_provider("local") as (provider, _):
        small = SandboxSpec(memory_mb=64, max_pids=32)
        bomb, hog = await provider.create(small), await provider.create(small)
        bystander = await provider.create(SandboxSpec())
        try:
            forks = await run(
                provider,
                bomb,
                "for i in $(seq 100); do sleep 5 & done 2>&1 | tail -1; jobs | wc -l",
            )
            assert b"fork" in forks.stdout.lower() or b"resource" in forks.stdout.lower()
            memory = await run(provider, hog, ["python3", "-c", "b = bytearray(512 * 2**20)"])
            assert memory.exit_code != 0  # killed by the cgroup's OOM killer
            alive = await run(provider, bystander, ["echo", "fine"])
            assert alive.stdout == b"fine\n"
        finally:
            for sandbox in (bomb, hog, bystander):
                await provider.destroy(sandbox)


def _cgroup_dirs(sandbox_id: str) -> list[Path]:
    return [d for d in CGROUP_ROOT.glob(f"*/{CGROUP_GROUP}/{sandbox_id}")] + list(
        CGROUP_ROOT.glob(f"{CGROUP_GROUP}/{sandbox_id}")
    )


async def test_destroy_leaves_no_process_cgroup_mount_or_directory(open_provider):
    async with open_provider("local") as (provider, _):
        sandbox = await provider.create(SandboxSpec(labels={RUN_LABEL: "leak"}))
        await run(provider, sandbox, "nohup sleep 300 >/dev/null 2>&1 &")
        pid = int((provider.state_dir / "sandboxes" / sandbox.id / "pid").read_text().split()[0])
        assert _cgroup_dirs(sandbox.id)
        await provider.destroy(sandbox)
        await provider.destroy(sandbox)  # idempotent
        assert not Path(f"/proc/{pid}").exists()
        assert _cgroup_dirs(sandbox.id) == []
        assert not (provider.state_dir / "sandboxes" / sandbox.id).exists()
        assert not agent_socket(sandbox.id).exists()
        assert sandbox.id not in Path("/proc/self/mountinfo").read_text()
        assert await provider.list_sandboxes("leak") == []


def test_a_killed_harness_leaves_no_sandbox_behind(tmp_path):
    """kill -9 of the process that owns the provider: its zygote tears everything down."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    script = tmp_path / "owner.py"
    script.write_text(
        "import asyncio, sys\n"
        "from providers.nsbox import LocalProvider\n"
        "from providers.base import SandboxSpec\n"
        "async def main():\n"
        f"    p = LocalProvider({{'state_dir': '{tmp_path / 'state'}'}})\n"
        "    await p.open()\n"
        "    a = await p.create(SandboxSpec()); b = await p.create(SandboxSpec())\n"
        "    await p.exec(a, 'nohup sleep 300 >/dev/null 2>&1 &', timeout_s=10)\n"
        "    await p.pause(b)\n"
        "    print(a.id, b.id, flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert owner.stdout is not None
        ids = owner.stdout.readline().decode().split()
        assert len(ids) == 2
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            left = [
                i for i in ids if _cgroup_dirs(i) or (tmp_path / "state/sandboxes" / i).exists()
            ]
            if not left:
                break
            time.sleep(0.1)
        assert left == []
        assert not any(agent_socket(i).exists() for i in ids)
    finally:
        if owner.poll() is None:
            owner.kill()
