"""Every ``/v1`` request is read once, logged, then authenticated (one before_request hook).

The body is parsed here, before any view runs, so a request that hangs is already in the log;
views read it back through :func:`stub_upstream.arguments.json_body` / ``form_fields``.
"""

from __future__ import annotations

import json
from typing import Any

import flask
from flask import Response, g, request

from stub_upstream.replies import openai_error
from stub_upstream.state import stub_state

CONTROL_PREFIX = "/_stub/"
NO_API_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


def read_body() -> tuple[str, Any]:
    """("form", the form fields) for multipart, else ("json", the parsed JSON or None when
    empty) or ("invalid", None). A repeated form field is a list of its values."""
    if request.mimetype == "multipart/form-data":
        return "form", {
            key: vals[0] if len(vals) == 1 else vals for key, vals in request.form.lists()
        }
    raw = request.get_data(cache=True)
    if not raw:
        return "json", None
    try:
        return "json", json.loads(raw)
    except ValueError:
        return "invalid", None


def file_parts() -> list[dict[str, Any]]:
    """Each file part's field, filename, content type and size: never its bytes."""
    parts = []
    for name, storage in request.files.items(multi=True):
        stream = storage.stream
        size = stream.seek(0, 2)
        stream.seek(0)
        parts.append(
            {
                "field": name,
                "filename": storage.filename,
                "content_type": storage.content_type,
                "size": size,
            }
        )
    return parts


def record_and_authenticate() -> Response | None:
    if request.path.startswith(CONTROL_PREFIX):
        return None
    g.stub_body_kind, g.stub_body = read_body()
    stub_state().log.record(
        {
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string.decode("latin-1"),
            # all headers, Authorization too: tests check which key reached the upstream
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": g.stub_body,
            "files": file_parts() if g.stub_body_kind == "form" else [],
        }
    )
    if request.url_rule is None:
        return None  # routing raises 404/405 next
    if not request.path.startswith("/v1/"):
        return None  # Feishu's token endpoint: the app id and secret in the body are the key
    scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return openai_error(401, NO_API_KEY, code="invalid_api_key")
    return None


def init_app(app: flask.Flask) -> None:
    app.before_request(record_and_authenticate)
