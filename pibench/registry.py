"""One registry type for everything pibench looks up by name (variants, backends, ...).

Entries are registered with a decorator; a duplicate name is refused; an unknown name gets a
"did you mean" error. An entry may be registered lazily as "module:attribute" so that heavy
backends (torch, CrypTen) are imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pibench.errors import PibenchError, did_you_mean

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    name: str
    target: T | str  # the object, or "module:attr" until first use
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> T:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target


class Registry(Generic[T]):
    """Named entries of one kind, e.g. `VARIANTS = Registry("variant")`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: `@REG.register("name", label=...)` on the object to register."""

        def deco(obj: T) -> T:
            self.add(name, obj, **meta)
            return obj

        return deco

    def add(self, name: str, target: T | str, **meta: Any) -> None:
        """Register `target` (an object, or "module:attr" for lazy import) under `name`."""
        if name in self._entries:
            raise PibenchError(f"{self.kind} '{name}' is already registered; choose another name")
        self._entries[name] = Entry(name, target, meta)

    def remove(self, name: str) -> None:
        """Unregister `name` (for plugins and tests that register temporarily)."""
        self.entry(name)
        del self._entries[name]

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise PibenchError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                f"`pibench list` shows the {self.kind}s"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).load()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        return list(self._entries)
