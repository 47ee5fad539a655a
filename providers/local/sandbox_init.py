"""PID 1 of a sandbox: builds its root inside a private mount namespace, then reaps.

Runs in a process the zygote has just forked into a new pid namespace (it is PID 1 there).
Steps, all inside namespaces that die with this process, so killing it leaves no mount,
interface or process behind on the host:

1. attach itself to the sandbox's cgroups (before anything that allocates memory or forks);
2. ``unshare(NEWNS | NEWUTS | NEWIPC | NEWNET)``, make every mount private;
3. mount the root (``merged``): an overlay of the skeleton lower (the host's top-level layout,
   empty) or of the ``rootfs`` setting, with ``fs/upper/top`` as its writable layer; then for
   each allowed host system directory (usr, etc, and real lib*/bin/sbin) an overlay of that
   directory with its own writable layer ``fs/upper/<dir>``;
4. mount proc (its sensitive files read-only), sysfs read-only, a tmpfs ``/dev`` with the
   host's null, zero, full, random, urandom and tty bind-mounted in, devpts, ``/dev/shm``
   and a private tmpfs ``/tmp``; bring ``lo`` up; set the hostname;
5. bind the agent's unix socket at ``<dir>/agent.sock`` (a host path, reachable from the
   host although the sandbox is in its own network namespace), ``pivot_root`` into
   ``merged`` and detach the old root;
6. drop capabilities from the bounding set, close every inherited file descriptor;
7. fork the exec agent (agent.py) and tell the zygote "ready"; then reap every process that
   is orphaned in the sandbox, and restart the agent if it dies (e.g. OOM-killed).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
import traceback

from providers.local import _linux as L
from providers.local import agent

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
#: /proc entries that would let the sandbox's root change the host kernel: made read-only.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
AGENT_RESTARTS_PER_MINUTE = 10


def run(spec: dict, ready_fd: int, lifeline_fd: int) -> None:
    """Become the sandbox's PID 1. Never returns; reports failures on ``ready_fd``."""
    try:
        L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
        # If the zygote died before the line above, nothing would ever kill us: check.
        if select.select([lifeline_fd], [], [], 0)[0]:
            os._exit(1)
        os.close(lifeline_fd)
        host_pid, starttime = own_host_identity()
        for procs in spec["cgroup_procs"]:
            with open(procs, "w") as f:
                f.write("0")
        listener = _build(spec)
        L.set_comm("sb-init")
        os.setsid()
        _close_fds(keep={ready_fd, listener.fileno()})
        agent_pid = _fork_agent(listener, close_fd=ready_fd)
        os.write(ready_fd, f"ok {host_pid} {starttime}\n".encode())
        os.close(ready_fd)
    except BaseException as exc:  # noqa: BLE001 - reported to the provider, then exit
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {detail}\n".encode())
        os._exit(1)
    _reap_forever(listener, agent_pid)


def own_host_identity() -> tuple[int, int]:
    """This process's pid as the host sees it and its start time (clock ticks since boot),
    read from the host's /proc, which is still mounted: together they name it without
    ambiguity even after the pid is reused."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(stat.split()[0]), int(fields[19])


def _build(spec: dict) -> socket.socket:
    d = spec["dir"]
    fs = f"{d}/fs"
    merged = f"{d}/merged"
    userns = spec["userns"]
    L.unshare(L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | L.CLONE_NEWNET)
    L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
    extra = ",userxattr" if userns else ""
    L.mount(
        "overlay",
        merged,
        "overlay",
        0,
        f"lowerdir={spec['lower']},upperdir={fs}/upper/top,workdir={fs}/work/top{extra}",
    )
    for name in spec["system_dirs"]:
        lower = f"/{name}"
        if name == "etc" and spec.get("etc_mask"):
            lower = f"{spec['etc_mask']}:/etc"  # locked password hashes, no private keys
        L.mount(
            "overlay",
            f"{merged}/{name}",
            "overlay",
            0,
            f"lowerdir={lower},upperdir={fs}/upper/{name},workdir={fs}/work/{name}{extra}",
        )
    for name in ("proc", "sys", "dev", "tmp"):
        if not os.path.isdir(f"{merged}/{name}"):  # a user rootfs may lack them
            os.makedirs(f"{merged}/{name}", exist_ok=True)
    nosuid_nodev_noexec = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC
    L.mount("proc", f"{merged}/proc", "proc", nosuid_nodev_noexec)
    for name in PROC_READONLY:
        path = f"{merged}/proc/{name}"
        if os.path.exists(path):
            L.mount(path, path, None, L.MS_BIND)
            L.mount(None, path, None, L.MS_BIND | L.MS_REMOUNT | L.MS_RDONLY | nosuid_nodev_noexec)
    with contextlib.suppress(OSError):  # sysfs is a convenience; a userns may refuse it
        L.mount("sysfs", f"{merged}/sys", "sysfs", nosuid_nodev_noexec | L.MS_RDONLY)
    _build_dev(f"{merged}/dev", userns)
    L.mount("tmpfs", f"{merged}/tmp", "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=1777")
    L.sethostname(spec["hostname"])
    L.loopback_up()

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.chdir(d)  # bind relative: the absolute path may exceed sun_path's 108 bytes
    listener.bind("agent.sock")
    listener.listen(128)

    os.chdir(merged)
    L.pivot_root(".", ".")
    L.umount2(".", L.MNT_DETACH)
    os.chdir("/root" if os.path.isdir("/root") else "/")
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    L.drop_bounding_caps(L.CAPS_KEPT, last_cap)
    # Inherited by the agent and every command: setuid binaries and file capabilities can no
    # longer raise what a process holds.
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    return listener


def _build_dev(dev: str, userns: bool) -> None:
    L.mount("tmpfs", dev, "tmpfs", L.MS_NOSUID | L.MS_NOEXEC, "mode=755,size=1m")
    for name in DEV_NODES:
        target = f"{dev}/{name}"
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o666))
        L.mount(f"/dev/{name}", target, None, L.MS_BIND)
    os.mkdir(f"{dev}/pts")
    os.mkdir(f"{dev}/shm", 0o1777)
    os.chmod(f"{dev}/shm", 0o1777)
    gid = "" if userns else ",gid=5"
    L.mount("devpts", f"{dev}/pts", "devpts", L.MS_NOSUID | L.MS_NOEXEC,
            f"newinstance,ptmxmode=0666,mode=0620{gid}")  # fmt: skip
    L.mount("tmpfs", f"{dev}/shm", "tmpfs", L.MS_NOSUID | L.MS_NODEV, "mode=1777")
    for name, target in (("ptmx", "pts/ptmx"), ("fd", "/proc/self/fd"),
                         ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")


def _close_fds(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 16)


def _fork_agent(listener: socket.socket, close_fd: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            if close_fd is not None:
                os.close(close_fd)
            L.set_comm("sb-agent")
            agent.serve(listener)
        finally:
            os._exit(1)
    return pid


def _reap_forever(listener: socket.socket, agent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    restarts: list[float] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            pid = agent_pid  # cannot happen while the agent lives; restart it if it does
        except InterruptedError:
            continue
        if pid != agent_pid:
            continue
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > AGENT_RESTARTS_PER_MINUTE:
            sys.exit(1)  # the sandbox is broken: PID 1 exits and the provider sees it
        while True:
            try:
                agent_pid = _fork_agent(listener)
                break
            except OSError:  # pids.max reached (e.g. a fork bomb): wait for room
                time.sleep(0.05)
