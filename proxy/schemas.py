"""The `_o_args` schemas of the catalog's methods (marshmallow): what each method takes, as
proxy/arguments.py checks it and the OpenAPI document and `GET /api/methods` describe it.
Pure: no Flask, no handler."""

from __future__ import annotations

import re

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from proxy.messages_translation import chat_arguments
from proxy.uploads import FileField

_STREAM_DESCRIPTION = "true: the answer as server-sent events (docs/streaming.md)."


# The SDK's options for one request: they set our upstream request's headers (Authorization
# among them), query string, whole body and timeout. None of them ever comes from a client.
SDK_REQUEST_OPTIONS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})


class _PassThroughArgs(Schema):
    """Arguments the schema does not name pass through, in the upstream's JSON body only."""

    class Meta:
        unknown = INCLUDE

    @validates_schema(pass_original=True)
    def _no_sdk_options(self, _data, original, **_kwargs):
        named = (
            sorted(SDK_REQUEST_OPTIONS.intersection(original)) if isinstance(original, dict) else []
        )
        if named:
            raise ValidationError(
                {
                    name: "is an option of the gateway's own upstream request, not an argument; "
                    "send provider fields at the top level of _o_args"
                    for name in named
                }
            )


class _UpstreamArgs(_PassThroughArgs):
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
    stream = fields.Boolean(metadata={"description": _STREAM_DESCRIPTION})


class CompletionArgs(_UpstreamArgs):
    prompt = fields.Raw(
        required=True, metadata={"description": "Text (or list of texts) to complete."}
    )
    max_tokens = fields.Integer(validate=validate.Range(min=1))
    stream = fields.Boolean(metadata={"description": _STREAM_DESCRIPTION})


class EmbeddingArgs(_UpstreamArgs):
    input = fields.Raw(required=True, metadata={"description": "Text or list of texts."})


class ModerationArgs(_UpstreamArgs):
    input = fields.Raw(required=True, metadata={"description": "Text or list of texts."})


class EditArgs(_UpstreamArgs):
    instruction = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "How to change the input text."},
    )
    input = fields.String(
        load_default="", metadata={"description": "The text to edit (empty: write anew)."}
    )
    n = fields.Integer(validate=validate.Range(min=1, max=10))


_IMAGE_FORMATS = validate.OneOf(["url", "b64_json"])
_IMAGE_COUNT = validate.Range(min=1, max=10)


class ImageGenerationArgs(_UpstreamArgs):
    prompt = fields.String(
        required=True,
        validate=validate.Length(min=1, max=32000),
        metadata={"description": "What the image shows."},
    )
    n = fields.Integer(validate=_IMAGE_COUNT, metadata={"description": "How many images."})
    size = fields.String(metadata={"description": "e.g. 1024x1024."})
    response_format = fields.String(validate=_IMAGE_FORMATS)


class ImageEditArgs(_UpstreamArgs):
    image = FileField(
        required=True, metadata={"description": "The image: base64, or a multipart part."}
    )
    mask = FileField(metadata={"description": "Where to edit (transparent areas): base64."})
    prompt = fields.String(required=True, validate=validate.Length(min=1, max=32000))
    n = fields.Integer(validate=_IMAGE_COUNT)
    size = fields.String()
    response_format = fields.String(validate=_IMAGE_FORMATS)


class ImageVariationArgs(_UpstreamArgs):
    image = FileField(
        required=True, metadata={"description": "The image: base64, or a multipart part."}
    )
    n = fields.Integer(validate=_IMAGE_COUNT)
    size = fields.String()
    response_format = fields.String(validate=_IMAGE_FORMATS)


TEXT_FORMATS = ("text", "srt", "vtt")


class AudioTextArgs(_UpstreamArgs):
    file = FileField(
        required=True, metadata={"description": "The audio: base64, or a multipart part."}
    )
    filename = fields.String(
        validate=validate.Length(min=1, max=255),
        metadata={"description": "The audio file's name; its extension tells the format."},
    )
    prompt = fields.String()
    response_format = fields.String(
        validate=validate.OneOf(["json", "verbose_json", *TEXT_FORMATS])
    )
    temperature = fields.Float(validate=validate.Range(min=0, max=1))


class TranscriptionArgs(AudioTextArgs):
    language = fields.String(validate=validate.Length(min=2, max=16))


class SpeechArgs(_UpstreamArgs):
    input = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    voice = fields.String(required=True, validate=validate.Length(min=1, max=64))
    response_format = fields.String(
        validate=validate.OneOf(["mp3", "opus", "aac", "flac", "wav", "pcm"])
    )
    speed = fields.Float(validate=validate.Range(min=0.25, max=4.0))


class ResponseCreateArgs(_UpstreamArgs):
    """v1/responses: the Responses API's arguments pass through (tools, instructions, ...)."""

    input = fields.Raw(
        required=True,
        metadata={"description": "Text, or a list of input items (messages), as OpenAI takes."},
    )
    stream = fields.Boolean(metadata={"description": _STREAM_DESCRIPTION})


# A response id goes into the upstream's path: letters, digits, _ and - only.
RESPONSE_ID = re.compile(r"resp_[A-Za-z0-9_-]{1,128}\Z")


class ResponseIdArgs(Schema):
    class Meta:
        unknown = RAISE  # a GET or DELETE upstream: no body to carry others

    response_id = fields.String(
        required=True,
        validate=validate.Regexp(RESPONSE_ID, error="must be a response id: resp_..."),
        metadata={"pattern": "^resp_[A-Za-z0-9_-]{1,128}$"},
    )


class ResponseInputItemsArgs(ResponseIdArgs):
    limit = fields.Integer(validate=validate.Range(min=1, max=100))
    order = fields.String(validate=validate.OneOf(["asc", "desc"]))
    after = fields.String(validate=validate.Length(min=1, max=200))
    before = fields.String(validate=validate.Length(min=1, max=200))


# \Z, not $: $ also matches before a trailing newline ("file-abc\n" would pass).
FILE_ID = re.compile(r"file-[A-Za-z0-9_-]{1,64}\Z")
_FILE_ID = validate.Regexp(FILE_ID, error="must be a file id: file-...")
# The same pattern as OpenAPI (ECMA-262) reads it, where $ never matches before a newline.
FILE_ID_DOCUMENTED = {"pattern": "^file-[A-Za-z0-9_-]{1,64}$"}


class FilesArgs(Schema):
    """List the account's files, or upload one when `file` is given."""

    class Meta:
        unknown = RAISE  # the list is the gateway's own: no upstream call to pass them to
        ordered = True

    file = FileField(metadata={"description": "A file to upload: base64, or a multipart part."})
    filename = fields.String(validate=validate.Length(min=1, max=255))
    purpose = fields.String(
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Required to upload (assistants, batch, fine-tune, ...)."},
    )
    limit = fields.Integer(validate=validate.Range(min=1, max=10000))
    order = fields.String(validate=validate.OneOf(["asc", "desc"]))
    after = fields.String(
        metadata={"description": "The cursor: the last file id of the previous page."}
    )


class FileIdArgs(Schema):
    class Meta:
        unknown = RAISE

    file_id = fields.String(required=True, validate=_FILE_ID, metadata=FILE_ID_DOCUMENTED)


class NoArgs(_PassThroughArgs):
    """No arguments of its own."""


# Image jobs (proxy/handlers/gateway.py).


class ImageSubmitArgs(ImageGenerationArgs):
    """images/submit: the arguments of v1/images/generations; the model defaults in config."""


class ImageGetArgs(_UpstreamArgs):
    imgid = fields.String(
        required=True,
        # [0-9], not \d (which takes any Unicode digit); \Z, not $ (which allows a final newline)
        validate=validate.Regexp(
            r"[0-9]{1,32}\Z", error="must be the imgid images/submit returned"
        ),
        metadata={"pattern": "^[0-9]{1,32}$"},  # as OpenAPI (ECMA-262) reads it
    )


# Anthropic's Messages API (proxy/handlers/anthropic.py, the /v1/messages door).


class AnthropicMessage(Schema):
    class Meta:
        unknown = RAISE
        ordered = True

    role = fields.String(required=True, validate=validate.OneOf(["user", "assistant"]))
    content = fields.Raw(
        required=True,
        metadata={"description": "A string, or content blocks (text, image, tool_use, ...)."},
    )


class MessagesArgs(Schema):
    """Anthropic's Messages request, translated to a chat call (docs/anthropic-door.md)."""

    class Meta:
        unknown = RAISE
        ordered = True

    model = fields.String(
        required=True,
        validate=validate.Length(min=1, max=200),
        metadata={"description": "Model id, passed to the chat upstream as it is."},
    )
    max_tokens = fields.Integer(required=True, validate=validate.Range(min=1))
    messages = fields.List(
        fields.Nested(AnthropicMessage), required=True, validate=validate.Length(min=1)
    )
    system = fields.Raw(metadata={"description": "A string, or a list of text blocks."})
    stop_sequences = fields.List(fields.String())
    temperature = fields.Float(validate=validate.Range(min=0, max=1))
    top_p = fields.Float(validate=validate.Range(min=0, max=1))
    stream = fields.Boolean(metadata={"description": _STREAM_DESCRIPTION})
    tools = fields.List(fields.Dict(), metadata={"description": "Custom tools (input_schema)."})
    tool_choice = fields.Dict()
    # Accepted, not translated: a chat upstream has no equivalent (docs/anthropic-door.md).
    top_k = fields.Integer(validate=validate.Range(min=0))
    metadata = fields.Dict()
    thinking = fields.Dict()
    service_tier = fields.String()
    container = fields.Raw()

    @validates_schema
    def _translatable(self, data, **_kwargs):
        try:
            chat_arguments(data)
        except ValueError as refused:
            raise ValidationError(str(refused)) from None


# The Feishu platform (proxy/handlers/feishu.py).


class FeishuAuthArgs(Schema):
    """feishu/auth takes nothing: the app id and secret are the gateway's configuration."""

    class Meta:
        unknown = RAISE
