"""The official anthropic SDK, unchanged, against the gateway served by gunicorn on a real
socket (`base_url` = the gateway, `api_key` = "KEY:SECRET"), the bundled stub as the chat
upstream: `POST /v1/messages` on the same accounts, quota and usage log as the other doors."""

from __future__ import annotations

import json

import anthropic
import pytest
import requests

from tests.served import ServedGateway

METRICS_TOKEN = "anthropic-door-metrics"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub):
    served = ServedGateway.on_stub(
        tmp_path_factory.mktemp("anthropic-door"),
        stub,
        UPSTREAM_MAX_RETRIES="0",
        METRICS_TOKEN=METRICS_TOKEN,
    ).start()
    yield served
    served.stop()


def sdk(gateway, account: dict) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.base,
        api_key=f"{account['key']}:{account['secret']}",
        max_retries=0,
        timeout=30,
    )


def ask(client: anthropic.Anthropic, text: str, model: str = "gpt-4o-mini", **options):
    return client.messages.create(
        model=model,
        max_tokens=64,
        messages=[{"role": "user", "content": text}],
        **options,
    )


def raw_post(gateway, headers: dict, body: dict | None = None) -> requests.Response:
    body = body or {
        "model": "gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return requests.post(gateway.base + "/v1/messages", json=body, headers=headers, timeout=30)


def test_messages_create_answers_a_message(gateway):
    account = gateway.flask_json("accounts", "create", "plain")
    message = ask(sdk(gateway, account), "你好", system="be brief")
    assert (message.type, message.role, message.stop_reason) == ("message", "assistant", "end_turn")
    assert [(block.type, block.text) for block in message.content] == [("text", "stub reply: 你好")]
    assert message.id.startswith("msg_")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_messages_create_and_its_stream_are_in_the_usage_report(gateway):
    account = gateway.flask_json("accounts", "create", "report")
    client = sdk(gateway, account)
    plain = ask(client, "one two")
    with client.messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "a b c"}]
    ) as stream:
        streamed = stream.get_final_message()
    report = gateway.flask_json("usage", account["key"])
    assert (report["calls"], report["charged"], report["by_code"]) == (2, 2, {"0000": 2})
    expected_in = plain.usage.input_tokens + streamed.usage.input_tokens
    expected_out = plain.usage.output_tokens + streamed.usage.output_tokens
    assert (report["tokens"]["prompt"], report["tokens"]["completion"]) == (
        expected_in,
        expected_out,
    )


def test_a_streamed_message_is_anthropics_event_sequence(gateway):
    account = gateway.flask_json("accounts", "create", "stream")
    events = list(ask(sdk(gateway, account), "a b c", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    text = "".join(event.delta.text for event in events if event.type == "content_block_delta")
    assert text == "stub reply: a b c"
    final = events[-2]
    assert final.delta.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_the_stream_helper_accumulates_the_message(gateway):
    account = gateway.flask_json("accounts", "create", "helper")
    with sdk(gateway, account).messages.stream(
        model="gpt-4o-mini", max_tokens=64, messages=[{"role": "user", "content": "x y"}]
    ) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text == "stub reply: x y"
    assert message.content[0].text == text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def test_a_tool_the_model_must_use_comes_back_as_a_tool_use_block(gateway):
    account = gateway.flask_json("accounts", "create", "tools")
    message = ask(sdk(gateway, account), "Paris", tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})
    assert block.id.startswith("call_stub_")


def test_a_streamed_tool_use_is_accumulated_by_the_stream_helper(gateway):
    account = gateway.flask_json("accounts", "create", "streamed-tools")
    with sdk(gateway, account).messages.stream(
        model="gpt-4o-mini",
        max_tokens=64,
        messages=[{"role": "user", "content": "杭州"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    [block] = message.content
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "杭州"})


def test_a_tool_result_turn_is_answered_with_text(gateway):
    account = gateway.flask_json("accounts", "create", "tool-result")
    message = sdk(gateway, account).messages.create(
        model="gpt-4o-mini",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Paris"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
            },
        ],
    )
    assert message.stop_reason == "end_turn"
    assert [(b.type, b.text) for b in message.content] == [("text", "stub reply: Paris")]


def test_a_wrong_secret_is_an_authentication_error_401(gateway):
    account = gateway.flask_json("accounts", "create", "wrong-secret")
    client = sdk(gateway, {**account, "secret": "not-the-secret"})
    with pytest.raises(anthropic.AuthenticationError) as raised:
        ask(client, "hi")
    assert raised.value.status_code == 401
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "authentication_error"
    assert raised.value.body["error"]["code"] == "4005"


def test_over_quota_is_a_rate_limit_error_429_not_retried(gateway):
    account = gateway.flask_json("accounts", "create", "one-call", "--daily-quota", "1")
    client = sdk(gateway, account)
    ask(client, "first")
    with pytest.raises(anthropic.RateLimitError) as raised:
        ask(client, "second")
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert raised.value.body["error"]["code"] == "4013"
    assert raised.value.response.headers["x-should-retry"] == "false"


def test_x_api_key_header_is_the_key(gateway):
    account = gateway.flask_json("accounts", "create", "x-api-key")
    response = raw_post(
        gateway,
        {
            "x-api-key": f"{account['key']}:{account['secret']}",
            "anthropic-version": "2023-06-01",
        },
    )
    assert response.status_code == 200
    assert response.json()["content"] == [{"type": "text", "text": "stub reply: hi"}]
    assert response.headers["request-id"] == response.headers["X-Request-Id"]


def test_no_key_is_401_in_anthropics_shape(gateway):
    response = raw_post(gateway, {"anthropic-version": "2023-06-01"})
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert (body["error"]["type"], body["error"]["code"]) == ("authentication_error", "4014")
    assert body["request_id"] == response.headers["request-id"]


def test_a_missing_anthropic_version_is_400(gateway):
    account = gateway.flask_json("accounts", "create", "no-version")
    response = raw_post(gateway, {"x-api-key": f"{account['key']}:{account['secret']}"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "4014")
    assert "anthropic-version" in error["message"]


def test_a_missing_max_tokens_is_400_naming_it(gateway):
    account = gateway.flask_json("accounts", "create", "no-max-tokens")
    with pytest.raises(anthropic.BadRequestError) as raised:
        sdk(gateway, account).messages.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=anthropic.omit,
        )
    error = raised.value.body["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "4003")
    assert "max_tokens" in error["message"]


def test_a_get_is_405_in_anthropics_shape(gateway):
    response = requests.get(gateway.base + "/v1/messages", timeout=30)
    assert response.status_code == 405
    assert response.headers["Allow"] == "OPTIONS, POST"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_v1_messages_is_listed_in_the_methods_and_the_openapi_document(gateway):
    methods = requests.get(gateway.base + "/api/methods", timeout=30).json()["methods"]
    listed = {entry["method"]: entry for entry in methods}
    assert listed["v1/messages"]["platform"] == "anthropic"
    document = requests.get(gateway.base + "/openapi.json", timeout=30).json()
    assert "post" in document["paths"]["/v1/messages"]


def test_the_api_door_answers_v1_messages_in_the_envelope(gateway):
    account = gateway.flask_json("accounts", "create", "envelope")
    envelope = requests.get(
        gateway.base + "/api",
        params={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/messages",
            "_o_args": json.dumps(
                {
                    "model": "gpt-4o-mini",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "hi"}],
                }
            ),
        },
        timeout=30,
    ).json()
    assert (envelope["error_code"], envelope["api_type"]) == ("0000", "anthropic")
    assert envelope["response"]["content"] == [{"type": "text", "text": "stub reply: hi"}]


def test_an_upstream_failure_is_an_api_error_with_the_upstreams_error(gateway):
    account = gateway.flask_json("accounts", "create", "upstream-500")
    with pytest.raises(anthropic.InternalServerError) as raised:
        sdk(gateway, account).messages.create(
            model="stub-500", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 502
    error = raised.value.body["error"]
    assert (error["type"], error["code"]) == ("api_error", "4002")
    assert error["upstream_error"]["type"] == "server_error"


def test_a_stream_refused_before_its_first_event_is_an_error_answer(gateway):
    account = gateway.flask_json("accounts", "create", "stream-garbage")
    with pytest.raises(anthropic.APIStatusError) as raised:
        list(ask(sdk(gateway, account), "hi", stream=True, model="stub-garbage"))
    assert raised.value.status_code == 502
    assert raised.value.body["error"]["code"] == "4002"
    report = gateway.flask_json("usage", account["key"])
    assert (report["calls"], report["charged"]) == (1, 0)


def test_x_gateway_cache_yes_answers_the_same_message_from_the_cache(gateway):
    account = gateway.flask_json("accounts", "create", "cache")
    headers = {
        "x-api-key": f"{account['key']}:{account['secret']}",
        "anthropic-version": "2023-06-01",
        "X-Gateway-Cache": "yes",
    }
    first, second = raw_post(gateway, headers), raw_post(gateway, headers)
    assert (first.headers["X-Gateway-Cache"], second.headers["X-Gateway-Cache"]) == ("miss", "hit")
    assert second.json() == first.json()


def test_an_empty_answer_is_an_empty_message_coded_2000(gateway):
    account = gateway.flask_json("accounts", "create", "empty")
    headers = {
        "x-api-key": f"{account['key']}:{account['secret']}",
        "anthropic-version": "2023-06-01",
    }
    body = {"model": "stub-empty", "max_tokens": 8, "messages": [{"role": "user", "content": "?"}]}
    response = raw_post(gateway, headers, body)
    assert (response.status_code, response.headers["X-Error-Code"]) == (200, "2000")
    assert response.json()["content"] == []


def test_its_calls_are_counted_in_the_metrics_by_the_anthropic_door(gateway):
    account = gateway.flask_json("accounts", "create", "metrics")
    ask(sdk(gateway, account), "counted")
    text = requests.get(
        gateway.base + "/metrics",
        headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
        timeout=30,
    ).text
    assert 'door="anthropic",method="v1/messages"' in text
