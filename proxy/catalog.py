"""The method catalog: the one table that the dispatcher, the OpenAPI document and
`GET /api/methods` read. A client's `method` is only ever looked up here, never made into a URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from marshmallow import Schema

from proxy import schemas
from proxy.handlers import anthropic as anthropic_handlers
from proxy.handlers import feishu as feishu_handlers
from proxy.handlers import gateway as gateway_handlers
from proxy.handlers import openai as openai_handlers


@dataclass(frozen=True)
class MethodSpec:
    name: str  # what the client sends as `method`
    platform: str  # the `api_type` of the envelope and the <platform> of /<platform>/custom
    handler: Callable[..., dict]  # (sdk client, args); for gateway methods (services, call, args)
    args_schema: type[Schema]
    cacheable: bool  # never true for uploads, deletions or job submission
    charged: bool  # whether a successful call counts against quota and balance (price: config)
    summary: str
    takes_model: bool = True  # the method routes by `model` and has a configured default
    in_gateway: bool = False  # answered by the gateway itself (gateway handlers), not one call
    takes_files: bool = False  # file fields (file, image, mask) as base64 or multipart parts
    # Where the OpenAI-compatible door serves it ("VERB /path", <file_id> taken from the path).
    openai_routes: tuple[str, ...] = ()
    # A stream of it asked upstream as another method's: args -> (that method, its args).
    streams_as: Callable[[dict], tuple[str, dict]] | None = None


def _openai(name, handler, schema, summary, *, cacheable=True, charged=True, **options):
    """An openai-platform row; a v1/ method is served on /v1 at `POST /<name>` unless its
    routes say otherwise."""
    if name.startswith("v1/"):
        options.setdefault("openai_routes", (f"POST /{name}",))
    return MethodSpec(name, "openai", handler, schema, cacheable, charged, summary, **options)


oa, gw = openai_handlers, gateway_handlers

METHODS: tuple[MethodSpec, ...] = (
    _openai(
        "v1/models",
        gw.list_models_everywhere,
        schemas.NoArgs,
        "List the models of every upstream (each routes to the upstream that lists it).",
        takes_model=False,
        in_gateway=True,
        openai_routes=("GET /v1/models",),
    ),
    _openai(
        "v1/chat/completions",
        oa.create_chat_completion,
        schemas.ChatCompletionArgs,
        "Chat: answer a conversation.",
    ),
    _openai(
        "v1/completions",
        oa.create_completion,
        schemas.CompletionArgs,
        "Complete a text prompt (the seed's AI question-and-answer).",
    ),
    _openai(
        "v1/edits",
        oa.create_edit,
        schemas.EditArgs,
        "Edit a text by an instruction (retired upstream: answered by a chat call, in the "
        "classic edits shape).",
    ),
    _openai(
        "v1/responses",
        oa.create_response,
        schemas.ResponseCreateArgs,
        "Responses API: answer an input (text or items), as client.responses.create.",
    ),
    _openai(
        "v1/responses/retrieve",
        oa.retrieve_response,
        schemas.ResponseIdArgs,
        "A stored response by `response_id` (on the default upstream).",
        cacheable=False,
        takes_model=False,
        openai_routes=("GET /v1/responses/<response_id>",),
    ),
    _openai(
        "v1/responses/delete",
        oa.delete_response,
        schemas.ResponseIdArgs,
        "Delete a stored response by `response_id` (on the default upstream).",
        cacheable=False,
        takes_model=False,
        openai_routes=("DELETE /v1/responses/<response_id>",),
    ),
    _openai(
        "v1/responses/input_items",
        oa.list_response_input_items,
        schemas.ResponseInputItemsArgs,
        "The input items of a stored response by `response_id` (limit, order, after, before).",
        cacheable=False,
        takes_model=False,
        openai_routes=("GET /v1/responses/<response_id>/input_items",),
    ),
    _openai(
        "v1/embeddings", oa.create_embedding, schemas.EmbeddingArgs, "Embedding vectors of texts."
    ),
    _openai(
        "v1/moderations",
        oa.create_moderation,
        schemas.ModerationArgs,
        "Classify texts for policy violations.",
    ),
    _openai(
        "v1/images/generations",
        oa.generate_images,
        schemas.ImageGenerationArgs,
        "Images from a text prompt.",
    ),
    _openai(
        "v1/images/edits",
        oa.edit_image,
        schemas.ImageEditArgs,
        "Edit an image (base64 `image`, optional `mask`) by a prompt.",
        takes_files=True,
    ),
    _openai(
        "v1/images/variations",
        oa.create_image_variation,
        schemas.ImageVariationArgs,
        "Variations of an image (base64 `image`).",
        takes_files=True,
    ),
    _openai(
        "v1/audio/transcriptions",
        oa.create_transcription,
        schemas.TranscriptionArgs,
        "Text of an audio file (base64 `file` with its `filename`).",
        takes_files=True,
    ),
    _openai(
        "v1/audio/translations",
        oa.create_translation,
        schemas.AudioTextArgs,
        "English text of an audio file (base64 `file` with its `filename`).",
        takes_files=True,
    ),
    _openai(
        "v1/audio/speech",
        oa.create_speech,
        schemas.SpeechArgs,
        "Speech audio of a text, returned base64 with its MIME type.",
    ),
    _openai(
        "v1/files",
        gw.list_or_upload_files,
        schemas.FilesArgs,
        "List this account's files (purpose, limit, order, after), or upload one (base64 "
        "`file`, `filename`, `purpose`).",
        cacheable=False,
        takes_model=False,
        in_gateway=True,
        openai_routes=("GET /v1/files", "POST /v1/files"),
        takes_files=True,
    ),
    _openai(
        "v1/files/retrieve",
        gw.retrieve_file,
        schemas.FileIdArgs,
        "A file's details by `file_id` (a file of this account).",
        cacheable=False,
        takes_model=False,
        in_gateway=True,
        openai_routes=("GET /v1/files/<file_id>",),
    ),
    _openai(
        "v1/files/delete",
        gw.delete_file,
        schemas.FileIdArgs,
        "Delete a file of this account by `file_id`.",
        cacheable=False,
        takes_model=False,
        in_gateway=True,
        openai_routes=("DELETE /v1/files/<file_id>",),
    ),
    _openai(
        "v1/files/content",
        gw.file_content,
        schemas.FileIdArgs,
        "A file's bytes by `file_id` (a file of this account), base64.",
        cacheable=False,
        takes_model=False,
        in_gateway=True,
        openai_routes=("GET /v1/files/<file_id>/content",),
    ),
    _openai(
        "images/submit",
        gw.submit_image_job,
        schemas.ImageSubmitArgs,
        "Start an image job from a prompt; returns its `imgid` at once.",
        cacheable=False,
        in_gateway=True,
    ),
    _openai(
        "images/get",
        gw.get_image_job,
        schemas.ImageGetArgs,
        "An image job by `imgid`: status, progress and, when done, the images.",
        cacheable=False,
        charged=False,
        takes_model=False,
        in_gateway=True,
    ),
    MethodSpec(
        "v1/messages",
        "anthropic",
        anthropic_handlers.create_message,
        schemas.MessagesArgs,
        cacheable=True,
        charged=True,
        summary="Anthropic's Messages API (`POST /v1/messages` for the anthropic SDK), "
        "answered by a chat upstream (docs/anthropic-door.md).",
        streams_as=anthropic_handlers.stream_as_chat,
    ),
    MethodSpec(
        "feishu/auth",
        feishu_handlers.PLATFORM,
        feishu_handlers.tenant_access_token,
        schemas.FeishuAuthArgs,
        cacheable=False,  # the token is kept by the handler, for every account alike
        charged=True,
        summary="Feishu: the gateway app's tenant_access_token and the seconds it has left "
        "(`expire`); the app id and secret are the gateway's, never the client's.",
        takes_model=False,
    ),
)

# The platforms other than openai: each handler module's client, built once per app from the
# config and the answer cache's shared store (proxy/services.py); their handlers take it.
PLATFORM_CLIENTS: dict[str, Callable] = {feishu_handlers.PLATFORM: feishu_handlers.connect}

CATALOG: dict[str, MethodSpec] = {spec.name: spec for spec in METHODS}
PLATFORMS: frozenset[str] = frozenset(spec.platform for spec in METHODS)


def find_method(name: str) -> MethodSpec | None:
    """Exact lookup; a leading or trailing slash is tolerated, nothing else is normalised."""
    return CATALOG.get(name.strip("/"))


# Methods whose answer is binary on the /v1 door: (base64 field, MIME type field) of the payload.
BINARY_ANSWERS = {
    "v1/audio/speech": ("audio", "mime_type"),
    "v1/files/content": ("content", "mime_type"),
}


def openai_routes() -> Iterator[tuple[str, str, MethodSpec]]:
    """(verb, Flask rule, method) of every /v1 route: the only list of what that door serves."""
    for spec in METHODS:
        for route in spec.openai_routes:
            verb, path = route.split(" ", 1)
            yield verb, path, spec
