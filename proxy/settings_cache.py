"""Short-lived in-process copies of what the operator sets (account settings, API states), so
that a call does not read them from the database each time.

A copy is trusted for `ttl_seconds`. The process that changes a setting drops its copy at once
(`forget`); every other process (the other workers, other hosts) reads the setting again once
its copy is that old. A TTL of 0 keeps no copies: every call reads the database. Counters
(quota used, balance, calls in flight) are never kept here: they are conditional updates in
the database (proxy/metering.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import TypeVar

from cachetools import TTLCache

T = TypeVar("T")


class SettingsCache:
    def __init__(self, ttl_seconds: float, *, max_entries: int = 10_000):
        self.ttl_seconds = ttl_seconds
        self._entries: TTLCache | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=time.monotonic)
            if ttl_seconds > 0
            else None
        )
        self._lock = threading.Lock()
        self._generation = 0  # bumped by forget: a read that raced it is not kept

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The copy of `key`, or `load()` (kept for the TTL) when there is none or it is old."""
        if self._entries is None:
            return load()
        with self._lock:
            try:
                return self._entries[key]
            except KeyError:
                generation = self._generation
        value = load()
        with self._lock:
            if generation == self._generation:
                self._entries[key] = value
        return value

    def forget(self, key: Hashable | None = None) -> None:
        """Drop the copy of `key` (of everything when None): the next call reads it anew."""
        if self._entries is None:
            return
        with self._lock:
            self._generation += 1
            if key is None:
                self._entries.clear()
            else:
                self._entries.pop(key, None)
