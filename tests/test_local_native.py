"""The local provider's two ways of building a sandbox's root: the compiled helper
(providers/local/sbnative.c, built by scripts/setup.sh) and the Python fallback. Both must give
the same sandbox, the manifest must say which one ran, and a missing or stale helper must
fall back to Python rather than fail.

Needs root and a C compiler (each test builds the helper into its own temporary directory).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from providers.base import RUN_LABEL, SandboxSpec
from providers.errors import SandboxCrashed
from providers.local import LocalProvider
from providers.local import provider as provider_module
from providers.local import zygote as zygote_module

SOURCE = Path(provider_module.__file__).with_name("sbnative.c")
COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Linux namespaces only"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the local provider's full mode needs root"),
    pytest.mark.skipif(COMPILER is None, reason="no C compiler to build the helper with"),
    pytest.mark.timeout(120),
]
SPEC = SandboxSpec(labels={RUN_LABEL: "test-native"})
#: Run inside a sandbox: what its root looks like, minus the parts that name the sandbox.
PROBE = (
    "cat /proc/self/mountinfo; echo ---; hostname; echo ---; cat /sys/class/net/lo/operstate;"
    " echo ---; ls -l /dev | sed 1d; echo ---; grep -E '^(Seccomp|NoNewPrivs|Cap[A-Za-z]+):'"
    " /proc/self/status; echo ---; touch /usr/x /etc/y /root/z && echo writable; echo ---;"
    " tr '\\0' '|' < /proc/1/cmdline; echo; cat /proc/1/comm; cut -d' ' -f6 /proc/1/stat;"
    " tr '\\0' '|' < /proc/1/environ | wc -c"
)


def build(tmp_path: Path, source: str | None = None) -> Path:
    src = tmp_path / "sbnative.c"
    src.write_text(source if source is not None else SOURCE.read_text())
    lib = tmp_path / "sbnative.so"
    subprocess.run([COMPILER, "-O2", "-Wall", "-Werror", "-shared", "-fPIC", "-o", lib, src],
                   check=True)  # fmt: skip
    return lib


INIT_SOURCE = Path(provider_module.__file__).with_name("sbinit.c")


def build_init(tmp_path: Path, native_source: str | None = None) -> Path:
    """sb-init (sbinit.c with sbnative.c, or with ``native_source`` in its place)."""
    native = tmp_path / "sbinit-native.c"
    native.write_text(native_source if native_source is not None else SOURCE.read_text())
    binary = tmp_path / "sb-init"
    command = [COMPILER, "-O2", "-Wall", "-Werror", "-o", binary, INIT_SOURCE, native]
    if subprocess.run([*command[:4], "-static", *command[4:]]).returncode != 0:
        subprocess.run(command, check=True)  # no static C library here: dynamic
    return binary


def normalise(text: str, sid: str, state_dir: Path) -> list[str]:
    """The probe's output with mount ids, device numbers, the state directory and the
    sandbox's id replaced, so that two sandboxes' outputs compare equal."""
    lines = []
    for line in text.replace(str(state_dir), "<state>").replace(sid, "<id>").splitlines():
        fields = line.split()
        if len(fields) > 6 and " - " in line:  # mountinfo: drop mount ids and st_dev
            line = " ".join(fields[3:])
        line = re.sub(r"\b\d{1,2}:\d{1,3}\b", "<dev>", line)  # ls -l /dev major, minor
        line = re.sub(r"\b[A-Z][a-z]{2} +\d+ \d\d:\d\d\b", "<date>", line)
        lines.append(line)
    return lines


def open_files(pid: int) -> list[str]:
    """What a host process holds open, by kind (``socket``, ``pipe``, a path)."""
    kinds = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        kind = re.sub(r":\[\d+\]$", "", target)
        kinds.append(f"{fd}:{kind}")
    return kinds


async def probe(p: LocalProvider, state_dir: Path) -> list[str]:
    sb = await p.create(SPEC)
    try:
        result = await p.exec(sb, ["/bin/sh", "-c", PROBE], timeout_s=20)
        assert result.exit_code == 0, result.stderr
        await asyncio.sleep(0.3)  # PID 1 closes its "ready" pipe just after the go
        host_pid = p._sandboxes[sb.id].host_pid
        held = open_files(host_pid)
        status = Path(f"/proc/{host_pid}/status").read_text().splitlines()
        caps = [line for line in status if line.startswith(("Cap", "NoNewPrivs", "Seccomp:"))]
        return [*normalise(result.stdout.decode(), sb.id, state_dir), "---", *caps, "---",
                *held]  # fmt: skip
    finally:
        await p.destroy(sb)


async def test_sb_init_the_helper_and_the_python_path_build_the_same_sandbox(tmp_path, monkeypatch):
    """The same sandbox three ways: PID 1 is sb-init (sbinit.c, exec'd), a fork of the
    zygote with the compiled helper (sbnative.c), a fork running the Python path."""
    monkeypatch.setattr(provider_module, "NATIVE_LIB", build(tmp_path))
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", build_agent(tmp_path))
    init = build_init(tmp_path)
    seen = {}
    for way, native, init_path in (
        ("sb-init", True, init),
        ("helper", True, tmp_path / "absent-sb-init"),
        ("python", False, init),
    ):
        monkeypatch.setattr(provider_module, "NATIVE_INIT", init_path)
        state_dir = tmp_path / f"state-{way}"
        p = LocalProvider({"state_dir": str(state_dir), "native": native})
        await p.open()
        try:
            env = p.environment()
            seen[way] = env["pid1"], env["pid1_root"], await probe(p, state_dir)
        finally:
            await p.close()
        assert not any((state_dir / "sandboxes").iterdir())
    assert seen["sb-init"][0] == "native (sb-init)"
    assert seen["helper"][:2] == ("python (no sb-init: scripts/setup.sh builds it)", "native")
    assert seen["python"][:2] == ("python (setting native = false)",) * 2
    # sb-init holds one descriptor more, and only that one: the agent's binary, opened
    # O_PATH before pivot_root to restart a dead agent (sbinit.c)
    native = seen["sb-init"][2]
    assert native[-1] == f"4:{provider_module.NATIVE_AGENT}", native[-3:]
    native = native[:-1]

    def cmdline_trimmed(lines: list[str]) -> list[str]:
        # /proc/1/cmdline: a forked PID 1 shows the zygote's whole (blanked) argument area,
        # "sb-init" and NULs; sb-init's own argv is just "sb-init"
        return [line.rstrip("|") + "|" if line.startswith("sb-init|") else line
                for line in lines]  # fmt: skip

    for way in ("helper", "python"):
        seen[way] = (*seen[way][:2], cmdline_trimmed(seen[way][2]))
    assert native == seen["helper"][2]
    assert native == seen["python"][2]
    text = "\n".join(native)
    assert "overlay" in text and "proc" in text and "writable" in text
    assert "Seccomp:\t2" in text and "NoNewPrivs:\t1" in text
    # PID 1 holds /dev/null as stdio and its agent's listening socket, nothing of the host's
    held = native[native.index("---", -8) + 1 :]
    assert [h.split(":", 1)[1] for h in held] == ["/dev/null"] * 3 + ["socket"], held
    # PID 1's title, name and session (its own); its environ unreadable (not dumpable)
    probed = native[: native.index("---", -16)]
    cmdline, comm, session, environ = probed[-4:]
    assert cmdline.rstrip("|") == "sb-init" and comm == "sb-init" and session == "1"
    assert environ == "0"
    # PID 1's capabilities are the zygote's (a fork's), its inheritable set empty again
    assert "CapInh:\t0000000000000000" in native and "Seccomp:\t2" in native


async def test_without_the_helper_or_with_a_stale_one_python_builds_the_root(tmp_path, monkeypatch):
    stale = build(tmp_path, SOURCE.read_text().replace("return 3; }", "return 99; }", 1))
    for lib, expected in (
        (tmp_path / "absent.so", "python (no compiled helper: scripts/setup.sh builds it)"),
        (stale, f"python ({stale} speaks ABI 99, not 3: run scripts/setup.sh)"),
    ):
        monkeypatch.setattr(provider_module, "NATIVE_LIB", lib)
        monkeypatch.setattr(provider_module, "NATIVE_INIT", tmp_path / "absent-sb-init")
        p = LocalProvider({"state_dir": str(tmp_path / "state")})
        await p.open()
        try:
            assert p.environment()["pid1_root"] == expected
            assert p.capabilities().notes["pid1_root"] == expected
            assert "writable" in "\n".join(await probe(p, tmp_path / "state"))
        finally:
            await p.close()


@pytest.mark.parametrize("pid1", ["sb-init", "fork"])
async def test_a_failing_native_step_fails_the_create_with_its_reason(tmp_path, monkeypatch, pid1):
    # A helper whose sethostname always fails: the create must fail with that reason,
    # and nothing may be left behind.
    broken = SOURCE.read_text().replace(
        "if (sethostname(hostname, strlen(hostname)) != 0)", "if (errno = EPERM, 1)", 1
    )
    monkeypatch.setattr(provider_module, "NATIVE_LIB", build(tmp_path, broken))
    monkeypatch.setattr(provider_module, "NATIVE_INIT", build_init(tmp_path, broken)
                        if pid1 == "sb-init" else tmp_path / "absent")  # fmt: skip
    state_dir = tmp_path / "state"
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    try:
        assert p.environment()["pid1_root"] == "native"
        assert p.environment()["pid1"].startswith("native" if pid1 == "sb-init" else "python")
        with pytest.raises(Exception, match="sethostname: Operation not permitted"):
            await p.create(SPEC)
        assert not any((state_dir / "sandboxes").iterdir())
        assert await p.list_sandboxes("test-native") == []
    finally:
        await p.close()


@pytest.mark.parametrize("pid1", ["sb-init", "fork"])
async def test_pid_1_carries_the_syscall_filter_soon_after_create(tmp_path, monkeypatch, pid1):
    """PID 1 loads its own seccomp filter right after its go to the agent (off the create's
    path); it must be there before PID 1 could fork anything, and visibly soon after. A
    restarted agent runs under it: forked by a forked PID 1, forked and exec'd by sb-init."""
    monkeypatch.setattr(provider_module, "NATIVE_LIB", build(tmp_path))
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", build_agent(tmp_path))
    init = build_init(tmp_path) if pid1 == "sb-init" else tmp_path / "absent"
    monkeypatch.setattr(provider_module, "NATIVE_INIT", init)
    p = LocalProvider({"state_dir": str(tmp_path / "state")})
    await p.open()
    try:
        assert p.environment()["pid1"].startswith("native" if pid1 == "sb-init" else "python")
        sb = await p.create(SPEC)
        deadline = time.monotonic() + 5
        while True:
            status = await p.exec(sb, ["grep", "^Seccomp:", "/proc/1/status", "/proc/2/status"],
                                  timeout_s=10)  # fmt: skip
            if status.stdout.count(b"\t2\n") == 2 or time.monotonic() > deadline:
                break
        assert status.stdout.count(b"\t2\n") == 2, status.stdout
        before = await p.exec(sb, "grep -E '^(Cap|NoNewPrivs)' /proc/$PPID/status", timeout_s=10)
        # a restarted agent is started by PID 1 after its filter: it inherits the filter
        with pytest.raises(SandboxCrashed):
            await p.exec(sb, "kill -9 $PPID; sleep 1", timeout_s=10)  # the shell's parent
        again = await p.exec(sb, "grep ^Seccomp: /proc/$PPID/status", timeout_s=10)
        assert again.stdout.split() == [b"Seccomp:", b"2"]
        after = await p.exec(sb, "grep -E '^(Cap|NoNewPrivs)' /proc/$PPID/status", timeout_s=10)
        assert b"NoNewPrivs:\t1" in after.stdout
        if pid1 == "sb-init":  # exec'd: the first agent's capabilities (the bounding set),
            assert after.stdout == before.stdout  # sb-init put its inheritable set back
        else:  # forked: PID 1's own capabilities (not dumpable, so out of the sandbox's reach)
            assert after.stdout != before.stdout
        # sb-init restarts the compiled agent (a few hundred KiB), a forked PID 1 Python's
        assert (await agent_rss_kib(p, sb) < 2048) == (pid1 == "sb-init")
        ps = await p.exec(sb, ["ps", "-o", "pid=,comm=", "-p", "1"], timeout_s=10)
        assert ps.stdout.split() == [b"1", b"sb-init"]
        await p.destroy(sb)
    finally:
        await p.close()


# -- the compiled agent (sbagent.c) -----------------------------------------------------------

AGENT_SOURCE = Path(provider_module.__file__).with_name("sbagent.c")


def build_agent(tmp_path: Path) -> Path:
    binary = tmp_path / "sb-agent"
    command = [COMPILER, "-O2", "-Wall", "-Werror", "-pthread", "-o", binary, AGENT_SOURCE]
    if subprocess.run([*command[:-1], "-static", AGENT_SOURCE]).returncode != 0:
        subprocess.run(command, check=True)  # no static C library here: dynamic
    return binary


def fake_agent(tmp_path: Path, name: str, body: str) -> Path:
    """A compiled program that carries the agent's ABI mark but misbehaves as ``body`` (C
    statements of its main) says. Compiled, not a script: a shell opens its script by path
    after the exec, and PID 1's pivot_root may have hidden that path by then."""
    mark = zygote_module.AGENT_ABI_MARK.decode()
    source = tmp_path / f"{name}.c"
    source.write_text(
        "#include <unistd.h>\n"
        f'__attribute__((used)) static const char mark[] = "{mark}";\n'
        f"int main(void) {{ {body} }}\n"
    )
    path = tmp_path / name
    subprocess.run([COMPILER, "-O2", "-Wall", "-Werror", "-o", path, source], check=True)
    return path


async def agent_rss_kib(p: LocalProvider, sb) -> int:
    """The resident size of the sandbox's agent (the parent of the command that asks)."""
    result = await p.exec(sb, "grep ^VmRSS: /proc/$PPID/status", timeout_s=10)
    return int(result.stdout.split()[1])


async def test_the_compiled_agent_serves_and_a_restarted_agent_is_python(tmp_path, monkeypatch):
    """With sb-agent built, PID 1 execs it (a few hundred KiB resident, against the Python
    agent's MiBs); killed, it is replaced by the Python agent PID 1 forks, which inherits its
    hardening; the manifest says which agent served."""
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", build_agent(tmp_path))
    monkeypatch.setattr(provider_module, "NATIVE_INIT", tmp_path / "absent")  # a forked PID 1
    p = LocalProvider({"state_dir": str(tmp_path / "state")})
    await p.open()
    try:
        assert p.environment()["agent"] == "native"
        assert p.capabilities().notes["agent"] == "native"
        sb = await p.create(SPEC)
        first = await agent_rss_kib(p, sb)
        status = await p.exec(sb, "grep -E '^(Seccomp|NoNewPrivs):' /proc/$PPID/status",
                              timeout_s=10)  # fmt: skip
        assert status.stdout.split() == [b"NoNewPrivs:", b"1", b"Seccomp:", b"2"]
        await p.write_file(sb, "/root/a/b.txt", b"\x00\xffbytes")
        assert await p.read_file(sb, "/root/a/b.txt") == b"\x00\xffbytes"
        with pytest.raises(SandboxCrashed):
            await p.exec(sb, "kill -9 $PPID; sleep 1", timeout_s=10)
        restarted = await agent_rss_kib(p, sb)
        assert first < 2048 < restarted, (first, restarted)
        assert (await p.exec(sb, ["true"], timeout_s=10)).exit_code == 0
        await p.destroy(sb)
    finally:
        await p.close()


async def test_a_missing_or_stale_agent_binary_falls_back_to_the_python_agent(
    tmp_path, monkeypatch
):
    stale = tmp_path / "stale-agent"
    shutil.copy("/bin/true", stale)  # executable, but not built from this sbagent.c
    init = build_init(tmp_path)
    for binary, expected in (
        (tmp_path / "absent", "python (no compiled agent: scripts/setup.sh builds it)"),
        (stale, f"python ({stale} is not built from this sbagent.c: run scripts/setup.sh)"),
    ):
        monkeypatch.setattr(provider_module, "NATIVE_AGENT", binary)
        monkeypatch.setattr(provider_module, "NATIVE_INIT", init)
        p = LocalProvider({"state_dir": str(tmp_path / "state")})
        await p.open()
        try:
            assert p.environment()["agent"] == expected
            # sb-init starts only the compiled agent: without a usable one, PID 1 is a fork
            assert p.environment()["pid1"] == (
                "python (sb-init needs the compiled agent, which is not usable)"
            )
            sb = await p.create(SPEC)
            assert (await p.exec(sb, ["true"], timeout_s=10)).exit_code == 0
            assert await agent_rss_kib(p, sb) > 2048  # the Python agent
            await p.destroy(sb)
        finally:
            await p.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("return 1;", "failed to start: .*the agent exited before its go"),
        (
            'if (write(4, "not json\\n", 9) != 9) return 2; for (;;) pause();',
            "unreadable agent answer",
        ),
        ("for (;;) pause();", "no answer within 2.0 s"),
    ],
    ids=["dies", "garbage", "silent"],
)
@pytest.mark.parametrize("pid1", ["sb-init", "fork"])
async def test_an_agent_that_misbehaves_at_start_fails_the_create_and_leaks_nothing(
    tmp_path, monkeypatch, body, error, pid1
):
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", fake_agent(tmp_path, "bad", body))
    init = build_init(tmp_path) if pid1 == "sb-init" else tmp_path / "absent"
    monkeypatch.setattr(provider_module, "NATIVE_INIT", init)
    monkeypatch.setattr(provider_module, "READY_TIMEOUT_S", 2.0)
    state_dir = tmp_path / "state"
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    try:
        assert p.environment()["agent"] == "native"
        assert p.environment()["pid1"].startswith("native" if pid1 == "sb-init" else "python")
        for _ in range(2):  # and the provider goes on: the next create is refused alike
            with pytest.raises(Exception, match=error) as caught:
                await p.create(SPEC)
            assert "Traceback" not in str(caught.value)
        assert not any((state_dir / "sandboxes").iterdir())
        assert await p.list_sandboxes("test-native") == []
    finally:
        await p.close()
    assert not any((state_dir / "sandboxes").iterdir())


# -- the compiled PID 1 (sbinit.c) ------------------------------------------------------------


async def test_a_missing_or_stale_sb_init_falls_back_to_a_forked_pid_1(tmp_path, monkeypatch):
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", build_agent(tmp_path))
    stale = tmp_path / "stale-init"
    shutil.copy("/bin/true", stale)  # executable, but not built from this sbinit.c
    for binary, expected in (
        (tmp_path / "absent", "python (no sb-init: scripts/setup.sh builds it)"),
        (stale, f"python ({stale} is not built from this sbinit.c: run scripts/setup.sh)"),
    ):
        monkeypatch.setattr(provider_module, "NATIVE_INIT", binary)
        state_dir = tmp_path / "state"
        p = LocalProvider({"state_dir": str(state_dir)})
        await p.open()
        try:
            assert p.environment()["pid1"] == expected
            assert p.capabilities().notes["pid1"] == expected
            sb = await p.create(SPEC)
            assert (await p.exec(sb, ["true"], timeout_s=10)).exit_code == 0
            # a forked PID 1 shows the zygote's (blanked) argument area: longer than "sb-init"
            cmdline = await p.exec(sb, ["cat", "/proc/1/cmdline"], timeout_s=10)
            assert cmdline.stdout.startswith(b"sb-init\0") and len(cmdline.stdout) > 8
            await p.destroy(sb)
        finally:
            await p.close()
        assert not any((state_dir / "sandboxes").iterdir())


def spec_mangler(tmp_path: Path, name: str, filter_command: str) -> Path:
    """An "sb-init" that passes its spec (fd 3) through ``filter_command`` and then execs the
    real sb-init with the result: the same process, still PID 1, with a spoilt spec."""
    real = build_init(tmp_path)
    path = tmp_path / name
    path.write_text(
        f"#!/bin/sh\n# {zygote_module.INIT_ABI_MARK.decode()}\n"
        f"{filter_command} <&3 > {tmp_path}/spec.$$ && exec {real} 3< {tmp_path}/spec.$$\n"
    )
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("/usr/bin/head -c 60", r"malformed sb-init spec: (record \w+ cut short|no end record)"),
        ("/usr/bin/head -c 1", "malformed sb-init spec: no header"),
        ("/usr/bin/sed -e s/hostname/hostnam3/", "malformed sb-init spec: unknown key hostnam3"),
        ("/usr/bin/sed -e s/userns/usern/", "malformed sb-init spec: unknown key usern"),
    ],
    ids=["cut-short", "cut-in-header", "garbled-key", "garbled-required"],
)
async def test_a_cut_short_or_garbled_spec_fails_the_create_and_leaks_nothing(
    tmp_path, monkeypatch, command, error
):
    monkeypatch.setattr(provider_module, "NATIVE_AGENT", build_agent(tmp_path))
    monkeypatch.setattr(provider_module, "NATIVE_INIT", spec_mangler(tmp_path, "init", command))
    state_dir = tmp_path / "state"
    p = LocalProvider({"state_dir": str(state_dir)})
    await p.open()
    try:
        assert p.environment()["pid1"] == "native (sb-init)"
        for _ in range(2):  # and the provider goes on
            with pytest.raises(Exception, match=error) as caught:
                await p.create(SPEC)
            assert "Traceback" not in str(caught.value)
            assert "ValueError" in str(caught.value)
        assert not any((state_dir / "sandboxes").iterdir())
        assert await p.list_sandboxes("test-native") == []
    finally:
        await p.close()
    assert not any((state_dir / "sandboxes").iterdir())


async def test_without_the_helper_library_sb_init_still_builds_the_root_in_c(tmp_path, monkeypatch):
    """sb-init has sbnative.c's steps compiled in: the manifest must not say "python" for
    the root when only the zygote's library is missing."""
    monkeypatch.setattr(provider_module, "NATIVE_LIB", tmp_path / "absent.so")
    monkeypatch.setattr(provider_module, "NATIVE_INIT", build_init(tmp_path))
    p = LocalProvider({"state_dir": str(tmp_path / "state")})
    await p.open()
    try:
        assert p.environment()["pid1"] == "native (sb-init)"
        assert p.environment()["pid1_root"] == "native (compiled into sb-init)"
        assert "writable" in "\n".join(await probe(p, tmp_path / "state"))
    finally:
        await p.close()
