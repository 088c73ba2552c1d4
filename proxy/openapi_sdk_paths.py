"""What the OpenAPI document says of the SDK doors: the /v1 door (a path per catalog route,
OpenAI's error object) and the Anthropic door (`POST /v1/messages`, Anthropic's error)."""

from __future__ import annotations

from collections import defaultdict

from marshmallow import Schema, fields
from werkzeug.routing import Map, Rule

from proxy.catalog import BINARY_ANSWERS, METHODS, MethodSpec, openai_routes
from proxy.errors import ANSWERED_CODES, ERROR_CODES
from proxy.handlers.openai import STREAMING
from proxy.openapi_docs import ALLOW_HEADER, STRING_SCHEMA, server_sent_event
from proxy.uploads import FILE_FIELDS, FileField


class OpenAIErrorDetailDoc(Schema):
    class Meta:
        ordered = True

    message = fields.String(required=True, metadata={"description": "What failed, what to fix."})
    type = fields.String(required=True, metadata={"example": "authentication_error"})
    param = fields.String(required=True, allow_none=True)
    code = fields.String(
        required=True, metadata={"description": "The gateway's error code", "example": "4005"}
    )
    upstream_error = fields.Raw(
        metadata={"description": "The upstream's own error object, when the upstream refused."}
    )


class OpenAIErrorDoc(Schema):
    """An error of the /v1 door, in the OpenAI API's shape."""

    error = fields.Nested(OpenAIErrorDetailDoc, required=True)


_STREAM = server_sent_event("A chunk as JSON, or [DONE] after the last one.")
OPENAI_SECURITY = [{"gatewayBearer": []}, {"gatewayApiKey": []}]
_HEADERS = {
    "X-Request-Id": "This call's id, as in the usage log.",
    "X-Error-Code": "The gateway's code (not on a stream).",
    "X-Api-Info": "The account's quota line, as the envelope's `api_info`.",
}
_V1_HEADERS = {name: name for name in _HEADERS}  # references to components/headers
_BINARY = {"type": "string", "format": "binary"}
# The media types of a binary answer (the upstream's Content-Type); any type otherwise.
_BINARY_MEDIA_TYPES = {"v1/audio/speech": ("audio/*", "application/octet-stream")}
# Fields a listing (GET) does not read: the upload's own.
_UPLOAD_FIELDS = {*FILE_FIELDS, "filename"}


def register_openai_paths(api) -> None:
    """A path per catalog route of the /v1 door (path parameters as the method's schema checks
    them): the method's `_o_args` schema as the body (or the query of a GET), the key as a
    bearer token, and the answers: the upstream's JSON, a stream or bytes, or an OpenAI error
    object by HTTP status."""
    api.spec.components.security_scheme(
        "gatewayBearer",
        {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "KEY:SECRET",
            "description": "The gateway key, a colon, its secret (the SDK's `api_key`).",
        },
    )
    api.spec.components.security_scheme(
        "gatewayApiKey",
        {
            "type": "apiKey",
            "in": "header",
            "name": "api-key",
            "description": "KEY:SECRET, or the key alone with its secret in `X-API-SECRET`.",
        },
    )
    for name, description in _HEADERS.items():
        api.spec.components.header(name, {"description": description, "schema": STRING_SCHEMA})
    api.spec.tag(
        {
            "name": "openai",
            "description": "OpenAI-compatible door for the official SDKs: the same accounts, "
            "limits and usage log as /api (docs/openai-door.md).",
        }
    )
    for verb, path, spec in openai_routes():
        rule = Rule(path, defaults={})  # flask-smorest reads the path's template off a bound rule
        Map([rule])
        operation = _openai_operation(api, spec, verb, set(rule.arguments))
        api.spec.path(
            rule=rule,
            operations={verb.lower(): operation},
            parameters=_path_parameters(api, spec, rule.arguments),
        )


def _path_parameters(api, spec: MethodSpec, names) -> list[dict]:
    """Path parameters as the method's schema checks them (a file id's pattern)."""
    converter, fields_ = api.ma_plugin.converter, spec.args_schema().fields
    return [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": converter.field2property(fields_[name]),
        }
        for name in sorted(names)
    ]


def _openai_operation(api, spec: MethodSpec, verb: str, path_arguments: set[str]) -> dict:
    operation = {
        "tags": ["openai"],
        "summary": spec.summary,
        "description": f"Catalog method `{spec.name}`; arguments as in the OpenAI API "
        f"(schema `{spec.args_schema.__name__}`).",
        "security": OPENAI_SECURITY,
        "responses": {"200": _openai_success(spec), **_openai_errors()},
    }
    if verb == "POST":
        operation["requestBody"] = {"required": True, "content": _request_content(api, spec)}
    else:
        queried = [
            name
            for name, field in spec.args_schema().fields.items()
            if name not in path_arguments | _UPLOAD_FIELDS and not isinstance(field, FileField)
        ]
        if queried:
            only = spec.args_schema(only=queried)
            operation["parameters"] = [{"in": "query", "schema": only}]
    return operation


def _request_content(api, spec: MethodSpec) -> dict:
    content: dict = {"application/json": {"schema": spec.args_schema}}
    if spec.takes_files:  # the SDKs send files as multipart parts, the other fields as text
        schema = api.ma_plugin.converter.schema2jsonschema(spec.args_schema)
        for name, field in spec.args_schema().fields.items():
            if isinstance(field, FileField):
                schema["properties"][name] = dict(_BINARY)
        content["multipart/form-data"] = {"schema": schema}
    return content


def _openai_success(spec: MethodSpec) -> dict:
    if spec.name in BINARY_ANSWERS:
        media_types = _BINARY_MEDIA_TYPES.get(spec.name, ("*/*",))
        content = {media_type: {"schema": _BINARY} for media_type in media_types}
        description = "The bytes, with their MIME type."
    else:
        content = {"application/json": {"schema": {}}}
        description = "The upstream's answer, as the OpenAI API defines it."
    if spec.name in STREAMING or spec.streams_as:
        content = {**content, "text/event-stream": {"schema": _STREAM}}
        description += " With `stream: true`, its chunks as server-sent events."
    return {"description": description, "headers": _V1_HEADERS, "content": content}


def _openai_errors() -> dict:
    """An OpenAI error object per HTTP status the door answers, naming the gateway codes."""
    codes_by_status: dict[int, list[str]] = defaultdict(list)
    for code, entry in ERROR_CODES.items():
        if code not in ANSWERED_CODES:
            codes_by_status[entry.http_status].append(code)
    return {
        str(status): {
            "description": f"Gateway codes {', '.join(codes)} (in `error.code`).",
            "headers": _V1_HEADERS,
            "content": {"application/json": {"schema": OpenAIErrorDoc}},
        }
        for status, codes in sorted(codes_by_status.items())
    }


# ---------------------------------------------------------------------------
# The Anthropic Messages door
# ---------------------------------------------------------------------------


class AnthropicErrorDetailDoc(Schema):
    class Meta:
        ordered = True

    type = fields.String(required=True, metadata={"example": "authentication_error"})
    message = fields.String(required=True, metadata={"description": "What failed, what to fix."})
    code = fields.String(
        required=True, metadata={"description": "The gateway's error code", "example": "4005"}
    )
    upstream_error = fields.Raw(
        metadata={"description": "The upstream's own error object, when the upstream refused."}
    )


class AnthropicErrorDoc(Schema):
    """An error of the /v1/messages door, in Anthropic's shape."""

    class Meta:
        ordered = True

    type = fields.String(required=True, metadata={"example": "error"})
    error = fields.Nested(AnthropicErrorDetailDoc, required=True)
    request_id = fields.String(metadata={"description": "This call's id, as in the usage log."})


_MESSAGE_EVENT = server_sent_event(
    "An event of Anthropic's stream as JSON (message_start, content_block_start, "
    "content_block_delta, content_block_stop, message_delta, message_stop; error)."
)


def register_anthropic_path(api) -> None:
    """`POST /v1/messages` (catalog method v1/messages): Anthropic's request as the body, the
    key in `x-api-key`, an `anthropic-version` header; a Message, its event stream, or an
    Anthropic error object by HTTP status."""
    spec = next(spec for spec in METHODS if spec.name == "v1/messages")
    api.spec.components.security_scheme(
        "anthropicApiKey",
        {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "KEY:SECRET: the gateway key, a colon, its secret (the SDK's api_key).",
        },
    )
    api.spec.tag(
        {
            "name": "anthropic",
            "description": "Anthropic Messages door for the official anthropic SDKs, answered "
            "by chat upstreams on the same accounts (docs/anthropic-door.md).",
        }
    )
    errors = _openai_errors()
    errors["405"] = {"description": "A verb other than POST.", "headers": {"Allow": ALLOW_HEADER}}
    for answer in errors.values():
        answer["content"] = {"application/json": {"schema": AnthropicErrorDoc}}
    operation = {
        "tags": ["anthropic"],
        "summary": spec.summary,
        "description": "Catalog method `v1/messages`; the body as in Anthropic's Messages API "
        f"(schema `{spec.args_schema.__name__}`), translated to a chat call.",
        "security": [{"anthropicApiKey": []}, {"gatewayBearer": []}],
        "parameters": [
            {
                "in": "header",
                "name": "anthropic-version",
                "required": True,
                "schema": {**STRING_SCHEMA, "example": "2023-06-01"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": spec.args_schema}},
        },
        "responses": {
            "200": {
                "description": "A Message; with `stream: true`, Anthropic's event stream.",
                "headers": _V1_HEADERS,
                "content": {
                    "application/json": {"schema": {}},
                    "text/event-stream": {"schema": _MESSAGE_EVENT},
                },
            },
            **errors,
        },
    }
    rule = Rule("/v1/messages", defaults={})  # flask-smorest reads the path off a bound rule
    Map([rule])
    api.spec.path(rule=rule, operations={"post": operation})
