"""File inputs (images, masks, audio, uploads) as a legacy GET or form client sends them: base64
in `_o_args` (`file`, `image`, `mask`, with `filename`), or a multipart POST part of the same
name. Only bytes the client sends are used: a URL is refused, never fetched."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from marshmallow import ValidationError, fields

FILE_FIELDS = ("file", "image", "mask")  # the _o_args names that carry files
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,", re.IGNORECASE)
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_DEFAULT_NAMES = {"file": "upload.bin", "image": "image.png", "mask": "mask.png"}


@dataclass(frozen=True)
class FileUpload:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"

    def for_sdk(self) -> tuple[str, bytes, str]:
        """What the openai SDK takes as a file: (filename, bytes, MIME type)."""
        return (self.filename, self.content, self.content_type)

    def fingerprint(self) -> dict:
        """How the file enters cache keys and logs: never the bytes themselves."""
        return {
            "filename": self.filename,
            "bytes": len(self.content),
            "sha256": hashlib.sha256(self.content).hexdigest(),
        }


class FileField(fields.Field):
    """A FileUpload from multipart, or base64 text (optionally a data: URL) from `_o_args`;
    a base64 `file` takes its name from `_o_args.filename`. The size limit is the
    dispatcher's (oversize_files), which knows the configured maximum."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, FileUpload):
            upload = value
        elif isinstance(value, str):
            upload = _decode_base64(value, attr, data)
        else:
            raise ValidationError(
                "must be the file's bytes as base64 text, or a multipart part of this name"
            )
        if not upload.content:
            raise ValidationError("the file is empty")
        return upload


def _decode_base64(text: str, attr: str, data) -> FileUpload:
    text = text.strip()
    if _URL.match(text) and not text.lower().startswith("data:"):
        raise ValidationError(
            "URLs are not fetched: send the file's bytes as base64, or as a multipart part"
        )
    content_type = "application/octet-stream"
    match = _DATA_URL.match(text)
    if match:
        content_type = match.group("mime") or content_type
        text = text[match.end() :]
    try:
        content = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("is not valid base64 (A-Z, a-z, 0-9, +, / and = padding)") from None
    filename = data.get("filename") if isinstance(data, dict) and attr == "file" else None
    if not isinstance(filename, str) or not filename.strip():
        filename = _DEFAULT_NAMES.get(attr, "upload.bin")
    return FileUpload(filename=filename.strip()[:255], content=content, content_type=content_type)


def oversize_files(args: dict, max_bytes: int) -> str:
    """A 4003 reason naming the first file larger than `max_bytes`, or ""."""
    for name, value in args.items():
        if isinstance(value, FileUpload) and len(value.content) > max_bytes:
            return (
                f"_o_args.{name}: the file is {len(value.content)} bytes; at most {max_bytes} "
                "are accepted (MAX_UPLOAD_BYTES)"
            )
    return ""


def cache_safe(args: dict) -> dict:
    """`args` with each file replaced by its fingerprint (for cache keys and job rows)."""
    return {
        name: value.fingerprint() if isinstance(value, FileUpload) else value
        for name, value in args.items()
    }
