"""Pure generators of the stub's answers: ids, words, vectors, PNG and audio bytes.

Data in, data or bytes out: nothing here imports Flask or reads a request, so every function
is unit-tested without HTTP (tests/test_stub_generators.py). Each output is a function of its
arguments alone, which is what makes the stub deterministic.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import zlib
from typing import Any

#: The fixed ``created`` timestamp of every object the stub returns.
CREATED = 1_700_000_000
SYSTEM_FINGERPRINT = "fp_stub"

IMAGE_SIDE = 8  # every stub image is an 8x8 PNG, whatever size was asked for

SPEECH_SAMPLE_RATE = 24_000  # 16-bit mono, as OpenAI's pcm and wav
SPEECH_SAMPLES_PER_WORD = 2_400  # 0.1 s per word at speed 1.0
SPEECH_MAX_SAMPLES = 10 * SPEECH_SAMPLE_RATE
# The first bytes of the formats the stub does not really encode (the rest is seeded noise).
SPEECH_MAGIC = {
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "opus": b"OggS",
    "aac": b"\xff\xf1",
    "flac": b"fLaC",
}

MODERATION_CATEGORIES = (
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


# --------------------------------------------------------------------------- ids and words


def digest(body: Any) -> str:
    """16 hex digits of the sha256 of ``body`` as canonical JSON (sorted keys)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def hex_id(seed: str, length: int) -> str:
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:length]


def file_id(upload_number: int, purpose: str, filename: str, content: bytes) -> str:
    """``file-`` + 24 hex digits hashing the upload's number, purpose, name and bytes."""
    hasher = hashlib.sha256()
    for part in (str(upload_number).encode(), purpose.encode(), filename.encode(), content):
        hasher.update(len(part).to_bytes(8, "big") + part)
    return "file-" + hasher.hexdigest()[:24]


def words(text: str) -> int:
    """The stub's token count: whitespace-separated words."""
    return len(text.split())


def pieces(text: str) -> list[str]:
    """One piece per word (leading whitespace kept); ``"".join()`` restores the text."""
    return _PIECE_RE.findall(text)


def truncate(text: str, max_tokens: int | None) -> tuple[list[str], str]:
    """The reply's pieces, cut to ``max_tokens`` words, and the finish reason."""
    cut = pieces(text)
    if max_tokens is not None and len(cut) > max_tokens:
        return cut[:max_tokens], "length"
    return cut, "stop"


def usage(prompt_tokens: int, completion_tokens: int | None = None) -> dict[str, int]:
    if completion_tokens is None:
        return {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def content_text(content: Any) -> str:
    """Text of a message's content: a string, or the text parts of a list joined by spaces."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return " ".join(texts)


def completion_object(
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


# --------------------------------------------------------------------------- vectors


def f32(value: float) -> float:
    """Round to the nearest float32, so float and base64 encodings carry identical numbers."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A unit-length vector of float32-exact values derived from the sha256 of ``text``."""
    raw = [
        int.from_bytes(chunk, "little") / 0xFFFFFFFF * 2.0 - 1.0
        for chunk in _chunks(seeded_bytes(text, 4 * dimensions), 4)
    ]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [f32(v / norm) for v in raw]


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def seeded_bytes(seed: str, length: int) -> bytes:
    """``length`` pseudo-random bytes that depend on ``seed`` alone (sha256 in counter mode)."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(f"{counter}:{seed}".encode()).digest()
        counter += 1
    return bytes(out[:length])


def moderation_result(text: str) -> dict[str, Any]:
    """Flagged for violence (score 0.9) when a word starts with "kill"; all else 0.0001."""
    flagged = bool(_FLAG_RE.search(text))
    categories = {name: False for name in MODERATION_CATEGORIES}
    scores = {name: 0.0001 for name in MODERATION_CATEGORIES}
    if flagged:
        categories["violence"] = True
        scores["violence"] = 0.9
    return {
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


# --------------------------------------------------------------------------- images and audio


def png(seed: str) -> bytes:
    """A valid IMAGE_SIDE x IMAGE_SIDE RGB PNG: a checkerboard of two colours from the seed's
    hash. The zlib stream is one stored block, so the bytes do not depend on the zlib build."""
    colour_bytes = hashlib.sha256(seed.encode("utf-8")).digest()
    colours = (colour_bytes[0:3], colour_bytes[3:6])
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
    header = struct.pack(">IIBBBBB", IMAGE_SIDE, IMAGE_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def transcript(data: bytes) -> str:
    """What the stub "hears": UTF-8 text (stripped) if the bytes are that, else their size."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text):
        return text.strip()
    return f"audio of {len(data)} bytes"


AUDIO_BYTES_PER_SECOND = SPEECH_SAMPLE_RATE * 2  # as the stub's own pcm: 16-bit mono


def audio_seconds(data: bytes) -> int:
    """How long the stub says an upload lasts: whole seconds at AUDIO_BYTES_PER_SECOND,
    rounded up, at least 1."""
    return max(1, math.ceil(len(data) / AUDIO_BYTES_PER_SECOND))


def speech_audio(seed: str, word_count: int, speed: float, fmt: str) -> bytes:
    """pcm and wav carry a square wave (24 kHz, 16-bit mono), 0.1 s per word divided by
    ``speed``, whose pitch comes from the seed; other formats are their magic + seeded bytes."""
    count = min(SPEECH_MAX_SAMPLES, max(1, round(word_count * SPEECH_SAMPLES_PER_WORD / speed)))
    if fmt not in ("pcm", "wav"):
        return SPEECH_MAGIC[fmt] + seeded_bytes(f"{fmt}:{seed}", max(16, count // 8))
    pcm = square_wave(seed, count)
    return pcm if fmt == "pcm" else wav(pcm)


def square_wave(seed: str, count: int) -> bytes:
    """``count`` 16-bit little-endian samples; period and amplitude from the seed's hash."""
    seed_hash = hashlib.sha256(seed.encode("utf-8")).digest()
    period = 20 + seed_hash[0] % 100
    amplitude = 4000 + seed_hash[1] * 32
    half = period // 2
    samples = (amplitude if i % period < half else -amplitude for i in range(count))
    return struct.pack(f"<{count}h", *samples)


def wav(pcm: bytes) -> bytes:
    """A RIFF/WAVE file holding ``pcm`` (24 kHz, 16-bit mono)."""
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
