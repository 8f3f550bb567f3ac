"""A trio.Lock per key, for as long as someone holds or waits for it (one snapshot decode
per stream; one change of a stream's record and of its upstream at a time)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._locks: dict[K, trio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """`async with`: the key's lock, held while the block runs (fair: first come,
        first served). Cancellation: while waiting, nothing is held."""
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting and self._locks.get(key) is lock:
                del self._locks[key]
