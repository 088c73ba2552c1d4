"""Server-sent events as OpenAI streams them: ``data: {json}\\n\\n`` per chunk, then
``data: [DONE]``; each event written on its own, ``stream_delay`` apart (the first at once)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response

from stub_upstream.faults import current_fault
from stub_upstream.state import StubState, stub_state


def event_stream(events: list[dict[str, Any]]) -> Response:
    state = stub_state()
    options = state.options
    delay = options.stream_slow_delay if current_fault() == "stream-slow" else options.stream_delay
    payloads = [json.dumps(event) for event in events] + ["[DONE]"]
    return Response(
        _paced(state, payloads, delay),
        status=200,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _paced(state: StubState, payloads: list[str], delay: float) -> Iterator[bytes]:
    for i, payload in enumerate(payloads):
        if i and delay > 0 and state.stopping.wait(delay):
            return  # shutting down: cut the stream, as a dropped upstream would
        yield f"data: {payload}\n\n".encode()
