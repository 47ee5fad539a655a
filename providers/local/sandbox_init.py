"""PID 1 of a sandbox: prepares its directory and cgroups, builds its root inside a private
mount namespace, starts the exec agent, then reaps.

Runs in a process the zygote has just forked into a new pid namespace (it is PID 1 there),
holding one end of a socket pair whose other end the provider keeps (the sandbox's first
agent connection). Steps, all inside namespaces that die with this process, so killing it
leaves no mount, interface or process behind on the host:

1. stdio to /dev/null, every inherited descriptor closed but its own; cmdline and environ
   blanked (``sb-init``);
2. waits until the provider has made the sandbox directory (``meta.json`` first: it names the
   cgroups before they exist, so a reaper can always find what an interrupted create left),
   the writable layer's directories and, for create, the cgroups with the spec's limits,
   which it does on a thread while the zygote forks (for restore and fork the layer was
   made before, and PID 1 makes the cgroups itself); joins the cgroups (before it allocates
   or forks anything);
3. binds the agent's unix socket at ``<dir>/agent.sock`` (a host path, reachable from the
   host although the sandbox is in its own network namespace);
4. ``unshare(NEWNS | NEWUTS | NEWIPC | NEWNET)`` and starts the exec agent at once, so that
   the agent's start-up runs on the other core while this process mounts: the compiled agent
   (sbagent.c, built by scripts/setup.sh) by ``posix_spawn``, else the Python one
   (agent.py) by a fork; the agent hardens itself (below) and waits for a "go" on a pipe;
5. mounts the root (``merged``): an overlay of the skeleton lower (the host's top-level layout,
   empty) or of the ``rootfs`` setting, with ``fs/upper/top`` as its writable layer; then for
   each allowed host system directory (usr, etc, and real lib*/bin/sbin) an overlay of that
   directory with its own writable layer ``fs/upper/<dir>``; proc (its sensitive files
   read-only), sysfs read-only, a tmpfs ``/dev`` with the host's null, zero, full, random,
   urandom and tty bind-mounted in, devpts, ``/dev/shm`` and a private tmpfs ``/tmp``; brings
   ``lo`` up; sets the hostname; ``pivot_root`` into ``merged`` (which moves the agent too)
   and detaches the old root (the capability bounding set, Docker's default set minus
   CAP_MKNOD, was already cut in the zygote and is inherited). With the compiled helper
   (sbnative.c, loaded by the zygote) these system calls run in C, else in Python below:
   the same calls in the same order (tests/test_local_native.py compares the two roots);
6. hardens itself: no_new_privs, not dumpable (no sandbox process may ptrace it or read
   its memory); the agent has meanwhile done the same and loaded the seccomp filter
   (seccomp.py) when the provider has one;
7. tells the agent "go", then loads the seccomp filter itself (off the create's path: PID 1
   runs only this module, reads nothing from the sandbox and cannot be ptraced, and the
   filter is in place before it forks anything, e.g. a restarted agent, which inherits it),
   and tells the zygote "ready"; then reaps every process orphaned in the sandbox, and
   restarts the agent if it dies (e.g. OOM-killed): always the Python agent, forked, which
   inherits PID 1's hardening (an exec'd program would be dumpable until it ran).

When scripts/setup.sh has built it (with the compiled agent), a sandbox's PID 1 is instead
``sb-init`` (sbinit.c): the same steps, in the same order, in a small static program the zygote
starts with posix_spawn rather than a fork of itself; it restarts a dead agent by forking
itself and exec'ing the compiled agent. This module is then only the fallback.

Only the standard library's lightest modules are imported here (see zygote.py: every module
the zygote holds makes each sandbox's fork slower); nothing can be imported after
``pivot_root``, where the host's Python library is no longer visible.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time

from providers.local import _linux as L
from providers.local import agent

DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
#: /proc entries that would let the sandbox's root change the host kernel: made read-only.
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
AGENT_RESTARTS_PER_MINUTE = 10
TITLE = "sb-init"


def run(spec: dict, ready_fd: int, lifeline_fd: int, conn_fd: int, dirs_fd: int | None) -> None:
    """Become the sandbox's PID 1. Never returns; reports failures on ``ready_fd``."""
    try:
        keep = [ready_fd, conn_fd] + ([dirs_fd] if dirs_fd is not None else [])
        if L.native is not None:  # the same steps in C (sbnative.c)
            host_pid, starttime = L.native_enter(lifeline_fd, keep, TITLE)
        else:
            L.prctl(L.PR_SET_PDEATHSIG, signal.SIGKILL)
            # If the zygote died before the line above, nothing would ever kill us: check.
            if select.select([lifeline_fd], [], [], 0)[0]:
                os._exit(1)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            _close_fds(keep=set(keep))
            host_pid, starttime = own_host_identity()
            L.set_comm(TITLE)
            os.setsid()
        d = spec["dir"]
        if dirs_fd is not None:  # the provider is making the directory meanwhile
            made = os.read(dirs_fd, 1)
            os.close(dirs_fd)
            if made != b"d":
                raise RuntimeError("the provider could not make the sandbox directory")
        else:  # restore or fork: the layer came first; overlay needs the work directories
            _make_layers(d, spec["layers"])
        cgroup = spec.get("cgroup")
        if not cgroup:  # without cgroups a reaper finds PID 1 by pid and start time
            with open(f"{d}/pid", "w") as f:
                f.write(f"{host_pid} {starttime}\n")
        if cgroup:
            run_steps(cgroup["create"])
        if L.native is not None:
            listener = socket.socket(fileno=L.native_isolate(d, cgroup["procs"] if cgroup else []))
        else:
            if cgroup:
                for procs in cgroup["procs"]:
                    with open(procs, "w") as f:
                        f.write("0")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            os.chdir(d)  # bind relative: the absolute path may exceed sun_path's 108 bytes
            listener.bind("agent.sock")
            listener.listen(128)
            os.chdir("/")
            L.unshare(L.CLONE_NEWNS | L.CLONE_NEWUTS | L.CLONE_NEWIPC | L.CLONE_NEWNET)
        identity = {"host_pid": host_pid, "starttime": starttime}
        go_r, go_w = os.pipe()
        if spec.get("agent_binary"):  # the compiled agent (sbagent.c), exec'd: no fork
            agent_pid = _spawn_agent(spec["agent_binary"], listener, identity, conn_fd=conn_fd,
                                     go_fd=go_r, seccomp=spec.get("seccomp"))  # fmt: skip
        else:
            agent_pid = _fork_agent(listener, identity, conn_fd=conn_fd, go_fd=go_r, spec=spec,
                                    close=(go_w, ready_fd))  # fmt: skip
        os.close(go_r)
        os.close(conn_fd)
        _build(spec)
        harden(spec, seccomp=False)
        try:
            os.write(go_w, b"g")
        except BrokenPipeError:
            raise RuntimeError("the agent exited before its go") from None
        os.close(go_w)
        # PID 1's own filter comes after the go, off the create's path: PID 1 runs only this
        # module's code, takes no input from the sandbox and cannot be ptraced (not dumpable),
        # and it is in place before PID 1 forks anything else (a restarted agent inherits it).
        if spec.get("seccomp"):
            L.load_seccomp(spec["seccomp"])
        os.write(ready_fd, f"ok {host_pid} {starttime}\n".encode())
        os.close(ready_fd)
    except BaseException as exc:  # noqa: BLE001 - reported to the provider, then exit
        detail = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error {detail}\n".encode())
        os._exit(1)
    _reap_forever(listener, agent_pid, identity)


def own_host_identity() -> tuple[int, int]:
    """This process's pid as the host sees it and its start time (clock ticks since boot),
    read from the host's /proc, which is still mounted: together they name it without
    ambiguity even after the pid is reused. Blanks the cmdline and environ on the way
    (one read of /proc/self/stat serves both)."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    L.set_cmdline(TITLE, stat)
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(stat.split()[0]), int(fields[19])


def _make_layers(d: str, layers: list[str]) -> None:
    for kind in ("upper", "work"):
        base = f"{d}/fs/{kind}"
        if not os.path.isdir(base):
            os.mkdir(base)
        for layer in layers:
            if not os.path.isdir(f"{base}/{layer}"):
                os.mkdir(f"{base}/{layer}")


def run_steps(steps: list[list]) -> None:
    """Run the file steps cgroups.create_steps planned: ``["mkdirs", path]``,
    ``["mkdir", path]``, ``["write", path, value, optional]``."""
    for step in steps:
        if step[0] == "mkdirs":
            if not os.path.isdir(step[1]):
                os.makedirs(step[1], exist_ok=True)
        elif step[0] == "mkdir":
            os.mkdir(step[1])
        else:
            try:
                with open(step[1], "w") as f:
                    f.write(step[2])
            except OSError:
                if not step[3]:
                    raise


def _build(spec: dict) -> None:
    if L.native is not None:
        L.native_build(spec["dir"], spec["lower"], spec["system_dirs"], spec.get("etc_mask"),
                       spec["userns"], spec["hostname"])  # fmt: skip
        return
    d = spec["dir"]
    fs = f"{d}/fs"
    merged = f"{d}/merged"
    userns = spec["userns"]
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
    os.chdir(merged)
    L.pivot_root(".", ".")
    L.umount2(".", L.MNT_DETACH)
    os.chdir("/")


def harden(spec: dict, *, seccomp: bool = True) -> None:
    """Limit what this process, and everything it starts from now on, may do (step 6);
    ``seccomp=False``: all but the seccomp filter (PID 1 loads it after its go)."""
    # The capability bounding set was cut by the zygote (zygote.main). no_new_privs,
    # inherited by the agent and every command: setuid binaries and file capabilities can no
    # longer raise what a process holds (and seccomp filters need it without CAP_SYS_ADMIN).
    if L.native is not None:
        L.native_harden(spec.get("seccomp") if seccomp else None)
        return
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)
    # PID 1 and the agent keep the full capability sets they were forked with; being not
    # dumpable, no process of the sandbox (which lacks CAP_SYS_PTRACE) can ptrace them or
    # read their /proc files. Commands they start are dumpable again after execve.
    L.prctl(L.PR_SET_DUMPABLE, 0)
    if seccomp and spec.get("seccomp"):
        L.load_seccomp(spec["seccomp"])


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


def _fork_agent(
    listener: socket.socket,
    identity: dict,
    *,
    conn_fd: int | None = None,
    go_fd: int | None = None,
    spec: dict | None = None,
    close: tuple[int, ...] = (),
) -> int:
    """Fork the agent. The first one (``go_fd`` given) hardens itself and waits for PID 1's
    go; a restarted one inherits PID 1's hardening and its root at once."""
    pid = os.fork()
    if pid == 0:
        try:
            for fd in close:
                os.close(fd)
            L.set_title("sb-agent")
            gate = None
            if go_fd is not None:
                assert spec is not None
                harden(spec)
                # Everything up to the ping's answer is done now, in parallel with PID 1's
                # mounts; the answer itself waits for the go (the root is ready then).
                gate = agent.Gate(go_fd, then=_enter_cwd)
            else:
                _enter_cwd()
            agent.serve(listener, identity, first=conn_fd, gate=gate)
        finally:
            os._exit(1)
    return pid


#: The descriptors the compiled agent finds its listener, first connection, go pipe and
#: configuration on (sbagent.c).
AGENT_FDS = (3, 4, 5, 6)


def _spawn_agent(
    path: str,
    listener: socket.socket,
    identity: dict,
    *,
    conn_fd: int,
    go_fd: int,
    seccomp: bytes | None,
) -> int:
    """Start the compiled agent (sbagent.c) with posix_spawn: vfork and exec, so neither
    this process's pages nor its page tables are copied (a fork of this Python process costs
    ~350 copy-on-write faults in the child, ~3 us each on this VM, and as many again here).
    It hardens itself (not dumpable first, no_new_privs, the seccomp filter sent on its
    configuration pipe) and waits for the go as the Python agent does. A restarted agent is
    still the Python one, forked from this process (:func:`_fork_agent`): it inherits PID 1's
    hardening, while an exec'd program would be dumpable until its first instruction ran."""
    program = seccomp or b""
    header = f"{identity['host_pid']} {identity['starttime']} {len(program)}\n".encode()
    config_r = L.pipe_holding(header + program)
    try:
        return L.spawn_with_fds(path, "sb-agent", [listener.fileno(), conn_fd, go_fd, config_r],
                                AGENT_FDS[0])  # fmt: skip
    finally:
        os.close(config_r)


def _enter_cwd() -> None:
    os.chdir(agent.DEFAULT_CWD if os.path.isdir(agent.DEFAULT_CWD) else "/")


def _reap_forever(listener: socket.socket, agent_pid: int, identity: dict) -> None:
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
                agent_pid = _fork_agent(listener, identity)
                break
            except OSError:  # pids.max reached (e.g. a fork bomb): wait for room
                time.sleep(0.05)
