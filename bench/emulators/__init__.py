"""Loopback emulators of the cloud providers' wire protocols, shipped with the package.

Each cloud adapter is tested by pointing its real, pinned SDK at one of these: an aiohttp
server on 127.0.0.1 that speaks the provider's protocol over real local sandboxes. The shared
machinery (sandbox backend, latency, faults, admin API, call log, serving) is
:mod:`bench.emulators.toolkit`; each provider's module holds only its wire protocol. Start them
with ``sandbox-bench emulate PROVIDER[,PROVIDER...]|all`` (:mod:`bench.emulators.cli`); tests
start and drive them with :mod:`bench.emulators.control`.

``PROTOCOLS`` maps a provider id to the module and class of its protocol and is imported only
when that emulator is used, as :data:`providers.REGISTRY` does for adapters: adding an emulator
is one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.emulators.toolkit import Protocol

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
}


class UnknownEmulator(KeyError):
    """No emulator is registered under that provider id."""

    def __str__(self) -> str:
        return f"no emulator for {self.args[0]!r} (emulated: {', '.join(sorted(PROTOCOLS))})"


def protocol_class(name: str) -> type[Protocol]:
    """The emulator protocol for provider ``name`` (:class:`UnknownEmulator` if none)."""
    try:
        module_name, class_name = PROTOCOLS[name]
    except KeyError:
        raise UnknownEmulator(name) from None
    cls: type[Protocol] = getattr(importlib.import_module(module_name), class_name)
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
