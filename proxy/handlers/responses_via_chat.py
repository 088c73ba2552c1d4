"""v1/responses for upstreams that speak chat completions only (`responses = "chat"` in
UPSTREAMS_FILE, or OPENAI_RESPONSES_API=chat): a text Responses request becomes a chat
request, and the chat answer (or its chunks) becomes a response object (or its typed events).

Text only: `input` as a string or text messages, `instructions`, `max_output_tokens`,
`temperature`, `top_p`, `user`. Anything else (tools, previous_response_id, reasoning, ...)
is 4003 naming it; nothing is stored (`store` false: retrieve is not served for these).
Plain data in and out, no Flask (docs/methods.md).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from proxy.errors import PARAM_ERROR, GatewayError
from proxy.handlers import openai as openai_handlers

# Arguments that mean the same on chat, or nothing there (dropped), or that are renamed.
_KEPT = ("model", "temperature", "top_p", "user")
_DROPPED = ("store", "stream", "parallel_tool_calls", "truncation", "service_tier", "metadata")
_RENAMED = {"max_output_tokens": "max_tokens"}
_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = ("input_text", "output_text", "text")


def create_response(client, args: dict) -> dict:
    """v1/responses answered by a chat call, in the Responses API's shape."""
    chat = openai_handlers.create_chat_completion(client, chat_arguments(args))
    choices = chat.get("choices") or [{}]
    text = (choices[0].get("message") or {}).get("content") or ""
    return response_object(
        _response_id(chat.get("id")),
        args,
        text,
        usage=_responses_usage(chat.get("usage")),
        finish=choices[0].get("finish_reason"),
        created=chat.get("created"),
    )


def stream_events(client, args: dict) -> Iterator[dict]:
    """The typed events of a streamed response, made from the chat stream's chunks. The
    upstream's refusal surfaces at the first next(), before any event."""
    chat_args = {**chat_arguments(args), "stream": True}
    chat_args["stream_options"] = {"include_usage": True}
    chunks = openai_handlers.stream_chunks(client, "v1/chat/completions", chat_args)
    try:
        first = next(chunks, None)
        yield from _numbered(_events(itertools.chain([first] if first else [], chunks), args))
    finally:
        chunks.close()


def chat_arguments(args: dict) -> dict:
    """The chat request of a text Responses request; 4003 naming what is not translated."""
    untranslated = sorted(
        name for name in args if name not in (*_KEPT, *_DROPPED, *_RENAMED, "input", "instructions")
    )
    if untranslated:
        raise GatewayError(
            PARAM_ERROR,
            f"_o_args.{untranslated[0]} is not served by this upstream, which speaks chat "
            "completions only: v1/responses is translated for text (input, instructions, "
            "max_output_tokens, temperature, top_p, user)",
        )
    chat = {name: args[name] for name in _KEPT if name in args}
    chat.update({_RENAMED[name]: args[name] for name in _RENAMED if name in args})
    instructions = args.get("instructions")
    system = [{"role": "system", "content": instructions}] if instructions else []
    chat["messages"] = [*system, *_messages(args["input"])]
    return chat


def _messages(given) -> list[dict]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise GatewayError(PARAM_ERROR, "_o_args.input must be a text or a list of messages")
    return [_message(item, f"_o_args.input[{i}]") for i, item in enumerate(given)]


def _message(item, where: str) -> dict:
    if (
        not isinstance(item, dict)
        or item.get("type", "message") != "message"
        or item.get("role") not in _ROLES
    ):
        raise GatewayError(
            PARAM_ERROR,
            f"{where} is not a text message (role user, assistant, system or developer); "
            "only text is translated to chat completions for this upstream",
        )
    role = "system" if item["role"] == "developer" else item["role"]
    return {"role": role, "content": _text(item.get("content"), where)}


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(part, dict)
        and part.get("type") in _TEXT_PARTS
        and isinstance(part.get("text"), str)
        for part in content
    ):
        return "".join(part["text"] for part in content)
    raise GatewayError(
        PARAM_ERROR, f"{where}.content: only text parts are translated for this upstream"
    )


def response_object(
    response_id: str,
    args: dict,
    text: str | None,
    *,
    usage: dict | None,
    finish: str | None = "stop",
    created=None,
    status: str | None = None,
) -> dict:
    """The Responses API's object of a translated answer (`text` None: not begun)."""
    incomplete = finish == "length"
    output = []
    if text is not None:
        output.append(_output_message(response_id, text))
    return {
        "id": response_id,
        "object": "response",
        "created_at": created if isinstance(created, int) else int(time.time()),
        "status": status or ("incomplete" if incomplete else "completed"),
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": args.get("instructions"),
        "max_output_tokens": args.get("max_output_tokens"),
        "model": args.get("model"),
        "output": output,
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "store": False,  # the chat upstream keeps nothing to retrieve
        "temperature": args.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "top_p": args.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage,
        "metadata": args.get("metadata") or {},
    }


def _output_message(response_id: str, text: str, status: str = "completed") -> dict:
    return {
        "type": "message",
        "id": "msg_" + response_id[len("resp_") :],
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _events(chunks: Iterator[dict], args: dict) -> Iterator[dict]:
    """Responses events around the chat chunks' text: created, the message's deltas, done."""
    chunks = iter(chunks)
    first = next(chunks, None) or {}
    response_id = _response_id(first.get("id"))
    started = response_object(
        response_id, args, None, usage=None, created=first.get("created"), status="in_progress"
    )
    yield {"type": "response.created", "response": started}
    yield {"type": "response.in_progress", "response": started}
    message = _output_message(response_id, "", "in_progress")
    yield {
        "type": "response.output_item.added",
        "output_index": 0,
        "item": {**message, "content": []},
    }
    at = {"item_id": message["id"], "output_index": 0, "content_index": 0}
    yield {"type": "response.content_part.added", **at, "part": message["content"][0]}
    text, usage, finish = [], None, "stop"
    for chunk in itertools.chain([first], chunks):
        if isinstance(chunk.get("usage"), dict):
            usage = _responses_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                text.append(delta)
                yield {"type": "response.output_text.delta", **at, "delta": delta}
            finish = choice.get("finish_reason") or finish
    done = response_object(
        response_id, args, "".join(text), usage=usage, finish=finish, created=first.get("created")
    )
    part = done["output"][0]["content"][0]
    yield {"type": "response.output_text.done", **at, "text": part["text"]}
    yield {"type": "response.content_part.done", **at, "part": part}
    yield {"type": "response.output_item.done", "output_index": 0, "item": done["output"][0]}
    last = "response.incomplete" if done["status"] == "incomplete" else "response.completed"
    yield {"type": last, "response": done}


def _numbered(events: Iterator[dict]) -> Iterator[dict]:
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}


def _response_id(chat_id) -> str:
    """A response id from the chat answer's id: letters, digits, _ and - only."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in str(chat_id))
    return "resp_" + (kept[:120] or "chat")


def _responses_usage(usage) -> dict | None:
    """Chat's usage in the Responses API's names."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.get("total_tokens") or prompt + completion,
    }
