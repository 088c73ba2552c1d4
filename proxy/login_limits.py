"""The console's login limit: failed logins counted per client address and per operator name
over a sliding window, shared by every worker and host (in Redis when REDIS_URL is set, else in
the database's login_failures table). A scope with `failures` failures inside the window is
locked until enough of them have left it; a locked login is refused before any password is
checked, and is not itself counted (so a lock ends `window` after the failures that made it).
A success resets nothing: it would let one good login wipe out guesses at other names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from proxy import storage


def scopes_of(address: str, name: str) -> tuple[str, ...]:
    """What a login from `address` as `name` is counted against (the token has no name)."""
    return (f"ip:{address[:64]}",) + ((f"name:{name[:64]}",) if name else ())


class DatabaseLoginFailures:
    def __init__(self, engine: Engine):
        self._engine = engine

    def add(self, scopes: Sequence[str], now: float, window: float) -> list[int]:
        """Count a failure in each scope; the failures now in each scope's window."""
        table = storage.login_failures
        with self._engine.begin() as connection:
            connection.execute(delete(table).where(table.c.at <= now - window))
            connection.execute(insert(table), [{"scope": scope, "at": now} for scope in scopes])
        return [len(self._in_window(scope, now, window)) for scope in scopes]

    def unlocked_at(self, scopes: Sequence[str], limit: int, now: float, window: float) -> float:
        """When every scope has fewer than `limit` failures in its window (`now` when they do)."""
        until = now
        for scope in scopes:
            times = self._in_window(scope, now, window)
            if len(times) >= limit:  # locked until the failure `limit` back leaves the window
                until = max(until, times[len(times) - limit] + window)
        return until

    def _in_window(self, scope: str, now: float, window: float) -> list[float]:
        """The times of the scope's failures inside the window, oldest first."""
        table = storage.login_failures
        recent = (table.c.scope == scope) & (table.c.at > now - window)
        with self._engine.connect() as connection:
            rows = connection.execute(select(table.c.at).where(recent).order_by(table.c.at))
            return [row.at for row in rows]


class RedisLoginFailures:
    """One sorted set per scope (member: a failure's id, score: its time), expiring with the
    window. Every host's clock should be set by NTP, as for the rest of the gateway."""

    def __init__(self, client, prefix: str = "gw:admin-login:"):
        self._client = client
        self._prefix = prefix

    def add(self, scopes: Sequence[str], now: float, window: float) -> list[int]:
        pipe = self._client.pipeline(transaction=True)
        for scope in scopes:
            key = self._prefix + scope
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.zadd(key, {uuid.uuid4().hex: now})
            pipe.zcard(key)
            pipe.expire(key, max(1, int(window) + 1))
        answers = pipe.execute()
        return [int(answers[4 * index + 2]) for index in range(len(scopes))]

    def unlocked_at(self, scopes: Sequence[str], limit: int, now: float, window: float) -> float:
        pipe = self._client.pipeline(transaction=False)
        for scope in scopes:
            pipe.zrangebyscore(self._prefix + scope, f"({now - window}", "+inf", withscores=True)
        until = now
        for entries in pipe.execute():
            if len(entries) >= limit:
                until = max(until, float(entries[len(entries) - limit][1]) + window)
        return until


class LoginLimit:
    """`failures` failed logins per scope within `window` seconds lock that scope."""

    def __init__(self, store, *, failures: int, window_seconds: float):
        self.failures = failures
        self.window_seconds = window_seconds
        self._store = store

    def retry_after(self, address: str, name: str) -> float:
        """Seconds until a login from `address` as `name` is tried again; 0: it may be now."""
        now = time.time()
        scopes = scopes_of(address, name)
        return self._store.unlocked_at(scopes, self.failures, now, self.window_seconds) - now

    def failed(self, address: str, name: str) -> list[str]:
        """Count a failed login; the scopes it has just locked."""
        scopes = scopes_of(address, name)
        counts = self._store.add(scopes, time.time(), self.window_seconds)
        reached = zip(scopes, counts, strict=True)
        return [scope for scope, count in reached if count == self.failures]
