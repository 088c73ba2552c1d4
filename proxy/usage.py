"""Usage: the record each call writes (its id is the envelope's `last_id`) and the report that
`flask usage` prints. proxy/metering.py writes the records, in the transaction that settles the
call's charge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from proxy import storage


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    error_code: str
    account_id: int | None = None
    platform: str = ""
    method: str = ""
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    latency_ms: int = 0
    client_ip: str = ""
    upstream: str | None = None  # the member that answered, by name
    key_id: int | None = None  # the key the call authenticated with (or named, when refused)
    credits: int = 0  # the call's price if charged (proxy/prices.py); the meter writes the row's
    # Whether the call was charged is not the caller's to say: the meter decides when it settles.


def token_usage(usage) -> dict:
    """An answer's token counts as the usage rows name them (OpenAI's prompt, completion and
    total tokens); the input and output tokens of an Anthropic Message (v1/messages) or a
    Responses API answer are read as prompt and completion tokens. {} when the answer has no
    usage object."""
    if not isinstance(usage, dict):
        return {}
    if "prompt_tokens" in usage or ("input_tokens" not in usage and "output_tokens" not in usage):
        return usage
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    counts = {"prompt_tokens": prompt, "completion_tokens": completion}
    if isinstance(usage.get("total_tokens"), int):  # the Responses API reports it
        counts["total_tokens"] = usage["total_tokens"]
    elif isinstance(prompt, int) and isinstance(completion, int):
        counts["total_tokens"] = prompt + completion
    return counts


MOST_TOKENS = 2**31 - 1  # what the usage row's token columns hold (INTEGER on PostgreSQL)


def token_count(value) -> int:
    """An upstream's reported count as the usage row keeps it: 0 when it is no whole number
    or below 0, at most MOST_TOKENS (a count beyond would fail the row's write)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, MOST_TOKENS)


def usage_report(
    engine: Engine,
    *,
    account_id: int | None,
    since_utc: datetime | None,
    method: str | None = None,
) -> dict:
    """Calls, charges, cache hits, calls per code and upstream tokens, from the usage rows."""
    conditions = usage_conditions(account_id=account_id, since_utc=since_utc, method=method)
    u = storage.usage.c
    with engine.connect() as connection:
        by_code = {
            code: count
            for code, count in connection.execute(
                select(u.error_code, func.count())
                .where(*conditions)
                .group_by(u.error_code)
                .order_by(u.error_code)
            )
        }
        by_upstream = {
            name: count
            for name, count in connection.execute(
                select(u.upstream, func.count())
                .where(u.upstream.is_not(None), *conditions)
                .group_by(u.upstream)
                .order_by(u.upstream)
            )
        }
        totals = connection.execute(
            select(
                func.count(),
                func.count().filter(u.charged.is_(True)),
                func.count().filter(u.charged.is_(True), u.cached.is_(True)),
                func.coalesce(func.sum(u.prompt_tokens), 0),
                func.coalesce(func.sum(u.completion_tokens), 0),
                func.coalesce(func.sum(u.total_tokens), 0),
                func.coalesce(func.sum(u.credits), 0),
            ).where(*conditions)
        ).one()
    calls, charged, cache_hits, prompt, completion, total, credits = (int(v) for v in totals)
    return {
        "calls": calls,
        "charged": charged,
        "cache_hits": cache_hits,
        "uncharged": calls - charged,
        "by_code": by_code,
        "by_upstream": by_upstream,
        "tokens": {"prompt": prompt, "completion": completion, "total": total},
        "credits": credits,
    }


def usage_conditions(
    *, account_id: int | None, since_utc: datetime | None, method: str | None
) -> list:
    """The WHERE conditions that narrow the usage rows to an account, a window and a method."""
    u = storage.usage.c
    conditions = []
    if account_id is not None:
        conditions.append(u.account_id == account_id)
    if since_utc is not None:
        conditions.append(u.created_at >= since_utc)
    if method is not None:
        conditions.append(u.method == method)
    return conditions


SUCCESS_CODES = ("0000", "2000")  # answered (2000: answered with no data); other codes failed


def is_failure(error_code):
    """The SQL condition that a usage row's code is a failure."""
    return error_code.not_in(SUCCESS_CODES)


def calls_by_method(
    engine: Engine, *, account_id: int | None, since_utc: datetime | None = None
) -> list[dict]:
    """Per method: calls, charged calls, failures (codes other than 0000 and 2000), tokens and
    credits, the busiest first (the console's usage page)."""
    u = storage.usage.c
    conditions = usage_conditions(account_id=account_id, since_utc=since_utc, method=None)
    failed = is_failure(u.error_code)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                u.method,
                func.count(),
                func.count().filter(u.charged.is_(True)),
                func.count().filter(failed),
                func.coalesce(func.sum(u.total_tokens), 0),
                func.coalesce(func.sum(u.credits), 0),
            )
            .where(*conditions)
            .group_by(u.method)
            .order_by(func.count().desc(), u.method)
        )
        return [
            {
                "method": method or "-",
                "calls": int(calls),
                "charged": int(charged),
                "failed": int(failures),
                "tokens": int(tokens),
                "credits": int(credits),
            }
            for method, calls, charged, failures, tokens, credits in rows
        ]


def failed_calls(
    engine: Engine,
    *,
    account_id: int | None,
    limit: int = 20,
    since_utc: datetime | None = None,
    method: str | None = None,
) -> list[dict]:
    """The newest calls answered with a code other than 0000 and 2000, newest first, with the
    request id a client quotes (UTC times)."""
    u = storage.usage.c
    conditions = [
        is_failure(u.error_code),
        *usage_conditions(account_id=account_id, since_utc=since_utc, method=method),
    ]
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                u.id, u.created_at, u.account_id, u.method, u.error_code, u.request_id, u.client_ip
            )
            .where(*conditions)
            .order_by(u.created_at.desc(), u.id.desc())
            .limit(limit)
        )
        return [
            {
                "last_id": row.id,
                "at": row.created_at.isoformat(sep=" ", timespec="seconds"),
                "account_id": row.account_id,
                "method": row.method or "-",
                "error_code": row.error_code,
                "request_id": row.request_id,
                "client_ip": row.client_ip,
            }
            for row in rows
        ]
