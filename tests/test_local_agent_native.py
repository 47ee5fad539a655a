"""The C exec agent (providers/local/sbagent.c) against the Python one (providers/local/agent.py).

The C agent must stay byte-compatible with agent.py on the wire: most tests here send the same
requests to both and compare the answers (headers as dicts, less "pid"; bodies byte for byte).
Failures that are not OSErrors (errno 0: bad JSON, wrong types) are compared by errno only,
their text being Python's exception message. The rest covers what only the C agent has: its
file-descriptor interface (first connection, PID 1's go pipe, the configuration pipe) and its
hardening.

Needs a C compiler (the agent is built once into a temporary directory); no root needed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "providers" / "local" / "sbagent.c"
COMPILER = shutil.which("cc") or shutil.which("gcc")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="the agent is Linux-only"),
    pytest.mark.skipif(COMPILER is None, reason="no C compiler to build the agent with"),
]

HOST_PID, STARTTIME = 4242, 987654
#: Runs the Python agent on fd 3 (listener) and, when argv[1] is "1", fd 4 (first connection).
PY_AGENT = f"""
import os, socket, sys
sys.path.insert(0, {str(REPO)!r})
from providers.local import agent
first = 4 if sys.argv[1] == "1" else None
for fd in (3, first or 3):  # as in sandbox_init, where Python made them: not inheritable
    os.set_inheritable(fd, False)
agent.serve(socket.socket(fileno=3), {{"host_pid": {HOST_PID}, "starttime": {STARTTIME}}},
            first=first)
"""
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sbagent") / "sb-agent"
    command = [COMPILER, "-O2", "-Wall", "-Wextra", "-static", "-pthread", "-o", str(out),
               str(SOURCE)]  # fmt: skip
    if subprocess.run(command, capture_output=True).returncode != 0:
        command.remove("-static")  # no static libc here
        subprocess.run(command, check=True)
    return out


def spawn(args: list[str], fds: dict[int, int], *, executable: str | None = None,
          cwd: str | None = None) -> subprocess.Popen:  # fmt: skip
    """Start ``args`` with ``fds`` (target -> our descriptor) at their targets among 3..6; the
    other targets are closed in the child. The parent's 3..6 are all open while Popen runs
    (filled with /dev/null where free), so none of Popen's own pipes lands on a target."""
    fillers = []
    while (fd := os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)) <= 6:
        fillers.append(fd)
    os.close(fd)
    high = {target: fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 100) for target, src in fds.items()}

    def arrange() -> None:
        for target, src in high.items():
            os.dup2(src, target)  # inheritable

    try:
        return subprocess.Popen(args, executable=executable, pass_fds=tuple(high), env={},
                                cwd=cwd, preexec_fn=arrange, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    finally:
        for fd in [*fillers, *high.values()]:
            os.close(fd)


def config(seccomp: bytes = b"") -> bytes:
    return f"{HOST_PID} {STARTTIME} {len(seccomp)}\n".encode() + seccomp


def start_c(binary: Path, *, listener: socket.socket, first: int | None = None,
            go: int | None = None, cfg: bytes | None = None) -> subprocess.Popen:  # fmt: skip
    """The C agent with its descriptors; ``cfg`` is written to its configuration pipe."""
    cfg_r, cfg_w = os.pipe()
    fds = {3: listener.fileno(), 6: cfg_r}
    if first is not None:
        fds[4] = first
    if go is not None:
        fds[5] = go
    try:
        proc = spawn(["sb-agent"], fds, executable=str(binary))
    finally:
        os.close(cfg_r)
    with contextlib.suppress(BrokenPipeError):
        os.write(cfg_w, config() if cfg is None else cfg)
    os.close(cfg_w)
    return proc


def start_py(*, listener: socket.socket, first: int | None = None) -> subprocess.Popen:
    fds = {3: listener.fileno()} | ({4: first} if first is not None else {})
    cwd = "/root" if os.path.isdir("/root") else "/"  # where the C agent runs its commands
    return spawn([sys.executable, "-c", PY_AGENT, "1" if first is not None else "0"], fds,
                 cwd=cwd)  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(TIMEOUT_S)


def listen(path: Path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(128)
    return listener


class Client:
    """One connection: requests in, answers (header, body) out."""

    def __init__(self, sock: socket.socket) -> None:
        sock.settimeout(TIMEOUT_S)
        self.sock = sock
        self.reader = sock.makefile("rb")

    @classmethod
    def connect(cls, path: Path) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(path))
        return cls(sock)

    def send(self, header: dict | bytes, body: bytes = b"") -> None:
        line = header if isinstance(header, bytes) else json.dumps(header).encode() + b"\n"
        self.sock.sendall(line + body)

    def answer(self) -> tuple[dict, bytes]:
        line = self.reader.readline()
        assert line.endswith(b"\n"), line
        header = json.loads(line)
        body = self.reader.read(header["len"])
        assert len(body) == header["len"]
        return header, body

    def request(self, header: dict | bytes, body: bytes = b"") -> tuple[dict, bytes]:
        self.send(header, body)
        return self.answer()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Pair:
    """The Python agent and the C agent, each behind its own listener."""

    def __init__(self, folder: Path, binary: Path) -> None:
        self.folder = folder
        self.paths = {name: folder / f"{name}.sock" for name in ("py", "c")}
        listeners = {name: listen(path) for name, path in self.paths.items()}
        self.procs = {
            "py": start_py(listener=listeners["py"]),
            "c": start_c(binary, listener=listeners["c"]),
        }
        for listener in listeners.values():
            listener.close()
        self.clients = {name: Client.connect(path) for name, path in self.paths.items()}

    def both(self, header: dict | bytes, body: bytes = b"") -> dict[str, tuple[dict, bytes]]:
        return {name: client.request(header, body) for name, client in self.clients.items()}

    def same(self, header: dict | bytes, body: bytes = b"") -> tuple[dict, bytes]:
        """Both answers, which must be equal; the C agent's."""
        answers = self.both(header, body)
        assert_same(answers["py"], answers["c"])
        return answers["c"]

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        for proc in self.procs.values():
            stop(proc)


def assert_same(py: tuple[dict, bytes], c: tuple[dict, bytes]) -> None:
    (py_header, py_body), (c_header, c_body) = py, c
    py_header, c_header = dict(py_header), dict(c_header)
    py_header.pop("pid", None)
    c_header.pop("pid", None)
    if py_header.get("errno") == 0 and py_header.get("error") != DEADLINE_PASSED:
        # not an OSError: the text is a Python exception's; the kind of answer must match
        assert isinstance(c_header.get("error"), str) and c_header["error"]
        py_header.pop("error")
        c_header.pop("error")
    assert c_header == py_header
    assert c_body == py_body


DEADLINE_PASSED = "deadline passed before the request was read"


@pytest.fixture(scope="module")
def pair(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    agents = Pair(tmp_path_factory.mktemp("pair"), binary)
    yield agents
    agents.close()


def later(seconds: float = TIMEOUT_S) -> float:
    return time.monotonic() + seconds


def run(argv: list[str], **extra) -> dict:
    return {"op": "exec", "argv": argv, "deadline": later(), **extra}


# --- ping, exec -------------------------------------------------------------------------------


def test_ping_and_identity(pair: Pair) -> None:
    answers = pair.both({"op": "ping"})
    assert_same(answers["py"], answers["c"])
    header, body = answers["c"]
    assert header == {"ok": True, "pid": pair.procs["c"].pid, "host_pid": HOST_PID,
                      "starttime": STARTTIME, "len": 0}  # fmt: skip
    assert body == b""
    assert Path(f"/proc/{pair.procs['c'].pid}/cmdline").read_bytes() == b"sb-agent\0"


@pytest.mark.parametrize(
    "argv",
    [
        ["true"],
        ["false"],
        ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"],
        ["sh", "-c", "kill -9 $$"],
        ["sh", "-c", "kill -TERM $$"],
        ["nonexistent-program-xyz"],
        ["/nonexistent/program"],
        [""],
        ["/etc/hostname"],  # a file, not executable: EACCES
        ["sh", "-c", "pwd; echo $PATH $HOME $LANG $USER $LOGNAME"],
        ["sh", "-c", "ls /proc/$$/fd"],  # no descriptor of the agent leaks into commands
        ["sh", "-c", "trap - PIPE; yes | head -c 5"],  # SIGPIPE restored to default
        ["printf", "%s|%s", "héllo ☃ 😀", "tab\there\nline"],
        ["sh", "-c", "exec cat", "-"],  # stdin is the agent's /dev/null
    ],
)
def test_exec(pair: Pair, argv: list[str]) -> None:
    pair.same(run(argv))


def test_exec_codes(pair: Pair) -> None:
    header, body = pair.same(run(["sh", "-c", "kill -9 $$"]))
    assert header["exit_code"] == 128 + 9
    header, body = pair.same(run(["nonexistent-program-xyz"]))
    message = b"nonexistent-program-xyz: No such file or directory\n"
    assert (header["exit_code"], body) == (127, message)
    header, body = pair.same(run(["sh", "-c", "printf ab; printf cde >&2; exit 7"]))
    assert (header["exit_code"], header["out"], header["err"], body) == (7, 2, 3, b"abcde")


def test_exec_path_search(pair: Pair, tmp_path: Path) -> None:
    plain, runnable = tmp_path / "plain", tmp_path / "runnable"
    plain.mkdir()
    runnable.mkdir()
    (plain / "prog").write_text("#!/bin/sh\necho plain\n")
    (plain / "prog").chmod(0o644)
    header, body = pair.same(run(["prog"], env={"PATH": f"{plain}:/nonexistent"}))
    assert (header["exit_code"], body) == (126, b"prog: Permission denied\n")
    (runnable / "prog").write_text("#!/bin/sh\necho runnable\n")
    (runnable / "prog").chmod(0o755)
    header, body = pair.same(run(["prog"], env={"PATH": f"{plain}:{runnable}"}))
    assert (header["exit_code"], body) == (0, b"runnable\n")
    pair.same(run(["prog"], env={"PATH": ""}))  # the current directory (/root)


def test_exec_env_merging(pair: Pair) -> None:
    env = {"FOO": "bar", "HOME": "/tmp", "EMPTY": "", "UNI": "ünï ☃", "LANG": "C"}
    _, body = pair.same(run(["env"], env=env))
    lines = body.decode().splitlines()
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert lines[:5] == [path, "HOME=/tmp", "LANG=C", "USER=root", "LOGNAME=root"]
    assert lines[5:] == ["FOO=bar", "EMPTY=", "UNI=ünï ☃"]
    pair.same(run(["env"], env=None))
    pair.same(run(["env"], env={}))
    pair.same(run(["env"], env={"=A": "b"}))  # only a "=" after the first character is refused
    line = json.dumps(run(["sh", "-c", "echo $PATH"])).encode()[:-1]
    pair.same(line + b', "env": {"PATH": "/bin", "PATH": "/usr/bin"}}\n')  # the last wins


def test_exec_background_child_does_not_block(pair: Pair) -> None:
    """A command whose child keeps its stdout: answered EXIT_GRACE_S after it exits."""
    for name in ("py", "c"):
        started = time.monotonic()
        header, body = pair.clients[name].request(
            run(["sh", "-c", "sleep 5 & echo $$; echo err >&2"])
        )
        elapsed = time.monotonic() - started
        os.killpg(int(body.split(b"\n")[0]), signal.SIGKILL)
        assert elapsed < 1.0, (name, elapsed)
        assert header["exit_code"] == 0
        assert body.endswith(b"\n") and header["err"] == 4 and body.endswith(b"err\n")


def test_exec_timeout(pair: Pair) -> None:
    for name in ("py", "c"):
        started = time.monotonic()
        answer = pair.clients[name].request(
            {"op": "exec", "argv": ["sh", "-c", "echo partial; sleep 5"], "deadline": later(0.3)}
        )
        assert time.monotonic() - started < 2.0
        assert answer == ({"timeout": True, "started": True, "out": 8, "err": 0, "len": 8},
                          b"partial\n")  # fmt: skip
    past = {"op": "exec", "argv": ["true"], "deadline": time.monotonic() - 1}
    header, _ = pair.same(past)
    assert header == {"timeout": True, "started": False, "len": 0}


def test_exec_large_output(pair: Pair) -> None:
    script = "yes 0123456789abcdef | head -c 3000000 >&2; yes abc | head -c 8388608"
    header, _ = pair.same(run(["sh", "-c", script]))
    assert (header["out"], header["err"]) == (8388608, 3000000)


# --- files --------------------------------------------------------------------------------------


def test_write_read(pair: Pair, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    for name in ("py", "c"):
        client = pair.clients[name]
        path = tmp_path / name / "new" / "nested" / "file.bin"
        header = {"op": "write", "path": str(path), "len": len(data), "deadline": later()}
        assert client.request(header, data) == ({"ok": True, "len": 0}, b"")
        assert path.read_bytes() == data
        answer = client.request({"op": "read", "path": str(path), "deadline": later()})
        assert answer == ({"ok": True, "len": len(data)}, data)
        # over an existing file, shorter; and no deadline at all
        assert client.request({"op": "write", "path": str(path), "len": 2}, b"hi")[0]["ok"]
        assert client.request({"op": "read", "path": str(path)}) == ({"ok": True, "len": 2}, b"hi")
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    for request, body in [
        ({"op": "read", "path": str(tmp_path / "missing")}, b""),
        ({"op": "read", "path": str(tmp_path / "dir")}, b""),
        ({"op": "read", "path": ""}, b""),
        ({"op": "write", "path": str(tmp_path / "file" / "x" / "y"), "len": 1}, b"z"),
        ({"op": "write", "path": str(tmp_path / "dir"), "len": 1}, b"z"),
        ({"op": "write", "path": str(tmp_path / "dir") + "/", "len": 1}, b"z"),
        ({"op": "write", "path": str(tmp_path / "late"), "len": 1, "deadline": 1.0}, b"z"),
        ({"op": "read", "path": str(tmp_path / "file"), "deadline": 1.0}, b""),
        ({"op": "read", "path": "/proc/self/nonexistent"}, b""),
    ]:
        pair.same(request, body)
    assert not (tmp_path / "late").exists()
    header, _ = pair.same({"op": "read", "path": str(tmp_path / "missing")})
    assert header == {"error": "No such file or directory", "errno": 2, "len": 0}


# --- errors and framing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b'{"op": "frob"}\n',
        b"{}\n",
        b'{"op": null}\n',
        b'{"op": 5}\n',
        b'{"op": -1.5e300}\n',
        b'{"op": 0.0001}\n',
        b'{"op": 123456789012345678901234567890}\n',
        b'{"op": "it\'s"}\n',
        b'{"op": "both \' and \\""}\n',
        b'{"op": "tab\\there\\u0001\\u00e9\\u00a0\\ud83d\\ude00"}\n',
        b'{"op": ["a", 1.5, {"k": true, "k": false}, [], {}]}\n',
        b'{"op": "ping", "op": "frob"}\n',
        b'{"op": "\\u0085\\u00ad\\u2028\\ufeff\\udc80"}\n',
        b'{"op": [1.0, 1e16, 1.5e-5, -0, -0.0, 123456789.123, 1e-300, NaN, -Infinity]}\n',
    ],
)
def test_unknown_op(pair: Pair, line: bytes) -> None:
    header, _ = pair.same(line)
    assert header["errno"] == 22 and header["error"].startswith("unknown op ")


@pytest.mark.parametrize(
    "line",
    [
        b"{bad json\n",
        b"\n",
        b"[1, 2]\n",
        b"null\n",
        b'"ping"\n',
        b'{"op": "ping"} trailing\n',
        b'{"op": "ping",}\n',
        b'{"op": "exec"}\n',
        b'{"op": "exec", "deadline": DL}\n',
        b'{"op": "exec", "argv": ["true"]}\n',
        b'{"op": "exec", "argv": ["true"], "deadline": null}\n',
        b'{"op": "exec", "argv": [], "deadline": DL}\n',
        b'{"op": "exec", "argv": ["echo", "a\\u0000b"], "deadline": DL}\n',
        b'{"op": "exec", "argv": ["/bin/echo\\u0000"], "deadline": DL}\n',
        b'{"op": "exec", "argv": ["echo", 5], "deadline": DL}\n',
        b'{"op": "exec", "argv": ["env"], "env": {"A": 1}, "deadline": DL}\n',
        b'{"op": "exec", "argv": ["env"], "env": {"A=B": "c"}, "deadline": DL}\n',
        b'{"op": "exec", "argv": ["env"], "env": {"": "c"}, "deadline": DL}\n',
        b'{"op": "exec", "argv": ["env"], "env": {"A": "\\u0000"}, "deadline": DL}\n',
        b'{"op": "read"}\n',
        b'{"op": "read", "path": "/x\\u0000y"}\n',
        b'{"op": "read", "path": "/etc/hostname", "deadline": "soon"}\n',
        b'{"op": "ping", "len": "x"}\n',
        b'{"op": "ping\xff"}\n',
        b'{"op": "\\ud800"}\n',
        b"[" * 600 + b"]" * 600 + b"\n",
        b'{"op": "ping", "len": 5.0}\n',
        b'{"op": "exec", "argv": ["env"], "env": {"PATH": 5}, "deadline": DL}\n',
        b'{"op": "write", "path": 5}\n',
    ],
)
def test_malformed_requests_keep_the_connection(pair: Pair, line: bytes) -> None:
    header, _ = pair.same(line.replace(b"DL", str(later()).encode()))
    assert header["errno"] in (0, 22), header
    header, _ = pair.same(b'{"op": "ping"}\n')
    assert header["ok"]


def test_exec_deadline_as_string_and_escapes(pair: Pair) -> None:
    deadline = str(later())
    _, body = pair.same({"op": "exec", "argv": ["printf", "%s", "a\\b\"c\x01"],
                              "deadline": deadline})  # fmt: skip
    assert body == b'a\\b"c\x01'


def test_body_of_other_ops_is_read_and_ignored(pair: Pair) -> None:
    header, _ = pair.same({"op": "ping", "len": 5}, b"12345")
    assert header["ok"]
    header, _ = pair.same(b'{"op": "ping", "len": true}\nX')  # True is 1
    assert header["ok"]
    header, _ = pair.same(b' \t{"op": "ping", "len": null}\r\n')
    assert header["ok"]
    pair.same(b'{"op": "ping"}\n')


def test_closed_connection_mid_body_ends_quietly(binary: Path, tmp_path: Path) -> None:
    listener = listen(tmp_path / "c.sock")
    proc = start_c(binary, listener=listener)
    listener.close()
    try:
        client = Client.connect(tmp_path / "c.sock")
        client.send({"op": "write", "path": str(tmp_path / "x"), "len": 10}, b"abc")
        client.sock.shutdown(socket.SHUT_WR)
        assert client.reader.read() == b""  # no answer, the connection closes
        client.close()
        assert not (tmp_path / "x").exists()
        again = Client.connect(tmp_path / "c.sock")
        assert again.request({"op": "ping"})[0]["ok"]  # the agent lives on
        again.close()
    finally:
        stop(proc)


def test_last_line_without_newline_is_answered(pair: Pair) -> None:
    for name, path in pair.paths.items():
        client = Client.connect(path)
        client.sock.sendall(b'{"op": "ping"}')
        client.sock.shutdown(socket.SHUT_WR)
        header, _ = client.answer()
        assert header["ok"], name
        assert client.reader.read() == b""
        client.close()


def test_long_header_line(pair: Pair) -> None:
    env = {f"VAR{i}": "x" * 1000 for i in range(1000)}  # a 1 MB header
    header, body = pair.same(run(["sh", "-c", "echo $VAR999 | wc -c"], env=env))
    assert body == b"1001\n"
    header, _ = pair.same(b"x" * (17 << 20) + b"\n")  # beyond the C agent's 16 MiB limit
    assert header["errno"] == 0
    assert pair.same(b'{"op": "ping"}\n')[0]["ok"]


def test_concurrent_connections(pair: Pair) -> None:
    results: dict[int, tuple[dict, bytes]] = {}

    def one(i: int) -> None:
        client = Client.connect(pair.paths["c"])
        results[i] = client.request(run(["sh", "-c", "sleep 0.3; echo $0", f"n{i}"]))
        results[i] = (results[i][0], results[i][1] + client.request({"op": "ping"})[1])
        client.close()

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert time.monotonic() - started < 2.0  # 8 x 0.3 s one after the other would be 2.4 s
    for i in range(8):
        out = f"n{i}\n".encode()
        assert results[i] == ({"exit_code": 0, "out": len(out), "err": 0, "len": len(out)}, out)


# --- the descriptor interface: first connection, gate, configuration ---------------------------


def fionread(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def readable(sock: socket.socket, seconds: float) -> bool:
    return bool(select.select([sock], [], [], seconds)[0])


def test_first_connection_and_gate(binary: Path, tmp_path: Path) -> None:
    listener = listen(tmp_path / "c.sock")
    ours, theirs = socket.socketpair()
    ours_client = Client(ours)
    ours_client.send({"op": "ping"})
    go_r, go_w = os.pipe()
    proc = start_c(binary, listener=listener, first=theirs.fileno(), go=go_r)
    os.close(go_r)
    listener.close()
    try:
        end = time.monotonic() + TIMEOUT_S
        while fionread(theirs) and time.monotonic() < end:  # the ping is read before the go
            time.sleep(0.005)
        assert fionread(theirs) == 0
        theirs.close()
        assert not readable(ours, 0.2)  # but not answered
        os.write(go_w, b"g")
        header, _ = ours_client.answer()
        assert header["ok"] and header["pid"] == proc.pid
        cwd = "/root" if os.path.isdir("/root") else "/"
        assert ours_client.request(run(["pwd"]))[1] == f"{cwd}\n".encode()
        other = Client.connect(tmp_path / "c.sock")
        assert other.request({"op": "ping"})[0]["ok"]
        other.close()
    finally:
        os.close(go_w)
        ours_client.close()
        stop(proc)


def test_gate_without_first_connection(binary: Path, tmp_path: Path) -> None:
    listener = listen(tmp_path / "c.sock")
    go_r, go_w = os.pipe()
    proc = start_c(binary, listener=listener, go=go_r)
    os.close(go_r)
    listener.close()
    try:
        client = Client.connect(tmp_path / "c.sock")
        client.send({"op": "ping"})
        assert not readable(client.sock, 0.2)
        os.write(go_w, b"g")
        assert client.answer()[0]["ok"]
        client.close()
    finally:
        os.close(go_w)
        stop(proc)


@pytest.mark.parametrize("with_first", [True, False])
@pytest.mark.parametrize("go", [b"", b"x"])
def test_gate_failure_exits_1(binary: Path, tmp_path: Path, with_first: bool, go: bytes) -> None:
    listener = listen(tmp_path / "c.sock")
    ours, theirs = socket.socketpair()
    ours.sendall(b'{"op": "ping"}\n')
    go_r, go_w = os.pipe()
    first = theirs.fileno() if with_first else None
    proc = start_c(binary, listener=listener, first=first, go=go_r)
    os.close(go_r)
    theirs.close()
    listener.close()
    try:
        os.write(go_w, go)
        os.close(go_w)
        assert proc.wait(TIMEOUT_S) == 1
        if with_first:
            ours.settimeout(TIMEOUT_S)
            assert ours.recv(100) == b""  # never answered
    finally:
        ours.close()
        stop(proc)


def seccomp_refusing_mkdir() -> bytes:
    """Classic BPF: on x86-64, mkdir and mkdirat fail with EPERM; everything else runs."""
    ld_abs, jeq, ret = 0x20, 0x15, 0x06
    allow, errno_eperm = 0x7FFF0000, 0x00050000 | 1
    program = [
        (ld_abs, 0, 0, 4),  # arch
        (jeq, 1, 0, 0xC000003E),  # AUDIT_ARCH_X86_64
        (ret, 0, 0, allow),
        (ld_abs, 0, 0, 0),  # syscall number
        (jeq, 2, 0, 83),  # mkdir
        (jeq, 1, 0, 258),  # mkdirat
        (ret, 0, 0, allow),
        (ret, 0, 0, errno_eperm),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.mark.parametrize(
    ("cfg", "status"),
    [
        (b"", 2),
        (b"1 2\n", 2),
        (b"1 2 0", 2),
        (b"x 2 0\n", 2),
        (b"1 2 -8\n", 2),
        (b"1 2 8\n" + b"\0" * 4, 2),
        (b"1 2 4\nabcd", 2),
        (b"1 2 0\nextra", 2),
        (b"1 2 8\n" + struct.pack("=HBBI", 0xFFFF, 0, 0, 0), 3),  # not a valid program
    ],
)
def test_bad_config_exits(binary: Path, tmp_path: Path, cfg: bytes, status: int) -> None:
    listener = listen(tmp_path / "c.sock")
    proc = start_c(binary, listener=listener, cfg=cfg)
    listener.close()
    try:
        assert proc.wait(TIMEOUT_S) == status
    finally:
        stop(proc)


def test_hardening_without_filter(pair: Pair) -> None:
    fields = status_fields(pair.procs["c"].pid)
    assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "0")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the test's BPF is for x86-64")
def test_seccomp_filter_is_enforced(binary: Path, tmp_path: Path) -> None:
    listener = listen(tmp_path / "c.sock")
    proc = start_c(binary, listener=listener, cfg=config(seccomp_refusing_mkdir()))
    listener.close()
    try:
        client = Client.connect(tmp_path / "c.sock")
        assert client.request({"op": "ping"})[0]["host_pid"] == HOST_PID
        fields = status_fields(proc.pid)
        assert (fields["NoNewPrivs"], fields["Seccomp"]) == ("1", "2")
        header, body = client.request(run(["mkdir", str(tmp_path / "refused")]))
        assert header["exit_code"] == 1 and b"Operation not permitted" in body
        header, _ = client.request(run(["touch", str(tmp_path / "allowed")]))
        assert header["exit_code"] == 0 and (tmp_path / "allowed").exists()
        header, _ = client.request(
            {"op": "write", "path": str(tmp_path / "new" / "f"), "len": 1}, b"x"
        )
        assert header == {"error": "Operation not permitted", "errno": 1, "len": 0}
        header, _ = client.request({"op": "write", "path": str(tmp_path / "f"), "len": 1}, b"x")
        assert header == {"ok": True, "len": 0}  # its directory exists: mkdir's EPERM is fine
        client.close()
    finally:
        stop(proc)


# --- invariants ---------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_characters="\0"), max_size=40)


@settings(max_examples=30, deadline=None)
@given(argument=TEXT, value=TEXT)
def test_text_round_trips_identically(pair: Pair, argument: str, value: str) -> None:
    """Both agents pass strings on as the file system encoding does: UTF-8, lone surrogates
    U+DC80..U+DCFF as the bytes they escape (surrogateescape), other lone surrogates refused
    with an error answer."""
    header, body = pair.same(run(["printf", "%s", argument]))
    assert expected(header, body) == encoded(argument)
    header, body = pair.same(run(["printenv", "V"], env={"V": value}))
    encoded_value = encoded(value)
    assert expected(header, body) == (None if encoded_value is None else encoded_value + b"\n")


def encoded(text: str) -> bytes | None:
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return None


def expected(header: dict, body: bytes) -> bytes | None:
    """The command's output, or None for an error answer (errno 0: not the system's)."""
    if "error" in header:
        assert header["errno"] == 0, header
        return None
    assert header["exit_code"] == 0, header
    return body


@settings(max_examples=30, deadline=None)
@given(data=st.binary(max_size=5000))
def test_bytes_round_trip(pair: Pair, data: bytes) -> None:
    for name in ("py", "c"):
        path = pair.folder / f"bytes-{name}"
        client = pair.clients[name]
        assert client.request({"op": "write", "path": str(path), "len": len(data)}, data)[0]["ok"]
        answer = client.request({"op": "read", "path": str(path)})
        assert answer == ({"ok": True, "len": len(data)}, data)
