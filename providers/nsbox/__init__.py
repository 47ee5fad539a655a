"""The ``local`` provider: real sandboxes on this machine (see provider.py)."""

from providers.nsbox.provider import LocalProvider, destroy_by_id

__all__ = ["LocalProvider", "destroy_by_id"]
