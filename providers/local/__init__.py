"""The ``local`` provider: real sandboxes on this machine (see provider.py).

Exports are resolved lazily so that the zygote, which imports this package to reach
``providers.local.zygote``, does not also load asyncio and the provider: it forks every
sandbox, and a smaller process forks faster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from providers.local.provider import (
        LocalProvider,
        delete_checkpoint,
        destroy_by_id,
        list_checkpoints,
        list_sandboxes,
    )

__all__ = [
    "LocalProvider",
    "delete_checkpoint",
    "destroy_by_id",
    "list_checkpoints",
    "list_sandboxes",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from providers.local import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
