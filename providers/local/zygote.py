"""The zygote: one pre-imported Python process per provider that forks every sandbox.

Why: a fresh Python interpreter costs 15-25 ms to start; forking this one costs well under
a millisecond, and the child already has every module the sandbox's PID 1 and agent need
(they cannot import anything after ``pivot_root``). A fork's cost grows with the memory the
process has written (page tables are copied, pages are copied on write; on this VM's PVM
virtualisation both are slow), so the zygote is kept small: it starts with ``-I -S`` (no
site-packages), bypasses the ``providers`` package's ``__init__`` (which imports the
provider interface and importlib.metadata) and imports only light standard modules; it
freezes its garbage collector's objects so children never touch them.

Started by the provider (``LocalProvider.open``) with a minimal environment (no secret of
the harness's can reach a sandbox's ``/proc/1/environ``). Its standard input is a unix
SOCK_SEQPACKET socket: one JSON request per packet, possibly carrying a file descriptor
(SCM_RIGHTS). Its standard output is a pipe: JSON lines. Requests carry ``rid`` and get
exactly one answer with the same ``rid``:

* ``spawn {sid, spec}`` + the sandbox's end of a socket pair (and, when the provider makes
  the sandbox's directory meanwhile, the read end of a pipe that says when it is made: "d",
  or "x" if that failed) -> ``{ok, pid, host_pid,
  starttime}`` once the sandbox's root is built and its agent told to serve, or
  ``{ok: false, error}``. The provider does not wait for this answer to know the sandbox is
  ready: the agent answers a ping the provider queued on the socket pair;
* ``kill {sid}`` -> ``{ok, status}`` once its PID 1 has been reaped (the kernel has then
  killed and reaped everything in its pid namespace, and its mounts are gone);
* ``forget {sid}`` (no answer): the provider has cleaned the sandbox up itself;
* ``adopt {pid, starttime}``, ``release {pid}`` (no answer): a copy program the harness runs
  (layers.py: checkpoint, restore, fork) started, ended.

Events: ``{"event": "hello", ...}`` when ready; ``{"event": "exit", sid, status}`` whenever
a sandbox's PID 1 exits.

Each sandbox's PID 1 is a direct child: the zygote calls ``unshare(CLONE_NEWPID)`` so that its
next child is PID 1 of a new pid namespace, starts it, and goes back to its own namespace with
``setns``. It starts the compiled PID 1 (sbinit.c, ``sb-init``) with ``posix_spawn`` (vfork +
exec: no page tables copied, no copy-on-write afterwards in either process) when scripts/setup.sh
built it and the compiled agent; else it forks and the child runs sandbox_init.run (the hello's
``pid1`` says which). Being the parent lets PID 1 use ``PR_SET_PDEATHSIG``: if the zygote
dies, even by SIGKILL, every sandbox dies with it. When stdin reaches EOF (the harness exited or was
killed) or on SIGTERM, the zygote kills the adopted copies still running (the same pid and
start time) and every sandbox it spawned and was not told to forget, removes their cgroups
and directories, and exits: a dead harness leaks nothing.

As root with cgroups, the zygote lives in a mount namespace of its own (a slave of the
host's) where it mounts an empty, named cgroup v1 hierarchy with ``favordynmods``: while
that mount exists the kernel keeps the cgroup migration lock in its writer-friendly mode,
so a sandbox joining its cgroups no longer waits for an RCU grace period (measured here:
p90 of joining four v1 cgroups after an idle gap 13.8 ms without, 0.5 ms with). The mount
dies with the zygote's namespace, so nothing is left on the host; the cost is that fork and
exit on the whole host take the lock's slower reader path (an atomic operation) meanwhile.

In user-namespace mode (not root) the zygote first enters a new user namespace that maps the
caller to root, and a new pid namespace whose PID 1 it becomes (an outer process only waits
for it), so that it holds the capabilities needed for the per-sandbox namespaces.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import signal
import socket
import sys
import time

from providers.local import _linux as L
from providers.local import sandbox_init

DYNMODS_OPTIONS = "none,name=sandbox-bench-dynmods,favordynmods"


class _Record:
    """One sandbox this zygote spawned (a plain class: dataclasses would cost fork time)."""

    __slots__ = ("cgroup", "dir", "kill_waiters", "pid", "sid", "status")

    def __init__(self, sid: str, pid: int, d: str, cgroup: dict | None) -> None:
        self.sid = sid
        self.pid = pid
        self.dir = d
        self.cgroup = cgroup
        self.status: int | None = None  # exit status once reaped
        self.kill_waiters: list[int] = []


class Zygote:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
        # Children hold the read end; it reports HUP as soon as this process is gone.
        self.lifeline_r, self.lifeline_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.requests = socket.socket(fileno=0)
        self.seccomp = bytes.fromhex(config["seccomp"]) if config.get("seccomp") else None
        self.agent_binary = config.get("agent_binary")
        #: The compiled PID 1 (sbinit.c) when usable (main checked it), else None: fork.
        self.init_binary = config.get("init_binary")
        if self.init_binary:
            self.devnull = os.open("/dev/null", os.O_RDWR)
            program = self.seccomp or b""
            self.init_tail = b"".join((
                _record(b"agent", self.agent_binary),
                _record(b"capinh", format(config["capinh"], "x")),
                b"seccomp\0%d\0%s" % (len(program), program) if program else b"",
                b"end\0",
            ))  # fmt: skip
        self.terminate = False
        self.records: dict[str, _Record] = {}
        self.by_pid: dict[int, _Record] = {}
        self.pending: dict[int, tuple[int, _Record, bytearray]] = {}  # ready fd -> ...
        self.adopted: dict[int, int] = {}  # the harness's running copies: pid -> start time
        self.poller = select.poll()
        self.poller.register(0, select.POLLIN)
        self.poller.register(self.wake_r, select.POLLIN)

    def _on_term(self, *_: object) -> None:
        self.terminate = True

    # -- output ---------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(1, view) :]
            except InterruptedError:
                continue
            except BrokenPipeError:
                self.terminate = True
                return

    # -- main loop ------------------------------------------------------------------------

    def loop(self, hello: dict) -> None:
        self.send({"event": "hello", "pid": os.getpid(), "mode": self.config["mode"], **hello})
        while not self.terminate:
            for fd, _ in self.poller.poll():
                if fd == 0:
                    self._read_request()
                elif fd == self.wake_r:
                    try:
                        while os.read(self.wake_r, 4096):
                            pass
                    except BlockingIOError:
                        pass
                    self._reap()
                else:
                    self._read_ready(fd)
        self.shutdown()

    def _read_request(self) -> None:
        req = None
        try:
            data, fds, flags, _ = socket.recv_fds(
                self.requests, 1 << 20, 4, socket.MSG_CMSG_CLOEXEC
            )
        except InterruptedError:
            return
        except ConnectionResetError:
            data, fds, flags = b"", [], 0
        if not data:
            for fd in fds:
                os.close(fd)
            self.terminate = True
            return
        try:
            req = json.loads(data)
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("request truncated")
            self._handle(req, fds)
        except Exception as exc:  # noqa: BLE001 - answer the request, keep serving
            if isinstance(req, dict) and "rid" in req:
                self.send({"rid": req["rid"], "ok": False, "error": f"zygote: {exc!r}"})
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _handle(self, req: dict, fds: list[int]) -> None:
        op = req.get("op")
        if op == "spawn":
            if len(fds) not in (1, 2):
                raise ValueError("spawn needs one or two descriptors")
            self._spawn(req, fds[0], fds[1] if len(fds) > 1 else None)
        elif op == "kill":
            rec = self.records.get(req["sid"])
            if rec is None or rec.status is not None:
                self.send({"rid": req["rid"], "ok": True,
                           "status": None if rec is None else rec.status})  # fmt: skip
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)  # not reaped yet, so the pid is still ours
            rec.kill_waiters.append(req["rid"])
        elif op == "adopt":  # a copy program of the harness: killed if the harness dies
            self.adopted[req["pid"]] = req["starttime"]
        elif op == "release":
            self.adopted.pop(req["pid"], None)
        elif op == "forget":
            rec = self.records.pop(req["sid"], None)
            if rec is not None and rec.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
        elif "rid" in req:
            self.send({"rid": req["rid"], "ok": False, "error": f"unknown op {op!r}"})

    def _spawn(self, req: dict, conn_fd: int, dirs_fd: int | None) -> None:
        spec = req["spec"]
        if self.init_binary:
            self._spawn_init(req, spec, conn_fd, dirs_fd)
            return
        spec["seccomp"] = self.seccomp
        spec["agent_binary"] = self.agent_binary
        ready_r, ready_w = os.pipe()
        L.unshare(L.CLONE_NEWPID)
        try:
            pid = os.fork()
        except OSError as exc:
            L.setns(self.pidns_fd, L.CLONE_NEWPID)
            os.close(ready_r)
            os.close(ready_w)
            self.send({"rid": req["rid"], "ok": False, "error": f"fork: {exc}"})
            return
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                sandbox_init.run(spec, ready_w, self.lifeline_r, conn_fd, dirs_fd)
            finally:
                os._exit(1)
        L.setns(self.pidns_fd, L.CLONE_NEWPID)
        os.close(ready_w)
        self._register(req, pid, spec, ready_r)

    def _spawn_init(self, req: dict, spec: dict, conn_fd: int, dirs_fd: int | None) -> None:
        """_spawn with the compiled PID 1 (sbinit.c): posix_spawn (vfork + exec), so neither
        this process's page tables nor its pages are copied, and no copy-on-write follows
        in either process. Its spec goes on a pipe written in full before the spawn."""
        data = encode_init_spec(spec, dirs_fd is not None) + self.init_tail
        spec_r = ready_r = ready_w = -1
        try:
            spec_r = L.pipe_holding(data)
            ready_r, ready_w = os.pipe()
            sources = [spec_r, self.lifeline_r, ready_w, conn_fd]
            if dirs_fd is not None:
                sources.append(dirs_fd)
            L.unshare(L.CLONE_NEWPID)
            try:
                pid = L.spawn_with_fds(self.init_binary, "sb-init", sources, INIT_FDS[0],
                                       stdio=self.devnull)  # fmt: skip
            finally:
                L.setns(self.pidns_fd, L.CLONE_NEWPID)
        except OSError as exc:
            if ready_r >= 0:
                os.close(ready_r)
            self.send({"rid": req["rid"], "ok": False, "error": f"spawn sb-init: {exc}"})
            return
        finally:
            for fd in (spec_r, ready_w):
                if fd >= 0:
                    os.close(fd)
        self._register(req, pid, spec, ready_r)

    def _register(self, req: dict, pid: int, spec: dict, ready_r: int) -> None:
        """Track a just-started PID 1 until its "ready" line (on ``ready_r``) and its exit."""
        rec = _Record(req["sid"], pid, spec["dir"], spec.get("cgroup"))
        self.records[rec.sid] = rec
        self.by_pid[pid] = rec
        self.pending[ready_r] = (req["rid"], rec, bytearray())
        self.poller.register(ready_r, select.POLLIN)

    def _read_ready(self, fd: int) -> None:
        rid, rec, buf = self.pending[fd]
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            return
        buf += data
        if data and b"\n" not in buf:
            return
        self.poller.unregister(fd)
        os.close(fd)
        del self.pending[fd]
        line = bytes(buf).split(b"\n", 1)[0].decode(errors="replace")
        if line.startswith("ok "):
            _, host_pid, starttime = line.split()
            self.send({"rid": rid, "ok": True, "pid": rec.pid, "host_pid": int(host_pid),
                       "starttime": int(starttime)})  # fmt: skip
            return
        error = line.removeprefix("error ").strip() or "sandbox init exited before ready"
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)
        self.send({"rid": rid, "ok": False, "error": error})

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rec = self.by_pid.pop(pid, None)
            if rec is None:
                continue
            rec.status = os.waitstatus_to_exitcode(status)
            self.send({"event": "exit", "sid": rec.sid, "status": rec.status})
            for rid in rec.kill_waiters:
                self.send({"rid": rid, "ok": True, "status": rec.status})
            rec.kill_waiters.clear()

    # -- shutdown -------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Kill the harness's copies still running and every sandbox not forgotten, remove
        its cgroups and directory, exit."""
        for pid, started in self.adopted.items():
            if L.start_time(pid) == started:  # the same process, not a later one
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        records = list(self.records.values())
        for rec in records:
            if rec.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
            if rec.cgroup and rec.cgroup.get("thaw"):
                _write_quietly(*rec.cgroup["thaw"])
        deadline = time.monotonic() + 10
        while self.by_pid and time.monotonic() < deadline:
            self._reap()
            if self.by_pid:
                time.sleep(0.002)
        from providers.local.layers import remove_tree  # not needed before shutdown

        for rec in records:
            if rec.cgroup:
                _remove_groups(rec.cgroup, deadline=time.monotonic() + 3)
            remove_tree(rec.dir)


def _write_quietly(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError:
        pass


def _remove_groups(cgroup: dict, deadline: float) -> None:
    """rmdir the sandbox's cgroups, SIGKILLing what is still in them (cgroups.remove's
    logic, on the plain paths the spawn request carried)."""
    for d in cgroup["dirs"]:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                for procs in cgroup["procs"]:
                    try:
                        with open(procs) as f:
                            pids = [int(p) for p in f.read().split()]
                    except OSError:
                        pids = []
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                if cgroup.get("thaw"):
                    _write_quietly(*cgroup["thaw"])
                time.sleep(0.001)


def _favor_dynmods(target: str) -> str:
    """Enter a private (slave) mount namespace and mount the favordynmods hierarchy there;
    returns "on" or why not (the provider records it)."""
    try:
        L.unshare(L.CLONE_NEWNS)
        L.mount(None, "/", None, L.MS_REC | L.MS_SLAVE)
        L.mount("cgroup", target, "cgroup", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC,
                DYNMODS_OPTIONS)  # fmt: skip
    except OSError as exc:
        return f"off: {exc.strerror or exc}"
    return "on"


def _enter_userns(uid: int, gid: int) -> None:
    """Become root of a new user namespace (mapping only the caller) and PID 1 of a new pid
    namespace owned by it. The original process stays outside and only waits."""
    L.unshare(L.CLONE_NEWUSER | L.CLONE_NEWPID)
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"0 {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"0 {gid} 1")
    pid = os.fork()
    if pid == 0:
        return
    os.close(0)
    os.close(1)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _unusable(path: str, mark: bytes, source: str) -> str | None:
    """Why the compiled program at ``path`` cannot be exec'd here, or None: it must exist,
    be executable and carry ``mark`` (built from this ``source``, not an older one)."""
    try:
        with open(path, "rb") as f:
            if mark not in f.read():
                return f"{path} is not built from this {source}: run scripts/setup.sh"
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None if os.access(path, os.X_OK) else f"{path}: not executable"


def _check_agent(config: dict) -> str:
    """ "native" when the compiled agent (sbagent.c) can be exec'd and speaks this ABI; else
    why not, and the configuration no longer names it (sandboxes fork the Python agent)."""
    why = _unusable(config["agent_binary"], AGENT_ABI_MARK, "sbagent.c")
    if why is None:
        return "native"
    config["agent_binary"] = None
    return f"python ({why})"


#: A string sbagent.c carries; changed with its wire protocol or descriptor interface.
AGENT_ABI_MARK = b"sb-agent abi 1"
#: A string sbinit.c carries; changed with its descriptor interface or spec format.
INIT_ABI_MARK = b"sb-init abi 1"
#: The descriptors sb-init finds its spec pipe, the lifeline, the ready pipe, the socket
#: pair's end and (optionally) the dirs pipe on (sbinit.c).
INIT_FDS = (3, 4, 5, 6, 7)


def _check_init(config: dict) -> str:
    """ "native (sb-init)" when the compiled PID 1 (sbinit.c) can be exec'd and speaks this
    interface, and the compiled agent it starts is usable too; else why not, and the
    configuration no longer names it (each sandbox's PID 1 is a fork of this process)."""
    if not config.get("agent_binary"):
        why = "sb-init needs the compiled agent, which is not usable"
    else:
        why = _unusable(config["init_binary"], INIT_ABI_MARK, "sbinit.c")
    if why is None:
        return "native (sb-init)"
    config["init_binary"] = None
    return f"python ({why})"


def _record(key: bytes, *values: str) -> bytes:
    """One record of sb-init's spec: the key and each field, NUL-terminated."""
    fields = [os.fsencode(v) for v in values]
    if any(b"\0" in f for f in fields):
        raise ValueError(f"a NUL in the sandbox spec's {key.decode()}")
    return b"".join(f + b"\0" for f in (key, *fields))


def encode_init_spec(spec: dict, dirs: bool) -> bytes:
    """The part of sb-init's spec (sbinit.c's format) that sandbox_init.run reads from
    ``spec``; the zygote appends the agent's path, the inheritable capabilities, the
    seccomp program and the end record."""
    out = [b"sb-init spec 1\0", _record(b"dir", spec["dir"]), _record(b"lower", spec["lower"]),
           _record(b"hostname", spec["hostname"]),
           _record(b"userns", "1" if spec["userns"] else "0")]  # fmt: skip
    if spec.get("etc_mask"):
        out.append(_record(b"etc_mask", spec["etc_mask"]))
    out += [_record(b"sysdir", name) for name in spec["system_dirs"]]
    if dirs:
        out.append(_record(b"dirs"))
    else:
        out += [_record(b"layer", layer) for layer in spec["layers"]]
    cgroup = spec.get("cgroup")
    if cgroup:
        out.append(_record(b"cgroup"))
        out += [_record(b"procs", path) for path in cgroup["procs"]]
        for step in cgroup["create"]:
            if step[0] in ("mkdirs", "mkdir"):
                out.append(_record(step[0].encode(), step[1]))
            elif step[0] == "write":
                out.append(_record(b"write?" if step[3] else b"write", step[1], step[2]))
            else:
                raise ValueError(f"unknown cgroup step {step[0]!r}")
    return b"".join(out)


def _read_config() -> dict:
    """The provider's first message on the request socket (not argv: argv shows in every
    sandbox's PID 1 until blanked, and a small one is cheaper to blank)."""
    requests = socket.socket(fileno=0)
    data = requests.recv(1 << 20)
    requests.detach()  # fd 0 stays open for the Zygote's own socket object
    if not data:
        sys.exit(0)
    return json.loads(data)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = _read_config()
    if config["mode"] == "userns":
        try:
            _enter_userns(os.getuid(), os.getgid())
        except OSError as exc:
            print(json.dumps({"event": "error", "error": f"user namespace: {exc}"}), flush=True)
            sys.exit(2)
    hello = {"pid1_root": "python (no compiled helper: scripts/setup.sh builds it)"}
    if config.get("native"):
        hello["pid1_root"] = L.load_native(config["native"])
    hello["agent"] = "python (no compiled agent: scripts/setup.sh builds it)"
    if config.get("agent_binary"):
        hello["agent"] = _check_agent(config)
    hello["pid1"] = "python (no sb-init: scripts/setup.sh builds it)"
    if config.get("init_binary"):
        hello["pid1"] = _check_init(config)
    if config.get("dynmods_dir"):
        hello["favordynmods"] = _favor_dynmods(config["dynmods_dir"])
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last_cap = int(f.read())
    # The bounding set only limits what an execve may grant: dropped once here, it is
    # inherited by every sandbox and every command they start (Docker's default set minus
    # CAP_MKNOD); the compiled agent, exec'd, holds only it.
    if config.get("init_binary"):
        # sb-init is exec'd: it keeps the capabilities a fork would have only through the
        # inheritable set, raised while the bounding set still allows it (sbinit.c puts
        # it back first thing). Only with sb-init: a forked PID 1 would pass it on.
        try:
            config["capinh"] = L.inherit_all_caps()
        except OSError as exc:
            config["init_binary"] = None
            hello["pid1"] = f"python (capabilities for sb-init: {exc.strerror or exc})"
    L.drop_bounding_caps(L.CAPS_KEPT, last_cap)
    os.umask(0o022)
    L.set_comm("sb-zygote")
    zygote = Zygote(config)
    # Objects that exist now are never collected: the collector then never writes to them
    # in a child, which would copy their pages.
    gc.freeze()
    zygote.loop(hello)


#: The zygote's entry (``python -I -S -c BOOTSTRAP <package root>``; the configuration
#: follows as the first message on standard input). It
#: registers ``providers`` and ``providers.local`` as bare packages so that importing this
#: module runs neither package's ``__init__``.
BOOTSTRAP = """\
import sys, types
root = sys.argv[1]
for name in ("providers", "providers.local"):
    module = types.ModuleType(name)
    module.__path__ = [root + "/" + name.replace(".", "/")]
    sys.modules[name] = module
sys.path.insert(0, root)
from providers.local.zygote import main
main()
"""
