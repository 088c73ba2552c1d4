"""OpenAI-compatible upstreams through the official `openai` SDK.

Plain data in (validated `_o_args`), plain data out (the upstream's JSON payload, untouched);
failures raise GatewayError. No Flask, no other handler.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING

from proxy.errors import (
    NETWORK_ERROR,
    PARAM_ERROR,
    TARGET_SERVER_ERROR,
    TIMEOUT,
    GatewayError,
)
from proxy.schemas import SDK_REQUEST_OPTIONS, TEXT_FORMATS
from proxy.uploads import FileUpload

if TYPE_CHECKING:  # the SDK is imported when a call first needs it (see upstream_errors)
    import openai

PLATFORM = "openai"
log = logging.getLogger("proxy")


def list_models(client: openai.OpenAI, args: dict) -> dict:
    return _json_payload(_send(client, "get", "/models", None))


def create_chat_completion(client: openai.OpenAI, args: dict) -> dict:
    return _post_json(client, "/chat/completions", args)


def create_completion(client: openai.OpenAI, args: dict) -> dict:
    return _post_json(client, "/completions", args)


def create_embedding(client: openai.OpenAI, args: dict) -> dict:
    # Plain floats unless the client asks for base64 (the SDK's own default is base64).
    args = {"encoding_format": "float", **args}
    return _post_json(client, "/embeddings", args)


def create_moderation(client: openai.OpenAI, args: dict) -> dict:
    return _post_json(client, "/moderations", args)


EDIT_INSTRUCTIONS = (
    "You edit text. Apply the user's instruction to the text and answer with the edited "
    "text only, without comments."
)


def create_edit(client: openai.OpenAI, args: dict) -> dict:
    """v1/edits, retired upstream: the instruction and input as a chat call, answered in the
    classic edits shape ({"object": "edit", "choices": [{"text", "index"}], "usage"})."""
    chat_args = {
        name: value for name, value in args.items() if name not in ("instruction", "input")
    }
    chat_args["messages"] = [
        {"role": "system", "content": EDIT_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"Instruction: {args['instruction']}\n\nText:\n{args['input']}",
        },
    ]
    chat = _post_json(client, "/chat/completions", chat_args)
    return {
        "object": "edit",
        "created": chat.get("created"),
        "choices": [
            {"text": (choice.get("message") or {}).get("content") or "", "index": index}
            for index, choice in enumerate(chat.get("choices") or [])
        ],
        "usage": chat.get("usage") or {},
    }


def create_response(client: openai.OpenAI, args: dict) -> dict:
    return _post_json(client, "/responses", args)


def retrieve_response(client: openai.OpenAI, args: dict) -> dict:
    return _json_payload(_send(client, "get", f"/responses/{args['response_id']}", None))


def delete_response(client: openai.OpenAI, args: dict) -> dict:
    return _json_payload(_send(client, "delete", f"/responses/{args['response_id']}", None))


def list_response_input_items(client: openai.OpenAI, args: dict) -> dict:
    query = {name: value for name, value in args.items() if name != "response_id"}
    path = f"/responses/{args['response_id']}/input_items"
    return _json_payload(_send(client, "get", path, None, query=query))


def generate_images(client: openai.OpenAI, args: dict) -> dict:
    return _post_json(client, "/images/generations", args)


def edit_image(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.images.with_raw_response.edit, args)


def create_image_variation(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.images.with_raw_response.create_variation, args)


def create_transcription(client: openai.OpenAI, args: dict) -> dict:
    return _audio_text(client.audio.transcriptions.with_raw_response.create, args)


def create_translation(client: openai.OpenAI, args: dict) -> dict:
    return _audio_text(client.audio.translations.with_raw_response.create, args)


def _audio_text(raw_call: Callable, args: dict) -> dict:
    """json and verbose_json answers as they are; text, srt and vtt as {"text": ...}."""
    if args.get("response_format") in TEXT_FORMATS:
        return {"text": _raw(raw_call, args).text}
    return _call(raw_call, args)


def create_speech(client: openai.OpenAI, args: dict) -> dict:
    """Binary audio, returned as base64 with its MIME type (an envelope carries text only)."""
    raw = _send(client, "post", "/audio/speech", args)
    content = raw.content
    return {
        "object": "audio.speech",
        "format": args.get("response_format", "mp3"),
        "mime_type": raw.headers.get("content-type", "application/octet-stream"),
        "bytes": len(content),
        "audio": base64.b64encode(content).decode("ascii"),
    }


def upload_file(client: openai.OpenAI, args: dict) -> dict:
    if not args.get("purpose"):
        raise GatewayError(
            PARAM_ERROR, "_o_args.purpose is required to upload a file (e.g. assistants)"
        )
    return _call(client.files.with_raw_response.create, args)


def retrieve_file(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.files.with_raw_response.retrieve, args)


def delete_file(client: openai.OpenAI, args: dict) -> dict:
    return _call(client.files.with_raw_response.delete, args)


def file_content(client: openai.OpenAI, args: dict) -> dict:
    """The file's bytes as base64 (an envelope carries text only)."""
    raw = _raw(client.files.with_raw_response.content, args)
    content = raw.content
    return {
        "id": args["file_id"],
        "object": "file.content",
        "mime_type": raw.headers.get("content-type", "application/octet-stream"),
        "bytes": len(content),
        "content": base64.b64encode(content).decode("ascii"),
    }


@cache
def _sdk_parameters(raw_call: Callable) -> frozenset[str]:
    # The raw-response wrapper keeps the resource method's signature (functools.wraps).
    return frozenset(inspect.signature(raw_call).parameters)


def _post_json(client: openai.OpenAI, path: str, args: dict) -> dict:
    """A method whose arguments are a JSON body, all of them in it."""
    return _json_payload(_send(client, "post", path, args))


# What the SDK's resource methods of the catalog send: the API key only, never the admin key.
_REQUEST_OPTIONS = {"security": {"bearer_auth": True}}


def _send(client: openai.OpenAI, verb: str, path: str, body: dict | None, query=None):
    """One request through the SDK's client (its retries, timeouts, headers and errors),
    answered by the HTTP response as it came: the resource methods would also build and
    check typed arguments the body does not need (bench/upstream_call_bench.py). `body`
    becomes the JSON body only: nothing a client sends can set a request option."""
    from httpx2 import Response  # the SDK's HTTP client, imported with it

    options = {**_REQUEST_OPTIONS, "params": query} if query else _REQUEST_OPTIONS
    with upstream_errors():
        if verb == "get":
            return client.get(path, cast_to=Response, options=options)
        if verb == "delete":
            return client.delete(path, cast_to=Response, options=options)
        return client.post(path, body=body, cast_to=Response, options=options)


def _call(raw_call: Callable, args: dict) -> dict:
    """Call an SDK resource method, keeping the upstream's own JSON payload."""
    return _json_payload(_raw(raw_call, args))


def _json_payload(raw) -> dict:
    """The upstream's JSON object, as it sent it."""
    try:
        payload = json.loads(raw.content)
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


def _sdk_arguments(raw_call: Callable, args: dict) -> dict:
    """The SDK method's keyword arguments: the ones it does not name travel in the JSON body
    (extra_body); files go as (name, bytes, type)."""
    known = _sdk_parameters(raw_call) - SDK_REQUEST_OPTIONS  # never set by a client (schemas)
    kwargs, extra = {}, {}
    for name, value in args.items():
        if isinstance(value, FileUpload):
            value = value.for_sdk()
        elif name == "filename":  # the name of a base64 `file`, already in its FileUpload
            continue
        (kwargs if name in known else extra)[name] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _raw(raw_call: Callable, args: dict):
    """Call an SDK resource method; its raw response, or GatewayError."""
    with upstream_errors():
        return raw_call(**_sdk_arguments(raw_call, args))


# Upstream statuses that judge the client's own arguments (the gateway passes them on
# untouched): a param error (4003), not a target server error, and never a 5xx on /v1.
REFUSED_ARGUMENTS = frozenset({400, 404, 409, 413, 422})


@contextmanager
def upstream_errors():
    """The SDK's failures as gateway codes (4017, 4001, 4002; 4003 for REFUSED_ARGUMENTS)."""
    # Imported here, not at the top: importing the SDK takes seconds of CPU, which the admin
    # commands (flask accounts ...) would otherwise pay on every run. Workers import it at
    # boot (UpstreamRouter.warm_up), so no call waits for it.
    import openai

    try:
        yield
    except openai.APITimeoutError:  # a subclass of APIConnectionError: test it first
        raise GatewayError(
            TIMEOUT, "the upstream did not answer in time; try again later"
        ) from None
    except openai.APIConnectionError:
        raise GatewayError(NETWORK_ERROR, "the upstream could not be reached") from None
    except openai.APIStatusError as exc:
        error_object = _upstream_error_object(exc.response.text, exc.status_code)
        if exc.status_code in REFUSED_ARGUMENTS:  # the client's fault: /v1 keeps the status
            raise GatewayError(
                PARAM_ERROR,
                f"the upstream refused the arguments (HTTP {exc.status_code}): "
                + _upstream_message(error_object),
                response=error_object,
                http_status=exc.status_code,
                upstream_status=exc.status_code,
            ) from None
        raise GatewayError(
            TARGET_SERVER_ERROR,
            f"the upstream answered HTTP {exc.status_code}",
            response=error_object,
            upstream_status=exc.status_code,
        ) from None


def _lines(response) -> Iterator[str]:
    """The stream's lines; a read that fails mid-stream (the SDK's HTTP client raises its own
    exceptions there) is 4001."""
    lines = response.iter_lines()
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except Exception:
            log.warning("upstream stream broke off", exc_info=True)
            raise GatewayError(NETWORK_ERROR, "the upstream's stream broke off") from None
        yield line


STREAMING = {
    "v1/chat/completions": lambda client: client.chat.completions,
    "v1/completions": lambda client: client.completions,
    "v1/responses": lambda client: client.responses,
}
# Streams of typed events (the Responses API): they end with one of these, not [DONE].
TYPED_STREAMS = frozenset({"v1/responses"})
LAST_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def stream_chunks(client: openai.OpenAI, method: str, args: dict) -> Iterator[dict]:
    """The upstream's SSE chunks of a `stream: true` call, one dict per `data:` line, as the
    upstream sends them; the connection closes when the generator is closed."""
    raw_call = STREAMING[method](client).with_streaming_response.create
    with upstream_errors():
        with raw_call(**_sdk_arguments(raw_call, args)) as response:
            for line in _lines(response):
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    return
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise GatewayError(
                        TARGET_SERVER_ERROR, "the upstream sent a stream chunk that is not JSON"
                    ) from None
                if isinstance(chunk, dict) and ("error" in chunk or chunk.get("type") == "error"):
                    raise GatewayError(
                        TARGET_SERVER_ERROR, "the upstream failed mid-stream", response=chunk
                    )
                yield chunk
                if isinstance(chunk, dict) and chunk.get("type") in LAST_EVENTS:
                    return  # a typed stream's end: it sends no [DONE]
    # The connection closed without `data: [DONE]`: a stream cut mid-answer, not a success.
    raise GatewayError(NETWORK_ERROR, "the upstream's stream ended before [DONE]")


def _upstream_message(error_object: dict) -> str:
    error = error_object.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return str(message)[:300] if message else "no reason given"


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
