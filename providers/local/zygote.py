"""The zygote: one pre-imported Python process per provider that forks every sandbox.

Why: a fresh Python interpreter costs 15-25 ms to start; forking this one costs well under
a millisecond, and the child already has every module the sandbox's PID 1 and agent need
(they cannot import anything after ``pivot_root``).

Started by the provider as ``python -m providers.local.zygote '<json config>'`` in its own
session, with pipes on stdin and stdout. Protocol: JSON lines; requests carry ``rid`` and
get exactly one answer with the same ``rid``:

* ``spawn {sid, spec}`` -> ``{ok, pid, host_pid, starttime}`` once the sandbox's agent listens,
  or ``{ok: false, error}``;
* ``kill {sid}`` -> ``{ok, status}`` once its PID 1 has been reaped (the kernel has then
  killed and reaped everything in its pid namespace);
* ``forget {sid}`` (no answer): the provider has cleaned the sandbox up itself.

Events: ``{"event": "hello", ...}`` when ready; ``{"event": "exit", sid, status}`` whenever
a sandbox's PID 1 exits.

Each sandbox's PID 1 is a direct child: the zygote calls ``unshare(CLONE_NEWPID)`` so that its
next child is PID 1 of a new pid namespace, forks, and goes back to its own namespace with
``setns``. Being the parent lets PID 1 use ``PR_SET_PDEATHSIG``: if the zygote dies, even by
SIGKILL, every sandbox dies with it. When stdin reaches EOF (the harness exited or was
killed) or on SIGTERM, the zygote kills every sandbox it spawned and was not told to forget,
removes their cgroups and directories, and exits: a dead harness leaks nothing.

In user-namespace mode (not root) the zygote first enters a new user namespace that maps the
caller to root, and a new pid namespace whose PID 1 it becomes (an outer process only waits
for it), so that it holds the capabilities needed for the per-sandbox namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from providers.local import _linux as L
from providers.local import cgroups, sandbox_init


@dataclass
class _Record:
    sid: str
    pid: int
    dir: str
    group: cgroups.Group | None
    status: int | None = None  # exit status once reaped
    kill_waiters: list[int] = field(default_factory=list)


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
        self.terminate = False
        self.records: dict[str, _Record] = {}
        self.by_pid: dict[int, _Record] = {}
        self.pending: dict[int, tuple[int, _Record, bytearray]] = {}  # ready fd -> ...
        self.selector = selectors.DefaultSelector()
        self.selector.register(0, selectors.EVENT_READ, "stdin")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.inbuf = bytearray()

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

    def loop(self) -> None:
        self.send({"event": "hello", "pid": os.getpid(), "mode": self.config["mode"]})
        while not self.terminate:
            for key, _ in self.selector.select():
                if key.data == "stdin":
                    self._read_stdin()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(self.wake_r, 4096):
                            pass
                    self._reap()
                else:
                    self._read_ready(key.fd)
        self.shutdown()

    def _read_stdin(self) -> None:
        try:
            data = os.read(0, 1 << 16)
        except InterruptedError:
            return
        if not data:
            self.terminate = True
            return
        self.inbuf += data
        while b"\n" in self.inbuf:
            line, _, rest = bytes(self.inbuf).partition(b"\n")
            self.inbuf = bytearray(rest)
            if not line.strip():
                continue
            req = json.loads(line)
            try:
                self._handle(req)
            except Exception as exc:  # noqa: BLE001 - answer the request, keep serving
                if "rid" in req:
                    self.send({"rid": req["rid"], "ok": False, "error": f"zygote: {exc!r}"})

    def _handle(self, req: dict) -> None:
        op = req.get("op")
        if op == "spawn":
            self._spawn(req)
        elif op == "kill":
            rec = self.records.get(req["sid"])
            if rec is None or rec.status is not None:
                self.send({"rid": req["rid"], "ok": True,
                           "status": None if rec is None else rec.status})  # fmt: skip
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)  # not reaped yet, so the pid is still ours
            rec.kill_waiters.append(req["rid"])
        elif op == "forget":
            rec = self.records.pop(req["sid"], None)
            if rec is not None and rec.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
        elif "rid" in req:
            self.send({"rid": req["rid"], "ok": False, "error": f"unknown op {op!r}"})

    def _spawn(self, req: dict) -> None:
        spec = req["spec"]
        group = cgroups.Group.from_json(spec["group"]) if spec.get("group") else None
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
                os.close(ready_r)
                os.close(self.lifeline_w)
                sandbox_init.run(spec, ready_w, self.lifeline_r)
            finally:
                os._exit(1)
        L.setns(self.pidns_fd, L.CLONE_NEWPID)
        os.close(ready_w)
        rec = _Record(sid=req["sid"], pid=pid, dir=spec["dir"], group=group)
        self.records[rec.sid] = rec
        self.by_pid[pid] = rec
        self.pending[ready_r] = (req["rid"], rec, bytearray())
        self.selector.register(ready_r, selectors.EVENT_READ, "ready")

    def _read_ready(self, fd: int) -> None:
        rid, rec, buf = self.pending[fd]
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            return
        buf += data
        if data and b"\n" not in buf:
            return
        self.selector.unregister(fd)
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
        """Kill every sandbox not forgotten, remove its cgroups and directory, exit."""
        records = list(self.records.values())
        for rec in records:
            if rec.status is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rec.pid, signal.SIGKILL)
            if rec.group is not None and "freezer" in rec.group.dirs:
                with contextlib.suppress(OSError):
                    cgroups.thaw(rec.group)
        deadline = time.monotonic() + 10
        while self.by_pid and time.monotonic() < deadline:
            self._reap()
            if self.by_pid:
                time.sleep(0.002)
        for rec in records:
            if rec.group is not None:
                with contextlib.suppress(OSError):
                    cgroups.remove(rec.group, timeout_s=3)
            remove_tree(rec.dir)


def remove_tree(path: str) -> None:
    """Remove a sandbox or checkpoint directory (btrfs subvolumes included)."""
    if not os.path.lexists(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path) and os.geteuid() != 0:
        # Without root, overlayfs leaves mode-000 work directories that even their owner
        # cannot enter until they are chmod'ed.
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
        shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path) and shutil.which("btrfs"):
        # A btrfs subvolume may need deleting as such (rmdir of one needs a recent kernel).
        for root, dirs, _ in os.walk(path, topdown=False):
            for name in dirs:
                sub = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    subprocess.run(["btrfs", "subvolume", "delete", sub],
                                   capture_output=True, check=False)  # fmt: skip
        shutil.rmtree(path, ignore_errors=True)


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


def main() -> None:
    config = json.loads(sys.argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if config["mode"] == "userns":
        try:
            _enter_userns(os.getuid(), os.getgid())
        except OSError as exc:
            print(json.dumps({"event": "error", "error": f"user namespace: {exc}"}), flush=True)
            sys.exit(2)
    os.umask(0o022)
    L.set_comm("sb-zygote")
    Zygote(config).loop()


if __name__ == "__main__":
    main()
