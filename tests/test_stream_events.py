"""The /api stream's events (START, MIDDLE, END) from a call's chunks and result: pure logic."""

from __future__ import annotations

import json

from proxy.calls import CallResult, StreamingCall
from proxy.doors.onebound import envelope_events


def chunk(text: str) -> dict:
    return {"choices": [{"index": 0, "delta": {"content": text}}]}


def events_of(*events) -> list[dict]:
    def envelope_of(result: CallResult) -> dict:
        return {"error_code": result.code, "reason": result.detail, "response": result.response}

    sent = envelope_events(StreamingCall(events=iter(events)), envelope_of, "req-1")
    return [json.loads(text.removeprefix("data: ")) for text in sent]


def test_the_last_chunk_travels_in_the_end_envelope():
    sent = events_of(
        ("chunk", chunk("a")),
        ("chunk", chunk("b")),
        ("chunk", chunk("c")),
        ("end", CallResult(code="0000", response=None)),
    )
    assert [(e["status"], e["response"]["choices"][0]["delta"]["content"]) for e in sent] == [
        ("START", "a"),
        ("MIDDLE", "b"),
        ("END", "c"),
    ]


def test_a_failure_mid_stream_still_delivers_the_chunk_held_back_before_its_end():
    sent = events_of(
        ("chunk", chunk("a")),
        ("chunk", chunk("b")),
        ("end", CallResult(code="4001", response=None, detail="upstream cut off")),
    )
    assert [e["status"] for e in sent] == ["START", "MIDDLE", "END"]
    assert sent[1]["response"]["choices"][0]["delta"]["content"] == "b"
    assert (sent[2]["error_code"], sent[2]["response"]) == ("4001", None)


def test_a_failure_before_any_chunk_is_a_lone_end():
    sent = events_of(("end", CallResult(code="4002", response=None, detail="upstream 500")))
    assert [(e["status"], e["error_code"]) for e in sent] == [("END", "4002")]
