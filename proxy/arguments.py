"""A call's `_o_args`, read in one place: parsed (a JSON string or an object), bounded in size
and depth, joined by the multipart files, cleared of the conversation fields and checked
against the method's schema (proxy/schemas.py), with the limits of the config injected once.

Pure: no Flask. Every refusal is GatewayError(4003) naming what to fix.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from marshmallow import Schema, ValidationError

from proxy.catalog import MethodSpec
from proxy.chats import Conversation
from proxy.client_json import load_checked
from proxy.errors import PARAM_ERROR, GatewayError
from proxy.handlers.openai import STREAMING
from proxy.uploads import FileUpload, oversize_files

CHAT_ID_NAMES = ("chat_id", "chatId", "thread_id")
CUSTOM_UID_NAMES = ("custom_uid", "customUid")
CHAT_METHOD = "v1/chat/completions"
_ID = re.compile(r"[\w.:@-]{1,128}\Z")  # \Z: $ would let a final newline through


@dataclass(frozen=True)
class ArgumentRules:
    """The limits on what a client sends in `_o_args`, from the config."""

    max_o_args_bytes: int
    max_o_args_depth: int
    max_upload_bytes: int
    max_messages: int
    default_models: Mapping[str, str]  # by method, for a call whose `_o_args` names no model

    @classmethod
    def from_config(cls, config: Mapping) -> ArgumentRules:
        return cls(
            max_o_args_bytes=config["MAX_O_ARGS_BYTES"],
            max_o_args_depth=config["MAX_O_ARGS_DEPTH"],
            max_upload_bytes=config["MAX_UPLOAD_BYTES"],
            max_messages=config["MAX_MESSAGES"],
            default_models=dict(config["DEFAULT_MODELS"]),
        )

    def read(
        self, spec: MethodSpec, raw_o_args, files: Mapping[str, FileUpload]
    ) -> tuple[dict, dict, Conversation | None]:
        """(args for the handler, `_o_args` as sent without the conversation fields, the
        conversation they name) of a call to `spec`; `raw_o_args` is a JSON string (GET,
        form), an object (JSON body) or None, `files` the multipart parts by name."""
        o_args = parse_o_args(
            raw_o_args,
            max_bytes=self.o_args_limit(spec.takes_files),
            max_depth=self.max_o_args_depth,
        )
        if spec.takes_files:
            o_args = with_files(o_args, files)
        o_args, conversation = take_conversation(o_args, spec.name)
        return self.validate(spec, o_args), o_args, conversation

    def o_args_limit(self, takes_files: bool) -> int:
        """MAX_O_ARGS_BYTES, plus room for base64 files (an image and its mask) where a
        method takes them."""
        if not takes_files:
            return self.max_o_args_bytes
        return self.max_o_args_bytes + 2 * (4 * (self.max_upload_bytes + 2) // 3)

    def validate(self, spec: MethodSpec, o_args: dict) -> dict:
        """`o_args` checked by the method's schema and the limits; the method's default model
        where it names none."""
        try:
            args = _schema(spec.args_schema).load(o_args)
        except ValidationError as exc:
            raise GatewayError(PARAM_ERROR, describe_validation_error(exc.messages)) from None
        if args.get("stream") and spec.name not in STREAMING and spec.streams_as is None:
            raise GatewayError(
                PARAM_ERROR,
                f"stream=true is served for {', '.join(STREAMING)}; leave it out for {spec.name}",
            )
        oversize = oversize_files(args, self.max_upload_bytes)
        if oversize:
            raise GatewayError(PARAM_ERROR, oversize)
        messages = args.get("messages")
        if isinstance(messages, list) and len(messages) > self.max_messages:
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.messages holds {len(messages)} messages; "
                f"at most {self.max_messages} are accepted",
            )
        if spec.takes_model and not args.get("model"):
            default_model = self.default_models.get(spec.name)
            if not default_model:
                raise GatewayError(PARAM_ERROR, "_o_args.model is required for this method")
            args["model"] = default_model
        return args


def parse_o_args(raw, *, max_bytes: int, max_depth: int) -> dict:
    """`_o_args` as a dict: a JSON string (GET/form) or an object (JSON body); absent is {}."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            value = load_checked(raw, "_o_args", max_bytes)
        except ValueError as exc:
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args is not valid JSON ({exc.msg} at position {exc.pos}); URL-encode it",
            ) from None
        except RecursionError:
            raise GatewayError(
                PARAM_ERROR, f"_o_args is nested deeper than {max_depth} levels"
            ) from None
    else:
        value = raw
        if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > max_bytes:
            raise GatewayError(PARAM_ERROR, f"_o_args is larger than {max_bytes} bytes")
    if not isinstance(value, dict):
        raise GatewayError(PARAM_ERROR, '_o_args must be a JSON object, e.g. {"prompt":"hi"}')
    if _depth(value) > max_depth:
        raise GatewayError(PARAM_ERROR, f"_o_args is nested deeper than {max_depth} levels")
    return value


def _depth(value) -> int:
    """Nesting depth without recursion, so a hostile document cannot exhaust the stack."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def with_files(o_args: dict, files: Mapping[str, FileUpload]) -> dict:
    """`_o_args` plus the files sent as multipart parts (file, image, mask)."""
    merged = dict(o_args)
    for name, upload in files.items():
        if name in merged:
            raise GatewayError(
                PARAM_ERROR, f"{name} is sent twice (in _o_args and as a multipart part); send one"
            )
        merged[name] = upload
    return merged


def take_conversation(o_args: dict, method: str) -> tuple[dict, Conversation | None]:
    """`o_args` without the memory fields (they never reach the upstream), and the
    conversation they name, if any (docs/chats.md)."""
    named = {name: o_args[name] for name in (*CHAT_ID_NAMES, *CUSTOM_UID_NAMES) if name in o_args}
    if not named:
        return o_args, None
    rest = {name: value for name, value in o_args.items() if name not in named}
    chat_ids = {str(named[name]) for name in CHAT_ID_NAMES if name in named}
    uids = {str(named[name]) for name in CUSTOM_UID_NAMES if name in named}
    if not chat_ids:
        return rest, None  # a custom_uid alone: nothing to remember it with
    if method != CHAT_METHOD:
        raise GatewayError(PARAM_ERROR, f"_o_args.chat_id is served for {CHAT_METHOD} only")
    if len(chat_ids) > 1 or len(uids) > 1:
        raise GatewayError(PARAM_ERROR, "_o_args names two different chat_ids (or custom_uids)")
    chat_id, uid = chat_ids.pop(), (uids.pop() if uids else None)
    for field_name, value in (("chat_id", chat_id), ("custom_uid", uid)):
        if value is not None and not _ID.match(value):
            raise GatewayError(
                PARAM_ERROR,
                f"_o_args.{field_name} must be 1-128 letters, digits or . _ - : @",
            )
    return rest, Conversation(chat_id=chat_id, custom_uid=uid)


def describe_validation_error(messages, prefix: str = "_o_args") -> str:
    """Marshmallow's nested messages as one line naming each field: `_o_args.messages: ...`."""
    parts: list[str] = []

    def walk(node, path: str) -> None:
        if isinstance(node, dict):
            for name, sub in node.items():
                walk(sub, f"{path}.{name}" if not isinstance(name, int) else f"{path}[{name}]")
        elif isinstance(node, list) and all(isinstance(item, str) for item in node):
            parts.append(f"{path}: {' '.join(node)}")
        else:
            parts.append(f"{path}: {node}")

    walk(messages, prefix)
    return "; ".join(parts)


@functools.cache
def _schema(schema_class: type[Schema]) -> Schema:
    """One instance per `_o_args` schema: loading keeps no state on the schema (marshmallow 4
    has no context), and building one deep-copies its fields."""
    return schema_class()
