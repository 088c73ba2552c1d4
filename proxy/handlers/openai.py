"""OpenAI-compatible upstreams through the official `openai` SDK.

Plain data in (validated `_o_args`), plain data out (the upstream's JSON payload, untouched);
failures raise GatewayError. No Flask, no other handler.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from functools import cache

import openai
from marshmallow import INCLUDE, Schema, fields, validate

from proxy.errors import NETWORK_ERROR, TARGET_SERVER_ERROR, TIMEOUT, GatewayError

PLATFORM = "openai"


class _UpstreamArgs(Schema):
    """Every OpenAI argument the schema does not name passes through unchanged."""

    class Meta:
        unknown = INCLUDE
        ordered = True

    model = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Model id; the method's default when absent."},
    )


class ChatMessage(Schema):
    class Meta:
        unknown = INCLUDE

    role = fields.String(required=True, validate=validate.Length(min=1, max=64))
    content = fields.Raw(allow_none=True)


class ChatCompletionArgs(_UpstreamArgs):
    messages = fields.List(
        fields.Nested(ChatMessage),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "The conversation, as in the OpenAI API."},
    )
    stream = fields.Boolean(metadata={"description": "Not served on this door yet: must be false."})


class CompletionArgs(_UpstreamArgs):
    prompt = fields.Raw(
        required=True, metadata={"description": "Text (or list of texts) to complete."}
    )
    max_tokens = fields.Integer(validate=validate.Range(min=1))
    stream = fields.Boolean(metadata={"description": "Not served on this door yet: must be false."})


class EmbeddingArgs(_UpstreamArgs):
    input = fields.Raw(required=True, metadata={"description": "Text or list of texts."})


class ModerationArgs(_UpstreamArgs):
    input = fields.Raw(required=True, metadata={"description": "Text or list of texts."})


class NoArgs(Schema):
    class Meta:
        unknown = INCLUDE


def list_models(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.models.with_raw_response.list, args)


def create_chat_completion(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.chat.completions.with_raw_response.create, args)


def create_completion(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.completions.with_raw_response.create, args)


def create_embedding(client: openai.OpenAI, args: dict) -> dict:
    # The SDK asks for base64 and decodes it itself; the raw payload must stay plain floats.
    args = {"encoding_format": "float", **args}
    return _call(client.embeddings.with_raw_response.create, args)


def create_moderation(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.moderations.with_raw_response.create, args)


@cache
def _sdk_parameters(raw_call: Callable) -> frozenset[str]:
    # The raw-response wrapper keeps the resource method's signature (functools.wraps).
    return frozenset(inspect.signature(raw_call).parameters)


def _call(raw_call: Callable, args: dict) -> dict:
    """Call an SDK resource method, keeping the upstream's own JSON payload."""
    known = _sdk_parameters(raw_call)
    kwargs = {name: value for name, value in args.items() if name in known}
    extra = {name: value for name, value in args.items() if name not in known}
    if extra:
        kwargs["extra_body"] = extra
    try:
        raw = raw_call(**kwargs)
    except openai.APITimeoutError:  # a subclass of APIConnectionError: test it first
        raise GatewayError(
            TIMEOUT, "the upstream did not answer in time; try again later"
        ) from None
    except openai.APIConnectionError:
        raise GatewayError(NETWORK_ERROR, "the upstream could not be reached") from None
    except openai.APIStatusError as exc:
        raise GatewayError(
            TARGET_SERVER_ERROR,
            f"the upstream answered HTTP {exc.status_code}",
            response=_upstream_error_object(exc.response.text, exc.status_code),
        ) from None
    try:
        payload = json.loads(raw.text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise GatewayError(
            TARGET_SERVER_ERROR,
            "the upstream answered with a body that is not a JSON object",
            response={
                "error": {
                    "message": "unparseable upstream answer",
                    "type": "upstream_error",
                    "param": None,
                    "code": raw.status_code,
                }
            },
        )
    return payload


def _upstream_error_object(body_text: str, status_code: int) -> dict:
    """The upstream's own error payload when it is a JSON object, else one in OpenAI's shape."""
    try:
        payload = json.loads(body_text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        return payload
    return {
        "error": {
            "message": body_text[:1000] or "upstream error",
            "type": "upstream_error",
            "param": None,
            "code": status_code,
        }
    }
