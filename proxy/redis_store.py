"""State shared through Redis by every gunicorn worker on every host: per-account concurrency
slots (exact, fail closed) and the answer cache's store (fail open).

Both take a `redis.Redis` made by `make_redis_client`, whose short timeouts bound what an
outage costs a call. Needs Redis 5 or later (scripts that read TIME before writing).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    ReadOnlyError,
    RedisError,
    TimeoutError,
    TryAgainError,
)
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry

from proxy.cache import Entry, SharedAnswerCache, StoreError

log = logging.getLogger("proxy")

SOCKET_TIMEOUT_SECONDS = 0.5
HEALTH_CHECK_INTERVAL_SECONDS = 10

# Redis cannot be reached or cannot serve yet (BusyLoadingError and AuthenticationError are
# ConnectionErrors): the wording of the messages.
_UNREACHABLE = (ConnectionError, TimeoutError)
# Errors that go away by themselves (a restart, a failover): a release is retried after them.
# Any other RedisError (WRONGTYPE, a script error, NOPERM...) would fail again the same way.
_TRANSIENT = (*_UNREACHABLE, ReadOnlyError, TryAgainError, ClusterDownError)


def make_redis_client(url: str, timeout_seconds: float = SOCKET_TIMEOUT_SECONDS) -> redis.Redis:
    """A client whose every call gives up within `timeout_seconds` (connect or reply), with
    no retries: an outage costs a call at most about that and never hangs a worker.
    Maintenance notifications are off: they would relax the timeouts to seconds during a
    managed Redis's maintenance. Options in the URL's query string (e.g.
    `?socket_timeout=1`) take precedence."""
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        decode_responses=False,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )


def redis_address(client: redis.Redis) -> str:
    """host:port (or unix:path) of the client's server; never the credentials."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


class _Health:
    """Whether one component's last Redis call failed: one warning when an outage starts and
    one info line when it ends, not one per call."""

    def __init__(self, component: str, address: str) -> None:
        self.component = component
        self.address = address
        self._down = False
        self._lock = threading.Lock()

    def describe(self, error: RedisError) -> str:
        state = "is unreachable" if isinstance(error, _UNREACHABLE) else "failed the call"
        return f"Redis at {self.address} {state} ({type(error).__name__}: {error})"

    def failed(self, error: RedisError) -> str:
        message = self.describe(error)
        with self._lock:
            first, self._down = not self._down, True
        if first:
            log.warning("%s: %s", self.component, message)
        return message

    def ok(self) -> None:
        if not self._down:  # the common case: no lock
            return
        with self._lock:
            was_down, self._down = self._down, False
        if was_down:
            log.info("%s: Redis at %s answers again", self.component, self.address)


class LimiterUnavailable(Exception):
    """Redis could not be reached (or failed the call) to take a concurrency slot."""


# The time comes from Redis itself, so the hosts' clocks do not matter. Scores are expiry
# times in ms; a member whose score is <= now has expired.
_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Redis's run id changes whenever it starts. The slots are complete only while the epoch key
# holds the current run id: after a restart (with or without its saved data), a FLUSHALL or a
# failover, acquire answers -1 and the caller rebuilds them from the live reservations first.
_RUN_ID = """
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
"""

_ACQUIRE = (
    _NOW_MS
    + _RUN_ID
    + """
if redis.call('GET', KEYS[2]) ~= run_id then
  return -1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
)

# (Re)writes live slots with a fresh expiry: a renewal, or a rebuild that then marks the slots
# complete. KEYS: the epoch key, then one key per account. ARGV: the TTL in ms, 1 for a
# rebuild (0 for a renewal), then for each account its number of tokens and the tokens.
_RESTORE = (
    _NOW_MS
    + _RUN_ID
    + """
local ttl = tonumber(ARGV[1])
local at = 3
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  for j = 1, count do
    redis.call('ZADD', KEYS[i], now + ttl, ARGV[at + j])
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
  at = at + count + 1
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], run_id)
end
return 1
"""
)

_LIVE_COUNT = (
    _NOW_MS
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')
"""
)


class RedisConcurrency:
    """Concurrency slots per account, exact across workers and hosts: one sorted set per
    account, member = the caller's token (unique per call), score = when the slot expires.

    A slot whose holder died frees itself after `slot_ttl_seconds`; a live holder `renew`s
    its slots before that. `acquire` fails closed (LimiterUnavailable); `release` never
    raises: a release Redis did not take waits in a pending list that a daemon thread retries
    every `retry_interval_seconds`, and every successful acquire/release flushes first. A
    pending release is dropped once its slot has expired anyway, so the list and the thread's
    life are bounded by the slot TTL.

    When Redis has lost the slots (see _RUN_ID), the next acquire puts back every live call's
    slot, `live_slots()` (account id -> tokens, from the reservations), before it counts.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        slot_ttl_seconds: float,
        prefix: str = "gw:slots:",
        retry_interval_seconds: float = 0.5,
        live_slots: Callable[[], Mapping[int, Sequence[str]]] = lambda: {},
    ):
        self._client = client
        self._slot_ttl_seconds = slot_ttl_seconds
        self._ttl_ms = max(1, int(slot_ttl_seconds * 1000))
        self._prefix = prefix
        self._epoch_key = f"{prefix}epoch"
        self._retry_interval = retry_interval_seconds
        self._live_slots = live_slots
        self._acquire = client.register_script(_ACQUIRE)
        self._restore = client.register_script(_RESTORE)
        self._live_count = client.register_script(_LIVE_COUNT)
        self._health = _Health("concurrency limiter", redis_address(client))
        # (account_id, token) -> monotonic time after which that slot has expired anyway
        self._pending: dict[tuple[int, str], float] = {}
        self._pending_lock = threading.Lock()
        self._retrier: threading.Thread | None = None

    def _key(self, account_id: int) -> str:
        return f"{self._prefix}{account_id}"

    def acquire(self, account_id: int, limit: int, token: str) -> bool:
        """Take one of the account's `limit` slots under `token`; False when all are taken."""
        keys, args = [self._key(account_id), self._epoch_key], [limit, self._ttl_ms, token]
        try:
            self._flush_pending()
            taken = self._acquire(keys=keys, args=args)
            if taken == -1:
                self._rebuild()
                taken = self._acquire(keys=keys, args=args)
        except RedisError as error:
            if isinstance(error, TimeoutError):
                # The script may have run with its answer lost: give the slot back later.
                self._queue_release(account_id, token)
            raise LimiterUnavailable(self._health.failed(error)) from error
        self._health.ok()
        if taken == -1:
            raise LimiterUnavailable(
                f"Redis at {self._health.address} lost its slots again while they were rebuilt"
            )
        return taken == 1

    def renew(self, tokens: Mapping[int, Sequence[str]]) -> None:
        """Push the expiry of these live slots (account id -> tokens) one TTL forward, and put
        back any that Redis lost. Never raises: the next renewal retries."""
        if not tokens:
            return
        try:
            self._restore(*self._restore_arguments(tokens, rebuild=False))
        except RedisError as error:
            self._health.failed(error)
            return
        self._health.ok()

    def _rebuild(self) -> None:
        """Put back the slot of every live call, then mark the slots complete."""
        tokens = self._live_slots()
        self._restore(*self._restore_arguments(tokens, rebuild=True))
        restored = sum(len(held) for held in tokens.values())
        # The first call after Redis started (a first start, a restart, a flush, a failover).
        log.log(
            logging.WARNING if restored else logging.INFO,
            "concurrency limiter: slots not known complete in this run of Redis at %s; "
            "%d slots of live calls put back from the reservations",
            self._health.address,
            restored,
        )

    def _restore_arguments(self, tokens: Mapping[int, Sequence[str]], *, rebuild: bool):
        keys, args = [self._epoch_key], [self._ttl_ms, 1 if rebuild else 0]
        for account_id, held in tokens.items():
            keys.append(self._key(account_id))
            args += [len(held), *held]
        return keys, args

    def release(self, account_id: int, token: str) -> None:
        """Give the slot back; never raises (see the class docstring)."""
        try:
            self._flush_pending()
            self._client.zrem(self._key(account_id), token)
        except _TRANSIENT as error:
            self._health.failed(error)
            self._queue_release(account_id, token)
            return
        except RedisError as error:  # would fail again: the slot's TTL frees it
            log.error(
                "concurrency limiter: dropping the release of a slot of account %s: %s",
                account_id,
                self._health.describe(error),
            )
            return
        self._health.ok()

    def in_flight(self, account_id: int) -> int:
        """Live slots of the account (expired ones are not counted)."""
        try:
            count = self._live_count(keys=[self._key(account_id)])
        except RedisError as error:
            raise LimiterUnavailable(self._health.failed(error)) from error
        self._health.ok()
        return int(count)

    @property
    def pending_releases(self) -> int:
        """Releases waiting for Redis to come back."""
        with self._pending_lock:
            return len(self._pending)

    def _drop_expired_locked(self) -> None:
        now = time.monotonic()
        for entry in [e for e, expired_at in self._pending.items() if expired_at <= now]:
            del self._pending[entry]

    def _flush_pending(self) -> bool:
        """Send the pending releases in one round trip; True if there were any. Raises the
        RedisError that stopped them (they stay pending)."""
        if not self._pending:  # the common case: no lock, no round trip
            return False
        with self._pending_lock:
            self._drop_expired_locked()
            batch = list(self._pending)
        if not batch:
            return False
        pipe = self._client.pipeline(transaction=False)
        for account_id, token in batch:
            pipe.zrem(self._key(account_id), token)
        results = pipe.execute(raise_on_error=False)  # connection errors still raise
        transient = [r for r in results if isinstance(r, _TRANSIENT)]
        with self._pending_lock:
            for entry, result in zip(batch, results, strict=True):
                if isinstance(result, _TRANSIENT):
                    continue
                if isinstance(result, Exception):
                    log.error("concurrency limiter: dropping a pending release: %s", result)
                self._pending.pop(entry, None)
        if transient:
            raise transient[0]
        return True

    def _queue_release(self, account_id: int, token: str) -> None:
        with self._pending_lock:
            self._pending[(account_id, token)] = time.monotonic() + self._slot_ttl_seconds
            if self._retrier is None:
                self._retrier = threading.Thread(
                    target=self._retry_pending, name="gateway-slot-releases", daemon=True
                )
                self._retrier.start()

    def _retry_pending(self) -> None:
        """The retrier thread: runs while releases are pending, then exits."""
        while True:
            time.sleep(self._retry_interval)
            try:
                if self._flush_pending():
                    self._health.ok()
            except RedisError as error:
                self._health.failed(error)
            except Exception:  # a bug must not leave the thread dead but registered
                log.exception("concurrency limiter: retrying pending releases failed")
            with self._pending_lock:
                self._drop_expired_locked()
                if not self._pending:
                    self._retrier = None
                    return


_RELEASE_FILL_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisStore:
    """The answer cache's store in Redis (the Store protocol of proxy/cache.py): each entry
    under `prefix + key` with Redis's own expiry, its fill lock under `prefix + key:fill`."""

    def __init__(self, client: redis.Redis, *, prefix: str = "gw:cache:"):
        self._client = client
        self._prefix = prefix
        self._release = client.register_script(_RELEASE_FILL_LOCK)
        self._health = _Health("answer cache", redis_address(client))
        self.address = f"Redis at {self._health.address}"

    def read(self, key: str) -> Entry | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self._prefix + key)
        pipe.pttl(self._prefix + key)
        blob, ttl_ms = self._call(pipe.execute)
        if blob is None or ttl_ms < 0:  # gone between the two, or stored without expiry
            return None
        return Entry(blob, time.time() + ttl_ms / 1000)

    def write(self, key: str, blob: bytes, ttl_seconds: int) -> None:
        self._call(self._client.set, self._prefix + key, blob, ex=ttl_seconds)

    def take_fill_lock(self, key: str, token: str, seconds: float) -> bool:
        ms = max(1, int(seconds * 1000))
        return bool(self._call(self._client.set, self._lock_key(key), token, nx=True, px=ms))

    def release_fill_lock(self, key: str, token: str) -> None:
        self._call(self._release, keys=[self._lock_key(key)], args=[token])

    def ping(self) -> None:
        self._call(self._client.ping)

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}{key}:fill"

    def _call(self, command, *args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RedisError as error:
            raise StoreError(self._health.describe(error)) from error


class RedisAnswerCache(SharedAnswerCache):
    """The answer cache shared by every worker and host (proxy/cache.py, SharedAnswerCache):
    compact UTF-8 JSON under `prefix + key`, expiring after `ttl_seconds`; `max_entry_bytes`
    is the largest single entry it stores. Redis's short timeouts (make_redis_client) bound
    what an outage costs a call."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_seconds: int,
        max_entry_bytes: int,
        prefix: str = "gw:cache:",
        fill_lock_seconds: float = 30.0,
    ):
        self.redis_store = RedisStore(client, prefix=prefix)
        super().__init__(
            self.redis_store,
            ttl_seconds=ttl_seconds,
            max_entry_bytes=max_entry_bytes,
            fill_lock_seconds=fill_lock_seconds,
        )

    def ping(self) -> bool:
        try:
            self.redis_store.ping()
        except StoreError as error:
            self._outage.failed(error)
            return False
        self._outage.ok()
        return True

    def describe(self) -> dict:
        """The cache's state for /health (entries are not counted: that would scan Redis)."""
        return {
            "backend": "redis",
            "state": "ok" if self.ping() else "unreachable",
            "max_entry_bytes": self.max_bytes,
            "ttl_seconds": self.ttl_seconds,
        }
