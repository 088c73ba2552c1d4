"""The Messages <-> chat translation (proxy/messages_translation.py), pure logic: a Messages
request as chat arguments, a chat answer as a Message, chat chunks as Messages events."""

from __future__ import annotations

import pytest

from proxy.messages_translation import MessageEvents, chat_arguments, message_from_chat
from proxy.usage import token_usage


def request(**fields) -> dict:
    return {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def test_system_string_becomes_the_first_system_message():
    chat = chat_arguments(request(system="be brief"))
    assert chat["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]


def test_system_text_blocks_are_joined_into_one_system_message():
    system = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert chat_arguments(request(system=system))["messages"][0] == {
        "role": "system",
        "content": "one\n\ntwo",
    }


def test_text_content_blocks_become_the_message_text():
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    assert chat_arguments(request(messages=messages))["messages"] == [
        {"role": "user", "content": "ab"}
    ]


def test_sampling_fields_are_carried_and_stop_sequences_become_stop():
    chat = chat_arguments(request(temperature=0.5, top_p=0.9, stop_sequences=["END"]))
    assert (chat["model"], chat["max_tokens"], chat["temperature"], chat["top_p"]) == (
        "m",
        10,
        0.5,
        0.9,
    )
    assert chat["stop"] == ["END"]


def test_a_stream_asks_for_the_usage_chunk():
    chat = chat_arguments(request(stream=True))
    assert (chat["stream"], chat["stream_options"]) == (True, {"include_usage": True})


def test_fields_a_chat_upstream_has_no_equivalent_for_are_left_out():
    chat = chat_arguments(request(top_k=5, metadata={"user_id": "u"}, thinking={"type": "x"}))
    assert not {"top_k", "metadata", "thinking"} & chat.keys()


def test_a_base64_image_becomes_a_data_url_part():
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "QQ=="},
    }
    messages = [{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
    assert chat_arguments(request(messages=messages))["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ=="}},
        {"type": "text", "text": "what?"},
    ]


def test_tools_and_tool_choice_become_functions():
    tools = [{"name": "get", "description": "d", "input_schema": {"type": "object"}}]
    chat = chat_arguments(request(tools=tools, tool_choice={"type": "tool", "name": "get"}))
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {"name": "get", "description": "d", "parameters": {"type": "object"}},
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get"}}
    assert chat_arguments(request(tool_choice={"type": "any"}))["tool_choice"] == "required"


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages():
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get", "input": {"city": "X"}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                {"type": "text", "text": "and so?"},
            ],
        },
    ]
    assert chat_arguments(request(messages=messages))["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "get", "arguments": '{"city": "X"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "and so?"},
    ]


def test_a_block_type_that_is_not_translated_is_refused_naming_it():
    messages = [{"role": "user", "content": [{"type": "document", "source": {}}]}]
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\]: a 'document' block"):
        chat_arguments(request(messages=messages))


def test_a_chat_answer_becomes_a_message():
    chat = {
        "id": "chatcmpl-abc",
        "model": "m-1",
        "choices": [
            {"message": {"role": "assistant", "content": "hello"}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    assert message_from_chat(chat, "m") == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "max_tokens",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }


def test_tool_calls_in_a_chat_answer_become_tool_use_blocks():
    call = {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"a": 1}'}}
    chat = {"choices": [{"message": {"tool_calls": [call]}, "finish_reason": "tool_calls"}]}
    message = message_from_chat(chat, "m")
    assert message["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get", "input": {"a": 1}}
    ]
    assert message["stop_reason"] == "tool_use"


def test_chat_chunks_become_the_messages_event_sequence():
    events = MessageEvents("m")
    seen = events.chunk(
        {
            "id": "chatcmpl-1",
            "model": "m",
            "choices": [{"delta": {"role": "assistant", "content": "he"}}],
        }
    )
    seen += events.chunk({"choices": [{"delta": {"content": "llo"}, "finish_reason": "stop"}]})
    seen += events.chunk({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2}})
    seen += events.finish()
    assert [name for name, _ in seen] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert seen[0][1]["message"]["id"] == "msg_1"
    assert [data["delta"]["text"] for name, data in seen if name == "content_block_delta"] == [
        "he",
        "llo",
    ]
    assert seen[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 4, "output_tokens": 2},
    }


def test_a_streamed_tool_call_is_a_tool_use_block_with_json_deltas():
    events = MessageEvents("m")
    call = {"index": 0, "id": "c1", "function": {"name": "get", "arguments": '{"a"'}}
    seen = events.chunk({"choices": [{"delta": {"tool_calls": [call]}}]})
    more = {"index": 0, "function": {"arguments": ": 1}"}}
    seen += events.chunk(
        {"choices": [{"delta": {"tool_calls": [more]}, "finish_reason": "tool_calls"}]}
    )
    seen += events.finish()
    starts = [data for name, data in seen if name == "content_block_start"]
    assert starts == [
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "c1", "name": "get", "input": {}},
        }
    ]
    deltas = [data["delta"]["partial_json"] for name, data in seen if name == "content_block_delta"]
    assert "".join(deltas) == '{"a": 1}'
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_a_messages_usage_is_read_as_prompt_and_completion_tokens():
    assert token_usage({"input_tokens": 3, "output_tokens": 2}) == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
    }
    openai_usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert token_usage(openai_usage) == openai_usage
    assert token_usage(None) == {}


def test_a_stream_the_upstream_broke_off_ends_with_an_error_event():
    from proxy.calls import CallResult, StreamingCall
    from proxy.doors.anthropic import message_events

    chunk = {"id": "chatcmpl-1", "choices": [{"delta": {"content": "he"}}]}
    broken = CallResult(code="4001", response=[], detail="the upstream's stream broke off")
    lines = list(
        message_events(StreamingCall(iter([("chunk", chunk), ("end", broken)])), "m", "r1")
    )
    assert lines[-1] == (
        "event: error\n"
        'data: {"type": "error", "error": {"type": "api_error", "message": "Network error: '
        'the upstream\'s stream broke off", "code": "4001"}, "request_id": "r1"}\n\n'
    )
    assert "message_stop" not in "".join(lines)
