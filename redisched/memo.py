"""A small bounded memo for values clients repeat on every request (a runner's filter, its
query string, a patch's changes): each is worked out once and shared. At most ``size``
entries, none for a key longer than ``max_key_bytes`` (None: any key); the oldest entry
makes room. The sync Client may be shared by threads: making room (look up the oldest
entry, then drop it) holds a lock, else two threads drop the same one (KeyError) or one
iterates while another inserts (RuntimeError)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class BoundedMemo(Generic[V]):
    def __init__(self, size: int, max_key_bytes: int | None = None) -> None:
        self.size, self.max_key_bytes = size, max_key_bytes
        self._values: dict[Hashable, V] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V | None]) -> V | None:
        value = self._values.get(key)
        if value is None:
            value = make()
            if value is not None and (self.max_key_bytes is None or len(key) <= self.max_key_bytes):  # type: ignore[arg-type]
                self.put(key, value)
        return value

    def lookup(self, key: Hashable) -> V | None:
        return self._values.get(key)

    def put(self, key: Hashable, value: V) -> None:
        values = self._values
        with self._lock:
            if key not in values and len(values) >= self.size:
                del values[next(iter(values))]
            values[key] = value

    def __len__(self) -> int:
        return len(self._values)
