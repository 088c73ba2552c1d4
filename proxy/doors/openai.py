"""The OpenAI-compatible door: `/v1/*` at the OpenAI paths, on the same accounts, limits,
cache, metering and usage log as `/api` (proxy/calls.py), for the official SDKs.

The key travels as an SDK's `api_key` sends it: `Authorization: Bearer KEY:SECRET`, or as
`api-key` / `X-API-KEY` (`KEY:SECRET`, or the key with `X-API-SECRET`). Answers are the
upstream's own JSON (binary for speech and file content); errors are OpenAI error objects
with the matching HTTP status and the gateway code in `error.code`. See docs/openai-door.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from functools import partial

from flask import Flask, Response, request
from flask_smorest import Api
from werkzeug.routing import Map, PathConverter, Rule

from proxy.account_values import Credentials
from proxy.calls import CallContext, CallRequest, CallResult, StreamingCall, answer_call
from proxy.catalog import BINARY_ANSWERS, openai_routes
from proxy.doors import kit
from proxy.errors import (
    ANSWERED_CODES,
    API_NOT_FOUND,
    ERROR_CODES,
    PARAM_ERROR,
    GatewayError,
)
from proxy.params import form_values, parse_json_body

# OpenAI's error `type` for each status, as its SDKs and clients expect them.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
# Retrying cannot help these: the SDK is told not to (it retries 429 and 5xx by default).
NOT_RETRYABLE = {"4013", "4016"}
# The door's own routes, apart from the catch-all: they tell a wrong verb from an unknown path.
_ROUTES = Map(
    [Rule(path, methods=[verb], endpoint=spec.name) for verb, path, spec in openai_routes()],
    strict_slashes=False,
)


class AnyPathConverter(PathConverter):
    """<path:>, newlines included: its `.` stops at one (`/v1/x%0A`), and such a path fell out
    of the door to Flask's own 404."""

    regex = "[^/][\\s\\S]*?"


def register(app: Flask, api: Api) -> None:
    """A URL rule per catalog route. Any other /v1 request is an OpenAI-shaped 405 (a verb the
    path does not take) or 404 (4010)."""
    app.url_map.converters["any_path"] = AnyPathConverter
    app.add_url_rule(
        "/v1/<any_path:unknown>",
        endpoint="openai unknown",
        view_func=unknown_path,
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    )
    app.add_url_rule(  # /v1 and /v1/ themselves, which <path:> (never empty) does not take
        "/v1/",
        endpoint="openai unknown root",
        view_func=unknown_path,
        defaults={"unknown": ""},
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    )
    for verb, path, spec in openai_routes():
        app.add_url_rule(
            path,
            endpoint=f"openai {verb} {path}",
            view_func=partial(serve, spec.name),
            methods=[verb],
            strict_slashes=False,
        )


def serve(method: str, refusal: GatewayError | None = None, **path_args) -> Response:
    """One call on the door; `refusal` answers (and records) a request no route serves."""
    context = kit.call_context("v1")
    call = refusal or read_request(method, path_args)
    result = answer_call(kit.gateway(), call, context)
    return render(result, context)


def read_request(method: str, path_args: dict) -> CallRequest | GatewayError:
    """The call of `method` the request makes, or the GatewayError that refuses it."""
    try:
        return CallRequest(
            credentials=credentials_from_headers(),
            method=method,
            o_args={**arguments(), **path_args},
            files=kit.multipart_files(),
            use_cache=request.headers.get("X-Gateway-Cache", "no").strip().lower() == "yes",
        )
    except GatewayError as refused:
        return refused


def render(result: CallResult | StreamingCall, context: CallContext) -> Response:
    """OpenAI's answer, error object or event stream, with the gateway's headers."""
    if isinstance(result, StreamingCall):
        response = kit.event_stream(openai_events(result))
    elif result.code in ANSWERED_CODES:
        response = answer(result)
    else:
        response = error_answer(result)
    return kit.sdk_door_headers(response, result, context.request_id)


def openai_events(streaming: StreamingCall) -> Iterator[str]:
    """OpenAI's stream: `data: <chunk>` per chunk, an error object if the upstream broke off,
    then `data: [DONE]`. A typed event (the Responses API's) also names its type in an
    `event:` line, and such a stream ends with its last event, without [DONE], as OpenAI's."""
    typed = False
    for kind, value in streaming.events:
        if kind == "chunk":
            event_type = value.get("type") if isinstance(value, dict) else None
            if isinstance(event_type, str):
                typed = True
                yield f"event: {event_type}\n"
            yield f"data: {json.dumps(value, ensure_ascii=False)}\n\n"
        elif value.code not in ANSWERED_CODES:
            error = json.loads(error_answer(value).get_data(as_text=True))
            yield f"data: {json.dumps(error, ensure_ascii=False)}\n\n"
    if not typed:
        yield "data: [DONE]\n\n"


def unknown_path(unknown: str) -> Response:
    """A /v1 request no route serves, recorded like every call: 405 with `Allow` when the path
    takes other verbs, else 404 (4010)."""
    path, verb = f"/v1/{unknown}"[:84], request.method[:16]
    allowed = allowed_methods(path)
    if not allowed:
        return serve(
            "",
            refusal=GatewayError(
                API_NOT_FOUND,
                f"{verb} {path} is not served; GET /api/methods lists the methods "
                "and their /v1 paths",
            ),
        )
    verbs = ", ".join(m for m in allowed if m not in ("HEAD", "OPTIONS"))
    detail = f"{verb} is not served on {path}; use {verbs}"
    response = serve("", refusal=GatewayError(PARAM_ERROR, detail))
    response.status_code = 405
    response.headers["Allow"] = ", ".join(allowed)
    return response


def allowed_methods(path: str) -> list[str]:
    """The verbs the door takes at `path`, with HEAD and OPTIONS as Flask answers them, sorted;
    [] where it serves nothing."""
    methods = _ROUTES.bind("").allowed_methods(path)
    return sorted({*methods, "OPTIONS"}) if methods else []


def credentials_from_headers() -> Credentials:
    """KEY:SECRET from `Authorization: Bearer`, `api-key` or `X-API-KEY`."""
    header_key, header_secret = kit.header_credentials()
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        token = token.strip()
    else:
        token = (request.headers.get("api-key") or header_key).strip()
    return kit.api_key_credentials(
        token,
        header_secret,
        "no API key: send Authorization: Bearer KEY:SECRET (the SDK's api_key), "
        "or an api-key header",
    )


def arguments() -> dict:
    """The call's arguments: the JSON body, the form fields of a multipart upload, or the
    query string of a GET."""
    with kit.body_read_errors():
        if request.mimetype == "multipart/form-data":
            return form_values(request.form)
        if request.method in ("GET", "DELETE"):
            return {name: request.args.get(name) for name in request.args}
        text = request.get_data(as_text=True)
    return parse_json_body(text)


def answer(result: CallResult) -> Response:
    payload = result.response
    binary = BINARY_ANSWERS.get(result.method)
    if binary and isinstance(payload, dict):
        content_field, type_field = binary
        return Response(
            base64.b64decode(payload[content_field]),
            status=200,
            content_type=payload.get(type_field) or "application/octet-stream",
        )
    return kit.json_answer(payload)


def _message(result: CallResult) -> str:
    described = ERROR_CODES[result.code].en if result.code in ERROR_CODES else "error"
    return f"{described}: {result.detail}" if result.detail else described


def error_answer(result: CallResult) -> Response:
    status = result.http_status or ERROR_CODES[result.code].http_status
    upstream_error = result.response if isinstance(result.response, dict) else None
    body = {
        "error": {
            "message": _message(result),
            "type": ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": result.code,
        }
    }
    if upstream_error and "error" in upstream_error:
        body["error"]["upstream_error"] = upstream_error["error"]
    response = Response(
        json.dumps(body, ensure_ascii=False), status=status, content_type="application/json"
    )
    if result.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(result.retry_after_seconds)
    if result.code in NOT_RETRYABLE or status < 500 and status != 429:
        response.headers["x-should-retry"] = "false"
    return response
