"""Providers: one module each, registered on import (see :mod:`.base` for what one declares).

Adding a provider = a dialect codec under :mod:`workers.ingest.dialects`, a module here that
registers a :class:`~workers.ingest.providers.base.Provider`, its import below, fixtures,
tests and a row in ``docs/providers.md``.
"""

from workers.ingest.providers import (  # noqa: F401  (each module registers its provider)
    audiohook,
    bland,
    jambonz,
    plivo,
    telnyx,
    twilio,
    vonage,
)
from workers.ingest.providers.base import Provider
from workers.ingest.providers.registry import by_name, by_path, paths, providers

__all__ = ["Provider", "by_name", "by_path", "paths", "providers"]
