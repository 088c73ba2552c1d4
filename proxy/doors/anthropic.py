"""The Anthropic Messages door: `POST /v1/messages` in Anthropic's wire format, for the
official `anthropic` SDKs, on the same accounts, limits, cache, metering and usage log as the
other doors (the catalog method `v1/messages`, answered by a chat upstream).

The key travels as `x-api-key: KEY:SECRET` (or `Authorization: Bearer KEY:SECRET`, as the SDK's
`auth_token` sends it), with an `anthropic-version` header. Answers are Messages; a stream is
Anthropic's event sequence; errors are Anthropic error objects with the matching HTTP status
and the gateway code in `error.code`. See docs/anthropic-door.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Flask, Response, request
from flask_smorest import Api

from proxy.account_values import Credentials
from proxy.calls import CallContext, CallRequest, CallResult, StreamingCall, answer_call
from proxy.doors import kit
from proxy.errors import ANSWERED_CODES, ERROR_CODES, MISSING_PARAM, PARAM_ERROR, GatewayError
from proxy.messages_translation import MessageEvents
from proxy.params import parse_json_body

METHOD = "v1/messages"
PATH = "/v1/messages"
# Anthropic's error `type` for each HTTP status, as its SDKs and clients expect them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Retrying cannot help these: the SDK is told not to (it retries 429 and 5xx by default).
NOT_RETRYABLE = {"4013", "4016"}


def register(app: Flask, api: Api) -> None:
    """POST /v1/messages; any other verb there is an Anthropic-shaped 405 (recorded)."""
    app.add_url_rule(
        PATH,
        endpoint="anthropic messages",
        view_func=serve,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        strict_slashes=False,
    )


def serve() -> Response:
    context = kit.call_context("anthropic")
    call = read_request()
    result = answer_call(kit.gateway(), call, context)
    response = render(result, context)
    if request.method != "POST":
        response.status_code = 405
        response.headers["Allow"] = "OPTIONS, POST"
    return response


def read_request() -> CallRequest | GatewayError:
    """The v1/messages call the request makes, or the GatewayError that refuses it."""
    if request.method != "POST":
        return GatewayError(PARAM_ERROR, f"{request.method[:16]} is not served on {PATH}; use POST")
    try:
        credentials = credentials_from_headers()
        if not request.headers.get("anthropic-version", "").strip():
            raise GatewayError(
                MISSING_PARAM,
                "anthropic-version: header is required (e.g. anthropic-version: 2023-06-01)",
            )
        with kit.body_read_errors():
            text = request.get_data(as_text=True)
        return CallRequest(
            credentials=credentials,
            method=METHOD,
            o_args=parse_json_body(text),
            use_cache=request.headers.get("X-Gateway-Cache", "no").strip().lower() == "yes",
        )
    except GatewayError as refused:
        return refused


def credentials_from_headers() -> Credentials:
    """KEY:SECRET from `x-api-key` (Anthropic's header) or `Authorization: Bearer`."""
    token = request.headers.get("x-api-key", "").strip()
    if not token:
        scheme, _, bearer = request.headers.get("Authorization", "").strip().partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else ""
    return kit.api_key_credentials(
        token,
        request.headers.get("X-API-SECRET", ""),
        "no API key: send x-api-key: KEY:SECRET (the SDK's api_key)",
    )


def render(result: CallResult | StreamingCall, context: CallContext) -> Response:
    """A Message, an error object or the event stream, with the gateway's headers."""
    if isinstance(result, StreamingCall):
        response = kit.event_stream(message_events(result, _requested_model(), context.request_id))
    elif result.code in ANSWERED_CODES:
        response = answer(result)
    else:
        response = error_answer(result, context)
    response.headers["request-id"] = context.request_id  # the SDK's `_request_id`
    return kit.sdk_door_headers(response, result, context.request_id)


def _requested_model() -> str:
    """The request's model, for a message_start before the upstream names its own."""
    body = request.get_json(silent=True, cache=True)
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else ""


def message_events(streaming: StreamingCall, model: str, request_id: str) -> Iterator[str]:
    """Anthropic's stream: message_start, content blocks, message_delta (stop reason, usage)
    and message_stop; an `error` event if the upstream broke off."""
    events = MessageEvents(model)
    for kind, value in streaming.events:
        if kind == "chunk":
            yield from map(_sse, events.chunk(value))
        elif value.code in ANSWERED_CODES:
            yield from map(_sse, events.finish())
        else:
            yield _sse(("error", error_body(value, request_id)))


def _sse(event: tuple[str, dict]) -> str:
    name, data = event
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def answer(result: CallResult) -> Response:
    return kit.json_answer(result.response)


def error_body(result: CallResult, request_id: str = "") -> dict:
    """Anthropic's error object: its type by HTTP status, the gateway code in `error.code`."""
    status = _status(result)
    described = ERROR_CODES[result.code].en if result.code in ERROR_CODES else "error"
    message = f"{described}: {result.detail}" if result.detail else described
    error = {"type": ERROR_TYPES.get(status, "api_error"), "message": message, "code": result.code}
    upstream_error = result.response if isinstance(result.response, dict) else None
    if upstream_error and "error" in upstream_error:
        error["upstream_error"] = upstream_error["error"]
    body = {"type": "error", "error": error}
    if request_id:
        body["request_id"] = request_id
    return body


def _status(result: CallResult) -> int:
    if result.http_status:
        return result.http_status
    return ERROR_CODES[result.code].http_status if result.code in ERROR_CODES else 500


def error_answer(result: CallResult, context: CallContext) -> Response:
    status = _status(result)
    body = error_body(result, context.request_id)
    response = Response(
        json.dumps(body, ensure_ascii=False), status=status, content_type="application/json"
    )
    if result.code in NOT_RETRYABLE or status < 500 and status != 429:
        response.headers["x-should-retry"] = "false"
    return response
