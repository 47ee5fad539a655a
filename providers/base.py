"""The provider interface: what every sandbox provider adapter implements.

Adapters are thin. They translate one interface call into the provider's native call and the
provider's exceptions into :mod:`providers.errors`; they never time themselves (the runner
times every call in one place) and never retry a measured call.

Required operations are abstract methods. Optional ones (checkpoint, restore, pause, resume,
fork) are gated by the capability set the adapter declares in :meth:`Provider.capabilities`;
the runner checks the set before calling and records ``unsupported`` with the declared reason
otherwise, so an adapter does not write the operations it lacks: the default implementations
below raise Unsupported with that same reason (a guard against a runner bug).

Everything is async; ``asyncio.run`` appears once, in the CLI.
"""

from __future__ import annotations

import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from providers.errors import Unsupported
from providers.settings import setting

#: Label key carrying the run id on every sandbox the harness creates, so leftovers of a run
#: can be listed and reaped (PerfKit tags every resource with its run URI for the same reason).
RUN_LABEL = "sandbox-bench-run"
#: Label key with the UTC time (``%Y%m%dT%H%M%SZ``) after which a leftover may be reaped by
#: anyone: creation plus the spec's lifetime. Providers with a TTL also get the lifetime.
EXPIRES_LABEL = "sandbox-bench-expires"


class Op(StrEnum):
    """Interface operations. The optional ones appear in ``Capabilities.operations``."""

    CREATE = "create"
    EXEC = "exec"
    WRITE_FILE = "write_file"
    READ_FILE = "read_file"
    CHECKPOINT = "checkpoint"
    RESTORE = "restore"
    PAUSE = "pause"
    RESUME = "resume"
    FORK = "fork"
    DESTROY = "destroy"
    LIST = "list_sandboxes"


REQUIRED_OPS = frozenset({Op.CREATE, Op.EXEC, Op.WRITE_FILE, Op.READ_FILE, Op.DESTROY, Op.LIST})
OPTIONAL_OPS = frozenset({Op.CHECKPOINT, Op.RESTORE, Op.PAUSE, Op.RESUME, Op.FORK})


class CheckpointCaptures(StrEnum):
    """What a checkpoint holds."""

    FILESYSTEM = "filesystem"
    FILESYSTEM_AND_MEMORY = "filesystem+memory"


class RestoreTarget(StrEnum):
    """Where a restore lands."""

    IN_PLACE = "in_place"  # the same sandbox is rewound (Sprites)
    NEW_SANDBOX = "new_sandbox"  # a new sandbox starts from the checkpoint (E2B, Daytona, local)


class Deletion(StrEnum):
    """When a sandbox is gone after ``destroy`` returns."""

    SYNC = "sync"  # when destroy returns, the sandbox is gone (and no longer listed)
    #: destroy returns once the provider accepted the deletion; the sandbox goes later (it is
    #: gone when ``list_sandboxes`` no longer shows it). The runner then measures ``gone``.
    ASYNC = "async"


class PauseKind(StrEnum):
    """How a provider stops a sandbox from running without destroying it."""

    FREEZE = "freeze"  # explicit pause; processes and memory survive (cgroup freezer, E2B pause)
    STOP_START = "stop_start"  # stop and start; only the filesystem survives (Daytona containers)
    AUTO_SLEEP = "auto_sleep"  # no API; the provider sleeps on idle and wakes on use (Sprites)
    NONE = "none"


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a provider can do on this host, and what each operation means there.

    ``operations`` lists every supported operation, required ones included.
    ``unsupported`` maps each missing optional operation to the reason it is missing, so that
    ``sandbox-bench providers`` and the report can say why rather than just "no".
    """

    operations: frozenset[Op]
    checkpoint_captures: CheckpointCaptures | None = None
    restore_target: RestoreTarget | None = None
    pause_kind: PauseKind = PauseKind.NONE
    #: What a fork's children inherit from their parent (filesystem, or filesystem and
    #: memory with running processes); None when the provider cannot fork.
    fork_keeps: CheckpointCaptures | None = None
    #: How the children's state is made: "copy-on-write" or "copy" ("" when unknown).
    fork_method: str = ""
    isolation: str = ""
    #: Whether ``destroy`` returns before the sandbox is gone (see :class:`Deletion`).
    deletion: Deletion = Deletion.SYNC
    #: Whether :meth:`Provider.list_checkpoints` lists a run's checkpoints (leak sweeps).
    lists_checkpoints: bool = False
    #: A directory inside the sandbox that is writable and survives checkpoint/restore.
    scratch_dir: str = "/tmp"
    unsupported: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)

    def supports(self, op: Op) -> bool:
        return op in self.operations

    def to_dict(self) -> dict[str, Any]:
        return {
            "operations": sorted(str(o) for o in self.operations),
            "checkpoint_captures": self.checkpoint_captures and str(self.checkpoint_captures),
            "restore_target": self.restore_target and str(self.restore_target),
            "pause_kind": str(self.pause_kind),
            "fork_keeps": self.fork_keeps and str(self.fork_keeps),
            "fork_method": self.fork_method,
            "isolation": self.isolation,
            "deletion": str(self.deletion),
            "lists_checkpoints": self.lists_checkpoints,
            "scratch_dir": self.scratch_dir,
            "unsupported": dict(self.unsupported),
            "notes": dict(self.notes),
        }


@dataclass(frozen=True, kw_only=True)
class SandboxSpec:
    """The sandbox a workload asks for (``[spec]`` in bench.toml; each key declared below with
    its unit and sane range). Providers that cannot honour a field say so in notes."""

    cpus: float = setting(1.0, help="vCPUs per sandbox", unit="vCPU", minimum=0.1, maximum=256)
    memory_mb: int = setting(
        512, help="memory per sandbox", unit="MiB", minimum=16, maximum=262_144
    )
    disk_mb: int | None = setting(
        None, help="disk per sandbox (provider default when unset)", unit="MiB", minimum=1,
        maximum=1_000_000,
    )  # fmt: skip
    #: Provider-specific image, template or snapshot name; None means the provider's default.
    template: str | None = setting(
        None, help="provider image, template or snapshot name (provider default when unset)"
    )
    #: How long the provider may keep the sandbox alive if the harness dies (where supported).
    lifetime_s: int = setting(
        900, help="how long a sandbox may outlive a dead harness, where the provider has a "
        "TTL", unit="s", minimum=10, maximum=604_800,
    )  # fmt: skip
    #: Max processes inside the sandbox (local provider; pids cgroup).
    max_pids: int | None = setting(
        512, help="max processes inside a sandbox (local provider)", minimum=1, maximum=100_000
    )
    #: Set by the runner (run id, expiry), never by configuration.
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """A handle on a live sandbox. ``native`` is the adapter's own object (SDK handle)."""

    id: str
    provider: str
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class CheckpointRef:
    """A handle on a checkpoint (snapshot) of a sandbox."""

    id: str
    provider: str
    sandbox_id: str
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class ExecResult:
    """The outcome of a command. A non-zero exit code is data, never an exception.

    Providers that merge stderr into stdout (Daytona) return stderr empty and say so in notes.
    """

    exit_code: int
    stdout: bytes
    stderr: bytes


Command = Sequence[str] | str
"""An argv list (run without a shell) or a string (run by ``/bin/sh -c``)."""


class Provider(ABC):
    """Base class of all provider adapters.

    Lifecycle: construct with the provider's settings table from the config, ``await open()``
    (start clients, daemons), use, ``await close()``. ``close`` must not destroy sandboxes: the
    runner destroys what it created, one by one, so each destroy is timed and recorded.
    """

    #: Registry id, e.g. ``"local"``.
    id: ClassVar[str]
    #: Distribution names of the SDK packages this adapter drives; versions go in the manifest.
    sdk_packages: ClassVar[tuple[str, ...]] = ()
    #: Environment variables that must be set to use the provider (credentials).
    required_env: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: Mapping[str, Any] = dict(settings or {})

    # -- set-up and description -----------------------------------------------------------

    async def open(self) -> None:  # noqa: B027 - optional hook, most adapters need nothing
        """Start clients or helper processes. Called once before any operation."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and helper processes (not sandboxes)."""

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The capabilities on this host, detected (not assumed) where that is possible."""

    def environment(self) -> dict[str, Any]:
        """Facts for the manifest: SDK versions, endpoint, client settings. Never secrets."""
        return {"sdk_versions": sdk_versions(self.sdk_packages)}

    # -- required operations ----------------------------------------------------------------

    @abstractmethod
    async def create(self, spec: SandboxSpec) -> Sandbox:
        """Create a sandbox; return when the provider says it exists.

        Readiness is measured separately by the runner as the first successful exec.
        """

    @abstractmethod
    async def exec(self, sandbox: Sandbox, command: Command, *, timeout_s: float) -> ExecResult:
        """Run a command to completion and return its exit code and output."""

    @abstractmethod
    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        """Write ``data`` to the absolute ``path`` inside the sandbox, creating parents."""

    @abstractmethod
    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        """Return the content of the absolute ``path`` inside the sandbox."""

    @abstractmethod
    async def destroy(self, sandbox: Sandbox) -> None:
        """Destroy the sandbox. Idempotent: destroying a destroyed sandbox is not an error."""

    @abstractmethod
    async def list_sandboxes(self, run_id: str) -> list[str]:
        """Ids of live sandboxes labelled with ``run_id`` (for leak sweeps)."""

    # -- optional operations (gated by capabilities) ----------------------------------------

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        raise self.unsupported(Op.CHECKPOINT)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        """Restore ``ref``. In place: returns the same sandbox; otherwise a new one."""
        raise self.unsupported(Op.RESTORE)

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:  # noqa: B027 - optional
        """Free the checkpoint's storage where the provider allows it. Idempotent."""

    def unsupported(self, operation: Op) -> Unsupported:
        """The error for an optional operation this provider lacks, with the reason declared
        in ``capabilities().unsupported`` (the operation's name where none is)."""
        reason = self.capabilities().unsupported.get(str(operation), str(operation))
        return Unsupported(reason, provider=self.id, operation=operation)

    async def list_checkpoints(self, run_id: str) -> list[str]:
        """Ids of checkpoints of sandboxes labelled with ``run_id`` (for leak sweeps), where
        ``Capabilities.lists_checkpoints`` says the provider can list them. Without it the
        run's ledger is the only record of its checkpoints."""
        raise Unsupported("list_checkpoints", provider=self.id, operation="list_checkpoints")

    async def pause(self, sandbox: Sandbox) -> None:
        raise self.unsupported(Op.PAUSE)

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        """Resume a paused sandbox; returns the (possibly new) handle to use afterwards."""
        raise self.unsupported(Op.RESUME)

    async def fork(self, sandbox: Sandbox, *, count: int = 1) -> list[Sandbox]:
        """``count`` new sandboxes that start from ``sandbox``'s current state (what they
        inherit is ``Capabilities.fork_keeps``); the parent keeps running. Each child is a
        sandbox of its own, destroyed with :meth:`destroy`."""
        raise self.unsupported(Op.FORK)


def optional_str(settings: Mapping[str, Any], key: str) -> str | None:
    """A string setting of an adapter; None when absent or empty, ValueError when not a str."""
    value = settings.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def url_without_secrets(url: str) -> str:
    """``url`` without credentials, query or fragment, for manifests and reports; a text
    that is not a URL (no scheme) is returned as it is."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def sdk_versions(packages: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None where a package is not installed)."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found
