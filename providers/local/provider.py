"""``local``: real sandboxes on this Linux machine (namespaces, overlayfs, cgroups, seccomp).

What each operation means on this provider
-------------------------------------------

* **create**: sends the zygote (zygote.py, one small pre-imported Python process per
  provider) a spawn request carrying one end of a fresh socket pair, and queues a ping on
  the other end, then makes the sandbox's directory (``meta.json`` first) and its cgroups
  (memory, pids and cpu limits from the spec) on a thread while the zygote forks the
  sandbox's PID 1 into a new pid namespace. PID 1 waits for them, joins the cgroups,
  binds the agent's socket, enters new mount, uts, ipc and
  net namespaces, starts the exec agent (sbagent.c, exec'd, when scripts/setup.sh could
  compile it, else agent.py, forked: ``agent`` in the environment and capability notes
  says which) and, while the agent starts and reads the ping, mounts the root and
  ``pivot_root``\\ s into it (sandbox_init.py lists the steps; in C
  when scripts/setup.sh could compile sbnative.c, else in Python: ``pid1_root`` in the
  environment and capability notes says which), then hardens itself and the agent
  (capability bounding set, no_new_privs, not dumpable, seccomp; PID 1's own seccomp
  filter is loaded just after it lets the agent answer). create returns when the agent has
  answered the ping: the sandbox is ready to exec (the runner still measures readiness as
  the first exec). Nothing is made ahead of the timed create: every directory, cgroup,
  namespace and mount of a sandbox is made inside it.

  The root is an allow-list: an overlay of a skeleton (the host's top-level layout, with
  empty root, home, tmp, var, srv, opt, mnt...) plus, per host system directory (usr, etc,
  and lib*/bin/sbin where those are real directories), an overlay of that directory. The
  sandbox therefore sees the host's programs and libraries (bash, coreutils, python3) and
  none of the host's /root, /home, /tmp, /opt, /var/lib, /work, the harness or this
  provider's state. All its writes, including to /usr and /etc, land in its own layer
  (``<state>/sandboxes/<id>/fs/upper``). /tmp is a private tmpfs; /proc, /dev and the
  hostname (``<id>``) are its own; its network namespace has only ``lo``. A mask layer over
  the host's /etc locks every password hash (shadow, gshadow) and hides the SSH host keys and
  /etc/ssl/private. With the ``rootfs`` setting, that directory (e.g. made by debootstrap)
  is the single lower layer instead. PID 1 and the agent show as ``sb-init`` and
  ``sb-agent`` with an empty environment (the zygote starts with a minimal one, and PID 1
  blanks its argument and environment strings).
* **exec**: the agent runs the argv (or ``/bin/sh -c`` for a string) as root, cwd /root,
  env PATH/HOME=/root/LANG=C.UTF-8, stdin /dev/null, in its own session (``posix_spawn``);
  returns exit code (128+N when killed by signal N; 127/126 when the program is missing/not
  executable, as a shell would), stdout and stderr separately. When the command exits,
  output still written by background processes it left holding its pipes is awaited 50 ms,
  then dropped (they keep running). At ``timeout_s`` its whole process group is SIGKILLed
  and OperationTimeout raised.
* **write_file / read_file**: through the agent, so they see the sandbox's merged view
  (lower layers, whiteouts, /tmp). Parents are created on write. A missing file is NotFound.
* **pause / resume**: the cgroup freezer (v1 ``freezer.state`` or v2 ``cgroup.freeze``),
  polled until the kernel reports the group frozen (v1: FROZEN is re-written while the group
  stays FREEZING, see cgroups.freeze). Processes and memory survive; an exec or file
  operation sent while paused completes after resume or times out. resume returns the same
  handle.
* **checkpoint**: freezes the sandbox, copies its writable layer (every write outside /tmp,
  /dev, /proc, /sys) with the fastest method the state directory's filesystem allows
  (layers.py: btrfs snapshot; ``cp -a --reflink=always`` on XFS/btrfs; else ``cp -a``, an
  in-kernel copy of each file; whiteouts and opaque directories survive), then thaws it (a
  sandbox paused beforehand stays paused; copies that overlap, e.g. two checkpoints at once,
  share the freeze: the last to end thaws). Memory and processes are not captured. Without
  cgroups (user-namespace mode) the copy is taken without freezing. The method is in the
  capability notes (``checkpoint_method``).
* **restore**: a new sandbox (same spec and labels) whose writable layer starts as a copy of
  the checkpoint's (same method); the checkpoint stays usable. **delete_checkpoint** removes
  it, or a copy a dead process left unfinished (below).
* **list_checkpoints**: the checkpoints in the state directory taken of sandboxes labelled
  with the run (their ``meta.json`` keeps the labels and the owner process), and the copies
  in progress for that run whose owner process is dead. A copy in progress (checkpoint or
  fork) is named ``.<id>.<owner pid>-<owner start time>-<run digest>.partial`` from its
  ``mkdir`` on, so a ``kill -9`` at any moment leaves nothing a reaper cannot attribute;
  a copy whose owner runs is in progress and neither listed nor deleted.
* **fork**: ``count`` new sandboxes (same spec and labels) whose writable layers start as
  copies of the parent's: the parent is frozen while its layer is copied once, further
  children copy that copy while the parent runs on, then all children start at once.
  Filesystem only (``fork_keeps``), copy-on-write where the filesystem has reflinks or
  snapshots, else a copy (``fork_method``). Children and parent are independent afterwards.
* **destroy**: kills PID 1 through the zygote (the kernel then kills everything in its pid
  namespace and the mounts vanish with the mount namespace), thaws it if frozen, waits for the
  exit, removes the cgroups and the directory, and returns only then. What the kernel still
  does afterwards, in its own workers, is freeing the dead network and IPC namespaces
  (``cleanup_net``, ``free_ipc``: measured 10-40 ms each of mostly RCU waiting, per
  sandbox) and the cgroups' last references (``css_free``, well under 1 ms). Idempotent; an
  unknown id is a no-op; works by id for sandboxes of other (dead) harness processes
  (``destroy_by_id``).
* **list_sandboxes**: every sandbox directory in the state directory labelled with the run,
  whichever process made it, alive or left behind, so that a reaper can destroy them.
* **close**: ends the zygote; sandboxes still alive then die with it (none outlives the
  harness: when the harness dies, even by SIGKILL, the zygote sees EOF and cleans up, and
  kills the checkpoint, restore or fork copies still running, which it was told of).

Modes: as root, everything above. Without root, a user-namespace mode (the caller mapped to
root of a user namespace): same isolation and filesystem, but no cgroups, so no pause/resume
(declared unsupported with the reason), no spec limits, checkpoint and fork not frozen; the
sandbox's root cannot modify files of the host's system directories (they belong to an
unmapped user).

Isolation is container-grade (shared kernel). In root mode the sandbox's root is real root
with a reduced capability bounding set (Docker's default set minus CAP_MKNOD), /proc/sys and
friends read-only, and the seccomp filter of seccomp.py (Docker's default profile: no user
or other namespaces, no mount, bpf, perf_event_open, keyctl...). No user namespace: a kernel
bug is a host compromise; treat it as Docker's default, not as a VM.

Design notes (deviations from the first design, and why):

* PID 1 is a direct child of the zygote (``unshare(CLONE_NEWPID)`` + fork + ``setns`` back)
  rather than a grandchild: so it can use PR_SET_PDEATHSIG and die with the zygote even when
  the zygote is SIGKILLed, and no subreaper is needed.
* The writable layer is ``fs/upper/{top,usr,etc,...}`` (one sub-layer per overlay mount) and
  the work dirs ``fs/work/...`` beside it, so that no overlay's upper or work dir lies
  inside another overlay's layer, and a btrfs snapshot of ``fs`` holds upper and work
  together (btrfs refuses overlay upper and work in different subvolumes). One overlay of
  ``skeleton:/`` would save two mounts, but overlayfs refuses a lower layer that contains
  the upper (ELOOP), and the state directory lives on the root filesystem.
* The agent listens on a unix socket (``<dir>/agent.sock``, bound before ``pivot_root``), one
  thread per connection; the provider keeps a pool of connections per sandbox, so concurrent
  execs on one sandbox run in parallel. Its first connection is the create's socket pair.
* Where create's time goes (issue 17; measured on this 2-core PVM-virtualised VM): forking
  a Python process costs in proportion to the memory it has written (page tables and
  copy-on-write faults are slow under PVM: 20 MiB, 1.0 ms to the child running; 1 MiB,
  0.23 ms, in C), hence the small zygote (~5 MiB written: ``-I -S``, no package
  ``__init__``, no threading/subprocess/dataclasses imports, frozen GC); each ext4 metadata
  operation (mkdir, create) costs ~150 us here against 4 us on tmpfs, so only the
  directories overlayfs needs are made (no labels.json; pid file only without cgroups), on
  a thread of the provider while the zygote forks; joining
  a v1 cgroup after an idle gap waited for an RCU grace period (p90 13.8 ms, the old
  bimodal create), hence the favordynmods hierarchy (zygote.py); the agent's start-up
  (fork, thread, first request) overlaps PID 1's mounts; the readiness answer comes straight
  from the agent, not relayed by the zygote. The kernel's own floor, measured in C with the
  same system calls as PID 1 (namespaces, three overlays, proc, dev, tmpfs, lo,
  pivot_root): 2.6 ms p50. Every Python line a freshly forked process runs costs
  copy-on-write faults (~2 us each here, measured in C; PID 1 took ~500 of them), so PID 1's
  steps run in C when scripts/setup.sh could compile sbnative.c (``pid1_root``), the
  cgroups are made with the directory on the provider's thread, and PID 1 loads its
  own seccomp filter after its go (the agent loads its own before it answers). Where a create
  went after that (2026-11-30, load 2; CLOCK_MONOTONIC stamps from each process, p50s of
  60 creates, create 5.3 ms): harness and zygote up to the fork 0.4 ms; the zygote's fork
  0.4; until the child runs 0.7 (placing it on the other vCPU: a halted vCPU here takes up to
  2.4 ms to wake, measured in C; pinning the whole set-up to one vCPU was slower, 7.2 against
  5.3 ms); PID 1's first steps 0.4; cgroup join, agent socket and new namespaces 0.8 (the
  network namespace alone ~0.5, kernel); the agent's fork 0.4; the root's mounts 1.6 (kernel
  time: three overlays ~0.7) while the agent starts, hardens (its seccomp filter ~0.3) and
  reads the ping (1.5); go, answer and wake-up of the harness 0.6. Both paths after the
  agent's fork are equally long. But the stamps cost time themselves, and they hide that a
  create here is CPU-bound: it keeps 1.5 of the 2 vCPUs busy on average (7.0-8.5 ms of CPU,
  summed over every process, for a 4.6-5.8 ms create; /proc/stat around 400 creates), spent
  on copy-on-write faults after the Python forks (~410 in PID 1, ~365 in the agent, ~205 in
  the zygote a create), process exits, mounts, the network namespace, two seccomp filters,
  ext4 directories and the harness's own Python (``perf record -a``). So moving work from
  one process to another does not shorten it, only less work does (tried, 2026-11-30, not
  kept: the network namespace and the overlays made on the provider's thread, fsmount, and
  handed to PID 1 with SCM_RIGHTS, setns and move_mount; the agent forked before PID 1
  isolates itself, joining it with a pidfd setns. The stamps said 6.0 -> 4.8 ms; creates of
  the two versions interleaved one by one said -0.36, -0.34, -0.13, -0.21 and then +0.12 ms,
  95 % interval +0.06 to +0.16, over 1,500 pairs). Less work, measured: a page fault costs
  ~3.3 us on this VM (8 MiB of fresh anonymous pages touched: 6.8 ms), so the agent is now a
  compiled program (sbagent.c) that PID 1 starts with posix_spawn instead of a fork of
  itself: the agent's faults before its answer 356 -> 35, its CPU 1.51 -> 0.88 ms, PID 1's
  faults 405 -> 325 (it no longer re-faults the pages it shared with a forked child); creates
  of the two versions interleaved one by one: -0.44 ms median paired difference (95 %
  -0.49 to -0.35, 800 pairs), and -0.31 (-0.37 to -0.24) in a second run. Loading the
  seccomp filter was half of the compiled agent's CPU: the kernel emulates the filter for
  every system call number to build its action cache, linear in libseccomp's default
  layout; compiled as a binary tree, loading takes 186 us instead of 685 (seccomp.py), a
  further 0.2 ms of CPU in the agent and as much in PID 1. CPU per create after both
  (schedstat of each process at ready, p50 of 150): harness 1.3 ms, zygote 0.6, PID 1 2.3,
  agent 0.55, for a 3.2-3.4 ms create. Left then: the Python fork's copy-on-write faults,
  ~325 in PID 1 and ~143 in the zygote after each fork. So PID 1 is now a compiled program
  too (sbinit.c, with sbnative.c's steps built in) that the zygote starts with posix_spawn
  (vfork and exec): faults 323 -> 40 in PID 1 and 137 -> 2 in the zygote, CPU 2.5 -> 1.9 ms
  in PID 1 and 0.63 -> 0.28 in the zygote; creates interleaved one by one with the version
  before: -1.01 ms median paired difference (95 % -1.05 to -0.95, 800 pairs; p50 4.56 ->
  3.54 ms). An exec'd program would lose the capabilities the zygote cut from the bounding
  set (a fork keeps them), so the zygote first copies its permitted set into its
  inheritable one, which root's exec adds back, and sb-init restores the inheritable set
  first thing: the agent and every command hold the bounding set only, as before (the
  native-against-Python test compares every process's capability sets). A dead agent is
  restarted by a fork of sb-init and an exec of sb-agent through a descriptor opened
  before pivot_root. What remains of a create is mostly kernel work: the network namespace
  (~0.6 ms), the overlays (~0.7 ms), the exec of two static programs, the directory and
  cgroups (the provider's thread), and the harness's own Python (~1.3 ms of CPU).
* create p50 with the native steps against the Python ones (benchmarks/test_local_bench.py
  ``-k test_create``, runs alternating with the version before, 2026-11-30): 5.6 against
  6.5 ms (medians of three runs, load 2.3-2.7; p90 at most 1.34x p50), 5.9 against 7.4 (six
  runs, load 2.6-2.8); at load 4-8 runs swing between 9 and 18 ms
  and the versions do not separate (three runs each: 10.2 against 14.9, 13.0 against 10.5).
* Measured p50 on the 2-core dev VM (benchmarks/test_local_bench.py), median of three runs
  alternating with the version before, load average 0.7-1.8 (2026-11-29; before -> now):
  create + first exec 13.3 -> 9.5 ms; create alone 7.9 (p90 8.7-15.0); exec ``true`` 0.94
  -> 0.83; checkpoint of 50 MiB on ext4 52.3 (tar) -> 33.1 (``cp -a``); restore of 50 MiB +
  first exec 68.5 -> 29.2; destroy 5.0; fork of a 1 MiB layer to 1 child 12.0, to 4 children
  42.2; pause 0.15, resume 0.12 (unchanged). At load 1.9-2.9 the same runs gave create 9.9,
  exec 0.92, checkpoint 36.7, restore 36.0. On XFS (reflink) and btrfs (snapshot) image
  files a checkpoint of 50 MiB took 6.0 and 5.2 ms, restore + first exec 15.4 and 16.1.
  The create goal of 5 ms is not met: the same system calls in C take 2.6 ms p50 in the
  same conditions; the rest is CPython's share (a fork of the 5 MiB zygote reaches its
  child in 1.2 ms against 0.36 ms for a 6 MiB C process: its after-fork work and the
  copy-on-write faults of every object it touches, slow under PVM; then interpreting PID 1's
  and the agent's steps) and the hand-offs between the harness, the zygote, PID 1 and the
  agent (each a wake-up on the other vCPU). (Figures of 2026-11-29, before the native steps
  above.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import stat as stat_module
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from providers.base import (
    REQUIRED_OPS,
    RUN_LABEL,
    Capabilities,
    CheckpointCaptures,
    CheckpointRef,
    Command,
    ExecResult,
    Op,
    PauseKind,
    Provider,
    RestoreTarget,
    Sandbox,
    SandboxSpec,
)
from providers.errors import (
    NotFound,
    OperationTimeout,
    ProtocolError,
    ProviderError,
    SandboxCrashed,
    Unavailable,
    Unsupported,
)
from providers.local import _linux as L
from providers.local import agent, cgroups, layers, sandbox_init, seccomp, zygote
from providers.local.layers import remove_tree
from providers.settings import SettingError, parse, setting

PROVIDER_ID = "local"
CHECKPOINT_METHODS = ("auto", *layers.METHODS)
#: Where no state directory or root may live: kernel interfaces, not storage.
FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")
#: Host top-level directories that are overlaid (read-only lower) when they are real dirs.
SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: Empty directories of the skeleton (mode), beside the host's top-level symlinks.
SKELETON_DIRS = {
    "root": 0o700, "home": 0o755, "tmp": 0o1777, "var": 0o755, "var/tmp": 0o1777,
    "var/log": 0o755, "var/cache": 0o755, "var/lib": 0o755, "var/spool": 0o755,
    "var/mail": 0o755, "var/opt": 0o755, "var/local": 0o755, "srv": 0o755, "mnt": 0o755,
    "media": 0o755, "opt": 0o755, "run": 0o755, "run/lock": 0o1777, "proc": 0o555,
    "sys": 0o555, "dev": 0o755, "boot": 0o755,
}  # fmt: skip
SKELETON_LINKS = {"var/run": "/run", "var/lock": "/run/lock"}
#: Host /etc files whose secrets the sandbox must not read: copied with every password
#: field locked ("!") ...
ETC_SANITIZED = ("shadow", "shadow-", "gshadow", "gshadow-")
#: ... or hidden (a whiteout in a mask layer above the host's /etc).
ETC_HIDDEN_GLOBS = ("ssh/ssh_host_*_key", "ssl/private")
SANDBOX_ID = re.compile(r"^sb-[0-9a-f]{12}$")
CHECKPOINT_ID = re.compile(r"^ck-[0-9a-f]{12}$")
#: A layer copy in progress in ``<state>/checkpoints`` (a checkpoint, or a fork's copy):
#: ``.<stem>.<owner pid>-<owner start time>-<run key>.partial`` (see _partial_name).
PARTIAL_ID = re.compile(
    r"^\.(?:ck-[0-9a-f]{12}|fork-[0-9a-f]{12}-\d+)\.(\d+)-(\d+)-([0-9a-f]{16})\.partial$"
)
META_FORMAT = "providers.local/1"
ZYGOTE_START_TIMEOUT_S = 20.0
READY_TIMEOUT_S = 30.0
#: The compiled part of PID 1 (sbnative.c), built by scripts/setup.sh when a C compiler is
#: present; without it PID 1 runs the same steps in Python.
NATIVE_LIB = Path(__file__).resolve().parents[2] / "build" / "native" / "sbnative.so"
#: The compiled exec agent (sbagent.c), built beside it; without it each sandbox forks the
#: Python agent (agent.py).
NATIVE_AGENT = NATIVE_LIB.with_name("sb-agent")
#: The compiled PID 1 (sbinit.c), built beside them; the zygote starts it with posix_spawn
#: instead of forking itself (it needs sb-agent too; without either: a forked PID 1).
NATIVE_INIT = NATIVE_LIB.with_name("sb-init")
FILE_TIMEOUT_S = 120.0
#: Extra time the provider waits beyond an exec's own timeout for the agent's answer.
EXEC_GRACE_S = 0.5


#: What each layer-copy method means, for the capability notes.
METHOD_NOTES = {
    "btrfs": "btrfs subvolume snapshot of the writable layer (constant time, copy-on-write)",
    "reflink": "cp -a --reflink=always: files share their blocks, copy-on-write",
    "copy": "cp -a (in-kernel copy_file_range of every byte; the filesystem has no reflinks)",
    "tar": "tar archive of the writable layer, with xattrs",
}
FORK_METHODS = {"btrfs": "copy-on-write", "reflink": "copy-on-write", "copy": "copy",
                "tar": "copy"}  # fmt: skip

# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LocalSettings:
    """``[providers.local]``: each key declared once (providers/settings.py)."""

    state_dir: Path | None = setting(
        None,
        help="directory for sandboxes, checkpoints and layers (default "
        "/var/lib/sandbox-bench/local as root, else ~/.local/state/sandbox-bench/local)",
        example="/var/lib/sandbox-bench/local",
    )
    rootfs: Path | None = setting(
        None,
        help="a root directory (e.g. made by debootstrap) used as the sandboxes' only lower "
        "layer instead of the host's own /usr and /etc",
    )
    checkpoint_method: str = setting(
        "auto",
        help="how a writable layer is copied (checkpoint, restore, fork); auto picks the "
        "fastest the state directory's filesystem allows",
        choices=CHECKPOINT_METHODS,
    )
    seccomp: bool = setting(
        True,
        help="apply the syscall filter modelled on Docker's default seccomp profile to every "
        "sandbox process (needs libseccomp; its absence is declared, not an error)",
    )
    favordynmods: bool = setting(
        True,
        help="while open, hold a private cgroup v1 hierarchy mounted with favordynmods so "
        "that joining a sandbox's cgroups skips an RCU grace period (root with cgroups only)",
    )
    native: bool = setting(
        True,
        help="use the compiled parts scripts/setup.sh builds into build/native when they are "
        "there: sb-init as each sandbox's PID 1, sb-agent as its exec agent, sbnative.so for "
        "the root's steps; false: always the Python paths",
    )

    def __post_init__(self) -> None:
        for name in ("state_dir", "rootfs"):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(os.path.abspath(value.expanduser()))
            object.__setattr__(self, name, path)
            if re.search(r"[,:\n\\]", str(path)):
                raise SettingError(f"{name} must not contain , : \\ or a newline: {str(path)!r}")
            try:
                real = os.path.realpath(path)
            except OSError:  # e.g. /proc/1/root: unreadable links are refused below anyway
                real = str(path)
            for forbidden in FORBIDDEN_ROOTS:
                if any(p == forbidden or p.startswith(forbidden + "/") for p in (str(path), real)):
                    raise SettingError(f"{name} must not be under {forbidden}: {str(path)!r}")


# -- host detection ---------------------------------------------------------------------------


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, fs type) of the filesystem holding ``path``."""
    real = os.path.realpath(path)
    best = ("/", "")
    for mount_point, fstype, _ in cgroups._mountinfo():
        inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, fstype)
    return best


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox-bench/local")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "sandbox-bench" / "local"


def _probe_reflink(directory: Path) -> bool:
    src = directory / f".reflink-probe-{os.getpid()}"
    dst = directory / f".reflink-probe-{os.getpid()}.copy"
    try:
        src.write_bytes(b"x" * 4096)
        result = subprocess.run(
            ["cp", "--reflink=always", str(src), str(dst)], capture_output=True, check=False
        )
        return result.returncode == 0
    except OSError:
        return False
    finally:
        for p in (src, dst):
            with contextlib.suppress(OSError):
                p.unlink()


@dataclass(frozen=True)
class HostFacts:
    """What this host offers, detected when the provider is constructed."""

    root: bool
    mode: str  # "root" | "userns"
    kernel: str
    #: Whether /proc/filesystems lists overlay (it may also be a module loaded on first use).
    overlay: bool
    cgroups: cgroups.Layout
    state_fs: str
    userns_reason: str = ""
    notes: dict[str, str] = field(default_factory=dict)


def detect_host() -> HostFacts:
    root = os.geteuid() == 0
    with open("/proc/filesystems") as f:
        overlay = any(line.split()[-1] == "overlay" for line in f if line.strip())
    userns_reason = ""
    if not root:
        try:
            with open("/proc/sys/user/max_user_namespaces") as f:
                if int(f.read()) == 0:
                    userns_reason = "user namespaces are disabled (user.max_user_namespaces=0)"
        except OSError:
            pass
        with contextlib.suppress(OSError), open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                userns_reason = "kernel.unprivileged_userns_clone=0"
    return HostFacts(
        root=root,
        mode="root" if root else "userns",
        kernel=platform.release(),
        overlay=overlay,
        cgroups=cgroups.detect() if root else cgroups.Layout(
            reason=f"cgroups need root or a delegated subtree; uid {os.geteuid()} has neither"
        ),
        state_fs="",
        userns_reason=userns_reason,
    )  # fmt: skip


# -- per-sandbox handle -----------------------------------------------------------------------


@dataclass
class _Handle:
    sid: str
    dir: Path
    group: cgroups.Group | None
    spec: dict
    host_pid: int | None = None
    starttime: int | None = None
    #: PID 1's exit status once the zygote has reported its exit.
    exit_status: int | None = None
    exited: bool = False
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    dir_fd: int | None = None
    #: Copies of the layer in progress (checkpoint, fork), which hold the sandbox frozen,
    #: and whether it is to stay paused when the last of them ends (:meth:`_frozen`).
    copy_holds: int = 0
    paused: bool = False

    @property
    def socket_path(self) -> str:
        path = str(self.dir / "agent.sock")
        if len(path.encode()) < 100:
            return path
        if self.dir_fd is None:  # sun_path holds 108 bytes: go through /proc/self/fd
            self.dir_fd = os.open(self.dir, os.O_PATH | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.dir_fd}/agent.sock"

    def close_idle(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()

    def close(self) -> None:
        self.close_idle()
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None

    def crashed(self, operation: str, detail: str = "") -> SandboxCrashed:
        if self.exited:
            what = f"sandbox {self.sid} died (PID 1 exit status {self.exit_status})"
        else:
            what = f"sandbox {self.sid}: lost the connection to its agent"
        return SandboxCrashed(
            f"{what}{': ' + detail if detail else ''}",
            provider=PROVIDER_ID,
            operation=operation,
        )

    async def request(
        self, header: dict, body: bytes = b"", *, timeout_s: float, operation: str
    ) -> tuple[dict, bytes]:
        if self.exited:
            raise self.crashed(operation)
        conn = None
        try:
            async with asyncio.timeout(timeout_s):
                if self.idle:
                    conn = self.idle.pop()
                else:
                    conn = await asyncio.open_unix_connection(self.socket_path)
                reader, writer = conn
                writer.write(agent.encode(header, body))
                await writer.drain()
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("agent closed the connection")
                answer = json.loads(line)
                data = await reader.readexactly(answer.get("len", 0))
        except BaseException as exc:
            # A connection whose answer was not read in full is never reused.
            if conn is not None:
                conn[1].close()
            if isinstance(exc, TimeoutError):
                raise OperationTimeout(
                    f"sandbox {self.sid}: no answer within {timeout_s:.1f} s",
                    provider=PROVIDER_ID,
                    operation=operation,
                ) from None
            if isinstance(exc, OSError | EOFError | asyncio.IncompleteReadError):
                self.close_idle()  # they lead to the same agent process, likely gone too
                if not self.dir.exists():
                    raise NotFound(
                        f"sandbox {self.sid} does not exist", provider=PROVIDER_ID,
                        operation=operation,
                    ) from exc  # fmt: skip
                raise self.crashed(operation, str(exc)) from exc
            if isinstance(exc, ValueError):
                raise ProtocolError(
                    f"sandbox {self.sid}: unreadable agent answer: {exc}",
                    provider=PROVIDER_ID,
                    operation=operation,
                ) from exc
            raise
        self.idle.append(conn)
        return answer, data


# -- zygote client ----------------------------------------------------------------------------


class _ZygoteClient:
    def __init__(self, on_exit) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.requests: socket.socket | None = None  # SOCK_SEQPACKET, the zygote's stdin
        self.outbox: list[tuple[bytes, list[int]]] = []  # waiting for room in the socket
        self.pending: dict[int, asyncio.Future] = {}
        self.next_rid = 0
        self.hello: asyncio.Future | None = None
        self.reader_task: asyncio.Task | None = None
        self.on_exit = on_exit
        self.dead = False
        self.error = ""

    async def start(self, config: dict) -> dict:
        package_root = str(Path(__file__).resolve().parents[2])
        # A minimal environment: the sandboxes are forked from this process, and nothing of
        # the harness's (credentials, paths) may show in their /proc/<pid>/environ.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8"}  # fmt: skip
        loop = asyncio.get_running_loop()
        self.hello = loop.create_future()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", "-c", zygote.BOOTSTRAP, package_root,
                stdin=theirs, stdout=asyncio.subprocess.PIPE, env=env,
                start_new_session=True,  # a Ctrl-C to the harness's group must not reach it
                limit=1 << 20,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.sendall(json.dumps(config).encode())  # one packet, before any request
        ours.setblocking(False)
        self.requests = ours
        self.reader_task = asyncio.create_task(self._read())
        try:
            async with asyncio.timeout(ZYGOTE_START_TIMEOUT_S):
                return await asyncio.shield(self.hello)
        except TimeoutError:
            await self.close()
            raise Unavailable(
                "the zygote did not start in time", provider=PROVIDER_ID, operation="open"
            ) from None

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    continue  # not ours (nothing else should write there); keep reading
                if "rid" in message:
                    fut = self.pending.pop(message["rid"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(message)
                elif message.get("event") == "exit":
                    self.on_exit(message["sid"], message["status"])
                elif message.get("event") == "hello":
                    if self.hello and not self.hello.done():
                        self.hello.set_result(message)
                elif message.get("event") == "error":
                    self.error = message.get("error", "")
        finally:
            self.dead = True
            error = Unavailable(
                f"the zygote exited{': ' + self.error if self.error else ''}",
                provider=PROVIDER_ID,
            )
            if self.hello and not self.hello.done():
                self.hello.set_exception(error)
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self.pending.clear()
            self.on_exit(None, None)

    def _write(self, message: dict, fds: list[int] = ()) -> None:
        if self.dead or self.requests is None:
            raise Unavailable("the zygote is not running", provider=PROVIDER_ID)
        data = json.dumps(message, separators=(",", ":")).encode()
        if self.outbox:
            self.outbox.append((data, [os.dup(fd) for fd in fds]))
            return
        try:
            _send(self.requests, data, fds)
        except BlockingIOError:
            # The zygote is behind by a socket buffer's worth of requests: queue in order,
            # keeping our own copies of the descriptors, and send when there is room.
            self.outbox.append((data, [os.dup(fd) for fd in fds]))
            asyncio.get_running_loop().add_writer(self.requests, self._flush)
        except OSError as exc:
            raise Unavailable(f"the zygote is not running: {exc}", provider=PROVIDER_ID) from exc

    def _flush(self) -> None:
        assert self.requests is not None
        while self.outbox:
            data, fds = self.outbox[0]
            try:
                _send(self.requests, data, fds)
            except BlockingIOError:
                return
            except OSError:
                self.outbox.clear()  # the zygote is gone; _read reports it
            else:
                self.outbox.pop(0)
            for fd in fds:
                os.close(fd)
        asyncio.get_running_loop().remove_writer(self.requests)

    def request(self, op: str, fds: list[int] = (), **fields: Any) -> asyncio.Future:
        """Send a request now (with ``fds`` attached); the future resolves with the answer."""
        self.next_rid += 1
        rid = self.next_rid
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        try:
            self._write({"rid": rid, "op": op, **fields}, fds)
        except BaseException:
            self.pending.pop(rid, None)
            raise
        return fut

    async def call(self, op: str, **fields: Any) -> dict:
        return await self.request(op, **fields)

    def send(self, op: str, **fields: Any) -> None:
        with contextlib.suppress(Unavailable):
            self._write({"op": op, **fields})

    async def close(self) -> None:
        if self.proc is None:
            return
        if self.requests is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_writer(self.requests)
            self.requests.close()  # the zygote reads EOF: it cleans up and exits
            self.requests = None
        try:
            async with asyncio.timeout(30):
                await self.proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self.reader_task is not None:
            with contextlib.suppress(Exception):
                await self.reader_task


# -- the provider -----------------------------------------------------------------------------


class LocalProvider(Provider):
    """Sandboxes on this machine; see the module docstring for what each operation means."""

    id: ClassVar[str] = PROVIDER_ID

    #: The ``[providers.local]`` keys, declared once (help, types, checks).
    settings_class: ClassVar[type] = LocalSettings

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        self.config = parse(LocalSettings, dict(self.settings), where="providers.local")
        self.state_dir = self.config.state_dir or _default_state_dir()
        self.rootfs = self.config.rootfs
        self.requested_method: str = self.config.checkpoint_method
        self.host = detect_host()
        self.checkpoint_method: str | None = None
        self.state_fs = ""
        self.lower: str | None = None
        self.etc_mask: str | None = None
        self.system_dirs: list[str] = []
        #: The compiled seccomp filter (None: none) and what it is, or why it is missing.
        self.seccomp_bpf: bytes | None = None
        self.seccomp_note = "not yet detected (the provider is not open)"
        self.favordynmods = "not yet detected (the provider is not open)"
        self.pid1_root = "not yet detected (the provider is not open)"
        self.agent = "not yet detected (the provider is not open)"
        self.pid1 = "not yet detected (the provider is not open)"
        self._sandboxes: dict[str, _Handle] = {}
        self._zygote: _ZygoteClient | None = None

    # -- paths ------------------------------------------------------------------------------

    @property
    def sandboxes_dir(self) -> Path:
        return self.state_dir / "sandboxes"

    @property
    def checkpoints_dir(self) -> Path:
        return self.state_dir / "checkpoints"

    # -- set-up -----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._zygote is not None:
            return
        if self.host.userns_reason:
            raise Unavailable(
                f"not root, and the user-namespace mode is impossible: {self.host.userns_reason}",
                provider=PROVIDER_ID,
                operation="open",
            )
        if self.rootfs is not None and not (self.rootfs / "usr").is_dir():
            raise ValueError(f"local provider: rootfs {self.rootfs} has no usr directory")
        for d in (self.sandboxes_dir, self.checkpoints_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.state_fs = _mount_of(str(self.state_dir))[1]
        self.checkpoint_method = self._choose_checkpoint_method()
        self.etc_mask = None
        if self.rootfs is not None:
            self.lower, self.system_dirs = str(self.rootfs), []
        else:
            self.lower, self.system_dirs = self._prepare_skeleton()
            if self.host.root and "etc" in self.system_dirs:
                self.etc_mask = self._prepare_etc_mask()
        config: dict[str, Any] = {"mode": self.host.mode}
        if self.config.seccomp:
            self.seccomp_bpf, self.seccomp_note = await asyncio.to_thread(seccomp.compile_filter)
        else:
            self.seccomp_bpf, self.seccomp_note = None, "off (setting seccomp = false)"
        if self.seccomp_bpf:
            config["seccomp"] = self.seccomp_bpf.hex()
        dynmods = self.state_dir / ".favordynmods"
        if not self.config.favordynmods:
            self.favordynmods = "off (setting favordynmods = false)"
        elif not self.host.cgroups.roles:
            self.favordynmods = "off: no cgroups"
        else:
            dynmods.mkdir(exist_ok=True)
            config["dynmods_dir"] = str(dynmods)
        if not self.config.native:
            self.pid1_root = "python (setting native = false)"
        else:
            if NATIVE_LIB.is_file():
                config["native"] = str(NATIVE_LIB)
            if NATIVE_AGENT.is_file():
                config["agent_binary"] = str(NATIVE_AGENT)
            if NATIVE_INIT.is_file():
                config["init_binary"] = str(NATIVE_INIT)
        client = _ZygoteClient(self._on_exit)
        hello = await client.start(config)
        if "favordynmods" in hello:
            self.favordynmods = hello["favordynmods"]
        if self.config.native:
            self.pid1_root = hello.get("pid1_root", "python")
            self.agent = hello.get("agent", "python")
            self.pid1 = hello.get("pid1", "python")
            if self.pid1.startswith("native") and not self.pid1_root.startswith("native"):
                # the zygote could not load sbnative.so, but sb-init has its steps built in
                self.pid1_root = "native (compiled into sb-init)"
        else:
            self.agent = "python (setting native = false)"
            self.pid1 = "python (setting native = false)"
        self._zygote = client
        layers.copy_watchers.append(self._watch_copy)

    def _choose_checkpoint_method(self) -> str | None:
        """The layer-copy method (layers.py): the one asked for, refused in one line where
        this state directory cannot do it; for ``auto`` the fastest it can do."""
        btrfs = self.state_fs == "btrfs" and shutil.which("btrfs") is not None
        method = self.requested_method
        where = f"{self.state_dir} is on {self.state_fs or 'an unknown filesystem'}"
        if method == "btrfs" and not btrfs:
            raise ValueError(f"local provider: checkpoint_method btrfs needs a btrfs state_dir "
                             f"and the btrfs tool; {where}")  # fmt: skip
        if method in ("tar", "copy") and shutil.which(method.replace("copy", "cp")) is None:
            raise ValueError(f"local provider: checkpoint_method {method}: the program is missing")
        if method in ("btrfs", "tar", "copy"):
            return method
        reflink = _probe_reflink(self.state_dir)
        if method == "reflink":
            if not reflink:
                raise ValueError(
                    f"local provider: checkpoint_method reflink: cp --reflink=always fails; {where}"
                )
            return "reflink"
        if btrfs and self.host.root:
            return "btrfs"
        if reflink:
            return "reflink"
        if shutil.which("cp"):
            return "copy"
        return "tar" if shutil.which("tar") else None

    def _prepare_skeleton(self) -> tuple[str, list[str]]:
        """The skeleton lower: the host's top-level symlinks and empty directories, built once
        per host layout under ``<state>/lower/<hash>``."""
        plan: list[tuple[str, str, str | int]] = []
        system_dirs: list[str] = []
        with os.scandir("/") as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_symlink():
                    plan.append(("link", entry.name, os.readlink(entry.path)))
                elif entry.name in SYSTEM_DIRS and entry.is_dir():
                    system_dirs.append(entry.name)
                    plan.append(("dir", entry.name, 0o755))
        taken = {name for _, name, _ in plan}
        for name, mode in SKELETON_DIRS.items():
            if name.split("/")[0] not in taken or "/" in name:
                plan.append(("dir", name, mode))
        plan += [("link", name, target) for name, target in SKELETON_LINKS.items()]
        key = hashlib.sha256(json.dumps(plan).encode()).hexdigest()[:12]
        lower = self.state_dir / "lower" / key
        if lower.is_dir():
            return str(lower), system_dirs
        tmp = self.state_dir / "lower" / f".tmp-{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        for kind, name, value in plan:
            path = tmp / name
            if kind == "link":
                if not path.parent.is_dir():
                    continue
                os.symlink(str(value), path)
            else:
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, int(value))
        try:
            os.rename(tmp, lower)
        except OSError:  # another provider built it first
            shutil.rmtree(tmp, ignore_errors=True)
        return str(lower), system_dirs

    def _prepare_etc_mask(self) -> str:
        """A layer above the host's /etc that locks password hashes and hides private keys,
        built once per version of those files under ``<state>/lower/etc-mask-<hash>``."""
        etc = Path("/etc")
        sanitized = [etc / n for n in ETC_SANITIZED if (etc / n).is_file()]
        hidden = sorted(p for g in ETC_HIDDEN_GLOBS for p in etc.glob(g))
        facts = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sanitized]
        facts += [(str(p), 0, 0) for p in hidden]
        key = hashlib.sha256(json.dumps(facts).encode()).hexdigest()[:12]
        mask = self.state_dir / "lower" / f"etc-mask-{key}"
        if mask.is_dir():
            return str(mask)
        tmp = self.state_dir / "lower" / f".tmp-{secrets.token_hex(4)}"
        tmp.mkdir(parents=True)
        for src in sanitized:
            info = src.stat()
            dst = tmp / src.name
            dst.write_text(lock_passwords(src.read_text()))
            os.chown(dst, info.st_uid, info.st_gid)
            os.chmod(dst, info.st_mode & 0o7777)
        for src in hidden:
            dst = tmp / src.relative_to(etc)
            for parent in reversed(dst.relative_to(tmp).parents[:-1]):
                host_dir, made = etc / parent, tmp / parent
                if not made.is_dir():
                    made.mkdir()
                    info = host_dir.stat()
                    os.chown(made, info.st_uid, info.st_gid)
                    os.chmod(made, info.st_mode & 0o7777)
            os.mknod(dst, 0o600 | stat_module.S_IFCHR, os.makedev(0, 0))  # overlay whiteout
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, mask)
        except OSError:  # another provider built it first
            shutil.rmtree(tmp, ignore_errors=True)
        return str(mask)

    def _watch_copy(self, pid: int, running: bool) -> None:
        """layers.copy_watchers: the zygote kills the copies still running if this process
        dies (it sees its end of the socket close)."""
        zygote = self._zygote
        if zygote is None or zygote.dead:
            return
        if not running:
            zygote.send("release", pid=pid)
        elif (started := L.start_time(pid)) is not None:
            zygote.send("adopt", pid=pid, starttime=started)

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            layers.copy_watchers.remove(self._watch_copy)
        for handle in self._sandboxes.values():
            handle.close()
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.close()
        self._sandboxes.clear()

    def _on_exit(self, sid: str | None, status: int | None) -> None:
        if sid is None:  # the zygote itself is gone, and every sandbox with it
            for handle in self._sandboxes.values():
                handle.exited = True
            return
        handle = self._sandboxes.get(sid)
        if handle is not None:
            handle.exited = True
            handle.exit_status = status

    # -- description ------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        ops = set(REQUIRED_OPS)
        unsupported: dict[str, str] = {}
        layout = self.host.cgroups
        method = self.checkpoint_method if self._zygote else self._peek_checkpoint_method()
        if method:
            ops |= {Op.CHECKPOINT, Op.RESTORE, Op.FORK}
        else:
            reason = "no layer-copy method: neither cp nor tar is installed"
            unsupported |= {str(o): reason for o in (Op.CHECKPOINT, Op.RESTORE, Op.FORK)}
        if layout.freezer:
            ops |= {Op.PAUSE, Op.RESUME}
        else:
            reason = f"no cgroup freezer: {layout.reason or 'not mounted'}"
            unsupported |= {str(Op.PAUSE): reason, str(Op.RESUME): reason}
        enforced = [r for r in ("memory", "pids", "cpu") if r in layout.roles]
        limit_files = {"memory": "memory_mb", "pids": "max_pids", "cpu": "cpus"}
        notes = {
            "mode": self.host.mode,
            "checkpoint_method": method or "none",
            "checkpoint_method_detail": METHOD_NOTES.get(method or "", "none"),
            "fork": "each child is a new sandbox (same spec and labels) whose writable layer "
            "starts as a copy of the parent's, taken while the parent is frozen; memory and "
            "processes are not inherited; children and parent are independent afterwards",
            "seccomp": self._seccomp_state()[1],
            "favordynmods": self.favordynmods,
            "pid1_root": self.pid1_root,
            "agent": self.agent,
            "pid1": self.pid1,
            "checkpoint_consistency": (
                "frozen (cgroup freezer) while the layer is copied"
                if layout.freezer
                else "not frozen: consistent only if the sandbox is idle during the copy"
            ),
            "not_captured": "memory and processes; /tmp (a private tmpfs); /dev, /proc, /sys",
            "limits_enforced": ", ".join(
                f"{limit_files[r]} ({layout.roles[r][0]} {r} cgroup)" for r in enforced
            )
            or "none",
            "limits_not_enforced": ", ".join(
                [
                    "disk_mb (no quota on the state filesystem)",
                    "lifetime_s (sandboxes die with the harness instead)",
                    *(limit_files[r] for r in limit_files if r not in enforced),
                ]
            ),
            "isolation_detail": (
                "pid/mount/uts/ipc/net namespaces, allow-list overlay root, loopback only; "
                + (
                    "sandbox root is real root with Docker's capability set minus CAP_MKNOD"
                    if self.host.root
                    else "user namespace: sandbox root is the calling user"
                )
            ),
            "process_titles": "PID 1 and the agent show as sb-init and sb-agent, with an "
            "empty environment",
            "exec": "argv or /bin/sh -c; cwd /root; exit 128+N on signal N; output of "
            "background processes after the command exits is dropped after 50 ms",
            "paused": "exec and file operations sent to a paused sandbox complete after "
            "resume, or time out",
            "out_of_memory": "a process beyond memory_mb is OOM-killed inside the sandbox "
            "(exec returns 137); the agent is restarted by PID 1 should the kernel pick it",
        }
        if layout.reason:
            notes["cgroups"] = layout.reason
        return Capabilities(
            operations=frozenset(ops),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM if method else None,
            restore_target=RestoreTarget.NEW_SANDBOX if method else None,
            pause_kind=PauseKind.FREEZE if layout.freezer else PauseKind.NONE,
            fork_keeps=CheckpointCaptures.FILESYSTEM if method else None,
            fork_method=FORK_METHODS.get(method or "", ""),
            isolation="linux namespaces + overlayfs + seccomp (shared kernel)"
            if self._seccomp_state()[0]
            else "linux namespaces + overlayfs (shared kernel; no seccomp filter)",
            scratch_dir="/root",
            lists_checkpoints=True,
            unsupported=unsupported,
            notes=notes,
        )

    def _peek_checkpoint_method(self) -> str | None:
        """The method open() would choose, without touching the state directory."""
        if self.requested_method != "auto":
            return self.requested_method
        return "copy" if shutil.which("cp") else "tar" if shutil.which("tar") else None

    def _seccomp_state(self) -> tuple[bool, str]:
        """(whether sandboxes get the filter, what it is or why not); before open() the
        filter is compiled here once to find out."""
        if self._zygote is None and self.seccomp_bpf is None and self.config.seccomp:
            if not hasattr(self, "_seccomp_probe"):
                self._seccomp_probe = seccomp.compile_filter()
            bpf, note = self._seccomp_probe
            return bpf is not None, note
        return self.seccomp_bpf is not None, self.seccomp_note

    def environment(self) -> dict[str, Any]:
        env = super().environment()
        env.update(
            kernel=self.host.kernel,
            mode=self.host.mode,
            cgroups=self.host.cgroups.describe(),
            state_dir=str(self.state_dir),
            state_fs=self.state_fs or _mount_of(str(self.state_dir.parent))[1],
            checkpoint_method=self.checkpoint_method or self._peek_checkpoint_method(),
            rootfs=str(self.rootfs) if self.rootfs else None,
            system_dirs=self.system_dirs,
            python=platform.python_version(),
            seccomp=self._seccomp_state()[1],
            favordynmods=self.favordynmods,
            pid1_root=self.pid1_root,
            agent=self.agent,
            pid1=self.pid1,
            overlay="listed in /proc/filesystems"
            if self.host.overlay
            else "not listed (may be a module loaded on first mount)",
        )
        return env

    # -- helpers ----------------------------------------------------------------------------

    def _require_open(self, operation: str) -> _ZygoteClient:
        if self._zygote is None or self._zygote.dead:
            raise Unavailable(
                "the provider is not open (call open())" if self._zygote is None
                else "the zygote has exited", provider=PROVIDER_ID, operation=operation,
            )  # fmt: skip
        return self._zygote

    def _handle(self, sandbox: Sandbox, operation: str) -> _Handle:
        handle = self._sandboxes.get(sandbox.id)
        if handle is not None:
            return handle
        handle = self._adopt(sandbox.id)
        if handle is None:
            raise NotFound(
                f"sandbox {sandbox.id} does not exist", provider=PROVIDER_ID, operation=operation
            )
        return handle

    def _adopt(self, sid: str) -> _Handle | None:
        """A handle on a live sandbox another provider instance created in this state dir."""
        if not SANDBOX_ID.match(sid):
            return None
        meta = _read_meta(self.sandboxes_dir / sid)
        if meta is None or not (self.sandboxes_dir / sid / "agent.sock").exists():
            return None
        group = cgroups.Group.from_json(meta["group"]) if meta.get("group") else None
        return _Handle(sid=sid, dir=self.sandboxes_dir / sid, group=group, spec=meta)

    # -- required operations ----------------------------------------------------------------

    async def create(self, spec: SandboxSpec) -> Sandbox:
        return await self._create(spec, dict(spec.labels), populate=None)

    async def _create(
        self,
        spec: SandboxSpec,
        labels: dict[str, str],
        populate: layers.Populate | None,
        operation: str = "create",
    ) -> Sandbox:
        """Create a sandbox; ``populate(fs)``, when given, fills its ``fs`` directory (the
        writable layer) before it starts (restore, fork)."""
        zygote = self._require_open(operation)
        sid = f"sb-{secrets.token_hex(6)}"
        d = self.sandboxes_dir / sid
        group = cgroups.plan(self.host.cgroups, sid) if self.host.cgroups.roles else None
        meta = {
            "format": META_FORMAT,
            "id": sid,
            "created_at": time.time(),
            "mode": self.host.mode,
            "lower": self.lower,
            "system_dirs": self.system_dirs,
            "rootfs": str(self.rootfs) if self.rootfs else None,
            "group": group.to_json() if group else None,
            "spec": {"cpus": spec.cpus, "memory_mb": spec.memory_mb, "max_pids": spec.max_pids,
                     "disk_mb": spec.disk_mb, "lifetime_s": spec.lifetime_s},
            "labels": labels,
        }  # fmt: skip
        init_spec: dict[str, Any] = {
            "dir": str(d),
            "layers": ["top", *self.system_dirs],
            "lower": self.lower,
            "system_dirs": self.system_dirs,
            "etc_mask": self.etc_mask,
            "hostname": sid,
            "userns": self.host.mode == "userns",
            "cgroup": None,
        }
        if group is not None:
            init_spec["cgroup"] = {
                "create": cgroups.create_steps(
                    self.host.cgroups,
                    group,
                    memory_mb=spec.memory_mb,
                    max_pids=spec.max_pids,
                    cpus=spec.cpus,
                ),
                "procs": group.procs_files,
                "dirs": group.all_dirs,
                "thaw": cgroups.thaw_step(group),
            }
        spawned = False
        ours: socket.socket | None = None
        dirs_w: int | None = None
        handle: _Handle | None = None
        try:
            made_first = populate is not None or self.checkpoint_method == "btrfs"
            if made_first:
                # The layer must exist before the sandbox starts: made here, on threads (a
                # busy disk must not stall the event loop and the schedule of other creates).
                await _off_loop(_write_meta, d, meta)
                fs = d / "fs"
                if populate is not None:
                    await populate(fs)
                else:
                    await layers.run(["btrfs", "subvolume", "create", str(fs)],
                                     self._error(operation))  # fmt: skip
            # The sandbox's first agent connection exists before the sandbox does: the ping
            # below waits in it, and the agent's answer is the readiness signal (no relay
            # through the zygote, no connect after the fact).
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            fds = [theirs.fileno()]
            cgroup_steps: list[list] = []
            if not made_first:
                # The directory and the cgroups (meta.json, which names them, first) are made
                # on a thread here while the zygote forks PID 1; PID 1 waits for this pipe's
                # byte before it joins the cgroups and mounts.
                dirs_r, dirs_w = os.pipe()
                fds.append(dirs_r)
                if init_spec["cgroup"]:
                    cgroup_steps = init_spec["cgroup"]["create"]
                    init_spec["cgroup"] = {**init_spec["cgroup"], "create": []}
            try:
                spawned = True  # from here a cancelled create must ask the zygote to kill
                answer_fut = zygote.request("spawn", fds=fds, sid=sid, spec=init_spec)
            finally:
                theirs.close()
                if len(fds) > 1:
                    os.close(fds[1])
            if dirs_w is not None:
                made = b"x"
                try:
                    await _off_loop(_write_tree, d, meta, init_spec["layers"], cgroup_steps)
                    made = b"d"
                finally:
                    # "x": PID 1 gives up; EPIPE: PID 1 has failed already (the zygote's
                    # answer below says why)
                    with contextlib.suppress(BrokenPipeError):
                        os.write(dirs_w, made)
                    os.close(dirs_w)
                    dirs_w = None
            answer_fut.add_done_callback(_consume)
            handle = _Handle(sid=sid, dir=d, group=group, spec=meta)
            self._sandboxes[sid] = handle
            ours.setblocking(False)
            handle.idle.append(await asyncio.open_unix_connection(sock=ours))
            ours = None
            try:
                answer, _ = await handle.request(
                    {"op": "ping"}, timeout_s=READY_TIMEOUT_S, operation=operation
                )
            except ProtocolError:
                raise  # the agent answered, unreadably: that is the failure, not PID 1's
            except ProviderError as exc:
                # The connection closed: PID 1 failed and the zygote says why.
                why = str(exc)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        failure = await asyncio.shield(answer_fut)
                    why = failure.get("error") or why
                raise SandboxCrashed(
                    f"sandbox {sid} failed to start: {why}", provider=PROVIDER_ID,
                    operation=operation,
                ) from exc  # fmt: skip
            handle.host_pid = answer.get("host_pid")
            handle.starttime = answer.get("starttime")
        except BaseException:
            if ours is not None:
                ours.close()
            if dirs_w is not None:
                os.close(dirs_w)
            self._sandboxes.pop(sid, None)
            if handle is not None:
                handle.close()
            await asyncio.shield(self._teardown(sid, d, group, spawned))
            raise
        return Sandbox(id=sid, provider=PROVIDER_ID, native=handle)

    def _error(self, operation: str):
        return lambda message: ProviderError(message, provider=PROVIDER_ID, operation=operation)

    async def _teardown(
        self, sid: str, d: Path, group: cgroups.Group | None, spawned: bool
    ) -> None:
        zygote = self._zygote
        if spawned and zygote is not None and not zygote.dead:
            kill = zygote.request("kill", sid=sid)  # sent before the thaw below
            if group is not None and "freezer" in group.dirs:
                with contextlib.suppress(OSError):
                    cgroups.thaw(group)
            with contextlib.suppress(ProviderError, TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.shield(kill)
        if group is not None:
            await asyncio.to_thread(cgroups.remove, group, 10.0)
        if zygote is not None:
            zygote.send("forget", sid=sid)
        await asyncio.to_thread(remove_tree, str(d))

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        handle = self._handle(sandbox, "exec")
        if isinstance(command, str):
            argv = ["/bin/sh", "-c", command]
        else:
            argv = [str(a) for a in command]
            if not argv:
                raise ValueError("exec: empty argv")
        header = {"op": "exec", "argv": argv, "deadline": time.monotonic() + timeout_s}
        answer, body = await handle.request(
            header, timeout_s=timeout_s + EXEC_GRACE_S + 0.05 * timeout_s, operation="exec"
        )
        if answer.get("timeout"):
            started = "killed" if answer.get("started") else "not started (sandbox frozen?)"
            raise OperationTimeout(
                f"sandbox {sandbox.id}: command did not finish within {timeout_s} s ({started})",
                provider=PROVIDER_ID,
                operation="exec",
            )
        if "error" in answer:
            raise ProviderError(
                f"sandbox {sandbox.id}: exec: {answer['error']}", provider=PROVIDER_ID,
                operation="exec",
            )  # fmt: skip
        out = answer["out"]
        return ExecResult(exit_code=answer["exit_code"], stdout=body[:out], stderr=body[out:])

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        handle = self._handle(sandbox, "write_file")
        _check_path(path)
        answer, _ = await handle.request(
            {"op": "write", "path": path, "deadline": time.monotonic() + FILE_TIMEOUT_S},
            bytes(data),
            timeout_s=FILE_TIMEOUT_S,
            operation="write_file",
        )  # fmt: skip
        _raise_file_error(answer, sandbox.id, path, "write_file")

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        handle = self._handle(sandbox, "read_file")
        _check_path(path)
        answer, body = await handle.request(
            {"op": "read", "path": path, "deadline": time.monotonic() + FILE_TIMEOUT_S},
            timeout_s=FILE_TIMEOUT_S,
            operation="read_file",
        )
        _raise_file_error(answer, sandbox.id, path, "read_file")
        return body

    async def destroy(self, sandbox: Sandbox) -> None:
        handle = self._sandboxes.pop(sandbox.id, None)
        if handle is None:
            if SANDBOX_ID.match(sandbox.id) and (self.sandboxes_dir / sandbox.id).is_dir():
                await asyncio.to_thread(destroy_by_id, sandbox.id, str(self.state_dir))
            return
        handle.close()
        await self._teardown(handle.sid, handle.dir, handle.group, spawned=True)

    async def destroy_by_id(self, sandbox_id: str) -> None:
        """Destroy a sandbox of this state directory by id, whoever created it."""
        handle = self._sandboxes.get(sandbox_id)
        if handle is not None:
            await self.destroy(Sandbox(id=sandbox_id, provider=PROVIDER_ID))
            return
        await asyncio.to_thread(destroy_by_id, sandbox_id, str(self.state_dir))

    async def list_sandboxes(self, run_id: str) -> list[str]:
        return list_sandboxes(str(self.state_dir), run_id)

    # -- optional operations ----------------------------------------------------------------

    def _require_freezer(self, handle: _Handle, operation: str) -> cgroups.Group:
        if handle.group is None or "freezer" not in handle.group.dirs:
            raise Unsupported(
                f"{operation}: {self.capabilities().unsupported.get(operation, 'no freezer')}",
                provider=PROVIDER_ID,
                operation=operation,
            )
        if handle.exited:
            raise handle.crashed(operation)
        return handle.group

    async def pause(self, sandbox: Sandbox) -> None:
        handle = self._handle(sandbox, "pause")
        group = self._require_freezer(handle, "pause")
        if handle.copy_holds:  # frozen for a copy: it stays frozen when the copy ends
            handle.paused = True
            return
        try:
            cgroups.freeze(group)
        except TimeoutError as exc:
            with contextlib.suppress(OSError):
                cgroups.thaw(group)
            raise OperationTimeout(str(exc), provider=PROVIDER_ID, operation="pause") from exc
        except FileNotFoundError as exc:
            raise NotFound(f"sandbox {sandbox.id} is gone", provider=PROVIDER_ID,
                           operation="pause") from exc  # fmt: skip

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        handle = self._handle(sandbox, "resume")
        group = self._require_freezer(handle, "resume")
        if handle.copy_holds:  # frozen for a copy: thawed when the copy ends (milliseconds)
            handle.paused = False
            return sandbox
        try:
            cgroups.thaw(group)
        except FileNotFoundError as exc:
            raise NotFound(f"sandbox {sandbox.id} is gone", provider=PROVIDER_ID,
                           operation="resume") from exc  # fmt: skip
        return sandbox

    @contextlib.asynccontextmanager
    async def _frozen(self, handle: _Handle, operation: str):
        """Hold the sandbox frozen (when it has a freezer) while a copy of its layer is
        taken; a sandbox paused beforehand stays paused. Copies of one sandbox may overlap
        (two checkpoints, or a fork, at once): the first freezes it and only the last to end
        thaws it. (It used to be "thaw if it was not frozen when I began": a second copy
        that began while the first held it frozen took it for paused and never froze it,
        the first thawed it mid-copy, and the second copied a running sandbox; the Daytona
        emulator's two-child fork hit it, `cp: cannot stat` a file renamed meanwhile.)"""
        group = handle.group if handle.group and "freezer" in handle.group.dirs else None
        if group is None:
            yield
            return
        if handle.copy_holds == 0:
            handle.paused = cgroups.is_frozen(group)
            if not handle.paused:
                try:
                    cgroups.freeze(group)
                except TimeoutError as exc:
                    with contextlib.suppress(OSError):
                        cgroups.thaw(group)
                    raise OperationTimeout(str(exc), provider=PROVIDER_ID,
                                           operation=operation) from exc  # fmt: skip
        handle.copy_holds += 1
        try:
            yield
        finally:
            handle.copy_holds -= 1
            if handle.copy_holds == 0 and not handle.paused:
                with contextlib.suppress(FileNotFoundError):
                    cgroups.thaw(group)

    def _copyable(self, sandbox: Sandbox, operation: str) -> tuple[_Handle, str]:
        self._require_open(operation)
        handle = self._handle(sandbox, operation)
        if self.checkpoint_method is None:
            raise Unsupported("no layer-copy method (neither cp nor tar)", provider=PROVIDER_ID,
                              operation=operation)  # fmt: skip
        if handle.exited:
            raise handle.crashed(operation)
        return handle, self.checkpoint_method

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        handle, method = self._copyable(sandbox, "checkpoint")
        ck = f"ck-{secrets.token_hex(6)}"
        target = self.checkpoints_dir / ck
        labels = dict(handle.spec.get("labels") or {})
        # The copy's name says whose it is (run and process) from the mkdir on, so that a
        # kill -9 mid-copy leaves something list_checkpoints can attribute and reap.
        partial = self.checkpoints_dir / _partial_name(ck, labels)
        partial.mkdir()
        try:
            async with self._frozen(handle, "checkpoint"):
                await layers.save(method, handle.dir / "fs", partial, self._error("checkpoint"))
            meta = {
                "format": META_FORMAT,
                "id": ck,
                "sandbox_id": sandbox.id,
                "method": method,
                "created_at": time.time(),
                "frozen": handle.group is not None and "freezer" in handle.group.dirs,
                "sandbox": handle.spec,
                "labels": labels,
                "owner": dict(zip(("pid", "starttime"), _own_identity(), strict=True)),
            }
            (partial / "meta.json").write_text(json.dumps(meta))
            os.rename(partial, target)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(remove_tree, str(partial)))
            raise
        return CheckpointRef(id=ck, provider=PROVIDER_ID, sandbox_id=sandbox.id, native=target)

    def _check_same_root(self, sandbox_meta: dict, what: str, operation: str) -> None:
        if sandbox_meta.get("lower") != self.lower or sandbox_meta.get("system_dirs") != (
            self.system_dirs
        ):
            raise ProviderError(
                f"{what} was taken with another root (lower {sandbox_meta.get('lower')}); "
                f"open the provider with the same rootfs",
                provider=PROVIDER_ID,
                operation=operation,
            )

    @staticmethod
    def _spec_of(sandbox_meta: dict) -> SandboxSpec:
        s = sandbox_meta["spec"]
        return SandboxSpec(cpus=s["cpus"], memory_mb=s["memory_mb"], max_pids=s["max_pids"],
                           disk_mb=s.get("disk_mb"), lifetime_s=s.get("lifetime_s", 900),
                           labels=sandbox_meta.get("labels", {}))  # fmt: skip

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        self._require_open("restore")
        src = self.checkpoints_dir / ref.id
        meta = _read_json(src / "meta.json") if CHECKPOINT_ID.match(ref.id) else None
        if meta is None:
            raise NotFound(f"checkpoint {ref.id} does not exist", provider=PROVIDER_ID,
                           operation="restore")  # fmt: skip
        self._check_same_root(meta["sandbox"], f"checkpoint {ref.id}", "restore")
        method = meta["method"]

        async def populate(fs: Path) -> None:
            await layers.load(method, src, fs, self._error("restore"))

        spec = self._spec_of(meta["sandbox"])
        return await self._create(spec, dict(spec.labels), populate, operation="restore")

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        """``count`` children of ``sandbox``: the parent is frozen while its layer is copied
        once; further children copy that copy (the parent runs on meanwhile); then all
        children start at once."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
            raise ValueError(f"fork: count must be a whole number from 1 to 1000, got {count!r}")
        handle, method = self._copyable(sandbox, "fork")
        self._check_same_root(handle.spec, f"sandbox {sandbox.id}", "fork")
        error = self._error("fork")
        token = secrets.token_hex(6)
        labels = dict(handle.spec.get("labels") or {})
        copies = [self.checkpoints_dir / _partial_name(f"fork-{token}-{i}", labels)
                  for i in range(count)]  # fmt: skip
        children: list[Sandbox] = []
        try:
            async with self._frozen(handle, "fork"):
                await layers.clone_fs(method, handle.dir / "fs", copies[0], error)
            await asyncio.gather(*(layers.clone_fs(method, copies[0], c, error)
                                   for c in copies[1:]))  # fmt: skip
            spec = self._spec_of(handle.spec)

            def taking(copy: Path) -> layers.Populate:
                async def populate(fs: Path) -> None:
                    os.rename(copy, fs)

                return populate

            made = await asyncio.gather(
                *(self._create(spec, dict(spec.labels), taking(c), operation="fork")
                  for c in copies),
                return_exceptions=True,
            )  # fmt: skip
            children = [m for m in made if isinstance(m, Sandbox)]
            failures = [m for m in made if not isinstance(m, Sandbox)]
            if failures:
                raise failures[0]
        except BaseException:
            for child in children:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.destroy(child))
            raise
        finally:
            for c in copies:
                await asyncio.shield(asyncio.to_thread(remove_tree, str(c)))
        return children

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        """Remove a checkpoint, or a copy a dead process left unfinished (an id
        :meth:`list_checkpoints` gives). An unknown or malformed id is a no-op."""
        await asyncio.to_thread(delete_checkpoint, ref.id, str(self.state_dir))

    async def list_checkpoints(self, run_id: str) -> list[str]:
        return await asyncio.to_thread(list_checkpoints, str(self.state_dir), run_id)


def _send(sock: socket.socket, data: bytes, fds: Any) -> None:
    """One request packet, with ``fds`` attached when there are any."""
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _consume(fut: asyncio.Future) -> None:
    """Retrieve a future's outcome nobody awaits (the zygote's answer to a spawn whose
    readiness came from the agent), so that asyncio does not log it as lost."""
    if not fut.cancelled():
        fut.exception()


async def _off_loop(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` on a worker thread. A thread cannot be stopped, so when the caller is
    cancelled this still waits for it to finish before the cancellation goes on: clean-up
    then sees everything the thread made."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


def _write_meta(d: Path, meta: dict[str, Any]) -> None:
    d.mkdir()
    (d / "meta.json").write_text(json.dumps(meta))
    (d / "merged").mkdir()


def _write_tree(d: Path, meta: dict[str, Any], names: list[str], cgroup_steps: list) -> None:
    """The sandbox directory, ``meta.json`` first, its overlay layer directories, then its
    cgroups with their limits (``cgroup_steps``: cgroups.create_steps)."""
    _write_meta(d, meta)
    for kind in ("upper", "work"):
        for name in names:
            (d / "fs" / kind / name).mkdir(parents=True)
    sandbox_init.run_steps(cgroup_steps)


def lock_passwords(text: str) -> str:
    """An /etc/shadow or /etc/gshadow text with every password field replaced by ``!``
    (locked), so that no hash leaves the host."""
    lines = []
    for line in text.splitlines(keepends=True):
        fields = line.split(":")
        if len(fields) > 1 and fields[1] not in ("", "*", "!", "!!", "!*"):
            fields[1] = "!"
        lines.append(":".join(fields))
    return "".join(lines)


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"path must be absolute: {path!r}")


def _raise_file_error(answer: dict, sid: str, path: str, operation: str) -> None:
    if "error" not in answer:
        return
    message = f"sandbox {sid}: {path}: {answer['error']}"
    if answer.get("errno") == errno.ENOENT:
        raise NotFound(message, provider=PROVIDER_ID, operation=operation)
    raise ProviderError(message, provider=PROVIDER_ID, operation=operation)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_meta(d: Path) -> dict | None:
    meta = _read_json(d / "meta.json")
    return meta if meta and meta.get("format") == META_FORMAT else None


# -- functions for reapers (usable without an open provider) ----------------------------------


def list_sandboxes(state_dir: str | None, run_id: str) -> list[str]:
    """Ids of this provider's sandbox directories labelled with ``run_id`` in ``state_dir``
    (the default state directory when None), alive or left behind by a dead harness."""
    root = Path(state_dir) if state_dir else _default_state_dir()
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(root / "sandboxes") as entries:
        for entry in entries:
            if not SANDBOX_ID.match(entry.name):
                continue
            meta = _read_meta(Path(entry.path))  # None: not made by this provider
            if meta is not None and meta.get("labels", {}).get(RUN_LABEL) == run_id:
                found.append(entry.name)
    return sorted(found)


def list_checkpoints(state_dir: str | None, run_id: str) -> list[str]:
    """Ids of this provider's checkpoints in ``state_dir`` (the default state directory when
    None) taken of sandboxes labelled with ``run_id``, and of copies for that run (checkpoint
    or fork) whose owner process is dead: a kill cut them short and nobody will finish or
    remove them. A copy whose owner lives is in progress and is not listed."""
    root = Path(state_dir) if state_dir else _default_state_dir()
    key = _run_key(run_id)
    found = []
    with contextlib.suppress(FileNotFoundError), os.scandir(root / "checkpoints") as entries:
        for entry in entries:
            if CHECKPOINT_ID.match(entry.name):
                meta = _read_meta(Path(entry.path))  # None: not made by this provider
                if meta is not None and _checkpoint_labels(meta).get(RUN_LABEL) == run_id:
                    found.append(entry.name)
            elif (
                (partial := PARTIAL_ID.match(entry.name))
                and partial[3] == key
                and not _alive(int(partial[1]), int(partial[2]))
            ):
                found.append(entry.name)
    return sorted(found)


def delete_checkpoint(checkpoint_id: str, state_dir: str | None = None) -> bool:
    """Remove a checkpoint of ``state_dir``, or a copy (``.partial``) whose owner process is
    dead, whoever made it. Returns whether anything was there. A copy whose owner still runs
    is refused (ProviderError): removing it would break that process's checkpoint or fork."""
    root = Path(state_dir) if state_dir else _default_state_dir()
    path = root / "checkpoints" / checkpoint_id
    partial = PARTIAL_ID.match(checkpoint_id)
    if not (CHECKPOINT_ID.match(checkpoint_id) or partial) or not os.path.lexists(path):
        return False
    if partial and _alive(int(partial[1]), int(partial[2])):
        raise ProviderError(
            f"{checkpoint_id} is a copy in progress in process {partial[1]}, not removed",
            provider=PROVIDER_ID,
            operation="delete_checkpoint",
        )
    remove_tree(str(path))
    if os.path.lexists(path):
        # A copy program its dead owner left running may still be writing into it (it ends
        # once the sandbox it copies is destroyed): "removed" would be false; a retry works.
        raise ProviderError(
            f"{checkpoint_id}: not entirely removed (something is still writing into it)",
            provider=PROVIDER_ID,
            operation="delete_checkpoint",
        )
    return True


def _checkpoint_labels(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """A checkpoint's labels: its own, or (checkpoints made before they had their own) its
    sandbox's."""
    labels = meta.get("labels")
    if not isinstance(labels, Mapping):
        sandbox = meta.get("sandbox")
        labels = sandbox.get("labels") if isinstance(sandbox, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _run_key(run_id: str) -> str:
    """The run as it appears in a copy's name: a fixed-length digest (a run id may be long
    or hold any character; a file name may not)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def _partial_name(stem: str, labels: Mapping[str, Any]) -> str:
    """The name of a copy in progress (PARTIAL_ID): its owner (this process, by pid and start
    time, so a reused pid is not mistaken for it) and its run are in the name itself, so they
    are recorded the moment the directory exists, with no window a kill could fall into."""
    pid, starttime = _own_identity()
    return f".{stem}.{pid}-{starttime}-{_run_key(str(labels.get(RUN_LABEL, '')))}.partial"


def _own_identity() -> tuple[int, int]:
    return _identity(os.getpid())


@functools.cache
def _identity(pid: int) -> tuple[int, int]:
    """(pid, start time in clock ticks since boot) of process ``pid`` (this one's)."""
    started = L.start_time(pid)
    if started is None:
        raise ProcessLookupError(pid)
    return pid, started


def _alive(pid: int, starttime: int) -> bool:
    """Whether the process ``pid`` started at ``starttime`` still runs (a zombie does not)."""
    return _same_process(pid, starttime) and _state(pid) != "Z"


def _same_process(pid: int, starttime: int) -> bool:
    return L.start_time(pid) == starttime


def destroy_by_id(sandbox_id: str, state_dir: str | None = None, timeout_s: float = 10.0) -> bool:
    """Destroy a sandbox of ``state_dir`` by id even if this process did not create it: kill
    every process in its cgroups (or its PID 1, checked by start time, without cgroups), wait
    for them to go, remove its cgroups and directory. Returns whether anything was found."""
    if not SANDBOX_ID.match(sandbox_id):
        return False
    root = Path(state_dir) if state_dir else _default_state_dir()
    d = root / "sandboxes" / sandbox_id
    meta = _read_meta(d)
    if meta is None:  # absent, or not this provider's (another implementation's) directory
        return False
    group = cgroups.Group.from_json(meta["group"]) if meta.get("group") else None
    pid_file = (d / "pid").read_text().split() if (d / "pid").exists() else []
    pid = int(pid_file[0]) if pid_file else None
    starttime = int(pid_file[1]) if len(pid_file) > 1 else None
    if pid and starttime is not None and _same_process(pid, starttime):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if group is not None:
        cgroups.kill_all(group)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = bool(group and cgroups.pids(group)) or bool(
            pid and starttime is not None and _same_process(pid, starttime)
            and _state(pid) != "Z"
        )  # fmt: skip
        if not alive:
            break
        time.sleep(0.005)
    if group is not None:
        cgroups.remove(group, timeout_s=max(0.5, deadline - time.monotonic()))
    remove_tree(str(d))
    return True


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rindex(")") + 2]
    except OSError:
        return "X"
