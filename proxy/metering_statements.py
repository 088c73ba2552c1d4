"""The statements metering runs (proxy/metering.py), each built once, here, with bound
parameters: SQLAlchemy compiles each one once per engine and caches it, so a call pays only for
executing it. The ones that vary (what an UPDATE of the account row takes or gives back) are
built once per variant."""

from __future__ import annotations

import functools

from sqlalchemy import bindparam, case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from proxy import storage

# Settled-call counters on the account row, as api_info's all[T=a+b+c] shows them.
UPSTREAM, CACHE_HIT, UNCHARGED = "upstream_calls", "cache_hits", "uncharged"

_days, _accounts, _reservations = (
    storage.account_days.c,
    storage.accounts.c,
    storage.reservations.c,
)
ACCOUNT = _accounts.id == bindparam("account")
QUOTA_DAY = (_days.account_id == bindparam("account"), _days.day == bindparam("quota_day"))
LIFETIME = (
    _accounts.upstream_calls,
    _accounts.cache_hits,
    _accounts.uncharged,
    _accounts.credits_spent,
)

TAKE_QUOTA_UNIT = (
    update(storage.account_days)
    .where(*QUOTA_DAY, _days.used < bindparam("quota") + _days.extra_calls)
    .values(used=_days.used + 1)
    .returning(_days.used, _days.extra_calls)
)
GIVE_BACK_QUOTA = (
    update(storage.account_days)
    .where(*QUOTA_DAY)
    .values(used=_days.used - bindparam("calls"))
    .returning(_days.used, _days.extra_calls)
)
ADD_CALLS_TODAY = (
    update(storage.account_days)
    .where(*QUOTA_DAY)
    .values(extra_calls=_days.extra_calls + bindparam("calls"))
)
QUOTA_DAY_FIGURES = select(_days.used, _days.extra_calls).where(*QUOTA_DAY)
ENSURE_QUOTA_DAY = {
    name: dialect.insert(storage.account_days)
    .values(account_id=bindparam("account"), day=bindparam("quota_day"), used=0, extra_calls=0)
    .on_conflict_do_nothing(index_elements=["account_id", "day"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
BALANCE = select(_accounts.balance).where(ACCOUNT)
LIFETIME_FIGURES = select(*LIFETIME).where(ACCOUNT)
INSERT_RESERVATION = insert(storage.reservations)
_HELD = ("account_id", "day", "calls", "credits", "holds_slot", "expires_at", "created_at")
_HELD_TYPES = {name: storage.reservations.c[name].type for name in (*_HELD, "slot_token")}
_keys = storage.api_keys.c
KEY_ACTIVE = (_keys.id == bindparam("key_id"), _keys.status == "active")
# The reservation, written only while the call's key is active: a revocation holds at once on
# every worker and host, whatever their copies of the key say, at no extra round trip.
INSERT_RESERVATION_OF_ACTIVE_KEY = (
    insert(storage.reservations)
    .from_select(
        [*_HELD, "slot_token"],
        select(
            *(bindparam(name, type_=type_).label(name) for name, type_ in _HELD_TYPES.items())
        ).where(*KEY_ACTIVE),
    )
    .returning(_reservations.id)
)
DELETE_RESERVATION = delete(storage.reservations).where(
    _reservations.id == bindparam("reservation")
)
EXPIRED = (_reservations.expires_at < bindparam("now"),)
EXPIRED_HOLDS = (
    _reservations.account_id,
    _reservations.day,
    _reservations.calls,
    _reservations.credits,
    _reservations.holds_slot,
)
DELETE_EXPIRED_OF_ACCOUNT = (
    delete(storage.reservations)
    .where(*EXPIRED, _reservations.account_id == bindparam("account"))
    .returning(*EXPIRED_HOLDS)
)
DELETE_EXPIRED_BY_ID = (
    delete(storage.reservations)
    .where(*EXPIRED, _reservations.id == bindparam("reservation"))
    .returning(*EXPIRED_HOLDS)
)
EXPIRED_IDS = select(_reservations.id).where(*EXPIRED)
RENEW = (
    update(storage.reservations)
    .where(_reservations.id.in_(bindparam("ids", expanding=True)))
    .values(expires_at=bindparam("expires_at_new"))
)
LIVE_SLOT_TOKENS = select(_reservations.account_id, _reservations.slot_token).where(
    _reservations.slot_token.is_not(None), _reservations.expires_at > bindparam("now")
)
IN_FLIGHT = (
    select(func.count())
    .select_from(storage.reservations)
    .where(_reservations.account_id == bindparam("account"))
)
INSERT_USAGE = insert(storage.usage)
KEY_STATUS = select(_keys.status).where(_keys.id == bindparam("key_id"))


@functools.cache
def take_credits_and_slot(credits: bool, slot: bool):
    """The price off the balance and/or a database slot: one conditional UPDATE."""
    conditions, values = [ACCOUNT], {}
    if credits:
        conditions.append(_accounts.balance >= bindparam("credits"))
        values["balance"] = _accounts.balance - bindparam("credits")
    if slot:
        conditions.append(_accounts.in_flight < bindparam("limit"))
        values["in_flight"] = _accounts.in_flight + 1
    return update(storage.accounts).where(*conditions).values(values)


@functools.cache
def charge_hit(credits: bool, key: bool):
    """A call answered from the cache counted on the account row, its price taken off the
    balance while it covers it (when asked), while its key is active (when given): one
    conditional UPDATE returning the lifetime counters."""
    conditions, values = [ACCOUNT], {CACHE_HIT: _accounts[CACHE_HIT] + 1}
    values["credits_spent"] = _accounts.credits_spent + bindparam("spent")
    if key:
        conditions.append(select(_keys.id).where(*KEY_ACTIVE).exists())
    if credits:
        conditions.append(_accounts.balance >= bindparam("credits"))
        values["balance"] = _accounts.balance - bindparam("credits")
    return update(storage.accounts).where(*conditions).values(values).returning(*LIFETIME)


@functools.cache
def count_settled(counter: str, credits: bool, slot: bool, spent: bool = False):
    """One settled call counted on the account row, its credits (or what it did not use of
    them) given back, its database slot freed, what it cost added to the credits spent (each
    when asked): one UPDATE that returns the lifetime counters."""
    values = {counter: _accounts[counter] + 1}
    if spent:
        values["credits_spent"] = _accounts.credits_spent + bindparam("spent")
    if credits:
        values["balance"] = _accounts.balance + bindparam("credits")
    if slot:
        values["in_flight"] = case(
            (_accounts.in_flight > 0, _accounts.in_flight - 1), else_=_accounts.in_flight
        )
    return update(storage.accounts).where(ACCOUNT).values(values).returning(*LIFETIME)


def live_slot_tokens(engine: Engine) -> dict[int, list[str]]:
    """The Redis slot tokens of unexpired reservations, by account: what the concurrency
    limiter puts back when Redis has lost its slots."""
    with engine.connect() as connection:
        rows = connection.execute(LIVE_SLOT_TOKENS, {"now": storage.utc_now()}).all()
    tokens: dict[int, list[str]] = {}
    for row in rows:
        tokens.setdefault(row.account_id, []).append(row.slot_token)
    return tokens
