"""Fault modes, chosen by the request's ``model``: one before_request filter for every view.

The filter answers for the view (500, 429, garbage), or makes it late (slow, hang), or leaves
a mark the view reads with :func:`current_fault` (empty: an answer with nothing in it;
stream-slow: a slowly paced stream). Faults act before the body is validated.
"""

from __future__ import annotations

import flask
from flask import Response, g, request

from stub_upstream.replies import openai_error
from stub_upstream.state import stub_state

#: The modes POST /_stub/fault may set for every request.
SERVER_FAULTS = ("500", "429", "401")

#: Model name -> fault mode. Any other model name gets a normal answer.
FAULT_MODELS: dict[str, str] = {
    "stub-slow": "slow",
    "stub-500": "500",
    "stub-429": "429",
    "stub-garbage": "garbage",
    "stub-hang": "hang",
    "stub-stream-slow": "stream-slow",
    "stub-empty": "empty",
}

GARBAGE_JSON = b'{"id": "stub-garbage", "object": <<< this is not JSON >>>'
GARBAGE_SSE = b'data: {"id": "stub-garbage", <<< this is not JSON >>>\n\ndata: [DONE]\n\n'
SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"


def current_fault() -> str | None:
    """The fault mode of this request, from the ``model`` of its JSON body or form."""
    body = g.get("stub_body")
    model = body.get("model") if isinstance(body, dict) else None
    return FAULT_MODELS.get(model) if isinstance(model, str) else None


def _retry_hint() -> dict[str, str]:
    retry_after_ms = stub_state().options.retry_after_ms
    return {} if retry_after_ms is None else {"retry-after-ms": str(retry_after_ms)}


def _server_error() -> Response:
    return openai_error(500, SERVER_ERROR, type_="server_error", headers=_retry_hint())


def _rate_limited() -> Response:
    headers = {"Retry-After": "0", "x-ratelimit-remaining-requests": "0", **_retry_hint()}
    return openai_error(
        429,
        "Rate limit reached for requests (stub-429).",
        type_="requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def _key_refused() -> Response:
    return openai_error(
        401,
        "Incorrect API key provided (stub fault 401).",
        type_="invalid_request_error",
        code="invalid_api_key",
    )


def _garbage() -> Response:
    if g.stub_body.get("stream") is True:
        return Response(GARBAGE_SSE, status=200, mimetype="text/event-stream")
    return Response(GARBAGE_JSON, status=200, mimetype="application/json")


def _late(seconds_option: str) -> Response | None:
    """Sleep, then let the view answer; a stopping server wakes it to answer 503."""
    state = stub_state()
    if state.stopping.wait(getattr(state.options, seconds_option)):
        return openai_error(503, "The stub upstream is shutting down.", type_="server_error")
    return None


_ANSWERS = {
    "500": _server_error,
    "429": _rate_limited,
    "401": _key_refused,
    "garbage": _garbage,
    "slow": lambda: _late("slow_seconds"),
    "hang": lambda: _late("hang_seconds"),
}


def apply_fault() -> Response | None:
    """The response a fault replaces the answer with, or None to let the view answer."""
    if request.url_rule is None or request.path.startswith("/_stub/"):
        return None
    answer = _ANSWERS.get(stub_state().options.fault or current_fault() or "")
    return None if answer is None else answer()


def init_app(app: flask.Flask) -> None:
    app.before_request(apply_fault)  # after recording: a faulted request is logged too
