"""Conversation memory on both doors: chat_id (chatId, thread_id) sends the stored history
before the new messages and stores the answer; custom_uid is recorded; `flask chats`."""

from __future__ import annotations

import json

import pytest

from proxy.chats import estimated_tokens, newest_within
from tests.conftest import CHAT_ARGS, create_account


def chat_bodies(stub) -> list[dict]:
    return [r["body"] for r in stub.requests_seen() if r["path"] == "/v1/chat/completions"]


def ask(call, content: str, **memory) -> dict:
    envelope = call(
        "v1/chat/completions", {"messages": [{"role": "user", "content": content}], **memory}
    )
    assert envelope["error_code"] == "0000", envelope
    return envelope


def test_a_second_turn_reaches_the_upstream_with_the_first_exchange(call, stub):
    ask(call, "my name is Li", chat_id="c1")
    ask(call, "what is my name?", chat_id="c1")
    assert chat_bodies(stub)[-1]["messages"] == [
        {"role": "user", "content": "my name is Li"},
        {"role": "assistant", "content": "stub reply: my name is Li"},
        {"role": "user", "content": "what is my name?"},
    ]


@pytest.mark.parametrize("alias", ["chatId", "thread_id"])
def test_the_aliases_name_the_same_conversation_and_never_reach_the_upstream(call, stub, alias):
    ask(call, "first", chat_id="c2")
    ask(call, "second", **{alias: "c2"})
    body = chat_bodies(stub)[-1]
    assert len(body["messages"]) == 3
    assert not {"chat_id", "chatId", "thread_id", "custom_uid", "customUid"} & set(body)


def test_conversations_are_per_account(call, stub, runner, client):
    ask(call, "secret plan", chat_id="shared-name")
    other = create_account(runner, "other")
    client.get(
        "/api",
        query_string={
            "key": other["key"],
            "secret": other["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(
                {"messages": [{"role": "user", "content": "hi"}], "chat_id": "shared-name"}
            ),
        },
    )
    assert chat_bodies(stub)[-1]["messages"] == [{"role": "user", "content": "hi"}]


# What either bound below lets through on the third turn: the second exchange only.
LAST_EXCHANGE_THEN_THIRD_TURN = [
    {"role": "user", "content": "two"},
    {"role": "assistant", "content": "stub reply: two"},
    {"role": "user", "content": "three"},
]


def third_turn_sent(app, stub) -> list[dict]:
    """The messages the upstream got for the third of three turns "one", "two", "three"."""
    account = create_account(app.test_cli_runner())
    client = app.test_client()
    for content in ("one", "two", "three"):
        o_args = {"messages": [{"role": "user", "content": content}], "chat_id": "c"}
        client.get(
            "/api",
            query_string={
                "key": account["key"],
                "secret": account["secret"],
                "method": "v1/chat/completions",
                "_o_args": json.dumps(o_args),
            },
        )
    return chat_bodies(stub)[-1]["messages"]


def test_history_is_bounded_by_chat_memory_max_messages(make_app, stub):
    app = make_app(CHAT_MEMORY_MAX_MESSAGES=2)
    assert third_turn_sent(app, stub) == LAST_EXCHANGE_THEN_THIRD_TURN


def test_history_is_bounded_by_chat_memory_max_tokens_newest_first(make_app, stub):
    # "two" is 4 + 1 estimated tokens and "stub reply: two" 4 + 4: 13 holds the last exchange
    app = make_app(CHAT_MEMORY_MAX_TOKENS=13)
    assert third_turn_sent(app, stub) == LAST_EXCHANGE_THEN_THIRD_TURN


def test_token_estimate_counts_four_latin_characters_or_one_cjk_character_a_token():
    assert estimated_tokens("hello world") == 4 + 3  # 11 characters
    assert estimated_tokens("你好世界") == 4 + 4
    assert estimated_tokens([{"type": "text", "text": "abcd"}, {"type": "image_url"}]) == 4 + 1 + 85


def test_newest_within_keeps_the_newest_messages_that_fit():
    messages = [{"content": "aaaa"}, {"content": "bbbb"}, {"content": "cccc"}]  # 5 tokens each
    assert newest_within(messages, 10) == messages[1:]
    assert newest_within(messages, 9) == messages[2:]
    assert newest_within(messages, 4) == []
    assert newest_within(messages, 0) == messages


def test_a_failed_call_is_not_remembered(call, stub):
    failed = call(
        "v1/chat/completions",
        {"model": "stub-500", "messages": [{"role": "user", "content": "lost"}], "chat_id": "f"},
    )
    assert failed["error_code"] == "4002"
    ask(call, "kept", chat_id="f")
    assert chat_bodies(stub)[-1]["messages"] == [{"role": "user", "content": "kept"}]


def test_chat_id_on_another_method_is_4003(call):
    envelope = call("v1/embeddings", {"input": "x", "chat_id": "c"})
    assert envelope["error_code"] == "4003"
    assert "chat_id is served for v1/chat/completions only" in envelope["reason"]


def test_chats_commands_list_show_and_delete_with_custom_uid(call, runner, account):
    ask(call, "hello", chat_id="c9", customUid="user-7")
    listed = json.loads(runner.invoke(args=["chats", "list", "--json"]).output)["chats"]
    assert [(c["chat_id"], c["custom_uid"], c["messages"]) for c in listed] == [("c9", "user-7", 2)]
    shown = json.loads(runner.invoke(args=["chats", "show", account["key"], "c9", "--json"]).output)
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("user", "hello"),
        ("assistant", "stub reply: hello"),
    ]
    deleted = json.loads(
        runner.invoke(args=["chats", "delete", account["key"], "c9", "--json"]).output
    )
    assert deleted == {"chat_id": "c9", "deleted_messages": 2}
    assert json.loads(runner.invoke(args=["chats", "list", "--json"]).output) == {"chats": []}


def test_a_streamed_answer_is_remembered(client, account, stub):
    for content in ("stream me", "again"):
        client.get(
            "/api",
            query_string={
                "key": account["key"],
                "secret": account["secret"],
                "method": "v1/chat/completions",
                "_o_args": json.dumps(
                    {
                        "stream": True,
                        "messages": [{"role": "user", "content": content}],
                        "chat_id": "s",
                    }
                ),
            },
        ).get_data()
    assert chat_bodies(stub)[-1]["messages"][:2] == [
        {"role": "user", "content": "stream me"},
        {"role": "assistant", "content": "stub reply: stream me"},
    ]


def test_chat_id_with_a_final_newline_is_4003(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "chat_id": "c\n"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.chat_id must be 1-128 letters, digits or . _ - : @" in envelope["reason"]
