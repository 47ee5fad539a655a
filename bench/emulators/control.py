"""Starting, driving and stopping emulators from another process (tests, benchmarks, tools).

:func:`running` starts ``python -m bench.emulators PROVIDER ...`` (the ``sandbox-bench emulate``
command without the rest of the CLI, so it starts fast), waits for its header line and stops it
by process id on exit; :class:`Emulator` is the running emulator as a client sees it: its URL,
its ``client_env()`` and the admin API (faults, config, call log, live sandboxes, semantic
faults). The semantic faults (``--misbehave``, :class:`bench.emulators.toolkit.Misbehaving`)
are an option of :func:`running` and :func:`emulator_args`, and :meth:`Emulator.misbehave`
switches them while the emulator runs, so one emulator process serves a test of each.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.calibration import LatencyModel
from bench.emulators.registry import protocol_class
from bench.emulators.toolkit import ADMIN_PREFIX

PR_SET_PDEATHSIG = 1
#: Set by :func:`start_process`: the pid of the process the emulator must not outlive.
PARENT_ENV = "SANDBOX_BENCH_EMULATOR_PARENT"
#: How a header line (``toolkit.HEADER``) names the provider and the URL.
HEADER_RE = re.compile(r"^# (?P<name>\S+) emulator on (?P<url>http://\S+)")


@dataclass(frozen=True)
class Emulator:
    """A running emulator, as seen by a client."""

    name: str
    url: str
    pid: int
    token: str
    #: The emulator's state directory (its local sandboxes live under ``local/``).
    state_dir: Path | None = None

    def client_env(self) -> dict[str, str]:
        """The environment that points the provider's adapter (and SDK) here."""
        return protocol_class(self.name).client_env(self.url, self.token)

    async def inject(
        self,
        status: int | None = None,
        *,
        kind: str | None = None,
        count: int = 1,
        match: str = "",
        skip: int = 0,
    ) -> None:
        """Queue ``count`` faults (a status code or a ``kind``) for paths containing ``match``,
        after letting ``skip`` such calls through."""
        chosen = kind if kind is not None else status
        if chosen is None:
            raise ValueError("give a status or a kind")
        body = {"kind": str(chosen), "count": count, "match": match, "skip": skip}
        await self._admin("POST", "faults", body)

    async def clear_faults(self) -> None:
        """Drop the faults still queued."""
        await self._admin("DELETE", "faults")

    async def live_sandboxes(self) -> list[str]:
        return list((await self._admin("GET", "sandboxes"))["sandboxes"])

    async def stored_checkpoints(self) -> list[str]:
        """Ids of the checkpoints the emulator stores (its truth, not the API's listings)."""
        return list((await self._admin("GET", "sandboxes"))["checkpoints"])

    async def config(self) -> dict[str, Any]:
        return await self._admin("GET", "config")

    async def configure(
        self,
        *,
        latency: LatencyModel | None = None,
        latency_match: str | None = None,
        latency_mode: str | None = None,
        fault_rate: float | None = None,
        fault_kinds: Sequence[str] | None = None,
        hang_s: float | None = None,
        seed: int | None = None,
        misbehave: Sequence[str] | None = None,
        wake_s: float | None = None,
        wake_after_s: float | None = None,
    ) -> dict[str, Any]:
        """Change the latency model, the random faults, the seed or the semantic faults
        (``misbehave``: every one on from now, ``()`` for none) while the emulator runs."""
        body: dict[str, Any] = {}
        if misbehave is not None:
            body["misbehave"] = list(misbehave)
        if wake_s is not None:
            body["wake_s"] = wake_s
        if wake_after_s is not None:
            body["wake_after_s"] = wake_after_s
        if seed is not None:
            body["seed"] = seed
        if latency is not None:
            body["latency"] = latency.to_dict()
        if latency_match is not None:
            body["latency_match"] = latency_match
        if latency_mode is not None:
            body["latency_mode"] = latency_mode
        faults: dict[str, Any] = {"rate": fault_rate, "hang_s": hang_s}
        if fault_kinds is not None:
            faults["kinds"] = list(fault_kinds)
        body["faults"] = {k: v for k, v in faults.items() if v is not None}
        return await self._admin("POST", "config", body)

    async def misbehave(self, *modes: str, **timing: float) -> dict[str, Any]:
        """Switch exactly these semantic faults on (none: the emulator is faithful again);
        ``wake_s`` / ``wake_after_s`` may come along."""
        return await self.configure(misbehave=modes, **timing)

    async def calls(self) -> list[dict[str, Any]]:
        """Every provider call the emulator saw since start or :meth:`clear_calls`."""
        return list((await self._admin("GET", "log"))["calls"])

    async def clear_calls(self) -> None:
        await self._admin("DELETE", "log")

    def local_sandboxes(self) -> list[str]:
        """Local sandbox directories the emulator's backend still has (``local`` backend)."""
        if self.state_dir is None:
            return []
        from providers.local.provider import SANDBOX_ID

        root = self.state_dir / "local" / "sandboxes"
        if not root.is_dir():
            return []
        return sorted(e.name for e in root.iterdir() if SANDBOX_ID.match(e.name))

    async def _admin(self, method: str, what: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, f"{self.url}{ADMIN_PREFIX}{what}", data=data) as r,
        ):
            r.raise_for_status()
            return await r.json()


def emulator_args(
    *,
    latency: LatencyModel | None = None,
    latency_match: str = "",
    latency_mode: str = "added",
    fault_rate: float = 0.0,
    fault_kinds: Sequence[str] = (),
    hang_s: float | None = None,
    seed: int | None = None,
    backend: str = "local",
    misbehave: Sequence[str] = (),
    wake_s: float | None = None,
    wake_after_s: float | None = None,
) -> list[str]:
    """Command-line options of ``emulate`` for the latency model, faults, seed, backend and
    semantic faults."""
    args: list[str] = []
    if misbehave:
        args += ["--misbehave", ",".join(misbehave)]
    if wake_s is not None:
        args += ["--wake-s", repr(wake_s)]
    if wake_after_s is not None:
        args += ["--wake-after-s", repr(wake_after_s)]
    if latency_match:
        args += ["--latency-match", latency_match]
    if latency_mode != "added":
        args += ["--latency-mode", latency_mode]
    if latency is not None:
        args += ["--latency-ms", repr(latency.fixed_s * 1000.0)]
        if latency.median_s is not None and latency.p99_s is not None:
            args += ["--latency-median-ms", repr(latency.median_s * 1000.0)]
            args += ["--latency-p99-ms", repr(latency.p99_s * 1000.0)]
        if latency.stalls:
            args += ["--stall-prob", repr(latency.stall_probability)]
            args += ["--stall-ms", repr(latency.stall_s * 1000.0)]
    if fault_rate:
        args += ["--fault-rate", repr(fault_rate)]
    if fault_kinds:
        args += ["--fault-kinds", ",".join(fault_kinds)]
    if hang_s is not None:
        args += ["--hang-s", repr(hang_s)]
    if seed is not None:
        args += ["--seed", str(seed)]
    if backend != "local":
        args += ["--backend", backend]
    return args


async def read_header(stdout: asyncio.StreamReader, name: str, *, timeout_s: float) -> str:
    """The URL from an emulator's header line; RuntimeError if it says anything else first."""
    line = await asyncio.wait_for(stdout.readline(), timeout=timeout_s)
    text = line.decode(errors="replace").strip()
    found = HEADER_RE.match(text)
    if found is None or found["name"] != name:
        raise RuntimeError(f"emulator {name} did not start (said {text!r})")
    return found["url"]


def terminate_with_parent() -> None:
    """In an emulator started by :func:`start_process`: SIGTERM when the process that started
    it dies (Linux ``PR_SET_PDEATHSIG``), so an emulator whose starter was killed still
    destroys its sandboxes. Done by the child itself, not in a ``preexec_fn`` (unsafe in a
    parent with threads); a parent already gone by then counts as gone."""
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None:
        return
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def start_process(
    name: str, argv: Sequence[str], *, new_session: bool = False
) -> asyncio.subprocess.Process:
    """``python -m bench.emulators NAME ARGV...`` with stdout piped (the package importable);
    the child gets SIGTERM if this process dies. ``new_session``: signals sent to this
    terminal's foreground group (Ctrl-C) do not reach it."""
    root = Path(__file__).resolve().parents[2]
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else str(root),
           PARENT_ENV: str(os.getpid())}  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.emulators", name, *argv,
        stdout=asyncio.subprocess.PIPE, env=env, start_new_session=new_session,
    )  # fmt: skip


async def stop_process(proc: asyncio.subprocess.Process, *, grace_s: float = 30.0) -> None:
    """SIGTERM (the emulator then destroys what it holds), SIGKILL after ``grace_s``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


@contextlib.asynccontextmanager
async def running(
    name: str,
    state_dir: Path,
    *,
    latency_ms: float = 0.0,
    token: str = "test-token",
    misbehave: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> AsyncIterator[Emulator]:
    """Start provider ``name``'s emulator as a subprocess; stop it by pid on exit.

    Its state goes to ``state_dir/<name>``. ``misbehave``: the semantic faults it starts with
    (:meth:`Emulator.misbehave` changes them later). ``extra_args`` are more ``emulate``
    options (see :func:`emulator_args`); an option given there wins over ``latency_ms``.
    """
    argv = ["--port", "0", "--state-dir", str(state_dir), "--latency-ms", str(latency_ms),
            "--token", token, *emulator_args(misbehave=misbehave), *extra_args]  # fmt: skip
    proc = await start_process(name, argv)
    try:
        assert proc.stdout is not None
        url = await read_header(proc.stdout, name, timeout_s=30)
        yield Emulator(
            name=name, url=url, pid=proc.pid, token=token, state_dir=Path(state_dir) / name
        )
    finally:
        await stop_process(proc, grace_s=20)


__all__ = ["Emulator", "emulator_args", "running"]
