"""The ``providers.local`` sandboxes: isolated from the host, faithful, and leak-free.

Needs root (namespaces, overlayfs, cgroups); the non-root test runs a script as uid 65534.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from providers.base import RUN_LABEL, CheckpointCaptures, Op, SandboxSpec
from providers.errors import NotFound, OperationTimeout, ProviderError, SandboxCrashed
from providers.local import LocalProvider, destroy_by_id, layers, list_sandboxes
from providers.local import cgroups as cg
from providers.local import seccomp as seccomp_module
from providers.local.provider import _mount_of, lock_passwords
from providers.settings import declared

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the local provider's full mode needs root"),
    pytest.mark.timeout(60),
]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
async def provider(state_dir: Path):
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def sandbox(provider: LocalProvider):
    sb = await provider.create(SandboxSpec(labels={RUN_LABEL: "test-run"}))
    try:
        yield sb
    finally:
        await provider.destroy(sb)


async def sh(provider, sandbox, command, timeout_s=20.0):
    return await provider.exec(sandbox, command, timeout_s=timeout_s)


def host_pids(provider: LocalProvider, sandbox) -> set[int]:
    handle = provider._sandboxes[sandbox.id]
    return cg.pids(handle.group)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- isolation ------------------------------------------------------------------------------


async def test_the_sandbox_sees_none_of_the_hosts_private_files(provider, sandbox, state_dir):
    marker = f"sandbox-bench-marker-{secrets.token_hex(4)}"
    planted = [Path("/tmp") / marker, Path("/root") / marker]
    for path in planted:
        path.write_text("host secret")
    try:
        for path in [*planted, state_dir, ROOT, Path("/work"), Path("/root/.pyenv")]:
            result = await sh(provider, sandbox, ["test", "-e", str(path)])
            assert result.exit_code == 1, f"{path} is visible inside the sandbox"
        listing = await sh(provider, sandbox, "ls -A /root /home /tmp /opt /var/lib /mnt")
        assert listing.exit_code == 0, listing.stderr
        assert listing.stdout.split() == [
            b"/home:", b"/mnt:", b"/opt:", b"/root:", b"/tmp:", b"/var/lib:"
        ]  # fmt: skip
        # ...while the host's programs are there and work
        python = await sh(provider, sandbox, ["python3", "-c", "print(6 * 7)"])
        assert python.stdout == b"42\n"
        bash = await sh(provider, sandbox, ["bash", "-c", "echo $((1 + 2))"])
        assert bash.stdout == b"3\n"
    finally:
        for path in planted:
            path.unlink()


async def test_the_hosts_password_hashes_and_private_keys_stay_hidden(provider, sandbox):
    result = await sh(provider, sandbox, "cut -d: -f2 /etc/shadow /etc/gshadow | sort -u")
    assert result.exit_code == 0, result.stderr
    assert set(result.stdout.split()) <= {b"*", b"!", b"!!", b"!*"}
    if Path("/etc/ssl/private").exists():
        hidden = await sh(provider, sandbox, "ls -d /etc/ssl/private")
        assert hidden.exit_code != 0
    # the sandbox may still manage its own users
    added = await sh(provider, sandbox, "useradd -m sbuser && id -u sbuser && ls -d /home/sbuser")
    assert added.exit_code == 0, added.stderr


def test_lock_passwords_keeps_everything_but_the_hash():
    text = "root:$y$j9T$abc$def:19000:0:99999:7:::\nbin:*:19000::::::\nnobody:!:1::::::\n"
    assert lock_passwords(text) == (
        "root:!:19000:0:99999:7:::\nbin:*:19000::::::\nnobody:!:1::::::\n"
    )


async def test_the_sandbox_sees_only_its_own_processes(provider, sandbox):
    result = await sh(provider, sandbox, "ls /proc | grep -E '^[0-9]+$'; cat /proc/1/cmdline")
    lines = result.stdout.decode().split("\n")
    pids = [int(x) for x in lines if x.isdigit()]
    # PID 1 (init/reaper), the agent, the shell and its ls/grep/cat: nothing of the host's.
    assert max(pids) < 20, pids
    assert len(pids) <= 6, pids
    assert b"process_api" not in result.stdout  # the host's PID 1
    ps = await sh(provider, sandbox, ["ps", "-e", "-o", "pid=,comm="])
    names = ps.stdout.split()[1::2]
    assert names[:2] == [b"sb-init", b"sb-agent"] and b"pytest" not in ps.stdout


async def test_the_sandbox_has_only_a_loopback_interface(provider, sandbox):
    result = await sh(provider, sandbox, "ls /sys/class/net; tail -n +3 /proc/net/dev")
    lines = result.stdout.decode().split()
    assert lines[0] == "lo" and lines[1] == "lo:", result.stdout
    assert len([x for x in lines if x.endswith(":")]) == 1
    probe = textwrap.dedent(
        """
        import socket
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname(), timeout=2)
        print("loopback ok")
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
        except OSError as exc:
            print("outside unreachable", exc.errno)
        """
    )
    result = await sh(provider, sandbox, ["python3", "-c", probe])
    assert b"loopback ok" in result.stdout, result.stderr
    assert b"outside unreachable" in result.stdout


async def test_the_sandboxs_writes_never_reach_the_host(provider, sandbox, state_dir):
    name = f"sandbox-bench-{secrets.token_hex(4)}"
    host_etc = Path("/etc") / name
    host_usr = Path("/usr/share") / name
    host_etc.write_text("host\n")
    host_usr.write_text("host\n")
    try:
        script = (
            f"echo sandbox >> /etc/{name} && rm /usr/share/{name} && "
            f"echo new > /usr/local/{name} && echo r > /root/{name} && echo v > /var/tmp/{name}"
            f" && cat /etc/{name} && ! test -e /usr/share/{name}"
        )
        result = await sh(provider, sandbox, script)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == b"host\nsandbox\n"
        assert host_etc.read_text() == "host\n"
        assert host_usr.read_text() == "host\n"
        for path in (f"/usr/local/{name}", f"/root/{name}", f"/var/tmp/{name}"):
            assert not Path(path).exists(), f"{path} reached the host"
        upper = state_dir / "sandboxes" / sandbox.id / "fs" / "upper"
        assert (upper / "etc" / name).read_text() == "host\nsandbox\n"
        assert (upper / "top" / "root" / name).read_text() == "r\n"
    finally:
        host_etc.unlink()
        host_usr.unlink()


async def test_the_sandboxs_root_cannot_mount_make_devices_or_tune_the_kernel(provider, sandbox):
    attempts = {
        "mount": "mount -t tmpfs none /mnt",
        "mknod": "mknod /root/disk b 254 0",
        "sysctl": "echo 1 > /proc/sys/vm/drop_caches",
        "hostname-of-host": "echo evil > /proc/sys/kernel/hostname",
    }
    for what, command in attempts.items():
        result = await sh(provider, sandbox, command)
        assert result.exit_code != 0, f"{what} succeeded inside the sandbox"
    caps = await sh(provider, sandbox, "grep CapBnd /proc/self/status")
    bounding = int(caps.stdout.split()[1], 16)
    assert bounding & (1 << 21) == 0  # no CAP_SYS_ADMIN
    assert bounding & (1 << 16) == 0  # no CAP_SYS_MODULE: no kernel modules
    privs = await sh(provider, sandbox, "grep NoNewPrivs /proc/self/status")
    assert privs.stdout.split()[1] == b"1"  # setuid binaries cannot raise privileges
    devices = await sh(provider, sandbox, "ls /dev")
    basic = {b"null", b"zero", b"full", b"random", b"urandom", b"tty", b"pts", b"shm", b"ptmx",
             b"fd", b"stdin", b"stdout", b"stderr", b"console", b"mqueue"}  # fmt: skip
    assert set(devices.stdout.split()) <= basic, devices.stdout


async def test_the_sandbox_has_its_own_hostname(provider, sandbox):
    result = await sh(provider, sandbox, ["hostname"])
    assert result.stdout.strip() == sandbox.id.encode()
    assert result.stdout.strip() != os.uname().nodename.encode()


# -- exec and files ---------------------------------------------------------------------------


async def test_exec_returns_exit_code_stdout_and_stderr(provider, sandbox):
    result = await sh(provider, sandbox, "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    argv = await sh(provider, sandbox, ["printf", "%s|", "a b", "$HOME", "*"])
    assert argv.stdout == b"a b|$HOME|*|"
    env = await sh(provider, sandbox, "pwd; echo $HOME $PATH")
    assert env.stdout.startswith(b"/root\n/root /usr/local/sbin:")
    missing = await sh(provider, sandbox, ["no-such-program"])
    assert missing.exit_code == 127 and b"No such file" in missing.stderr
    killed = await sh(provider, sandbox, "kill -9 $$")
    assert killed.exit_code == 128 + 9


async def test_exec_returns_64k_of_stdout_intact(provider, sandbox):
    code = (
        "import sys, hashlib; data = bytes(range(256)) * 256; "
        "sys.stdout.buffer.write(data); sys.stderr.write(hashlib.sha256(data).hexdigest())"
    )
    result = await sh(provider, sandbox, ["python3", "-c", code])
    assert len(result.stdout) == 65536
    assert result.stdout == bytes(range(256)) * 256
    assert result.stderr.decode() == hashlib.sha256(result.stdout).hexdigest()


async def test_exec_runs_concurrently_in_one_sandbox(provider, sandbox):
    start = time.monotonic()
    results = await asyncio.gather(
        *(sh(provider, sandbox, "sleep 0.5; echo done") for _ in range(4))
    )
    assert all(r.stdout == b"done\n" for r in results)
    assert time.monotonic() - start < 1.8


async def test_exec_past_its_timeout_is_killed_with_its_process_group(provider, sandbox):
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        await sh(provider, sandbox, "sleep 30 & sleep 31", timeout_s=0.5)
    assert time.monotonic() - start < 2.0
    left = await sh(provider, sandbox, "ps -e -o comm= | grep -c sleep || true")
    assert left.stdout.strip() == b"0"


async def test_a_background_process_does_not_hold_exec(provider, sandbox):
    start = time.monotonic()
    result = await sh(provider, sandbox, "sleep 20 & echo started")
    assert result.stdout == b"started\n"
    assert time.monotonic() - start < 1.0
    alive = await sh(provider, sandbox, "ps -e -o comm= | grep -c sleep")
    assert alive.stdout.strip() == b"1"  # still running, reaped later by PID 1


@pytest.mark.parametrize("size", [1024, 4 * 1024 * 1024])
async def test_files_round_trip(provider, sandbox, size):
    data = os.urandom(size)
    await provider.write_file(sandbox, "/root/deep/er/file.bin", data)
    assert await provider.read_file(sandbox, "/root/deep/er/file.bin") == data
    digest = await sh(provider, sandbox, "sha256sum /root/deep/er/file.bin")
    assert digest.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


async def test_read_file_sees_the_merged_view_and_missing_files_are_not_found(provider, sandbox):
    assert (
        await provider.read_file(sandbox, "/etc/os-release") == Path("/etc/os-release").read_bytes()
    )
    await sh(provider, sandbox, "rm /etc/os-release")
    with pytest.raises(NotFound):
        await provider.read_file(sandbox, "/etc/os-release")
    with pytest.raises(NotFound):
        await provider.read_file(sandbox, "/root/nothing-here")
    with pytest.raises(ProviderError):
        await provider.read_file(sandbox, "/root")


# -- pause and resume ---------------------------------------------------------------------------

COUNTER = (
    "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/counter.tmp; "
    "mv /root/counter.tmp /root/counter; sleep 0.01; done' >/dev/null 2>&1 &"
)


async def test_pause_stops_a_background_counter_and_resume_restarts_it(
    provider, sandbox, state_dir
):
    await sh(provider, sandbox, COUNTER)
    counter = state_dir / "sandboxes" / sandbox.id / "fs" / "upper" / "top" / "root" / "counter"
    assert wait_until(lambda: counter.exists() and int(counter.read_text() or 0) > 3)
    await provider.pause(sandbox)
    frozen_at = int(counter.read_text())
    await asyncio.sleep(0.4)  # 40 ticks if it were running
    assert int(counter.read_text()) == frozen_at
    await provider.resume(sandbox)
    await asyncio.sleep(0.3)
    after = int((await provider.read_file(sandbox, "/root/counter")).decode())
    assert after > frozen_at + 5


async def test_pause_completes_every_time_while_the_sandbox_forks(provider, sandbox):
    # Regression: with the v1 freezer, a dash parent waiting in vfork was left unfrozen once
    # in ~100 pauses and the group stayed FREEZING until the 5 s timeout.
    await sh(provider, sandbox, COUNTER)
    slowest = 0.0
    for _ in range(200):
        start = time.monotonic()
        await provider.pause(sandbox)
        slowest = max(slowest, time.monotonic() - start)
        await provider.resume(sandbox)
        await asyncio.sleep(0.002)
    assert slowest < 1.0


async def test_exec_while_paused_completes_only_after_resume(provider, sandbox):
    await provider.pause(sandbox)
    task = asyncio.ensure_future(sh(provider, sandbox, "echo hi", timeout_s=10))
    await asyncio.sleep(0.4)
    assert not task.done()
    await provider.resume(sandbox)
    result = await asyncio.wait_for(task, 5)
    assert result.stdout == b"hi\n"


async def test_exec_while_paused_times_out(provider, sandbox):
    await provider.pause(sandbox)
    start = time.monotonic()
    with pytest.raises(OperationTimeout):
        await sh(provider, sandbox, "echo never", timeout_s=0.5)
    assert time.monotonic() - start < 2.0
    await provider.resume(sandbox)
    # the late request was dropped by the agent, not run after resume
    assert (await sh(provider, sandbox, "echo next")).stdout == b"next\n"


# -- checkpoint and restore --------------------------------------------------------------------


async def test_restore_brings_back_the_checkpointed_filesystem(provider, sandbox, state_dir):
    write = (
        "head -c 8388608 /dev/urandom > /root/data.bin && sha256sum /root/data.bin && "
        "echo usr > /usr/local/marker && rm /etc/os-release && echo gone > /tmp/scratch"
    )
    before = await sh(provider, sandbox, write)
    assert before.exit_code == 0, before.stderr
    digest = before.stdout.split()[0]
    ref = await provider.checkpoint(sandbox)
    mutate = "head -c 1024 /dev/urandom > /root/data.bin; rm /usr/local/marker"
    assert (await sh(provider, sandbox, mutate)).exit_code == 0
    restored = await provider.restore(ref)
    try:
        assert restored.id != sandbox.id
        check = await sh(
            provider,
            restored,
            "sha256sum /root/data.bin; cat /usr/local/marker; test -e /etc/os-release; echo $?;"
            " test -e /tmp/scratch; echo $?",
        )
        lines = check.stdout.split(b"\n")
        assert lines[0].split()[0] == digest
        assert lines[1:4] == [b"usr", b"1", b"1"]  # whiteout kept; /tmp is not captured
        # the original went on with its own state
        original = await sh(provider, sandbox, "stat -c %s /root/data.bin")
        assert original.stdout == b"1024\n"
        # and the checkpoint can be restored twice
        again = await provider.restore(ref)
        assert (await sh(provider, again, "sha256sum /root/data.bin")).stdout.split()[0] == digest
        await provider.destroy(again)
    finally:
        await provider.destroy(restored)
    assert (state_dir / "checkpoints" / ref.id).exists()
    await provider.delete_checkpoint(ref)
    assert not (state_dir / "checkpoints" / ref.id).exists()
    await provider.delete_checkpoint(ref)  # idempotent
    with pytest.raises(NotFound):
        await provider.restore(ref)


async def test_checkpoint_of_a_paused_sandbox_leaves_it_paused(provider, sandbox):
    await provider.pause(sandbox)
    ref = await provider.checkpoint(sandbox)
    group = provider._sandboxes[sandbox.id].group
    assert cg.is_frozen(group)
    await provider.resume(sandbox)
    await provider.delete_checkpoint(ref)


# -- listing and reaping checkpoints -----------------------------------------------------------


def dead_identity() -> tuple[int, int]:
    """(pid, start time) of a process that has exited."""
    child = subprocess.Popen(["sleep", "30"])
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        identity = (child.pid, int(stat[stat.rindex(")") + 2 :].split()[19]))
    finally:
        child.kill()
        child.wait()
    return identity


def partial_name(stem: str, pid: int, starttime: int, run_id: str) -> str:
    key = hashlib.sha256(run_id.encode()).hexdigest()[:16]
    return f".{stem}.{pid}-{starttime}-{key}.partial"


async def test_checkpoints_are_listed_by_run_and_copies_by_a_dead_owner(
    provider, sandbox, state_dir
):
    assert provider.capabilities().lists_checkpoints
    other = await provider.create(SandboxSpec(labels={RUN_LABEL: "other-run"}))
    try:
        ref = await provider.checkpoint(sandbox)
        theirs = await provider.checkpoint(other)
    finally:
        await provider.destroy(other)
    meta = json.loads((state_dir / "checkpoints" / ref.id / "meta.json").read_text())
    assert meta["labels"] == {RUN_LABEL: "test-run"}
    assert meta["owner"]["pid"] == os.getpid()
    checkpoints = state_dir / "checkpoints"
    me = Path("/proc/self/stat").read_text()
    mine = (os.getpid(), int(me[me.rindex(")") + 2 :].split()[19]))
    dead = dead_identity()
    names = {
        "dead": partial_name(f"ck-{secrets.token_hex(6)}", *dead, "test-run"),
        "dead fork": partial_name(f"fork-{secrets.token_hex(6)}-3", *dead, "test-run"),
        # a pid now used by another process (this one): the start time tells them apart
        "reused pid": partial_name(f"ck-{secrets.token_hex(6)}", mine[0], mine[1] + 1, "test-run"),
        "in progress": partial_name(f"ck-{secrets.token_hex(6)}", *mine, "test-run"),
        "other run": partial_name(f"ck-{secrets.token_hex(6)}", *dead, "other-run"),
    }
    for name in names.values():
        (checkpoints / name / "upper").mkdir(parents=True)
        (checkpoints / name / "upper" / "data").write_bytes(b"x" * 4096)
    mine_listed = sorted([ref.id, names["dead"], names["dead fork"], names["reused pid"]])
    assert await provider.list_checkpoints("test-run") == mine_listed
    assert await provider.list_checkpoints("other-run") == sorted([theirs.id, names["other run"]])
    with pytest.raises(ProviderError, match="in progress"):
        await provider.delete_checkpoint(type(ref)(id=names["in progress"], provider="local",
                                                   sandbox_id=""))  # fmt: skip
    assert (checkpoints / names["in progress"]).is_dir()
    for checkpoint_id in mine_listed:
        await provider.delete_checkpoint(type(ref)(id=checkpoint_id, provider="local",
                                                   sandbox_id=""))  # fmt: skip
        assert not (checkpoints / checkpoint_id).exists()
    assert await provider.list_checkpoints("test-run") == []
    # a malformed or escaping id is a no-op, never a removal elsewhere
    for bad in ("..", "../sandboxes", ".ck-x.partial", "ck-../../etc"):
        await provider.delete_checkpoint(type(ref)(id=bad, provider="local", sandbox_id=""))
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(
        [theirs.id, names["other run"], names["in progress"]]
    )
    await provider.delete_checkpoint(theirs)
    shutil.rmtree(checkpoints / names["other run"])
    shutil.rmtree(checkpoints / names["in progress"])


CHECKPOINTING_HARNESS = """
import asyncio, sys
sys.path.insert(0, {root!r})
from providers.base import SandboxSpec
from providers.local import LocalProvider

async def main():
    p = LocalProvider({{"state_dir": {state!r}}})
    await p.open()
    sb = await p.create(SandboxSpec(labels={{"sandbox-bench-run": {run!r}}}))
    done = await p.exec(sb, "head -c 192M /dev/zero > /root/big", timeout_s=60)
    assert done.exit_code == 0, done.stderr
    print("ready", flush=True)
    while True:  # until killed: each copy takes a while, the kill lands in one of them
        await p.delete_checkpoint(await p.checkpoint(sb))

asyncio.run(main())
"""


def test_reap_removes_a_checkpoint_a_kill_cut_short(tmp_path):
    from bench.store import RunWriter, load_ledger

    state_dir = tmp_path / "state"
    run_id = "ck-killed-run"
    script = CHECKPOINTING_HARNESS.format(root=str(ROOT), state=str(state_dir), run=run_id)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        checkpoints = state_dir / "checkpoints"

        def copying() -> bool:
            return any(p.name.endswith(".partial") for p in checkpoints.iterdir())

        deadline = time.monotonic() + 30
        while not copying():
            assert time.monotonic() < deadline and proc.poll() is None, "no copy seen"
            time.sleep(0.0005)
        proc.send_signal(signal.SIGSTOP)  # from now on it cannot finish the copy's rename
        proc.kill()
    finally:
        proc.kill()
        proc.wait()
    partials = [p.name for p in checkpoints.iterdir() if p.name.endswith(".partial")]
    assert len(partials) == 1, partials
    # Nothing else will ever remove it: the killed process's copy is abandoned ...
    probe = LocalProvider({"state_dir": str(state_dir)})
    assert partials[0] in asyncio.run(probe.list_checkpoints(run_id))
    assert probe.capabilities().lists_checkpoints
    # ... until reap, as a user runs it, finds it by the run's label (no ledger names it).
    folder = tmp_path / "results" / run_id
    writer = RunWriter(folder, {"run_id": run_id, "status": "running",
                                "plan": {"providers": ["local"], "workloads": []},
                                "config": {"provider_settings": {
                                    "local": {"state_dir": str(state_dir)}}}})  # fmt: skip
    writer.close()
    reap = subprocess.run(
        [sys.executable, "-m", "bench", "reap", str(folder)], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert list(checkpoints.iterdir()) == []
    assert wait_until(lambda: list((state_dir / "sandboxes").iterdir()) == [])
    ledger, _ = load_ledger(folder)
    deleted = {e["checkpoint_id"] for e in ledger if e["event"] == "checkpoint_deleted"}
    assert partials[0] in deleted
    assert all(e.get("by") == "reap" for e in ledger)


# -- destroy and leaks --------------------------------------------------------------------------


def cgroup_dirs(provider: LocalProvider, sandbox_id: str) -> list[Path]:
    layout = provider.host.cgroups
    return [Path(m) / cg.GROUP / sandbox_id for _, m in layout.roles.values()]


async def test_destroy_is_idempotent_and_unknown_ids_are_noops(provider):
    sb = await provider.create(SandboxSpec())
    await provider.destroy(sb)
    await provider.destroy(sb)
    await provider.destroy(type(sb)(id="sb-000000000000", provider="local"))
    await provider.destroy(type(sb)(id="../../etc", provider="local"))
    with pytest.raises(NotFound):
        await sh(provider, sb, "true")
    with pytest.raises(NotFound):
        await provider.read_file(sb, "/etc/hostname")


async def test_destroy_leaves_no_process_cgroup_mount_or_directory(provider, state_dir):
    sandboxes = [await provider.create(SandboxSpec()) for _ in range(3)]
    await sh(provider, sandboxes[0], COUNTER)
    await sh(provider, sandboxes[1], "sleep 100 & sleep 100 &")
    await provider.pause(sandboxes[1])
    pids = set().union(*(host_pids(provider, sb) for sb in sandboxes))
    assert len(pids) >= 9
    for sb in sandboxes:
        await provider.destroy(sb)
    assert not any(pid_alive(p) for p in pids)
    for sb in sandboxes:
        assert not any(d.exists() for d in cgroup_dirs(provider, sb.id))
        assert not (state_dir / "sandboxes" / sb.id).exists()
    assert str(state_dir) not in Path("/proc/self/mountinfo").read_text()
    assert list((state_dir / "sandboxes").iterdir()) == []


HARNESS = """
import asyncio, json, sys, time
sys.path.insert(0, {root!r})
from providers.base import SandboxSpec
from providers.local import LocalProvider, cgroups

async def main():
    p = LocalProvider({{"state_dir": {state!r}}})
    await p.open()
    ids = []
    for _ in range(2):
        sb = await p.create(SandboxSpec(labels={{"sandbox-bench-run": "killed-run"}}))
        await p.exec(sb, "sleep 1000 &", timeout_s=10)
        ids.append(sb.id)
    pids = sorted(set().union(*(cgroups.pids(p._sandboxes[i].group) for i in ids)))
    print(json.dumps({{"ids": ids, "pids": pids, "zygote": p._zygote.proc.pid}}), flush=True)
    time.sleep(1000)

asyncio.run(main())
"""


def start_harness(state_dir: Path) -> tuple[subprocess.Popen, dict]:
    script = HARNESS.format(root=str(ROOT), state=str(state_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the harness died before creating its sandboxes"
    return proc, json.loads(line)


def test_a_harness_killed_with_sigkill_leaks_nothing(tmp_path):
    state_dir = tmp_path / "state"
    proc, info = start_harness(state_dir)
    assert len(info["pids"]) >= 6 and all(pid_alive(p) for p in info["pids"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    probe = LocalProvider({"state_dir": str(state_dir)})
    dirs = [d for sid in info["ids"] for d in cgroup_dirs(probe, sid)]
    assert wait_until(
        lambda: (
            not any(pid_alive(p) for p in [*info["pids"], info["zygote"]])
            and not any(d.exists() for d in dirs)
            and not any((state_dir / "sandboxes" / sid).exists() for sid in info["ids"])
        ),
        timeout_s=5,
    ), "processes, cgroups or directories left behind"


SLOW_COPY_HARNESS = """
import asyncio, os, sys
sys.path.insert(0, {root!r})
from providers.base import SandboxSpec
from providers.local import LocalProvider, layers

async def main():
    p = LocalProvider({{"state_dir": {state!r}}})
    await p.open()
    # after the provider's own watcher, which has told the zygote of the copy by then
    layers.copy_watchers.append(lambda pid, running: running and print(pid, flush=True))
    sb = await p.create(SandboxSpec(labels={{"sandbox-bench-run": "killed-run"}}))
    await p.checkpoint(sb)  # its copy never ends: a cp that sleeps comes first in PATH

asyncio.run(main())
"""


def test_a_copy_in_progress_dies_with_a_harness_killed_with_sigkill(tmp_path):
    """Its zygote, which sees the harness's end of their socket close, kills it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    real_cp = shutil.which("cp")
    (fake / "cp").write_text(  # a checkpoint's copy sleeps (the same process); others copy
        f'#!/bin/sh\ncase "$*" in *checkpoints*) exec sleep 60;; esac\nexec {real_cp} "$@"\n'
    )
    (fake / "cp").chmod(0o755)
    script = SLOW_COPY_HARNESS.format(root=str(ROOT), state=str(tmp_path / "state"))
    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        copy = int(proc.stdout.readline())  # the copy's pid, once the zygote knows of it
        assert wait_until(lambda: Path(f"/proc/{copy}/comm").read_text() == "sleep\n")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not pid_alive(copy), timeout_s=5), "the copy outlived it"
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_zygote_takes_its_sandboxes_with_it_and_the_reaper_cleans_up(tmp_path):
    state_dir = tmp_path / "state"
    proc, info = start_harness(state_dir)
    try:
        os.kill(info["zygote"], signal.SIGKILL)
        assert wait_until(lambda: not any(pid_alive(p) for p in info["pids"]))  # PDEATHSIG
        proc.kill()
        proc.wait()
        # the directories and cgroups stay for a reaper, which finds them by run label
        found = list_sandboxes(str(state_dir), "killed-run")
        assert found == sorted(info["ids"])
        for sid in found:
            assert destroy_by_id(sid, str(state_dir))
        assert list_sandboxes(str(state_dir), "killed-run") == []
        probe = LocalProvider({"state_dir": str(state_dir)})
        assert not any(d.exists() for sid in info["ids"] for d in cgroup_dirs(probe, sid))
    finally:
        proc.kill()


async def test_list_and_destroy_work_across_provider_instances(provider, state_dir):
    mine = await provider.create(SandboxSpec(labels={RUN_LABEL: "run-a"}))
    other = await provider.create(SandboxSpec(labels={RUN_LABEL: "run-b"}))
    second = LocalProvider({"state_dir": str(state_dir)})
    await second.open()
    try:
        assert await second.list_sandboxes("run-a") == [mine.id]
        # a live sandbox of another instance can be used and destroyed by id
        assert (await sh(second, mine, "echo adopted")).stdout == b"adopted\n"
        pids = host_pids(provider, mine)
        await second.destroy(type(mine)(id=mine.id, provider="local"))
        assert not any(pid_alive(p) for p in pids)
        assert await provider.list_sandboxes("run-a") == []
    finally:
        await second.close()
    await provider.destroy(mine)  # already gone: a no-op
    await provider.destroy(other)


# -- spec limits ----------------------------------------------------------------------------


async def test_spec_limits_are_written_to_the_cgroups(provider):
    sb = await provider.create(SandboxSpec(cpus=0.5, memory_mb=256, max_pids=100))
    try:
        group = provider._sandboxes[sb.id].group
        assert Path(group.dirs["pids"], "pids.max").read_text().strip() == "100"
        memory = Path(group.dirs["memory"], "memory.limit_in_bytes").read_text().strip()
        assert memory == str(256 * 1024 * 1024)
        assert Path(group.dirs["cpu"], "cpu.cfs_quota_us").read_text().strip() == "50000"
        notes = provider.capabilities().notes["limits_enforced"]
        assert "max_pids" in notes and "memory_mb" in notes and "cpus" in notes
    finally:
        await provider.destroy(sb)


async def test_a_fork_bomb_hits_pids_max_and_everything_else_keeps_working(provider):
    bystander = await provider.create(SandboxSpec())
    bombed = await provider.create(SandboxSpec(max_pids=48, cpus=0.5))
    try:
        bomb = "bomb() { bomb | bomb & }; bomb; sleep 1; echo survived"
        result = await sh(provider, bombed, bomb, timeout_s=10)
        assert b"Cannot fork" in result.stderr, result.stderr[:300]
        group = provider._sandboxes[bombed.id].group
        assert int(Path(group.dirs["pids"], "pids.current").read_text()) <= 48
        events = Path(group.dirs["pids"], "pids.events").read_text()
        assert int(events.split()[-1]) > 0, "the limit was never hit"
        # the harness and another sandbox are unaffected
        assert (await sh(provider, bystander, "echo fine")).stdout == b"fine\n"
        pids = host_pids(provider, bombed)
    finally:
        await provider.destroy(bombed)
        await provider.destroy(bystander)
    assert not any(pid_alive(p) for p in pids)


async def test_a_memory_hog_is_oom_killed(provider):
    sb = await provider.create(SandboxSpec(memory_mb=64))
    try:
        hog = await sh(provider, sb, ["python3", "-c", "b = bytearray(256 * 2**20)"])
        assert hog.exit_code == 128 + 9, (hog.exit_code, hog.stderr)
        group = provider._sandboxes[sb.id].group
        oom = Path(group.dirs["memory"], "memory.oom_control").read_text()
        assert "oom_kill 0" not in oom
        # the agent (much smaller than the hog) survives: the sandbox is still usable
        after = await sh(provider, sb, "echo still here")
        assert after.stdout == b"still here\n"
    finally:
        await provider.destroy(sb)


async def test_a_killed_agent_is_restarted_by_pid_1(provider, sandbox):
    with pytest.raises(SandboxCrashed):
        await sh(provider, sandbox, "kill -9 $PPID; sleep 1")  # the agent is the shell's parent
    assert (await sh(provider, sandbox, "echo back")).stdout == b"back\n"
    ps = await sh(provider, sandbox, ["ps", "-o", "pid=,comm=", "-p", "1,2"])
    assert ps.stdout.split()[:2] == [b"1", b"sb-init"]  # PID 1 is the one that was there


async def test_a_sandbox_whose_pid_1_dies_reports_crashed(provider, sandbox):
    handle = provider._sandboxes[sandbox.id]
    os.kill(handle.host_pid, signal.SIGKILL)
    for _ in range(250):
        if handle.exited:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(SandboxCrashed):
        await sh(provider, sandbox, "true")


# -- description and settings ------------------------------------------------------------------


async def test_capabilities_describe_this_host(provider):
    caps = provider.capabilities()
    for op in (Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME, Op.EXEC, Op.CREATE):
        assert caps.supports(op)
    assert caps.scratch_dir == "/root"
    assert caps.notes["checkpoint_method"] in ("copy", "tar", "reflink", "btrfs")
    assert caps.supports(Op.FORK) and caps.fork_keeps == CheckpointCaptures.FILESYSTEM
    expected = {"copy": "copy", "tar": "copy", "reflink": "copy-on-write", "btrfs": "copy-on-write"}
    assert caps.fork_method == expected[caps.notes["checkpoint_method"]]
    assert caps.notes["seccomp"].startswith("Docker's default seccomp profile")
    assert caps.notes["favordynmods"] == "on"
    assert "/tmp" in caps.notes["not_captured"]
    env = provider.environment()
    assert env["mode"] == "root" and env["kernel"] == os.uname().release
    assert env["checkpoint_method"] == caps.notes["checkpoint_method"]


async def test_a_state_dir_longer_than_a_unix_socket_path_works(tmp_path):
    state_dir = tmp_path / ("long-" * 20)
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    try:
        sb = await p.create(SandboxSpec())
        assert len(str(state_dir / "sandboxes" / sb.id / "agent.sock")) > 108
        assert (await sh(p, sb, "echo ok")).stdout == b"ok\n"
        await p.destroy(sb)
    finally:
        await p.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"state_dir": "/tmp/x", "colour": "blue"}, "unknown key(s) colour"),
        ({"checkpoint_method": "magic"}, "checkpoint_method must be one of auto, btrfs"),
        ({"state_dir": 5}, "providers.local.state_dir must be a string, got 5"),
        ({"state_dir": "/proc/sandboxes"}, "state_dir must not be under /proc"),
        ({"state_dir": "/proc"}, "state_dir must not be under /proc"),
        ({"state_dir": "/sys/fs/x"}, "state_dir must not be under /sys"),
        ({"rootfs": "/proc/1/root"}, "rootfs must not be under /proc"),
        ({"state_dir": "/tmp/a,b"}, "state_dir must not contain"),
        ({"state_dir": "/tmp/a\nb"}, "state_dir must not contain"),
        ({"seccomp": "yes"}, "providers.local.seccomp must be true or false"),
        ({"favordynmods": 1}, "providers.local.favordynmods must be true or false"),
    ],
)
def test_bad_settings_are_refused_in_one_line_at_construction(settings, message, tmp_path):
    with pytest.raises(ValueError) as info:
        LocalProvider(settings)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_settings_are_declared_once_with_help():
    names = [d.name for d in declared(LocalProvider.settings_class)]
    assert names == [
        "state_dir", "rootfs", "checkpoint_method", "seccomp", "favordynmods", "native"
    ]  # fmt: skip
    p = LocalProvider({"state_dir": "~/x/../y", "seccomp": False})
    assert p.state_dir == Path(os.path.expanduser("~/y"))
    assert p.config.seccomp is False and p.config.favordynmods is True


async def test_an_explicit_reflink_method_is_refused_where_the_filesystem_lacks_it(state_dir):
    p = LocalProvider({"state_dir": str(state_dir), "checkpoint_method": "reflink"})
    state_dir.mkdir(parents=True)
    if _mount_of(str(state_dir))[1] in ("xfs", "btrfs"):
        pytest.skip("this filesystem has reflinks")
    with pytest.raises(ValueError, match="reflink"):
        await p.open()
    await p.close()


async def test_concurrent_creates(provider):
    sandboxes = await asyncio.gather(*(provider.create(SandboxSpec()) for _ in range(4)))
    try:
        names = await asyncio.gather(*(sh(provider, sb, ["hostname"]) for sb in sandboxes))
        assert sorted(n.stdout.strip().decode() for n in names) == sorted(sb.id for sb in sandboxes)
    finally:
        for sb in sandboxes:
            await provider.destroy(sb)


def make_rootfs(root: Path) -> Path:
    """A small root directory: the host's binaries and libraries hard-linked (same
    filesystem as /tmp here, so it takes well under a second), its own /etc."""
    for sub in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/lib64"):
        if Path("/", sub).is_dir():
            (root / sub).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", f"/{sub}", str(root / sub)], check=True)
    for name, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib64")):  # fmt: skip
        (root / name).symlink_to(target)
    (root / "etc").mkdir()
    (root / "etc" / "rootfs-marker").write_text("from the rootfs\n")
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", root / "etc" / name)
    (root / "root").mkdir(mode=0o700)
    return root


async def test_a_rootfs_setting_replaces_the_hosts_directories(tmp_path, state_dir):
    if os.stat("/usr").st_dev != os.stat(tmp_path).st_dev:
        pytest.skip("hard-linking a rootfs needs /usr and the test directory on one filesystem")
    rootfs = make_rootfs(tmp_path / "rootfs")
    p = LocalProvider({"state_dir": str(state_dir), "rootfs": str(rootfs)})
    await p.open()
    try:
        sb = await p.create(SandboxSpec())
        result = await sh(p, sb, "cat /etc/rootfs-marker; test -e /etc/os-release; echo $?; "
                                 "ls /usr; echo x > /usr/bin/sandbox-write")  # fmt: skip
        assert result.stdout == b"from the rootfs\n1\nbin\nlib\nlib64\nsbin\n", result.stderr
        assert not (rootfs / "usr" / "bin" / "sandbox-write").exists()
        ref = await p.checkpoint(sb)
        restored = await p.restore(ref)
        again = await sh(p, restored, "cat /usr/bin/sandbox-write /etc/rootfs-marker")
        assert again.stdout == b"x\nfrom the rootfs\n"
        await p.destroy(restored)
        await p.destroy(sb)
        await p.delete_checkpoint(ref)
    finally:
        await p.close()


# -- without root --------------------------------------------------------------------------

USERNS_SCRIPT = """
import asyncio, json, sys
sys.path.insert(0, {root!r})
from providers.base import SandboxSpec
from providers.local import LocalProvider

async def main():
    p = LocalProvider({{"state_dir": {state!r}}})
    caps = p.capabilities()
    await p.open()
    out = {{"unsupported": dict(caps.unsupported), "notes": dict(caps.notes)}}
    sb = await p.create(SandboxSpec())
    r = await p.exec(sb, "id -u; hostname; ls /proc | grep -cE '^[0-9]+$'; ls /sys/class/net;"
                         " ls -A /root /tmp; echo hi > /root/f; cat /root/f", timeout_s=20)
    out["exec"] = [r.exit_code, r.stdout.decode(), r.stderr.decode()]
    await p.write_file(sb, "/root/data", b"x" * 100000)
    out["read_ok"] = await p.read_file(sb, "/root/data") == b"x" * 100000
    ref = await p.checkpoint(sb)
    sb2 = await p.restore(ref)
    r2 = await p.exec(sb2, "cat /root/f; wc -c < /root/data", timeout_s=20)
    out["restored"] = r2.stdout.decode()
    await p.destroy(sb)
    await p.destroy(sb2)
    await p.delete_checkpoint(ref)
    await p.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_without_root_a_user_namespace_mode_works(tmp_path):
    setpriv = shutil.which("setpriv")
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else None
    if setpriv is None or python is None:
        pytest.skip("needs setpriv and a system python3 readable by uid 65534")
    base = Path(tempfile.mkdtemp(prefix="sb-userns-", dir="/tmp"))
    try:
        os.chown(base, 65534, 65534)
        script = base / "run.py"
        script.write_text(USERNS_SCRIPT.format(root=str(ROOT), state=str(base / "state")))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(base), "LANG": "C.UTF-8"}
        result = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, str(script)],
            capture_output=True, text=True, timeout=50, env=env, cwd=str(base),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        assert set(out["unsupported"]) == {"pause", "resume"}
        assert (
            "not writable" in out["unsupported"]["pause"] or "root" in out["unsupported"]["pause"]
        )
        assert out["notes"]["mode"] == "userns"
        code, stdout, stderr = out["exec"]
        lines = stdout.split("\n")
        assert code == 0, stderr
        assert lines[0] == "0"  # root inside
        assert lines[1].startswith("sb-")
        assert int(lines[2]) <= 6
        assert lines[3] == "lo"
        assert lines[-2] == "hi"
        assert out["read_ok"]
        assert out["restored"] == "hi\n100000\n"
        assert not any((base / "state" / "sandboxes").iterdir())
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(base)


# -- syscall filter and process titles --------------------------------------------------------

#: Run inside a sandbox by python3: each escape attempt's errno (0 when it succeeded).
ESCAPES = """
import ctypes, errno, json, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
NR = {"keyctl": 250, "bpf": 321, "perf_event_open": 298, "ptrace": 101}

def syscall(name, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_long(a) for a in args))
    return 0 if result >= 0 else ctypes.get_errno()

out = {}
out["keyctl"] = syscall("keyctl", 0, -3, 1)  # KEYCTL_GET_KEYRING_ID of the session keyring
attr = ctypes.create_string_buffer(72)  # BPF_MAP_CREATE: array map, 4-byte keys and values
ctypes.memmove(attr, (ctypes.c_uint32 * 4)(2, 4, 4, 1), 16)
out["bpf"] = syscall("bpf", 0, ctypes.addressof(attr), 72)
perf = ctypes.create_string_buffer(128)  # PERF_TYPE_SOFTWARE, CPU clock, this process only
ctypes.memmove(perf, (ctypes.c_uint32 * 4)(1, 128, 0, 0), 16)
perf[40] = 0x60  # exclude_kernel | exclude_hv
out["perf_event_open"] = syscall("perf_event_open", ctypes.addressof(perf), 0, -1, -1, 0)
outside = int(sys.argv[1])
out["ptrace_outside"] = syscall("ptrace", 16, outside, 0, 0)  # PTRACE_ATTACH
out["ptrace_pid1"] = syscall("ptrace", 16, 1, 0, 0)
child = os.fork()
if child == 0:
    time.sleep(5)
    os._exit(0)
out["ptrace_own_child"] = syscall("ptrace", 16, child, 0, 0)
os.kill(child, 9)
os.waitpid(child, 0)
print(json.dumps(out))
"""


async def escape_attempts(provider, sandbox) -> dict:
    probe = await sh(provider, sandbox, ["python3", "-c", ESCAPES, str(os.getpid())])
    assert probe.exit_code == 0, probe.stderr
    result = json.loads(probe.stdout)
    for name in ("unshare -U true", "mount -t tmpfs none /mnt", "unshare -n true"):
        run = await sh(provider, sandbox, name)
        result[name] = run.exit_code
    return result


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers of x86-64")
async def test_the_syscall_filter_refuses_escapes_that_work_without_it(provider, sandbox, tmp_path):
    refused = await escape_attempts(provider, sandbox)
    assert refused["keyctl"] == errno.EPERM
    assert refused["bpf"] == errno.EPERM
    assert refused["perf_event_open"] == errno.EPERM
    # A process outside is not even visible (its pid names nothing in the sandbox's pid
    # namespace), and PID 1 is not dumpable; tracing one's own child works, as in Docker.
    assert refused["ptrace_outside"] in (errno.ESRCH, errno.EPERM)
    assert refused["ptrace_pid1"] == errno.EPERM
    assert refused["ptrace_own_child"] == 0
    assert refused["unshare -U true"] != 0
    assert refused["unshare -n true"] != 0
    assert refused["mount -t tmpfs none /mnt"] != 0
    status = await sh(provider, sandbox, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status")
    assert status.stdout.split() == [b"NoNewPrivs:", b"1", b"Seccomp:", b"2"]
    # The control: the same probes in a sandbox without the filter find what the issue found.
    bare = LocalProvider({"state_dir": str(tmp_path / "bare"), "seccomp": False})
    await bare.open()
    try:
        assert bare.capabilities().notes["seccomp"] == "off (setting seccomp = false)"
        sb = await bare.create(SandboxSpec())
        allowed = await escape_attempts(bare, sb)
        await bare.destroy(sb)
    finally:
        await bare.close()
    assert allowed["unshare -U true"] == 0
    assert allowed["keyctl"] == 0
    assert allowed["ptrace_own_child"] == 0


async def test_everyday_programs_still_work_under_the_filter(provider, sandbox):
    script = (
        "set -e; python3 -c 'import threading, subprocess, socket, multiprocessing as m; "
        't = threading.Thread(target=print, args=("thread",)); t.start(); t.join(); '
        'print(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout, '
        'end=""); p = m.Pool(2); print(sum(p.map(abs, [-1, -2]))); p.close(); p.join()\'; '
        "tar -C /usr/share -cf /root/t.tar doc/bash 2>/dev/null || true; "
        "sort /etc/passwd | head -c 0; chroot / true; echo done"
    )
    result = await sh(provider, sandbox, script)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == b"thread\nchild\n3\ndone\n"


async def test_pid_1_and_the_agent_show_neutral_titles_and_no_environment(provider, sandbox):
    result = await sh(provider, sandbox, "cat /proc/1/cmdline; echo; cat /proc/2/cmdline")
    lines = result.stdout.split(b"\n")
    assert lines[0].rstrip(b"\0") == b"sb-init", result.stdout[:200]
    assert lines[1].rstrip(b"\0") == b"sb-agent", result.stdout[:200]
    assert b"venv" not in result.stdout and b"python" not in result.stdout
    # not dumpable: their environ cannot be read at all from inside
    environ = await sh(provider, sandbox, "cat /proc/1/environ /proc/2/environ")
    assert environ.exit_code != 0 and environ.stdout == b""
    # and on the host side (root may read it) it holds nothing of the harness's
    handle = provider._sandboxes[sandbox.id]
    assert Path(f"/proc/{handle.host_pid}/environ").read_bytes().strip(b"\0") == b""


async def test_without_libseccomp_the_sandbox_runs_unfiltered_and_says_so(state_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails as if not installed
    assert seccomp_module.compile_filter() == (
        None,
        "no seccomp filter: the pyseccomp package is not installed",
    )
    p = LocalProvider({"state_dir": str(state_dir)})
    assert "not installed" in p.capabilities().notes["seccomp"]
    await p.open()
    try:
        caps = p.capabilities()
        assert caps.notes["seccomp"] == "no seccomp filter: the pyseccomp package is not installed"
        assert "no seccomp filter" in caps.isolation
        sb = await p.create(SandboxSpec())
        status = await sh(p, sb, "grep '^Seccomp:' /proc/self/status")
        assert status.stdout.split() == [b"Seccomp:", b"0"]
        await p.destroy(sb)
    finally:
        await p.close()


async def test_the_favordynmods_hierarchy_stays_private_and_dies_with_the_provider(state_dir):
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    zygote_pid = p._zygote.proc.pid
    try:
        assert p.favordynmods == "on"
        assert "sandbox-bench-dynmods" not in Path("/proc/self/mountinfo").read_text()
        assert "sandbox-bench-dynmods" in Path(f"/proc/{zygote_pid}/mountinfo").read_text()
    finally:
        await p.close()
    assert not pid_alive(zygote_pid)
    off = LocalProvider({"state_dir": str(state_dir), "favordynmods": False})
    await off.open()
    try:
        assert off.capabilities().notes["favordynmods"] == "off (setting favordynmods = false)"
        sb = await off.create(SandboxSpec())
        assert (await sh(off, sb, "echo ok")).stdout == b"ok\n"
        await off.destroy(sb)
    finally:
        await off.close()


# -- fork ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 4])
async def test_fork_children_start_from_the_parent_and_are_independent(
    provider, sandbox, state_dir, count
):
    setup = (
        "head -c 1048576 /dev/urandom > /root/big && sha256sum /root/big > /root/big.sum && "
        "echo parent > /etc/forked && rm /etc/os-release && mkdir -p /root/d && touch /root/d/x"
        " && rm -rf /root/d && mkdir /root/d && touch /root/d/y && echo tmp > /tmp/scratch"
    )
    assert (await sh(provider, sandbox, setup)).exit_code == 0
    await sh(provider, sandbox, "sleep 1000 >/dev/null 2>&1 &")
    children = await provider.fork(sandbox, count=count)
    try:
        assert len(children) == count
        assert len({c.id for c in children} | {sandbox.id}) == count + 1
        check = (
            "sha256sum -c --quiet /root/big.sum && cat /etc/forked && ls /root/d && "
            "! test -e /etc/os-release && ! test -e /tmp/scratch && ! pgrep sleep && hostname"
        )
        for child in children:
            result = await sh(provider, child, check)
            assert result.exit_code == 0, result.stderr
            assert result.stdout.split() == [b"parent", b"y", child.id.encode()]
        # a write in one child reaches neither the others nor the parent
        await sh(provider, children[0], "echo child0 > /etc/forked && touch /root/only0")
        for other in [sandbox, *children[1:]]:
            seen = await sh(provider, other, "cat /etc/forked; test -e /root/only0; echo $?")
            assert seen.stdout == b"parent\n1\n"
        # and the parent goes on with its own state
        await sh(provider, sandbox, "echo later > /root/later")
        for child in children:
            assert (await sh(provider, child, "test -e /root/later; echo $?")).stdout == b"1\n"
        # children carry the parent's spec and labels
        assert await provider.list_sandboxes("test-run") == sorted(
            [sandbox.id, *(c.id for c in children)]
        )
    finally:
        pids = set().union(*(host_pids(provider, c) for c in children))
        for child in children:
            await provider.destroy(child)
    assert not any(pid_alive(p) for p in pids)
    assert sorted(p.name for p in (state_dir / "sandboxes").iterdir()) == [sandbox.id]
    assert list((state_dir / "checkpoints").iterdir()) == []  # no staging copy left


async def test_fork_of_a_paused_parent_leaves_it_paused_and_bad_counts_are_refused(
    provider, sandbox
):
    await provider.pause(sandbox)
    (child,) = await provider.fork(sandbox)
    try:
        assert cg.is_frozen(provider._sandboxes[sandbox.id].group)
        assert (await sh(provider, child, "echo awake")).stdout == b"awake\n"
    finally:
        await provider.destroy(child)
        await provider.resume(sandbox)
    for count in (0, -1, 1.5, True, 1001):
        with pytest.raises(ValueError, match="count"):
            await provider.fork(sandbox, count=count)
    with pytest.raises(NotFound):
        await provider.fork(type(sandbox)(id="sb-000000000000", provider="local"))


# -- copy-on-write filesystems --------------------------------------------------------------


@pytest.fixture
def cow_state_dir(request, tmp_path):
    """A state directory on a fresh XFS (reflinks) or btrfs (snapshots) loop filesystem."""
    fstype = request.param
    mkfs = shutil.which(f"mkfs.{fstype}")
    if mkfs is None or (fstype == "btrfs" and shutil.which("btrfs") is None):
        pytest.skip(f"mkfs.{fstype} is not installed (scripts/setup.sh --system-test-deps)")
    image, mount_point = tmp_path / f"{fstype}.img", tmp_path / fstype
    with open(image, "wb") as f:
        f.truncate(320 * 1024 * 1024)
    subprocess.run([mkfs, "-q", str(image)], check=True, capture_output=True)
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mount_point)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot loop-mount a {fstype} image here: {mounted.stderr.strip()}")
    try:
        yield fstype, mount_point / "state"
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.parametrize("cow_state_dir", ["xfs", "btrfs"], indirect=True)
async def test_copy_on_write_filesystems_are_detected_and_used(cow_state_dir):
    fstype, state = cow_state_dir
    p = LocalProvider({"state_dir": str(state)})
    await p.open()
    try:
        caps = p.capabilities()
        expected = {"xfs": "reflink", "btrfs": "btrfs"}[fstype]
        assert caps.notes["checkpoint_method"] == expected
        assert caps.fork_method == "copy-on-write"
        assert p.environment()["state_fs"] == fstype
        sb = await p.create(SandboxSpec())
        write = (
            "head -c 4194304 /dev/urandom > /root/data && rm /etc/os-release && mkdir /root/d"
            " && touch /root/d/x && rm -rf /root/d && mkdir /root/d && touch /root/d/y"
            " && sha256sum /root/data"
        )
        digest = (await sh(p, sb, write)).stdout.split()[0]
        check = "sha256sum /root/data; ls /root/d; test -e /etc/os-release; echo $?"
        ref = await p.checkpoint(sb)
        restored = await p.restore(ref)
        children = await p.fork(sb, count=2)
        for other in [restored, *children]:
            assert (await sh(p, other, check)).stdout.split() == [digest, b"/root/data", b"y",
                                                                  b"1"]  # fmt: skip
        await sh(p, children[0], "echo changed > /root/data")
        assert (await sh(p, children[1], "sha256sum /root/data")).stdout.split()[0] == digest
        for box in [sb, restored, *children]:
            await p.destroy(box)
        await p.delete_checkpoint(ref)
        assert list((state / "sandboxes").iterdir()) == []
        assert list((state / "checkpoints").iterdir()) == []
    finally:
        await p.close()


async def test_requests_wait_in_order_when_the_zygote_socket_is_full(provider, monkeypatch):
    from providers.local import provider as module

    real = module._send
    refused = []

    def full_once(sock, data, fds):
        if not refused:  # the first send finds no room: queued, sent when writable
            refused.append(data)
            raise BlockingIOError
        real(sock, data, fds)

    monkeypatch.setattr(module, "_send", full_once)
    first, second = await asyncio.gather(
        provider.create(SandboxSpec()), provider.create(SandboxSpec())
    )
    try:
        assert refused and b'"spawn"' in refused[0]
        for sb in (first, second):
            assert (await sh(provider, sb, ["hostname"])).stdout.strip() == sb.id.encode()
        assert provider._zygote.outbox == []
    finally:
        await provider.destroy(first)
        await provider.destroy(second)


RENAMING_LOOP = (
    "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /root/n.tmp; mv /root/n.tmp /root/n;"
    " done' >/dev/null 2>&1 & sleep 0.05"
)


@pytest.mark.parametrize("paused", [False, True], ids=["running", "paused"])
async def test_overlapping_copies_of_a_sandbox_all_run_frozen(provider, sandbox, paused):
    """Two checkpoints and a fork of one sandbox at once (the Daytona emulator's two-child
    fork checkpoints its parent twice at once): every copy must end with the sandbox still
    frozen, and afterwards it runs again, or stays paused if it was paused before."""
    await sh(provider, sandbox, RENAMING_LOOP)
    group = provider._sandboxes[sandbox.id].group
    if paused:
        await provider.pause(sandbox)
    frozen_at_copy_end: list[bool] = []

    def watch(pid: int, running: bool) -> None:
        if not running:
            frozen_at_copy_end.append(cg.is_frozen(group))

    layers.copy_watchers.append(watch)
    try:
        refs_and_children = await asyncio.gather(
            provider.checkpoint(sandbox),
            provider.checkpoint(sandbox),
            provider.fork(sandbox, count=1),
        )
    finally:
        layers.copy_watchers.remove(watch)
    assert len(frozen_at_copy_end) >= 3 and all(frozen_at_copy_end), frozen_at_copy_end
    assert cg.is_frozen(group) is paused
    if paused:
        await provider.resume(sandbox)
    first = await sh(provider, sandbox, "cat /root/n; sleep 0.1; cat /root/n")
    before, after = (int(x) for x in first.stdout.split())
    assert after > before  # the loop runs again
    for ref in refs_and_children[:2]:
        await provider.delete_checkpoint(ref)
    for child in refs_and_children[2]:
        await provider.destroy(child)


async def test_a_resume_during_a_copy_takes_effect_when_the_copy_ends(provider, sandbox):
    """pause and resume while a copy holds the sandbox frozen: the copy stays frozen to its
    end; the last word (here resume) decides the state afterwards."""
    await sh(provider, sandbox, RENAMING_LOOP)
    group = provider._sandboxes[sandbox.id].group
    await provider.pause(sandbox)
    frozen_at_copy_end: list[bool] = []
    resumed = asyncio.Event()

    def watch(pid: int, running: bool) -> None:
        if running:  # the copy has started: resume meanwhile
            asyncio.get_running_loop().call_soon(resumed.set)
        else:
            frozen_at_copy_end.append(cg.is_frozen(group))

    async def resume_meanwhile() -> None:
        await resumed.wait()
        await provider.resume(sandbox)

    layers.copy_watchers.append(watch)
    try:
        ref, _ = await asyncio.gather(provider.checkpoint(sandbox), resume_meanwhile())
    finally:
        layers.copy_watchers.remove(watch)
    assert frozen_at_copy_end == [True]
    assert not cg.is_frozen(group)
    await provider.delete_checkpoint(ref)
