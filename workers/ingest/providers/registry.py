"""The providers registered, by path and by name (filled in by the provider modules)."""

from __future__ import annotations

from workers.ingest.providers.base import Provider

_BY_NAME: dict[str, Provider] = {}
_BY_PATH: dict[str, Provider] = {}


def register(provider: Provider) -> Provider:
    """Add ``provider`` (its name and paths must be new); returns it."""
    if provider.name in _BY_NAME:
        raise ValueError(f"provider {provider.name!r} is registered twice")
    for path in provider.paths:
        if path in _BY_PATH:
            raise ValueError(f"path {path} is taken by {_BY_PATH[path].name}")
    _BY_NAME[provider.name] = provider
    for path in provider.paths:
        _BY_PATH[path] = provider
    return provider


def by_path(path: str) -> Provider | None:
    return _BY_PATH.get(path)


def by_name(name: str) -> Provider | None:
    return _BY_NAME.get(name)


def paths() -> tuple[str, ...]:
    """Every provider path, in registration order."""
    return tuple(_BY_PATH)


def providers() -> tuple[Provider, ...]:
    return tuple(_BY_NAME.values())


__all__ = ["by_name", "by_path", "paths", "providers", "register"]
