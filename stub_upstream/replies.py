"""JSON answers and OpenAI-shaped errors: ``{"error": {message, type, param, code}}``.

Views raise :class:`BadRequest` for an argument OpenAI would refuse; :func:`init_app` turns
it, any HTTP error (404, 405, 413) and any unexpected exception into an OpenAI error object.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import flask
from flask import Response, request
from werkzeug.exceptions import HTTPException

# One logger name, whether the package is imported or run with `python -m stub_upstream`.
log = logging.getLogger("stub_upstream")


class BadRequest(Exception):
    """An argument OpenAI would refuse: a 400 whose ``param`` names it."""

    def __init__(self, message: str, param: str | None, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def missing(param: str) -> BadRequest:
    return BadRequest(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json", headers=headers)


def openai_error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return json_response(body, status, headers)


def _bad_request(err: BadRequest) -> Response:
    return openai_error(400, err.message, param=err.param, code=err.code)


def _http_error_message(err: HTTPException) -> str:
    if err.code == 404:
        return f"Invalid URL ({request.method} {request.path})"
    if err.code == 405:
        return f"Method {request.method} is not allowed for {request.path}"
    if err.code == 413:
        limit = flask.current_app.config["MAX_CONTENT_LENGTH"]
        return (
            f"Maximum content size limit ({limit}) exceeded ({request.content_length} bytes read)"
        )
    return err.description or err.name


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    # OpenAI answers an oversize upload with type server_error too
    type_ = "server_error" if status >= 500 or status == 413 else "invalid_request_error"
    allow = [value for name, value in err.get_headers() if name.lower() == "allow"]
    return openai_error(
        status,
        _http_error_message(err),
        type_=type_,
        headers={"Allow": allow[0]} if allow else None,
    )


def _unexpected(err: Exception) -> Response:
    log.exception("stub upstream: unexpected error on %s %s", request.method, request.path)
    return openai_error(500, "The stub upstream failed unexpectedly.", type_="server_error")


def init_app(app: flask.Flask) -> None:
    app.register_error_handler(BadRequest, _bad_request)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
