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
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from flask import Flask, Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.routing import Map, PathConverter, Rule

from proxy.accounts import Credentials
from proxy.calls import CallRequest, CallResult, StreamingCall, run_call
from proxy.catalog import METHODS, MethodSpec
from proxy.errors import (
    ANSWERED_CODES,
    API_NOT_FOUND,
    ERROR_CODES,
    MISSING_PARAM,
    PARAM_ERROR,
    GatewayError,
)
from proxy.formats import Frozen
from proxy.params import form_values, parse_json_body, refuse_unnamed_parts
from proxy.uploads import FILE_FIELDS, FileUpload

# Gateway code -> HTTP status of the OpenAI error answer (the SDK raises by status); an error
# with its own `http_status` (a missing key: 401; another account's file: 404) overrides it.
HTTP_STATUS = {
    "4000": 500,
    "4001": 502,
    "4002": 502,
    "4003": 400,
    "4004": 401,
    "4005": 401,
    "4006": 403,
    "4007": 403,
    "4008": 429,
    "4009": 503,
    "4010": 404,
    "4012": 403,
    "4013": 429,
    "4014": 400,
    "4015": 400,
    "4016": 429,
    "4017": 504,
    "5000": 500,
}
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
# Methods whose answer is binary on this door: (base64 field, MIME type field).
BINARY_ANSWERS = {
    "v1/audio/speech": ("audio", "mime_type"),
    "v1/files/content": ("content", "mime_type"),
}


def door_routes() -> Iterator[tuple[str, str, MethodSpec]]:
    """(verb, Flask rule, method) of every catalog route: the only list of what the door serves."""
    for spec in METHODS:
        for route in spec.openai_routes:
            verb, path = route.split(" ", 1)
            yield verb, path, spec


# The door's own routes, apart from the catch-all: they tell a wrong verb from an unknown path.
_ROUTES = Map(
    [Rule(path, methods=[verb], endpoint=spec.name) for verb, path, spec in door_routes()],
    strict_slashes=False,
)


class AnyPathConverter(PathConverter):
    """<path:>, newlines included: its `.` stops at one (`/v1/x%0A`), and such a path fell out
    of the door to Flask's own 404."""

    regex = "[^/][\\s\\S]*?"


def register(app: Flask) -> None:
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
    for verb, path, spec in door_routes():
        app.add_url_rule(
            path,
            endpoint=f"openai {verb} {path}",
            view_func=partial(serve, spec.name),
            methods=[verb],
            strict_slashes=False,
        )


def serve(method: str, refusal: GatewayError | None = None, **path_args) -> Response:
    """One call on the door; `refusal` answers (and records) a request no route serves."""
    gateway = current_app.extensions["gateway"]
    request_id = f"{current_app.config['REQUEST_ID_PREFIX']}.{uuid.uuid4().hex[:16]}"
    g.request_id = request_id

    def prepare() -> CallRequest:
        if refusal is not None:
            raise refusal
        return CallRequest(
            credentials=credentials_from_headers(),
            method=method,
            o_args={**arguments(), **path_args},
            files=multipart_files(),
            use_cache=request.headers.get("X-Gateway-Cache", "no").strip().lower() == "yes",
        )

    result = run_call(
        gateway,
        current_app.config,
        prepare,
        request_id=request_id,
        client_ip=request.remote_addr or "",
    )
    if isinstance(result, StreamingCall):
        response = event_stream(openai_events(result))
    elif result.code in ANSWERED_CODES:
        response = answer(result)
    else:
        response = error_answer(result)
    response.headers["X-Request-Id"] = request_id
    if isinstance(result, CallResult):
        response.headers["X-Error-Code"] = result.code
        if result.api_info:
            response.headers["X-Api-Info"] = result.api_info
        if result.code in ANSWERED_CODES:
            response.headers["X-Gateway-Cache"] = "hit" if result.cached else "miss"
    return response


def event_stream(events: Iterator[str]) -> Response:
    """Server-sent events, sent as they come: no buffering here, and none in nginx."""
    response = Response(events, status=200, content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def openai_events(streaming: StreamingCall) -> Iterator[str]:
    """OpenAI's stream: `data: <chunk>` per chunk, an error object if the upstream broke off,
    then `data: [DONE]`."""
    for kind, value in streaming.events:
        if kind == "chunk":
            yield f"data: {json.dumps(value, ensure_ascii=False)}\n\n"
        elif value.code not in ANSWERED_CODES:
            error = json.loads(error_answer(value).get_data(as_text=True))
            yield f"data: {json.dumps(error, ensure_ascii=False)}\n\n"
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
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        token = token.strip()
    else:
        token = (request.headers.get("api-key") or request.headers.get("X-API-KEY") or "").strip()
    if not token:
        raise GatewayError(
            MISSING_PARAM,
            "no API key: send Authorization: Bearer KEY:SECRET (the SDK's api_key), "
            "or an api-key header",
            http_status=401,
        )
    key, _, secret = token.partition(":")
    secret = secret or request.headers.get("X-API-SECRET", "")
    if not secret:
        raise GatewayError(
            MISSING_PARAM,
            "the API key must be KEY:SECRET (the gateway key, a colon, its secret)",
            http_status=401,
        )
    return Credentials(key=key, secret=secret, sign="", signed_params={})


def arguments() -> dict:
    """The call's arguments: the JSON body, the form fields of a multipart upload, or the
    query string of a GET."""
    with body_read_errors():
        if request.mimetype == "multipart/form-data":
            return form_values(request.form)
        if request.method in ("GET", "DELETE"):
            return {name: request.args.get(name) for name in request.args}
        text = request.get_data(as_text=True)
    return parse_json_body(text)


@contextmanager
def body_read_errors():
    """Reading the request body, either door: one over MAX_CONTENT_LENGTH is 4003 (HTTP 413
    on /v1), one that cannot be read is 4003 with proxy/request_body.py's text-free reason."""
    try:
        yield
    except RequestEntityTooLarge:
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        raise GatewayError(
            PARAM_ERROR, f"the request body is larger than {limit} bytes", http_status=413
        ) from None
    except ClientDisconnected as exc:
        raise GatewayError(PARAM_ERROR, exc.description) from None


def multipart_files() -> dict[str, FileUpload]:
    """The request's multipart parts named file, image or mask, as FileUploads (both doors)."""
    refuse_unnamed_parts(request.files)
    return {
        name: FileUpload(
            filename=(part.filename or f"{name}.bin")[:255],
            content=part.read(),
            content_type=part.mimetype or "application/octet-stream",
        )
        for name in FILE_FIELDS
        if (part := request.files.get(name)) is not None
    }


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
    if isinstance(payload, Frozen):  # a kept answer: its JSON text is made once
        body = payload.rendering("openai", _openai_json)
    else:
        body = _openai_json(payload)
    return Response(body, status=200, content_type="application/json")


def _openai_json(payload) -> str:
    return json.dumps(payload, ensure_ascii=False)


def _message(result: CallResult) -> str:
    described = ERROR_CODES[result.code].en if result.code in ERROR_CODES else "error"
    return f"{described}: {result.detail}" if result.detail else described


def error_answer(result: CallResult) -> Response:
    status = result.http_status or HTTP_STATUS.get(result.code, 500)
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
    if result.code in NOT_RETRYABLE or status < 500 and status != 429:
        response.headers["x-should-retry"] = "false"
    return response
