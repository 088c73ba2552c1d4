"""The method catalog: the one table that the dispatcher, the OpenAPI document and
`GET /api/methods` read. A client's `method` is only ever looked up here, never made into a URL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import Schema

from proxy.handlers import openai as openai_handlers


@dataclass(frozen=True)
class MethodSpec:
    name: str  # what the client sends as `method`
    platform: str  # the `api_type` of the envelope and the <platform> of /<platform>/custom
    handler: Callable[..., dict]
    args_schema: type[Schema]
    cacheable: bool  # never true for uploads or job submission
    charged: bool  # whether a successful call counts against quota and balance (price: config)
    summary: str
    takes_model: bool = True  # the method routes by `model` and has a configured default


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "v1/models",
        "openai",
        openai_handlers.list_models,
        openai_handlers.NoArgs,
        cacheable=True,
        charged=True,
        summary="List the available models.",
        takes_model=False,
    ),
    MethodSpec(
        "v1/chat/completions",
        "openai",
        openai_handlers.create_chat_completion,
        openai_handlers.ChatCompletionArgs,
        cacheable=True,
        charged=True,
        summary="Chat: answer a conversation.",
    ),
    MethodSpec(
        "v1/completions",
        "openai",
        openai_handlers.create_completion,
        openai_handlers.CompletionArgs,
        cacheable=True,
        charged=True,
        summary="Complete a text prompt (the seed's AI question-and-answer).",
    ),
    MethodSpec(
        "v1/embeddings",
        "openai",
        openai_handlers.create_embedding,
        openai_handlers.EmbeddingArgs,
        cacheable=True,
        charged=True,
        summary="Embedding vectors of texts.",
    ),
    MethodSpec(
        "v1/moderations",
        "openai",
        openai_handlers.create_moderation,
        openai_handlers.ModerationArgs,
        cacheable=True,
        charged=True,
        summary="Classify texts for policy violations.",
    ),
)

CATALOG: dict[str, MethodSpec] = {spec.name: spec for spec in METHODS}
PLATFORMS: frozenset[str] = frozenset(spec.platform for spec in METHODS)


def find_method(name: str) -> MethodSpec | None:
    """Exact lookup; a leading or trailing slash is tolerated, nothing else is normalised."""
    return CATALOG.get(name.strip("/"))
