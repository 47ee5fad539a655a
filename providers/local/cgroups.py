"""cgroups for sandboxes: detection (v1, v2 or hybrid), limits, freezer, kill, removal.

Each sandbox gets one group per hierarchy it uses, named ``<mount>/sandbox-bench/<id>``:
on a v1 (or hybrid) host one each under the freezer, memory, pids and cpu mounts; on a pure v2
host a single group under the unified mount. A role (freezer, memory, pids, cpu) uses v1 when
that controller is mounted as v1 and writable, else v2 when the unified hierarchy offers it
(the v2 freezer is a core file, ``cgroup.freeze``, needing no controller).

Plain synchronous file writes: each is a few microseconds, less than handing it to a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass, field

GROUP = "sandbox-bench"
ROLES = ("freezer", "memory", "pids", "cpu")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Layout:
    """Where each role lives on this host: role -> (version, mount point)."""

    roles: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Why cgroups (or some roles) are unavailable; empty when all roles are.
    reason: str = ""
    v1_mounts: dict[str, str] = field(default_factory=dict)
    v2_mount: str | None = None

    @property
    def freezer(self) -> str | None:
        """``"v1"``, ``"v2"`` or None."""
        return self.roles["freezer"][0] if "freezer" in self.roles else None

    def describe(self) -> str:
        if self.v1_mounts and self.v2_mount:
            kind = "hybrid (v1 controllers + cgroup2 at " + self.v2_mount + ")"
        elif self.v1_mounts:
            kind = "v1"
        elif self.v2_mount:
            kind = "v2"
        else:
            kind = "none"
        used = ", ".join(f"{r}: {v}" for r, (v, _) in sorted(self.roles.items())) or "none"
        return f"{kind}; used: {used}"


def _mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount this process sees."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4].replace("\\040", " ")
            fstype, _source, options = right.split()[:3]
            found.append((mount_point, fstype, options))
    return found


def detect() -> Layout:
    v1: dict[str, str] = {}
    v2: str | None = None
    for mount_point, fstype, options in _mountinfo():
        if fstype == "cgroup":
            for role in ROLES:
                if role in options.split(",") and role not in v1:
                    v1[role] = mount_point
        elif fstype == "cgroup2" and v2 is None:
            v2 = mount_point
    v2_controllers: set[str] = set()
    if v2:
        with contextlib.suppress(OSError), open(f"{v2}/cgroup.controllers") as f:
            v2_controllers = set(f.read().split())
    roles: dict[str, tuple[str, str]] = {}
    missing: list[str] = []
    for role in ROLES:
        if role in v1 and _writable(v1[role]):
            roles[role] = ("v1", v1[role])
        elif v2 and _writable(v2) and (role == "freezer" or role in v2_controllers):
            roles[role] = ("v2", v2)
        else:
            missing.append(role)
    reason = ""
    if missing:
        if not v1 and not v2:
            reason = "no cgroup hierarchy is mounted"
        elif os.geteuid() != 0:
            reason = f"cgroup hierarchies are not writable by uid {os.geteuid()} (no delegation)"
        else:
            reason = f"no writable hierarchy offers: {', '.join(missing)}"
    return Layout(roles=roles, reason=reason, v1_mounts=v1, v2_mount=v2)


def _writable(mount_point: str) -> bool:
    parent = f"{mount_point}/{GROUP}"
    return os.access(parent if os.path.isdir(parent) else mount_point, os.W_OK)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass(frozen=True)
class Group:
    """A sandbox's cgroups: role -> directory (roles may share a v2 directory)."""

    dirs: dict[str, str]
    versions: dict[str, str]

    def to_json(self) -> dict:
        return {"dirs": self.dirs, "versions": self.versions}

    @classmethod
    def from_json(cls, data: dict) -> Group:
        return cls(dirs=dict(data.get("dirs", {})), versions=dict(data.get("versions", {})))

    @property
    def all_dirs(self) -> list[str]:
        return sorted(set(self.dirs.values()))

    @property
    def procs_files(self) -> list[str]:
        return [f"{d}/cgroup.procs" for d in self.all_dirs]


def plan(layout: Layout, sandbox_id: str) -> Group:
    """The directories the sandbox's groups will have (nothing is created)."""
    dirs: dict[str, str] = {}
    versions: dict[str, str] = {}
    for role, (version, mount_point) in layout.roles.items():
        dirs[role] = f"{mount_point}/{GROUP}/{sandbox_id}"
        versions[role] = version
    return Group(dirs=dirs, versions=versions)


def create_steps(
    layout: Layout, group: Group, *, memory_mb: int | None, max_pids: int | None,
    cpus: float | None,
) -> list[list]:  # fmt: skip
    """The file operations that create the groups planned by :func:`plan` and apply the
    limits, as plain data: ``["mkdirs", path]``, ``["mkdir", path]``,
    ``["write", path, value, optional]``. The sandbox's PID 1 runs them itself
    (sandbox_init.run_steps), with no module of this one, right before it joins the groups."""
    dirs, versions = group.dirs, group.versions
    steps: list[list] = []
    for d in group.all_dirs:
        parent = os.path.dirname(d)
        steps.append(["mkdirs", parent])
        if versions[next(r for r, x in dirs.items() if x == d)] == "v2":
            steps += _enable_v2_controllers(layout, parent)
        steps.append(["mkdir", d])
    if "memory" in dirs and memory_mb:
        limit = str(memory_mb * 1024 * 1024)
        if versions["memory"] == "v1":
            steps.append(["write", f"{dirs['memory']}/memory.limit_in_bytes", limit, False])
            # absent without swap accounting
            steps.append(["write", f"{dirs['memory']}/memory.memsw.limit_in_bytes", limit, True])
        else:
            steps.append(["write", f"{dirs['memory']}/memory.max", limit, False])
            steps.append(["write", f"{dirs['memory']}/memory.swap.max", "0", True])
    if "pids" in dirs and max_pids:
        steps.append(["write", f"{dirs['pids']}/pids.max", str(max_pids), False])
    if "cpu" in dirs and cpus and cpus > 0:
        quota = max(1000, int(cpus * CPU_PERIOD_US))
        if versions["cpu"] == "v1":
            steps.append(["write", f"{dirs['cpu']}/cpu.cfs_period_us", str(CPU_PERIOD_US), False])
            steps.append(["write", f"{dirs['cpu']}/cpu.cfs_quota_us", str(quota), False])
        else:
            steps.append(["write", f"{dirs['cpu']}/cpu.max", f"{quota} {CPU_PERIOD_US}", False])
    return steps


def thaw_step(group: Group) -> list[str] | None:
    """``[path, value]`` that thaws the group (for processes without this module)."""
    d = group.dirs.get("freezer")
    if d is None:
        return None
    if group.versions["freezer"] == "v1":
        return [f"{d}/freezer.state", "THAWED"]
    return [f"{d}/cgroup.freeze", "0"]


def _enable_v2_controllers(layout: Layout, parent: str) -> list[list]:
    wanted = [r for r, (v, _) in layout.roles.items() if v == "v2" and r != "freezer"]
    if not wanted:
        return []
    mount_point = layout.v2_mount or ""
    chain = [mount_point, parent] if parent != mount_point else [mount_point]
    return [["write", f"{d}/cgroup.subtree_control", " ".join(f"+{r}" for r in wanted), True]
            for d in chain]  # fmt: skip


def freeze(group: Group, timeout_s: float = 5.0) -> None:
    """Freeze every process of the group; returns once the kernel reports it frozen."""
    d = group.dirs["freezer"]
    start = time.monotonic()
    if group.versions["freezer"] == "v1":
        _write(f"{d}/freezer.state", "FROZEN")
        done = lambda: _read(f"{d}/freezer.state").startswith("FROZEN")  # noqa: E731
    else:
        _write(f"{d}/cgroup.freeze", "1")
        done = lambda: "frozen 1" in _read(f"{d}/cgroup.events")  # noqa: E731
    spins = 0
    last_write = start
    while not done():
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(f"cgroup {d} not frozen after {timeout_s} s")
        if group.versions["freezer"] == "v1" and now - last_write > 0.0005:
            # The v1 freezer only visits tasks when FROZEN is written. A task that entered
            # a freezable sleep after that visit (measured here: a dash parent waiting in
            # vfork for a child the freezer already froze) is never counted as frozen and
            # the group stays FREEZING for ever. Writing FROZEN again visits it. (v2 handles
            # the vfork wait itself, see cgroup_enter_frozen in kernel/fork.c.)
            _write(f"{d}/freezer.state", "FROZEN")
            last_write = now
        spins += 1
        if spins > 20:
            time.sleep(0.0001)


def thaw(group: Group) -> None:
    d = group.dirs["freezer"]
    if group.versions["freezer"] == "v1":
        _write(f"{d}/freezer.state", "THAWED")
    else:
        _write(f"{d}/cgroup.freeze", "0")


def is_frozen(group: Group) -> bool:
    d = group.dirs.get("freezer")
    if d is None:
        return False
    try:
        if group.versions["freezer"] == "v1":
            return _read(f"{d}/freezer.state").strip() != "THAWED"
        return _read(f"{d}/cgroup.freeze").strip() == "1"
    except FileNotFoundError:
        return False


def pids(group: Group) -> set[int]:
    found: set[int] = set()
    for path in group.procs_files:
        with contextlib.suppress(FileNotFoundError):
            found.update(int(p) for p in _read(path).split())
    return found


def kill_all(group: Group) -> None:
    """SIGKILL every process in the group, then thaw it so that frozen ones can die."""
    for pid in pids(group):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if "freezer" in group.dirs:
        with contextlib.suppress(FileNotFoundError):
            thaw(group)


def remove(group: Group, timeout_s: float = 5.0) -> None:
    """Remove the group's directories, killing what is left in them; raises OSError if a
    directory is still busy after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    for d in group.all_dirs:
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                kill_all(group)
                time.sleep(0.001)
