"""A verb a path does not take, answered in the shape of the door it came in by, with `Allow`
(RFC 9110): the envelope on /api and /<platform>/custom (proxy/routes.py), JSON elsewhere.
/v1 answers its own (proxy/openai_door.py: its catch-all rule takes every verb). Werkzeug's
other errors (404, 413, ...) are JSON through flask-smorest's handler, never an HTML page."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from proxy import routes

# The endpoints of the /api door: every answer there is an envelope, refusals included.
ENVELOPE_ENDPOINTS = frozenset({"api.GenericCall", "api.PlatformCall"})


def init_app(app: Flask) -> None:
    app.register_error_handler(MethodNotAllowed, refuse_verb)


def refuse_verb(error: MethodNotAllowed) -> Response:
    allowed = sorted(error.valid_methods or ())
    endpoint, view_args = _route_serving(allowed)
    if endpoint in ENVELOPE_ENDPOINTS:
        response = routes.refuse_verb(view_args.get("platform"))
    else:
        verbs = ", ".join(m for m in allowed if m not in ("HEAD", "OPTIONS"))
        response = jsonify(
            code=405,
            status="Method Not Allowed",
            message=f"{request.method[:16]} is not served on {request.path[:80]}; use {verbs}",
        )
        response.status_code = 405
    response.headers["Allow"] = ", ".join(allowed)
    return response


def _route_serving(allowed: list[str]) -> tuple[str | None, dict]:
    """(endpoint, view arguments) of the rule that serves this path with the allowed verbs."""
    try:
        return current_app.create_url_adapter(request).match(method=allowed[0])
    except (HTTPException, IndexError):
        return None, {}
