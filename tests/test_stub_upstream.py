"""The bundled OpenAI-compatible stub upstream, exercised through the official openai SDK."""

from __future__ import annotations

import base64
import io
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

from stub_upstream import CREATED, FAULT_MODELS, StubServer, create_stub_app
from tests.conftest import WEATHER_TOOL
from tests.test_stub_generators import png_dimensions

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


def test_a_required_tool_choice_answers_one_call_of_the_first_tool(server):
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "杭州"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",
    }
    response = requests.post(
        server.base_url + "/chat/completions", json=body, headers=_auth(), timeout=5
    )
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_stub_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "杭州"}'}


def test_auto_tool_choice_answers_text(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        tools=[WEATHER_TOOL],
    )
    assert completion.choices[0].message.content == "stub reply: hi"
    assert completion.choices[0].message.tool_calls is None


def test_a_streamed_tool_call_accumulates_to_the_whole_call(client):
    with client.beta.chat.completions.stream(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')


def test_a_tool_choice_naming_no_tool_is_400_naming_tool_choice(server):
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "nope"}},
    }
    response = requests.post(
        server.base_url + "/chat/completions", json=body, headers=_auth(), timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tool_choice"


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


# --------------------------------------------------------------------------- images

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_image_generation_returns_n_urls_served_by_the_stub(client, server):
    result = client.images.generate(prompt="a red fox", n=2)
    assert result.created == CREATED
    assert len(result.data) == 2
    for image in result.data:
        assert re.fullmatch(re.escape(server.url) + r"/_stub/images/[0-9a-f]{24}\.png", image.url)
        assert (image.b64_json, image.revised_prompt) == (None, None)
    assert result.data[0].url != result.data[1].url


def test_image_url_serves_a_valid_png_without_auth(client):
    url = client.images.generate(prompt="a red fox").data[0].url
    response = requests.get(url, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert png_dimensions(response.content) == (8, 8)


def test_image_url_with_a_non_hex_id_is_404(server):
    response = requests.get(server.url + "/_stub/images/not-an-id.png", timeout=5)
    assert response.status_code == 404


def test_image_b64_json_is_the_png_the_url_serves(client):
    by_url = client.images.generate(prompt="a red fox", response_format="url").data[0]
    inline = client.images.generate(prompt="a red fox", response_format="b64_json").data[0]
    assert inline.url is None
    png = base64.b64decode(inline.b64_json)
    assert png == requests.get(by_url.url, timeout=5).content
    assert png_dimensions(png) == (8, 8)


def test_image_generation_is_deterministic(client):
    first = client.images.generate(prompt="a red fox", n=2)
    second = client.images.generate(prompt="a red fox", n=2)
    other = client.images.generate(prompt="a blue fox", n=2)
    assert [d.url for d in first.data] == [d.url for d in second.data]
    assert not {d.url for d in first.data} & {d.url for d in other.data}


def test_image_generation_missing_prompt_is_400_naming_prompt(server):
    response = requests.post(
        server.base_url + "/images/generations", headers=_auth(), json={"n": 1}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Missing required parameter: 'prompt'.",
        "type": "invalid_request_error",
        "param": "prompt",
        "code": "missing_required_parameter",
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 11}, "n"),
        ({"n": 0}, "n"),
        ({"response_format": "jpeg"}, "response_format"),
    ],
)
def test_image_generation_invalid_option_is_400_naming_it(server, extra, param):
    response = requests.post(
        server.base_url + "/images/generations",
        headers=_auth(),
        json={"prompt": "a red fox", **extra},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_image_edit_derives_images_from_image_bytes_and_prompt(client):
    def edit(image: bytes, prompt: str) -> list[str]:
        result = client.images.edit(
            image=("in.png", image, "image/png"),
            mask=("mask.png", b"mask", "image/png"),
            prompt=prompt,
            n=2,
        )
        assert result.created == CREATED
        return [d.url for d in result.data]

    first = edit(b"picture-1", "add a hat")
    assert len(first) == 2
    assert edit(b"picture-1", "add a hat") == first
    assert edit(b"picture-2", "add a hat") != first
    assert edit(b"picture-1", "add a scarf") != first


def test_image_edit_missing_image_is_400_naming_image(server):
    response = requests.post(
        server.base_url + "/images/edits",
        headers=_auth(),
        files={"prompt": (None, "add a hat")},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"
    assert response.json()["error"]["code"] == "missing_required_parameter"


def test_image_edit_missing_prompt_is_400_naming_prompt(server):
    response = requests.post(
        server.base_url + "/images/edits",
        headers=_auth(),
        files={"image": ("in.png", b"picture", "image/png")},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"


def test_image_variation_returns_n_b64_pngs(client):
    with pytest.deprecated_call():  # openai 3.54 marks the retired endpoint deprecated
        result = client.images.create_variation(
            image=("in.png", b"picture", "image/png"), n=3, response_format="b64_json"
        )
    pngs = [base64.b64decode(d.b64_json) for d in result.data]
    assert len(set(pngs)) == 3
    assert all(png_dimensions(png) == (8, 8) for png in pngs)


def test_image_variation_missing_image_is_400_naming_image(server):
    response = requests.post(
        server.base_url + "/images/variations",
        headers=_auth(),
        files={"n": (None, "1")},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "image"


def test_multipart_endpoint_given_json_is_400_invalid_content_type(server):
    response = requests.post(
        server.base_url + "/images/variations", headers=_auth(), json={"n": 1}, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(
        "Invalid Content-Type header (application/json), expected multipart/form-data."
    )


# --------------------------------------------------------------------------- audio


def test_transcription_round_trips_utf8_text(client):
    result = client.audio.transcriptions.create(
        file=("note.txt", b"  hello stub world \n", "text/plain"), model="whisper-1"
    )
    assert result.text == "hello stub world"


def test_transcription_json_is_its_text_and_the_audios_duration(server):
    response = requests.post(
        server.base_url + "/audio/transcriptions",
        headers=_auth(),
        files={"file": ("note.txt", b"hello"), "model": (None, "whisper-1")},
        timeout=5,
    )
    assert response.json() == {"text": "hello", "usage": {"type": "duration", "seconds": 1}}


def test_translation_json_is_exactly_text(server):
    response = requests.post(
        server.base_url + "/audio/translations",
        headers=_auth(),
        files={"file": ("note.txt", b"hello"), "model": (None, "whisper-1")},
        timeout=5,
    )
    assert response.json() == {"text": "[en] hello"}


def test_transcription_text_format_is_a_plain_text_body(client):
    raw = client.audio.transcriptions.with_raw_response.create(
        file=("note.txt", b"hello there"), model="whisper-1", response_format="text"
    )
    assert raw.headers["content-type"] == "text/plain; charset=utf-8"
    assert raw.parse() == "hello there"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": (None, "whisper-1")}, "file"),
        ({"file": ("a.txt", b"hi")}, "model"),
        (
            {
                "file": ("a.txt", b"hi"),
                "model": (None, "whisper-1"),
                "response_format": (None, "diarized_json"),
            },
            "response_format",
        ),
        (
            {"file": ("a.txt", b"hi"), "model": (None, "whisper-1"), "temperature": (None, "2")},
            "temperature",
        ),
    ],
)
def test_transcription_bad_request_is_400_naming_the_param(server, fields, param):
    response = requests.post(
        server.base_url + "/audio/transcriptions", headers=_auth(), files=fields, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_transcription_missing_file_code_is_missing_required_parameter(server):
    response = requests.post(
        server.base_url + "/audio/transcriptions",
        headers=_auth(),
        files={"model": (None, "whisper-1")},
        timeout=5,
    )
    assert response.json()["error"] == {
        "message": "Missing required parameter: 'file'.",
        "type": "invalid_request_error",
        "param": "file",
        "code": "missing_required_parameter",
    }


def test_translation_prefixes_the_transcript_with_en(client):
    with pytest.deprecated_call():  # openai 3.54 marks translations deprecated
        result = client.audio.translations.create(
            file=("note.txt", b"bonjour tout le monde"), model="whisper-1"
        )
    assert result.text == "[en] bonjour tout le monde"


def test_translation_missing_file_is_400_naming_file(server):
    response = requests.post(
        server.base_url + "/audio/translations",
        headers=_auth(),
        files={"model": (None, "whisper-1")},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "file"


def _speech(client, **options):
    return client.audio.speech.with_raw_response.create(
        **{"model": "tts-1", "input": "hello there", "voice": "alloy", **options}
    )


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        ("mp3", "audio/mpeg"),
        ("opus", "audio/opus"),
        ("aac", "audio/aac"),
        ("flac", "audio/flac"),
        ("wav", "audio/wav"),
        ("pcm", "audio/pcm"),
    ],
)
def test_speech_content_type_matches_response_format(client, fmt, content_type):
    raw = _speech(client, response_format=fmt)
    assert raw.status_code == 200
    assert raw.headers["content-type"] == content_type
    assert raw.content


def test_speech_defaults_to_mp3_starting_with_id3(client):
    raw = _speech(client)
    assert raw.headers["content-type"] == "audio/mpeg"
    assert raw.content.startswith(b"ID3")


def test_speech_is_deterministic(client):
    first = _speech(client).content
    assert _speech(client).content == first
    assert _speech(client, input="something else").content != first
    assert _speech(client, voice="nova").content != first


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "voice": "alloy"}, "model"),
        ({"model": "tts-1", "voice": "alloy"}, "input"),
        ({"model": "tts-1", "input": "hi"}, "voice"),
        ({"model": "tts-1", "input": "hi", "voice": "alloy", "speed": 5}, "speed"),
        (
            {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "ogg"},
            "response_format",
        ),
    ],
)
def test_speech_bad_request_is_400_naming_the_param(server, body, param):
    response = requests.post(
        server.base_url + "/audio/speech", headers=_auth(), json=body, timeout=5
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# --------------------------------------------------------------------------- files


@pytest.fixture
def fresh():
    """A stub of its own, for tests that need an empty file store."""
    with StubServer() as stub:
        yield stub


@pytest.fixture
def fresh_client(fresh):
    return OpenAI(api_key="sk-test", base_url=fresh.base_url, max_retries=0, timeout=5)


def _upload(client, name: str, content: bytes = b"{}\n", purpose: str = "batch"):
    return client.files.create(file=(name, content, "application/jsonl"), purpose=purpose)


FILE_NOT_FOUND = {
    "message": "No such File object: file-nope",
    "type": "invalid_request_error",
    "param": "id",
    "code": "file_not_found",
}


def test_file_uploads_of_the_same_file_get_different_ids(fresh_client):
    assert _upload(fresh_client, "a.jsonl").id != _upload(fresh_client, "a.jsonl").id


def test_file_ids_are_deterministic_across_stub_instances():
    def ids() -> list[str]:
        test_client = create_stub_app().test_client()
        return [
            test_client.post(
                "/v1/files",
                headers=_auth(),
                data={"purpose": "batch", "file": (io.BytesIO(content), "a.jsonl")},
            ).get_json()["id"]
            for content in (b"one", b"two", b"one")
        ]

    first = ids()
    assert ids() == first
    assert len(set(first)) == 3


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"purpose": (None, "batch")}, "file", "missing_required_parameter"),
        ({"file": ("a.jsonl", b"{}")}, "purpose", "missing_required_parameter"),
        ({"file": ("a.jsonl", b"{}"), "purpose": (None, "fun")}, "purpose", "invalid_value"),
    ],
)
def test_file_upload_bad_request_is_400_naming_the_param(server, fields, param, code):
    response = requests.post(server.base_url + "/files", headers=_auth(), files=fields, timeout=5)
    assert response.status_code == 400
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)


def test_file_retrieve_returns_the_uploaded_object(fresh_client):
    uploaded = _upload(fresh_client, "a.jsonl", purpose="user_data")
    assert fresh_client.files.retrieve(uploaded.id) == uploaded


def test_file_content_returns_the_raw_bytes(fresh_client, fresh):
    content = bytes(range(256))
    uploaded = _upload(fresh_client, "blob.bin", content, purpose="assistants")
    assert fresh_client.files.content(uploaded.id).read() == content
    response = requests.get(f"{fresh.base_url}/files/{uploaded.id}/content", headers=_auth())
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_file_delete_answers_deleted_and_forgets_the_file(fresh_client):
    uploaded = _upload(fresh_client, "a.jsonl")
    deleted = fresh_client.files.delete(uploaded.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    with pytest.raises(openai.NotFoundError):
        fresh_client.files.retrieve(uploaded.id)


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/content")])
def test_unknown_file_id_is_404_file_not_found(server, method, suffix):
    response = requests.request(
        method, f"{server.base_url}/files/file-nope{suffix}", headers=_auth(), timeout=5
    )
    assert response.status_code == 404
    assert response.json() == {"error": FILE_NOT_FOUND}


def test_sdk_retrieve_of_unknown_file_raises_not_found_error(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve("file-nope")
    assert info.value.code == "file_not_found"


# --------------------------------------------------------------- new endpoints: shared rules


def test_retired_edits_endpoint_is_404_invalid_url(server):
    response = requests.post(
        server.base_url + "/edits",
        headers=_auth(),
        json={"model": "text-davinci-edit-001", "input": "teh cat", "instruction": "fix it"},
        timeout=5,
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "message": "Invalid URL (POST /v1/edits)",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/images/generations", {"json": {"prompt": "x"}}),
        ("POST", "/images/edits", {"files": {"image": ("a.png", b"x"), "prompt": (None, "x")}}),
        ("POST", "/audio/transcriptions", {"files": {"file": ("a.txt", b"x")}}),
        ("POST", "/audio/speech", {"json": {"model": "tts-1", "input": "x", "voice": "alloy"}}),
        ("POST", "/files", {"files": {"file": ("a.txt", b"x"), "purpose": (None, "batch")}}),
        ("GET", "/files/file-nope/content", {}),
    ],
)
def test_new_endpoints_require_authorization(server, method, path, kwargs):
    response = requests.request(method, server.base_url + path, timeout=5, **kwargs)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_models_catalogue_lists_image_and_audio_models(client):
    ids = {m.id for m in client.models.list().data}
    assert {"dall-e-2", "dall-e-3", "gpt-image-1", "whisper-1", "tts-1", "tts-1-hd"} <= ids


def test_models_option_replaces_the_catalogue_and_owner():
    with StubServer(models=("qwen-plus", "qwen-turbo"), owned_by="dashscope") as stub:
        other = OpenAI(api_key="sk-test", base_url=stub.base_url, max_retries=0, timeout=5)
        assert [(m.id, m.owned_by) for m in other.models.list().data] == [
            ("qwen-plus", "dashscope"),
            ("qwen-turbo", "dashscope"),
        ]


def test_fault_empty_images_have_no_data(client):
    assert client.images.generate(model="stub-empty", prompt="a red fox").data == []


def test_fault_empty_transcription_has_empty_text(client):
    result = client.audio.transcriptions.create(file=("a.txt", b"hello"), model="stub-empty")
    assert result.text == ""


def test_fault_empty_speech_has_an_empty_body(client):
    raw = _speech(client, model="stub-empty")
    assert (raw.status_code, raw.content) == (200, b"")


def test_fault_model_in_a_multipart_form_applies(client):
    with pytest.raises(openai.InternalServerError):
        client.audio.transcriptions.create(file=("a.txt", b"hello"), model="stub-500")


def test_request_log_keeps_multipart_fields_and_file_sizes_not_bytes(client, server):
    secret = b"SECRET-AUDIO-BYTES " * 10
    server.reset()
    client.audio.transcriptions.create(
        file=("talk.mp3", secret, "audio/mpeg"), model="whisper-1", language="en"
    )
    (entry,) = server.requests_seen()
    assert entry["body"] == {"model": "whisper-1", "language": "en"}
    assert entry["files"] == [
        {"field": "file", "filename": "talk.mp3", "content_type": "audio/mpeg", "size": 190}
    ]
    assert "SECRET" not in json.dumps(entry)


def test_request_log_of_a_json_request_has_no_files(client, server):
    server.reset()
    client.models.list()
    assert server.requests_seen()[0]["files"] == []


def test_oversize_upload_is_413_openai_error():
    stub = StubServer()
    stub.app.config["MAX_CONTENT_LENGTH"] = 1024
    with stub:
        response = requests.post(
            stub.base_url + "/files",
            headers=_auth(),
            files={"file": ("big.bin", b"x" * 5000), "purpose": (None, "batch")},
            timeout=5,
        )
        sent = int(response.request.headers["Content-Length"])
        assert response.status_code == 413
        assert response.json() == {
            "error": {
                "message": f"Maximum content size limit (1024) exceeded ({sent} bytes read)",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }


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
        [sys.executable, "-m", "stub_upstream", "--port", "0"],
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
