"""``/v1/files``: upload, retrieve, delete and download, kept in the stub's FileStore.

The gateway keeps each account's file list itself, so the stub has no list endpoint.
"""

from __future__ import annotations

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.replies import json_response, openai_error
from stub_upstream.state import stub_state

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")

bp = Blueprint("files", __name__, url_prefix="/v1")


def _not_found(file_id: str) -> Response:
    return openai_error(404, f"No such File object: {file_id}", param="id", code="file_not_found")


@bp.post("/files")
def upload_file() -> Response:
    fields = arguments.form_fields()
    upload = arguments.file_part("file")
    purpose = arguments.choice(
        arguments.text_param(fields, "purpose", required=True), "purpose", PURPOSES, ""
    )
    content = arguments.file_bytes(upload)
    return json_response(stub_state().files.add(content, upload.filename or "upload", purpose))


@bp.get("/files/<file_id>")
def retrieve_file(file_id: str) -> Response:
    meta = stub_state().files.get(file_id)
    return _not_found(file_id) if meta is None else json_response(meta)


@bp.delete("/files/<file_id>")
def delete_file(file_id: str) -> Response:
    if not stub_state().files.delete(file_id):
        return _not_found(file_id)
    return json_response({"id": file_id, "object": "file", "deleted": True})


@bp.get("/files/<file_id>/content")
def file_content(file_id: str) -> Response:
    content = stub_state().files.content(file_id)
    if content is None:
        return _not_found(file_id)
    return Response(content, mimetype="application/octet-stream")
