"""Conversation memory: `chat_id` (aliases `chatId`, `thread_id`) keeps a conversation per
account in the database; the stored history goes before the new messages, and the new
messages and the answer are stored after a successful call. `custom_uid` (alias `customUid`)
is recorded with them. Bounded: at most `max_messages` stored messages are sent back.
See docs/chats.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from proxy import storage
from proxy.errors import PARAM_ERROR, GatewayError

CHAT_ID_NAMES = ("chat_id", "chatId", "thread_id")
CUSTOM_UID_NAMES = ("custom_uid", "customUid")
CHAT_METHOD = "v1/chat/completions"
_ID = re.compile(r"^[\w.:@-]{1,128}$")


@dataclass(frozen=True)
class Conversation:
    chat_id: str
    custom_uid: str | None


def take_conversation(o_args: dict, method: str) -> tuple[dict, Conversation | None]:
    """`o_args` without the memory fields (they never reach the upstream), and the
    conversation they name, if any."""
    named = {name: o_args[name] for name in (*CHAT_ID_NAMES, *CUSTOM_UID_NAMES) if name in o_args}
    if not named:
        return o_args, None
    rest = {name: value for name, value in o_args.items() if name not in named}
    chat_ids = {str(named[name]) for name in CHAT_ID_NAMES if name in named}
    uids = {str(named[name]) for name in CUSTOM_UID_NAMES if name in named}
    if not chat_ids:
        return rest, None  # a custom_uid alone: nothing to remember it with
    if method != CHAT_METHOD:
        raise GatewayError(PARAM_ERROR, f"_o_args.chat_id is served for {CHAT_METHOD} only")
    if len(chat_ids) > 1 or len(uids) > 1:
        raise GatewayError(PARAM_ERROR, "_o_args names two different chat_ids (or custom_uids)")
    chat_id, uid = chat_ids.pop(), (uids.pop() if uids else None)
    for field_name, value in (("chat_id", chat_id), ("custom_uid", uid)):
        if value is not None and not _ID.match(value):
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.{field_name} must be 1-128 letters, digits or . _ - : @",
            )
    return rest, Conversation(chat_id=chat_id, custom_uid=uid)


class ChatMemory:
    def __init__(self, engine: Engine, *, max_messages: int):
        self.engine = engine
        self.max_messages = max_messages

    def history(self, account_id: int, chat_id: str) -> list[dict]:
        """The last `max_messages` messages of the conversation, oldest first."""
        table = storage.chat_messages
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.role, table.c.content)
                .where(table.c.account_id == account_id, table.c.chat_id == chat_id)
                .order_by(table.c.id.desc())
                .limit(self.max_messages)
            ).all()
        return [{"role": row.role, "content": json.loads(row.content)} for row in reversed(rows)]

    def append(self, account_id: int, conversation: Conversation, messages: list[dict]) -> None:
        if not messages:
            return
        now = datetime.now(UTC).replace(tzinfo=None)
        with self.engine.begin() as connection:
            connection.execute(
                insert(storage.chat_messages),
                [
                    {
                        "account_id": account_id,
                        "chat_id": conversation.chat_id,
                        "custom_uid": conversation.custom_uid,
                        "role": str(message.get("role", ""))[:32],
                        "content": json.dumps(message.get("content"), ensure_ascii=False),
                        "created_at": now,
                    }
                    for message in messages
                ],
            )

    def list(self, account_id: int | None = None) -> list[dict]:
        table = storage.chat_messages
        query = select(
            table.c.account_id,
            table.c.chat_id,
            func.max(table.c.custom_uid).label("custom_uid"),
            func.count().label("messages"),
            func.max(table.c.created_at).label("last_at"),
        ).group_by(table.c.account_id, table.c.chat_id)
        if account_id is not None:
            query = query.where(table.c.account_id == account_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(table.c.account_id, table.c.chat_id)).all()
        return [
            {
                "account_id": row.account_id,
                "chat_id": row.chat_id,
                "custom_uid": row.custom_uid,
                "messages": row.messages,
                "last_at": row.last_at.isoformat(timespec="seconds") + "Z",
            }
            for row in rows
        ]

    def messages(self, account_id: int, chat_id: str) -> list[dict]:
        table = storage.chat_messages
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table)
                .where(table.c.account_id == account_id, table.c.chat_id == chat_id)
                .order_by(table.c.id)
            ).all()
        return [
            {
                "role": row.role,
                "content": json.loads(row.content),
                "custom_uid": row.custom_uid,
                "at": row.created_at.isoformat(timespec="seconds") + "Z",
            }
            for row in rows
        ]

    def delete(self, account_id: int, chat_id: str) -> int:
        table = storage.chat_messages
        with self.engine.begin() as connection:
            return connection.execute(
                delete(table).where(table.c.account_id == account_id, table.c.chat_id == chat_id)
            ).rowcount
