"""What every door reads and writes the same way: the gateway's services, request ids, the
request body and its multipart files, credentials in headers, and server-sent events.

A door imports from here, never from another door.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Response, current_app, g, request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from proxy.account_values import Credentials
from proxy.calls import CallContext, CallResult
from proxy.errors import ANSWERED_CODES, MISSING_PARAM, PARAM_ERROR, GatewayError
from proxy.formats import Frozen
from proxy.params import refuse_unnamed_parts
from proxy.services import Gateway
from proxy.uploads import FILE_FIELDS, FileUpload


def gateway() -> Gateway:
    return current_app.extensions["gateway"]


def call_context(door: str) -> CallContext:
    """Taken first thing: the request's id, the caller's address, the time it began, and the
    door it came in by ("api" or "v1")."""
    return CallContext(new_request_id(), client_ip(), time.perf_counter(), door)


def new_request_id() -> str:
    """A fresh id for this request, also kept on `g` for the log lines (proxy/logs.py)."""
    request_id = f"{current_app.config['REQUEST_ID_PREFIX']}.{uuid.uuid4().hex[:16]}"
    g.request_id = request_id
    return request_id


def client_ip() -> str:
    """The caller's address (once ProxyFix has applied TRUSTED_PROXY_HOPS)."""
    return request.remote_addr or ""


def header_credentials() -> tuple[str, str]:
    """(key, secret) from the X-API-KEY and X-API-SECRET headers; "" for each one absent."""
    return request.headers.get("X-API-KEY", ""), request.headers.get("X-API-SECRET", "")


def api_key_credentials(token: str, header_secret: str, missing: str) -> Credentials:
    """An SDK's api_key, KEY:SECRET (the secret may come alone in `header_secret`), as the SDK
    doors read it; 401 saying `missing` when there is none, or what to send without a secret."""
    if not token:
        raise GatewayError(MISSING_PARAM, missing, http_status=401)
    key, _, secret = token.partition(":")
    secret = secret or header_secret
    if not secret:
        raise GatewayError(
            MISSING_PARAM,
            "the API key must be KEY:SECRET (the gateway key, a colon, its secret)",
            http_status=401,
        )
    return Credentials(key=key, secret=secret, sign="", signed_params={})


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


def event_stream(events: Iterator[str]) -> Response:
    """Server-sent events, sent as they come: no buffering here, and none in nginx."""
    response = Response(events, status=200, content_type="text/event-stream; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


def json_answer(payload) -> Response:
    """An SDK door's JSON answer (HTTP 200), UTF-8 unescaped; a kept answer's text is made
    once and reused (formats.Frozen)."""
    if isinstance(payload, Frozen):
        body = payload.rendering("sdk-json", _sdk_json)
    else:
        body = _sdk_json(payload)
    return Response(body, status=200, content_type="application/json")


def _sdk_json(payload) -> str:
    return json.dumps(payload, ensure_ascii=False)


def sdk_door_headers(response: Response, result, request_id: str) -> Response:
    """The gateway's headers on an SDK door's answer (/v1, /v1/messages): X-Request-Id,
    X-Upstream, and for a settled call X-Error-Code, X-Api-Info and X-Gateway-Cache."""
    response.headers["X-Request-Id"] = request_id
    name_upstream(response, result)
    if isinstance(result, CallResult):
        response.headers["X-Error-Code"] = result.code
        if result.api_info:
            response.headers["X-Api-Info"] = result.api_info
        if result.code in ANSWERED_CODES:
            response.headers["X-Gateway-Cache"] = "hit" if result.cached else "miss"
    return response


def name_upstream(response: Response, result) -> Response:
    """`X-Upstream`: the pool member that answered (its name, never its key), when one did."""
    if result.upstream:
        response.headers["X-Upstream"] = result.upstream
    return response
