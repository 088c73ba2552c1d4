"""Reading a request's arguments as OpenAI does: each refusal is a BadRequest naming the field.

JSON endpoints read :func:`json_body`, multipart ones :func:`form_fields` (where every value
arrives as text, ``n=2`` as ``"2"``) and :func:`file_part`.
"""

from __future__ import annotations

from typing import Any

from flask import g, request
from werkzeug.datastructures import FileStorage

from stub_upstream.replies import BadRequest, missing

NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly.)"
)


def json_body() -> dict[str, Any]:
    if g.stub_body_kind != "json":
        raise BadRequest(NOT_JSON, None, None)
    if not isinstance(g.stub_body, dict):
        raise BadRequest("The request body must be a JSON object.", None, None)
    return g.stub_body


def form_fields() -> dict[str, Any]:
    if g.stub_body_kind != "form":
        raise BadRequest(
            f"Invalid Content-Type header ({request.content_type or 'none'}), expected "
            "multipart/form-data. (HINT: If you're using curl, you can pass -H "
            "'Content-Type: multipart/form-data')",
            None,
            None,
        )
    return g.stub_body


def model(fields: dict[str, Any], *, default: str | None = None) -> str:
    """The ``model`` argument; required unless a ``default`` is given."""
    value = fields.get("model")
    if value is None or value == "":
        if default is None:
            raise BadRequest(
                "you must provide a model parameter", "model", "missing_required_parameter"
            )
        return default
    if not isinstance(value, str):
        raise BadRequest("'model' must be a string.", "model")
    return value


def int_param(body: dict[str, Any], name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be an integer between {lo} and {hi}.", name)
    return value


def max_tokens(body: dict[str, Any]) -> int | None:
    name = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    return int_param(body, name, None, 1, 1_000_000)


def stream_flag(body: dict[str, Any]) -> bool:
    value = body.get("stream")
    if value is not None and not isinstance(value, bool):
        raise BadRequest("'stream' must be a boolean.", "stream", "invalid_type")
    return bool(value)


def include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def choice(value: Any, name: str, choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        supported = ", ".join(f"'{c}'" for c in choices)
        raise BadRequest(
            f"Invalid value for '{name}': {value!r}. Supported values are: {supported}.", name
        )
    return value


def text_param(fields: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise missing(name)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be given once.", name)
    return value


def form_int(fields: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    return _form_number(fields, name, default, lo, hi, int, "an integer")


def form_float(fields: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    return _form_number(fields, name, default, lo, hi, float, "a number")


def _form_number(fields, name: str, default, lo, hi, parse, kind: str):
    """A form field read with `parse` (int or float) within [lo, hi]; `default` when absent."""
    text = text_param(fields, name)
    if text is None:
        return default
    try:
        value = parse(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise BadRequest(f"'{name}' must be {kind} between {lo} and {hi}.", name)
    return value


def file_part(name: str) -> FileStorage:
    storage = request.files.get(name)
    if storage is None:
        raise missing(name)
    return storage


def file_bytes(storage: FileStorage) -> bytes:
    storage.stream.seek(0)
    return storage.stream.read()
