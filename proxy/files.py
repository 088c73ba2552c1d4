"""Whose each uploaded file is (`file_owners`), and each account's own file list.

The gateway calls the upstream with one key for every account, so the upstream's files are
everyone's: an account reaches a file only when this table says the file is its own, and its
list (`v1/files`) is answered from here, with no upstream call (docs/methods.md, "Files").
"""

from __future__ import annotations

import json

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine

from proxy import storage
from proxy.errors import PARAM_ERROR, WRONG_PAGE_TOKEN, GatewayError

# OpenAI's defaults for a file list.
DEFAULT_ORDER = "desc"
DEFAULT_LIMIT = 10000


class FileOwners:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, account_id: int, uploaded: dict) -> None:
        """`uploaded` (the upstream's answer to an upload) is now `account_id`'s file."""
        with self.engine.begin() as connection:
            connection.execute(
                insert(storage.file_owners).values(
                    file_id=uploaded["id"],
                    account_id=account_id,
                    purpose=str(uploaded.get("purpose") or "")[:64],
                    file_object=json.dumps(uploaded, ensure_ascii=False),
                    created_at=storage.utc_now(),
                )
            )

    def check(self, account_id: int, file_id: str) -> None:
        """Refuse a file that is not `account_id`'s as not found, whether or not it exists."""
        if self._seq(account_id, file_id) is None:
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.file_id: {file_id} is not a file of this account; "
                "v1/files lists this account's files",
                http_status=404,
            )

    def forget(self, file_id: str) -> None:
        table = storage.file_owners
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.file_id == file_id))

    def page(
        self,
        account_id: int,
        *,
        purpose: str | None = None,
        order: str = DEFAULT_ORDER,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> dict:
        """OpenAI's list page of the account's files in upload order (`asc`) or newest first
        (`desc`), those after its file `after` only; 4015 when `after` is not one of them."""
        table = storage.file_owners
        query = select(table.c.file_object).where(table.c.account_id == account_id)
        if after is not None:
            cursor = self._seq(account_id, after)
            if cursor is None:
                raise GatewayError(WRONG_PAGE_TOKEN, bad_cursor_reason(after))
            query = query.where(table.c.seq > cursor if order == "asc" else table.c.seq < cursor)
        if purpose is not None:
            query = query.where(table.c.purpose == purpose)
        query = query.order_by(table.c.seq if order == "asc" else table.c.seq.desc())
        with self.engine.connect() as connection:
            rows = connection.execute(query.limit(limit + 1)).scalars().all()
        data = [json.loads(row) for row in rows[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }

    def _seq(self, account_id: int, file_id: str) -> int | None:
        table = storage.file_owners
        with self.engine.connect() as connection:
            return connection.execute(
                select(table.c.seq).where(
                    table.c.file_id == file_id, table.c.account_id == account_id
                )
            ).scalar()


def bad_cursor_reason(after) -> str:
    return (
        f"_o_args.after={after!r} is not a file id of this list; pass the last id of the "
        "previous page (its last_id), or leave it out for the first page"
    )
