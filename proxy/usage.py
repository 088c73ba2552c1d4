"""The usage ledger: one row per call, failures included; its id is the envelope's `last_id`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Integer, func, insert, select
from sqlalchemy.engine import Engine

from proxy import storage


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    error_code: str
    charged: bool
    account_id: int | None = None
    platform: str = ""
    method: str = ""
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    latency_ms: int = 0
    client_ip: str = ""


@dataclass(frozen=True)
class AccountTotals:
    """The figures of `api_info`: all = charged upstream calls + charged cache hits + uncharged."""

    today: int
    upstream: int
    cache_hits: int
    uncharged: int

    @property
    def all(self) -> int:
        return self.upstream + self.cache_hits + self.uncharged


class UsageLedger:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, entry: UsageRecord) -> int:
        values = dict(
            entry.__dict__,
            method=entry.method[:200],
            client_ip=entry.client_ip[:64],
            created_at=datetime.now(UTC).replace(tzinfo=None),
        )
        with self.engine.begin() as connection:
            return connection.execute(insert(storage.usage).values(**values)).inserted_primary_key[
                0
            ]

    def totals(self, account_id: int, day_start_utc: datetime) -> AccountTotals:
        u = storage.usage.c
        charged_upstream = func.sum(func.cast((u.charged == True) & (u.cached == False), Integer))  # noqa: E712
        charged_cache = func.sum(func.cast((u.charged == True) & (u.cached == True), Integer))  # noqa: E712
        uncharged = func.sum(func.cast(u.charged == False, Integer))  # noqa: E712
        today = func.sum(
            func.cast(
                (u.charged == True) & (u.created_at >= day_start_utc),  # noqa: E712
                Integer,
            )
        )
        with self.engine.connect() as connection:
            row = connection.execute(
                select(today, charged_upstream, charged_cache, uncharged).where(
                    u.account_id == account_id
                )
            ).one()
        return AccountTotals(*(int(value or 0) for value in row))
