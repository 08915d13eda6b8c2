"""One registry type for everything pibench looks up by name (variants, backends, ...).

Entries are registered with a decorator (or `add`); a duplicate name is refused; an unknown name
gets a "did you mean" error. Registered objects must be light to import: a backend keeps its heavy
dependencies behind a method (`pibench.backends.base.Backend.session`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pibench.util.errors import PibenchError, did_you_mean

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    value: T
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named entries of one kind, e.g. `VARIANTS = Registry("variant")`."""

    def __init__(self, kind: str, listing: str | None = None) -> None:
        self.kind = kind
        self.listing = listing  # where a user finds the names (None: the error lists them)
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@REG.register("name", label=...)` on the object to register."""

        def deco(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return deco

    def add(self, name: str, value: T, **meta: Any) -> None:
        """Register `value` under `name`."""
        if name in self._entries:
            raise PibenchError(f"{self.kind} '{name}' is already registered; choose another name")
        self._entries[name] = Entry(name, value, meta)

    def remove(self, name: str) -> None:
        """Unregister `name` (for plugins and tests that register temporarily)."""
        self.entry(name)
        del self._entries[name]

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            listing = self.listing or f"known: {', '.join(self._entries)}"
            raise PibenchError(f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; {listing}") from None

    def get(self, name: str) -> T:
        return self.entry(name).value

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)
