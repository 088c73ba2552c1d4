"""``/v1/responses``: the Responses API, text in and out. A response answers
``"stub reply: "`` + the text of the last user input; it is kept (``store``, the default)
for retrieve, delete and its input items, at most ``RESPONSES_LIMIT`` of them per stub."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import flask
from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import CREATED, content_text, digest, truncate, words
from stub_upstream.replies import BadRequest, json_response, missing, openai_error
from stub_upstream.state import stub_state

REPLY_PREFIX = "stub reply: "
RESPONSES_LIMIT = 1000
_EXTENSION_KEY = "stub_upstream.responses"

bp = Blueprint("responses", __name__, url_prefix="/v1")


class _Kept:
    """The responses kept by one stub app, with their input items (oldest dropped first)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()

    def keep(self, response: dict[str, Any], inputs: list[dict[str, Any]]) -> None:
        with self.lock:
            self.items[response["id"]] = (response, inputs)
            while len(self.items) > RESPONSES_LIMIT:
                self.items.popitem(last=False)


def _kept() -> _Kept:
    return flask.current_app.extensions.setdefault(_EXTENSION_KEY, _Kept())


def _input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`input` as a list of message items: a string is one user message."""
    given = body.get("input")
    if given is None:
        raise missing("input")
    if isinstance(given, str):
        given = [{"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise BadRequest("'input' must be a string or a non-empty array.", "input")
    items = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise BadRequest(f"'input[{i}]' must be an object.", f"input[{i}]")
        text = content_text(item.get("content"))
        items.append(
            {
                "type": "message",
                "id": f"msg_in_{digest([body, i])}",
                "role": item.get("role", "user"),
                "content": [{"type": "input_text", "text": text}],
            }
        )
    return items


def _response(body, response_id, model, text, status, inputs, usage) -> dict[str, Any]:
    output = []
    if text is not None:
        output.append(
            {
                "type": "message",
                "id": "msg_" + response_id[len("resp_") :],
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    return {
        "id": response_id,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True) is not False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "metadata": body.get("metadata") or {},
    }


@bp.post("/responses")
def create_response() -> Response:
    body = arguments.json_body()
    stream = arguments.stream_flag(body)
    model = arguments.model(body)
    inputs = _input_items(body)
    users = [item for item in inputs if item["role"] == "user"] or inputs
    reply = REPLY_PREFIX + users[-1]["content"][0]["text"]
    max_output = arguments.int_param(body, "max_output_tokens", None, 1, 1_000_000)
    pieces, _ = truncate(reply, max_output)
    text = "".join(pieces)
    input_tokens = max(1, sum(words(item["content"][0]["text"]) for item in inputs))
    usage = {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": words(text),
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + words(text),
    }
    response_id = "resp_" + digest(body)
    done = _response(body, response_id, model, text, "completed", inputs, usage)
    if done["store"]:
        _kept().keep(done, inputs)
    if stream:
        started = _response(body, response_id, model, None, "in_progress", inputs, None)
        return _event_stream(_events(started, done, pieces))
    return json_response(done)


def _events(started: dict, done: dict, pieces: list[str]) -> list[dict[str, Any]]:
    """The Responses API's typed events of one text answer, in OpenAI's order."""
    message = done["output"][0]
    item_id = message["id"]
    at = {"item_id": item_id, "output_index": 0, "content_index": 0}
    empty_part = {"type": "output_text", "text": "", "annotations": []}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**message, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **at, "part": empty_part},
        *({"type": "response.output_text.delta", **at, "delta": piece} for piece in pieces),
        {"type": "response.output_text.done", **at, "text": message["content"][0]["text"]},
        {"type": "response.content_part.done", **at, "part": message["content"][0]},
        {"type": "response.output_item.done", "output_index": 0, "item": message},
        {"type": "response.completed", "response": done},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _event_stream(events: list[dict[str, Any]]) -> Response:
    """`event: <type>` and `data: {json}` per event, paced as the other streams; no [DONE]
    (the Responses API ends with response.completed)."""
    state = stub_state()
    slow = current_fault() == "stream-slow"
    delay = state.options.stream_slow_delay if slow else state.options.stream_delay

    def paced() -> Iterator[bytes]:
        for i, event in enumerate(events):
            if i and delay > 0 and state.stopping.wait(delay):
                return
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()

    return Response(
        paced(),
        status=200,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _found(response_id: str):
    with _kept().lock:
        found = _kept().items.get(response_id)
    if found is None:
        flask.abort(
            openai_error(404, f"Response with id '{response_id}' not found.", param="response_id")
        )
    return found


@bp.get("/responses/<response_id>")
def retrieve_response(response_id: str) -> Response:
    return json_response(_found(response_id)[0])


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str) -> Response:
    _found(response_id)
    with _kept().lock:
        _kept().items.pop(response_id, None)
    return json_response({"id": response_id, "object": "response", "deleted": True})


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str) -> Response:
    _, inputs = _found(response_id)
    data = list(reversed(inputs)) if flask.request.args.get("order", "desc") == "desc" else inputs
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
    )
