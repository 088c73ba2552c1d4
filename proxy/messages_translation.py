"""Anthropic's Messages API on chat-completions upstreams: a Messages request as a chat
request, a chat answer as a Message, and chat stream chunks as Messages stream events.

Pure: plain dicts in and out, no Flask, no SDK. What is translated and what is not is in
docs/anthropic-door.md. A request the translation cannot carry is a ValueError naming the
field (the schema makes it a 4003).
"""

from __future__ import annotations

import json

# Messages fields a chat upstream has no equivalent for: accepted and left out.
NOT_TRANSLATED = frozenset({"top_k", "thinking", "service_tier", "container", "metadata"})

# A chat `finish_reason` as a Messages `stop_reason`.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# ---------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------


def chat_arguments(body: dict) -> dict:
    """The chat-completions arguments of a Messages request (already checked by the
    schema for its fields' types)."""
    chat: dict = {"model": body["model"], "max_tokens": body["max_tokens"]}
    messages = _system_messages(body.get("system"))
    for position, message in enumerate(body["messages"]):
        messages.extend(_chat_messages(message, f"messages[{position}]"))
    chat["messages"] = messages
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        chat["tools"] = [_chat_tool(tool, f"tools[{i}]") for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        chat.update(_chat_tool_choice(body["tool_choice"]))
    if body.get("stream"):
        chat["stream_options"] = {"include_usage": True}  # the final message_delta's usage
    return chat


def _system_messages(system) -> list[dict]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        return [{"role": "system", "content": _text_of(system, "system")}]
    raise ValueError("system must be a string or a list of text blocks")


def _text_of(blocks: list, where: str) -> str:
    """The text of a list of text blocks (system prompts, tool results)."""
    texts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise ValueError(f"{where}[{i}] must be a text block here")
        texts.append(_string(block.get("text"), f"{where}[{i}].text"))
    return "\n\n".join(texts)


def _string(value, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where} must be a string")
    return value


def _chat_messages(message: dict, where: str) -> list[dict]:
    """One Messages turn as chat messages: a user turn's tool results become `tool`
    messages (before its other content), an assistant's tool uses its `tool_calls`."""
    role, content = message["role"], message["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise ValueError(f"{where}.content must be a string or a list of content blocks")
    parts, tool_calls, tool_results = [], [], []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": _string(block.get("text"), f"{at}.text")})
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "tool_use" and role == "assistant":
            tool_calls.append(_chat_tool_call(block, at))
        elif kind == "tool_result" and role == "user":
            tool_results.append(_chat_tool_result(block, at))
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the model's earlier reasoning: a chat upstream takes none
        else:
            raise ValueError(
                f"{at}: a {kind!r} block in a {role} message is not translated to chat "
                "upstreams (docs/anthropic-door.md)"
            )
    messages = list(tool_results)
    if parts or tool_calls:
        turn: dict = {"role": role, "content": _chat_content(parts, role)}
        if tool_calls:
            turn["tool_calls"] = tool_calls
        messages.append(turn)
    return messages


def _chat_content(parts: list[dict], role: str):
    """Text alone as a string (every chat upstream takes it); with images, the parts."""
    if all(part["type"] == "text" for part in parts):
        text = "".join(part["text"] for part in parts)
        return text if text or role == "user" else None
    return parts


def _image_url(block: dict, where: str) -> str:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        media_type = _string(source.get("media_type"), f"{where}.source.media_type")
        return f"data:{media_type};base64,{_string(source.get('data'), f'{where}.source.data')}"
    if isinstance(source, dict) and source.get("type") == "url":
        return _string(source.get("url"), f"{where}.source.url")
    raise ValueError(f"{where}.source must be a base64 or url image source")


def _chat_tool_call(block: dict, where: str) -> dict:
    return {
        "id": _string(block.get("id"), f"{where}.id"),
        "type": "function",
        "function": {
            "name": _string(block.get("name"), f"{where}.name"),
            "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
        },
    }


def _chat_tool_result(block: dict, where: str) -> dict:
    content = block.get("content", "")
    if isinstance(content, list):
        content = _text_of(content, f"{where}.content")
    text = _string(content, f"{where}.content")
    if block.get("is_error"):
        text = f"Error: {text}"
    return {
        "role": "tool",
        "tool_call_id": _string(block.get("tool_use_id"), f"{where}.tool_use_id"),
        "content": text,
    }


def _chat_tool(tool, where: str) -> dict:
    if not isinstance(tool, dict) or "input_schema" not in tool:
        raise ValueError(f"{where}: only custom tools (name, input_schema) are translated")
    function = {"name": _string(tool.get("name"), f"{where}.name")}
    if tool.get("description"):
        function["description"] = _string(tool["description"], f"{where}.description")
    function["parameters"] = tool["input_schema"]
    return {"type": "function", "function": function}


def _chat_tool_choice(choice) -> dict:
    kind = choice.get("type") if isinstance(choice, dict) else None
    chosen: dict = {}
    if kind in ("auto", "none"):
        chosen["tool_choice"] = kind
    elif kind == "any":
        chosen["tool_choice"] = "required"
    elif kind == "tool":
        name = _string(choice.get("name"), "tool_choice.name")
        chosen["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise ValueError("tool_choice.type must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        chosen["parallel_tool_calls"] = False
    return chosen


# ---------------------------------------------------------------------------
# The answer
# ---------------------------------------------------------------------------


def message_id(chat_id) -> str:
    """A Message id from the chat answer's id (`msg_` and its own part)."""
    own = str(chat_id or "").removeprefix("chatcmpl-") or "0"
    return f"msg_{own}"


def message_usage(usage) -> dict:
    """Chat usage as a Message's: input and output tokens."""
    usage = usage if isinstance(usage, dict) else {}
    return {
        "input_tokens": _count(usage.get("prompt_tokens")),
        "output_tokens": _count(usage.get("completion_tokens")),
    }


def message_from_chat(chat: dict, model: str) -> dict:
    """A chat completion as a Message."""
    choices = chat.get("choices") or [{}]
    answer = choices[0].get("message") or {}
    content: list[dict] = []
    if answer.get("content"):
        content.append({"type": "text", "text": answer["content"]})
    for call in answer.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": _tool_input(function.get("arguments")),
            }
        )
    return {
        "id": message_id(chat.get("id")),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model") or model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choices[0].get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": message_usage(chat.get("usage")),
    }


def _tool_input(arguments) -> dict:
    """A tool call's JSON arguments as the tool_use `input` object ({} when not an object)."""
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _count(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---------------------------------------------------------------------------
# The stream
# ---------------------------------------------------------------------------


class MessageEvents:
    """Chat stream chunks as the Messages stream's events, (event name, data) pairs:
    message_start (and a ping) on the first chunk, a content block per text run or tool call
    (content_block_start, deltas, content_block_stop), then at the end message_delta with the
    stop reason and the usage, and message_stop."""

    def __init__(self, model: str):
        self.model = model
        self.started = False
        self.block: tuple[str, object] | None = None  # ("text", None) or ("tool", chat index)
        self.index = -1  # the current content block's index
        self.stop_reason = "end_turn"
        self.usage: dict = {}

    def chunk(self, chunk: dict) -> list[tuple[str, dict]]:
        events = [] if self.started else self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events += self._text(delta["content"])
            for call in delta.get("tool_calls") or []:
                events += self._tool_call(call)
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return events

    def finish(self) -> list[tuple[str, dict]]:
        """The closing events of a stream that ended normally."""
        events = [] if self.started else self._start({})
        events += self._close_block()
        usage = message_usage(self.usage)
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events

    def _start(self, chunk: dict) -> list[tuple[str, dict]]:
        self.started = True
        message = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},  # known at the end: message_delta
        }
        return [
            ("message_start", {"type": "message_start", "message": message}),
            ("ping", {"type": "ping"}),
        ]

    def _text(self, text: str) -> list[tuple[str, dict]]:
        events = []
        if self.block != ("text", None):
            events += self._open_block(("text", None), {"type": "text", "text": ""})
        events.append(self._delta({"type": "text_delta", "text": text}))
        return events

    def _tool_call(self, call: dict) -> list[tuple[str, dict]]:
        events = []
        function = call.get("function") or {}
        key = ("tool", call.get("index", 0))
        if self.block != key:
            block = {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": {},
            }
            events += self._open_block(key, block)
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            events.append(self._delta(delta))
        return events

    def _open_block(self, key, block: dict) -> list[tuple[str, dict]]:
        events = self._close_block()
        self.block, self.index = key, self.index + 1
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        return [*events, ("content_block_start", start)]

    def _close_block(self) -> list[tuple[str, dict]]:
        if self.block is None:
            return []
        self.block = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _delta(self, delta: dict) -> tuple[str, dict]:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self.index, "delta": delta},
        )
