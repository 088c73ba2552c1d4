"""Requests and tokens per minute, per key and per account, exact across workers and hosts.

A sliding window of 60 seconds: each admitted call is an entry (when it was admitted, its
tokens). A call is admitted when, for every limit that applies, the entries of the last 60 s
leave room for it: fewer than RPM entries, and their tokens plus the call's estimate at most
TPM. An entry holds its call's estimate (prompt estimate + max_tokens) while the call runs and
the tokens the upstream reported once it is settled (0 when it reported none). A refusal says
in how many seconds enough entries leave the window.

Two stores, one rule: Redis when REDIS_URL is set (one Lua script per admission, Redis's own
clock), else the database (one transaction per admission that locks one row per limited
scope). docs/keys.md has the rules.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy import storage
from proxy.chats import estimated_tokens
from proxy.errors import INTERNAL_ERROR, RATE_LIMITED, GatewayError

log = logging.getLogger("proxy")

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Limit:
    """The per-minute limits of one scope: a key (`k12`) or an account (`a3`)."""

    scope: str
    owner: str  # "this key" or "this account": how a refusal names it
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True)
class RateHold:
    """What an admitted call holds in the windows: its entry in each limited scope."""

    scopes: tuple[str, ...]
    member: str


def limits_of(account) -> list[Limit]:
    """The limits a call of `account` (through its key) obeys; [] when none is set."""
    limits = []
    api_key = account.api_key
    if api_key is not None and (api_key.rpm or api_key.tpm):
        limits.append(Limit(f"k{api_key.id}", "this key", api_key.rpm, api_key.tpm))
    if account.rpm or account.tpm:
        limits.append(Limit(f"a{account.id}", "this account", account.rpm, account.tpm))
    return limits


def estimate_call_tokens(args: Mapping, default_completion_tokens: int) -> int:
    """The most tokens a call is expected to use: its prompt, estimated as conversation memory
    does (proxy/chats.py), plus `max_completion_tokens` or `max_tokens`, or
    `default_completion_tokens` for a call that generates text and sets neither."""
    return sum(token_estimate(args, default_completion_tokens))


def token_estimate(args: Mapping, default_completion_tokens: int) -> tuple[int, int]:
    """(prompt tokens, most completion tokens) of a call, as estimate_call_tokens says."""
    if isinstance(args.get("messages"), list):
        prompt = sum(
            estimated_tokens(m.get("content") if isinstance(m, dict) else m)
            for m in args["messages"]
        )
    elif "prompt" in args and isinstance(args.get("prompt"), str):
        prompt = estimated_tokens(args["prompt"])
    elif "input" in args:
        text = args["input"]
        return estimated_tokens(text if isinstance(text, str | list) else str(text)), 0
    else:
        return 0, 0
    completion = args.get("max_completion_tokens") or args.get("max_tokens")
    if not isinstance(completion, int) or isinstance(completion, bool) or completion < 0:
        completion = default_completion_tokens
    return prompt, completion


def refusal(limit: Limit, kind: str, wait_seconds: float | None, estimate: int) -> GatewayError:
    """4008 saying which limit, and in how many whole seconds it frees (Retry-After)."""
    if kind == "rpm":
        what = f"{limit.owner}'s limit of {limit.rpm} calls per minute is reached"
    elif wait_seconds is None:
        return GatewayError(
            RATE_LIMITED,
            f"this call may use {estimate} tokens, more than {limit.owner}'s limit of "
            f"{limit.tpm} tokens per minute; lower max_tokens or shorten the messages",
        )
    else:
        what = (
            f"{limit.owner}'s limit of {limit.tpm} tokens per minute is reached "
            f"(this call may use {estimate})"
        )
    seconds = max(1, math.ceil(wait_seconds))
    return GatewayError(RATE_LIMITED, f"{what}; retry in {seconds} s", retry_after_seconds=seconds)


def _wait_for_room(
    limit: Limit, entries: Sequence[tuple[float, int]], estimate: int, now: float
) -> tuple[str, float | None] | None:
    """None when the window (entries oldest first, (admitted at, tokens)) has room for a call
    of `estimate` tokens; else (which limit, seconds until it has room, or None: never)."""
    if limit.rpm is not None and len(entries) >= limit.rpm:
        return "rpm", entries[len(entries) - limit.rpm][0] + WINDOW_SECONDS - now
    if limit.tpm is None:
        return None
    if estimate > limit.tpm:
        return "tpm", None
    used = sum(tokens for _at, tokens in entries)
    if used + estimate <= limit.tpm:
        return None
    for at, tokens in entries:  # oldest first: the window frees as each leaves it
        used -= tokens
        if used + estimate <= limit.tpm:
            return "tpm", at + WINDOW_SECONDS - now
    return "tpm", None


class DatabaseRateLimits:
    """The windows in the database: `rate_entries` rows, and one `rate_scopes` row per scope
    whose UPDATE serialises the admissions of that scope (on PostgreSQL a row lock, on SQLite
    the one writer). Times are the gateway hosts' clocks (kept in step by NTP)."""

    def __init__(self, engine: Engine, clock=time.time):
        self.engine = engine
        self.clock = clock
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._ensure_scope = (
            dialect.insert(storage.rate_scopes)
            .values(scope=bindparam("scope"), admitted=0)
            .on_conflict_do_nothing(index_elements=["scope"])
        )

    def admit(self, limits: Sequence[Limit], estimate: int) -> RateHold:
        member = uuid.uuid4().hex
        entries, scopes = storage.rate_entries.c, storage.rate_scopes.c
        ordered = sorted(limits, key=lambda limit: limit.scope)  # one locking order
        with self.engine.begin() as connection:
            now = self.clock()
            for limit in ordered:
                lock = (
                    update(storage.rate_scopes)
                    .where(scopes.scope == limit.scope)
                    .values(admitted=scopes.admitted + 1)
                )
                if not connection.execute(lock).rowcount:
                    connection.execute(self._ensure_scope, {"scope": limit.scope})
                    connection.execute(lock)
            names = [limit.scope for limit in ordered]
            connection.execute(
                delete(storage.rate_entries).where(
                    entries.scope.in_(names), entries.at <= now - WINDOW_SECONDS
                )
            )
            for limit in ordered:
                window = connection.execute(
                    select(entries.at, entries.tokens)
                    .where(entries.scope == limit.scope)
                    .order_by(entries.at)
                ).all()
                refused = _wait_for_room(limit, [tuple(row) for row in window], estimate, now)
                if refused is not None:
                    raise refusal(limit, refused[0], refused[1], estimate)
            connection.execute(
                insert(storage.rate_entries),
                [
                    {"scope": name, "member": member, "at": now, "tokens": estimate}
                    for name in names
                ],
            )
        return RateHold(tuple(names), member)

    def settle(self, hold: RateHold, tokens: int) -> None:
        entries = storage.rate_entries.c
        with self.engine.begin() as connection:
            connection.execute(
                update(storage.rate_entries)
                .where(entries.member == hold.member)
                .values(tokens=tokens)
            )

    def give_back(self, hold: RateHold) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                delete(storage.rate_entries).where(storage.rate_entries.c.member == hold.member)
            )


# KEYS: per scope its sorted set (member -> admitted at, ms) then its hash (member -> tokens).
# ARGV: window ms, member, estimate, then per scope rpm and tpm (-1: none).
# Returns {0} when admitted, else {scope index (1-based), 1 rpm / 2 tpm, wait ms or -1 never}.
# The time is Redis's own, so the hosts' clocks do not matter.
_ADMIT = """
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local member = ARGV[2]
local estimate = tonumber(ARGV[3])
local scopes = #KEYS / 2
for i = 1, scopes do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - window)
  for j = 1, #old, 1000 do
    redis.call('HDEL', h, unpack(old, j, math.min(j + 999, #old)))
  end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
  local rpm, tpm = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local count = redis.call('ZCARD', z)
  if rpm >= 0 and count >= rpm then
    local entry = redis.call('ZRANGE', z, count - rpm, count - rpm, 'WITHSCORES')
    return {i, 1, tonumber(entry[2]) + window - now}
  end
  if tpm >= 0 then
    if estimate > tpm then return {i, 2, -1} end
    local members = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    local used, tokens = 0, {}
    for j = 1, #members, 2 do
      local n = tonumber(redis.call('HGET', h, members[j]) or '0')
      tokens[#tokens + 1] = {tonumber(members[j + 1]), n}
      used = used + n
    end
    if used + estimate > tpm then
      for _, entry in ipairs(tokens) do
        used = used - entry[2]
        if used + estimate <= tpm then return {i, 2, entry[1] + window - now} end
      end
      return {i, 2, -1}
    end
  end
end
for i = 1, scopes do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('ZADD', z, now, member)
  redis.call('HSET', h, member, estimate)
  redis.call('PEXPIRE', z, 2 * window)
  redis.call('PEXPIRE', h, 2 * window)
end
return {0}
"""

# KEYS: per scope its sorted set then its hash; ARGV: member, tokens (-1: give back).
_SETTLE = """
for i = 1, #KEYS / 2 do
  local z, h = KEYS[2 * i - 1], KEYS[2 * i]
  if tonumber(ARGV[2]) < 0 then
    redis.call('ZREM', z, ARGV[1])
    redis.call('HDEL', h, ARGV[1])
  elseif redis.call('ZSCORE', z, ARGV[1]) then
    redis.call('HSET', h, ARGV[1], ARGV[2])
  end
end
return 0
"""


class RedisRateLimits:
    """The windows in Redis: exact across hosts (one script per admission, Redis's clock).
    Fails closed: when Redis cannot be reached a limited call is refused (4000)."""

    def __init__(self, client, prefix: str = "gw:rate:"):
        self._client = client
        self._prefix = prefix
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)

    def _keys(self, scopes: Sequence[str]) -> list[str]:
        return [f"{self._prefix}{scope}:{part}" for scope in scopes for part in ("at", "tok")]

    def admit(self, limits: Sequence[Limit], estimate: int) -> RateHold:
        from redis.exceptions import RedisError

        member = uuid.uuid4().hex
        args: list = [WINDOW_SECONDS * 1000, member, estimate]
        for limit in limits:
            args += [limit.rpm if limit.rpm else -1, limit.tpm if limit.tpm else -1]
        scopes = tuple(limit.scope for limit in limits)
        try:
            answer = self._admit(keys=self._keys(scopes), args=args)
        except RedisError:
            log.warning("rate limiter unreachable; refusing a limited call", exc_info=True)
            raise GatewayError(
                INTERNAL_ERROR,
                "the rate limiter (Redis) is unreachable, so this key's per-minute limits "
                "cannot be checked; nothing was called or charged: retry shortly",
            ) from None
        if answer[0]:
            limit = limits[int(answer[0]) - 1]
            wait_ms = int(answer[2])
            wait = None if wait_ms < 0 else wait_ms / 1000
            raise refusal(limit, "rpm" if int(answer[1]) == 1 else "tpm", wait, estimate)
        return RateHold(scopes, member)

    def settle(self, hold: RateHold, tokens: int) -> None:
        self._run_settle(hold, tokens)

    def give_back(self, hold: RateHold) -> None:
        self._run_settle(hold, -1)

    def _run_settle(self, hold: RateHold, tokens: int) -> None:
        from redis.exceptions import RedisError

        try:
            self._settle(keys=self._keys(hold.scopes), args=[hold.member, tokens])
        except RedisError:  # the entry keeps its estimate: the window errs on the safe side
            log.warning("rate limiter unreachable while settling a call", exc_info=True)
