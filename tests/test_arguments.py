"""proxy/arguments.py: one call's `_o_args` read by ArgumentRules.read (pure logic, no HTTP)."""

from __future__ import annotations

import pytest

from proxy.arguments import ArgumentRules
from proxy.catalog import find_method
from proxy.chats import Conversation
from proxy.errors import GatewayError
from proxy.uploads import FileUpload

RULES = ArgumentRules(
    max_o_args_bytes=1000,
    max_o_args_depth=4,
    max_upload_bytes=30,
    max_messages=2,
    default_models={"v1/chat/completions": "default-chat"},
)
CHAT = find_method("v1/chat/completions")
HI = [{"role": "user", "content": "hi"}]


def test_read_fills_the_default_model_and_keeps_o_args_as_sent():
    args, o_args, conversation = RULES.read(
        CHAT, '{"messages":[{"role":"user","content":"hi"}]}', {}
    )
    assert args == {"messages": HI, "model": "default-chat"}
    assert o_args == {"messages": HI}
    assert conversation is None


def test_read_takes_the_conversation_fields_out_of_the_arguments():
    raw = {"messages": HI, "chatId": "c-1", "custom_uid": "u@1"}
    args, o_args, conversation = RULES.read(CHAT, raw, {})
    assert "chatId" not in args and "custom_uid" not in args
    assert o_args == {"messages": HI}
    assert conversation == Conversation(chat_id="c-1", custom_uid="u@1")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("x" * 1001, "_o_args is larger than 1000 bytes"),
        ('{"a":{"b":{"c":{"d":{}}}}}', "_o_args is nested deeper than 4 levels"),
        ({"messages": HI * 3}, "_o_args.messages holds 3 messages; at most 2 are accepted"),
        ({"messages": HI, "chat_id": "a b"}, "_o_args.chat_id must be 1-128"),
    ],
)
def test_read_refuses_what_breaks_a_limit_with_4003(raw, reason):
    with pytest.raises(GatewayError) as refused:
        RULES.read(CHAT, raw, {})
    assert (refused.value.code, refused.value.detail[: len(reason)]) == ("4003", reason)


def test_a_file_sent_both_in_o_args_and_as_a_part_is_4003():
    upload = FileUpload(filename="a.png", content=b"png")
    with pytest.raises(GatewayError) as refused:
        RULES.read(find_method("v1/images/variations"), '{"image":"cG5n"}', {"image": upload})
    assert refused.value.detail == (
        "image is sent twice (in _o_args and as a multipart part); send one"
    )


def test_methods_that_take_files_have_room_for_two_base64_files():
    assert RULES.o_args_limit(takes_files=False) == 1000
    assert RULES.o_args_limit(takes_files=True) == 1000 + 2 * (4 * 32 // 3)
