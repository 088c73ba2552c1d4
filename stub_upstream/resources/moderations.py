"""``POST /v1/moderations``: a text is flagged (violence) when a word starts with "kill"."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import content_text, digest, moderation_result
from stub_upstream.replies import BadRequest, json_response, missing

DEFAULT_MODEL = "omni-moderation-latest"

bp = Blueprint("moderations", __name__, url_prefix="/v1")


def texts(body: dict[str, Any]) -> list[str]:
    """One text per input string; a list of content parts is one combined text."""
    value = body.get("input")
    if value is None:
        raise missing("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, dict) for v in value):
            return [content_text(value)]
    raise BadRequest(
        "'input' must be a string, an array of strings, or an array of content parts.", "input"
    )


@bp.post("/moderations")
def create_moderation() -> Response:
    body = arguments.json_body()
    model = arguments.model(body, default=DEFAULT_MODEL)
    inputs = texts(body)
    results = [] if current_fault() == "empty" else [moderation_result(t) for t in inputs]
    return json_response({"id": "modr-stub-" + digest(body), "model": model, "results": results})
