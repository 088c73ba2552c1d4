"""``POST /v1/chat/completions``: ``"stub reply: "`` + the text of the last user message, or,
when the request obliges a tool (``tool_choice`` ``"required"`` or a named function), one call
of that tool whose first required argument is the last user message's text."""

from __future__ import annotations

import json
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


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    users = [m for m in messages if m["role"] == "user"]
    return content_text((users or messages)[-1].get("content"))


def _obliged_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the request obliges the model to call; None when it may answer text
    (no tools, ``tool_choice`` absent, ``"auto"`` or ``"none"``)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is None or choice in (None, "auto", "none"):
        return None
    functions = [_function_of(tool, f"tools[{i}]") for i, tool in enumerate(_tool_list(tools))]
    if choice == "required":
        return functions[0]
    named = choice.get("function") if isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    chosen = next((f for f in functions if f["name"] == name), None)
    if chosen is None:
        raise BadRequest(
            "Invalid value for 'tool_choice': it must be 'none', 'auto', 'required' or a "
            "function named in 'tools'.",
            "tool_choice",
            "invalid_value",
        )
    return chosen


def _tool_list(tools: object) -> list:
    if not isinstance(tools, list) or not tools:
        raise BadRequest("'tools' must be a non-empty array.", "tools", "invalid_value")
    return tools


def _function_of(tool: object, where: str) -> dict[str, Any]:
    function = tool.get("function") if isinstance(tool, dict) else None
    named = isinstance(function, dict) and isinstance(function.get("name"), str)
    if not named or tool.get("type") != "function":
        raise BadRequest(f"'{where}' must be a function tool with a name.", where)
    return function


def _tool_call(body: dict[str, Any], function: dict[str, Any], text: str) -> dict[str, Any]:
    """One call of ``function``: its first required parameter (or first property) is ``text``."""
    parameters = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    required, properties = parameters.get("required"), parameters.get("properties")
    names = [
        *(required if isinstance(required, list) else []),
        *(properties if isinstance(properties, dict) else {}),
    ]
    arguments = {str(names[0]): text} if names else {}
    return {
        "id": "call_stub_" + digest(body),
        "type": "function",
        "function": {
            "name": function["name"],
            "arguments": json.dumps(arguments, ensure_ascii=False),
        },
    }


@bp.post("/chat/completions")
def create_chat_completion() -> Response:
    body = arguments.json_body()
    stream = arguments.stream_flag(body)
    model = arguments.model(body)
    messages = _messages(body)
    n = arguments.int_param(body, "n", 1, 1, 128)
    function = _obliged_tool(body)
    text = _last_user_text(messages)
    call = None if function is None else _tool_call(body, function, text)
    if call is None:
        pieces, finish = truncate(CHAT_REPLY_PREFIX + text, arguments.max_tokens(body))
    else:
        pieces, finish = [], "tool_calls"
    choice_ids = [] if current_fault() == "empty" else list(range(n))
    prompt_tokens = max(1, sum(words(content_text(m.get("content"))) for m in messages))
    said = "".join(pieces) if call is None else call["function"]["arguments"]
    answer = _Answer(
        "chatcmpl-stub-" + digest(body),
        model,
        pieces,
        finish,
        choice_ids,
        usage(prompt_tokens, words(said) * len(choice_ids)),
        call,
    )
    if stream:
        return event_stream(answer.chunks(arguments.include_usage(body)))
    return json_response(answer.completion())


class _Answer:
    """One chat answer, as a whole ``chat.completion`` or as its stream of chunks."""

    def __init__(self, answer_id, model, pieces, finish, choice_ids, answer_usage, call=None):
        self.answer_id, self.model, self.usage = answer_id, model, answer_usage
        self.pieces, self.finish, self.choice_ids = pieces, finish, choice_ids
        self.call = call  # the tool call answered instead of text, or None

    def completion(self) -> dict[str, Any]:
        message = {
            "role": "assistant",
            "content": "".join(self.pieces) if self.call is None else None,
            "refusal": None,
            "annotations": [],
        }
        if self.call is not None:
            message["tool_calls"] = [self.call]
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
            events.extend(chunk(i, delta) for delta in self._tool_call_deltas())
            events.append(chunk(i, {}, self.finish))
        if with_usage:
            last = completion_object("chat.completion.chunk", self.answer_id, self.model, [])
            events.append({**last, "usage": self.usage})
        return events

    def _tool_call_deltas(self) -> list[dict[str, Any]]:
        """The tool call as OpenAI streams it: id and name first, then the arguments."""
        if self.call is None:
            return []
        function = self.call["function"]
        head = {**self.call, "function": {"name": function["name"], "arguments": ""}}
        arguments = {"function": {"arguments": function["arguments"]}}
        return [{"tool_calls": [{"index": 0, **head}]}, {"tool_calls": [{"index": 0, **arguments}]}]
