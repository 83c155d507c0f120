"""A tiny name -> object registry with "did you mean" errors (used for methods, merges, suites)."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """An explicit, ordered mapping from names (and aliases) to entries."""

    def __init__(self, kind: str, entries: dict[str, T], aliases: dict[str, str] | None = None):
        self.kind = kind
        self._entries = dict(entries)
        self._aliases = dict(aliases or {})

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def canonical(self, name: str) -> str:
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        choices = self.names() + list(self._aliases)
        raise ConfigError(
            f"Unknown {self.kind} '{name}'.{did_you_mean(name, choices)} "
            f"Available: {', '.join(self.names())}."
        )

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]
