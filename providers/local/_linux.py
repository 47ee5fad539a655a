"""Linux system calls that Python 3.11's ``os`` module lacks, through ctypes on the C library.

Pure Python on purpose: a user's machine need not have a compiler (``os.unshare`` and
``os.setns`` only arrive in Python 3.12).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import platform
import socket
import struct

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MNT_DETACH = 0x2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}


def _check(result: int, what: str, path: str | None = None) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount {fstype or 'bind'} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    number = _PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old)), "pivot_root")


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot: with the pid, a name no later
    process reuses), or None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def prctl(option: int, arg: int = 0) -> None:
    _check(
        _libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                    ctypes.c_ulong(0), ctypes.c_ulong(0)),
        f"prctl({option})",
    )  # fmt: skip


def set_comm(name: str) -> None:
    """Set this thread's name as ``ps`` shows it (PR_SET_NAME, 15 bytes at most)."""
    raw = ctypes.create_string_buffer(name.encode()[:15])
    _check(_libc.prctl(ctypes.c_int(PR_SET_NAME), raw, 0, 0, 0), "prctl(PR_SET_NAME)")


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def load_seccomp(bpf: bytes) -> None:
    if native is not None:  # sbnative.c ``sb_seccomp``
        _native_check(native.sb_seccomp(bpf, len(bpf), _native_err, len(_native_err)))
        return
    _load_seccomp(bpf)


def _load_seccomp(bpf: bytes) -> None:
    """Install a compiled classic-BPF seccomp program (8 bytes per instruction) on this
    thread; inherited by every process it forks from now on. Needs no_new_privs (or
    CAP_SYS_ADMIN). The program is compiled once by libseccomp (seccomp.py); loading it is
    one prctl, so each sandbox pays microseconds, not libseccomp's milliseconds."""
    program = ctypes.create_string_buffer(bpf, len(bpf))
    fprog = _SockFprog(len(bpf) // 8, ctypes.addressof(program))
    seccomp_mode_filter = 2
    _check(
        _libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(seccomp_mode_filter),
                    ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)),
        "prctl(PR_SET_SECCOMP)",
    )  # fmt: skip


def set_title(title: str) -> None:
    """:func:`set_cmdline` and :func:`set_comm` (in C with the helper: sbnative.c
    ``sb_title``)."""
    if native is not None:
        _native_check(native.sb_title(title.encode(), None, None, _native_err,
                                      len(_native_err)))  # fmt: skip
        return
    set_cmdline(title)
    set_comm(title)


def set_cmdline(title: str, stat: str | None = None) -> None:
    """Make ``/proc/self/cmdline`` read ``title`` and ``/proc/self/environ`` empty, so that a
    sandbox's processes do not show the host's interpreter, paths and environment.

    Overwrites the argument and environment strings the kernel placed on the initial stack
    (their addresses are fields 48-51 of /proc/self/stat), as the setproctitle package does:
    the clean way, prctl(PR_SET_MM_ARG_START), needs CAP_SYS_RESOURCE, which hosts such as
    this VM withhold. Python keeps its own copies of argv and environ, so nothing reads the
    old strings afterwards. ``stat``: the text of /proc/self/stat if already read."""
    if stat is None:
        with open("/proc/self/stat") as f:
            stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
    raw = title.encode()[: max(0, arg_end - arg_start - 1)]
    ctypes.memset(arg_start, 0, arg_end - arg_start)
    ctypes.memmove(arg_start, raw, len(raw))
    if env_end > env_start:
        ctypes.memset(env_start, 0, env_end - env_start)


#: The compiled helper (sbnative.c) once :func:`load_native` has loaded it, else None.
native: ctypes.CDLL | None = None
#: The helper's ABI this module speaks (``sb_abi()`` in sbnative.c).
NATIVE_ABI = 3
_native_err = ctypes.create_string_buffer(1024)


def load_native(path: str) -> str:
    """Load the compiled helper (built by scripts/setup.sh); returns "native" or, when the
    Python path stays in use, why."""
    global native
    try:
        lib = ctypes.CDLL(path)
        abi = lib.sb_abi()
    except (OSError, AttributeError) as exc:
        return f"python ({path}: {exc})"
    if abi != NATIVE_ABI:
        return f"python ({path} speaks ABI {abi}, not {NATIVE_ABI}: run scripts/setup.sh)"
    string, size = ctypes.c_char_p, ctypes.c_size_t
    lib.sb_build.argtypes = (string, string, string, string, ctypes.c_int, string,
                             ctypes.c_char_p, size)  # fmt: skip
    lib.sb_harden.argtypes = (string, size, ctypes.c_char_p, size)
    lib.sb_seccomp.argtypes = (string, size, ctypes.c_char_p, size)
    long_p = ctypes.POINTER(ctypes.c_longlong)
    lib.sb_enter.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.c_int, string,
                             long_p, long_p, ctypes.c_char_p, size)  # fmt: skip
    lib.sb_title.argtypes = (string, long_p, long_p, ctypes.c_char_p, size)
    lib.sb_isolate.argtypes = (string, string, ctypes.POINTER(ctypes.c_int), ctypes.c_char_p,
                               size)  # fmt: skip
    native = lib
    return "native"


def _native_check(result: int) -> None:
    if result != 0:
        raise OSError(-result, _native_err.value.decode(errors="replace"))


def native_enter(lifeline_fd: int, keep: list[int], title: str) -> tuple[int, int]:
    """PID 1's first steps in C (sbnative.c ``sb_enter``); returns its host pid and start
    time."""
    assert native is not None
    fds = (ctypes.c_int * len(keep))(*keep)
    host_pid, starttime = ctypes.c_longlong(), ctypes.c_longlong()
    _native_check(native.sb_enter(lifeline_fd, fds, len(keep), title.encode(),
                                  ctypes.byref(host_pid), ctypes.byref(starttime),
                                  _native_err, len(_native_err)))  # fmt: skip
    return host_pid.value, starttime.value


def native_isolate(d: str, procs: list[str]) -> int:
    """Join the cgroups, listen on ``<d>/agent.sock``, enter new mount, uts, ipc and net
    namespaces, in C (sbnative.c ``sb_isolate``); returns the listening socket's fd."""
    assert native is not None
    packed = "".join(f"{path}\0" for path in procs).encode() + b"\0"
    listener = ctypes.c_int(-1)
    _native_check(native.sb_isolate(os.fsencode(d), packed, ctypes.byref(listener),
                                     _native_err, len(_native_err)))  # fmt: skip
    return listener.value


def native_build(d: str, lower: str, dirs: list[str], etc_mask: str | None, userns: bool,
                 hostname: str) -> None:  # fmt: skip
    """sandbox_init._build in C (sbnative.c ``sb_build``)."""
    assert native is not None
    packed = "".join(f"{name}\0" for name in dirs).encode() + b"\0"
    _native_check(native.sb_build(os.fsencode(d), os.fsencode(lower), packed,
                                  os.fsencode(etc_mask or ""), int(userns), hostname.encode(),
                                  _native_err, len(_native_err)))  # fmt: skip


def native_harden(bpf: bytes | None) -> None:
    """sandbox_init.harden in C (sbnative.c ``sb_harden``)."""
    assert native is not None
    program = bpf or b""
    _native_check(native.sb_harden(program, len(program), _native_err, len(_native_err)))


def pipe_holding(data: bytes) -> int:
    """The read end of a new pipe that already holds ``data`` (its write end closed), for a
    program started next to read in full; the pipe is enlarged first if ``data`` exceeds
    it (writing it all before the start must not block)."""
    r, w = os.pipe()
    try:
        if len(data) > 65536:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, len(data))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return r


def spawn_with_fds(path: str, name: str, fds: list[int], first: int,
                   stdio: int | None = None) -> int:  # fmt: skip
    """``posix_spawn`` (vfork + exec) of ``path`` with argv ``[name]`` and an empty
    environment, ``fds[i]`` on descriptor ``first + i`` and, when given, ``stdio`` on 0-2;
    this process's other descriptors are close-on-exec, so the program gets only these. The
    sources are duplicated above every target first, so that no dup2 of the list
    overwrites a source a later one still needs. Returns the pid."""
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, first + len(fds)) for fd in fds]
    try:
        actions = [] if stdio is None else [(os.POSIX_SPAWN_DUP2, stdio, n) for n in (0, 1, 2)]
        actions += [(os.POSIX_SPAWN_DUP2, fd, first + i) for i, fd in enumerate(high)]
        return os.posix_spawn(path, [name], {}, file_actions=actions)
    finally:
        for fd in high:
            os.close(fd)


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32))  # fmt: skip


def inherit_all_caps() -> int:
    """Make the inheritable capability set equal to the permitted one (capset); returns the
    inheritable set it had. Done by the zygote before it cuts the bounding set, so that a
    program it execs as root (sb-init) gets every capability a forked child would hold
    (root's execve grants inheritable | bounding). That program must put the returned set
    back before it starts anything (sbinit.c does, from its spec's ``capinh``)."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(header), data), "capget")
    old = data[0].inheritable | data[1].inheritable << 32
    for half in data:
        half.inheritable = half.permitted
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    return old


def drop_bounding_caps(keep: frozenset[int], last_cap: int) -> None:
    """Remove every capability not in ``keep`` from the bounding set: programs the sandbox
    executes as root then never hold them, whatever their file capabilities say."""
    for cap in range(last_cap + 1):
        if cap not in keep:
            prctl(PR_CAPBSET_DROP, cap)


def loopback_up() -> None:
    """Bring ``lo`` up in the current network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))


#: Linux capability numbers (linux/capability.h) that a sandbox keeps: Docker's default set.
CAPS_KEPT = frozenset(
    {
        0,  # CAP_CHOWN
        1,  # CAP_DAC_OVERRIDE
        3,  # CAP_FOWNER
        4,  # CAP_FSETID
        5,  # CAP_KILL
        6,  # CAP_SETGID
        7,  # CAP_SETUID
        8,  # CAP_SETPCAP
        10,  # CAP_NET_BIND_SERVICE
        13,  # CAP_NET_RAW
        18,  # CAP_SYS_CHROOT
        29,  # CAP_AUDIT_WRITE
        31,  # CAP_SETFCAP
    }
)
