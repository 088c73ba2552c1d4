"""The answer cache: in-process TTL cache bounded by bytes, canonical keys, one upstream call
for identical concurrent misses."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import contextmanager

from cachetools import TTLCache


def canonical_key(*, tenant: str, method: str, version: str, upstream: str, o_args: dict) -> str:
    """Key order and insignificant formatting of `_o_args` do not change the key."""
    canonical = json.dumps(
        [tenant, method, version, upstream, o_args],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _KeyLock:
    __slots__ = ("lock", "waiters")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiters = 0


class SingleFlight:
    """Per-key turns: callers of the same key run one at a time, so the first fills the cache
    and the others read it. A key's lock exists only while someone holds or awaits it."""

    def __init__(self) -> None:
        self._key_locks: dict[str, _KeyLock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str):
        with self._guard:
            entry = self._key_locks.setdefault(key, _KeyLock())
            entry.waiters += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._guard:
                entry.waiters -= 1
                if entry.waiters == 0:
                    del self._key_locks[key]


class AnswerCache:
    """Serialized successful answers (0000/2000); the dispatcher never stores an error."""

    def __init__(self, *, ttl_seconds: int, max_bytes: int):
        self._entries: TTLCache[str, bytes] = TTLCache(
            maxsize=max_bytes, ttl=ttl_seconds, getsizeof=len
        )
        self._lock = threading.Lock()
        self._flights = SingleFlight()
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds

    def describe(self) -> dict:
        """The cache's state for /health: this worker's entries and the bytes they hold."""
        with self._lock:
            self._entries.expire()
            entries, used = len(self._entries), self._entries.currsize
        return {
            "backend": "memory",
            "state": "ok",
            "entries": entries,
            "bytes": used,
            "max_bytes": self.max_bytes,
            "ttl_seconds": self.ttl_seconds,
        }

    def get(self, key: str):
        with self._lock:
            blob = self._entries.get(key)
        return None if blob is None else json.loads(blob)

    def set(self, key: str, value) -> None:
        blob = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(blob) > self.max_bytes:  # larger than the whole cache: not worth evicting for
            return
        with self._lock:
            self._entries[key] = blob

    def single_flight(self, key: str):
        """Serialise callers of the same key, so one fills the cache and the others read it."""
        return self._flights.hold(key)

    def get_or_compute(self, key: str, compute: Callable[[], tuple[object, bool]]):
        """(value, hit). `compute` returns (value, cacheable)."""
        value = self.get(key)
        if value is not None:
            return value, True
        with self.single_flight(key):
            value = self.get(key)
            if value is not None:
                return value, True
            value, cacheable = compute()
            if cacheable:
                self.set(key, value)
            return value, False
