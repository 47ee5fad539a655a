"""What runs inside a sandbox: the set-up of its root, PID 1 (a reaper) and the exec agent.

Everything here runs in a process forked from the zygote *after* it entered the sandbox's new
namespaces; it must not import anything new once the root has been pivoted (the host's Python
installation is no longer visible), so the zygote imports this module and its dependencies
before it forks.

Mount plan (all inside the sandbox's private mount namespace, so nothing appears on the host
and killing PID 1 tears it all down):

    /            overlay  lower = skeleton (empty top-level layout)  upper = <dir>/upper/_root
    /usr, /etc   overlay  lower = host /usr, /etc (read-only)        upper = <dir>/upper/usr, ...
    (and any of bin, sbin, lib, lib32, lib64, libx32 that is a real directory on the host)
    /proc        proc of the sandbox's own pid namespace
    /tmp         private tmpfs (not part of checkpoints)
    /dev         tmpfs with null, zero, full, random, urandom, tty bound from the host, devpts, shm

Nothing else of the host is reachable: /root, /home, /tmp, /var/lib, the harness's folders and
the provider's state directory are simply not in the skeleton.
"""

from __future__ import annotations

import base64  # noqa: F401 - preloaded for the agent after pivot_root
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import threading

from providers.nsbox import linux

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
AGENT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
HEADER = struct.Struct("!I")
PAYLOAD = struct.Struct("!Q")


# -- framing shared with the provider ---------------------------------------------------------


def send_message(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    sock.sendall(HEADER.pack(len(raw)) + raw + PAYLOAD.pack(len(payload)) + payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed")
        chunks += chunk
    return bytes(chunks)


def recv_message(sock: socket.socket) -> tuple[dict, bytes]:
    (size,) = HEADER.unpack(_recv_exact(sock, HEADER.size))
    header = json.loads(_recv_exact(sock, size))
    (length,) = PAYLOAD.unpack(_recv_exact(sock, PAYLOAD.size))
    return header, _recv_exact(sock, length) if length else b""


# -- set-up -----------------------------------------------------------------------------------


def _overlay(target: str, lower: str, upper: str, work: str) -> None:
    linux.mount(
        "overlay", target, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
    )


def build_root(plan: dict) -> str:
    """Mount the sandbox's root under ``<dir>/merged`` and return that path."""
    base = plan["dir"]
    root = f"{base}/merged"
    if plan.get("rootfs"):
        _overlay(root, plan["rootfs"], f"{base}/upper/_root", f"{base}/work/_root")
    else:
        _overlay(root, plan["skeleton"], f"{base}/upper/_root", f"{base}/work/_root")
        for name in plan["overlay_dirs"]:
            _overlay(f"{root}/{name}", f"/{name}", f"{base}/upper/{name}", f"{base}/work/{name}")
    linux.mount("proc", f"{root}/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    linux.mount(
        "tmpfs", f"{root}/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777,size=256m"
    )
    dev = f"{root}/dev"
    linux.mount("tmpfs", dev, "tmpfs", linux.MS_NOSUID | linux.MS_NOEXEC, "mode=755,size=64k")
    for name in DEVICES:
        open(f"{dev}/{name}", "w").close()
        linux.mount(f"/dev/{name}", f"{dev}/{name}", None, linux.MS_BIND)
    os.mkdir(f"{dev}/pts")
    linux.mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        linux.MS_NOSUID | linux.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=620",
    )
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    linux.mount(
        "tmpfs", f"{dev}/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777,size=64m"
    )
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")
    return root


def sandbox_pid1(plan: dict, ready_w: int) -> None:
    """Become the sandbox: mounts, hostname, loopback, pivot, then reaper + agent. Never returns."""
    status = 1
    try:
        os.setsid()
        root = build_root(plan)
        linux.sethostname(plan["hostname"])
        linux.loopback_up()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(plan["socket"])  # a host-visible path: bound before the pivot
        listener.listen(64)
        os.mkdir(f"{root}/.oldroot", 0o700)
        linux.pivot_root(root, f"{root}/.oldroot")
        os.chdir("/")
        linux.umount2("/.oldroot", linux.MNT_DETACH)
        os.rmdir("/.oldroot")
        for name in ("root", "home", "var/tmp"):
            os.makedirs(f"/{name}", exist_ok=True)
        agent = os.fork()
        if agent == 0:
            os.close(ready_w)
            serve(listener)  # never returns
        listener.close()
        os.write(ready_w, b"ok")
        os.close(ready_w)
        status = 0
        _reap_until(agent)
    except BaseException as exc:  # noqa: BLE001 - report any set-up failure to the zygote
        with contextlib.suppress(OSError):
            os.write(ready_w, f"error {type(exc).__name__}: {exc}".encode()[:4000])
    finally:
        os._exit(status)


def _reap_until(agent: int) -> None:
    """PID 1's job: reap every orphan; end the sandbox if the agent dies."""
    while True:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if pid == agent:
            return


# -- the exec agent ---------------------------------------------------------------------------


def serve(listener: socket.socket) -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def _handle(conn: socket.socket) -> None:
    with conn:
        while True:
            try:
                request, payload = recv_message(conn)
            except (ConnectionError, OSError, ValueError):
                return
            try:
                header, body = _dispatch(request, payload)
            except FileNotFoundError as exc:
                header, body = {"error": "not_found", "message": str(exc)}, b""
            except Exception as exc:  # noqa: BLE001 - every failure goes back as data
                header, body = {"error": type(exc).__name__, "message": str(exc)}, b""
            send_message(conn, header, body)


def _dispatch(request: dict, payload: bytes) -> tuple[dict, bytes]:
    op = request["op"]
    if op == "exec":
        return _exec(request)
    if op == "write":
        path = request["path"]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(payload)
        return {"ok": True}, b""
    if op == "read":
        with open(request["path"], "rb") as fh:
            return {"ok": True}, fh.read()
    if op == "ping":
        return {"ok": True}, b""
    raise ValueError(f"unknown op {op!r}")


def _exec(request: dict) -> tuple[dict, bytes]:
    argv = request.get("argv") or ["/bin/sh", "-c", request["cmd"]]
    env = {**AGENT_ENV, **(request.get("env") or {})}
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=request.get("cwd") or "/root",
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        return {"exit_code": 127, "stderr_len": len(str(exc))}, str(exc).encode()
    try:
        stdout, stderr = proc.communicate(timeout=request.get("timeout"))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": "timeout", "message": f"command ran over {request.get('timeout')} s"}, b""
    return {"exit_code": proc.returncode, "stderr_len": len(stderr)}, stdout + stderr
