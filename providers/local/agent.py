"""The exec agent: runs inside a sandbox (a child of its PID 1) and serves the provider.

Wire format, both directions: one JSON header line, then ``header["len"]`` raw bytes (file
contents, or stdout followed by stderr). One request at a time per connection; the agent
serves each connection in its own thread, so the provider may open several.

Requests and answers:

* ``{"op": "ping"}`` -> ``{"ok": true}``
* ``{"op": "exec", "argv": [...], "deadline": <CLOCK_MONOTONIC s>, "cwd"?, "env"?}``
  -> ``{"exit_code", "out", "err", "len"}`` (body: ``out`` bytes of stdout, ``err`` of stderr)
  or ``{"timeout": true, ...}`` when the deadline passed (the command's process group was
  killed, or the command was never started because the request arrived too late, e.g. after
  the sandbox was frozen past the deadline).
* ``{"op": "write", "path", "len"}`` + body -> ``{"ok": true}``
* ``{"op": "read", "path"}`` -> ``{"len"}`` + body
* failures: ``{"error": <strerror>, "errno": <n>}``

Everything this module needs is imported at module level: it runs after ``pivot_root`` in a
process forked from the zygote, where the host's Python library is no longer visible.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

#: Environment of every command (the exec request may add to it).
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "USER": "root",
    "LOGNAME": "root",
}
DEFAULT_CWD = "/root"
#: After a command exits, how long output from descendants that still hold its stdout or
#: stderr is awaited before the answer goes out without it (they keep running; a thread
#: drains and discards what they write later, so they never block or get SIGPIPE).
EXIT_GRACE_S = 0.05
CHUNK = 1 << 16


def encode(header: dict, body: bytes = b"") -> bytes:
    header["len"] = len(body)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


def serve(listener: socket.socket) -> None:
    """Accept connections forever, one thread each."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        try:
            threading.Thread(target=_connection, args=(conn,), daemon=True).start()
        except RuntimeError:  # no thread: pids.max reached (e.g. a fork bomb); try later
            conn.close()
            time.sleep(0.01)


def _connection(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as stream:
        while True:
            line = stream.readline()
            if not line:
                return
            try:
                header = json.loads(line)
                body = stream.read(header.get("len", 0)) if header.get("len") else b""
                reply = _dispatch(header, body)
            except OSError as exc:
                reply = encode({"error": exc.strerror or str(exc), "errno": exc.errno or 0})
            except Exception as exc:  # noqa: BLE001 - the agent must answer, not die
                reply = encode({"error": f"{type(exc).__name__}: {exc}", "errno": 0})
            try:
                conn.sendall(reply)
            except OSError:
                return


def _dispatch(header: dict, body: bytes) -> bytes:
    op = header.get("op")
    if op in ("write", "read") and time.monotonic() >= header.get("deadline", float("inf")):
        # The provider gave up on this request (e.g. the sandbox was frozen): do not act on it.
        return encode({"error": "deadline passed before the request was read", "errno": 0})
    if op == "exec":
        return _exec(header)
    if op == "write":
        path = header["path"]
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
        return encode({"ok": True})
    if op == "read":
        with open(header["path"], "rb") as f:
            data = f.read()
        return encode({"ok": True}, data)
    if op == "ping":
        return encode({"ok": True, "pid": os.getpid()})
    return encode({"error": f"unknown op {op!r}", "errno": errno.EINVAL})


def _exec(header: dict) -> bytes:
    deadline = float(header["deadline"])
    if time.monotonic() >= deadline:
        return encode({"timeout": True, "started": False})
    env = dict(BASE_ENV)
    env.update(header.get("env") or {})
    cwd = header.get("cwd") or DEFAULT_CWD
    argv = header["argv"]
    if not os.path.isdir(cwd):
        return encode({"error": f"working directory {cwd} does not exist", "errno": errno.ENOENT})
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,  # its own process group, killed as a whole on timeout
        )
    except OSError as exc:
        # What a shell would answer: 127 for a missing program, 126 for one it cannot run.
        code = 127 if exc.errno == errno.ENOENT else 126
        message = f"{argv[0]}: {exc.strerror}\n".encode()
        return encode({"exit_code": code, "out": 0, "err": len(message)}, message)
    out, err, status, timed_out = _collect(proc, deadline)
    if timed_out:
        return encode({"timeout": True, "started": True, "out": len(out), "err": len(err)},
                      out + err)  # fmt: skip
    code = status if status >= 0 else 128 - status  # killed by signal N -> 128+N, as sh does
    return encode({"exit_code": code, "out": len(out), "err": len(err)}, out + err)


def _collect(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, int, bool]:
    assert proc.stdout is not None and proc.stderr is not None
    pidfd = os.pidfd_open(proc.pid)
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    poller = select.poll()
    for fd in (out_fd, err_fd, pidfd):
        poller.register(fd, select.POLLIN)
    open_pipes = {out_fd, err_fd}
    exited_at: float | None = None
    timed_out = False
    try:
        while open_pipes or exited_at is None:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            wait = deadline - now
            if exited_at is not None:
                wait = min(wait, exited_at + EXIT_GRACE_S - now)
                if wait <= 0:
                    break
            for fd, _ in poller.poll(wait * 1000):
                if fd == pidfd:
                    exited_at = time.monotonic()
                    poller.unregister(pidfd)
                    continue
                data = os.read(fd, CHUNK)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_pipes.discard(fd)
        if timed_out:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
    finally:
        os.close(pidfd)
    if open_pipes:
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    else:
        proc.stdout.close()
        proc.stderr.close()
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), status, timed_out


def _drain(proc: subprocess.Popen) -> None:
    """Read and drop what background descendants still write, then close the pipes."""
    assert proc.stdout is not None and proc.stderr is not None
    pipes = [proc.stdout, proc.stderr]
    with contextlib.suppress(OSError, ValueError):
        while pipes:
            ready, _, _ = select.select(pipes, [], [])
            for pipe in ready:
                if not os.read(pipe.fileno(), CHUNK):
                    pipes.remove(pipe)
                    pipe.close()
