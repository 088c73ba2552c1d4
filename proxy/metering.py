"""Metering: reserve before the upstream call, settle after, in the database.

A call is admitted by one transaction of conditional updates (quota, balance, and the
concurrency slot when no Redis holds slots) plus a reservation row. Settling deletes the
reservation and, in the same transaction, either keeps the charge (0000, 2000, cache hits) or
refunds it, and writes the call's usage row. While a call runs, its worker renews the
reservation (`renew`, proxy/running.py), so a reservation past its expiry is one whose worker
died: the next admission of that account, or any worker's periodic `refund_expired`, refunds it,
exactly once: whoever deletes the row applies its refund or charge, and nobody else can.

Conditional updates (`... WHERE used < quota`) are atomic on SQLite (one writer at a time) and
on PostgreSQL (the row lock re-checks the condition), so limits hold across gunicorn workers
and hosts without a lock of our own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import case, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from proxy import storage
from proxy.accounts import Account
from proxy.envelope import format_api_info
from proxy.errors import (
    CALLS_EXCEEDED,
    ERROR_CODES,
    INSUFFICIENT_BALANCE,
    INTERNAL_ERROR,
    RATE_LIMITED,
    GatewayError,
)
from proxy.usage import UsageRecord

log = logging.getLogger("proxy")

# Reservation ids per UPDATE ... WHERE id IN (...): under SQLite's bound-parameter limit.
_IDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class Admission:
    """What an admitted call holds until it is settled."""

    reservation_id: int
    account_id: int
    day: date
    calls: int  # quota units held: 1, or 0 for a method that is not charged
    credits: int  # balance held
    holds_db_slot: bool
    slot_token: str = ""  # the Redis slot, when Redis holds concurrency slots


@dataclass(frozen=True)
class Settlement:
    usage_id: int
    api_info: str  # "" when the caller was not identified


class Meter:
    def __init__(
        self,
        engine: Engine,
        *,
        timezone: str,
        reservation_ttl_seconds: float,
        prices: Mapping[str, int],
        default_price: int,
        slots=None,  # proxy.redis_store.RedisConcurrency, or None: slots in the database
    ):
        self.engine = engine
        self.zone = ZoneInfo(timezone)
        self.reservation_ttl = timedelta(seconds=reservation_ttl_seconds)
        self.prices = dict(prices)
        self.default_price = default_price
        self.slots = slots

    def today(self) -> date:
        return datetime.now(self.zone).date()

    def price_of(self, method: str) -> int:
        return self.prices.get(method, self.default_price)

    # -- admission --------------------------------------------------------------------------

    def admit(self, account: Account, method: str, *, charged: bool) -> Admission:
        """Reserve one call of `method`, or GatewayError 4013 / 4016 / 4008 (nothing held)."""
        slot_token = ""
        if self.slots is not None and account.concurrency_limit is not None:
            slot_token = self._take_redis_slot(account)
        try:
            return self._reserve(account, method, charged=charged, slot_token=slot_token)
        except BaseException:
            if slot_token:
                self.slots.release(account.id, slot_token)
            raise

    def _take_redis_slot(self, account: Account) -> str:
        from proxy.redis_store import LimiterUnavailable

        token = uuid.uuid4().hex
        try:
            taken = self.slots.acquire(account.id, account.concurrency_limit, token)
        except LimiterUnavailable:
            log.warning("concurrency limiter unreachable; refusing a limited account's call")
            raise GatewayError(
                INTERNAL_ERROR,
                "the concurrency limiter (Redis) is unreachable, so this account's concurrency "
                "limit cannot be checked; nothing was called or charged: retry shortly",
            ) from None
        if not taken:
            raise GatewayError(RATE_LIMITED, _concurrency_reason(account.concurrency_limit))
        return token

    def _reserve(self, account: Account, method: str, *, charged: bool, slot_token: str):
        today = self.today()
        now = _utc_now()
        calls = 1 if charged else 0
        credits = self.price_of(method) if charged and account.balance is not None else 0
        holds_db_slot = self.slots is None and account.concurrency_limit is not None
        with self.engine.begin() as connection:
            _refund_expired(connection, now, storage.reservations.c.account_id == account.id)
            if calls:
                self._take_quota_unit(connection, account, today)
            else:
                _ensure_day_row(connection, account.id, today)  # settle counts the call there
            if credits or holds_db_slot:
                self._take_credits_and_slot(connection, account, method, credits, holds_db_slot)
            reservation_id = connection.execute(
                insert(storage.reservations).values(
                    account_id=account.id,
                    day=today,
                    calls=calls,
                    credits=credits,
                    holds_slot=holds_db_slot,
                    expires_at=now + self.reservation_ttl,
                    created_at=now,
                    slot_token=slot_token or None,
                )
            ).inserted_primary_key[0]
        return Admission(
            reservation_id=reservation_id,
            account_id=account.id,
            day=today,
            calls=calls,
            credits=credits,
            holds_db_slot=holds_db_slot,
            slot_token=slot_token,
        )

    def _take_quota_unit(self, connection: Connection, account: Account, today: date) -> None:
        """used + 1 on today's row while under the quota; the row is made on the day's first
        call only (the common case is one UPDATE)."""
        days = storage.account_days.c
        take_one = (
            update(storage.account_days)
            .where(days.account_id == account.id, days.day == today)
            .where(days.used < account.daily_quota + days.extra_calls)
            .values(used=days.used + 1)
        )
        if connection.execute(take_one).rowcount:
            return
        _ensure_day_row(connection, account.id, today)
        if not connection.execute(take_one).rowcount:
            raise GatewayError(CALLS_EXCEEDED, _quota_reason(account.daily_quota))

    def _take_credits_and_slot(
        self, connection: Connection, account: Account, method: str, credits: int, slot: bool
    ) -> None:
        """The price off the balance and a database slot, in one conditional UPDATE of the
        account row; when it matches nothing, the row says which one was missing."""
        accounts = storage.accounts.c
        conditions, values = [accounts.id == account.id], {}
        if credits:
            conditions.append(accounts.balance >= credits)
            values["balance"] = accounts.balance - credits
        if slot:
            conditions.append(accounts.in_flight < account.concurrency_limit)
            values["in_flight"] = accounts.in_flight + 1
        if connection.execute(update(storage.accounts).where(*conditions).values(values)).rowcount:
            return
        balance = connection.execute(
            select(accounts.balance).where(accounts.id == account.id)
        ).scalar_one()
        if credits and (balance is None or balance < credits):
            raise GatewayError(INSUFFICIENT_BALANCE, _balance_reason(method, credits))
        raise GatewayError(RATE_LIMITED, _concurrency_reason(account.concurrency_limit))

    # -- calls that run long, workers that die -------------------------------------------------

    def renew(self, admissions: list[Admission]) -> None:
        """Push the expiry of these live calls' reservations and Redis slots one TTL forward:
        one UPDATE, one Redis script. A reservation settled meanwhile is simply not found."""
        reservations = storage.reservations
        expires_at = _utc_now() + self.reservation_ttl
        ids = [admission.reservation_id for admission in admissions]
        with self.engine.begin() as connection:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                connection.execute(
                    update(reservations)
                    .where(reservations.c.id.in_(ids[start : start + _IDS_PER_STATEMENT]))
                    .values(expires_at=expires_at)
                )
        tokens: dict[int, list[str]] = {}
        for admission in admissions:
            if admission.slot_token:
                tokens.setdefault(admission.account_id, []).append(admission.slot_token)
        if tokens:
            self.slots.renew(tokens)

    def release_slot(self, admission: Admission) -> None:
        """Give back the Redis slot of a settled call (again: a renewal may have re-added it)."""
        if admission.slot_token:
            self.slots.release(admission.account_id, admission.slot_token)

    def refund_expired(self) -> int:
        """Refund every account's expired reservations (their workers died), each in its own
        transaction; how many. Workers run it at start and then periodically, so a dead
        worker's hold does not wait for its account's next call."""
        reservations = storage.reservations
        now = _utc_now()
        with self.engine.connect() as connection:
            expired = list(
                connection.execute(
                    select(reservations.c.id).where(reservations.c.expires_at < now)
                ).scalars()
            )
        refunded = 0
        for reservation_id in expired:
            with self.engine.begin() as connection:  # re-checks the expiry: it may be renewed
                refunded += _refund_expired(connection, now, reservations.c.id == reservation_id)
        return refunded

    # -- settlement ---------------------------------------------------------------------------

    def settle(
        self, admission: Admission | None, record: UsageRecord, account: Account | None = None
    ) -> Settlement:
        """Keep or refund what the call held, write its usage row, all in one transaction;
        with the caller's `account`, also its api_info.

        Whether the call is charged is decided here: only 0000 and 2000 of an admitted,
        charged call."""
        try:
            return self._settle(admission, record, account)
        finally:
            if admission is not None and admission.slot_token:
                self.slots.release(admission.account_id, admission.slot_token)

    def _settle(
        self, admission: Admission | None, record: UsageRecord, account: Account | None
    ) -> Settlement:
        success = ERROR_CODES[record.error_code].charged
        with self.engine.begin() as connection:
            charged = False
            if admission is not None:
                held = connection.execute(
                    delete(storage.reservations).where(
                        storage.reservations.c.id == admission.reservation_id
                    )
                ).rowcount
                if not held:  # outlived its reservation: already refunded by a sweep
                    log.warning("settling a call whose reservation had expired; not charged")
                elif success and admission.calls:
                    charged = True
                    # Rows are locked in one order everywhere (reservation, day, account), so
                    # PostgreSQL transactions on one account never deadlock.
                    column = "cache_hits" if record.cached else "upstream_calls"
                    _count_settled(connection, admission.account_id, admission.day, column)
                    if admission.holds_db_slot:
                        _release_db_slot(connection, admission.account_id)
                else:
                    _count_settled(connection, admission.account_id, admission.day, "uncharged")
                    _refund(
                        connection,
                        admission.account_id,
                        admission.day,
                        admission.calls,
                        admission.credits,
                        admission.holds_db_slot,
                    )
            elif record.account_id is not None:
                today = self.today()
                _ensure_day_row(connection, record.account_id, today)
                _count_settled(connection, record.account_id, today, "uncharged")
            usage_id = _insert_usage(connection, record, charged=charged)
            api_info = self._api_info(connection, account) if account is not None else ""
        return Settlement(usage_id=usage_id, api_info=api_info)

    # -- figures ------------------------------------------------------------------------------

    def _api_info(self, connection: Connection, account: Account) -> str:
        """Today's and the lifetime counters in one pass over the account's day rows; the
        quota and expiry as the call was authenticated with."""
        days = storage.account_days.c
        today = self.today()

        def total(column, only_today: bool = False):
            counted = case((days.day == today, column), else_=0) if only_today else column
            return func.coalesce(func.sum(counted), 0)

        figures = connection.execute(
            select(
                total(days.used, only_today=True),
                total(days.extra_calls, only_today=True),
                total(days.upstream_calls),
                total(days.cache_hits),
                total(days.uncharged),
            ).where(days.account_id == account.id)
        ).one()
        used, extra, upstream, cache_hits, uncharged = (int(value) for value in figures)
        return format_api_info(
            today=used,
            daily_quota=account.daily_quota + extra,
            upstream=upstream,
            cache_hits=cache_hits,
            uncharged=uncharged,
            expires_on=account.expires_on,
        )

    def _today_usage(self, connection: Connection, account_id: int) -> tuple[int, int]:
        """(used, extra_calls) of the account's quota day today; (0, 0) before its first call."""
        days = storage.account_days.c
        row = connection.execute(
            select(days.used, days.extra_calls).where(
                days.account_id == account_id, days.day == self.today()
            )
        ).first()
        return (row.used, row.extra_calls) if row else (0, 0)

    def add_calls_today(self, account_id: int, calls: int) -> None:
        """A top-up of today's quota: `calls` more charged calls until the day ends."""
        days = storage.account_days.c
        today = self.today()
        with self.engine.begin() as connection:
            _ensure_day_row(connection, account_id, today)
            connection.execute(
                update(storage.account_days)
                .where(days.account_id == account_id, days.day == today)
                .values(extra_calls=days.extra_calls + calls)
            )

    def today_figures(self, account_id: int) -> dict:
        with self.engine.connect() as connection:
            used, extra = self._today_usage(connection, account_id)
            in_flight = connection.execute(
                select(func.count())
                .select_from(storage.reservations)
                .where(storage.reservations.c.account_id == account_id)
            ).scalar_one()
        return {
            "day": self.today().isoformat(),
            "used": used,
            "extra_calls": extra,
            "in_flight": in_flight,
        }


def _ensure_day_row(connection: Connection, account_id: int, day: date) -> None:
    dialect = connection.dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    connection.execute(
        insert_fn(storage.account_days)
        .values(
            account_id=account_id,
            day=day,
            used=0,
            extra_calls=0,
            upstream_calls=0,
            cache_hits=0,
            uncharged=0,
        )
        .on_conflict_do_nothing(index_elements=["account_id", "day"])
    )


def _refund_expired(connection: Connection, now: datetime, *where) -> int:
    """Delete the reservations past their expiry that match `where`, and refund each."""
    table = storage.reservations
    expired = connection.execute(
        delete(table)
        .where(table.c.expires_at < now, *where)
        .returning(
            table.c.account_id, table.c.day, table.c.calls, table.c.credits, table.c.holds_slot
        )
    ).all()
    for row in expired:
        log.warning("refunding an expired reservation of account %s", row.account_id)
        _count_settled(connection, row.account_id, row.day, "uncharged")
        _refund(connection, row.account_id, row.day, row.calls, row.credits, row.holds_slot)
    return len(expired)


def live_slot_tokens(engine: Engine) -> dict[int, list[str]]:
    """The Redis slot tokens of unexpired reservations, by account: what the concurrency
    limiter puts back when Redis has lost its slots."""
    table = storage.reservations
    with engine.connect() as connection:
        rows = connection.execute(
            select(table.c.account_id, table.c.slot_token).where(
                table.c.slot_token.is_not(None), table.c.expires_at > _utc_now()
            )
        ).all()
    tokens: dict[int, list[str]] = {}
    for row in rows:
        tokens.setdefault(row.account_id, []).append(row.slot_token)
    return tokens


def _count_settled(connection: Connection, account_id: int, day: date, column: str) -> None:
    days = storage.account_days.c
    connection.execute(
        update(storage.account_days)
        .where(days.account_id == account_id, days.day == day)
        .values({column: days[column] + 1})
    )


def _refund(
    connection: Connection, account_id: int, day: date, calls: int, credits: int, slot: bool
) -> None:
    days, accounts = storage.account_days.c, storage.accounts.c
    if calls:
        connection.execute(
            update(storage.account_days)
            .where(days.account_id == account_id, days.day == day)
            .values(used=days.used - calls)
        )
    if credits:
        connection.execute(
            update(storage.accounts)
            .where(accounts.id == account_id)
            .values(balance=accounts.balance + credits)
        )
    if slot:
        _release_db_slot(connection, account_id)


def _release_db_slot(connection: Connection, account_id: int) -> None:
    accounts = storage.accounts.c
    connection.execute(
        update(storage.accounts)
        .where(accounts.id == account_id, accounts.in_flight > 0)
        .values(in_flight=accounts.in_flight - 1)
    )


def _insert_usage(connection: Connection, record: UsageRecord, *, charged: bool) -> int:
    values = dict(
        record.__dict__,
        charged=charged,
        method=record.method[:200],
        client_ip=record.client_ip[:64],
        created_at=_utc_now(),
    )
    return connection.execute(insert(storage.usage).values(**values)).inserted_primary_key[0]


def _quota_reason(daily_quota: int) -> str:
    return (
        f"the daily quota of {daily_quota} calls is used up; it renews at midnight "
        "(SERVER_TIMEZONE), or ask the operator to top up"
    )


def _balance_reason(method: str, credits: int) -> str:
    return f"{method} costs {credits} credits and the balance is lower; top up the account"


def _concurrency_reason(limit: int) -> str:
    return f"this key already has {limit} calls in flight (its limit); retry when one ends"


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
