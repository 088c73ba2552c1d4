"""OpenAPI, offline Swagger UI, the method catalog, health and service info."""

from __future__ import annotations

import re

from proxy.catalog import METHODS
from tests.servers import free_port


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


def test_health_checks_database_and_reports_the_in_process_cache(make_app):
    client = make_app(CACHE_TTL_SECONDS=600, CACHE_MAX_BYTES=1000000).test_client()
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "healthy",
        "database": "ok",
        "cache": {
            "backend": "memory",
            "state": "ok",
            "entries": 0,
            "bytes": 0,
            "max_bytes": 1000000,
            "ttl_seconds": 600,
        },
    }


def test_health_counts_the_cached_answers_of_this_worker(client, call):
    assert (
        call(o_args={"messages": [{"role": "user", "content": "hi"}]}, cache="yes")["error_code"]
        == "0000"
    )
    cache = client.get("/health").get_json()["cache"]
    assert cache["entries"] == 1 and cache["bytes"] > 0


def test_health_is_503_when_database_is_gone(app, client, monkeypatch):
    def refuse():
        raise OSError("database down")

    monkeypatch.setattr(app.extensions["gateway"], "ping_database", refuse)
    response = client.get("/health")
    assert response.status_code == 503 and response.get_json()["status"] == "unhealthy"


def test_root_lists_endpoints(client):
    info = client.get("/").get_json()
    assert "/api" in info["endpoints"] and info["platforms"] == ["openai"]


def test_health_reports_redis_and_the_redis_cache_when_configured(make_app, redis_server):
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
        },
        "redis": "ok",
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
