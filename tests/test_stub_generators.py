"""The stub's pure generators and its state, without HTTP: what its answers are made of."""

from __future__ import annotations

import base64
import io
import math
import struct
import wave
import zlib

import pytest

from stub_upstream.generators import (
    CREATED,
    MODERATION_CATEGORIES,
    audio_seconds,
    content_text,
    digest,
    embedding_vector,
    f32,
    file_id,
    moderation_result,
    pieces,
    png,
    speech_audio,
    transcript,
    truncate,
    usage,
)
from stub_upstream.state import FileStore, RequestLog

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_dimensions(data: bytes) -> tuple[int, int]:
    """Check the PNG's structure (signature, IHDR crc, inflatable IDAT) and return its size."""
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    width, height = struct.unpack(">II", data[16:24])
    (idat_length,) = struct.unpack(">I", data[33:37])
    assert data[37:41] == b"IDAT"
    assert len(zlib.decompress(data[41 : 41 + idat_length])) == height * (1 + 3 * width)
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


# --------------------------------------------------------------------------- ids and words


def test_digest_is_16_hex_of_canonical_json_whatever_the_key_order():
    assert digest({"a": 1, "b": [2]}) == digest({"b": [2], "a": 1})
    assert len(digest({"a": 1})) == 16
    assert digest({"a": 1}) != digest({"a": 2})


def test_pieces_are_one_per_word_and_join_back_to_the_text():
    text = "stub reply:  hello there "
    assert pieces(text) == ["stub", " reply:", "  hello", " there", " "]
    assert "".join(pieces(text)) == text


def test_truncate_cuts_to_max_tokens_words_with_finish_length():
    assert truncate("stub reply: hello there", 2) == (["stub", " reply:"], "length")
    assert truncate("stub reply: hi", 3) == (["stub", " reply:", " hi"], "stop")
    assert truncate("stub reply: hi", None)[1] == "stop"


def test_usage_without_completion_tokens_has_prompt_and_total_only():
    assert usage(3) == {"prompt_tokens": 3, "total_tokens": 3}
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_content_text_joins_the_text_parts_of_a_list():
    parts = [{"type": "text", "text": "look"}, {"type": "image_url"}, "here"]
    assert content_text(parts) == "look here"
    assert content_text(None) == ""


def test_file_id_hashes_the_upload_number_purpose_name_and_bytes():
    first = file_id(1, "batch", "a.jsonl", b"one")
    assert first == file_id(1, "batch", "a.jsonl", b"one")
    assert first.startswith("file-") and len(first) == len("file-") + 24
    others = {
        file_id(2, "batch", "a.jsonl", b"one"),
        file_id(1, "vision", "a.jsonl", b"one"),
        file_id(1, "batch", "b.jsonl", b"one"),
        file_id(1, "batch", "a.jsonl", b"two"),
    }
    assert first not in others and len(others) == 4


# --------------------------------------------------------------------------- vectors


def test_embedding_vector_has_unit_length_and_float32_exact_values():
    vector = embedding_vector("hello", 8)
    assert len(vector) == 8
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert all(f32(v) == v for v in vector)


def test_embedding_vector_depends_on_the_text_alone():
    assert embedding_vector("same", 16) == embedding_vector("same", 16)
    assert embedding_vector("same", 16) != embedding_vector("other", 16)
    assert len(embedding_vector("same", 4096)) == 4096


def test_embedding_vector_packs_to_little_endian_float32_and_back():
    vector = embedding_vector("hello", 8)
    packed = base64.b64encode(struct.pack("<8f", *vector))
    assert list(struct.unpack("<8f", base64.b64decode(packed))) == vector


def test_moderation_flags_a_word_starting_with_kill_as_violence():
    flagged = moderation_result("they were Killing time")
    assert flagged["flagged"] is True
    assert flagged["categories"]["violence"] is True
    assert flagged["category_scores"]["violence"] == 0.9
    assert set(flagged["categories"]) == set(MODERATION_CATEGORIES)
    clean = moderation_result("skill issue")
    assert clean["flagged"] is False and not any(clean["categories"].values())


# --------------------------------------------------------------------------- images and audio


def test_png_is_a_valid_8x8_image_of_its_seed():
    image = png("abc")
    assert png_dimensions(image) == (8, 8)
    assert png("abc") == image and png("abd") != image


def test_transcript_of_utf8_text_is_the_text_stripped():
    assert transcript("  你好 stub world \n".encode()) == "你好 stub world"


def test_transcript_of_binary_audio_names_its_size():
    assert transcript(bytes(range(256))) == "audio of 256 bytes"


def test_an_uploads_duration_is_its_pcm_seconds_rounded_up_and_at_least_one():
    assert [audio_seconds(bytes(n)) for n in (0, 48_000, 48_001, 144_000)] == [1, 1, 2, 3]


def test_speech_wav_is_riff_wave_24khz_16bit_mono_0_1_s_per_word():
    audio = speech_audio("seed", 2, 1.0, "wav")
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"
    with wave.open(io.BytesIO(audio)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (
            1,
            2,
            24_000,
            4_800,
        )


def test_speech_pcm_is_the_wav_samples():
    pcm = speech_audio("seed", 2, 1.0, "pcm")
    with wave.open(io.BytesIO(speech_audio("seed", 2, 1.0, "wav"))) as wav:
        assert wav.readframes(wav.getnframes()) == pcm


def test_speech_speed_divides_the_length_and_10_s_is_the_most():
    assert len(speech_audio("seed", 2, 1.0, "pcm")) == 9_600
    assert len(speech_audio("seed", 2, 2.0, "pcm")) == 4_800
    assert len(speech_audio("seed", 10_000, 1.0, "pcm")) == 2 * 10 * 24_000


@pytest.mark.parametrize(
    ("fmt", "magic"), [("mp3", b"ID3"), ("opus", b"OggS"), ("aac", b"\xff\xf1"), ("flac", b"fLaC")]
)
def test_speech_in_other_formats_starts_with_their_magic_number(fmt, magic):
    audio = speech_audio("seed", 2, 1.0, fmt)
    assert audio.startswith(magic)
    assert audio == speech_audio("seed", 2, 1.0, fmt) != speech_audio("other", 2, 1.0, fmt)


# --------------------------------------------------------------------------- state


def test_request_log_keeps_only_the_latest_entries_numbered_in_order():
    log = RequestLog(limit=3)
    for i in range(5):
        log.record({"path": f"/v1/{i}"})
    assert [(e["seq"], e["path"]) for e in log.entries()] == [
        (3, "/v1/2"),
        (4, "/v1/3"),
        (5, "/v1/4"),
    ]
    assert log.entries("/v1/3") == [{"path": "/v1/3", "seq": 4}]


def test_file_store_keeps_only_the_latest_files():
    store = FileStore(limit=2)
    ids = [store.add(b"x", f"{name}.jsonl", "batch")["id"] for name in "abc"]
    assert store.filenames() == ["b.jsonl", "c.jsonl"]
    assert store.get(ids[0]) is None and store.content(ids[2]) == b"x"


def test_file_store_drops_the_oldest_files_beyond_its_byte_budget():
    store = FileStore(limit=10, max_bytes=5)
    for name in "abc":
        store.add(b"xx", f"{name}.bin", "batch")
    assert store.filenames() == ["b.bin", "c.bin"]


def test_file_store_answers_the_file_object():
    meta = FileStore(limit=1).add(b'{"a": 1}\n', "train.jsonl", "fine-tune")
    assert meta == {
        "id": meta["id"],
        "object": "file",
        "bytes": 9,
        "created_at": CREATED,
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "status": "processed",
        "status_details": None,
    }
