"""Sandbox provider adapters and their registry.

The registry maps a provider id to the module and class that implement it, and imports the
module only when that provider is selected (libcloud's ``compute/providers.py`` does the same),
so a provider whose SDK is not installed never breaks another one.
"""

from __future__ import annotations

import importlib

from providers.base import Provider

#: id -> (module, class). Explicit on purpose: adding a provider is one line here.
REGISTRY: dict[str, tuple[str, str]] = {
    "local": ("providers.local", "LocalProvider"),
    "e2b": ("providers.e2b", "E2BProvider"),
    "daytona": ("providers.daytona", "DaytonaProvider"),
    "sprites": ("providers.sprites", "SpritesProvider"),
    "runloop": ("providers.runloop", "RunloopProvider"),
    "codesandbox": ("providers.codesandbox", "CodeSandboxProvider"),
    "vercel": ("providers.vercel", "VercelProvider"),
    "modal": ("providers.modal", "ModalProvider"),
    # Not a sandbox: sandboxes that are only names, so tests of the harness (runner, report,
    # cluster workers, which build providers by id) run without root. See providers/stub.py.
    "stub": ("providers.stub", "StubProvider"),
}


class UnknownProvider(KeyError):
    """No provider is registered under that id."""

    def __str__(self) -> str:
        return f"unknown provider {self.args[0]!r} (known: {', '.join(sorted(REGISTRY))})"


def provider_class(provider_id: str) -> type[Provider]:
    """The adapter class for ``provider_id``; imports its module (and SDK) on first use.

    Raises :class:`UnknownProvider` for an unregistered id and ImportError when the adapter's
    SDK is not installed.
    """
    try:
        module_name, class_name = REGISTRY[provider_id]
    except KeyError:
        raise UnknownProvider(provider_id) from None
    module = importlib.import_module(module_name)
    cls: type[Provider] = getattr(module, class_name)
    return cls


__all__ = ["REGISTRY", "UnknownProvider", "provider_class"]
