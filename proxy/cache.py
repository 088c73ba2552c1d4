"""The answer cache: canonical keys, an in-process layer (L1) in front of a store the workers
share (L2: Redis, or a SQLite file on the machine), one upstream call for identical
concurrent misses in every worker, and a store that fails costing no call.

An entry is the answer's compact UTF-8 JSON and the time it expires. In memory it is kept
parsed, as a `formats.Frozen` object, so that a hit neither parses it again nor renders it
again for a format it was already rendered in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from cachetools import TLRUCache

from proxy.formats import Frozen

log = logging.getLogger("proxy")

Compute = Callable[[], tuple[object, bool]]  # (value, cacheable)


def canonical_key(*, tenant: str, method: str, version: str, upstream: str, o_args: dict) -> str:
    """Key order and insignificant formatting of `_o_args` do not change the key."""
    canonical = json.dumps(
        [tenant, method, version, upstream, o_args],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def encode(value) -> bytes:
    """An answer as stored: compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


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


@dataclass(frozen=True)
class Entry:
    blob: bytes  # compact UTF-8 JSON
    expires_at: float  # time.time() after which it is stale


class _Held:
    """What the in-process layer keeps of an entry: the answer parsed, its size and expiry."""

    __slots__ = ("value", "size", "expires_at")

    def __init__(self, value: Frozen, size: int, expires_at: float):
        self.value, self.size, self.expires_at = value, size, expires_at


def estimated_memory(json_bytes: int) -> int:
    """What an answer kept parsed takes in memory with its json and jsonu texts, from the size
    of its JSON (bench/answer_store_bench.py measured a 569 B chat answer at 7.2 KB and a
    22.5 KB embedding at 96.7 KB)."""
    return 4 * json_bytes + 5120


def _same(json_bytes: int) -> int:
    return json_bytes


class AnswerCache:
    """The in-process layer: answers parsed (`formats.Frozen`), each until its entry expires,
    at most `max_bytes` of them: bytes of their JSON, or with `counts_memory` their estimated
    memory. Used alone when there is no shared store, and as the L1 of TieredCache."""

    def __init__(self, *, ttl_seconds: int, max_bytes: int, counts_memory: bool = False):
        self._size_of = estimated_memory if counts_memory else _same
        self._entries: TLRUCache[str, _Held] = TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, held, _now: held.expires_at,
            timer=time.time,  # wall time: an entry from the shared store carries its expiry
            getsizeof=lambda held: held.size,
        )
        self._lock = threading.Lock()
        self._flights = SingleFlight()
        self.max_bytes = max_bytes
        self.ttl_seconds = ttl_seconds

    def describe(self) -> dict:
        """The cache's state for /health: this worker's entries and the bytes they hold."""
        return {"backend": "memory", "state": "ok", **self.usage(), "ttl_seconds": self.ttl_seconds}

    def usage(self) -> dict:
        with self._lock:
            self._entries.expire()
            entries, used = len(self._entries), self._entries.currsize
        return {"entries": entries, "bytes": used, "max_bytes": self.max_bytes}

    def get(self, key: str) -> Frozen | None:
        with self._lock:
            held = self._entries.get(key)
        return None if held is None else held.value

    def set(self, key: str, value) -> None:
        self.keep(key, Entry(encode(value), time.time() + self.ttl_seconds))

    def keep(self, key: str, entry: Entry, value=None) -> Frozen | None:
        """Keep `entry` (its JSON parsed, or `value` when it is that JSON's value already)
        until it expires; the answer as kept, or None when it is larger than the whole cache."""
        size = self._size_of(len(entry.blob))
        if size > self.max_bytes:  # larger than the whole cache: not worth evicting for
            return None
        frozen = Frozen(json.loads(entry.blob) if value is None else value)
        with self._lock:
            self._entries[key] = _Held(frozen, size, entry.expires_at)  # not kept if expired
        return frozen

    def single_flight(self, key: str):
        """Serialise callers of the same key, so one fills the cache and the others read it."""
        return self._flights.hold(key)

    def get_or_compute(self, key: str, compute: Compute):
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
                kept = self.keep(key, Entry(encode(value), time.time() + self.ttl_seconds), value)
                return (value if kept is None else kept), False
            return value, False


class StoreError(Exception):
    """The shared store failed a read or a write. The text says which store and why, and
    never holds a credential."""


class Store(Protocol):
    """Bytes under keys, shared by every worker (proxy/redis_store.py, proxy/local_store.py)."""

    address: str  # e.g. "Redis at host:port": names the store in log lines

    def read(self, key: str) -> Entry | None: ...

    def write(self, key: str, blob: bytes, ttl_seconds: int) -> None: ...

    def take_fill_lock(self, key: str, token: str, seconds: float) -> bool: ...

    def release_fill_lock(self, key: str, token: str) -> None: ...


class _Outage:
    """One warning when the store starts failing and one info line when it answers again,
    not one per call."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.down = False
        self._lock = threading.Lock()

    def failed(self, error: StoreError) -> None:
        with self._lock:
            first, self.down = not self.down, True
        if first:
            log.warning("answer cache: %s", error)

    def ok(self) -> None:
        if not self.down:  # the common case: no lock
            return
        with self._lock:
            was_down, self.down = self.down, False
        if was_down:
            log.info("answer cache: %s answers again", self.address)


@dataclass(frozen=True)
class Answer:
    value: object
    hit: bool
    entry: Entry | None  # set when the answer may be kept (a hit, or a cacheable answer)


class SharedAnswerCache:
    """The answer cache in a store every worker (and with Redis every host) shares.

    Fails open: when the store fails, a read is a miss and a write is skipped (one warning
    per outage), so the gateway keeps answering from the upstream.

    Identical concurrent misses make one compute: in one process they take turns
    (SingleFlight); across processes the first takes a fill lock and the others poll for its
    answer while the lock is held, at most `fill_lock_seconds`, then compute themselves. The
    filler releases its lock when done, so after an uncacheable answer the next waiter takes
    the lock and computes, as in one process.
    """

    _POLL_FIRST_SECONDS = 0.01
    _POLL_MAX_SECONDS = 0.1

    def __init__(
        self,
        store: Store,
        *,
        ttl_seconds: int,
        max_entry_bytes: int,
        fill_lock_seconds: float = 30.0,
    ):
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_entry_bytes
        self._fill_lock_seconds = fill_lock_seconds
        self._flights = SingleFlight()
        self._outage = _Outage(store.address)

    def get(self, key: str):
        found = self.find(key)
        return None if found is None else found.value

    def find(self, key: str) -> Answer | None:
        """The stored answer (a hit), or None: absent, or the store failed."""
        found, _ = self._lookup(key)
        return found

    def set(self, key: str, value) -> None:
        self._write(key, encode(value))

    def get_or_compute(self, key: str, compute: Compute):
        """(value, hit). `compute` returns (value, cacheable). When the store fails it
        computes at once: (value, False)."""
        answer = self.answer(key, compute)
        return answer.value, answer.hit

    def answer(self, key: str, compute: Compute) -> Answer:
        found, reachable = self._lookup(key)
        if found is not None:
            return found
        if not reachable:
            return self._compute(key, compute, store=False)
        with self._flights.hold(key):
            found, reachable = self._lookup(key)
            if found is not None:
                return found
            if not reachable:
                return self._compute(key, compute, store=False)
            return self._fill(key, compute)

    def describe(self) -> dict:
        """The store's state for /health (each kind of store says what it can cheaply)."""
        raise NotImplementedError

    def _lookup(self, key: str) -> tuple[Answer | None, bool]:
        """(the stored answer as a hit, or None; whether the store answered)."""
        try:
            entry = self.store.read(key)
        except StoreError as error:
            self._outage.failed(error)
            return None, False
        self._outage.ok()
        if entry is None:
            return None, True
        try:
            return Answer(json.loads(entry.blob), True, entry), True
        except ValueError:  # not ours, or damaged: a miss that the fill overwrites
            return None, True

    def _write(self, key: str, blob: bytes) -> None:
        if len(blob) > self.max_bytes:
            return
        try:
            self.store.write(key, blob, self.ttl_seconds)
        except StoreError as error:
            self._outage.failed(error)
            return
        self._outage.ok()

    def _fill(self, key: str, compute: Compute) -> Answer:
        token = uuid.uuid4().hex
        deadline = time.monotonic() + self._fill_lock_seconds
        pause = self._POLL_FIRST_SECONDS
        while True:
            try:
                held = self.store.take_fill_lock(key, token, self._fill_lock_seconds)
            except StoreError as error:
                self._outage.failed(error)
                return self._compute(key, compute, store=False)
            if held:
                break
            found, reachable = self._lookup(key)
            if found is not None:
                return found
            if not reachable:
                return self._compute(key, compute, store=False)
            if time.monotonic() >= deadline:
                return self._compute(key, compute, store=True)
            time.sleep(pause)
            pause = min(pause * 2, self._POLL_MAX_SECONDS)
        try:
            found, _ = self._lookup(key)  # a filler may have finished between read and lock
            if found is not None:
                return found
            return self._compute(key, compute, store=True)
        finally:
            try:
                self.store.release_fill_lock(key, token)
            except StoreError as error:  # the lock expires by itself
                self._outage.failed(error)

    def _compute(self, key: str, compute: Compute, *, store: bool) -> Answer:
        value, cacheable = compute()
        if not cacheable:
            return Answer(value, False, None)
        blob = encode(value)
        if store:
            self._write(key, blob)
        return Answer(value, False, Entry(blob, time.time() + self.ttl_seconds))


class TieredCache:
    """The in-process layer (L1) in front of the shared store (L2). A hit in L1 costs no
    parsing and no round trip; a miss in L1 asks L2, whose hits and fills L1 then keeps
    until the entry expires. When L2 fails, L1 still keeps the answers it computes."""

    def __init__(self, memory: AnswerCache, shared: SharedAnswerCache):
        self.memory = memory
        self.shared = shared
        self._flights = SingleFlight()

    def get(self, key: str):
        """The answer from L1, else from L2 (then kept in L1); None when neither holds it."""
        kept = self.memory.get(key)
        if kept is not None:
            return kept
        found = self.shared.find(key)
        if found is None:
            return None
        kept = self.memory.keep(key, found.entry, found.value)
        return found.value if kept is None else kept

    def get_or_compute(self, key: str, compute: Compute):
        """(value, hit). `compute` returns (value, cacheable)."""
        kept = self.memory.get(key)
        if kept is not None:
            return kept, True
        with self._flights.hold(key):
            kept = self.memory.get(key)
            if kept is not None:
                return kept, True
            answer = self.shared.answer(key, compute)
            if answer.entry is None:
                return answer.value, answer.hit
            kept = self.memory.keep(key, answer.entry, answer.value)
            return (answer.value if kept is None else kept), answer.hit

    def describe(self) -> dict:
        """The cache's state for /health: the shared store's, and this worker's L1."""
        return {**self.shared.describe(), "memory": self.memory.usage()}
