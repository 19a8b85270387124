"""A name -> plug-in registry filled by a decorator (one per kind: methods, datasets, models, attacks)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bench.errors import unknown

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to plug-ins, in registration order, refusing duplicates."""

    def __init__(self, kind: str, stamp: str | None = None) -> None:
        self.kind = kind
        self.stamp = stamp  # an attribute that registering sets to the name (a dataset's ``name``), if any
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            if name != name.lower() or " " in name:
                raise ValueError(f"{self.kind} names are lower case without spaces, got {name!r}")
            if self.stamp:
                setattr(obj, self.stamp, name)
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str, where: str = "") -> T:
        """The plug-in registered as ``name``; a :class:`BenchError` listing the valid names otherwise."""
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise unknown(self.kind, name, self._items, where) from None

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, in registration order."""
        return [n for n in self._items if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
