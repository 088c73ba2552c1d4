"""Anthropic's Messages API (`v1/messages`) answered by the account's chat upstreams: the
request translated to a chat call, the chat answer translated back to a Message
(proxy/messages_translation.py). Plain data in and out, as every handler."""

from __future__ import annotations

from proxy.handlers.openai import create_chat_completion
from proxy.messages_translation import chat_arguments, message_from_chat


def create_message(client, args: dict) -> dict:
    """A Message for a Messages request, from one chat call."""
    chat = create_chat_completion(client, chat_arguments(args))
    return message_from_chat(chat, args["model"])


def stream_as_chat(args: dict) -> tuple[str, dict]:
    """A streamed Messages request as the chat stream the upstream is asked for; its chunks
    become Messages events at the door (messages_translation.MessageEvents)."""
    return "v1/chat/completions", chat_arguments(args)
