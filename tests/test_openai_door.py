"""The official openai SDK, unchanged, against the gateway served by gunicorn on a real socket
(`base_url` = the gateway's /v1, `api_key` = "KEY:SECRET"), the bundled stub as upstream; the
same accounts, quota and usage log as /api."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest
import requests

from tests.conftest import TINY_PNG_B64, WEATHER_TOOL
from tests.served import ServedGateway, wait_until


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("openai-door")
    served = ServedGateway.on_stub(
        workdir,
        stub,
        UPSTREAM_MAX_RETRIES="0",
    ).start()
    yield served
    served.stop()


def sdk(gateway, account: dict) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.base + "/v1",
        api_key=f"{account['key']}:{account['secret']}",
        max_retries=0,
        timeout=30,
    )


@pytest.fixture(scope="module")
def account(gateway):
    return gateway.flask_json("accounts", "create", "sdk")


@pytest.fixture(scope="module")
def client(gateway, account):
    return sdk(gateway, account)


def test_chat_through_the_sdk(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "你好"}]
    )
    assert completion.choices[0].message.content == "stub reply: 你好"
    assert completion.usage.total_tokens > 0


def test_a_tool_call_through_the_sdk(client):
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Paris"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')


def test_a_streamed_tool_call_through_the_sdk_accumulates(client):
    with client.beta.chat.completions.stream(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "杭州"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    ) as stream:
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "杭州"}')


def test_embeddings_through_the_sdk(client):
    result = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) > 0


def test_models_through_the_sdk(client):
    assert "gpt-4o-mini" in [model.id for model in client.models.list()]


def test_moderations_through_the_sdk(client):
    result = client.moderations.create(model="omni-moderation-latest", input="hello")
    assert len(result.results) == 1


def test_speech_through_the_sdk_is_binary_audio(client):
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    assert speech.content.startswith(b"ID3")


def test_transcription_of_a_multipart_upload_through_the_sdk(client):
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("hello.mp3", "bonjour à tous".encode(), "audio/mpeg")
    )
    assert text.text == "bonjour à tous"


def test_image_edit_of_a_multipart_upload_through_the_sdk(client):
    image = base64.b64decode(TINY_PNG_B64)
    result = client.images.edit(
        model="dall-e-2", image=("cat.png", image, "image/png"), prompt="add a hat"
    )
    assert len(result.data) == 1


def test_files_upload_list_retrieve_content_and_delete_through_the_sdk(client):
    uploaded = client.files.create(file=("notes.txt", b"line one\n"), purpose="assistants")
    assert uploaded.filename == "notes.txt"
    assert uploaded.id in [entry.id for entry in client.files.list()]
    assert client.files.retrieve(uploaded.id).bytes == 9
    assert client.files.content(uploaded.id).content == b"line one\n"
    assert client.files.delete(uploaded.id).deleted is True


def test_a_wrong_secret_raises_authentication_error(gateway, account):
    wrong = sdk(gateway, {**account, "secret": "not-the-secret"})
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.models.list()
    assert raised.value.status_code == 401
    assert raised.value.code == "4005"


def test_a_key_without_its_secret_is_refused_with_a_reason(gateway, account):
    response = requests.get(
        gateway.base + "/v1/models",
        headers={"Authorization": f"Bearer {account['key']}"},
        timeout=30,
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "4014"
    assert "KEY:SECRET" in response.json()["error"]["message"]


def test_the_api_key_header_is_accepted(gateway, account):
    response = requests.get(
        gateway.base + "/v1/models",
        headers={"api-key": f"{account['key']}:{account['secret']}"},
        timeout=30,
    )
    assert response.status_code == 200
    assert response.headers["X-Error-Code"] == "0000"


def test_quota_exhausted_raises_rate_limit_error(gateway):
    limited = gateway.flask_json("accounts", "create", "one-call", "--daily-quota", "1")
    client = sdk(gateway, limited)
    client.embeddings.create(model="text-embedding-3-small", input="first")
    with pytest.raises(openai.RateLimitError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="second")
    assert raised.value.code == "4013"
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_calls_through_v1_and_api_count_against_one_quota(gateway):
    shared = gateway.flask_json("accounts", "create", "two-doors", "--daily-quota", "2")
    client = sdk(gateway, shared)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "1"}])
    legacy = requests.get(
        gateway.base + "/api",
        params={
            "key": shared["key"],
            "secret": shared["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps({"messages": [{"role": "user", "content": "2"}]}),
        },
        timeout=30,
    ).json()
    assert (legacy["error_code"], legacy["api_info"].split(" ")[0]) == ("0000", "today:2")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "3"}]
        )
    report = gateway.flask_json("usage", shared["key"])
    assert (report["calls"], report["charged"], report["by_code"]) == (
        3,
        2,
        {"0000": 2, "4013": 1},
    )


def test_an_unknown_v1_path_is_an_openai_404(gateway, account):
    response = requests.post(
        gateway.base + "/v1/nope",
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
        json={},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "4010"


@pytest.mark.parametrize("path", ["/v1", "/v1/", "/v1/nope%0A", "/v1/a%0Ab/c"])
def test_the_v1_root_and_paths_with_a_newline_are_openai_404s(gateway, account, path):
    response = requests.get(
        gateway.base + path,
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
        timeout=30,
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "4010"


def test_an_upstream_failure_is_a_502_with_the_upstream_error_inside(client):
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(
            model="stub-500", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == 502
    assert raised.value.code == "4002"
    assert raised.value.body["upstream_error"]["message"]


def test_arguments_the_upstream_refuses_are_a_400_with_the_upstream_error_inside(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.moderations.create(model="omni-moderation-latest", input=[])
    assert raised.value.code == "4003"
    assert raised.value.body["upstream_error"]["code"] == "invalid_value"


SLOW_WORDS = "one two three four five six"  # stub-stream-slow sends one word per 0.5 s


def test_a_stream_reaches_the_client_chunk_by_chunk_before_the_upstream_ends(client):
    started = time.perf_counter()
    arrivals, text = [], ""
    for chunk in client.chat.completions.create(
        model="stub-stream-slow",
        stream=True,
        messages=[{"role": "user", "content": SLOW_WORDS}],
    ):
        arrivals.append(time.perf_counter() - started)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "stub reply: " + SLOW_WORDS
    # the upstream spaces its chunks 0.5 s apart: the first arrives seconds before the last
    assert arrivals[-1] - arrivals[0] > 2.0, arrivals


def test_a_stream_is_metered_from_the_upstream_usage_the_client_did_not_ask_for(gateway):
    account = gateway.flask_json("accounts", "create", "stream-usage")
    chunks = list(
        sdk(gateway, account).chat.completions.create(
            model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "a b c"}]
        )
    )
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    report = gateway.flask_json("usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1})
    assert report["tokens"]["total"] > 0


def test_a_stream_that_asks_for_usage_gets_the_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "a b c"}],
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens > 0


def test_an_api_stream_is_server_sent_envelopes_start_middle_end(gateway, account):
    response = requests.get(
        gateway.base + "/api",
        params={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(
                {"stream": True, "messages": [{"role": "user", "content": "a b"}]}
            ),
        },
        stream=True,
        timeout=30,
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Request-Id"].startswith("gw-1.")
    events = [
        json.loads(line[len("data: ") :])
        for line in response.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]
    statuses = [event["status"] for event in events]
    assert statuses[0] == "START" and statuses[-1] == "END"
    assert set(statuses[1:-1]) <= {"MIDDLE"}
    text = "".join(
        event["response"]["choices"][0]["delta"].get("content") or "" for event in events
    )
    assert text == "stub reply: a b"
    end = events[-1]
    assert end["error_code"] == "0000"
    assert end["api_info"].startswith("today:")


def test_an_abandoned_stream_is_stopped_and_charged_once_a_chunk_was_delivered(gateway):
    account = gateway.flask_json("accounts", "create", "abandons")
    response = requests.post(
        gateway.base + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
        json={
            "model": "stub-stream-slow",
            "stream": True,
            "messages": [{"role": "user", "content": SLOW_WORDS * 4}],
        },
        stream=True,
        timeout=30,
    )
    lines = response.iter_lines(decode_unicode=True)
    assert next(line for line in lines if line.startswith("data: "))
    response.close()  # the client goes away mid-stream
    wait_until(
        lambda: gateway.flask_json("usage", account["key"])["calls"] == 1,
        timeout=60,
        message="the abandoned stream was never settled",
    )
    report = gateway.flask_json("usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1})


def test_a_chat_id_second_turn_through_the_sdk_reaches_the_upstream_with_the_first(client, stub):
    for content in ("my name is Li", "what is my name?"):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            extra_body={"chatId": "sdk-chat", "customUid": "u-1"},
        )
    sent = [r["body"] for r in stub.requests_seen() if r["path"] == "/v1/chat/completions"][-1]
    assert sent["messages"] == [
        {"role": "user", "content": "my name is Li"},
        {"role": "assistant", "content": "stub reply: my name is Li"},
        {"role": "user", "content": "what is my name?"},
    ]
    assert "chatId" not in sent and "customUid" not in sent


def test_responses_create_through_the_sdk_answers_and_is_metered_with_its_tokens(gateway):
    account = gateway.flask_json("accounts", "create", "responses-plain")
    response = sdk(gateway, account).responses.create(model="gpt-4o-mini", input="hello there")
    assert response.output_text == "stub reply: hello there"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 4)
    report = gateway.flask_json("usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1})
    assert report["tokens"] == {"prompt": 2, "completion": 4, "total": 6}


def test_responses_create_streamed_through_the_sdk_passes_the_typed_events_and_is_metered(
    gateway,
):
    account = gateway.flask_json("accounts", "create", "responses-stream")
    events = list(
        sdk(gateway, account).responses.create(model="gpt-4o-mini", input="a b c", stream=True)
    )
    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "stub reply: a b c" == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))
    report = gateway.flask_json("usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1})
    assert report["tokens"] == {"prompt": 3, "completion": 5, "total": 8}


def test_a_responses_stream_reaches_the_client_event_by_event(client):
    started = time.perf_counter()
    arrivals = []
    for _ in client.responses.create(model="stub-stream-slow", input=SLOW_WORDS, stream=True):
        arrivals.append(time.perf_counter() - started)
    # the upstream spaces its events 0.5 s apart: the first arrives seconds before the last
    assert arrivals[-1] - arrivals[0] > 2.0, arrivals


def test_a_stored_response_is_retrieved_listed_and_deleted_through_the_sdk(client):
    created = client.responses.create(model="gpt-4o-mini", input="keep me")
    assert client.responses.retrieve(created.id).output_text == "stub reply: keep me"
    items = client.responses.input_items.list(created.id, limit=5)
    assert [item.content[0].text for item in items.data] == ["keep me"]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
