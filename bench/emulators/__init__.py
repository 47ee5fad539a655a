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

from bench.emulators.registry import (
    BACKENDS,
    FAULT_KINDS,
    LATENCY_MODES,
    MISBEHAVIOURS,
    PROTOCOLS,
    UnknownEmulator,
    fault_kind,
    misbehaviours,
    protocol_class,
)

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
