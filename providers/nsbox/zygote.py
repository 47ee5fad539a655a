"""The zygote: one small helper process that forks every sandbox of a provider instance.

Starting a Python interpreter costs 15-25 ms (research/local-sandboxes.md), more than the whole
create budget, so sandboxes are forked from this already-initialised process instead (the
Android zygote pattern). Protocol: JSON lines on stdin/stdout.

    -> {"req": 1, "op": "spawn", "plan": {...}}
    <- {"req": 1, "pid": 1234} | {"req": 1, "error": "..."}
    -> {"req": 2, "op": "forget", "pid": 1234}       (the provider destroyed it)
    <- {"event": "exit", "pid": 1234}                (a sandbox's PID 1 ended)

Spawn: fork a middle process that joins the sandbox's cgroups, unshares the mount, pid, uts,
ipc and net namespaces, and forks PID 1 of the new pid namespace, then exits. The zygote is a
child subreaper, so it inherits and reaps every PID 1.

If stdin closes (the harness exited or was killed with -9) the zygote destroys every sandbox it
still knows -- thaw, kill, remove cgroups and directories -- and exits: a dead harness leaks no
sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import sys
import time

from providers.nsbox import inside, linux

NAMESPACES = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWNET
)
READY_TIMEOUT_S = 30.0


def _write(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def spawn(plan: dict) -> int:
    """Fork the sandbox; return the host pid of its PID 1 once its agent listens."""
    ready_r, ready_w = os.pipe()
    pid_r, pid_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        try:
            os.close(ready_r)
            os.close(pid_r)
            for procs in plan["cgroup_procs"]:
                with open(procs, "w") as fh:
                    fh.write(str(os.getpid()))
            linux.unshare(NAMESPACES)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            pid1 = os.fork()
            if pid1 == 0:
                os.close(pid_w)
                inside.sandbox_pid1(plan, ready_w)
            os.write(pid_w, str(pid1).encode())
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - report, then leave the fork
            try:
                os.write(ready_w, f"error {type(exc).__name__}: {exc}".encode()[:4000])
            finally:
                os._exit(1)
    os.close(ready_w)
    os.close(pid_w)
    try:
        os.waitpid(middle, 0)
        raw_pid = os.read(pid_r, 32)
        selector = selectors.DefaultSelector()
        selector.register(ready_r, selectors.EVENT_READ)
        if not selector.select(READY_TIMEOUT_S):
            raise TimeoutError(f"sandbox did not become ready within {READY_TIMEOUT_S:g} s")
        selector.close()
        answer = os.read(ready_r, 4096).decode(errors="replace")
    finally:
        os.close(ready_r)
        os.close(pid_r)
    if answer != "ok":
        raise RuntimeError(answer.removeprefix("error ") or "sandbox set-up failed")
    return int(raw_pid)


def destroy_all(known: dict[int, dict]) -> None:
    """Tear down every sandbox still known (the harness went away)."""
    for pid, plan in known.items():
        for freezer in plan.get("freezer_state", []):
            try:
                with open(freezer, "w") as fh:
                    fh.write(plan.get("thaw_value", "THAWED"))
            except OSError:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    for pid, plan in known.items():
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        for cgroup in plan.get("cgroup_dirs", []):
            for _ in range(100):
                try:
                    os.rmdir(cgroup)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(plan["socket"])
        shutil.rmtree(plan["dir"], ignore_errors=True)


def main() -> None:
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness decides when we end
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    known: dict[int, dict] = {}
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    buffer = b""
    while True:
        for key, _ in selector.select():
            if key.data == "signal":
                os.read(wake_r, 4096)
                _reap(known)
                continue
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                destroy_all(known)
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _handle(json.loads(line), known)


def _handle(request: dict, known: dict[int, dict]) -> None:
    if request["op"] == "spawn":
        try:
            pid = spawn(request["plan"])
        except Exception as exc:  # noqa: BLE001 - every failure goes back as data
            _write({"req": request["req"], "error": f"{type(exc).__name__}: {exc}"})
            return
        known[pid] = request["plan"]
        _write({"req": request["req"], "pid": pid})
    elif request["op"] == "forget":
        known.pop(int(request["pid"]), None)


def _reap(known: dict[int, dict]) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in known:
            known.pop(pid)
            _write({"event": "exit", "pid": pid})


if __name__ == "__main__":
    main()
