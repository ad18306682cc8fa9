"""A small bounded memo for values clients repeat on every request (a runner's filter, its
query string): each is worked out once and shared. At most ``size`` entries, none for a key
longer than ``max_key_bytes``; the oldest entry makes room."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedMemo(Generic[V]):
    def __init__(self, size: int, max_key_bytes: int) -> None:
        self.size, self.max_key_bytes = size, max_key_bytes
        self._values: dict[bytes, V] = {}

    def get(self, key: bytes, make: Callable[[], V]) -> V:
        value = self._values.get(key)
        if value is None:
            value = make()
            if value is not None and len(key) <= self.max_key_bytes:
                if len(self._values) >= self.size:
                    self._values.pop(next(iter(self._values)))
                self._values[key] = value
        return value

    def __len__(self) -> int:
        return len(self._values)
