"""The onebound envelope: one ordered object for every answer of /api, success or error. Pure."""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from proxy.errors import ERROR_CODES, reason_text

FIELD_ORDER = (
    "response",
    "error",
    "reason",
    "error_code",
    "cache",
    "api_info",
    "execution_time",
    "server_time",
    "client_ip",
    "call_args",
    "api_type",
    "translate_language",
    "server_memory",
    "request_id",
    "last_id",
)


@dataclass(frozen=True)
class EnvelopeFacts:
    """Everything the envelope says about one call, gathered by proxy/doors/onebound.py."""

    code: str
    response: object
    lang: str
    detail: str
    cached: bool
    api_info: str
    elapsed_seconds: float
    now: datetime  # aware
    time_label: str
    client_ip: str
    call_args: dict
    api_type: str
    request_id: str
    last_id: str


def build_envelope(facts: EnvelopeFacts) -> dict:
    envelope = {
        "response": facts.response,
        "error": ERROR_CODES[facts.code].word,
        "reason": reason_text(facts.code, facts.lang, facts.detail),
        "error_code": facts.code,
        "cache": 1 if facts.cached else 0,
        "api_info": facts.api_info,
        "execution_time": f"{facts.elapsed_seconds:.3f}",
        "server_time": f"{facts.time_label}/{facts.now.strftime('%Y-%m-%d %H:%M:%S')}",
        "client_ip": facts.client_ip,
        "call_args": facts.call_args,
        "api_type": facts.api_type,
        "translate_language": facts.lang,
        "server_memory": format_memory(resident_memory_bytes()),
        "request_id": facts.request_id,
        "last_id": facts.last_id,
    }
    return envelope


def format_api_info(
    *,
    today: int,
    daily_quota: int,
    upstream: int,
    cache_hits: int,
    uncharged: int,
    expires_on,
    credits_spent: int | None = None,
) -> str:
    """`today:N max:M all[T=a+b+c];expires:YYYY-MM-DD`, then `;credits:S` (credits spent over
    the account's life) for a prepaid account (see docs/envelope.md for a, b, c)."""
    total = upstream + cache_hits + uncharged
    expires = expires_on.isoformat() if expires_on else "never"
    credits = "" if credits_spent is None else f";credits:{credits_spent}"
    return (
        f"today:{today} max:{daily_quota} all[{total}={upstream}+{cache_hits}+{uncharged}];"
        f"expires:{expires}{credits}"
    )


def server_now(zone: str) -> datetime:
    return datetime.now(ZoneInfo(zone))


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def format_memory(size_bytes: int) -> str:
    return f"{size_bytes / (1024 * 1024):.2f}MB"
