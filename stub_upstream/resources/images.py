"""``POST /v1/images/generations`` (JSON), ``edits`` and ``variations`` (multipart).

Each image is an 8x8 PNG whose id hashes the request's inputs (not ``n`` nor
``response_format``) and the image's index; a ``url`` answer points at ``/_stub/images``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from flask import Blueprint, Response, request

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import CREATED, digest, hex_id, png
from stub_upstream.replies import BadRequest, json_response, missing

DEFAULT_MODEL = "dall-e-2"
RESPONSE_FORMATS = ("url", "b64_json")

bp = Blueprint("images", __name__, url_prefix="/v1")


def _images(seed: dict[str, Any], n: int, response_format: str) -> Response:
    """``n`` images, the i-th one's id hashing ``seed`` and i: a url and a b64_json answer
    show the same picture."""
    seed_digest = digest(seed)
    ids = [] if current_fault() == "empty" else [hex_id(f"{seed_digest}:{i}", 24) for i in range(n)]
    if response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(png(image_id)).decode("ascii")} for image_id in ids]
    else:
        base = request.host_url.rstrip("/")
        data = [{"url": f"{base}/_stub/images/{image_id}.png"} for image_id in ids]
    return json_response({"created": CREATED, "data": data})


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _size(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise BadRequest("'size' must be a string.", "size", "invalid_type")
    return value


def _response_format(value: Any) -> str:
    return arguments.choice(value, "response_format", RESPONSE_FORMATS, "url")


@bp.post("/images/generations")
def generate_images() -> Response:
    body = arguments.json_body()
    model = arguments.model(body, default=DEFAULT_MODEL)
    prompt = body.get("prompt")
    if prompt is None or prompt == "":
        raise missing("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("'prompt' must be a string.", "prompt", "invalid_type")
    n = arguments.int_param(body, "n", 1, 1, 10)
    seed = {
        "kind": "generation",
        "model": model,
        "prompt": prompt,
        "size": _size(body.get("size")),
        "quality": body.get("quality"),
        "style": body.get("style"),
    }
    return _images(seed, n, _response_format(body.get("response_format")))


@bp.post("/images/edits")
def edit_images() -> Response:
    fields = arguments.form_fields()
    images = request.files.getlist("image") + request.files.getlist("image[]")
    if not images:
        raise missing("image")
    mask = request.files.get("mask")
    seed = {
        "kind": "edit",
        "model": arguments.model(fields, default=DEFAULT_MODEL),
        "prompt": arguments.text_param(fields, "prompt", required=True),
        "size": arguments.text_param(fields, "size"),
        "images": [_sha256(arguments.file_bytes(image)) for image in images],
        "mask": None if mask is None else _sha256(arguments.file_bytes(mask)),
    }
    n = arguments.form_int(fields, "n", 1, 1, 10)
    return _images(seed, n, _response_format(arguments.text_param(fields, "response_format")))


@bp.post("/images/variations")
def vary_image() -> Response:
    fields = arguments.form_fields()
    image = arguments.file_part("image")
    seed = {
        "kind": "variation",
        "model": arguments.model(fields, default=DEFAULT_MODEL),
        "size": arguments.text_param(fields, "size"),
        "image": _sha256(arguments.file_bytes(image)),
    }
    n = arguments.form_int(fields, "n", 1, 1, 10)
    return _images(seed, n, _response_format(arguments.text_param(fields, "response_format")))
