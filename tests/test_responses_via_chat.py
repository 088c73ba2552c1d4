"""v1/responses for an upstream that speaks chat completions only (OPENAI_RESPONSES_API=chat,
or `responses = "chat"` in UPSTREAMS_FILE): translated to a chat call and back, the bundled
stub answering the chat call over real HTTP."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from proxy import storage
from proxy.upstreams import load_upstreams_file
from tests.conftest import create_account


@pytest.fixture
def via_chat(make_app):
    app = make_app(OPENAI_RESPONSES_API="chat")
    return app, app.test_client(), create_account(app.test_cli_runner())


def bearer(account) -> dict:
    return {"Authorization": f"Bearer {account['key']}:{account['secret']}"}


def test_a_text_response_is_answered_by_a_chat_call_in_the_responses_shape(via_chat, stub):
    app, client, account = via_chat
    answer = client.post(
        "/v1/responses",
        json={"input": "hello there", "instructions": "be brief", "max_output_tokens": 50},
        headers=bearer(account),
    ).get_json()
    assert answer["object"] == "response" and answer["status"] == "completed"
    assert answer["id"].startswith("resp_chatcmpl-stub-")
    assert answer["output"][0]["content"][0]["text"] == "stub reply: hello there"
    assert answer["usage"]["output_tokens"] == 4
    assert stub.requests_seen("/v1/responses") == []
    (sent,) = [entry["body"] for entry in stub.requests_seen("/v1/chat/completions")]
    assert sent == {
        "model": "gpt-4o-mini",
        "max_tokens": 50,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    }


def test_a_translated_stream_is_the_responses_events_with_usage_metered(via_chat, stub):
    app, client, account = via_chat
    body = client.post(
        "/v1/responses", json={"input": "a b", "stream": True}, headers=bearer(account)
    ).get_data(as_text=True)
    events = [
        json.loads(block.split("\n")[1][len("data: ") :]) for block in body.split("\n\n") if block
    ]
    types = [event["type"] for event in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "stub reply: a b" == events[-1]["response"]["output"][0]["content"][0]["text"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert stub.requests_seen("/v1/responses") == []
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(select(storage.usage)).one()
    assert (row.error_code, row.prompt_tokens, row.completion_tokens) == ("0000", 2, 4)


def test_a_cut_translated_answer_is_incomplete(via_chat):
    _, client, account = via_chat
    answer = client.post(
        "/v1/responses",
        json={"input": "one two three", "max_output_tokens": 1},
        headers=bearer(account),
    ).get_json()
    assert answer["status"] == "incomplete"
    assert answer["incomplete_details"] == {"reason": "max_output_tokens"}


def test_tools_are_not_translated_and_name_the_field(via_chat, stub):
    _, client, account = via_chat
    refused = client.post(
        "/v1/responses",
        json={"input": "hi", "tools": [{"type": "web_search"}]},
        headers=bearer(account),
    )
    assert refused.status_code == 400
    assert "_o_args.tools is not served by this upstream" in refused.get_json()["error"]["message"]
    assert stub.requests_seen() == []


def test_a_non_text_input_item_is_4003_naming_it(via_chat):
    _, client, account = via_chat
    refused = client.post(
        "/v1/responses",
        json={"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
        headers=bearer(account),
    )
    assert refused.status_code == 400
    assert "_o_args.input[0] is not a text message" in refused.get_json()["error"]["message"]


def test_the_upstreams_file_takes_responses_chat_and_refuses_other_modes(tmp_path):
    path = tmp_path / "upstreams.toml"
    table = '[[upstream]]\nname = "q"\nbase_url = "http://h/v1"\napi_key_env = "K"\n'
    path.write_text(table + 'models = ["q-*"]\nresponses = "chat"\n')
    (member,) = load_upstreams_file(
        path, default_timeout_seconds=5, default_max_retries=0, environ={"K": "k"}
    )
    assert member.responses_via_chat is True
    path.write_text(table + 'models = ["q-*"]\nresponses = "yes"\n')
    with pytest.raises(ValueError, match='responses must be "native"'):
        load_upstreams_file(
            path, default_timeout_seconds=5, default_max_retries=0, environ={"K": "k"}
        )
