"""guest_perf: how fast the CPU, memory, disk and network you pay for are, measured from inside.

One iteration, on a fresh sandbox (each measurement one exec, timed twice: the exec by the
harness, which is the sample's duration, and the work alone by a clock inside the sandbox,
which gives the rate in ``extra``)::

    create | first_exec | inspect | cpu_sha256 [cpu_kernel] | cpu_python | cpu_parallel
           | mem_bandwidth | disk_seq_write | disk_rand_read | disk_rand_write
           | net_dns | net_https | destroy

* ``inspect``: what the sandbox has: tools (python3, sha256sum, getent, curl), ``nproc``, the
  CPU model, the Python version, a nanosecond clock (GNU ``date +%s%N``) and its network
  interfaces (``/proc/net/dev``).
* ``cpu_sha256``: ``head -c cpu_mb MiB /dev/zero | sha256sum`` on one process, timed with
  ``date +%s%N`` around it; the digest must be that of cpu_mb MiB of zeros. ``extra``:
  ``sha256_mib_per_s`` (a SHA-256 block is 64 bytes: 16,384 blocks per MiB).
  ``cpu_kernel`` (derived, the at-a-glance CPU figure) is that hashing alone: its duration is
  the in-sandbox time, so lower is faster, free of the exec's own overhead.
* ``cpu_python``: a pure-Python loop, ``s += i * i`` for ``i`` in ``range(py_loops)``, timed
  by ``time.perf_counter`` inside; the sum must be the closed form. ``py_loops_per_s``
  (interpreter speed: the sandbox's own python3, whose version is recorded).
* ``cpu_parallel``: the sha256 kernel on P processes at once (P = ``processes``, or by
  default the larger of ``nproc`` and the spec's vCPUs, rounded up); every digest must be
  right. ``parallel_mib_per_s`` (all processes together) and ``speedup`` (that over this
  iteration's one-process rate): how many CPUs the sandbox really delivers. A sandbox that
  shows more CPUs than its quota lets it use (``nproc`` 2 under a 1-CPU cgroup quota) shows
  a speed-up near 1.
* ``mem_bandwidth``: python3 copies a ``mem_mb`` MiB buffer into another ``mem_repeats``
  times (``bytearray`` slice assignment: one ``memcpy``; the pages are touched once before
  the clock starts); the copy must equal the source. ``mem_gib_per_s`` counts each byte
  copied once (it is read once and written once). Without python3: ``dd if=/dev/zero
  of=/dev/null bs=<mem_mb>M count=<mem_repeats>`` (the kernel zeroing a buffer: a write
  bandwidth, not comparable with the copy; ``mem_method`` says which).
* ``disk_seq_write``: python3 writes ``write_mb`` MiB of incompressible data (1 MiB of
  ``os.urandom``, each MiB made unique) in 1 MiB writes to the scratch directory, then
  ``fsync``; the clock stops after the fsync; the file must then have the right size.
  Without python3: ``dd if=/dev/zero bs=1M conv=fsync`` (zeros: a compressing or
  deduplicating store flatters it; ``io_method`` says which). ``seq_write_mib_per_s``.
* ``disk_rand_read``: python3 lays out an ``io_file_mb`` MiB file (untimed, fsynced), then
  reads ``read_ops`` distinct 4 KiB blocks at random with ``O_DIRECT`` where the filesystem
  allows it (``io_direct``), else after dropping the file from the page cache
  (``posix_fadvise`` DONTNEED, readahead off). ``rand_read_iops``.
* ``disk_rand_write``: ``write_ops`` random 4 KiB writes into that file, each followed by
  ``fdatasync`` (durable writes, as a database or a package manager's lock file makes them).
  ``rand_write_iops``. Both need python3; without it they are ``unsupported``.
* ``net_dns``: ``getent hosts dns_name`` (else python3's ``getaddrinfo``), timed inside:
  ``dns_s``. ``net_https``: ``curl`` (else python3's urllib) GET of ``https_url``, any
  answer below 400: ``https_s`` (curl's ``time_total``: DNS, connect, TLS, transfer) and
  ``http_status``. A sandbox whose only network interface is ``lo`` has no route out: both
  are recorded ``unsupported`` with that reason (the local provider's sandboxes, and the
  emulators' built on them), never a fake time; a sandbox with an interface that cannot
  reach the target records an ``Unreachable`` error with the tool's message.

A missing tool makes its measurement ``unsupported`` with the reason ("the sandbox has no
python3"), never a substitute without saying so. A measurement whose output is wrong (a bad
digest, a short file, an in-sandbox time longer than the exec that contained it, a rate no
machine reaches) is an error and the iteration goes on to the next measurement; a failed call
ends it, as everywhere. fio is deliberately not used even where installed: no image we can
test has it (the local sandboxes, E2B's base, Daytona's default), and mixing fio's figures on
one provider with the built-in method's on another would not be like for like.

Its report part (bench/workloads/guest_perf_report.py) shows the rates per provider beside the
billed size, and what a unit of work costs at each provider's price.
"""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from bench.iteration import CheckFailed, StepFailed
from bench.store import utc_now_iso
from bench.workloads.base import Workload
from bench.workloads.lifecycle import ATTEMPTS, timed_first_exec
from bench.workloads.shape import Extra, Operation, Role
from providers.base import ExecResult, Sandbox
from providers.settings import setting

if TYPE_CHECKING:
    from bench.iteration import IterationContext

MIB = 1 << 20
#: Bytes per SHA-256 block: the unit of the report's price per million blocks.
SHA256_BLOCK = 64
#: What no machine reaches; above it the measurement is broken (a clock or a parse).
PLAUSIBLE: dict[str, float] = {
    "sha256_mib_per_s": 50_000.0,
    "parallel_mib_per_s": 50_000.0 * 256,
    "py_loops_per_s": 1e10,
    "mem_gib_per_s": 2_000.0,
    "seq_write_mib_per_s": 200_000.0,
    "rand_read_iops": 1e8,
    "rand_write_iops": 1e8,
}
#: How far the in-sandbox time may exceed the exec containing it (two clocks, two machines).
CLOCK_SLACK = 1.05
CLOCK_SLACK_S = 0.05
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                       r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")  # fmt: skip
_KEY_VALUE = re.compile(r"^([a-z_0-9]+)=(.*)$")


@dataclass(frozen=True, kw_only=True)
class GuestPerfSettings:
    cpu_mb: int = setting(
        64, help="MiB of zeros each sha256 process hashes", unit="MiB", minimum=1, maximum=16_384
    )
    py_loops: int = setting(
        3_000_000, help="iterations of the pure-Python loop", minimum=1_000, maximum=10**10
    )
    processes: int = setting(
        0, help="processes of cpu_parallel; 0: the larger of nproc and the spec's vCPUs",
        minimum=0, maximum=256,
    )  # fmt: skip
    mem_mb: int = setting(
        64, help="size of the buffer copied by mem_bandwidth", unit="MiB", minimum=1,
        maximum=16_384,
    )  # fmt: skip
    mem_repeats: int = setting(8, help="copies of that buffer", minimum=1, maximum=10_000)
    write_mb: int = setting(
        64, help="MiB written (then fsynced) by disk_seq_write", unit="MiB", minimum=1,
        maximum=1_048_576,
    )  # fmt: skip
    io_file_mb: int = setting(
        64, help="size of the file random 4 KiB I/O goes to", unit="MiB", minimum=1,
        maximum=1_048_576,
    )  # fmt: skip
    read_ops: int = setting(
        2_000, help="random 4 KiB reads (distinct blocks, at most the file's)", minimum=1,
        maximum=10_000_000,
    )  # fmt: skip
    write_ops: int = setting(
        200, help="random 4 KiB writes, each followed by fdatasync", minimum=1,
        maximum=10_000_000,
    )  # fmt: skip
    dns_name: str = setting("example.com", help="the name net_dns resolves")
    https_url: str = setting("https://example.com/", help="the URL net_https fetches")
    net_timeout_s: float = setting(
        10.0, help="how long the network tools may take", unit="s", minimum=0.1, maximum=600
    )

    def __post_init__(self) -> None:
        if not _HOSTNAME.match(self.dns_name):
            raise ValueError(f"workloads.guest_perf.dns_name: not a host name: {self.dns_name!r}")
        parts = urlsplit(self.https_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"workloads.guest_perf.https_url: not an http(s) URL: {self.https_url!r}"
            )
        if any(c.isspace() for c in self.https_url):
            raise ValueError("workloads.guest_perf.https_url: must not contain spaces")


# -- what the sandbox runs --------------------------------------------------------------------

INSPECT = r"""
for t in python3 sha256sum head getent curl; do
  command -v "$t" >/dev/null 2>&1 && echo "tool=$t"
done
echo "nproc=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null)"
echo "clock=$(date +%s%N 2>/dev/null)"
command -v python3 >/dev/null 2>&1 &&
  echo "python=$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null)"
echo "cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)"
if [ -r /proc/net/dev ]; then
  echo "netdev=1"
  echo "ifaces=$(awk -F: 'NR > 2 {gsub(/[ \t]/, "", $1); if ($1 != "lo") printf "%s ", $1}' \
    /proc/net/dev)"
fi
true
"""

SHA256 = """t0=$(date +%s%N); d=$(head -c {size} /dev/zero | sha256sum); t1=$(date +%s%N)
echo "digest=${{d%% *}}"; echo "ns=$((t1 - t0))"
"""

PARALLEL = """t0=$(date +%s%N); i=0
while [ "$i" -lt {processes} ]; do
  (d=$(head -c {size} /dev/zero | sha256sum); echo "digest=${{d%% *}}") &
  i=$((i + 1))
done
wait; t1=$(date +%s%N); echo "ns=$((t1 - t0))"
"""

PY_LOOP = """
import sys, time
n = int(sys.argv[1])
s = 0
t = time.perf_counter()
for i in range(n):
    s += i * i
e = time.perf_counter() - t
print("sum=%d" % s)
print("s=%r" % e)
"""

PY_MEMCPY = """
import sys, time
n, reps = int(sys.argv[1]) << 20, int(sys.argv[2])
src = bytearray(b"Z") * n
dst = bytearray(n)
dst[:] = src
t = time.perf_counter()
for _ in range(reps):
    dst[:] = src
e = time.perf_counter() - t
print("ok=%d" % (dst == src))
print("bytes=%d" % (n * reps))
print("s=%r" % e)
"""

DD_ZERO = """t0=$(date +%s%N); out=$(dd if=/dev/zero of=/dev/null bs={mb}M count={count} 2>&1)
rc=$?; t1=$(date +%s%N); echo "rc=$rc"; echo "ns=$((t1 - t0))"
echo "bytes=$(echo "$out" | sed -n 's/^\\([0-9][0-9]*\\) bytes.*/\\1/p')"
"""

PY_SEQ_WRITE = """
import os, sys, time
path, mb = sys.argv[1], int(sys.argv[2])
block = bytearray(os.urandom(1 << 20))
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
try:
    t = time.perf_counter()
    for i in range(mb):
        block[:8] = i.to_bytes(8, "little")
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)
    e = time.perf_counter() - t
finally:
    os.close(fd)
print("size=%d" % os.stat(path).st_size)
os.unlink(path)
print("s=%r" % e)
"""

DD_SEQ_WRITE = """f={path}
t0=$(date +%s%N); dd if=/dev/zero of="$f" bs=1M count={mb} conv=fsync >/dev/null 2>&1
rc=$?; t1=$(date +%s%N); echo "rc=$rc"; echo "size=$(wc -c < "$f")"; rm -f "$f"
echo "ns=$((t1 - t0))"
"""

PY_RANDOM_IO = """
import mmap, os, random, sys, time
mode, path = sys.argv[1], sys.argv[2]
mb, ops, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
size = mb << 20
if not os.path.exists(path) or os.path.getsize(path) != size:
    block = bytearray(os.urandom(1 << 20))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(mb):
        block[:8] = i.to_bytes(8, "little")
        view = memoryview(block)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)
    os.close(fd)
blocks = size // 4096
offsets = [b * 4096 for b in random.Random(seed).sample(range(blocks), min(ops, blocks))]
done = 0
direct = 0
if mode == "read":
    buf = mmap.mmap(-1, 4096)
    fd = None
    if hasattr(os, "O_DIRECT"):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
            os.preadv(fd, [buf], 0)
            direct = 1
        except OSError:
            if fd is not None:
                os.close(fd)
            fd = None
    if fd is None:
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    t = time.perf_counter()
    for off in offsets:
        done += os.preadv(fd, [buf], off) == 4096
    e = time.perf_counter() - t
    os.close(fd)
else:
    data = os.urandom(4096)
    fd = os.open(path, os.O_WRONLY)
    t = time.perf_counter()
    for off in offsets:
        done += os.pwrite(fd, data, off) == 4096
        os.fdatasync(fd)
    e = time.perf_counter() - t
    os.close(fd)
    os.unlink(path)
print("ops=%d" % done)
print("wanted=%d" % len(offsets))
print("direct=%d" % direct)
print("s=%r" % e)
"""

GETENT = """t0=$(date +%s%N); out=$(getent hosts {name} 2>&1); rc=$?
t1=$(date +%s%N); echo "rc=$rc"; echo "ns=$((t1 - t0))"
echo "answer=$(echo "$out" | head -n 1 | cut -c1-200)"
"""

PY_DNS = """
import socket, sys, time
t = time.perf_counter()
try:
    found = socket.getaddrinfo(sys.argv[1], 443, proto=socket.IPPROTO_TCP)
    rc, answer = 0, found[0][4][0]
except OSError as exc:
    rc, answer = 2, str(exc)
e = time.perf_counter() - t
print("rc=%d" % rc)
print("answer=%s" % answer[:200])
print("s=%r" % e)
"""

CURL = """{{ curl -sS -o /dev/null --max-time {timeout} \\
  -w 'code=%{{http_code}}\\ntotal=%{{time_total}}\\n' {url} 2>&1; echo "rc=$?"; }} |
  sed 's/^curl: /error=curl: /'
"""

PY_HTTPS = """
import sys, time, urllib.error, urllib.request
t = time.perf_counter()
try:
    with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as answer:
        answer.read()
        code, rc, error = answer.status, 0, ""
except urllib.error.HTTPError as exc:
    code, rc, error = exc.code, 0, ""
except Exception as exc:
    code, rc, error = 0, 2, "%s: %s" % (type(exc).__name__, exc)
e = time.perf_counter() - t
print("rc=%d" % rc)
print("code=%d" % code)
print("error=%s" % error[:200])
print("total=%r" % e)
"""


def python_command(code: str, *args: object) -> str:
    return " ".join(["python3", "-c", shlex.quote(code), *(shlex.quote(str(a)) for a in args)])


@lru_cache(maxsize=8)
def zeros_digest(size: int) -> str:
    """The sha256 of ``size`` zero bytes (what every sha256 kernel must print)."""
    h = hashlib.sha256()
    chunk = bytes(min(size, MIB))
    left = size
    while left:
        h.update(chunk[: min(left, MIB)])
        left -= min(left, MIB)
    return h.hexdigest()


def squares_sum(n: int) -> int:
    """sum(i * i for i in range(n)), in closed form."""
    return (n - 1) * n * (2 * n - 1) // 6


# -- parsing ----------------------------------------------------------------------------------


def key_values(text: str) -> dict[str, list[str]]:
    """Every ``key=value`` line of ``text`` (a key may repeat: parallel digests)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _KEY_VALUE.match(line.strip())
        if match:
            found.setdefault(match[1], []).append(match[2].strip())
    return found


def _one(values: Mapping[str, list[str]], key: str) -> str:
    got = values.get(key)
    if not got:
        raise CheckFailed("UnexpectedOutput", f"no {key}= in the output")
    return got[-1]


def _number(values: Mapping[str, list[str]], key: str) -> float:
    text = _one(values, key)
    try:
        value = float(text)
    except ValueError:
        raise CheckFailed("UnexpectedOutput", f"{key} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise CheckFailed("UnexpectedOutput", f"{key} is not finite: {text[:40]!r}")
    return value


def inner_seconds(values: Mapping[str, list[str]]) -> float:
    """The in-sandbox time: ``ns=`` (shell clock) or ``s=`` (python's perf_counter)."""
    seconds = _number(values, "ns") / 1e9 if "ns" in values else _number(values, "s")
    if seconds <= 0:
        raise CheckFailed("Implausible", f"the work took {seconds!r} s inside the sandbox")
    return seconds


def parse_inspect(text: str) -> dict[str, Any]:
    values = key_values(text)
    nproc_text = (values.get("nproc") or [""])[-1]
    clock = (values.get("clock") or [""])[-1]
    return {
        "tools": sorted(set(values.get("tool", []))),
        "nproc": int(nproc_text) if nproc_text.isdigit() and int(nproc_text) > 0 else None,
        "clock": clock.isdigit() and len(clock) >= 18,
        "python_version": (values.get("python") or [""])[-1] or None,
        "cpu_model": (values.get("cpu_model") or [""])[-1] or None,
        "netdev": bool(values.get("netdev")),
        "net_interfaces": (values.get("ifaces") or [""])[-1].split(),
    }


def _plausible(key: str, value: float) -> float:
    if not 0 < value <= PLAUSIBLE[key]:
        raise CheckFailed("Implausible", f"{key} {value:.6g} is beyond any machine")
    return value


def _loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    return (
        host == "localhost"
        or host.endswith(".localhost")
        or host.startswith("127.")
        or (host in ("::1", "[::1]"))
    )


def _missing(found: Mapping[str, Any], *needs: str) -> list[str]:
    """What the sandbox lacks of ``needs`` (tools, or "clock"), in words."""
    return [
        "no nanosecond clock (`date +%s%N` is not GNU date's)"
        if n == "clock"
        else f"no {n} (not found by `command -v`)"
        for n in needs
        if not (found["clock"] if n == "clock" else n in found["tools"])
    ]


def _lacks(found: Mapping[str, Any], *needs: str) -> str | None:
    """Why a measurement needing all of ``needs`` cannot run, or None."""
    missing = _missing(found, *needs)
    return "the sandbox has " + " and ".join(missing) if missing else None


def _either(found: Mapping[str, Any], *choices: tuple[str, ...]) -> str | None:
    """Why none of ``choices`` (each a set of needs) can run, or None when one can."""
    missing = [_missing(found, *needs) for needs in choices]
    if any(not m for m in missing):
        return None
    return "the sandbox has " + ", and ".join(" and ".join(m) for m in missing)


def _no_route(found: Mapping[str, Any], host: str) -> str | None:
    if _loopback(host) or not found["netdev"] or found["net_interfaces"]:
        return None
    return f"no route to {host}: the sandbox has no network interface besides lo"


def unsupported_reasons(found: Mapping[str, Any], settings: GuestPerfSettings) -> dict[str, str]:
    """The measurements this sandbox cannot make (what ``inspect`` found), with the reason."""
    url_host = urlsplit(settings.https_url).hostname or ""
    reasons = {
        "cpu_sha256": _lacks(found, "sha256sum", "head", "clock"),
        "cpu_python": _lacks(found, "python3"),
        "cpu_parallel": _lacks(found, "sha256sum", "head", "clock"),
        "mem_bandwidth": _either(found, ("python3",), ("clock",)),
        "disk_seq_write": _either(found, ("python3",), ("clock",)),
        "disk_rand_read": _lacks(found, "python3"),
        "disk_rand_write": _lacks(found, "python3"),
        "net_dns": _no_route(found, settings.dns_name)
        or _either(found, ("getent", "clock"), ("python3",)),
        "net_https": _no_route(found, url_host) or _either(found, ("curl",), ("python3",)),
    }
    return {op: why for op, why in reasons.items() if why is not None}


# -- the workload -----------------------------------------------------------------------------


class GuestPerf(Workload):
    name: ClassVar[str] = "guest_perf"
    Settings: ClassVar[type] = GuestPerfSettings
    operations: ClassVar[tuple[Operation, ...]] = (
        Operation("create", help="the provider's create call"),
        Operation("first_exec", help="create's return to the first `true` that exits 0"),
        Operation("inspect", help="tools, nproc, CPU model, clock and network interfaces"),
        Operation("cpu_sha256", help="exec of sha256 over cpu_mb MiB of zeros, one process"),
        Operation(
            "cpu_kernel",
            help="that hashing alone, timed inside the sandbox (lower is faster)",
            derived=True,
            roles=(Role.CPU_SPEED,),
        ),
        Operation("cpu_python", help="exec of a pure-Python loop of py_loops iterations"),
        Operation("cpu_parallel", help="exec of the sha256 kernel on P processes at once"),
        Operation("mem_bandwidth", help="exec copying a mem_mb MiB buffer mem_repeats times"),
        Operation("disk_seq_write", help="exec writing write_mb MiB, then fsync"),
        Operation("disk_rand_read", help="exec of read_ops random 4 KiB reads"),
        Operation("disk_rand_write", help="exec of write_ops random 4 KiB writes + fdatasync"),
        Operation("net_dns", help="exec resolving dns_name"),
        Operation("net_https", help="exec fetching https_url"),
        Operation("destroy", help="the provider's destroy call"),
    )
    extras: ClassVar[tuple[Extra, ...]] = (
        ATTEMPTS,
        Extra("tools", list, help="the tools guest_perf looks for that the sandbox has"),
        Extra("nproc", int, help="CPUs the sandbox's processes see"),
        Extra("cpu_model", str, help="the CPU model /proc/cpuinfo names"),
        Extra("python_version", str, help="the sandbox's python3"),
        Extra("net_interfaces", list, help="network interfaces besides lo"),
        Extra("not_measured", list, help="measurements this sandbox cannot make: why"),
        Extra("kernel_s", float, unit="s", help="the work alone, timed inside the sandbox"),
        Extra("cpu_mb", int, unit="MiB", help="MiB each sha256 process hashed"),
        Extra("sha256_mib_per_s", float, unit="MiB/s", help="sha256 of zeros, one process"),
        Extra("py_loops_per_s", float, unit="1/s", help="pure-Python loop iterations a second"),
        Extra("processes", int, help="processes cpu_parallel ran at once"),
        Extra("parallel_mib_per_s", float, unit="MiB/s", help="sha256, all processes together"),
        Extra("speedup", float, help="parallel over one-process sha256 rate (CPUs delivered)"),
        Extra("mem_gib_per_s", float, unit="GiB/s", help="bytes copied (or zeroed) a second"),
        Extra("mem_method", str, help="python_memcpy, or dd_zero without python3"),
        Extra("seq_write_mib_per_s", float, unit="MiB/s", help="sequential write incl. fsync"),
        Extra("io_method", str, help="python, or dd_zeros without python3"),
        Extra("io_file_mb", int, unit="MiB", help="size of the random-I/O file"),
        Extra("rand_read_iops", float, unit="1/s", help="random 4 KiB reads a second"),
        Extra("io_direct", bool, help="the reads bypassed the page cache with O_DIRECT"),
        Extra("rand_write_iops", float, unit="1/s", help="random 4 KiB durable writes a second"),
        Extra("dns_s", float, unit="s", help="name resolution, timed inside the sandbox"),
        Extra("https_s", float, unit="s", help="the whole HTTPS fetch, timed inside"),
        Extra("http_status", int, help="the fetch's HTTP status"),
        Extra("net_tool", str, help="the tool that resolved or fetched"),
    )
    #: Its speed and price-performance tables and the delivered-CPU warning.
    report: ClassVar[Any] = "bench.workloads.guest_perf_report"

    async def run(self, ctx: IterationContext) -> None:
        sandbox = await ctx.create()
        await timed_first_exec(ctx, sandbox)
        found: dict[str, Any] = {}
        shown: dict[str, Any] = {}

        def read_inspect(result: ExecResult) -> None:
            if result.exit_code != 0:
                raise CheckFailed("NonZeroExit", f"exit code {result.exit_code}",
                                  exit_code=result.exit_code)  # fmt: skip
            found.update(parse_inspect(result.stdout.decode(errors="replace")))
            keys = ("tools", "nproc", "cpu_model", "python_version", "net_interfaces")
            shown.update({k: found[k] for k in keys})
            found["reasons"] = unsupported_reasons(found, self.settings)
            # The report explains each unsupported measurement from this list.
            shown["not_measured"] = [f"{op}: {why}" for op, why in found["reasons"].items()]
            if found["nproc"] is None:
                raise CheckFailed("UnexpectedOutput", "the sandbox did not say how many CPUs")

        await ctx.timed(
            "inspect",
            lambda: ctx.provider.exec(sandbox, INSPECT, timeout_s=ctx.timeout_s),
            sandbox=sandbox,
            check=read_inspect,
            extra=shown,
        )
        run = _Run(ctx=ctx, sandbox=sandbox, settings=self.settings, found=found)
        await run.cpu_sha256()
        await run.cpu_python()
        await run.cpu_parallel()
        await run.mem_bandwidth()
        await run.disk_seq_write()
        await run.disk_random("disk_rand_read")
        await run.disk_random("disk_rand_write")
        await run.net_dns()
        await run.net_https()
        await ctx.destroy(sandbox)


@dataclass(kw_only=True)
class _Run:
    """One iteration's measurements on one sandbox, after ``inspect``."""

    ctx: IterationContext
    sandbox: Sandbox
    settings: GuestPerfSettings
    found: dict[str, Any]
    single_mib_per_s: float | None = None

    def has(self, tool: str) -> bool:
        return tool in self.found["tools"]

    def skip(self, operation: str) -> bool:
        """Record ``operation`` unsupported when this sandbox cannot make it; True if so."""
        why = self.found["reasons"].get(operation)
        if why is not None:
            self.ctx.record_unsupported(operation, why)
        return why is not None

    @property
    def scratch(self) -> str:
        return self.ctx.capabilities.scratch_dir.rstrip("/")

    async def measure(
        self,
        operation: str,
        command: str,
        read: Callable[[dict[str, list[str]], float], dict[str, Any]],
        extra: dict[str, Any],
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any] | None:
        """Exec ``command`` as ``operation``; ``read(values, outer_s)`` checks its output and
        returns the extras. A wrong output is recorded as an error and None returned (the next
        measurement goes on); a failed call raises StepFailed."""
        ctx = self.ctx

        async def call() -> tuple[ExecResult, float]:
            t0 = time.perf_counter()
            result = await ctx.provider.exec(
                self.sandbox, command, timeout_s=timeout_s or ctx.timeout_s
            )
            return result, time.perf_counter() - t0

        def check(answer: tuple[ExecResult, float]) -> None:
            result, outer_s = answer
            text = result.stdout.decode(errors="replace")
            if result.exit_code != 0:
                tail = (result.stderr or result.stdout)[-200:].decode(errors="replace")
                raise CheckFailed("NonZeroExit", f"exit code {result.exit_code}: {tail}",
                                  exit_code=result.exit_code)  # fmt: skip
            got = read(key_values(text), outer_s)
            kernel_s = got.get("kernel_s")
            if kernel_s is not None and kernel_s > outer_s * CLOCK_SLACK + CLOCK_SLACK_S:
                raise CheckFailed(
                    "Implausible",
                    f"the work took {kernel_s:.4f} s by the sandbox's clock, longer than the "
                    f"{outer_s:.4f} s exec that contained it",
                )
            extra.update(got)

        try:
            await ctx.timed(
                operation,
                call,
                sandbox=self.sandbox,
                check=check,
                extra=extra,
                timeout_s=timeout_s,
            )
        except StepFailed as exc:
            if isinstance(exc.__cause__, CheckFailed):
                return None
            raise
        return extra

    # -- CPU --------------------------------------------------------------------------------

    async def cpu_sha256(self) -> None:
        if self.skip("cpu_sha256"):
            return
        size = self.settings.cpu_mb * MIB
        started_at = utc_now_iso()

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            digest = _one(values, "digest")
            if digest != zeros_digest(size):
                raise CheckFailed("WrongAnswer", f"sha256 of zeros came out {digest[:64]!r}")
            seconds = inner_seconds(values)
            rate = _plausible("sha256_mib_per_s", size / MIB / seconds)
            return {"kernel_s": seconds, "sha256_mib_per_s": rate}

        done = await self.measure(
            "cpu_sha256",
            SHA256.format(size=size),
            read,
            {"cpu_mb": self.settings.cpu_mb},
        )
        if done is not None:
            self.single_mib_per_s = done["sha256_mib_per_s"]
            self.ctx.record_span(
                "cpu_kernel", started_at=started_at, duration_s=done["kernel_s"],
                sandbox=self.sandbox,
            )  # fmt: skip

    async def cpu_python(self) -> None:
        if self.skip("cpu_python"):
            return
        n = self.settings.py_loops

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            if _one(values, "sum") != str(squares_sum(n)):
                raise CheckFailed("WrongAnswer", "the loop's sum is not the closed form's")
            seconds = inner_seconds(values)
            return {"kernel_s": seconds, "py_loops_per_s": _plausible("py_loops_per_s",
                                                                       n / seconds)}  # fmt: skip

        await self.measure(
            "cpu_python",
            python_command(PY_LOOP, n),
            read,
            {"python_version": self.found["python_version"]},
        )

    def parallel_processes(self) -> int:
        if self.settings.processes:
            return self.settings.processes
        return max(1, min(256, max(self.found["nproc"] or 1, math.ceil(self.ctx.spec.cpus))))

    async def cpu_parallel(self) -> None:
        if self.skip("cpu_parallel"):
            return
        size, processes = self.settings.cpu_mb * MIB, self.parallel_processes()

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            digests = values.get("digest", [])
            if len(digests) != processes:
                raise CheckFailed(
                    "UnexpectedOutput", f"{len(digests)} of {processes} processes answered"
                )
            if any(d != zeros_digest(size) for d in digests):
                raise CheckFailed("WrongAnswer", "a process's sha256 of zeros is wrong")
            seconds = inner_seconds(values)
            rate = _plausible("parallel_mib_per_s", processes * size / MIB / seconds)
            got: dict[str, Any] = {"kernel_s": seconds, "parallel_mib_per_s": rate}
            if self.single_mib_per_s:
                got["speedup"] = rate / self.single_mib_per_s
            return got

        await self.measure(
            "cpu_parallel",
            PARALLEL.format(size=size, processes=processes),
            read,
            {"cpu_mb": self.settings.cpu_mb, "processes": processes, "nproc": self.found["nproc"]},
        )

    # -- memory -----------------------------------------------------------------------------

    async def mem_bandwidth(self) -> None:
        mb, reps = self.settings.mem_mb, self.settings.mem_repeats
        wanted = mb * MIB * reps
        if self.skip("mem_bandwidth"):
            return
        if self.has("python3"):
            method, command = "python_memcpy", python_command(PY_MEMCPY, mb, reps)
        else:
            method, command = "dd_zero", DD_ZERO.format(mb=mb, count=reps)

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            if method == "python_memcpy" and _one(values, "ok") != "1":
                raise CheckFailed("WrongAnswer", "the copy differs from its source")
            if method == "dd_zero" and _one(values, "rc") != "0":
                raise CheckFailed("NonZeroExit", f"dd exited {_one(values, 'rc')}")
            moved = _number(values, "bytes")
            if moved != wanted:
                raise CheckFailed("WrongAnswer", f"moved {moved:.0f} bytes, not {wanted}")
            seconds = inner_seconds(values)
            rate = _plausible("mem_gib_per_s", moved / (1 << 30) / seconds)
            return {"kernel_s": seconds, "mem_gib_per_s": rate}

        await self.measure("mem_bandwidth", command, read, {"mem_method": method})

    # -- disk -------------------------------------------------------------------------------

    async def disk_seq_write(self) -> None:
        mb = self.settings.write_mb
        path = f"{self.scratch}/sandbox-bench-seq-write.bin"
        if self.skip("disk_seq_write"):
            return
        if self.has("python3"):
            method, command = "python", python_command(PY_SEQ_WRITE, path, mb)
        else:
            method, command = "dd_zeros", DD_SEQ_WRITE.format(path=shlex.quote(path), mb=mb)

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            if method == "dd_zeros" and _one(values, "rc") != "0":
                raise CheckFailed("NonZeroExit", f"dd exited {_one(values, 'rc')}")
            size = _number(values, "size")
            if size != mb * MIB:
                raise CheckFailed("WrongAnswer", f"the file has {size:.0f} bytes, not {mb} MiB")
            seconds = inner_seconds(values)
            rate = _plausible("seq_write_mib_per_s", mb / seconds)
            return {"kernel_s": seconds, "seq_write_mib_per_s": rate}

        await self.measure("disk_seq_write", command, read, {"io_method": method})

    async def disk_random(self, operation: str) -> None:
        if self.skip(operation):
            return
        reading = operation == "disk_rand_read"
        mb = self.settings.io_file_mb
        ops = self.settings.read_ops if reading else self.settings.write_ops
        path = f"{self.scratch}/sandbox-bench-random-io.bin"
        command = python_command(
            PY_RANDOM_IO, "read" if reading else "write", path, mb, ops, self.ctx.item.iteration
        )
        wanted = min(ops, mb * MIB // 4096)

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            done = _number(values, "ops")
            if done != wanted:
                raise CheckFailed("WrongAnswer", f"{done:.0f} of {wanted} 4 KiB I/Os completed")
            seconds = inner_seconds(values)
            key = "rand_read_iops" if reading else "rand_write_iops"
            got: dict[str, Any] = {"kernel_s": seconds, key: _plausible(key, done / seconds)}
            if reading:
                got["io_direct"] = _one(values, "direct") == "1"
            return got

        await self.measure(operation, command, read, {"io_method": "python", "io_file_mb": mb})

    # -- network ----------------------------------------------------------------------------

    def _net_timeout(self) -> float:
        return min(self.ctx.timeout_s, self.settings.net_timeout_s + 5.0)

    async def net_dns(self) -> None:
        name = self.settings.dns_name
        if self.skip("net_dns"):
            return
        if self.has("getent") and self.found["clock"]:
            tool, command = "getent", GETENT.format(name=shlex.quote(name))
        else:
            tool, command = "python3", python_command(PY_DNS, name)

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            if _one(values, "rc") != "0":
                answer = (values.get("answer") or [""])[-1]
                raise CheckFailed("Unreachable", f"{name} did not resolve ({tool}): {answer}")
            seconds = inner_seconds(values)
            return {"kernel_s": seconds, "dns_s": seconds}

        await self.measure(
            "net_dns", command, read, {"net_tool": tool}, timeout_s=self._net_timeout()
        )

    async def net_https(self) -> None:
        url = self.settings.https_url
        if self.skip("net_https"):
            return
        timeout = self.settings.net_timeout_s
        if self.has("curl"):
            tool, command = "curl", CURL.format(timeout=f"{timeout:g}", url=shlex.quote(url))
        else:
            tool, command = "python3", python_command(PY_HTTPS, url, timeout)

        def read(values: dict[str, list[str]], outer_s: float) -> dict[str, Any]:
            rc, code = _one(values, "rc"), (values.get("code") or ["0"])[-1]
            status = int(code) if code.isdigit() else 0
            if rc != "0" or not 100 <= status < 400:
                lines = [ln for ln in values.get("error", []) if ln]
                raise CheckFailed(
                    "Unreachable",
                    f"{url}: {tool} exited {rc}, HTTP status {status or 'none'}"
                    + (f": {lines[-1]}" if lines else ""),
                    http_status=status or None,
                )
            seconds = _number(values, "total")
            if seconds <= 0:
                raise CheckFailed("Implausible", f"the fetch took {seconds!r} s")
            return {"kernel_s": seconds, "https_s": seconds, "http_status": status}

        await self.measure(
            "net_https", command, read, {"net_tool": tool}, timeout_s=self._net_timeout()
        )


__all__ = ["GuestPerf", "GuestPerfSettings", "key_values", "parse_inspect", "zeros_digest"]
