"""The exec agent: runs inside a sandbox (a child of its PID 1) and serves the provider.

sbagent.c is the same agent in C, which PID 1 execs instead of forking this one when
scripts/setup.sh could compile it (a fork of a Python process costs hundreds of page
faults); this one still serves where it is missing, and where PID 1 is the Python one
(sandbox_init.py) it also replaces a compiled agent that died (sb-init restarts the
compiled one).
The two must answer alike: tests/test_local_agent_native.py sends every request to both.

Wire format, both directions: one JSON header line, then ``header["len"]`` raw bytes (file
contents, or stdout followed by stderr). One request at a time per connection; the agent
serves each connection in its own thread, so the provider may open several. The first
connection is a socket pair the provider made before the sandbox existed (its ping is
already waiting when the agent starts); further ones come through ``<dir>/agent.sock``.

Requests and answers:

* ``{"op": "ping"}`` -> ``{"ok": true, "host_pid", "starttime"}`` (PID 1 as the host sees it)
* ``{"op": "exec", "argv": [...], "deadline": <CLOCK_MONOTONIC s>, "env"?}``
  -> ``{"exit_code", "out", "err", "len"}`` (body: ``out`` bytes of stdout, ``err`` of stderr)
  or ``{"timeout": true, ...}`` when the deadline passed (the command's process group was
  killed, or the command was never started because the request arrived too late, e.g. after
  the sandbox was frozen past the deadline). Commands run in /root.
* ``{"op": "write", "path", "len"}`` + body -> ``{"ok": true}``
* ``{"op": "read", "path"}`` -> ``{"len"}`` + body
* failures: ``{"error": <strerror>, "errno": <n>}``

Everything this module needs is imported at module level: it runs after ``pivot_root`` in a
process forked from the zygote, where the host's Python library is no longer visible. It uses
``_thread`` and ``os.posix_spawn`` rather than ``threading`` and ``subprocess``: the zygote
imports this module, and ``threading``'s after-fork hook alone adds ~0.25 ms to every fork of
the zygote on this VM (measured), while ``posix_spawn`` (vfork + exec) is what Popen would
do, minus its Python-level set-up.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import io
import json
import os
import select
import signal
import socket
import time
from collections.abc import Callable

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
#: Signals the agent (a Python process) ignores, restored to default in each command, as
#: subprocess's ``restore_signals`` does.
RESTORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP)


def encode(header: dict, body: bytes = b"") -> bytes:
    header["len"] = len(body)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + body


class Gate:
    """PID 1's "go" on a pipe: the sandbox's root is ready. The agent starts, takes its
    first connection and reads the queued ping while PID 1 is still mounting, and answers
    only once the gate has opened."""

    def __init__(self, fd: int, then: Callable[[], None]) -> None:
        self.fd = fd
        self.then = then

    def open(self) -> bool:
        """Wait for the go; run ``then``. False when PID 1 failed instead."""
        ok = os.read(self.fd, 1) == b"g"
        os.close(self.fd)
        if ok:
            self.then()
        return ok


def serve(
    listener: socket.socket, identity: dict, first: int | None = None, gate: Gate | None = None
) -> None:
    """Serve ``first`` (a connected socket's descriptor) and every accepted connection, one
    thread each; with a ``gate``, nothing is answered before it opens."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if first is not None:
        conn = socket.socket(fileno=first)
        stream = conn.makefile("rb")
        # The create's ping is read and answered by this thread: a thread started this soon
        # after the fork takes about a millisecond to run here (every page it touches is
        # copied), so the connection's own thread starts after the answer has gone out.
        request = _receive(stream)
        if gate is not None and not gate.open():
            os._exit(1)
        if request is not None and _respond(conn, request, identity):
            _thread.start_new_thread(_connection, (conn, identity, stream))
        else:
            stream.close()
            conn.close()
    elif gate is not None and not gate.open():
        os._exit(1)
    while True:
        try:
            conn, _ = listener.accept()
        except InterruptedError:
            continue
        try:
            _thread.start_new_thread(_connection, (conn, identity))
        except RuntimeError:  # no thread: pids.max reached (e.g. a fork bomb); try later
            conn.close()
            time.sleep(0.01)


def _connection(
    conn: socket.socket, identity: dict, stream: io.BufferedReader | None = None
) -> None:
    with conn, stream or conn.makefile("rb") as reader:
        while True:
            request = _receive(reader)
            if request is None or not _respond(conn, request, identity):
                return


def _receive(stream: io.BufferedReader) -> tuple[dict, bytes] | Exception | None:
    """The next request (header, body); the exception if it cannot be read or parsed (it
    is answered as an error); None at the end of the connection."""
    try:
        line = stream.readline()
        if not line:
            return None
        header = json.loads(line)
        return header, stream.read(header.get("len", 0)) if header.get("len") else b""
    except Exception as exc:  # noqa: BLE001 - answered, not fatal
        return exc


def _respond(conn: socket.socket, request: tuple[dict, bytes] | Exception, identity: dict) -> bool:
    """Answer one request; False when the connection is gone."""
    try:
        if isinstance(request, Exception):
            raise request
        reply = _dispatch(request[0], request[1], identity)
    except OSError as exc:
        reply = encode({"error": exc.strerror or str(exc), "errno": exc.errno or 0})
    except Exception as exc:  # noqa: BLE001 - the agent must answer, not die
        reply = encode({"error": f"{type(exc).__name__}: {exc}", "errno": 0})
    try:
        conn.sendall(reply)
    except OSError:
        return False
    return True


def _dispatch(header: dict, body: bytes, identity: dict) -> bytes:
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
        return encode({"ok": True, "pid": os.getpid(), **identity})
    return encode({"error": f"unknown op {op!r}", "errno": errno.EINVAL})


def _which(program: str, env: dict) -> str:
    """The file ``program`` names, searched on the command's PATH as a shell would."""
    if "/" in program:
        return program
    found = None
    for directory in env.get("PATH", "").split(":"):
        candidate = f"{directory or '.'}/{program}"
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            found = found or candidate
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found  # exists but is not executable: posix_spawn reports EACCES


def _exec(header: dict) -> bytes:
    deadline = float(header["deadline"])
    if time.monotonic() >= deadline:
        return encode({"timeout": True, "started": False})
    env = dict(BASE_ENV)
    env.update(header.get("env") or {})
    argv = header["argv"]
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            _which(argv[0], env),
            argv,
            env,
            file_actions=[(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsid=True,  # its own process group, killed as a whole on timeout
            setsigdef=RESTORED_SIGNALS,
            setsigmask=(),
        )
    except OSError as exc:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        # What a shell would answer: 127 for a missing program, 126 for one it cannot run.
        code = 127 if exc.errno == errno.ENOENT else 126
        message = f"{argv[0]}: {exc.strerror}\n".encode()
        return encode({"exit_code": code, "out": 0, "err": len(message)}, message)
    os.close(out_w)
    os.close(err_w)
    out, err, status, timed_out = _collect(pid, out_r, err_r, deadline)
    if timed_out:
        return encode({"timeout": True, "started": True, "out": len(out), "err": len(err)},
                      out + err)  # fmt: skip
    return encode({"exit_code": status, "out": len(out), "err": len(err)}, out + err)


def _collect(pid: int, out_fd: int, err_fd: int, deadline: float) -> tuple[bytes, bytes, int, bool]:
    pidfd = os.pidfd_open(pid)
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
                os.killpg(pid, signal.SIGKILL)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        os.close(pidfd)
    for fd in (out_fd, err_fd):
        if fd not in open_pipes:
            os.close(fd)
    if open_pipes:
        _thread.start_new_thread(_drain, (sorted(open_pipes),))
    # killed by signal N -> 128+N, as sh reports it
    code = os.waitstatus_to_exitcode(status)
    return (
        b"".join(chunks[out_fd]),
        b"".join(chunks[err_fd]),
        code if code >= 0 else 128 - code,
        (timed_out),
    )


def _drain(fds: list[int]) -> None:
    """Read and drop what background descendants still write, then close the pipes."""
    try:
        while fds:
            ready, _, _ = select.select(fds, [], [])
            for fd in ready:
                if not os.read(fd, CHUNK):
                    fds.remove(fd)
                    os.close(fd)
    except (OSError, ValueError):
        pass
