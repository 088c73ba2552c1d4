"""What a call holds while it runs, kept alive and, when its worker died, given back: the
Meter's part for calls that run long (renewed reservations and Redis slots) and for dead
workers (expired reservations refunded, each exactly once: whoever deletes the row applies its
refund). proxy/metering.py has the rest of the ledger; proxy/running.py calls these."""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy.engine import Connection

from proxy import metering_statements as sql
from proxy.metering_statements import UNCHARGED
from proxy.storage import utc_now as _utc_now

if TYPE_CHECKING:
    from proxy.metering import Admission

log = logging.getLogger("proxy")

# Reservation ids per UPDATE ... WHERE id IN (...): under SQLite's bound-parameter limit.
_IDS_PER_STATEMENT = 500


class ExpiredHolds:
    """Mixed into Meter (its engine, slots and reservation_ttl)."""

    def renew(self, admissions: list[Admission]) -> None:
        """Push the expiry of these live calls' reservations and Redis slots one TTL forward:
        one UPDATE, one Redis script. A reservation settled meanwhile is simply not found."""
        expires_at = _utc_now() + self.reservation_ttl
        ids = [admission.reservation_id for admission in admissions]
        with self.engine.begin() as connection:
            for start in range(0, len(ids), _IDS_PER_STATEMENT):
                connection.execute(
                    sql.RENEW,
                    {"ids": ids[start : start + _IDS_PER_STATEMENT], "expires_at_new": expires_at},
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
        now = _utc_now()
        with self.engine.connect() as connection:
            expired = list(connection.execute(sql.EXPIRED_IDS, {"now": now}).scalars())
        refunded = 0
        for reservation_id in expired:
            with self.engine.begin() as connection:  # re-checks the expiry: it may be renewed
                refunded += refund_expired_rows(
                    connection,
                    sql.DELETE_EXPIRED_BY_ID,
                    {"now": now, "reservation": reservation_id},
                )
        return refunded

    def refund_expired_of(self, account_id: int) -> int:
        """Refund one account's expired reservations; how many."""
        with self.engine.begin() as connection:
            return refund_expired_rows(
                connection,
                sql.DELETE_EXPIRED_OF_ACCOUNT,
                {"now": _utc_now(), "account": account_id},
            )


def refund_expired_rows(connection: Connection, delete_expired, params: dict) -> int:
    """Delete the expired reservations `delete_expired` matches, and refund each: their day
    rows first, then their account rows (the one locking order)."""
    expired = connection.execute(delete_expired, params).all()
    for row in expired:
        log.warning("refunding an expired reservation of account %s", row.account_id)
        if row.calls:
            give_back_quota(connection, row.account_id, row.day, row.calls)
    for row in expired:
        count_refunded(connection, row.account_id, row.credits, row.holds_slot)
    return len(expired)


def give_back_quota(connection: Connection, account_id: int, day: date, calls: int):
    """The day's (used, extra_calls) once `calls` units are back; None without its row."""
    params = {"account": account_id, "quota_day": day, "calls": calls}
    row = connection.execute(sql.GIVE_BACK_QUOTA, params).first()
    return (row.used, row.extra_calls) if row else None


def count_refunded(connection: Connection, account_id: int, credits: int, slot: bool):
    """The call counted as uncharged, its credits and database slot given back: the
    account's lifetime counters."""
    params = {"account": account_id, "credits": credits}
    return connection.execute(sql.count_settled(UNCHARGED, bool(credits), slot), params).one()
