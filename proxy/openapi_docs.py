"""What the OpenAPI document says: /api (parameters from the CommonParams schema, the
envelope, the formats, the error codes and each catalog method's `_o_args` schema), the
service endpoints' answers. The SDK doors' paths (/v1, /v1/messages) are described in
proxy/openapi_sdk_paths.py."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from proxy.catalog import METHODS
from proxy.errors import ERROR_CODES
from proxy.formats import RESULT_TYPES
from proxy.params import CommonParams
from proxy.uploads import FileField


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
STRING_SCHEMA = {"type": "string"}


def server_sent_event(data: str) -> dict:
    """One event of a text/event-stream answer: OpenAPI 3.0 has a stream's `schema` describe
    each event (3.2 names it itemSchema), as schemathesis and other validators read it."""
    return {
        "type": "object",
        "description": "One server-sent event.",
        "properties": {
            "data": {"type": "string", "description": data},
            "event": STRING_SCHEMA,
            "id": STRING_SCHEMA,
            "retry": {"type": "integer"},
        },
        "required": ["data"],
    }


ALLOW_HEADER = {"description": "The verbs the path takes.", "schema": STRING_SCHEMA}

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
                    "schema": server_sent_event(
                        "An envelope as JSON with its `status`: START, MIDDLE, END."
                    )
                },
            },
        },
        "405": {
            "description": "A verb the door does not take: the envelope (4003), HTTP 405.",
            "headers": {"Allow": ALLOW_HEADER},
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
            "openai_routes": [openapi_path(route) for route in spec.openai_routes],
            "o_args_schema": converter.schema2jsonschema(spec.args_schema),
        }
        for spec in METHODS
    ]


# ---------------------------------------------------------------------------
# The /v1 door
# ---------------------------------------------------------------------------


def openapi_path(route: str) -> str:
    """`GET /v1/files/<file_id>` as OpenAPI writes it: `GET /v1/files/{file_id}`."""
    return route.replace("<", "{").replace(">", "}")
