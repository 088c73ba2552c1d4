"""The common parameters of a call (a marshmallow schema, which also documents them), how the
onebound door reads them (`read_parameters`: query string, form or JSON body, header
credentials, and how the answer is presented), the request's JSON body and the JSON reading of
what a client sends (`_o_args` itself is read by proxy/arguments.py). Pure: no Flask."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from proxy.client_json import load_client_json, refuse_unsendable
from proxy.errors import MISSING_PARAM, PARAM_ERROR, GatewayError
from proxy.formats import RESULT_TYPES, is_valid_callback

LANG_ALIASES = {"cn": "cn", "zh-cn": "cn", "zh": "cn", "zh_cn": "cn", "en": "en", "ru": "ru"}
# Parameters echoed in `call_args`; key, secret and sign never are.
ECHOED_PARAMS = (
    "method",
    "api_name",
    "_o_args",
    "cache",
    "result_type",
    "lang",
    "version",
    "callback",
    "dateline",
)


class CommonParams(Schema):
    """Parameters every call takes, from the query string, a form body or a JSON body."""

    class Meta:
        unknown = EXCLUDE
        ordered = True

    key = fields.String(metadata={"description": "Account key (or header X-API-KEY)."})
    secret = fields.String(
        metadata={"description": "Account secret (or header X-API-SECRET), or sign instead."}
    )
    sign = fields.String(
        metadata={
            "description": "Instead of secret: upper-case MD5 of secret + the parameters sorted "
            "by name as name+value + secret (docs/signing.md)."
        }
    )
    dateline = fields.Raw(
        metadata={
            "description": "Unix time in seconds; required with sign (within "
            "SIGN_WINDOW_SECONDS of the server's clock).",
            "type": "string",
        }
    )
    method = fields.String(metadata={"description": "Catalog method, e.g. v1/chat/completions."})
    api_name = fields.String(metadata={"description": "Synonym of method, used when it is absent."})
    _o_args = fields.Raw(
        data_key="_o_args",
        attribute="o_args",
        metadata={
            "description": "JSON object of the upstream's own arguments (a string in GET/form).",
            "type": "string",
        },
    )
    cache = fields.String(
        load_default="yes",
        validate=validate.OneOf(["yes", "no"]),
        metadata={"description": "yes (default): serve a stored answer."},
    )
    result_type = fields.String(
        load_default="json",
        validate=validate.OneOf(RESULT_TYPES),
        metadata={"description": "Output format."},
    )
    lang = fields.String(
        load_default="cn",
        metadata={"description": "Language of `reason`: cn (default), en, ru; zh-CN means cn."},
    )
    version = fields.String(load_default="", metadata={"description": "API version expected."})
    callback = fields.String(
        load_default="", metadata={"description": "JSONP function name for json/jsonu."}
    )


def normalise_lang(raw: str) -> str | None:
    return LANG_ALIASES.get(raw.strip().lower())


def parse_presentation(raw: dict) -> tuple[str, str, str]:
    """(result_type, lang, callback), checked before anything else so errors render as asked.

    Raises GatewayError(4003) naming the bad parameter; the caller renders it as json/cn.
    """
    result_type = str(raw.get("result_type") or "json").strip().lower()
    if result_type not in RESULT_TYPES:
        raise GatewayError(PARAM_ERROR, f"result_type must be one of {', '.join(RESULT_TYPES)}")
    lang = normalise_lang(str(raw.get("lang") or "cn"))
    if lang is None:
        raise GatewayError(PARAM_ERROR, "lang must be cn, en or ru (zh-CN is read as cn)")
    callback = str(raw.get("callback") or "")
    if callback and not is_valid_callback(callback):
        raise GatewayError(
            PARAM_ERROR,
            "callback must be a JavaScript name such as jQuery123_456"
            " (letters, digits, _ and $, dotted), at most 64 chars",
        )
    if callback and result_type not in ("json", "jsonu"):
        raise GatewayError(PARAM_ERROR, "callback (JSONP) works with result_type json or jsonu")
    return result_type, lang, callback


# One instance for every call: loading keeps no state on the schema (marshmallow 4 has no
# context), and building one deep-copies its fields.
_COMMON_PARAMS = CommonParams()


def load_common(raw: dict, known_versions: tuple[str, ...]) -> dict:
    try:
        params = _COMMON_PARAMS.load(raw)
    except ValidationError as exc:
        field_name, problems = next(iter(exc.messages.items()))
        raise GatewayError(PARAM_ERROR, f"{field_name}: {' '.join(map(str, problems))}") from None
    params["method"] = (params.get("method") or params.get("api_name") or "").strip()
    if params["version"] and params["version"] not in known_versions:
        raise GatewayError(
            PARAM_ERROR,
            f"version {params['version'][:20]!r} is unknown; "
            f"use one of {', '.join(known_versions)} or leave it out",
        )
    if not params.get("key"):
        raise GatewayError(
            MISSING_PARAM, "key is missing; add key=... to the URL or send header X-API-KEY"
        )
    if not params.get("secret") and not params.get("sign"):
        raise GatewayError(
            MISSING_PARAM,
            "secret is missing; add secret=... (or header X-API-SECRET), or sign the request "
            "with sign=... and dateline=...",
        )
    if not params.get("secret") and not params.get("dateline"):
        raise GatewayError(
            MISSING_PARAM, "dateline is missing; a signed request needs dateline=<unix seconds>"
        )
    if not params["method"]:
        raise GatewayError(MISSING_PARAM, "method is missing; e.g. method=v1/chat/completions")
    return params


def parse_json_body(text: str) -> dict:
    """A request's JSON body, which must be an object; {} when the body is empty."""
    if not text.strip():
        return {}
    try:
        body = load_client_json(text)
    except ValueError:
        raise GatewayError(PARAM_ERROR, "the JSON body is not valid JSON") from None
    except RecursionError:
        raise GatewayError(PARAM_ERROR, "the JSON body is nested too deep") from None
    if not isinstance(body, dict):
        raise GatewayError(PARAM_ERROR, "the JSON body must be an object")
    refuse_unsendable(body, "")
    return body


UNNAMED_PART_REASON = (
    'a multipart part has no name; name every part (Content-Disposition: form-data; name="key")'
)


def refuse_unnamed_parts(parts) -> None:
    """4003 when a multipart body (its form fields or its files) has a part without a name."""
    if None in parts:
        raise GatewayError(PARAM_ERROR, UNNAMED_PART_REASON)


def form_values(form) -> dict:
    """A form's fields by name (the first value of each); a part without a name is a 4003."""
    refuse_unnamed_parts(form)
    return {name: form.get(name) for name in form}


ECHO_MAX_CHARACTERS = 4096  # a base64 file in _o_args is not sent back whole


def echo_call_args(raw: dict) -> dict:
    """What `call_args` echoes: the known parameters the caller sent, never a credential; a
    value longer than ECHO_MAX_CHARACTERS is cut there and says how long it was."""
    echoed = {}
    for name in ECHOED_PARAMS:
        if name in raw and raw[name] is not None:
            value = raw[name]
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            if len(text) > ECHO_MAX_CHARACTERS:
                text = f"{text[:ECHO_MAX_CHARACTERS]}... ({len(text)} characters)"
            echoed[name] = text
    return echoed


# -- the onebound door's parameters ------------------------------------------------------------


@dataclass(frozen=True)
class Presentation:
    """How an envelope is answered: the format, language and JSONP callback asked (their
    defaults until they parse) and the parameters `call_args` echoes."""

    result_type: str = "json"
    lang: str = "cn"
    callback: str = ""
    call_args: Mapping = field(default_factory=dict)


@dataclass(frozen=True)
class Parameters:
    raw: dict  # every parameter as sent (a `sign` covers them all)
    common: dict  # the common ones, checked (load_common)


def read_parameters(
    query,
    body,
    header_credentials: tuple[str, str],
    known_versions: tuple[str, ...],
    refusal: GatewayError | None = None,
) -> tuple[Parameters | GatewayError, Presentation]:
    """A /api request's parameters, or the GatewayError that refuses them (`refusal` when
    given: the request is not taken whatever it says), and how to present the answer: in the
    format asked whenever that much parses.

    `query` and a form `body` are multi-dicts; a JSON `body` is its text; an unreadable body
    is the GatewayError its reading raised (reported after the query string's own faults).
    Body parameters win over the query's; X-API-KEY / X-API-SECRET fill key and secret."""
    try:
        raw = _merged(query, body)
    except GatewayError as unreadable:
        return refusal or unreadable, Presentation()
    call_args = echo_call_args(raw)
    try:
        presentation = Presentation(*parse_presentation(raw), call_args=call_args)
    except GatewayError as refused:
        return refusal or refused, Presentation(call_args=call_args)
    if refusal is not None:
        return refusal, presentation
    try:
        common = load_common(_with_header_credentials(raw, *header_credentials), known_versions)
    except GatewayError as refused:
        return refused, presentation
    return Parameters(raw=raw, common=common), presentation


def _merged(query, body) -> dict:
    """Query string, then the body's parameters: later sources win."""
    raw = _first_non_empty(query)
    if isinstance(body, GatewayError):
        raise body
    if isinstance(body, str):
        raw.update({k: v for k, v in parse_json_body(body).items() if v is not None})
    else:
        raw.update(_first_non_empty(body))
    return raw


def _first_non_empty(multi) -> dict:
    """Legacy query strings repeat parameters (`api_name` twice) and leave empty segments."""
    merged: dict = {}
    refuse_unnamed_parts(multi)
    for name in multi.keys():
        name_clean = name.strip()
        if not name_clean:
            continue
        values = [v for v in multi.getlist(name) if v != ""]
        if values and name_clean not in merged:
            merged[name_clean] = values[0]
    return merged


def _with_header_credentials(raw: dict, key: str, secret: str) -> dict:
    """The parameters plus key and secret from X-API-KEY / X-API-SECRET when not sent as such."""
    merged = dict(raw)
    if not merged.get("key") and key:
        merged["key"] = key
    if not merged.get("secret") and secret:
        merged["secret"] = secret
    return merged
