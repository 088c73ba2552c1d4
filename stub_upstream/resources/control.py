"""The stub's own routes, ``/_stub/...``: no authentication, not logged."""

from __future__ import annotations

import re

import flask
from flask import Blueprint, Response, request

from stub_upstream.faults import SERVER_FAULTS
from stub_upstream.generators import png
from stub_upstream.replies import json_response, openai_error
from stub_upstream.state import stub_state

IMAGE_ID_RE = re.compile(r"[0-9a-f]{1,64}")

bp = Blueprint("control", __name__, url_prefix="/_stub")


@bp.get("/images/<image_id>.png")
def image(image_id: str) -> Response:
    """The PNG an image ``url`` answer points at: any hex id gives its picture."""
    if not IMAGE_ID_RE.fullmatch(image_id):
        flask.abort(404)
    return Response(png(image_id), mimetype="image/png")


@bp.get("/requests")
def requests_seen() -> Response:
    return json_response(stub_state().log.entries(request.args.get("path")))


@bp.post("/reset")
def reset() -> Response:
    stub_state().log.clear()
    return json_response({"ok": True})


@bp.post("/fault")
def set_fault() -> Response:
    """{"mode": "500" | "429" | "401" | null}: every /v1 request fails so (null: none)."""
    body = request.get_json(silent=True)
    mode = body.get("mode") if isinstance(body, dict) else "missing"
    if mode is not None and mode not in SERVER_FAULTS:
        return openai_error(400, f"mode must be one of {', '.join(SERVER_FAULTS)} or null")
    stub_state().options.fault = mode
    return json_response({"fault": mode})
