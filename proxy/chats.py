"""Conversation memory: `chat_id` (aliases `chatId`, `thread_id`) keeps a conversation per
account in the database; the stored history goes before the new messages, and the new
messages and the answer are stored after a successful call. `custom_uid` (alias `customUid`)
is recorded with them. Bounded: at most `max_messages` stored messages are sent back, and,
when `max_tokens` is set, only the newest of them whose estimated tokens fit in it.
See docs/chats.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine

from proxy import storage

# Token estimate of a stored message: OpenAI's tokenizers give about 4 characters of English
# per token and about 1 token per CJK character; an image part is counted as a low-detail
# image (85 tokens); each message costs a few tokens of framing. The upstream's tokenizer is
# not available offline, so the bound is approximate by design.
_MESSAGE_FRAMING_TOKENS = 4
_IMAGE_PART_TOKENS = 85
_WIDE_CHARACTER = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def estimated_tokens(content) -> int:
    """About how many tokens a message's `content` (a string or a list of parts) costs."""
    if isinstance(content, str):
        wide = len(_WIDE_CHARACTER.findall(content))
        return _MESSAGE_FRAMING_TOKENS + wide + -(-(len(content) - wide) // 4)
    if isinstance(content, list):
        total = _MESSAGE_FRAMING_TOKENS
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                total += estimated_tokens(str(part.get("text", ""))) - _MESSAGE_FRAMING_TOKENS
            else:
                total += _IMAGE_PART_TOKENS
        return total
    return _MESSAGE_FRAMING_TOKENS


def newest_within(messages: list[dict], max_tokens: int) -> list[dict]:
    """The newest messages (oldest first, as given) whose estimated tokens add up to at most
    `max_tokens`; all of them when `max_tokens` is 0."""
    if max_tokens <= 0:
        return messages
    kept, used = 0, 0
    for message in reversed(messages):
        used += estimated_tokens(message["content"])
        if used > max_tokens:
            break
        kept += 1
    return messages[len(messages) - kept :]


@dataclass(frozen=True)
class Conversation:
    chat_id: str
    custom_uid: str | None


class ChatMemory:
    def __init__(self, engine: Engine, *, max_messages: int, max_tokens: int = 0):
        self.engine = engine
        self.max_messages = max_messages
        self.max_tokens = max_tokens

    def history(self, account_id: int, chat_id: str) -> list[dict]:
        """The last `max_messages` messages of the conversation, oldest first, cut to the
        newest that fit in `max_tokens` (estimated) when that is set."""
        table = storage.chat_messages
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.role, table.c.content)
                .where(table.c.account_id == account_id, table.c.chat_id == chat_id)
                .order_by(table.c.id.desc())
                .limit(self.max_messages)
            ).all()
        messages = [
            {"role": row.role, "content": json.loads(row.content)} for row in reversed(rows)
        ]
        return newest_within(messages, self.max_tokens)

    def append(self, account_id: int, conversation: Conversation, messages: list[dict]) -> None:
        if not messages:
            return
        now = storage.utc_now()
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
