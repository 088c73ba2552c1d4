"""``POST /v1/audio/transcriptions`` and ``translations`` (multipart) and ``speech`` (JSON).

What the stub "hears" is the uploaded bytes as text (so tests round-trip), and what it says
is a deterministic square wave (pcm, wav) or seeded bytes behind the format's magic number.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import audio_seconds, speech_audio, transcript, words
from stub_upstream.replies import BadRequest, json_response, missing

TRANSLATION_PREFIX = "[en] "
TRANSCRIPTION_FORMATS = ("json", "text")
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}

bp = Blueprint("audio", __name__, url_prefix="/v1")


def _heard(prefix: str, *, reports_duration: bool) -> Response:
    """The transcript of the uploaded ``file``, as ``{"text"}`` (a transcription adds its
    ``usage``: the audio's duration, as whisper-1 reports it) or a text/plain body."""
    fields = arguments.form_fields()
    audio = arguments.file_part("file")
    arguments.model(fields)
    fmt = arguments.choice(
        arguments.text_param(fields, "response_format"),
        "response_format",
        TRANSCRIPTION_FORMATS,
        "json",
    )
    arguments.form_float(fields, "temperature", 0.0, 0.0, 1.0)
    data = arguments.file_bytes(audio)
    text = "" if current_fault() == "empty" else transcript(data)
    if text:
        text = prefix + text
    if fmt != "json":
        return Response(text, mimetype="text/plain")
    if not reports_duration:
        return json_response({"text": text})
    duration = {"type": "duration", "seconds": audio_seconds(data)}
    return json_response({"text": text, "usage": duration})


@bp.post("/audio/transcriptions")
def create_transcription() -> Response:
    return _heard("", reports_duration=True)


@bp.post("/audio/translations")
def create_translation() -> Response:
    return _heard(TRANSLATION_PREFIX, reports_duration=False)


def _speed(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.25 <= value <= 4.0:
        raise BadRequest("'speed' must be a number between 0.25 and 4.0.", "speed")
    return float(value)


@bp.post("/audio/speech")
def create_speech() -> Response:
    body = arguments.json_body()
    model = arguments.model(body)
    text = body.get("input")
    if text is None:
        raise missing("input")
    if not isinstance(text, str):
        raise BadRequest("'input' must be a string.", "input", "invalid_type")
    voice = body.get("voice")
    if voice is None or voice == "":
        raise missing("voice")
    fmt = arguments.choice(
        body.get("response_format"), "response_format", tuple(SPEECH_CONTENT_TYPES), "mp3"
    )
    speed = _speed(body.get("speed", 1.0))
    if current_fault() == "empty":
        return Response(b"", mimetype=SPEECH_CONTENT_TYPES[fmt])
    # the format is left out of the seed: a wav holds the very samples of the pcm answer
    seed = json.dumps([model, text, voice, speed], sort_keys=True)
    audio = speech_audio(seed, max(1, words(text)), speed, fmt)
    return Response(audio, mimetype=SPEECH_CONTENT_TYPES[fmt])
