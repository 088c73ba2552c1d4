"""What the OpenAPI document says about /api: parameters from the CommonParams schema, the
envelope, the formats, the error codes and each catalog method's `_o_args` schema."""

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


API_DOC = {
    "parameters": _query_parameters(),
    "description": (
        "Every answer is HTTP 200 with the envelope (code also in header `X-Error-Code`), "
        f"rendered as `result_type` ({', '.join(RESULT_TYPES)}); `callback` wraps json/jsonu "
        "as JSONP. Key and secret may come as headers `X-API-KEY` / `X-API-SECRET`.\n\n"
        "Methods (their `_o_args` schemas are under components/schemas):\n\n"
        + _methods_table()
        + "\n\nError codes:\n\n"
        + _codes_table()
    ),
    "responses": {
        "200": {
            "description": "The envelope in the requested format.",
            "content": {
                "application/json": {"schema": EnvelopeDoc},
                "application/javascript": {"schema": {"type": "string"}},
                "application/xml": {"schema": {"type": "string"}},
                "text/plain": {
                    "schema": {"type": "string", "description": "PHP serialize or var_export"}
                },
            },
        }
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
            "o_args_schema": converter.schema2jsonschema(spec.args_schema),
        }
        for spec in METHODS
    ]
