"""Metering: reserve before the upstream call, settle after, in the database.

A call is admitted by one transaction: the conditional UPDATE of today's quota row (it returns
today's counters, which api_info shows), one conditional UPDATE of the account row for the
balance and the concurrency slot (when the account has them and no Redis holds slots), and the
reservation row. It is settled by one transaction too: the reservation is deleted, the charge
kept (0000, 2000, cache hits) or refunded, the call counted in the account's lifetime counters
(returned by that UPDATE, for api_info) and its usage row written.

A reservation past its expiry is one whose worker died (proxy/metering_holds.py renews live
ones and refunds expired ones); an admission refused for want of quota, credits or a slot
first refunds that account's expired reservations and, if there were any, tries once more.

Conditional updates (`... WHERE used < quota`) are atomic on SQLite (one writer at a time) and
on PostgreSQL (the row lock re-checks the condition), so limits hold across gunicorn workers
and hosts without a lock of our own. Rows are locked in one order everywhere (reservation,
day, account), so PostgreSQL transactions on one account never deadlock.

The statements are built once, in proxy/metering_statements.py.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Connection, Engine

from proxy import metering_refusals as refusals
from proxy import metering_statements as sql
from proxy.account_values import Account
from proxy.envelope import format_api_info
from proxy.errors import (
    CALLS_EXCEEDED,
    ERROR_CODES,
    INSUFFICIENT_BALANCE,
    INTERNAL_ERROR,
    RATE_LIMITED,
    GatewayError,
)
from proxy.keys import ACTIVE as KEY_ACTIVE
from proxy.keys import revoked_key_refusal
from proxy.metering_holds import ExpiredHolds, count_refunded, give_back_quota
from proxy.metering_statements import CACHE_HIT, UNCHARGED, UPSTREAM
from proxy.prices import CallPrice, PriceTable
from proxy.rate_limits import RateHold, limits_of, token_estimate
from proxy.storage import utc_now as _utc_now
from proxy.usage import UsageRecord

log = logging.getLogger("proxy")

# The refusals an expired reservation (a dead worker's hold) can cause.
_HOLD_REFUSALS = (CALLS_EXCEEDED, INSUFFICIENT_BALANCE, RATE_LIMITED)


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
    # The quota day's (used, extra_calls) right after this admission took its unit; None when
    # it took none.
    quota_day: tuple[int, int] | None = None
    rate_hold: RateHold | None = None  # its entries in the per-minute windows
    prepaid: bool = False  # `credits` came off a balance: what the call does not cost goes back


@dataclass(frozen=True)
class Settlement:
    usage_id: int
    api_info: str  # "" when the caller was not identified


class Meter(ExpiredHolds):
    def __init__(
        self,
        engine: Engine,
        *,
        timezone: str,
        reservation_ttl_seconds: float,
        prices: Mapping[str, int],
        default_price: int,
        slots=None,  # proxy.redis_store.RedisConcurrency, or None: slots in the database
        rate_limits=None,  # proxy.rate_limits: RedisRateLimits or DatabaseRateLimits
        default_completion_tokens: int = 1024,
        token_prices: PriceTable | None = None,  # PRICES_FILE: prices per model
    ):
        self.engine = engine
        self.zone = ZoneInfo(timezone)
        self.reservation_ttl = timedelta(seconds=reservation_ttl_seconds)
        self.prices = dict(prices)
        self.default_price = default_price
        self.slots = slots
        self.rate_limits = rate_limits
        # What a call without max_tokens is assumed to produce at most (TPM, prices).
        self.default_completion_tokens = default_completion_tokens
        self.token_prices = token_prices or PriceTable([])
        self._ensure_quota_day = sql.ENSURE_QUOTA_DAY[
            "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
        ]

    def today(self) -> date:
        return datetime.now(self.zone).date()

    def price_of(self, method: str) -> int:
        return self.prices.get(method, self.default_price)

    def call_price(self, method: str, args: Mapping) -> CallPrice:
        """What a call of `method` with `args` may cost: its model's token prices applied to
        its estimate (docs/prices.md), else the method's flat price."""
        prompt, completion = token_estimate(args, self.default_completion_tokens)
        return self.token_prices.call_price(self.price_of(method), args, prompt, completion)

    # -- admission --------------------------------------------------------------------------

    def admit(
        self,
        account: Account,
        method: str,
        *,
        charged: bool,
        tokens: int = 0,
        price: CallPrice | None = None,
    ) -> Admission:
        """Reserve one call of `method` that may use `tokens` (its estimate, for TPM) and cost
        `price.most` (default: the method's flat price), or GatewayError 4013 / 4016 / 4008
        (nothing held)."""
        reserve = functools.partial(self._reserve, account, method, charged=charged, price=price)
        rate_hold = self._take_rate(account, tokens)
        slot_token = ""
        try:
            if self.slots is not None and account.concurrency_limit is not None:
                slot_token = self._take_redis_slot(account)
            try:
                admission = reserve(slot_token=slot_token)
            except GatewayError as refused:
                # A dead worker's expired hold may be what is missing: refund, then retry once.
                if refused.code not in _HOLD_REFUSALS or not self.refund_expired_of(account.id):
                    raise
                admission = reserve(slot_token=slot_token)
        except BaseException:
            if slot_token:
                self.slots.release(account.id, slot_token)
            if rate_hold is not None:
                self.rate_limits.give_back(rate_hold)
            raise
        return replace(admission, rate_hold=rate_hold)

    def _take_rate(self, account: Account, tokens: int) -> RateHold | None:
        """The call's entry in its key's and account's per-minute windows, or 4008; None
        when no per-minute limit applies."""
        limits = limits_of(account)
        if not limits or self.rate_limits is None:
            return None
        return self.rate_limits.admit(limits, tokens)

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
            raise GatewayError(RATE_LIMITED, refusals.concurrency_reason(account.concurrency_limit))
        return token

    def _reserve(
        self,
        account: Account,
        method: str,
        *,
        charged: bool,
        slot_token: str,
        price: CallPrice | None = None,
    ):
        today = self.today()
        now = _utc_now()
        calls = 1 if charged else 0
        most = price.most if price is not None else self.price_of(method)
        prepaid = charged and account.balance is not None
        credits = most if prepaid else 0
        holds_db_slot = self.slots is None and account.concurrency_limit is not None
        quota_day = None
        with self.engine.begin() as connection:
            if calls:
                quota_day = self._take_quota_unit(connection, account, today)
            if credits or holds_db_slot:
                upto = price is not None and price.model_price is not None
                what = f"{method} may cost up to" if upto else f"{method} costs"
                self._take_credits_and_slot(connection, account, what, credits, holds_db_slot)
            held = {
                "account_id": account.id,
                "day": today,
                "calls": calls,
                "credits": credits,
                "holds_slot": holds_db_slot,
                "expires_at": now + self.reservation_ttl,
                "created_at": now,
                "slot_token": slot_token or None,
            }
            reservation_id = _insert_reservation(connection, account, held)
        return Admission(
            reservation_id=reservation_id,
            account_id=account.id,
            day=today,
            calls=calls,
            credits=credits,
            holds_db_slot=holds_db_slot,
            slot_token=slot_token,
            quota_day=quota_day,
            prepaid=prepaid,
        )

    def _take_quota_unit(
        self, connection: Connection, account: Account, today: date
    ) -> tuple[int, int]:
        """used + 1 on today's row while under the quota: today's (used, extra_calls). The row
        is made on the day's first call only (the common case is one UPDATE)."""
        params = {"account": account.id, "quota_day": today, "quota": account.daily_quota}
        taken = connection.execute(sql.TAKE_QUOTA_UNIT, params).first()
        if taken is None:
            connection.execute(self._ensure_quota_day, params)
            taken = connection.execute(sql.TAKE_QUOTA_UNIT, params).first()
            if taken is None:
                raise GatewayError(CALLS_EXCEEDED, refusals.quota_reason(account.daily_quota))
        return taken.used, taken.extra_calls

    def _take_credits_and_slot(
        self, connection: Connection, account: Account, what: str, credits: int, slot: bool
    ) -> None:
        """The price off the balance and a database slot, in one conditional UPDATE of the
        account row; when it matches nothing, the row says which one was missing (`what`
        the call costs, for the reason)."""
        params = {"account": account.id, "credits": credits, "limit": account.concurrency_limit}
        if connection.execute(sql.take_credits_and_slot(bool(credits), slot), params).rowcount:
            return
        # With one condition, it was that one: re-reading the balance could find a refund
        # that landed since and blame the concurrency limit the call does not have.
        if credits and not slot:
            raise GatewayError(INSUFFICIENT_BALANCE, refusals.balance_reason(what, credits))
        balance = connection.execute(sql.BALANCE, params).scalar_one()
        if credits and (balance is None or balance < credits):
            raise GatewayError(INSUFFICIENT_BALANCE, refusals.balance_reason(what, credits))
        raise GatewayError(RATE_LIMITED, refusals.concurrency_reason(account.concurrency_limit))

    # -- answers from the cache ------------------------------------------------------------

    def charge_hit(self, account: Account, record: UsageRecord) -> Settlement:
        """A charged call answered from the cache before anything was held: its quota unit
        and price taken, counted as a cache hit, its usage row written, all in one
        transaction (no reservation: nothing runs in between), and its api_info; or
        GatewayError 4013 / 4016 with nothing taken. Not for an account with a concurrency
        limit: admit holds its slot."""
        rate_hold = self._take_rate(account, 0)  # a hit counts as a call, with no tokens
        try:
            try:
                return self._charge_hit(account, record)
            except GatewayError as refused:
                # A dead worker's expired hold may be what is missing: refund, then retry once.
                if refused.code not in _HOLD_REFUSALS or not self.refund_expired_of(account.id):
                    raise
                return self._charge_hit(account, record)
        except BaseException:
            if rate_hold is not None:
                self.rate_limits.give_back(rate_hold)
            raise

    def _charge_hit(self, account: Account, record: UsageRecord) -> Settlement:
        credits = record.credits if account.balance is not None else 0
        params = {"account": account.id, "credits": credits, "spent": record.credits}
        if account.api_key is not None:
            params["key_id"] = account.api_key.id
        with self.engine.begin() as connection:
            quota_day = self._take_quota_unit(connection, account, self.today())
            key = account.api_key is not None
            charge = sql.charge_hit(bool(credits), key)
            lifetime = connection.execute(charge, params).first()
            if lifetime is None:  # rolls the quota unit back
                if key and connection.execute(sql.KEY_STATUS, params).scalar() != KEY_ACTIVE:
                    raise revoked_key_refusal()
                what = f"{record.method} costs"
                raise GatewayError(INSUFFICIENT_BALANCE, refusals.balance_reason(what, credits))
            usage_id = _insert_usage(connection, record, charged=True, credits=record.credits)
        return Settlement(usage_id=usage_id, api_info=_api_info(account, quota_day, lifetime))

    # -- settlement ---------------------------------------------------------------------------

    def settle(
        self, admission: Admission | None, record: UsageRecord, account: Account | None = None
    ) -> Settlement:
        """Keep or refund what the call held, count it, write its usage row, all in one
        transaction; with the caller's `account`, also its api_info.

        Whether the call is charged is decided here: only 0000 and 2000 of an admitted,
        charged call."""
        try:
            return self._settle(admission, record, account)
        finally:
            if admission is not None and admission.slot_token:
                self.slots.release(admission.account_id, admission.slot_token)
            if admission is not None and admission.rate_hold is not None:
                # TPM counts what the upstream reported; an answer from the cache cost none.
                tokens = 0 if record.cached else record.total_tokens
                self.rate_limits.settle(admission.rate_hold, tokens)

    def _settle(
        self, admission: Admission | None, record: UsageRecord, account: Account | None
    ) -> Settlement:
        success = ERROR_CODES[record.error_code].charged
        charged, lifetime, quota_day, spent = False, None, None, 0
        today = self.today()
        with self.engine.begin() as connection:
            if admission is not None:
                params = {"reservation": admission.reservation_id, "account": admission.account_id}
                if not connection.execute(sql.DELETE_RESERVATION, params).rowcount:
                    # Outlived its reservation: a sweep refunded and counted it already.
                    log.warning("settling a call whose reservation had expired; not charged")
                    lifetime = connection.execute(sql.LIFETIME_FIGURES, params).one()
                elif success and admission.calls:
                    charged, quota_day = True, admission.quota_day
                    counter = CACHE_HIT if record.cached else UPSTREAM
                    # A prepaid call costs at most what it reserved; the rest goes back.
                    spent = min(record.credits, admission.credits)
                    if not admission.prepaid:
                        spent = record.credits  # recorded, not debited: no balance
                    unused = admission.credits - min(spent, admission.credits)
                    params.update(spent=spent, credits=unused)
                    settle = sql.count_settled(
                        counter, bool(unused), admission.holds_db_slot, bool(spent)
                    )
                    lifetime = connection.execute(settle, params).one()
                else:
                    quota_day, lifetime = _refund(
                        connection,
                        admission.account_id,
                        admission.day,
                        admission.calls,
                        admission.credits,
                        admission.holds_db_slot,
                    )
            elif account is not None:  # a call refused before its key was proven counts nowhere
                params = {"account": account.id}
                lifetime = connection.execute(
                    sql.count_settled(UNCHARGED, False, False), params
                ).one()
            usage_id = _insert_usage(connection, record, charged=charged, credits=spent)
            if account is None:
                return Settlement(usage_id=usage_id, api_info="")
            if quota_day is None or admission.day != today:  # api_info shows today's
                quota_day = self._today_usage(connection, account.id, today)
            if lifetime is None:
                lifetime = connection.execute(sql.LIFETIME_FIGURES, {"account": account.id}).one()
        return Settlement(usage_id=usage_id, api_info=_api_info(account, quota_day, lifetime))

    # -- figures ------------------------------------------------------------------------------

    def _today_usage(
        self, connection: Connection, account_id: int, today: date | None = None
    ) -> tuple[int, int]:
        """(used, extra_calls) of the account's quota day today; (0, 0) before its first call."""
        params = {"account": account_id, "quota_day": today or self.today()}
        row = connection.execute(sql.QUOTA_DAY_FIGURES, params).first()
        return (row.used, row.extra_calls) if row else (0, 0)

    def add_calls_today(self, account_id: int, calls: int) -> None:
        """A top-up of today's quota: `calls` more charged calls until the day ends."""
        params = {"account": account_id, "quota_day": self.today(), "calls": calls}
        with self.engine.begin() as connection:
            connection.execute(self._ensure_quota_day, params)
            connection.execute(sql.ADD_CALLS_TODAY, params)

    def today_figures(self, account_id: int) -> dict:
        with self.engine.connect() as connection:
            used, extra = self._today_usage(connection, account_id)
            in_flight = connection.execute(sql.IN_FLIGHT, {"account": account_id}).scalar_one()
        return {
            "day": self.today().isoformat(),
            "used": used,
            "extra_calls": extra,
            "in_flight": in_flight,
        }


def _insert_reservation(connection: Connection, account: Account, held: dict) -> int:
    """The reservation's id; 4005 when the call's key was revoked since this worker read it."""
    if account.api_key is None:
        return connection.execute(sql.INSERT_RESERVATION, held).inserted_primary_key[0]
    held = {**held, "key_id": account.api_key.id}
    reservation_id = connection.execute(sql.INSERT_RESERVATION_OF_ACTIVE_KEY, held).scalar()
    if reservation_id is None:  # rolls back what the admission took
        raise revoked_key_refusal()
    return reservation_id


def _api_info(account: Account, quota_day: tuple[int, int], lifetime) -> str:
    """Today's figures as of this call's admission (or settlement), the lifetime counters as
    of its settlement; the quota and expiry as the call was authenticated with."""
    used, extra = quota_day
    upstream, cache_hits, uncharged, credits_spent = lifetime
    return format_api_info(
        today=used,
        daily_quota=account.daily_quota + extra,
        upstream=upstream,
        cache_hits=cache_hits,
        uncharged=uncharged,
        expires_on=account.expires_on,
        credits_spent=credits_spent if account.balance is not None else None,
    )


def _refund(
    connection: Connection, account_id: int, day: date, calls: int, credits: int, slot: bool
):
    """Give back what a call held and count it as uncharged: (the quota day's (used,
    extra_calls) when a unit was given back, else None; the account's lifetime counters)."""
    quota_day = give_back_quota(connection, account_id, day, calls) if calls else None
    return quota_day, count_refunded(connection, account_id, credits, slot)


def _insert_usage(
    connection: Connection, record: UsageRecord, *, charged: bool, credits: int = 0
) -> int:
    values = dict(
        record.__dict__,
        charged=charged,
        credits=credits if charged else 0,
        method=record.method[:200],
        client_ip=record.client_ip[:64],
        created_at=_utc_now(),
    )
    return connection.execute(sql.INSERT_USAGE, values).inserted_primary_key[0]
