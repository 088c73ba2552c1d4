"""``POST /v1/completions`` (legacy): ``"stub completion: "`` + each prompt."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from stub_upstream import arguments
from stub_upstream.faults import current_fault
from stub_upstream.generators import completion_object, digest, truncate, usage, words
from stub_upstream.replies import BadRequest, json_response, missing
from stub_upstream.streaming import event_stream

COMPLETION_PREFIX = "stub completion: "

bp = Blueprint("completions", __name__, url_prefix="/v1")


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prompts(body: dict[str, Any]) -> list[str]:
    """The prompts: a string, a list of strings, a token array or a list of token arrays
    (tokens are written out as their numbers)."""
    prompt = body.get("prompt")
    if prompt is None:
        raise missing("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(_is_token(t) for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, list) and all(_is_token(t) for t in p) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise BadRequest("'prompt' must be a string, an array of strings, or token arrays.", "prompt")


@bp.post("/completions")
def create_completion() -> Response:
    body = arguments.json_body()
    stream = arguments.stream_flag(body)
    model = arguments.model(body)
    texts = prompts(body)
    n = arguments.int_param(body, "n", 1, 1, 128)
    limit = arguments.max_tokens(body)
    # OpenAI orders choices prompt by prompt: index = prompt_index * n + j.
    results: list[tuple[int, list[str], str]] = []
    if current_fault() != "empty":
        for p_index, prompt in enumerate(texts):
            pieces, finish = truncate(COMPLETION_PREFIX + prompt, limit)
            results.extend((p_index * n + j, pieces, finish) for j in range(n))
    prompt_tokens = max(1, sum(words(p) for p in texts))
    answer_usage = usage(prompt_tokens, sum(words("".join(p)) for _, p, _ in results))
    head = ("text_completion", "cmpl-stub-" + digest(body), model)
    if stream:
        return event_stream(_chunks(head, results, answer_usage, arguments.include_usage(body)))
    choices = [_choice(index, "".join(pieces), finish) for index, pieces, finish in results]
    return json_response(completion_object(*head, choices, usage=answer_usage))


def _choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}


def _chunks(head, results, answer_usage, with_usage: bool) -> list[dict[str, Any]]:
    """Per choice: one chunk per word, then an empty one with the finish reason."""
    tail = {"usage": None} if with_usage else {}
    events = []
    for index, pieces, finish in results:
        events.extend(completion_object(*head, [_choice(index, p, None)], **tail) for p in pieces)
        events.append(completion_object(*head, [_choice(index, "", finish)], **tail))
    if with_usage:
        events.append(completion_object(*head, [], usage=answer_usage))
    return events
