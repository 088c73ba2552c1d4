"""The doors the gateway serves, side by side: the onebound envelope (`/api`,
`/<platform>/custom/`), the OpenAI paths (`/v1/*`) and the service endpoints (`/`, `/health`,
`/api/methods`) and the operator console (`/admin`). Each reads its requests and renders its
answers; the calls themselves run in proxy/calls.py. A door imports what doors share from
`kit`, never from another door.

A verb a path does not take is answered in the shape of the door it came in by, with `Allow`
(RFC 9110): the envelope on the onebound door, JSON elsewhere. /v1 answers its own (its
catch-all rule takes every verb). Werkzeug's other errors (404, 413, ...) are JSON through
flask-smorest's handler, never an HTML page."""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, request
from flask_smorest import Api
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from proxy.doors import admin, anthropic, onebound, openai, service

DOORS = (onebound, service, anthropic, openai, admin)


def register_doors(app: Flask, api: Api) -> None:
    for door in DOORS:
        door.register(app, api)
    app.register_error_handler(MethodNotAllowed, refuse_verb)


def refuse_verb(error: MethodNotAllowed) -> Response:
    allowed = sorted(error.valid_methods or ())
    endpoint, view_args = _route_serving(allowed)
    response = onebound.refuse_verb(endpoint, view_args)
    if response is None:
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
