"""``POST /v1/chat/completions``: ``"stub reply: "`` + the text of the last user message."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import (
    completion_object,
    content_text,
    digest,
    truncate,
    usage,
    words,
)
from stub_upstream.replies import BadRequest, json_response, missing
from stub_upstream.streaming import event_stream

CHAT_REPLY_PREFIX = "stub reply: "

bp = Blueprint("chat", __name__, url_prefix="/v1")


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list) or not messages:
        code = "invalid_value" if isinstance(messages, list) else "invalid_type"
        raise BadRequest("'messages' must be a non-empty array.", "messages", code)
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"'messages[{i}]' must be an object with a 'role'.", f"messages[{i}]")
    return messages


def _reply_to(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m["role"] == "user"]
    return CHAT_REPLY_PREFIX + content_text((users or messages)[-1].get("content"))


@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    body = arguments.json_body()
    stream = arguments.stream_flag(body)
    model = arguments.model(body)
    messages = _messages(body)
    n = arguments.int_param(body, "n", 1, 1, 128)
    pieces, finish = truncate(_reply_to(messages), arguments.max_tokens(body))
    choice_ids = [] if current_fault() == "empty" else list(range(n))
    prompt_tokens = max(1, sum(words(content_text(m.get("content"))) for m in messages))
    answer = _Answer(
        "chatcmpl-stub-" + digest(body),
        model,
        pieces,
        finish,
        choice_ids,
        usage(prompt_tokens, words("".join(pieces)) * len(choice_ids)),
    )
    if stream:
        return event_stream(answer.chunks(arguments.include_usage(body)))
    return json_response(answer.completion())


class _Answer:
    """One chat answer, as a whole ``chat.completion`` or as its stream of chunks."""

    def __init__(self, answer_id, model, pieces, finish, choice_ids, answer_usage):
        self.answer_id, self.model, self.usage = answer_id, model, answer_usage
        self.pieces, self.finish, self.choice_ids = pieces, finish, choice_ids

    def completion(self) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": "".join(self.pieces),
            "refusal": None,
            "annotations": [],
        }
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": self.finish}
            for i in self.choice_ids
        ]
        return completion_object(
            "chat.completion", self.answer_id, self.model, choices, usage=self.usage
        )

    def chunks(self, with_usage: bool) -> list[dict[str, Any]]:
        """Per choice: the role, one chunk per word, the finish; then the usage if asked."""
        tail = {"usage": None} if with_usage else {}

        def chunk(i: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
            return completion_object(
                "chat.completion.chunk", self.answer_id, self.model, [choice], **tail
            )

        events = []
        for i in self.choice_ids:
            events.append(chunk(i, {"role": "assistant", "content": "", "refusal": None}))
            events.extend(chunk(i, {"content": piece}) for piece in self.pieces)
            events.append(chunk(i, {}, self.finish))
        if with_usage:
            last = completion_object("chat.completion.chunk", self.answer_id, self.model, [])
            events.append({**last, "usage": self.usage})
        return events
