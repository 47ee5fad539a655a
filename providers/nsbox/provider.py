"""``local``: real sandboxes on this Linux machine (namespaces, overlayfs, cgroups).

What each operation means here:

* create: forks a sandbox from the zygote (see zygote.py) into new mount, pid, uts, ipc and
  net namespaces, with an overlayfs root that shows the host's /usr and /etc (and real
  /bin, /lib... directories) read-only and nothing else of the host (inside.py draws the
  mounts); its own /proc, /tmp (tmpfs) and /dev; only a loopback interface. Returns once the
  sandbox's exec agent listens: the sandbox is ready to exec.
* exec: the agent (a child of PID 1 inside the sandbox) runs the command with ``/bin/sh -c``
  (string) or directly (argv), cwd /root, and returns exit code, stdout and stderr separately.
* write_file / read_file: through the agent, so reads see the merged overlay view.
* pause / resume: the cgroup freezer (v1 ``freezer.state`` or v2 ``cgroup.freeze``), polled
  until the kernel reports the group frozen. Processes and memory survive.
* checkpoint: freezes the sandbox, copies its writable layers (everything it wrote outside
  /tmp and /dev) with the fastest method the state directory's filesystem allows (reflink copy
  on btrfs/XFS, else tar with xattrs so overlay whiteouts survive), then thaws it. Memory is
  not captured.
* restore: a new sandbox whose writable layers start as the checkpoint.
* destroy: thaws, kills PID 1 (the kernel kills the rest of its pid namespace, and the
  mounts vanish with the namespace), waits for the exit, removes the cgroups and the directory.
  Idempotent, and works by id for sandboxes of other (dead) harness processes.

Spec limits enforced with cgroups: memory (memory_mb), processes (max_pids), CPU quota (cpus).
Isolation is container-grade (shared kernel), and the sandbox's root is real root: label it
so next to the microVM providers.

Needs root; without it the provider refuses to open with the reason (a user-namespace mode
is not implemented yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from providers.base import (
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
    ProviderError,
    SandboxCrashed,
    Unavailable,
    Unsupported,
)
from providers.nsbox import inside

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_GROUP = "sandbox-bench"
V1_CONTROLLERS = ("freezer", "memory", "pids", "cpu")
#: Top-level host directories that, when real directories, are overlaid read-only.
SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
SKELETON_DIRS = ("root", "home", "tmp", "proc", "dev", "sys", "run", "mnt", "srv", "opt",
                 "media", "var/tmp", "var/log", "var/cache", "var/lib")  # fmt: skip
SETTINGS = frozenset({"state_dir", "rootfs", "checkpoint_method"})
FREEZE_POLL_S = 0.0002
#: Agent sockets live here, not in the state directory: a unix socket path must stay under
#: 108 bytes, and a state directory may be deep. Not visible inside sandboxes.
SOCKET_DIR = Path("/run/sandbox-bench")


def agent_socket(sandbox_id: str) -> Path:
    return SOCKET_DIR / f"{sandbox_id}.sock"


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/sandbox-bench/local")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "sandbox-bench" / "local"


class Cgroups:
    """The sandbox's cgroups: v1 per-controller directories, or one v2 directory."""

    def __init__(self, sandbox_id: str, version: int) -> None:
        self.version = version
        if version == 1:
            self.dirs = {c: CGROUP_ROOT / c / CGROUP_GROUP / sandbox_id for c in V1_CONTROLLERS}
        else:
            self.dirs = {"v2": CGROUP_ROOT / CGROUP_GROUP / sandbox_id}

    def create(self, spec: SandboxSpec) -> None:
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        memory = spec.memory_mb * 1024 * 1024
        quota = int(spec.cpus * 100_000)
        if self.version == 1:
            _write(self.dirs["memory"] / "memory.limit_in_bytes", str(memory))
            if spec.max_pids:
                _write(self.dirs["pids"] / "pids.max", str(spec.max_pids))
            _write(self.dirs["cpu"] / "cpu.cfs_period_us", "100000")
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(quota))
        else:
            d = self.dirs["v2"]
            _write(d / "memory.max", str(memory))
            if spec.max_pids:
                _write(d / "pids.max", str(spec.max_pids))
            _write(d / "cpu.max", f"{quota} 100000")

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs.values()]

    @property
    def freeze_file(self) -> Path:
        return (
            self.dirs["freezer"] / "freezer.state"
            if self.version == 1
            else self.dirs["v2"] / "cgroup.freeze"
        )

    def freeze(self) -> None:
        if self.version == 1:
            _write(self.freeze_file, "FROZEN")
            while self.freeze_file.read_text().strip() != "FROZEN":
                time.sleep(FREEZE_POLL_S)
        else:
            _write(self.freeze_file, "1")
            events = self.dirs["v2"] / "cgroup.events"
            while "frozen 1" not in events.read_text():
                time.sleep(FREEZE_POLL_S)

    def thaw(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            _write(self.freeze_file, "THAWED" if self.version == 1 else "0")

    def empty(self) -> bool:
        for d in self.dirs.values():
            with contextlib.suppress(FileNotFoundError):
                if (d / "cgroup.procs").read_text().strip():
                    return False
        return True

    def remove(self) -> None:
        for d in self.dirs.values():
            for _ in range(200):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.005)


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def detect_cgroup_version() -> int | None:
    if (CGROUP_ROOT / "freezer").is_dir() and (CGROUP_ROOT / "memory").is_dir():
        return 1
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text():
        return 2
    return None


def fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            mount_point = fields[1]
            if str(path).startswith(mount_point) and len(mount_point) >= len(best):
                best, kind = mount_point, fields[2]
    return kind


class LocalProvider(Provider):
    id: ClassVar[str] = "local"

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        super().__init__(settings)
        unknown = sorted(set(self.settings) - SETTINGS)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(SETTINGS))})"
            )
        self.state_dir = Path(self.settings.get("state_dir") or default_state_dir()).absolute()
        rootfs = self.settings.get("rootfs")
        self.rootfs = Path(rootfs).absolute() if rootfs else None
        if self.rootfs is not None and not (self.rootfs / "bin").exists():
            raise ValueError(f"rootfs {self.rootfs} does not look like a root directory")
        method = self.settings.get("checkpoint_method", "auto")
        if method not in ("auto", "tar", "reflink"):
            raise ValueError(f"checkpoint_method must be auto, tar or reflink, got {method!r}")
        self._method_setting = method
        self.cgroup_version = detect_cgroup_version()
        self._zygote: asyncio.subprocess.Process | None = None
        self._replies: dict[int, asyncio.Future[dict]] = {}
        self._exits: dict[int, asyncio.Event] = {}
        self._requests = 0
        self._reader: asyncio.Task[None] | None = None
        self._sandboxes: dict[str, dict[str, Any]] = {}
        self._overlay_dirs: list[str] = []
        self._checkpoint_method = "tar"

    # -- description ------------------------------------------------------------------------

    def _why_not(self) -> str | None:
        if sys.platform != "linux":
            return "needs Linux (namespaces, overlayfs, cgroups)"
        if os.geteuid() != 0:
            return "needs root (a user-namespace mode is not implemented yet)"
        if self.cgroup_version is None:
            return "no cgroup freezer/memory controller found"
        return None

    def capabilities(self) -> Capabilities:
        why = self._why_not()
        required = {Op.CREATE, Op.EXEC, Op.WRITE_FILE, Op.READ_FILE, Op.DESTROY, Op.LIST}
        if why:
            reasons = {str(op): why for op in (Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME)}
            return Capabilities(operations=frozenset(required), isolation="unavailable: " + why,
                                scratch_dir="/root", unsupported=reasons)  # fmt: skip
        return Capabilities(
            operations=frozenset(required | {Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME}),
            checkpoint_captures=CheckpointCaptures.FILESYSTEM,
            restore_target=RestoreTarget.NEW_SANDBOX,
            pause_kind=PauseKind.FREEZE,
            isolation="linux namespaces + overlayfs (shared kernel, container-grade)",
            scratch_dir="/root",
            notes={
                "checkpoint_method": self._detect_checkpoint_method(),
                "checkpoint_scope": "the sandbox's writable layers; /tmp is a private tmpfs "
                "and is not captured; memory is not captured",
                "limits": "memory_mb, max_pids and cpus enforced with cgroups "
                f"v{self.cgroup_version}",
                "stderr": "separate from stdout",
            },
        )

    def environment(self) -> dict[str, Any]:
        return {
            "sdk_versions": {},
            "kernel": os.uname().release,
            "cgroup_version": self.cgroup_version,
            "state_dir": str(self.state_dir),
            "state_fs": fs_type(self.state_dir),
            "checkpoint_method": self._detect_checkpoint_method(),
            "rootfs": str(self.rootfs) if self.rootfs else "host /usr and /etc (read-only)",
            "mode": "root",
        }

    def _detect_checkpoint_method(self) -> str:
        if self._method_setting != "auto":
            return self._method_setting
        return "reflink" if fs_type(self.state_dir) in ("btrfs", "xfs") else "tar"

    # -- set-up -----------------------------------------------------------------------------

    async def open(self) -> None:
        why = self._why_not()
        if why:
            raise Unsupported(f"local provider unavailable here: {why}", provider=self.id)
        for sub in ("sandboxes", "checkpoints"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prepare_skeleton()
        self._checkpoint_method = self._detect_checkpoint_method()
        root = Path(__file__).resolve().parents[2]
        self._zygote = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "providers.nsbox.zygote",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            cwd=str(root), env={**os.environ, "PYTHONPATH": str(root)},
            limit=1 << 20,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read_zygote())

    def _prepare_skeleton(self) -> None:
        skeleton = self.state_dir / "skeleton"
        self._overlay_dirs = []
        for name in SYSTEM_DIRS:
            host = Path("/") / name
            if host.is_symlink():
                link = skeleton / name
                if not link.is_symlink():
                    skeleton.mkdir(parents=True, exist_ok=True)
                    with contextlib.suppress(FileNotFoundError):
                        link.unlink()
                    link.symlink_to(os.readlink(host))
            elif host.is_dir():
                (skeleton / name).mkdir(parents=True, exist_ok=True)
                self._overlay_dirs.append(name)
        for name in SKELETON_DIRS:
            (skeleton / name).mkdir(parents=True, exist_ok=True)
        (skeleton / "tmp").chmod(0o1777)
        (skeleton / "root").chmod(0o700)

    async def _read_zygote(self) -> None:
        assert self._zygote and self._zygote.stdout
        while True:
            line = await self._zygote.stdout.readline()
            if not line:
                break
            message = json.loads(line)
            if "req" in message:
                future = self._replies.pop(message["req"], None)
                if future and not future.done():
                    future.set_result(message)
            elif message.get("event") == "exit":
                self._exits.setdefault(message["pid"], asyncio.Event()).set()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(Unavailable("the zygote died", provider=self.id))

    async def _ask(self, request: dict) -> dict:
        if (
            self._zygote is None
            or self._zygote.stdin is None
            or self._zygote.returncode is not None
        ):
            raise Unavailable("provider is not open", provider=self.id)
        self._requests += 1
        request["req"] = self._requests
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._replies[self._requests] = future
        self._zygote.stdin.write((json.dumps(request) + "\n").encode())
        await self._zygote.stdin.drain()
        return await future

    async def close(self) -> None:
        if self._zygote is not None and self._zygote.stdin is not None:
            # EOF: the zygote destroys whatever is still alive, then exits.
            self._zygote.stdin.close()
            try:
                await asyncio.wait_for(self._zygote.wait(), timeout=30)
            except TimeoutError:
                self._zygote.kill()
                await self._zygote.wait()
        if self._reader is not None:
            await self._reader
        self._zygote = None

    # -- operations -------------------------------------------------------------------------

    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return self.state_dir / "sandboxes" / sandbox_id

    async def create(self, spec: SandboxSpec, *, upper_from: Path | None = None) -> Sandbox:
        sandbox_id = "sb-" + secrets.token_hex(6)
        base = self._sandbox_dir(sandbox_id)
        cgroups = Cgroups(sandbox_id, self.cgroup_version or 1)
        try:
            self._prepare_dirs(base, spec, upper_from)
            cgroups.create(spec)
            plan = {
                "dir": str(base),
                "skeleton": str(self.state_dir / "skeleton"),
                "rootfs": str(self.rootfs) if self.rootfs else None,
                "overlay_dirs": [] if self.rootfs else self._overlay_dirs,
                "hostname": sandbox_id,
                "socket": str(agent_socket(sandbox_id)),
                "cgroup_procs": cgroups.procs_files,
                "cgroup_dirs": [str(d) for d in cgroups.dirs.values()],
                "freezer_state": [str(cgroups.freeze_file)],
                "thaw_value": "THAWED" if cgroups.version == 1 else "0",
            }
            reply = await self._ask({"op": "spawn", "plan": plan})
            if "error" in reply:
                raise ProviderError(f"sandbox set-up failed: {reply['error']}", provider=self.id,
                                    operation="create")  # fmt: skip
        except BaseException:
            cgroups.remove()
            agent_socket(sandbox_id).unlink(missing_ok=True)
            shutil.rmtree(base, ignore_errors=True)
            raise
        pid = int(reply["pid"])
        (base / "pid").write_text(f"{pid} {_start_time(pid)}")
        self._sandboxes[sandbox_id] = {"pid": pid, "cgroups": cgroups, "dir": base}
        return Sandbox(id=sandbox_id, provider=self.id)

    def _prepare_dirs(self, base: Path, spec: SandboxSpec, upper_from: Path | None) -> None:
        base.mkdir(parents=True)
        (base / "labels.json").write_text(json.dumps(dict(spec.labels)))
        layers = ["_root", *([] if self.rootfs else self._overlay_dirs)]
        if upper_from is not None:
            self._copy_layers(upper_from, base / "upper")
        for layer in layers:
            (base / "upper" / layer).mkdir(parents=True, exist_ok=True)
            (base / "work" / layer).mkdir(parents=True, exist_ok=True)
        (base / "merged").mkdir()

    def _copy_layers(self, source: Path, dest: Path) -> None:
        if source.suffix == ".tar":
            dest.mkdir(parents=True)
            _run(["tar", "--xattrs", "--xattrs-include=*", "-xpf", str(source), "-C", str(dest)])
        else:
            _run(["cp", "-a", "--reflink=always", str(source), str(dest)])

    def _live(self, sandbox: Sandbox) -> dict[str, Any]:
        try:
            return self._sandboxes[sandbox.id]
        except KeyError:
            raise NotFound(f"no live sandbox {sandbox.id}", provider=self.id) from None

    async def _agent(
        self, sandbox: Sandbox, header: dict, payload: bytes = b""
    ) -> tuple[dict, bytes]:
        self._live(sandbox)
        path = str(agent_socket(sandbox.id))
        try:
            reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SandboxCrashed(f"agent of {sandbox.id} is gone", provider=self.id) from exc
        try:
            raw = json.dumps(header).encode()
            writer.write(inside.HEADER.pack(len(raw)) + raw + inside.PAYLOAD.pack(len(payload)))
            if payload:
                writer.write(payload)
            await writer.drain()
            (size,) = inside.HEADER.unpack(await reader.readexactly(inside.HEADER.size))
            answer = json.loads(await reader.readexactly(size))
            (length,) = inside.PAYLOAD.unpack(await reader.readexactly(inside.PAYLOAD.size))
            body = await reader.readexactly(length) if length else b""
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise SandboxCrashed(f"agent of {sandbox.id} died mid-call", provider=self.id) from exc
        finally:
            writer.close()
        error = answer.get("error")
        if error == "not_found":
            raise NotFound(answer.get("message", ""), provider=self.id)
        if error == "timeout":
            raise OperationTimeout(answer.get("message", ""), provider=self.id, operation="exec")
        if error:
            raise ProviderError(f"{error}: {answer.get('message', '')}", provider=self.id)
        return answer, body

    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        request: dict[str, Any] = {"op": "exec", "timeout": timeout_s}
        if isinstance(command, str):
            request["cmd"] = command
        else:
            request["argv"] = list(command)
        answer, body = await self._agent(sandbox, request)
        split = len(body) - int(answer["stderr_len"])
        return ExecResult(
            exit_code=int(answer["exit_code"]), stdout=body[:split], stderr=body[split:]
        )

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        await self._agent(sandbox, {"op": "write", "path": path}, data)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        _, body = await self._agent(sandbox, {"op": "read", "path": path})
        return body

    async def pause(self, sandbox: Sandbox) -> None:
        self._live(sandbox)["cgroups"].freeze()

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        self._live(sandbox)["cgroups"].thaw()
        return sandbox

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        state = self._live(sandbox)
        ckpt_id = "ck-" + secrets.token_hex(6)
        cgroups: Cgroups = state["cgroups"]
        upper = state["dir"] / "upper"
        if self._checkpoint_method == "tar":
            target = self.state_dir / "checkpoints" / f"{ckpt_id}.tar"
            argv = [
                "tar",
                "--xattrs",
                "--xattrs-include=*",
                "-cf",
                str(target),
                "-C",
                str(upper),
                ".",
            ]
        else:
            target = self.state_dir / "checkpoints" / ckpt_id
            argv = ["cp", "-a", "--reflink=always", str(upper), str(target)]
        cgroups.freeze()
        try:
            proc = await asyncio.create_subprocess_exec(*argv, stderr=subprocess.PIPE)
            _, err = await proc.communicate()
        finally:
            cgroups.thaw()
        if proc.returncode != 0:
            _remove(target)
            raise ProviderError(f"checkpoint copy failed: {err.decode(errors='replace')[:300]}",
                                provider=self.id, operation="checkpoint")  # fmt: skip
        return CheckpointRef(id=ckpt_id, provider=self.id, sandbox_id=sandbox.id, native=target)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        source = Path(ref.native) if ref.native else self._find_checkpoint(ref.id)
        if not source.exists():
            raise NotFound(f"no checkpoint {ref.id}", provider=self.id, operation="restore")
        labels = {}
        with contextlib.suppress(OSError, ValueError):
            labels = json.loads((self._sandbox_dir(ref.sandbox_id) / "labels.json").read_text())
        return await self.create(SandboxSpec(labels=labels), upper_from=source)

    def _find_checkpoint(self, ckpt_id: str) -> Path:
        tar = self.state_dir / "checkpoints" / f"{ckpt_id}.tar"
        return tar if tar.exists() else self.state_dir / "checkpoints" / ckpt_id

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        _remove(Path(ref.native) if ref.native else self._find_checkpoint(ref.id))

    async def destroy(self, sandbox: Sandbox) -> None:
        state = self._sandboxes.pop(sandbox.id, None)
        if state is None:
            await asyncio.to_thread(
                destroy_by_id, self.state_dir, sandbox.id, self.cgroup_version or 1
            )
            return
        pid, cgroups, base = state["pid"], state["cgroups"], state["dir"]
        exited = self._exits.setdefault(pid, asyncio.Event())
        cgroups.thaw()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        try:
            await asyncio.wait_for(exited.wait(), timeout=30)
        except TimeoutError:
            raise ProviderError(f"{sandbox.id} did not exit after SIGKILL", provider=self.id,
                                operation="destroy") from None  # fmt: skip
        self._exits.pop(pid, None)
        deadline = time.monotonic() + 10
        # The kernel empties the cgroup as the namespace's processes finish dying; it sends
        # no event we could await, so poll briefly.
        while not cgroups.empty() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        cgroups.remove()
        agent_socket(sandbox.id).unlink(missing_ok=True)
        await asyncio.to_thread(shutil.rmtree, base, True)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        found = []
        folder = self.state_dir / "sandboxes"
        if not folder.exists():
            return []
        for entry in folder.iterdir():
            with contextlib.suppress(OSError, ValueError):
                labels = json.loads((entry / "labels.json").read_text())
                if labels.get(RUN_LABEL) == run_id:
                    found.append(entry.name)
        return sorted(found)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks: with the pid, it names one process uniquely."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def destroy_by_id(state_dir: Path, sandbox_id: str, cgroup_version: int) -> None:
    """Destroy a sandbox this process did not create (a reaper, or after a crash)."""
    base = state_dir / "sandboxes" / sandbox_id
    cgroups = Cgroups(sandbox_id, cgroup_version)
    cgroups.thaw()
    with contextlib.suppress(OSError, ValueError):
        pid_text, started = (base / "pid").read_text().split()
        pid = int(pid_text)
        if _start_time(pid) == started:  # not a recycled pid
            os.kill(pid, 9)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _start_time(pid) == started:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    break
                time.sleep(0.005)
    deadline = time.monotonic() + 10
    while not cgroups.empty() and time.monotonic() < deadline:
        time.sleep(0.005)
    cgroups.remove()
    agent_socket(sandbox_id).unlink(missing_ok=True)
    shutil.rmtree(base, ignore_errors=True)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, check=False)
    if result.returncode != 0:
        raise ProviderError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')[:300]}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


__all__ = ["LocalProvider", "destroy_by_id"]
