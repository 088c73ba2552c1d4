"""A bundled, deterministic, OpenAI-compatible upstream server (the "stub").

The gateway runs and demos offline against it, and its tests and benchmarks talk to a real
HTTP server instead of mocks. The official ``openai`` SDK pointed at
``http://127.0.0.1:PORT/v1`` works unchanged.

It serves models, chat and legacy completions, embeddings, moderations, images
(generations, edits, variations), audio (transcriptions, translations, speech) and files.

Everything it answers is a pure function of the request (fixed ``created``, ids derived from
a hash of the body, replies derived from the input text); the one piece of state besides the
request log is the in-memory file store of ``/v1/files``, whose ids also count uploads. Fault
modes are chosen by the request's ``model`` name (``stub-500``, ``stub-429``,
``stub-garbage``, ``stub-slow``, ``stub-hang``, ``stub-stream-slow``, ``stub-empty``) or by
an ``X-Stub-Fault`` header. Every request it receives is kept in a bounded in-memory log
(``GET /_stub/requests``, ``POST /_stub/reset``, or :meth:`StubServer.requests_seen` /
:meth:`StubServer.reset`); for multipart uploads it keeps the form fields and each file's
name, content type and size, never the file's bytes.

This module is a leaf: it imports nothing else from ``proxy``. See docs/stub-upstream.md.

Run it: ``python -m proxy.stub_upstream --host 127.0.0.1 --port 8001``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import logging
import math
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import flask
from flask import Response, g, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = [
    "CREATED",
    "FAULT_MODELS",
    "MODEL_IDS",
    "RequestLog",
    "StubServer",
    "create_stub_app",
    "main",
]

# A fixed logger name, so the log is the same whether this file is imported as
# `proxy.stub_upstream`, by path, or run as a script.
log = logging.getLogger("proxy.stub_upstream")

#: The fixed ``created`` timestamp of every object the stub returns.
CREATED = 1_700_000_000

#: Model name -> fault mode. Any other model name gets a normal answer.
FAULT_MODELS: dict[str, str] = {
    "stub-slow": "slow",
    "stub-500": "500",
    "stub-429": "429",
    "stub-garbage": "garbage",
    "stub-hang": "hang",
    "stub-stream-slow": "stream-slow",
    "stub-empty": "empty",
}
_FAULTS = frozenset(FAULT_MODELS.values())

#: The fixed catalogue of ``GET /v1/models`` (other model names are still accepted).
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
DEFAULT_OWNED_BY = "stub"

DEFAULT_EMBEDDING_DIMENSIONS = 8
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
CHAT_REPLY_PREFIX = "stub reply: "
COMPLETION_PREFIX = "stub completion: "
SYSTEM_FINGERPRINT = "fp_stub"
MAX_CONTENT_LENGTH = 16 * 1024 * 1024

DEFAULT_IMAGE_MODEL = "dall-e-2"
REVISED_PROMPT_PREFIX = "stub revised prompt: "
IMAGE_SIDE = 8  # every stub image is an 8x8 PNG, whatever size was asked for
# The sizes OpenAI accepts, per endpoint and model; other models accept any size.
_DALL_E_2_SIZES = ("256x256", "512x512", "1024x1024")
_IMAGE_SIZES: dict[str, dict[str, tuple[str, ...]]] = {
    "generation": {
        "dall-e-2": _DALL_E_2_SIZES,
        "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    },
    "edit": {"dall-e-2": _DALL_E_2_SIZES},
    "variation": {"dall-e-2": _DALL_E_2_SIZES},
}
_IMAGE_RESPONSE_FORMATS = ("url", "b64_json")
_IMAGE_ID_RE = re.compile(r"[0-9a-f]{1,64}")

TRANSLATION_PREFIX = "[en] "
SECONDS_PER_WORD = 0.5  # the "duration" of a transcript: half a second per word
_TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")

SPEECH_SAMPLE_RATE = 24_000  # 16-bit mono, as OpenAI's pcm and wav
_SPEECH_SAMPLES_PER_WORD = 2_400  # 0.1 s per word at speed 1.0
_SPEECH_MAX_SAMPLES = 10 * SPEECH_SAMPLE_RATE
_SPEECH_MAX_INPUT = 4096
_SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_SPEECH_MAGIC = {
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "opus": b"OggS",
    "aac": b"\xff\xf1",
    "flac": b"fLaC",
}
SPEECH_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)

FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_FILES_MAX_LIST = 10_000
_FILES_MAX_BYTES = 256 * 1024 * 1024  # the store drops its oldest files beyond this total

_MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_FLAG_RE = re.compile(r"\bkill\w*", re.IGNORECASE)
_PIECE_RE = re.compile(r"\s*\S+|\s+$")

_GARBAGE_JSON = b'{"id": "stub-garbage", "object": <<< this is not JSON >>>'
_GARBAGE_SSE = b'data: {"id": "stub-garbage", <<< this is not JSON >>>\n\ndata: [DONE]\n\n'

_MAX_BODY_TEXT = 64 * 1024
_STATE_KEY = "stub_upstream"


# --------------------------------------------------------------------------- request log


class RequestLog:
    """Thread-safe, bounded record of the requests the stub received (oldest dropped first)."""

    def __init__(self, limit: int = 1000):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=limit)
        self._seq = 0

    def record(self, entry: dict[str, Any]) -> int:
        """Append ``entry`` (adding its ``seq`` number) and return that number."""
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._entries.append(entry)
            return self._seq

    def entries(self, path: str | None = None) -> list[dict[str, Any]]:
        """Deep copies of the entries, oldest first; only those for ``path`` if given."""
        with self._lock:
            items = [e for e in self._entries if path is None or e["path"] == path]
            return copy.deepcopy(items)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass
class _StoredFile:
    seq: int
    meta: dict[str, Any]
    content: bytes


class _FileStore:
    """Thread-safe in-memory files of ``/v1/files``: at most ``limit`` files and
    ``max_bytes`` of content, the oldest uploads dropped first."""

    def __init__(self, limit: int, max_bytes: int = _FILES_MAX_BYTES):
        if limit < 1:
            raise ValueError("files_limit must be >= 1")
        self._lock = threading.Lock()
        self._files: OrderedDict[str, _StoredFile] = OrderedDict()  # oldest upload first
        self._limit = limit
        self._max_bytes = max_bytes
        self._bytes = 0
        self._seq = 0

    def add(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Store an upload; its id hashes content, filename, purpose and the upload number."""
        with self._lock:
            self._seq += 1
            digest = hashlib.sha256()
            for part in (str(self._seq).encode(), purpose.encode(), filename.encode(), content):
                digest.update(len(part).to_bytes(8, "big") + part)
            file_id = "file-" + digest.hexdigest()[:24]
            meta = {
                "id": file_id,
                "object": "file",
                "bytes": len(content),
                "created_at": CREATED,
                "filename": filename,
                "purpose": purpose,
                "status": "processed",
                "status_details": None,
            }
            self._files[file_id] = _StoredFile(self._seq, meta, content)
            self._bytes += len(content)
            while len(self._files) > 1 and (
                len(self._files) > self._limit or self._bytes > self._max_bytes
            ):
                _, dropped = self._files.popitem(last=False)
                self._bytes -= len(dropped.content)
            return dict(meta)

    def get(self, file_id: str) -> dict[str, Any] | None:
        with self._lock:
            stored = self._files.get(file_id)
            return None if stored is None else dict(stored.meta)

    def content(self, file_id: str) -> bytes | None:
        with self._lock:
            stored = self._files.get(file_id)
            return None if stored is None else stored.content

    def delete(self, file_id: str) -> bool:
        with self._lock:
            stored = self._files.pop(file_id, None)
            if stored is None:
                return False
            self._bytes -= len(stored.content)
            return True

    def page(
        self, *, purpose: str | None, order: str, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` files in upload order (``asc``) or its reverse (``desc``), those
        after the file ``after`` only; and whether more follow. KeyError: unknown ``after``."""
        with self._lock:
            files = list(self._files.values())
            if after is not None:
                cursor = self._files.get(after)
                if cursor is None:
                    raise KeyError(after)
                if order == "asc":
                    files = [f for f in files if f.seq > cursor.seq]
                else:
                    files = [f for f in files if f.seq < cursor.seq]
            if order == "desc":
                files.reverse()
            if purpose is not None:
                files = [f for f in files if f.meta["purpose"] == purpose]
            return [dict(f.meta) for f in files[:limit]], len(files) > limit


class _StubState:
    def __init__(
        self,
        *,
        slow_seconds: float,
        hang_seconds: float,
        stream_delay: float,
        stream_slow_delay: float,
        retry_after_ms: int | None,
        log_limit: int,
        models: tuple[str, ...],
        owned_by: str,
        files_limit: int,
    ):
        self.slow_seconds = slow_seconds
        self.hang_seconds = hang_seconds
        self.stream_delay = stream_delay
        self.stream_slow_delay = stream_slow_delay
        self.retry_after_ms = retry_after_ms
        self.log = RequestLog(log_limit)
        self.models = models
        self.owned_by = owned_by
        self.files = _FileStore(files_limit)
        # Set by StubServer.stop(): wakes sleeping slow/hang handlers and ends streams early.
        self.stopping = threading.Event()


# --------------------------------------------------------------------------- helpers


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json", headers=headers)


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return _json_response(body, status, headers)


class _BadRequest(Exception):
    """Raised by validation; turned into a 400 OpenAI error object."""

    def __init__(self, message: str, param: str | None, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def _missing(param: str) -> _BadRequest:
    return _BadRequest(
        f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
    )


def _digest(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Split ``text`` into one piece per word (leading whitespace kept); "".join() restores it."""
    return _PIECE_RE.findall(text)


def _usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict[str, int]:
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _content_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list joined by spaces."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return " ".join(texts)
    return ""


def _model(body: dict[str, Any], *, required: bool = True, default: str | None = None) -> str:
    model = body.get("model")
    if model is None or model == "":
        if required:
            raise _BadRequest(
                "you must provide a model parameter", "model", "missing_required_parameter"
            )
        return default or ""
    if not isinstance(model, str):
        raise _BadRequest("'model' must be a string.", "model")
    return model


def _int_param(
    body: dict[str, Any], name: str, default: int | None, lo: int, hi: int
) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _BadRequest(f"'{name}' must be an integer between {lo} and {hi}.", name)
    return value


def _max_tokens(body: dict[str, Any]) -> int | None:
    name = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    return _int_param(body, name, None, 1, 1_000_000)


def _truncate(text: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The reply's pieces, cut to ``max_tokens`` words, and the finish reason."""
    pieces = _pieces(text)
    if max_tokens is not None and len(pieces) > max_tokens:
        return pieces[:max_tokens], "length"
    return pieces, "stop"


def _stream(body: dict[str, Any]) -> bool:
    value = body.get("stream")
    if value is not None and not isinstance(value, bool):
        raise _BadRequest("'stream' must be a boolean.", "stream", "invalid_type")
    return bool(value)


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _f32(value: float) -> float:
    """Round to the nearest float32, so float and base64 encodings carry identical numbers."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _embedding_vector(text: str, dimensions: int) -> list[float]:
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for i in range(0, len(digest), 4):
            raw.append(int.from_bytes(digest[i : i + 4], "little") / 0xFFFFFFFF * 2.0 - 1.0)
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [_f32(v / norm) for v in raw]


def _fault_from_header() -> str | None:
    value = request.headers.get("X-Stub-Fault")
    if value is None or not value.strip():
        return None
    fault = value.strip().lower().removeprefix("stub-")
    if fault not in _FAULTS:
        raise _BadRequest(
            f"Unknown X-Stub-Fault {value.strip()!r}; expected one of {sorted(_FAULTS)}.",
            "X-Stub-Fault",
        )
    return fault


def _hex(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:length]


def _stream_bytes(seed: str, length: int) -> bytes:
    """``length`` pseudo-random bytes that depend on ``seed`` alone (sha256 in counter mode)."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{counter}:{seed}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def _png(seed: str) -> bytes:
    """A valid IMAGE_SIDE x IMAGE_SIDE RGB PNG: a checkerboard of two colours taken from
    the seed's hash. The zlib stream is one stored (uncompressed) block, so the bytes do
    not depend on the zlib build."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    colours = (digest[0:3], digest[3:6])
    rows = b"".join(
        b"\x00" + b"".join(colours[(x + y) % 2] for x in range(IMAGE_SIDE))
        for y in range(IMAGE_SIDE)
    )
    idat = (
        b"\x78\x01\x01"
        + struct.pack("<HH", len(rows), len(rows) ^ 0xFFFF)
        + rows
        + struct.pack(">I", zlib.adler32(rows))
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", IMAGE_SIDE, IMAGE_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _transcript(data: bytes) -> str:
    """What the stub "hears": UTF-8 text (stripped) if the bytes are that, else their size."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        return text.strip()
    return f"audio of {len(data)} bytes"


def _segments(text: str, temperature: float) -> list[dict[str, Any]]:
    """One whisper-style segment per non-empty line, SECONDS_PER_WORD per word."""
    segments: list[dict[str, Any]] = []
    start = 0.0
    for line in [ln.strip() for ln in text.splitlines() if ln.strip()]:
        words = line.split()
        end = start + len(words) * SECONDS_PER_WORD
        segments.append(
            {
                "id": len(segments),
                "seek": 0,
                "start": start,
                "end": end,
                "text": line,
                "tokens": [int(_hex(w, 4), 16) for w in words],
                "temperature": temperature,
                "avg_logprob": -0.25,
                "compression_ratio": 1.0,
                "no_speech_prob": 0.0,
            }
        )
        start = end
    return segments


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _subtitles(segments: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "srt":
        return "".join(
            f"{i + 1}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n"
            f"{s['text']}\n\n"
            for i, s in enumerate(segments)
        )
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text']}\n\n"
        for s in segments
    )


def _speech_audio(seed: str, words: int, speed: float, fmt: str) -> bytes:
    """Deterministic audio bytes: pcm and wav carry a square wave (24 kHz, 16-bit mono) whose
    pitch comes from the seed; the other formats are their magic number + seeded bytes."""
    count = min(_SPEECH_MAX_SAMPLES, max(1, round(words * _SPEECH_SAMPLES_PER_WORD / speed)))
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    if fmt not in ("pcm", "wav"):
        return _SPEECH_MAGIC[fmt] + _stream_bytes(f"{fmt}:{seed}", max(16, count // 8))
    period = 20 + digest[0] % 100
    amplitude = 4000 + digest[1] * 32
    half = period // 2
    pcm = struct.pack(
        f"<{count}h", *(amplitude if i % period < half else -amplitude for i in range(count))
    )
    if fmt == "pcm":
        return pcm
    fmt_chunk = struct.pack("<HHIIHH", 1, 1, SPEECH_SAMPLE_RATE, SPEECH_SAMPLE_RATE * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(pcm))
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt_chunk))
        + fmt_chunk
        + b"data"
        + struct.pack("<I", len(pcm))
        + pcm
    )


def _file_size(storage: FileStorage) -> int:
    stream = storage.stream
    position = stream.tell()
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(position)
    return size


def _file_bytes(storage: FileStorage) -> bytes:
    storage.stream.seek(0)
    return storage.stream.read()


def _multipart_summary() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The form fields (a value, or a list for a repeated field) and, for each file part,
    its field, filename, content type and size: what the request log keeps."""
    form = {key: vals[0] if len(vals) == 1 else vals for key, vals in request.form.lists()}
    parts = [
        {
            "field": field,
            "filename": storage.filename,
            "content_type": storage.content_type,
            "size": _file_size(storage),
        }
        for field, storage in request.files.items(multi=True)
    ]
    return form, parts


def _form_text(fields: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"'{name}' must be given once.", name)
    return value


def _form_int(fields: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    text = _form_text(fields, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = lo - 1
    if not lo <= value <= hi:
        raise _BadRequest(f"'{name}' must be an integer between {lo} and {hi}.", name)
    return value


def _form_float(fields: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    text = _form_text(fields, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:
        raise _BadRequest(f"'{name}' must be a number between {lo} and {hi}.", name)
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or value not in choices:
        raise _BadRequest(
            f"Invalid value for '{name}': {value!r}. Supported values are: "
            + ", ".join(f"'{c}'" for c in choices)
            + ".",
            name,
        )
    return value


def _file_part(name: str, *, required: bool = True) -> FileStorage | None:
    storage = request.files.get(name)
    if storage is None and required:
        raise _missing(name)
    return storage


# --------------------------------------------------------------------------- the app


def _completion_object(
    kind: str, completion_id: str, model: str, choices: list[dict[str, Any]], **tail: Any
) -> dict[str, Any]:
    """The head every chat/completion answer and stream chunk shares, in OpenAI's key order."""
    return {
        "id": completion_id,
        "object": kind,
        "created": CREATED,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
        **tail,
    }


def create_stub_app(
    *,
    slow_seconds: float = 2.0,
    hang_seconds: float = 300.0,
    stream_delay: float = 0.02,
    stream_slow_delay: float = 0.5,
    retry_after_ms: int | None = None,
    log_limit: int = 1000,
    models: tuple[str, ...] | None = None,
    owned_by: str = DEFAULT_OWNED_BY,
    files_limit: int = 1000,
) -> flask.Flask:
    """Build the stub Flask app.

    slow_seconds: how long ``stub-slow`` sleeps before answering normally.
    hang_seconds: how long ``stub-hang`` sleeps (effectively never, for a client timeout).
    stream_delay: sleep between consecutive SSE events of a normal stream.
    stream_slow_delay: the same for ``stub-stream-slow``.
    retry_after_ms: if set, the 429 and 500 faults also send ``retry-after-ms: N``, which the
        openai SDK obeys instead of its 0.5 s, 1 s, ... backoff (``Retry-After: 0`` alone does
        not shorten it). A test-speed knob; real OpenAI 500s carry no such header.
    log_limit: how many requests the request log keeps (the oldest are dropped).
    models: the ids ``GET /v1/models`` lists (and ``GET /v1/models/{id}`` knows) instead of
        MODEL_IDS, e.g. ``("qwen-plus", "qwen-turbo")`` for a second stub playing another
        upstream. Requests still accept any model name.
    owned_by: the ``owned_by`` of the model objects.
    files_limit: how many uploaded files ``/v1/files`` keeps (the oldest are dropped).
    """
    if models is not None:
        if isinstance(models, str):
            raise TypeError("models must be a tuple of model ids, not a string")
        models = tuple(models)
        if not all(isinstance(m, str) and m for m in models):
            raise ValueError("models must be non-empty strings")
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    state = _StubState(
        slow_seconds=slow_seconds,
        hang_seconds=hang_seconds,
        stream_delay=stream_delay,
        stream_slow_delay=stream_slow_delay,
        retry_after_ms=retry_after_ms,
        log_limit=log_limit,
        models=MODEL_IDS if models is None else models,
        owned_by=owned_by,
        files_limit=files_limit,
    )
    app.extensions[_STATE_KEY] = state

    # ---- request log, auth, request id

    def _too_large() -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"]
        size = request.content_length
        if limit is not None and size is not None and size > limit:
            message = f"Maximum content size limit ({limit}) exceeded ({size} bytes read)"
        else:  # a form field or part count over Werkzeug's own form limits
            message = f"Maximum content size limit exceeded: {RequestEntityTooLarge.description}"
        return _error(413, message, type_="server_error")  # OpenAI's type for its 413

    @app.before_request
    def _record_and_authenticate() -> Response | None:
        if request.path.startswith("/_stub/"):
            return None
        body: Any = None
        body_text: str | None = None
        parts: list[dict[str, Any]] = []
        too_large = False
        g.stub_form = None  # the form fields of a multipart request
        try:
            if request.mimetype == "multipart/form-data":
                body, parts = _multipart_summary()
                g.stub_form = body
            else:
                raw = request.get_data(cache=True)
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        body_text = raw[:_MAX_BODY_TEXT].decode("utf-8", errors="replace")
        except RequestEntityTooLarge:
            too_large = True
        g.stub_body = None if g.stub_form is not None else body
        g.stub_body_is_json = body_text is None and g.stub_form is None
        g.stub_seq = state.log.record(
            {
                "method": request.method,
                "path": request.path,
                "query_string": request.query_string.decode("latin-1"),
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body,
                "body_text": body_text,
                "files": parts,
                "received_at": time.time(),
            }
        )
        if too_large:
            return _too_large()
        if request.url_rule is None:
            return None  # routing raises 404/405 next
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                code="invalid_api_key",
            )
        return None

    @app.after_request
    def _request_id(response: Response) -> Response:
        seq = g.get("stub_seq")
        if seq is not None:
            response.headers["x-request-id"] = f"req_stub_{seq}"
        return response

    @app.errorhandler(_BadRequest)
    def _bad_request(err: _BadRequest) -> Response:
        return _error(400, err.message, param=err.param, code=err.code)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        if status == 413:
            return _too_large()
        if status == 404:
            message = f"Invalid URL ({request.method} {request.path})"
        elif status == 405:
            message = f"Method {request.method} is not allowed for {request.path}"
        else:
            message = err.description or err.name
        type_ = "server_error" if status >= 500 else "invalid_request_error"
        response = _error(status, message, type_=type_)
        if status == 405 and err.get_headers():
            for name, value in err.get_headers():
                if name.lower() == "allow":
                    response.headers["Allow"] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        log.exception("stub upstream: unexpected error on %s %s", request.method, request.path)
        return _error(500, "The stub upstream failed unexpectedly.", type_="server_error")

    # ---- faults

    def _body() -> dict[str, Any]:
        if not g.get("stub_body_is_json", True):
            raise _BadRequest(
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly.)",
                None,
                None,
            )
        body = g.get("stub_body")
        if not isinstance(body, dict):
            raise _BadRequest("The request body must be a JSON object.", None, None)
        return body

    def _fault(body: dict[str, Any] | None) -> str | None:
        header_fault = _fault_from_header()
        if header_fault is not None:
            return header_fault
        model = body.get("model") if body else None
        return FAULT_MODELS.get(model) if isinstance(model, str) else None

    def _pre_fault(fault: str | None, *, stream: bool) -> Response | None:
        """The response a fault replaces the answer with, or None to answer (maybe late)."""
        retry_hint = (
            {} if state.retry_after_ms is None else {"retry-after-ms": str(state.retry_after_ms)}
        )
        if fault == "500":
            return _error(
                500,
                "The server had an error while processing your request. Sorry about that!",
                type_="server_error",
                headers=retry_hint,
            )
        if fault == "429":
            return _error(
                429,
                "Rate limit reached for requests (stub-429).",
                type_="requests",
                code="rate_limit_exceeded",
                headers={"Retry-After": "0", "x-ratelimit-remaining-requests": "0", **retry_hint},
            )
        if fault == "garbage":
            if stream:
                return Response(_GARBAGE_SSE, status=200, mimetype="text/event-stream")
            return Response(_GARBAGE_JSON, status=200, mimetype="application/json")
        if fault in ("slow", "hang"):
            seconds = state.slow_seconds if fault == "slow" else state.hang_seconds
            if state.stopping.wait(seconds):
                return _error(503, "The stub upstream is shutting down.", type_="server_error")
        return None

    def _sse(events: list[dict[str, Any]], fault: str | None) -> Response:
        delay = state.stream_slow_delay if fault == "stream-slow" else state.stream_delay
        payloads = [json.dumps(event) for event in events] + ["[DONE]"]

        def generate():
            for i, payload in enumerate(payloads):
                if i and delay > 0 and state.stopping.wait(delay):
                    return  # shutting down: cut the stream, as a dropped upstream would
                yield f"data: {payload}\n\n".encode()

        return Response(
            generate(),
            status=200,
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # ---- models

    def _model_object(model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": CREATED, "owned_by": state.owned_by}

    @app.get("/v1/models")
    def list_models() -> Response:
        fault = _fault(None)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early
        data = [] if fault == "empty" else [_model_object(m) for m in state.models]
        return _json_response({"object": "list", "data": data})

    @app.get("/v1/models/<path:model_id>")
    def retrieve_model(model_id: str) -> Response:
        early = _pre_fault(_fault(None), stream=False)
        if early is not None:
            return early
        if model_id not in state.models:
            return _error(
                404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
            )
        return _json_response(_model_object(model_id))

    # ---- chat completions

    @app.post("/v1/chat/completions")
    def chat_completions() -> Response:
        body = _body()
        fault = _fault(body)
        stream = _stream(body)
        early = _pre_fault(fault, stream=stream)
        if early is not None:
            return early

        model = _model(body)
        messages = body.get("messages")
        if messages is None:
            raise _missing("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest(
                "'messages' must be a non-empty array.",
                "messages",
                "invalid_value" if isinstance(messages, list) else "invalid_type",
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise _BadRequest(
                    f"'messages[{i}]' must be an object with a 'role'.", f"messages[{i}]"
                )
        n = _int_param(body, "n", 1, 1, 128)
        max_tokens = _max_tokens(body)

        users = [m for m in messages if m["role"] == "user"]
        last = (users or messages)[-1]
        reply = CHAT_REPLY_PREFIX + _content_text(last.get("content"))
        pieces, finish = _truncate(reply, max_tokens)
        content = "".join(pieces)
        prompt_tokens = max(1, sum(_words(_content_text(m.get("content"))) for m in messages))
        choice_ids = [] if fault == "empty" else list(range(n))
        usage = _usage(prompt_tokens, _words(content) * len(choice_ids))
        completion_id = "chatcmpl-stub-" + _digest(body)

        if not stream:
            return _json_response(
                _completion_object(
                    "chat.completion",
                    completion_id,
                    model,
                    [
                        {
                            "index": i,
                            "message": {
                                "role": "assistant",
                                "content": content,
                                "refusal": None,
                                "annotations": [],
                            },
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                        for i in choice_ids
                    ],
                    usage=usage,
                )
            )

        with_usage = _include_usage(body)

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            tail = {"usage": None} if with_usage else {}
            return _completion_object(
                "chat.completion.chunk", completion_id, model, choices, **tail
            )

        def delta(i: int, d: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": i, "delta": d, "logprobs": None, "finish_reason": finish_reason}

        events = []
        for i in choice_ids:
            events.append(chunk([delta(i, {"role": "assistant", "content": "", "refusal": None})]))
            events.extend(chunk([delta(i, {"content": piece})]) for piece in pieces)
            events.append(chunk([delta(i, {}, finish)]))
        if with_usage:
            events.append({**chunk([]), "usage": usage})
        return _sse(events, fault)

    # ---- legacy completions

    def _prompts(body: dict[str, Any]) -> list[str]:
        prompt = body.get("prompt")
        if prompt is None:
            raise _missing("prompt")
        if isinstance(prompt, str):
            return [prompt]
        if isinstance(prompt, list) and prompt:
            if all(isinstance(p, str) for p in prompt):
                return list(prompt)
            if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                return [" ".join(map(str, prompt))]
            if all(isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompt):
                return [" ".join(map(str, p)) for p in prompt]
        raise _BadRequest(
            "'prompt' must be a string, an array of strings, or token arrays.", "prompt"
        )

    @app.post("/v1/completions")
    def completions() -> Response:
        body = _body()
        fault = _fault(body)
        stream = _stream(body)
        early = _pre_fault(fault, stream=stream)
        if early is not None:
            return early

        model = _model(body)
        prompts = _prompts(body)
        n = _int_param(body, "n", 1, 1, 128)
        max_tokens = _max_tokens(body)
        completion_id = "cmpl-stub-" + _digest(body)

        # OpenAI orders choices prompt by prompt: index = prompt_index * n + j.
        results: list[tuple[int, list[str], str]] = []
        if fault != "empty":
            for p_index, prompt in enumerate(prompts):
                pieces, finish = _truncate(COMPLETION_PREFIX + prompt, max_tokens)
                results.extend((p_index * n + j, pieces, finish) for j in range(n))
        prompt_tokens = max(1, sum(_words(p) for p in prompts))
        usage = _usage(prompt_tokens, sum(_words("".join(p)) for _, p, _ in results))

        if not stream:
            return _json_response(
                _completion_object(
                    "text_completion",
                    completion_id,
                    model,
                    [
                        {
                            "index": index,
                            "text": "".join(pieces),
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                        for index, pieces, finish in results
                    ],
                    usage=usage,
                )
            )

        with_usage = _include_usage(body)

        def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
            tail = {"usage": None} if with_usage else {}
            return _completion_object("text_completion", completion_id, model, choices, **tail)

        events = []
        for index, pieces, finish in results:
            events.extend(
                chunk([{"index": index, "text": piece, "logprobs": None, "finish_reason": None}])
                for piece in pieces
            )
            events.append(
                chunk([{"index": index, "text": "", "logprobs": None, "finish_reason": finish}])
            )
        if with_usage:
            events.append({**chunk([]), "usage": usage})
        return _sse(events, fault)

    # ---- embeddings

    def _embedding_inputs(body: dict[str, Any]) -> list[tuple[str, int]]:
        """(text to hash, token count) for each input."""
        value = body.get("input")
        if value is None:
            raise _missing("input")
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                if any(v == "" for v in value):
                    raise _BadRequest("'input' must not contain empty strings.", "input")
                return [(v, _words(v)) for v in value]
            if all(isinstance(t, int) and not isinstance(t, bool) for t in value):
                return [(" ".join(map(str, value)), len(value))]
            if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
                return [(" ".join(map(str, v)), len(v)) for v in value]
        raise _BadRequest(
            "'input' must be a non-empty string, an array of strings, or token arrays.", "input"
        )

    @app.post("/v1/embeddings")
    def embeddings() -> Response:
        body = _body()
        fault = _fault(body)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        model = _model(body)
        inputs = _embedding_inputs(body)
        dimensions = _int_param(body, "dimensions", DEFAULT_EMBEDDING_DIMENSIONS, 1, 4096)
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _BadRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")

        data = []
        if fault != "empty":
            for index, (text, _tokens) in enumerate(inputs):
                vector = _embedding_vector(text, dimensions)
                embedding: Any = vector
                if encoding == "base64":
                    packed = struct.pack(f"<{len(vector)}f", *vector)
                    embedding = base64.b64encode(packed).decode("ascii")
                data.append({"object": "embedding", "index": index, "embedding": embedding})
        prompt_tokens = max(1, sum(tokens for _, tokens in inputs))
        return _json_response(
            {"object": "list", "data": data, "model": model, "usage": _usage(prompt_tokens)}
        )

    # ---- moderations

    def _moderation_texts(body: dict[str, Any]) -> list[str]:
        value = body.get("input")
        if value is None:
            raise _missing("input")
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value:
            if all(isinstance(v, str) for v in value):
                return list(value)
            if all(isinstance(v, dict) for v in value):
                return [_content_text(value)]  # multimodal parts: one combined result
        raise _BadRequest(
            "'input' must be a string, an array of strings, or an array of content parts.", "input"
        )

    def _moderation_result(text: str) -> dict[str, Any]:
        flagged = bool(_FLAG_RE.search(text))
        categories = {name: False for name in _MODERATION_CATEGORIES}
        scores = {name: 0.0001 for name in _MODERATION_CATEGORIES}
        if flagged:
            categories["violence"] = True
            scores["violence"] = 0.9
        return {
            "flagged": flagged,
            "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {name: ["text"] for name in _MODERATION_CATEGORIES},
        }

    @app.post("/v1/moderations")
    def moderations() -> Response:
        body = _body()
        fault = _fault(body)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        model = _model(body, required=False, default=DEFAULT_MODERATION_MODEL)
        texts = _moderation_texts(body)
        results = [] if fault == "empty" else [_moderation_result(t) for t in texts]
        return _json_response(
            {"id": "modr-stub-" + _digest(body), "model": model, "results": results}
        )

    # ---- images

    def _form_or_400(fields: dict[str, Any] | None) -> dict[str, Any]:
        if fields is None:
            raise _BadRequest(
                f"Invalid Content-Type header ({request.content_type or 'none'}), expected "
                "multipart/form-data. (HINT: If you're using curl, you can pass -H "
                "'Content-Type: multipart/form-data')",
                None,
                None,
            )
        return fields

    def _image_options(
        kind: str, model: str, n: int, size: Any, response_format: Any
    ) -> tuple[str | None, str]:
        if model == "dall-e-3" and n != 1:
            raise _BadRequest("You must provide n=1 for this model.", "n")
        allowed = _IMAGE_SIZES[kind].get(model)
        if size is not None and not isinstance(size, str):
            raise _BadRequest("'size' must be a string.", "size", "invalid_type")
        if allowed is not None and size is not None and size not in allowed:
            raise _BadRequest(
                f"Invalid value for 'size': {size!r}. Supported values for {model} are: "
                + ", ".join(f"'{a}'" for a in allowed)
                + ".",
                "size",
            )
        return size, _choice(response_format, "response_format", _IMAGE_RESPONSE_FORMATS, "url")

    def _images(
        seed: dict[str, Any], n: int, response_format: str, fault: str | None, **extra: Any
    ) -> Response:
        """``n`` images; the i-th image's id hashes ``seed`` (which leaves out n and
        response_format, so a url and a b64_json answer show the same picture)."""
        base = request.host_url.rstrip("/")
        digest = _digest(seed)
        data = []
        if fault != "empty":
            for i in range(n):
                image_id = _hex(f"{digest}:{i}", 24)
                if response_format == "b64_json":
                    item = {"b64_json": base64.b64encode(_png(image_id)).decode("ascii")}
                else:
                    item = {"url": f"{base}/_stub/images/{image_id}.png"}
                data.append({**item, **extra})
        return _json_response({"created": CREATED, "data": data})

    @app.post("/v1/images/generations")
    def image_generations() -> Response:
        body = _body()
        fault = _fault(body)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        model = _model(body, required=False, default=DEFAULT_IMAGE_MODEL)
        prompt = body.get("prompt")
        if prompt is None or prompt == "":
            raise _missing("prompt")
        if not isinstance(prompt, str):
            raise _BadRequest("'prompt' must be a string.", "prompt", "invalid_type")
        n = _int_param(body, "n", 1, 1, 10)
        assert n is not None
        size, response_format = _image_options(
            "generation", model, n, body.get("size"), body.get("response_format")
        )
        seed = {
            "kind": "generation",
            "model": model,
            "prompt": prompt,
            "size": size,
            "quality": body.get("quality"),
            "style": body.get("style"),
        }
        extra = {"revised_prompt": REVISED_PROMPT_PREFIX + prompt} if model == "dall-e-3" else {}
        return _images(seed, n, response_format, fault, **extra)

    @app.post("/v1/images/edits")
    def image_edits() -> Response:
        fault = _fault(g.stub_form)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        fields = _form_or_400(g.stub_form)
        images = request.files.getlist("image") + request.files.getlist("image[]")
        if not images:
            raise _missing("image")
        mask = _file_part("mask", required=False)
        prompt = _form_text(fields, "prompt", required=True)
        model = _model(fields, required=False, default=DEFAULT_IMAGE_MODEL)
        n = _form_int(fields, "n", 1, 1, 10)
        size, response_format = _image_options(
            "edit", model, n, _form_text(fields, "size"), _form_text(fields, "response_format")
        )
        seed = {
            "kind": "edit",
            "model": model,
            "prompt": prompt,
            "size": size,
            "images": [hashlib.sha256(_file_bytes(i)).hexdigest() for i in images],
            "mask": None if mask is None else hashlib.sha256(_file_bytes(mask)).hexdigest(),
        }
        return _images(seed, n, response_format, fault)

    @app.post("/v1/images/variations")
    def image_variations() -> Response:
        fault = _fault(g.stub_form)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        fields = _form_or_400(g.stub_form)
        image = _file_part("image")
        assert image is not None
        model = _model(fields, required=False, default=DEFAULT_IMAGE_MODEL)
        n = _form_int(fields, "n", 1, 1, 10)
        size, response_format = _image_options(
            "variation", model, n, _form_text(fields, "size"), _form_text(fields, "response_format")
        )
        seed = {
            "kind": "variation",
            "model": model,
            "size": size,
            "image": hashlib.sha256(_file_bytes(image)).hexdigest(),
        }
        return _images(seed, n, response_format, fault)

    # ---- audio

    def _audio_text(task: str) -> Response:
        fault = _fault(g.stub_form)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        fields = _form_or_400(g.stub_form)
        audio = _file_part("file")
        assert audio is not None
        _model(fields)
        language = _form_text(fields, "language") if task == "transcribe" else None
        _form_text(fields, "prompt")  # accepted, not used
        fmt = _choice(
            _form_text(fields, "response_format"), "response_format", _TRANSCRIPTION_FORMATS, "json"
        )
        temperature = _form_float(fields, "temperature", 0.0, 0.0, 1.0)

        text = "" if fault == "empty" else _transcript(_file_bytes(audio))
        if task == "translate" and text:
            text = TRANSLATION_PREFIX + text
        if fmt == "json":
            return _json_response({"text": text})
        if fmt == "text":
            return Response(text, mimetype="text/plain")
        segments = _segments(text, temperature)
        if fmt in ("srt", "vtt"):
            return Response(_subtitles(segments, fmt), mimetype="text/plain")
        return _json_response(
            {
                "task": task,
                "language": language or "english",
                "duration": segments[-1]["end"] if segments else 0.0,
                "text": text,
                "segments": segments,
            }
        )

    @app.post("/v1/audio/transcriptions")
    def audio_transcriptions() -> Response:
        return _audio_text("transcribe")

    @app.post("/v1/audio/translations")
    def audio_translations() -> Response:
        return _audio_text("translate")

    @app.post("/v1/audio/speech")
    def audio_speech() -> Response:
        body = _body()
        fault = _fault(body)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        model = _model(body)
        text = body.get("input")
        if text is None:
            raise _missing("input")
        if not isinstance(text, str):
            raise _BadRequest("'input' must be a string.", "input", "invalid_type")
        if len(text) > _SPEECH_MAX_INPUT:
            raise _BadRequest(
                f"Invalid 'input': string too long. Expected a string with maximum length "
                f"{_SPEECH_MAX_INPUT}, but got a string with length {len(text)} instead.",
                "input",
                "string_above_max_length",
            )
        voice = body.get("voice")
        if voice is None or voice == "":
            raise _missing("voice")
        custom = isinstance(voice, dict) and isinstance(voice.get("id"), str) and voice["id"]
        if not custom:
            _choice(voice, "voice", SPEECH_VOICES, "")
        fmt = _choice(
            body.get("response_format"), "response_format", tuple(_SPEECH_CONTENT_TYPES), "mp3"
        )
        speed = body.get("speed", 1.0)
        if (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not 0.25 <= speed <= 4.0
        ):
            raise _BadRequest("'speed' must be a number between 0.25 and 4.0.", "speed")
        if body.get("stream_format") not in (None, "audio"):
            raise _BadRequest(
                "The stub supports only stream_format 'audio' (sent whole).", "stream_format"
            )

        content_type = _SPEECH_CONTENT_TYPES[fmt]
        if fault == "empty":
            return Response(b"", mimetype=content_type)
        # the format is left out of the seed: a wav holds the very samples of the pcm answer
        seed = json.dumps([model, text, voice, float(speed)], sort_keys=True)
        audio = _speech_audio(seed, max(1, _words(text)), float(speed), fmt)
        return Response(audio, mimetype=content_type)

    # ---- files

    def _file_not_found(file_id: str) -> Response:
        return _error(404, f"No such File object: {file_id}", param="id", code="file_not_found")

    @app.post("/v1/files")
    def upload_file() -> Response:
        early = _pre_fault(_fault(g.stub_form), stream=False)
        if early is not None:
            return early

        fields = _form_or_400(g.stub_form)
        upload = _file_part("file")
        assert upload is not None
        purpose = _form_text(fields, "purpose", required=True)
        purpose = _choice(purpose, "purpose", FILE_PURPOSES, "")
        filename = upload.filename or "upload"
        return _json_response(state.files.add(_file_bytes(upload), filename, purpose))

    @app.get("/v1/files")
    def list_files() -> Response:
        fault = _fault(None)
        early = _pre_fault(fault, stream=False)
        if early is not None:
            return early

        args = request.args
        limit_text = args.get("limit")
        try:
            limit = _FILES_MAX_LIST if limit_text in (None, "") else int(limit_text)
        except ValueError:
            limit = 0
        if not 1 <= limit <= _FILES_MAX_LIST:
            raise _BadRequest(
                f"'limit' must be an integer between 1 and {_FILES_MAX_LIST}.", "limit"
            )
        order = _choice(args.get("order") or None, "order", ("asc", "desc"), "desc")
        after = args.get("after") or None
        try:
            data, has_more = state.files.page(
                purpose=args.get("purpose") or None, order=order, after=after, limit=limit
            )
        except KeyError:
            raise _BadRequest(
                f"Invalid 'after': no file has the id {after!r}.", "after", "invalid_cursor"
            ) from None
        if fault == "empty":
            data, has_more = [], False
        return _json_response(
            {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": has_more,
            }
        )

    @app.get("/v1/files/<file_id>")
    def retrieve_file(file_id: str) -> Response:
        early = _pre_fault(_fault(None), stream=False)
        if early is not None:
            return early
        meta = state.files.get(file_id)
        return _file_not_found(file_id) if meta is None else _json_response(meta)

    @app.delete("/v1/files/<file_id>")
    def delete_file(file_id: str) -> Response:
        early = _pre_fault(_fault(None), stream=False)
        if early is not None:
            return early
        if not state.files.delete(file_id):
            return _file_not_found(file_id)
        return _json_response({"id": file_id, "object": "file", "deleted": True})

    @app.get("/v1/files/<file_id>/content")
    def file_content(file_id: str) -> Response:
        early = _pre_fault(_fault(None), stream=False)
        if early is not None:
            return early
        content = state.files.content(file_id)
        if content is None:
            return _file_not_found(file_id)
        return Response(content, mimetype="application/octet-stream")

    # ---- control plane (not logged, no auth)

    @app.get("/_stub/images/<image_id>.png")
    def stub_image(image_id: str) -> Response:
        if not _IMAGE_ID_RE.fullmatch(image_id):
            flask.abort(404)
        return Response(_png(image_id), mimetype="image/png")

    @app.get("/_stub/requests")
    def stub_requests() -> Response:
        return _json_response(state.log.entries(request.args.get("path")))

    @app.post("/_stub/reset")
    def stub_reset() -> Response:
        state.log.clear()
        return _json_response({"ok": True})

    return app


def _state(app: flask.Flask) -> _StubState:
    return app.extensions[_STATE_KEY]


# --------------------------------------------------------------------------- serving

_QUERY_RE = re.compile(r"\?[^\s\"']*")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)\S+")


def _redact(text: str) -> str:
    """Drop query strings and bearer tokens; replace control characters (no log injection)."""
    text = _BEARER_RE.sub(r"\1[redacted]", _QUERY_RE.sub("", text))
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


class _RequestHandler(WSGIRequestHandler):
    """Logs one line per request, without the query string or any Authorization value."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # SSE: each small event must leave at once

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = (getattr(self, "path", None) or "-").split("?", 1)[0].split("#", 1)[0]
        method = getattr(self, "command", None) or "-"
        log.info('%s "%s %s" %s', self.address_string(), _redact(method), _redact(path), code)

    def log(self, type: str, message: str, *args: Any) -> None:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = message
        level = logging.ERROR if type == "error" else logging.INFO
        log.log(level, "%s %s", self.address_string(), _redact(str(text)).rstrip())


def _make_server(host: str, port: int, app: flask.Flask) -> BaseWSGIServer:
    return make_server(host, port, app, threaded=True, request_handler=_RequestHandler)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class StubServer:
    """The stub app on a real socket, served from a daemon thread.

    ``StubServer(port=0, slow_seconds=0.2).start()`` picks a free port; ``stop()`` returns
    promptly even with requests still sleeping (they are woken and answered 503). Also a
    context manager: ``with StubServer() as stub: ...``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **app_options: Any):
        self.host = host
        self.port = port
        self.app = create_stub_app(**app_options)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle

    def start(self) -> StubServer:
        if self._server is not None:
            raise RuntimeError("StubServer is already running")
        _state(self.app).stopping.clear()
        server = _make_server(self.host, self.port, self.app)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stub-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        _state(self.app).stopping.set()  # wake slow/hang handlers, cut streams
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ---- addresses

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (known once started when port 0 was asked for)."""
        if self.port == 0:
            raise RuntimeError("StubServer has no port yet: call start() first")
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what to give the SDK as ``base_url``."""
        return self.url + "/v1"

    # ---- request log

    def requests_seen(self, path: str | None = None) -> list[dict[str, Any]]:
        """Copies of the logged requests, oldest first (only those for ``path`` if given)."""
        return _state(self.app).log.entries(path)

    def reset(self) -> None:
        """Forget every logged request."""
        _state(self.app).log.clear()


def main(argv: list[str] | None = None) -> None:
    """Serve the stub until killed: ``python -m proxy.stub_upstream --port 8001``."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy.stub_upstream",
        description="Deterministic OpenAI-compatible stub upstream (see docs/stub-upstream.md).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--hang-seconds", type=float, default=300.0)
    parser.add_argument("--stream-delay", type=float, default=0.02)
    parser.add_argument("--stream-slow-delay", type=float, default=0.5)
    parser.add_argument(
        "--retry-after-ms",
        type=int,
        default=None,
        help="also send retry-after-ms on the 429/500 faults",
    )
    parser.add_argument("--log-limit", type=int, default=1000)
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated model ids for GET /v1/models instead of the built-in catalogue",
    )
    parser.add_argument("--owned-by", default=DEFAULT_OWNED_BY, help="owned_by of the models")
    parser.add_argument("--files-limit", type=int, default=1000)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_stub_app(
        slow_seconds=args.slow_seconds,
        hang_seconds=args.hang_seconds,
        stream_delay=args.stream_delay,
        stream_slow_delay=args.stream_slow_delay,
        retry_after_ms=args.retry_after_ms,
        log_limit=args.log_limit,
        models=None if args.models is None else tuple(filter(None, args.models.split(","))),
        owned_by=args.owned_by,
        files_limit=args.files_limit,
    )
    server = _make_server(args.host, args.port, app)
    log.info("stub upstream serving on http://%s:%d/v1", _url_host(args.host), server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
