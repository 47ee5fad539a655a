"""``stub``: sandboxes that are only names, for testing what sits above the providers.

No process runs, nothing needs root, no network is used, and every operation takes a few
microseconds, so the runner, the report, the cluster and the emulators' own overhead can be
tested (and calibrated) on any machine. libcloud's ``DummyNodeDriver`` plays the same part
there. It is **not** a sandbox: its numbers measure the harness, never a provider.

What each operation means here:

* ``create``: a new id ``stub-<12 hex>`` holding the spec's labels; nothing is started.
* ``exec``: nothing runs; every command "exits" 0 with empty stdout and stderr (so ``true``
  works and ``echo`` prints nothing). Workloads that check a command's output (fidelity
  checks, the probe) therefore record failed checks here, as they should.
* ``write_file`` / ``read_file``: bytes kept in memory per sandbox, byte-exact; reading a file
  never written is NotFound.
* ``checkpoint``: a copy of the sandbox's files (CheckpointCaptures.FILESYSTEM);
  ``restore``: a **new** sandbox (same labels) holding that copy; ``delete_checkpoint``
  forgets it (idempotent).
* ``pause`` / ``resume``: accepted and recorded; nothing runs, so nothing could change
  (declared PauseKind.FREEZE). ``resume`` returns the same handle.
* ``destroy``: forgets the sandbox; idempotent. Any other operation on an unknown or destroyed
  sandbox is NotFound. ``list_sandboxes(run_id)``: the live sandboxes labelled with the run.

It is registered (``providers.REGISTRY``) so that ``sandbox-bench run --providers stub`` and
Dask workers, which build providers by id, run without root; the emulators use it as their
``--backend stub``. It has no settings, no credentials and no price.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar

from providers import base
from providers.base import CheckpointRef, Sandbox, SandboxSpec
from providers.errors import NotFound
from providers.settings import parse


@dataclass(frozen=True, kw_only=True)
class StubSettings:
    """The stub has no settings; any key is refused like an unknown key of any adapter."""


@dataclass
class _Box:
    labels: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    paused: bool = False


class StubProvider(base.Provider):
    """Sandboxes that are only names (see the module docstring)."""

    id: ClassVar[str] = "stub"

    def __init__(self, settings: Any = None) -> None:
        super().__init__(settings)
        parse(StubSettings, self.settings, where=f"providers.{self.id}")
        self._boxes: dict[str, _Box] = {}
        self._checkpoints: dict[str, _Box] = {}

    async def close(self) -> None:
        self._boxes.clear()
        self._checkpoints.clear()

    def capabilities(self) -> base.Capabilities:
        return base.Capabilities(
            operations=base.REQUIRED_OPS | (base.OPTIONAL_OPS - {base.Op.FORK}),
            checkpoint_captures=base.CheckpointCaptures.FILESYSTEM,
            restore_target=base.RestoreTarget.NEW_SANDBOX,
            pause_kind=base.PauseKind.FREEZE,
            isolation="none: a stub, nothing runs (for testing the harness)",
            scratch_dir="/tmp",
            unsupported={str(base.Op.FORK): "the stub does not fork"},
            notes={"exec": "nothing runs: every command exits 0 with no output"},
        )

    def environment(self) -> dict[str, Any]:
        return {**super().environment(), "backend": "stub"}

    def _box(self, sandbox: Sandbox | str) -> _Box:
        sandbox_id = sandbox if isinstance(sandbox, str) else sandbox.id
        try:
            return self._boxes[sandbox_id]
        except KeyError:
            raise NotFound(f"no stub sandbox {sandbox_id}", provider=self.id) from None

    def _new(self, box: _Box) -> Sandbox:
        sandbox_id = "stub-" + secrets.token_hex(6)
        self._boxes[sandbox_id] = box
        return Sandbox(id=sandbox_id, provider=self.id)

    async def create(self, spec: SandboxSpec) -> Sandbox:
        return self._new(_Box(labels=dict(spec.labels)))

    async def exec(
        self, sandbox: Sandbox, command: base.Command, *, timeout_s: float
    ) -> base.ExecResult:
        self._box(sandbox)
        return base.ExecResult(exit_code=0, stdout=b"", stderr=b"")

    async def write_file(self, sandbox: Sandbox, path: str, data: bytes) -> None:
        self._box(sandbox).files[path] = bytes(data)

    async def read_file(self, sandbox: Sandbox, path: str) -> bytes:
        files = self._box(sandbox).files
        if path not in files:
            raise NotFound(f"no file {path}", provider=self.id, operation=base.Op.READ_FILE)
        return files[path]

    async def destroy(self, sandbox: Sandbox) -> None:
        self._boxes.pop(sandbox.id, None)

    async def list_sandboxes(self, run_id: str) -> list[str]:
        return sorted(
            i for i, box in self._boxes.items() if box.labels.get(base.RUN_LABEL) == run_id
        )

    async def checkpoint(self, sandbox: Sandbox) -> CheckpointRef:
        ref_id = "stubcp-" + secrets.token_hex(6)
        self._checkpoints[ref_id] = copy.deepcopy(self._box(sandbox))
        return CheckpointRef(id=ref_id, provider=self.id, sandbox_id=sandbox.id)

    async def restore(self, ref: CheckpointRef) -> Sandbox:
        try:
            saved = self._checkpoints[ref.id]
        except KeyError:
            raise NotFound(f"no stub checkpoint {ref.id}", provider=self.id) from None
        return self._new(_Box(labels=dict(saved.labels), files=dict(saved.files)))

    async def delete_checkpoint(self, ref: CheckpointRef) -> None:
        self._checkpoints.pop(ref.id, None)

    async def pause(self, sandbox: Sandbox) -> None:
        self._box(sandbox).paused = True

    async def resume(self, sandbox: Sandbox) -> Sandbox:
        self._box(sandbox).paused = False
        return sandbox


__all__ = ["StubProvider", "StubSettings"]
