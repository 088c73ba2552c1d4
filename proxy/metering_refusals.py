"""What an admission that cannot be held says: the reason of each refusal (quota 4013,
balance 4016, concurrency 4008; a revoked key's is keys.revoked_key_refusal), worded for the
client: what happened and what to do. Pure: no database."""

from __future__ import annotations


def quota_reason(daily_quota: int) -> str:
    return (
        f"the daily quota of {daily_quota} calls is used up; it renews at midnight "
        "(SERVER_TIMEZONE), or ask the operator to top up"
    )


def balance_reason(what: str, credits: int) -> str:
    """`what` is "METHOD costs" (a flat price) or "METHOD may cost up to" (the most a priced
    call may cost, which admission reserves: docs/prices.md)."""
    return f"{what} {credits} credits and the balance is lower; top up the account"


def concurrency_reason(limit: int) -> str:
    return f"this key already has {limit} calls in flight (its limit); retry when one ends"
