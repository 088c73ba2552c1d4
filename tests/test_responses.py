"""The Responses API on the /api door and /v1 (Flask test client), the bundled stub as its
upstream over real HTTP: envelopes, typed events, usage rows, refused ids."""

from __future__ import annotations

import json

from sqlalchemy import select

from proxy import storage
from tests.conftest import create_account


def usage_row(app, last_id: str):
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(
            select(storage.usage).where(storage.usage.c.id == int(last_id))
        ).one()


def bearer(account) -> dict:
    return {"Authorization": f"Bearer {account['key']}:{account['secret']}"}


def test_responses_on_api_answer_in_the_envelope_with_tokens_in_the_usage_row(app, call, stub):
    envelope = call("v1/responses", {"input": "hello there"})
    assert envelope["error_code"] == "0000", envelope
    assert envelope["response"]["object"] == "response"
    assert envelope["response"]["output"][0]["content"][0]["text"] == "stub reply: hello there"
    row = usage_row(app, envelope["last_id"])
    assert (row.method, row.prompt_tokens, row.completion_tokens, row.total_tokens) == (
        "v1/responses",
        2,
        4,
        6,
    )
    sent = stub.requests_seen("/v1/responses")[-1]["body"]
    assert sent == {"input": "hello there", "model": "gpt-4o-mini"}  # the chat default model


def test_a_responses_stream_on_api_is_envelopes_of_the_typed_events(client, account):
    response = client.get(
        "/api",
        query_string={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/responses",
            "_o_args": json.dumps({"input": "a b", "stream": True}),
        },
    )
    events = [
        json.loads(line[len("data: ") :])
        for line in response.get_data(as_text=True).splitlines()
        if line.startswith("data: ")
    ]
    assert [e["status"] for e in events][:2] == ["START", "MIDDLE"]
    assert events[0]["response"]["type"] == "response.created"
    end = events[-1]
    assert (end["status"], end["error_code"]) == ("END", "0000")
    assert end["response"]["type"] == "response.completed"
    assert end["response"]["response"]["usage"]["total_tokens"] == 6


def test_a_responses_stream_on_v1_names_each_event_and_sends_no_done(client, account):
    body = client.post(
        "/v1/responses", json={"input": "a b", "stream": True}, headers=bearer(account)
    ).get_data(as_text=True)
    blocks = [block for block in body.split("\n\n") if block]
    assert blocks[0].startswith("event: response.created\ndata: {")
    assert blocks[-1].startswith("event: response.completed\ndata: {")
    assert "[DONE]" not in body
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert event_line[len("event: ") :] == json.loads(data_line[len("data: ") :])["type"]


def test_a_responses_stream_is_metered_with_its_tokens(app, client, account):
    response = client.post(
        "/v1/responses", json={"input": "a b", "stream": True}, headers=bearer(account)
    )
    response.get_data()
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(
            select(storage.usage).where(storage.usage.c.method == "v1/responses")
        ).one()
    assert (row.error_code, row.charged, row.prompt_tokens, row.completion_tokens) == (
        "0000",
        True,
        2,
        4,
    )


def test_a_response_id_that_is_not_one_is_4003_before_any_upstream_call(call, stub):
    envelope = call("v1/responses/retrieve", {"response_id": "resp_x/../../models"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.response_id: must be a response id" in envelope["reason"]
    assert [e for e in stub.requests_seen() if e["path"].startswith("/v1/responses")] == []


def test_an_unknown_response_is_an_openai_404_on_v1(client, account):
    response = client.get("/v1/responses/resp_nothing", headers=bearer(account))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "4003"
    assert (
        "resp_nothing is not a response of this account" in response.get_json()["error"]["message"]
    )


def test_responses_without_input_name_the_field(call):
    envelope = call("v1/responses", {"model": "gpt-4o-mini"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.input" in envelope["reason"]


def test_another_accounts_response_is_not_found_without_an_upstream_call(
    client, runner, account, stub
):
    created = client.post("/v1/responses", json={"input": "mine"}, headers=bearer(account))
    response_id = created.get_json()["id"]
    other = create_account(runner, "other")
    stub.reset()
    for verb, path in (
        ("get", f"/v1/responses/{response_id}"),
        ("get", f"/v1/responses/{response_id}/input_items"),
        ("delete", f"/v1/responses/{response_id}"),
    ):
        refused = getattr(client, verb)(path, headers=bearer(other))
        assert refused.status_code == 404, path
        assert refused.get_json()["error"]["code"] == "4003"
        assert "is not a response of this account" in refused.get_json()["error"]["message"]
    assert stub.requests_seen() == []
    assert client.get(f"/v1/responses/{response_id}", headers=bearer(account)).status_code == 200


def test_a_streamed_response_is_its_accounts_own(client, runner, account):
    body = client.post(
        "/v1/responses", json={"input": "streamed", "stream": True}, headers=bearer(account)
    ).get_data(as_text=True)
    first = json.loads(body.split("\n\n")[0].split("\n")[1][len("data: ") :])
    response_id = first["response"]["id"]
    other = create_account(runner, "other")
    assert client.get(f"/v1/responses/{response_id}", headers=bearer(other)).status_code == 404
    assert client.get(f"/v1/responses/{response_id}", headers=bearer(account)).status_code == 200


def test_a_deleted_response_is_forgotten(call, stub):
    response_id = call("v1/responses", {"input": "bye"})["response"]["id"]
    assert call("v1/responses/delete", {"response_id": response_id})["error_code"] == "0000"
    stub.reset()
    envelope = call("v1/responses/retrieve", {"response_id": response_id})
    assert envelope["error_code"] == "4003"
    assert "is not a response of this account" in envelope["reason"]
    assert stub.requests_seen() == []
