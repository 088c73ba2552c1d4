"""The audit log: one row per operator action (the console's and the admin commands'), read by
`flask audit` and the console's audit page. A row names who, what, on which account or key and
when; it never holds a secret (a created account's or key's secret is shown once, never kept)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from proxy import storage


def record(engine: Engine, who: str, action: str, target: str = "", detail: str = "") -> None:
    """One row; its texts as `printable` writes them, so that a row stays one line."""
    with engine.begin() as connection:
        connection.execute(
            insert(storage.audit_log).values(
                at=storage.utc_now(),
                who=printable(who)[:64],
                action=printable(action)[:64],
                target=printable(target)[:200],
                detail=printable(detail)[:2000],
            )
        )


def printable(text: str) -> str:
    """`text` with every character Python does not print as itself (newlines, carriage
    returns, terminal escapes, other spaces than " ") written as its escape (\\n, \\x1b,
    \\xa0): a name, label or address someone typed cannot start a forged line of the log."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def recent(engine: Engine, limit: int = 100) -> list[dict]:
    """The newest `limit` rows, newest first; `at` in UTC, to the second."""
    log = storage.audit_log.c
    with engine.connect() as connection:
        rows = connection.execute(select(storage.audit_log).order_by(log.id.desc()).limit(limit))
        return [
            {
                "id": row.id,
                "at": row.at.isoformat(sep=" ", timespec="seconds"),
                "who": row.who,
                "action": row.action,
                "target": row.target,
                "detail": row.detail,
            }
            for row in rows
        ]
