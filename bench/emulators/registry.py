"""The emulators' registry and option values, apart from the server code (aiohttp), so that
the main CLI can declare ``emulate`` and the toolkit can use them without an import cycle."""

from __future__ import annotations

import importlib
from typing import Any

#: Every fault kind, in the order ``--fault-kinds`` lists them by default (the toolkit's
#: docstring says what each does). Kept here, with the other option values, so that the
#: main CLI can declare ``emulate`` without importing the server (aiohttp).
FAULT_KINDS = ("500", "503", "429", "reset", "hang", "malformed")
LATENCY_MODES = ("added", "total")
BACKENDS = ("local", "stub")


def fault_kind(value: object) -> str:
    """A fault kind: ``reset``, ``hang``, ``malformed`` or an HTTP error status (400-599)."""
    kind = str(value).strip().lower()
    if kind in FAULT_KINDS or (kind.isdigit() and 400 <= int(kind) <= 599):
        return kind
    raise ValueError(
        f"unknown fault kind {value!r} (known: reset, hang, malformed, or a status 400-599)"
    )


#: provider id -> (module, class) of its emulated wire protocol.
PROTOCOLS: dict[str, tuple[str, str]] = {
    "e2b": ("bench.emulators.e2b", "E2BEmulator"),
    "daytona": ("bench.emulators.daytona", "DaytonaEmulator"),
    "sprites": ("bench.emulators.sprites", "SpritesEmulator"),
    "runloop": ("bench.emulators.runloop", "RunloopEmulator"),
    "codesandbox": ("bench.emulators.codesandbox", "TogetherEmulator"),
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
    "PROTOCOLS",
    "UnknownEmulator",
    "fault_kind",
    "protocol_class",
]
