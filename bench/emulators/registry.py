"""The emulators' registry and option values, apart from the server code (aiohttp), so that
the main CLI can declare ``emulate`` and the toolkit can use them without an import cycle."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

#: Every fault kind, in the order ``--fault-kinds`` lists them by default (the toolkit's
#: docstring says what each does). Kept here, with the other option values, so that the
#: main CLI can declare ``emulate`` without importing the server (aiohttp).
FAULT_KINDS = ("500", "503", "429", "reset", "hang", "malformed")
LATENCY_MODES = ("added", "total")
BACKENDS = ("local", "stub")

#: The semantic faults (``--misbehave``): the provider answers "ok" and does the wrong thing.
#: What each one does is specified in ``bench.emulators.toolkit.Misbehaving``.
MISBEHAVIOURS: dict[str, str] = {
    "pause-runs": "pause answers ok and freezes nothing: processes keep running",
    "stop-keeps": "stop/start answers ok and keeps every process (and memory) running",
    "restore-empty": "a restore brings back none of the files written before the checkpoint",
    "restore-partial": "a restore brings back some: every other file missing, one cut to half",
    "snapshot-pending": "a snapshot stays pending forever (where the API has no pending "
    "state, the checkpoint call never answers)",
    "create-recycled": "create hands back the last destroyed sandbox, files and processes kept",
    "create-undersized": "create gives half the CPUs (CPU affinity) and half the memory",
    "destroy-leaks": "the first destroy of a sandbox answers ok and leaves it alive and listed",
    "delete-leaks": "the first delete of a snapshot answers ok and keeps it, listed and usable",
    "list-omits": "every listing leaves out the newest live sandbox",
    "wake-slow": "the first call after an idle of --wake-after-s waits --wake-s first",
}


def fault_kind(value: object) -> str:
    """A fault kind: ``reset``, ``hang``, ``malformed`` or an HTTP error status (400-599)."""
    kind = str(value).strip().lower()
    if kind in FAULT_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599):
        return kind
    raise ValueError(
        f"unknown fault kind {value!r} (known: reset, hang, malformed, or a status 400-599)"
    )


def misbehaviours(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Semantic fault names from ``"a,b"`` or a list of names (``none`` or empty: none), in
    declaration order; ValueError names an unknown one."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = {str(item).strip().lower() for item in items} - {"", "none"}
    unknown = sorted(names - set(MISBEHAVIOURS))
    if unknown:
        raise ValueError(
            f"unknown semantic fault {unknown[0]!r} (known: {', '.join(MISBEHAVIOURS)})"
        )
    return tuple(name for name in MISBEHAVIOURS if name in names)


#: provider id -> (module, class) of its emulated wire protocol.
PROTOCOLS: dict[str, tuple[str, str]] = {
    "e2b": ("bench.emulators.e2b", "E2BEmulator"),
    "daytona": ("bench.emulators.daytona", "DaytonaEmulator"),
    "sprites": ("bench.emulators.sprites", "SpritesEmulator"),
    "runloop": ("bench.emulators.runloop", "RunloopEmulator"),
    "codesandbox": ("bench.emulators.codesandbox", "TogetherEmulator"),
    "vercel": ("bench.emulators.vercel", "VercelEmulator"),
    "modal": ("bench.emulators.modal", "ModalEmulator"),
    "northflank": ("bench.emulators.northflank", "NorthflankEmulator"),
}


class UnknownEmulator(KeyError):
    """No emulator is registered under that provider id."""

    def __str__(self) -> str:
        return f"no emulator for {self.args[0]!r} (emulated: {', '.join(sorted(PROTOCOLS))})"


def protocol_class(name: str) -> type[Any]:
    """The emulator protocol (a ``bench.emulators.toolkit.Protocol`` subclass) for provider
    ``name`` (:class:`UnknownEmulator` if none)."""
    try:
        module_name, class_name = PROTOCOLS[name]
    except KeyError:
        raise UnknownEmulator(name) from None
    cls: type[Any] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = [
    "BACKENDS",
    "FAULT_KINDS",
    "LATENCY_MODES",
    "MISBEHAVIOURS",
    "PROTOCOLS",
    "UnknownEmulator",
    "fault_kind",
    "misbehaviours",
    "protocol_class",
]
