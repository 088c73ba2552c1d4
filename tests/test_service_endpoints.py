"""OpenAPI, offline Swagger UI, the method catalog, health and service info."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import OpenAPIV30SpecValidator, validate

from proxy.catalog import METHODS
from tests.servers import free_port


@pytest.fixture
def spec(client) -> dict:
    return client.get("/openapi.json").get_json()


def test_openapi_document_is_valid_openapi_3_0_3(spec):
    assert spec["openapi"] == "3.0.3"
    validate(spec, cls=OpenAPIV30SpecValidator)


def test_openapi_documents_every_v1_route_of_the_catalog_and_the_messages_door(spec):
    documented = {
        (verb.upper(), path)
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
        for verb in item
        if verb != "parameters"
    }
    assert documented == {
        (route.split(" ")[0], route.split(" ")[1].replace("<", "{").replace(">", "}"))
        for m in METHODS
        for route in m.openai_routes
    } | {("POST", "/v1/messages")}  # the Anthropic door's (proxy/doors/anthropic.py)


def test_openapi_v1_body_is_the_methods_o_args_schema(spec):
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionArgs"
    }


def test_openapi_v1_uploads_also_take_multipart_with_binary_file_parts(spec):
    content = spec["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]
    multipart = content["multipart/form-data"]["schema"]
    assert multipart["properties"]["file"] == {"type": "string", "format": "binary"}
    assert multipart["required"] == ["file"]


def test_openapi_v1_file_routes_take_the_file_id_from_the_path(spec):
    for path in ("/v1/files/{file_id}", "/v1/files/{file_id}/content"):
        parameters = spec["paths"][path]["parameters"]
        assert parameters == [
            {
                "in": "path",
                "name": "file_id",
                "required": True,
                "schema": {"type": "string", "pattern": "^file-[A-Za-z0-9_-]{1,64}$"},
            }
        ]


def test_openapi_v1_listing_takes_its_query_parameters(spec):
    parameters = spec["paths"]["/v1/files"]["get"]["parameters"]
    assert [p["name"] for p in parameters] == ["purpose", "limit", "order", "after"]
    assert {p["in"] for p in parameters} == {"query"}


def test_openapi_v1_routes_need_the_gateway_key_as_a_bearer_token(spec):
    schemes = spec["components"]["securitySchemes"]
    assert schemes["gatewayBearer"]["type"] == "http"
    assert schemes["gatewayBearer"]["scheme"] == "bearer"
    assert (schemes["gatewayApiKey"]["in"], schemes["gatewayApiKey"]["name"]) == (
        "header",
        "api-key",
    )
    operation = spec["paths"]["/v1/models"]["get"]
    assert operation["security"] == [{"gatewayBearer": []}, {"gatewayApiKey": []}]


def test_openapi_v1_answers_json_streams_or_bytes(spec):
    paths = spec["paths"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    embeddings = paths["/v1/embeddings"]["post"]["responses"]["200"]["content"]
    assert set(embeddings) == {"application/json"}
    speech = paths["/v1/audio/speech"]["post"]["responses"]["200"]["content"]
    assert speech["audio/*"]["schema"] == {"type": "string", "format": "binary"}
    content = paths["/v1/files/{file_id}/content"]["get"]["responses"]["200"]["content"]
    assert content["*/*"]["schema"] == {"type": "string", "format": "binary"}


def server_sent_events(text: str) -> list[dict]:
    """The events of a text/event-stream body as their fields (`data` and the rest)."""
    events = []
    for block in text.split("\n\n"):
        fields = [line.split(": ", 1) for line in block.splitlines() if ": " in line]
        if fields:
            events.append(dict(fields))
    return events


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", {"stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", {"stream": True, "prompt": "hi"}),
    ],
)
def test_v1_streams_match_their_documented_event_schema(spec, client, account, path, body):
    response = client.post(
        path, json=body, headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"}
    )
    assert response.mimetype == "text/event-stream"
    events = server_sent_events(response.get_data(as_text=True))
    assert events[-1] == {"data": "[DONE]"}
    # OpenAPI 3.0 has a stream's `schema` describe each of its events (3.2 calls it itemSchema).
    schema = spec["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    for event in events:
        OAS30Validator(schema["schema"]).validate(event)


def test_openapi_v1_errors_are_openai_error_objects_by_status(spec):
    responses = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "403", "404", "429", "500", "502", "503", "504"} <= set(responses)
    for status in ("400", "401", "429", "502"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OpenAIErrorDoc"}
    assert "4013" in responses["429"]["description"]
    error = spec["components"]["schemas"]["OpenAIErrorDoc"]
    assert error["required"] == ["error"]


@pytest.mark.parametrize("verb", ["get", "post"])
def test_openapi_documents_the_405_envelope_of_the_api_door_with_allow(spec, verb):
    response = spec["paths"]["/api"][verb]["responses"]["405"]
    assert response["headers"]["Allow"]["schema"] == {"type": "string"}
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EnvelopeDoc"
    }


@pytest.mark.parametrize(
    ("path", "schema"),
    [("/", "ServiceInfoDoc"), ("/health", "HealthDoc"), ("/api/methods", "MethodCatalogDoc")],
)
def test_openapi_documents_the_200_answer_of_the_service_endpoints(spec, path, schema):
    content = spec["paths"][path]["get"]["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}
    assert spec["components"]["schemas"][schema]["properties"]


def assert_matches_documented_schema(spec, response, path, verb):
    documented = spec["paths"][path][verb]["responses"][str(response.status_code)]
    schema = documented["content"][response.mimetype]["schema"]
    # The $refs resolve against the document's components, as a client's validator would.
    OAS30Validator({**schema, "components": spec["components"]}).validate(response.get_json())


@pytest.mark.parametrize("path", ["/", "/health", "/api/methods"])
def test_service_answers_match_their_documented_schemas(spec, client, path):
    assert_matches_documented_schema(spec, client.get(path), path, "get")


def test_v1_errors_and_api_refusals_match_their_documented_schemas(spec, client, account):
    refused = client.post(
        "/v1/chat/completions",
        json={},
        headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
    )
    assert refused.status_code == 400
    assert_matches_documented_schema(spec, refused, "/v1/chat/completions", "post")
    unknown_key = client.get("/v1/models", headers={"Authorization": "Bearer k:s"})
    assert unknown_key.status_code == 401
    assert_matches_documented_schema(spec, unknown_key, "/v1/models", "get")
    wrong_verb = client.put("/api")
    assert wrong_verb.status_code == 405
    assert_matches_documented_schema(spec, wrong_verb, "/api", "get")


def test_openapi_documents_the_503_of_an_unhealthy_database(spec):
    content = spec["paths"]["/health"]["get"]["responses"]["503"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/HealthDoc"}


def test_openapi_documents_api_parameters_and_method_schemas(client):
    spec = client.get("/openapi.json").get_json()
    operation = spec["paths"]["/api"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {
        "key",
        "secret",
        "method",
        "_o_args",
        "cache",
        "result_type",
        "lang",
        "version",
        "callback",
    } <= names
    result_type = next(p for p in operation["parameters"] if p["name"] == "result_type")
    assert result_type["schema"]["enum"] == ["json", "jsonu", "xml", "serialize", "var_export"]
    assert "4017" in operation["description"]
    assert "messages" in spec["components"]["schemas"]["ChatCompletionArgs"]["properties"]


def test_swagger_ui_loads_assets_from_this_server(client):
    page = client.get("/docs").get_data(as_text=True)
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources and all(s.startswith("/docs/assets/") for s in sources)
    assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200


def test_methods_endpoint_lists_catalog_with_schemas(client):
    listed = client.get("/api/methods").get_json()["methods"]
    assert [m["method"] for m in listed] == [m.name for m in METHODS]
    chat = next(m for m in listed if m["method"] == "v1/chat/completions")
    assert chat["o_args_schema"]["required"] == ["messages"]
    assert chat["cacheable"] is True and chat["platform"] == "openai"


def test_methods_endpoint_lists_the_v1_routes_of_each_method(client):
    listed = {
        m["method"]: m["openai_routes"] for m in client.get("/api/methods").get_json()["methods"]
    }
    assert listed["v1/chat/completions"] == ["POST /v1/chat/completions"]
    assert listed["v1/files"] == ["GET /v1/files", "POST /v1/files"]
    assert listed["v1/files/retrieve"] == ["GET /v1/files/{file_id}"]
    assert listed["images/submit"] == []


def default_member(stub) -> dict:
    """/health's entry for the default upstream (the stub) of make_app."""
    return {
        "name": "default",
        "base_url": stub.base_url,
        "models": ["(any model no pattern claims)"],
        "weight": 1,
        "priority": 0,
        "state": "healthy",
        "recent_failures": 0,
        "cooldown_remaining_seconds": 0.0,
    }


def test_health_checks_database_and_reports_the_shared_cache_and_this_workers_memory(
    make_app, stub
):
    client = make_app(
        CACHE_TTL_SECONDS=600, CACHE_MAX_BYTES=1000000, CACHE_MEMORY_BYTES=200000
    ).test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "healthy",
        "database": "ok",
        "cache": {
            "backend": "sqlite",
            "state": "ok",
            "entries": 0,
            "bytes": 0,
            "max_bytes": 1000000,
            "ttl_seconds": 600,
            "memory": {"entries": 0, "bytes": 0, "max_bytes": 200000},
        },
        "upstreams": [default_member(stub)],
    }


def test_health_counts_the_cached_answers_of_the_store_and_this_worker(client, call):
    assert (
        call(o_args={"messages": [{"role": "user", "content": "hi"}]}, cache="yes")["error_code"]
        == "0000"
    )
    cache = client.get("/health").get_json()["cache"]
    assert cache["entries"] == 1 and cache["bytes"] > 0
    assert cache["memory"]["entries"] == 1 and cache["memory"]["bytes"] > cache["bytes"]


def test_health_reports_the_in_process_cache_for_an_in_memory_database(make_app):
    client = make_app(DATABASE_URL="sqlite://", CACHE_DIR="", CACHE_MAX_BYTES=1000000).test_client()
    assert client.get("/health").get_json()["cache"] == {
        "backend": "memory",
        "state": "ok",
        "entries": 0,
        "bytes": 0,
        "max_bytes": 1000000,
        "ttl_seconds": 600,
    }


def test_health_is_503_when_database_is_gone(app, client, monkeypatch):
    def refuse():
        raise OSError("database down")

    monkeypatch.setattr(app.extensions["gateway"], "ping_database", refuse)
    response = client.get("/health")
    assert response.status_code == 503 and response.get_json()["status"] == "unhealthy"


def test_root_lists_endpoints(client):
    info = client.get("/").get_json()
    assert "/api" in info["endpoints"] and "/v1/messages" in info["endpoints"]
    assert info["platforms"] == ["anthropic", "feishu", "openai"]


def test_health_reports_redis_and_the_redis_cache_when_configured(make_app, redis_server, stub):
    client = make_app(
        REDIS_URL=redis_server.url, CACHE_TTL_SECONDS=600, CACHE_MAX_BYTES=1000000
    ).test_client()
    assert client.get("/health").get_json() == {
        "status": "healthy",
        "database": "ok",
        "cache": {
            "backend": "redis",
            "state": "ok",
            "max_entry_bytes": 1000000,
            "ttl_seconds": 600,
            "memory": {"entries": 0, "bytes": 0, "max_bytes": 32 * 1024 * 1024},
        },
        "redis": "ok",
        "upstreams": [default_member(stub)],
    }


def test_health_is_degraded_not_down_when_redis_is_unreachable(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.get("/health")
    assert response.status_code == 200
    report = response.get_json()
    assert (report["status"], report["database"], report["redis"]) == (
        "degraded",
        "ok",
        "unreachable",
    )
    assert report["cache"]["state"] == "unreachable"


def test_api_methods_lists_the_responses_methods_with_their_v1_paths(client):
    listed = {entry["method"]: entry for entry in client.get("/api/methods").get_json()["methods"]}
    assert {name: listed[name]["openai_routes"] for name in listed if "responses" in name} == {
        "v1/responses": ["POST /v1/responses"],
        "v1/responses/retrieve": ["GET /v1/responses/{response_id}"],
        "v1/responses/delete": ["DELETE /v1/responses/{response_id}"],
        "v1/responses/input_items": ["GET /v1/responses/{response_id}/input_items"],
    }
    assert listed["v1/responses"]["o_args_schema"]["required"] == ["input"]


def test_docs_methods_md_has_a_row_for_every_catalog_method():
    table = (Path(__file__).resolve().parent.parent / "docs" / "methods.md").read_text()
    assert [m.name for m in METHODS if f"| `{m.name}` |" not in table] == []


def test_health_never_shows_a_key_written_into_openai_base_url(make_app, stub):
    """OPENAI_BASE_URL is the operator's to write; a user part or a query may hold a key."""
    host = stub.base_url.removeprefix("http://")
    app = make_app(OPENAI_BASE_URL=f"http://u:sk-INURL@{host}?api-key=sk-INQUERY")
    answer = app.test_client().get("/health")
    [member] = answer.get_json()["upstreams"]
    assert member["base_url"] == stub.base_url
    assert "sk-IN" not in answer.get_data(as_text=True)
