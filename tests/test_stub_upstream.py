"""The bundled OpenAI-compatible stub upstream, exercised through the official openai SDK."""

from __future__ import annotations

import base64
import json
import math
import os
import queue
import re
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import openai
import openai._base_client
import pytest
import requests
from openai import Omit, OpenAI

from proxy.stub_upstream import CREATED, FAULT_MODELS, StubServer, create_stub_app

REPO_ROOT = Path(__file__).resolve().parent.parent
SLOW_SECONDS = 0.2
STREAM_SLOW_DELAY = 0.15
USER_HI = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server():
    # stream_delay=0: normal streams need no pacing here, and every timed sleep on a small VM
    # can overshoot; stub-stream-slow keeps its pacing for the time-to-first-chunk test.
    with StubServer(
        slow_seconds=SLOW_SECONDS, stream_delay=0, stream_slow_delay=STREAM_SLOW_DELAY
    ) as stub:
        yield stub


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0, timeout=5)


def _auth(key: str = "sk-test") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _sse_payloads(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


# --------------------------------------------------------------------------- server basics


def test_server_urls_name_the_bound_port(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"


def test_unknown_path_is_404_openai_error(server):
    response = requests.post(server.url + "/v1/nope", headers=_auth(), json={}, timeout=5)
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Invalid URL (POST /v1/nope)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


def test_missing_authorization_is_401_invalid_api_key(server):
    response = requests.get(server.base_url + "/models", timeout=5)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["code"] == "invalid_api_key"
    assert "API key" in error["message"]


def test_sdk_without_authorization_raises_authentication_error(client):
    with pytest.raises(openai.AuthenticationError) as info:
        client.models.list(extra_headers={"Authorization": Omit()})
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


# --------------------------------------------------------------------------- models


def test_models_list_is_the_fixed_catalogue(client):
    models = client.models.list().data
    ids = [m.id for m in models]
    for expected in (
        "gpt-4o-mini",
        "gpt-3.5-turbo-instruct",
        "text-embedding-3-small",
        "omni-moderation-latest",
        *FAULT_MODELS,
    ):
        assert expected in ids
    assert {(m.object, m.created, m.owned_by) for m in models} == {("model", CREATED, "stub")}


def test_models_retrieve_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


# --------------------------------------------------------------------------- chat


def test_chat_completion_echoes_last_user_message(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-stub-")
    assert completion.created == CREATED
    assert completion.model == "gpt-4o-mini"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "stub reply: hello there"
    # prompt: 2 + 1 + 1 + 2 words; completion: "stub reply: hello there" = 4 words
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (6, 4, 10)


def test_chat_completion_is_deterministic(client):
    first = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    second = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    other = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "bye"}]
    )
    assert first.id == second.id
    assert first.choices[0].message.content == second.choices[0].message.content
    assert other.id != first.id


def test_chat_completion_joins_text_content_parts(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:,x"}},
                    {"type": "text", "text": "here"},
                ],
            }
        ],
    )
    assert completion.choices[0].message.content == "stub reply: look here"


def test_chat_completion_honours_n(client):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"stub reply: hello there"}
    assert completion.usage.completion_tokens == 12


def test_chat_completion_max_tokens_truncates_with_length(client):
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, max_tokens=2)
    assert completion.choices[0].message.content == "stub reply:"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


def test_chat_completion_minimum_prompt_tokens_is_one(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": ""}]
    )
    assert completion.usage.prompt_tokens == 1


def test_chat_empty_messages_is_400_naming_messages(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert info.value.param == "messages"
    assert info.value.body["type"] == "invalid_request_error"


def test_chat_missing_messages_is_400_missing_required_parameter(server):
    response = requests.post(
        server.base_url + "/chat/completions",
        headers=_auth(),
        json={"model": "gpt-4o-mini"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }


def test_chat_missing_model_is_400_naming_model(server):
    response = requests.post(
        server.base_url + "/chat/completions",
        headers=_auth(),
        json={"messages": USER_HI},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_non_json_body_is_400(server):
    response = requests.post(
        server.base_url + "/chat/completions",
        headers={**_auth(), "Content-Type": "application/json"},
        data=b"{nope",
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


# --------------------------------------------------------------------------- chat streaming


def test_streaming_deltas_join_to_the_non_streaming_content(client):
    expected = client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI)
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=USER_HI, stream=True)
    )
    contents = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(contents) == 4  # one chunk per word
    assert "".join(contents) == expected.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1


def test_streaming_include_usage_sends_final_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER_HI,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        2,
        4,
        6,
    )
    assert all(c.usage is None for c in chunks[:-1])


def test_streaming_wire_format_is_sse_ending_with_done(server):
    response = requests.post(
        server.base_url + "/chat/completions",
        headers=_auth(),
        json={"model": "gpt-4o-mini", "messages": USER_HI, "stream": True},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    payloads = _sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert [json.loads(p)["object"] for p in payloads[:-1]] == ["chat.completion.chunk"] * 6


# --------------------------------------------------------------------------- completions


def test_completion_with_string_prompt(client):
    completion = client.completions.create(
        model="gpt-3.5-turbo-instruct", prompt="once upon a time"
    )
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-stub-")
    assert completion.created == CREATED
    assert completion.model == "gpt-3.5-turbo-instruct"
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert (choice.index, choice.text, choice.finish_reason, choice.logprobs) == (
        0,
        "stub completion: once upon a time",
        "stop",
        None,
    )
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (4, 6, 10)


def test_completion_with_list_prompt_orders_choices_prompt_by_prompt(client):
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=["a", "b"], n=2)
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "stub completion: a"),
        (1, "stub completion: a"),
        (2, "stub completion: b"),
        (3, "stub completion: b"),
    ]


def test_completion_stream_text_joins_to_the_non_streaming_text(client):
    expected = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="go on")
    chunks = list(
        client.completions.create(model="gpt-3.5-turbo-instruct", prompt="go on", stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == expected.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "stop"


# --------------------------------------------------------------------------- embeddings


def test_embeddings_sdk_default_encoding_returns_floats(client, server):
    server.reset()
    default = client.embeddings.create(model="text-embedding-3-small", input="hello")
    as_float = client.embeddings.create(
        model="text-embedding-3-small", input="hello", encoding_format="float"
    )
    # openai 3.54 asks for base64 on the wire when no encoding_format is given
    assert server.requests_seen()[0]["body"]["encoding_format"] == "base64"
    vector = default.data[0].embedding
    assert len(vector) == 8
    assert all(isinstance(v, float) for v in vector)
    assert vector == as_float.data[0].embedding
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert (default.object, default.model, default.data[0].index) == (
        "list",
        "text-embedding-3-small",
        0,
    )
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (1, 1)


def test_embeddings_base64_wire_format_is_little_endian_float32(server):
    response = requests.post(
        server.base_url + "/embeddings",
        headers=_auth(),
        json={"model": "text-embedding-3-small", "input": "hello", "encoding_format": "base64"},
        timeout=5,
    )
    encoded = response.json()["data"][0]["embedding"]
    floats = requests.post(
        server.base_url + "/embeddings",
        headers=_auth(),
        json={"model": "text-embedding-3-small", "input": "hello"},
        timeout=5,
    ).json()["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == floats


def test_embeddings_list_input_and_dimensions(client):
    result = client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b c"], dimensions=16
    )
    assert [d.index for d in result.data] == [0, 1]
    assert [len(d.embedding) for d in result.data] == [16, 16]
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens == 3


def test_embeddings_are_deterministic(client):
    first = client.embeddings.create(model="text-embedding-3-small", input="same")
    second = client.embeddings.create(model="text-embedding-3-small", input="same")
    assert first.data[0].embedding == second.data[0].embedding


# --------------------------------------------------------------------------- moderations


def test_moderation_flags_input_containing_kill(client):
    result = client.moderations.create(input=["I will kill it", "hello there"])
    assert result.id.startswith("modr-stub-")
    assert result.model == "omni-moderation-latest"
    flagged, clean = result.results
    assert flagged.flagged is True
    assert flagged.categories.violence is True
    assert flagged.category_scores.violence == 0.9
    assert flagged.categories.hate is False
    assert clean.flagged is False
    assert not any(clean.categories.model_dump().values())


# --------------------------------------------------------------------------- fault modes


def test_fault_500_raises_internal_server_error(client):
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="stub-500", messages=USER_HI)
    assert info.value.status_code == 500
    assert info.value.body["type"] == "server_error"


def test_fault_429_raises_rate_limit_error_with_retry_after_zero(client):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="stub-429", messages=USER_HI)
    assert info.value.status_code == 429
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "0"


@pytest.fixture
def sdk_retry_sleeps(monkeypatch):
    """Record (and skip) the SDK's retry sleeps: openai._base_client calls time.sleep()."""
    sleeps: list[float] = []
    fake_time = types.SimpleNamespace(sleep=sleeps.append, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(openai._base_client, "time", fake_time)
    return sleeps


def test_fault_429_is_retried_by_the_sdk_with_its_own_backoff(server, sdk_retry_sleeps):
    # Retry-After: 0 is no usable hint (the SDK needs 0 < delay), so it backs off 0.5 s x jitter.
    retrying = OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=2, timeout=5)
    server.reset()
    with pytest.raises(openai.RateLimitError):
        retrying.chat.completions.create(model="stub-429", messages=USER_HI)
    seen = server.requests_seen()
    assert [r["headers"]["x-stainless-retry-count"] for r in seen] == ["0", "1", "2"]
    assert len(sdk_retry_sleeps) == 2
    assert 0.375 <= sdk_retry_sleeps[0] <= 0.5
    assert 0.75 <= sdk_retry_sleeps[1] <= 1.0


def test_retry_after_ms_option_sets_the_sdk_retry_delay(sdk_retry_sleeps):
    with StubServer(retry_after_ms=1) as stub:
        retrying = OpenAI(api_key="sk-test", base_url=stub.base_url, max_retries=2, timeout=5)
        with pytest.raises(openai.InternalServerError) as info:
            retrying.chat.completions.create(model="stub-500", messages=USER_HI)
        assert info.value.response.headers["retry-after-ms"] == "1"
        assert len(stub.requests_seen()) == 3
    assert sdk_retry_sleeps == [0.001, 0.001]


def test_fault_garbage_makes_the_sdk_raise_json_decode_error(client, server):
    response = requests.post(
        server.base_url + "/chat/completions",
        headers=_auth(),
        json={"model": "stub-garbage", "messages": USER_HI},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    # The SDK does not wrap this: a non-JSON 200 surfaces as a plain ValueError subclass.
    with pytest.raises(json.JSONDecodeError):
        client.chat.completions.create(model="stub-garbage", messages=USER_HI)


def test_fault_garbage_stream_raises_json_decode_error_while_iterating(client):
    stream = client.chat.completions.create(model="stub-garbage", messages=USER_HI, stream=True)
    with pytest.raises(json.JSONDecodeError):
        next(iter(stream))


def test_fault_hang_raises_api_timeout_error(client):
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(
            model="stub-hang", messages=USER_HI
        )
    assert time.monotonic() - started < 3


def test_fault_slow_answers_normally_after_slow_seconds(client):
    started = time.monotonic()
    completion = client.chat.completions.create(model="stub-slow", messages=USER_HI)
    assert time.monotonic() - started >= SLOW_SECONDS
    assert completion.model == "stub-slow"
    assert completion.choices[0].message.content == "stub reply: hello there"


def test_fault_stream_slow_sends_first_chunk_long_before_the_last(client):
    started = time.monotonic()
    arrivals = []
    # max_tokens=1 keeps it short: role chunk, "stub", finish chunk, then [DONE]
    for _chunk in client.chat.completions.create(
        model="stub-stream-slow", messages=USER_HI, max_tokens=1, stream=True
    ):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    # each event after the first waits STREAM_SLOW_DELAY; the first is sent at once
    assert arrivals[-1] >= 2 * STREAM_SLOW_DELAY
    assert arrivals[0] < arrivals[-1] - STREAM_SLOW_DELAY


def test_fault_empty_chat_has_no_choices(client):
    completion = client.chat.completions.create(model="stub-empty", messages=USER_HI)
    assert completion.choices == []
    assert completion.usage.completion_tokens == 0


def test_fault_empty_embeddings_make_the_sdk_default_raise_value_error(client):
    as_float = client.embeddings.create(model="stub-empty", input="x", encoding_format="float")
    assert as_float.data == []
    with pytest.raises(ValueError, match="No embedding data received"):
        client.embeddings.create(model="stub-empty", input="x")


def test_fault_header_on_models_list_raises_internal_server_error(client):
    with pytest.raises(openai.InternalServerError):
        client.models.list(extra_headers={"X-Stub-Fault": "500"})


def test_fault_header_unknown_value_is_400(server):
    response = requests.get(
        server.base_url + "/models", headers={**_auth(), "X-Stub-Fault": "explode"}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Stub-Fault"


# --------------------------------------------------------------------------- request log


def test_request_log_records_method_path_body_and_authorization(client, server):
    server.reset()
    client.chat.completions.create(
        model="gpt-4o-mini", messages=USER_HI, extra_query={"trace": "1"}
    )
    (entry,) = server.requests_seen()
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/chat/completions"
    assert entry["query_string"] == "trace=1"
    assert entry["headers"]["authorization"] == "Bearer sk-test"
    assert entry["body"] == {"model": "gpt-4o-mini", "messages": USER_HI}


def test_request_log_is_served_over_http_and_reset_clears_it(client, server):
    client.models.list()
    seen = requests.get(server.url + "/_stub/requests", timeout=5).json()
    assert seen and seen[-1]["path"] == "/v1/models"
    assert requests.post(server.url + "/_stub/reset", timeout=5).status_code == 200
    assert requests.get(server.url + "/_stub/requests", timeout=5).json() == []
    assert server.requests_seen() == []


def test_request_id_header_matches_log_sequence(client, server):
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=USER_HI)
    assert raw.headers["x-request-id"] == f"req_stub_{server.requests_seen()[-1]['seq']}"


def test_request_log_keeps_only_the_latest_entries():
    app = create_stub_app(log_limit=3)
    test_client = app.test_client()
    for i in range(5):
        test_client.get(f"/v1/models?i={i}", headers=_auth())
    seen = test_client.get("/_stub/requests").get_json()
    assert [e["query_string"] for e in seen] == ["i=2", "i=3", "i=4"]


# --------------------------------------------------------------------------- lifecycle


def test_stop_returns_promptly_while_a_hang_request_is_pending():
    stub = StubServer().start()  # hang_seconds keeps its 300 s default
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(
                requests.post(
                    stub.base_url + "/chat/completions",
                    headers=_auth(),
                    json={"model": "stub-hang", "messages": USER_HI},
                    timeout=10,
                ).status_code
            )
        except requests.RequestException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    deadline = time.monotonic() + 2
    while not stub.requests_seen() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.requests_seen(), "the hang request never arrived"
    started = time.monotonic()
    stub.stop()
    assert time.monotonic() - started < 2
    caller.join(timeout=2)
    assert not caller.is_alive()
    assert outcome  # woken and answered 503, or cut off


def test_main_serves_and_logs_requests_without_query_or_key():
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.stub_upstream", "--port", "0"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        match = None
        while match is None:
            # a fresh interpreter imports the stub: seconds on a loaded machine
            match = re.search(r"serving on (http://\S+/v1)", lines.get(timeout=60))
        response = requests.get(
            match.group(1) + "/models?secret=s3cr3t", headers=_auth("sk-very-secret"), timeout=5
        )
        assert response.status_code == 200
        line = lines.get(timeout=5)
        assert '"GET /v1/models" 200' in line
        assert "s3cr3t" not in line and "sk-very-secret" not in line
    finally:
        proc.terminate()
        proc.wait(timeout=5)
