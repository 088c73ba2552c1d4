"""Usage over time for the console's usage page: a period (the last 24 hours by hour, 7 days
by 6 hours, 30 days by day; UTC) cut into buckets, each with its calls, failures, tokens,
credits and the p50 / p95 of its calls' latency_ms; and the p50 / p95 of each method.

Counts and sums are grouped by the database (the bucket is computed in SQL: the arithmetic
differs between SQLite and PostgreSQL); percentiles read the window's latency values, at most
LATENCY_ROWS_READ of the newest rows (nearest rank)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.engine import Engine

from proxy import storage
from proxy.usage import is_failure, usage_conditions

# The latency figures of a page read at most this many of the window's newest rows.
LATENCY_ROWS_READ = 200_000
EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class Period:
    name: str  # what ?period= says
    title: str
    buckets: int
    bucket: timedelta  # a whole number of hours that divides a day: buckets start at 00:00 UTC
    label: str  # how a bucket's start is written (strftime)

    def window(self, now_utc: datetime) -> tuple[datetime, datetime]:
        """The first bucket's start and the last's end; the last bucket is the one now is in."""
        midnight = now_utc.replace(hour=0, minute=0, second=0, microsecond=0)
        end = midnight + ((now_utc - midnight) // self.bucket + 1) * self.bucket
        return end - self.buckets * self.bucket, end


PERIODS = {
    period.name: period
    for period in (
        Period("24h", "Last 24 hours, by hour", 24, timedelta(hours=1), "%m-%d %H:00"),
        Period("7d", "Last 7 days, by 6 hours", 28, timedelta(hours=6), "%m-%d %H:00"),
        Period("30d", "Last 30 days, by day", 30, timedelta(days=1), "%m-%d"),
    )
}
DEFAULT_PERIOD = PERIODS["24h"]


@dataclass(frozen=True)
class UsageSeries:
    period: Period
    start: datetime  # the first bucket's start (UTC): the window the page covers
    buckets: list[dict]  # oldest first: start, label, calls, failed, tokens, credits, p50/p95_ms
    latency_by_method: dict[str, tuple[int, int]]  # every method's (p50, p95) in the window
    latency_since: datetime | None  # None, or the oldest row read when the bound cut the window


def usage_series(
    engine: Engine,
    *,
    period: Period,
    now_utc: datetime,
    account_id: int | None,
    method: str | None,
) -> UsageSeries:
    """The period's buckets for an account (None: every account) and a method (None: every
    method). The per-method latency covers every method, whatever `method` narrows."""
    start, _ = period.window(now_utc)
    seconds = int(period.bucket.total_seconds())
    slot = _bucket_number(engine, start, seconds)
    figures = _bucket_figures(engine, slot, account_id, start, method)
    rows = _latency_rows(engine, slot, account_id, start)
    per_bucket: dict[int, list[int]] = defaultdict(list)
    per_method: dict[str, list[int]] = defaultdict(list)
    for number, row_method, latency_ms, _ in rows:
        per_method[row_method or "-"].append(latency_ms)
        if method is None or row_method == method:
            per_bucket[number].append(latency_ms)
    cut = len(rows) == LATENCY_ROWS_READ
    buckets = []
    for number in range(period.buckets):
        bucket_start = start + number * period.bucket
        calls, failed, tokens, credits = figures.get(number, (0, 0, 0, 0))
        buckets.append(
            {
                "start": bucket_start,
                "label": bucket_start.strftime(period.label),
                "calls": calls,
                "failed": failed,
                "tokens": tokens,
                "credits": credits,
                "p50_ms": nearest_rank(per_bucket[number], 50),
                "p95_ms": nearest_rank(per_bucket[number], 95),
            }
        )
    return UsageSeries(
        period=period,
        start=start,
        buckets=buckets,
        latency_by_method={
            name: (nearest_rank(values, 50), nearest_rank(values, 95))
            for name, values in per_method.items()
        },
        latency_since=rows[-1][3] if cut else None,
    )


def _bucket_number(engine: Engine, start: datetime, seconds: int):
    """SQL: the bucket a row's created_at falls in, counted from `start` (0, 1, ...)."""
    created = storage.usage.c.created_at
    if engine.dialect.name == "sqlite":
        # created_at is text there; %s would round 13:59:59.9999 up to 14:00, so whole seconds.
        epoch_seconds = cast(func.strftime("%s", func.substr(created, 1, 19)), BigInteger)
    else:  # PostgreSQL: a timestamp without zone, read as UTC; floor, as a cast would round
        epoch_seconds = cast(func.floor(func.extract("epoch", created)), BigInteger)
    # Both operands whole and never negative in the window: integer division is the floor.
    return (epoch_seconds - int((start - EPOCH).total_seconds())) // seconds


def _bucket_figures(engine, slot, account_id, start, method) -> dict[int, tuple]:
    u = storage.usage.c
    conditions = usage_conditions(account_id=account_id, since_utc=start, method=method)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                slot,
                func.count(),
                func.count().filter(is_failure(u.error_code)),
                func.coalesce(func.sum(u.total_tokens), 0),
                func.coalesce(func.sum(u.credits), 0),
            )
            .where(*conditions)
            .group_by(slot)
        )
        return {int(number): tuple(int(v) for v in figures) for number, *figures in rows}


def _latency_rows(engine, slot, account_id, start) -> list:
    """(bucket, method, latency_ms, created_at) of the window's newest rows, newest first."""
    u = storage.usage.c
    conditions = usage_conditions(account_id=account_id, since_utc=start, method=None)
    with engine.connect() as connection:
        return connection.execute(
            select(slot, u.method, func.coalesce(u.latency_ms, 0), u.created_at)
            .where(*conditions)
            .order_by(u.id.desc())
            .limit(LATENCY_ROWS_READ)
        ).all()


def nearest_rank(values: list[int], percent: int) -> int | None:
    """The nearest-rank percentile of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]
