"""What the OpenAPI document says: /api (parameters from the CommonParams schema, the
envelope, the formats, the error codes and each catalog method's `_o_args` schema), the
service endpoints' answers, and the /v1 door (a path per catalog route)."""

from __future__ import annotations

from collections import defaultdict

from marshmallow import Schema, fields, validate
from werkzeug.routing import Map, Rule

from proxy.catalog import BINARY_ANSWERS, METHODS, MethodSpec, openai_routes
from proxy.errors import ANSWERED_CODES, ERROR_CODES
from proxy.formats import RESULT_TYPES
from proxy.handlers.openai import STREAMING
from proxy.params import CommonParams
from proxy.uploads import FILE_FIELDS, FileField


class EnvelopeDoc(Schema):
    """The onebound envelope (field order is part of the contract)."""

    class Meta:
        ordered = True

    response = fields.Raw(metadata={"description": "The upstream payload, or its error object."})
    error = fields.String(metadata={"description": "Short machine word; empty on success."})
    reason = fields.String(metadata={"description": "Human text in `lang`: what to fix."})
    error_code = fields.String(metadata={"description": "Code of the table, as a string."})
    cache = fields.Integer(metadata={"description": "1 when served from the cache."})
    api_info = fields.String(
        metadata={"example": "today:7 max:30000 all[7=7+0+0];expires:2027-01-01"}
    )
    execution_time = fields.String(metadata={"example": "0.153"})
    server_time = fields.String(metadata={"example": "Beijing/2026-11-21 13:05:54"})
    client_ip = fields.String()
    call_args = fields.Dict(metadata={"description": "Echo of the call; never key/secret/sign."})
    api_type = fields.String(metadata={"example": "openai"})
    translate_language = fields.String(metadata={"example": "cn"})
    server_memory = fields.String(metadata={"example": "5.89MB"})
    request_id = fields.String(metadata={"example": "gw-1.6314322f94ee5a1b"})
    last_id = fields.String(metadata={"description": "Id of this call's usage record."})


class ServiceInfoDoc(Schema):
    """GET /: what the service is and the endpoints it serves."""

    class Meta:
        ordered = True

    service = fields.String(metadata={"example": "onebound-style API gateway"})
    version = fields.String(metadata={"example": "1"})
    endpoints = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"description": "Each endpoint and what it serves."},
    )
    platforms = fields.List(fields.String(), metadata={"example": ["openai"]})
    result_types = fields.List(fields.String(), metadata={"example": list(RESULT_TYPES)})


class HealthDoc(Schema):
    """GET /health: the database, the answer cache and, when configured, Redis."""

    class Meta:
        ordered = True

    status = fields.String(validate=validate.OneOf(["healthy", "degraded", "unhealthy"]))
    database = fields.String(validate=validate.OneOf(["ok", "unreachable"]))
    cache = fields.Dict(
        metadata={
            "description": "backend (memory or redis), state (ok or unreachable) and its "
            "figures (entries, bytes, max_bytes or max_entry_bytes, ttl_seconds)"
        }
    )
    redis = fields.String(
        validate=validate.OneOf(["ok", "unreachable"]),
        metadata={"description": "Only when REDIS_URL is set."},
    )
    upstreams = fields.List(
        fields.Dict(),
        metadata={
            "description": "each upstream member: name, base_url, models, weight, priority, "
            "state (healthy, cooling, half-open, revoked), recent_failures, "
            "cooldown_remaining_seconds; never a key (docs/upstreams.md)"
        },
    )


class MethodEntryDoc(Schema):
    class Meta:
        ordered = True

    method = fields.String(metadata={"example": "v1/chat/completions"})
    platform = fields.String(metadata={"example": "openai"})
    summary = fields.String()
    cacheable = fields.Boolean()
    charged = fields.Boolean()
    price = fields.Integer(metadata={"description": "Credits a charged call costs."})
    openai_routes = fields.List(
        fields.String(),
        metadata={"description": "Where /v1 serves it", "example": ["POST /v1/chat/completions"]},
    )
    o_args_schema = fields.Dict(metadata={"description": "JSON Schema of its `_o_args`."})


class MethodCatalogDoc(Schema):
    """GET /api/methods: the method catalog."""

    methods = fields.List(fields.Nested(MethodEntryDoc))


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


def _query_parameters() -> list[dict]:
    parameters = []
    for name, field in CommonParams().fields.items():
        schema: dict = {"type": "string"}
        for validator in field.validators:
            if isinstance(validator, validate.OneOf):
                schema["enum"] = list(validator.choices)
        if field.load_default not in (None, "") and isinstance(field.load_default, str):
            schema["default"] = field.load_default
        parameters.append(
            {
                "in": "query",
                "name": field.data_key or name,
                "required": False,
                "schema": schema,
                "description": field.metadata.get("description", ""),
            }
        )
    return parameters


def _codes_table() -> str:
    rows = [
        f"| {e.code} | {e.word or '-'} | {e.en} | {e.cn} | {'yes' if e.charged else 'no'} |"
        for e in ERROR_CODES.values()
    ]
    return "\n".join(["| code | error | en | cn | charged |", "|---|---|---|---|---|", *rows])


def _methods_table() -> str:
    rows = [
        f"| `{m.name}` | {m.platform} | {m.summary} | `{m.args_schema.__name__}` |" for m in METHODS
    ]
    return "\n".join(["| method | platform | what | _o_args schema |", "|---|---|---|---|", *rows])


_ENVELOPE_CONTENT = {
    "application/json": {"schema": EnvelopeDoc},
    "application/javascript": {"schema": {"type": "string"}},
    "application/xml": {"schema": {"type": "string"}},
    "text/plain": {"schema": {"type": "string", "description": "PHP serialize or var_export"}},
}
_STRING = {"type": "string"}


def _server_sent_event(data: str) -> dict:
    """One event of a text/event-stream answer: OpenAPI 3.0 has a stream's `schema` describe
    each event (3.2 names it itemSchema), as schemathesis and other validators read it."""
    return {
        "type": "object",
        "description": "One server-sent event.",
        "properties": {
            "data": {"type": "string", "description": data},
            "event": _STRING,
            "id": _STRING,
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    }


_STREAM = _server_sent_event("A chunk as JSON, or [DONE] after the last one.")
_ALLOW = {"description": "The verbs the path takes.", "schema": _STRING}

API_DOC = {
    "parameters": _query_parameters(),
    "description": (
        "Every answer is HTTP 200 with the envelope (code also in header `X-Error-Code`), "
        f"rendered as `result_type` ({', '.join(RESULT_TYPES)}); `callback` wraps json/jsonu "
        "as JSONP. Key and secret may come as headers `X-API-KEY` / `X-API-SECRET`. "
        "`_o_args.stream=true` answers server-sent events of envelopes (docs/streaming.md). "
        "A verb other than GET or POST is HTTP 405 with `Allow` and the envelope (4003).\n\n"
        "Methods (their `_o_args` schemas are under components/schemas):\n\n"
        + _methods_table()
        + "\n\nError codes:\n\n"
        + _codes_table()
    ),
    "responses": {
        "200": {
            "description": "The envelope in the requested format.",
            "content": {
                **_ENVELOPE_CONTENT,
                "text/event-stream": {
                    "schema": _server_sent_event(
                        "An envelope as JSON with its `status`: START, MIDDLE, END."
                    )
                },
            },
        },
        "405": {
            "description": "A verb the door does not take: the envelope (4003), HTTP 405.",
            "headers": {"Allow": _ALLOW},
            "content": _ENVELOPE_CONTENT,
        },
    },
}


def register_method_schemas(api) -> None:
    api.register_field(FileField, "string", "byte")  # base64 text (or a multipart part)
    for spec in METHODS:
        name = spec.args_schema.__name__
        if name not in api.spec.components.schemas:
            api.spec.components.schema(name, schema=spec.args_schema)


def method_catalog_entries(api, price_of) -> list[dict]:
    """The catalog for GET /api/methods; `price_of(method)` gives the configured credits."""
    converter = api.ma_plugin.converter
    return [
        {
            "method": spec.name,
            "platform": spec.platform,
            "summary": spec.summary,
            "cacheable": spec.cacheable,
            "charged": spec.charged,
            "price": price_of(spec.name) if spec.charged else 0,
            "openai_routes": [_openapi_path(route) for route in spec.openai_routes],
            "o_args_schema": converter.schema2jsonschema(spec.args_schema),
        }
        for spec in METHODS
    ]


# ---------------------------------------------------------------------------
# The /v1 door
# ---------------------------------------------------------------------------

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
        api.spec.components.header(name, {"description": description, "schema": _STRING})
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


def _openapi_path(route: str) -> str:
    """`GET /v1/files/<file_id>` as OpenAPI writes it: `GET /v1/files/{file_id}`."""
    return route.replace("<", "{").replace(">", "}")


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


_MESSAGE_EVENT = _server_sent_event(
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
    errors["405"] = {"description": "A verb other than POST.", "headers": {"Allow": _ALLOW}}
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
                "schema": {**_STRING, "example": "2023-06-01"},
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
