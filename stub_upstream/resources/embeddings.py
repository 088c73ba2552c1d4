"""``POST /v1/embeddings``: unit vectors derived from each input's sha256."""

from __future__ import annotations

import base64
import struct
from typing import Any

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import embedding_vector, usage, words
from stub_upstream.replies import BadRequest, json_response, missing

DEFAULT_DIMENSIONS = 8

bp = Blueprint("embeddings", __name__, url_prefix="/v1")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
    """(text to hash, token count) for each input: strings, or token arrays."""
    value = body.get("input")
    if value is None:
        raise missing("input")
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            if any(v == "" for v in value):
                raise BadRequest("'input' must not contain empty strings.", "input")
            return [(v, words(v)) for v in value]
        if all(_is_token(t) for t in value):
            return [(" ".join(map(str, value)), len(value))]
        if all(isinstance(v, list) and v and all(_is_token(t) for t in v) for v in value):
            return [(" ".join(map(str, v)), len(v)) for v in value]
    raise BadRequest(
        "'input' must be a non-empty string, an array of strings, or token arrays.", "input"
    )


def _encoded(vector: list[float], encoding: str) -> Any:
    """The floats, or the base64 of their little-endian float32 array."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


@bp.post("/embeddings")
def create_embedding() -> Response:
    body = arguments.json_body()
    model = arguments.model(body)
    texts = inputs(body)
    dimensions = arguments.int_param(body, "dimensions", DEFAULT_DIMENSIONS, 1, 4096)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _encoded(embedding_vector(t, dimensions), encoding),
        }
        for i, (t, _) in enumerate([] if current_fault() == "empty" else texts)
    ]
    prompt_tokens = max(1, sum(tokens for _, tokens in texts))
    return json_response(
        {"object": "list", "data": data, "model": model, "usage": usage(prompt_tokens)}
    )
