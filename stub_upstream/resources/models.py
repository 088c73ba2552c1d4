"""``GET /v1/models``: the fixed catalogue (or the ``models=`` the stub was built with)."""

from __future__ import annotations

from flask import Blueprint, Response

from stub_upstream.faults import FAULT_MODELS
from stub_upstream.generators import CREATED
from stub_upstream.replies import json_response
from stub_upstream.state import stub_state

#: The default catalogue of ``GET /v1/models`` (requests accept any model name).
MODEL_IDS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
    "text-moderation-latest",
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "whisper-1",
    "tts-1",
    "tts-1-hd",
    *FAULT_MODELS,
)

bp = Blueprint("models", __name__, url_prefix="/v1")


@bp.get("/models")
def list_models() -> Response:
    options = stub_state().options
    data = [
        {"id": model_id, "object": "model", "created": CREATED, "owned_by": options.owned_by}
        for model_id in options.models
    ]
    return json_response({"object": "list", "data": data})
