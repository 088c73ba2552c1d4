"""The console's login limit: failed logins counted per client address and per operator name
over a sliding window, shared by every worker and host (in Redis when REDIS_URL is set, else in
the database's login_failures table). A scope with `failures` failures inside the window is
locked until enough of them have left it; a locked login is refused before any password is
checked, and is not itself counted (so a lock ends `window` after the failures that made it).
An attempt is counted before its password is checked and forgotten if it was right, so that
logins sent at once get no more tries than logins sent one by one. A success resets nothing
else: it would let one good login wipe out guesses at other names."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from proxy import storage


def scopes_of(address: str, name: str) -> tuple[str, ...]:
    """What a login from `address` as `name` is counted against (the token has no name)."""
    return (f"ip:{address[:64]}",) + ((f"name:{name[:64]}",) if name else ())


class DatabaseLoginFailures:
    def __init__(self, engine: Engine):
        self._engine = engine

    def add(self, scopes: Sequence[str], now: float, window: float) -> tuple[list, list[int]]:
        """Count an attempt in each scope: (its rows, to forget it; its rank in each scope's
        window, 1 for the oldest). Committed before ranking, so that of attempts made at once
        each gets its own rank."""
        table = storage.login_failures
        with self._engine.begin() as connection:
            connection.execute(delete(table).where(table.c.at <= now - window))
            ids = [
                connection.execute(insert(table).values(scope=scope, at=now)).inserted_primary_key[
                    0
                ]
                for scope in scopes
            ]
        ranks = []
        with self._engine.connect() as connection:
            for scope, row_id in zip(scopes, ids, strict=True):
                earlier = (table.c.scope == scope) & (table.c.at > now - window)
                ranks.append(
                    connection.execute(
                        select(func.count()).where(earlier, table.c.id <= row_id)
                    ).scalar_one()
                )
        return ids, ranks

    def forget(self, rows: list) -> None:
        table = storage.login_failures
        with self._engine.begin() as connection:
            connection.execute(delete(table).where(table.c.id.in_(rows)))

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
    """One sorted set per scope (member: an attempt's id, score: its time), expiring with the
    window. Every host's clock should be set by NTP, as for the rest of the gateway."""

    def __init__(self, client, prefix: str = "gw:admin-login:"):
        self._client = client
        self._prefix = prefix

    def add(self, scopes: Sequence[str], now: float, window: float) -> tuple[list, list[int]]:
        attempt = uuid.uuid4().hex
        pipe = self._client.pipeline(transaction=True)
        for scope in scopes:
            key = self._prefix + scope
            pipe.zremrangebyscore(key, "-inf", now - window)
            pipe.zadd(key, {attempt: now})
            pipe.zrank(key, attempt)
            pipe.expire(key, max(1, int(window) + 1))
        answers = pipe.execute()
        ranks = [int(answers[4 * index + 2]) + 1 for index in range(len(scopes))]
        return [(self._prefix + scope, attempt) for scope in scopes], ranks

    def forget(self, rows: list) -> None:
        pipe = self._client.pipeline(transaction=False)
        for key, attempt in rows:
            pipe.zrem(key, attempt)
        pipe.execute()

    def unlocked_at(self, scopes: Sequence[str], limit: int, now: float, window: float) -> float:
        pipe = self._client.pipeline(transaction=False)
        for scope in scopes:
            pipe.zrangebyscore(self._prefix + scope, f"({now - window}", "+inf", withscores=True)
        until = now
        for entries in pipe.execute():
            if len(entries) >= limit:
                until = max(until, float(entries[len(entries) - limit][1]) + window)
        return until


@dataclass(frozen=True)
class Attempt:
    """A login attempt counted as a failure until it succeeds (LoginLimit.succeeded)."""

    rows: list  # what the store forgets on success
    over_limit: bool  # attempts made at once took the last tries: refuse it unchecked
    locking: list[str]  # the scopes this attempt locks if it fails (it is the limit-th)


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

    def attempt(self, address: str, name: str) -> Attempt:
        """Count a login as a failure BEFORE its password is checked, so that attempts made at
        once cannot all pass a check made before any of them was counted. One ranked past the
        limit is forgotten and refused unchecked."""
        scopes = scopes_of(address, name)
        rows, ranks = self._store.add(scopes, time.time(), self.window_seconds)
        if any(rank > self.failures for rank in ranks):
            self._store.forget(rows)  # a refused attempt is not counted
            return Attempt(rows, over_limit=True, locking=[])
        locking = [
            scope for scope, rank in zip(scopes, ranks, strict=True) if rank == self.failures
        ]
        return Attempt(rows, over_limit=False, locking=locking)

    def succeeded(self, attempt: Attempt) -> None:
        """A right password: its attempt is no failure (the others stay: nothing is reset)."""
        self._store.forget(attempt.rows)
