"""Requests no view serves (a verb a path does not take, a path nobody serves) are answered in
the shape of the door they came in by, never as Flask's default page: the envelope on /api,
an OpenAI error object on /v1, JSON elsewhere; a 405 always names the verbs in `Allow`."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from proxy import storage


def calling_verbs(allow: str) -> str:
    """The verbs a reason names: those of `Allow` that call something (not HEAD or OPTIONS)."""
    return ", ".join(v for v in allow.split(", ") if v not in ("HEAD", "OPTIONS"))


def usage_row(app, request_id: str):
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(
            select(storage.usage).where(storage.usage.c.request_id == request_id)
        ).one()


@pytest.mark.parametrize("path", ["/api", "/api/", "/openai/custom", "/openai/custom/"])
@pytest.mark.parametrize("verb", ["PUT", "DELETE", "PATCH"])
def test_a_wrong_verb_on_the_api_door_is_405_with_allow_and_the_envelope(client, path, verb):
    response = client.open(path, method=verb)
    envelope = response.get_json()
    assert (response.status_code, response.headers["Allow"]) == (405, "GET, HEAD, OPTIONS, POST")
    assert (envelope["error_code"], envelope["error"]) == ("4003", "param_error")
    assert envelope["reason"].endswith(f"{verb} is not served here; call it with GET or POST")
    assert response.headers["X-Error-Code"] == "4003"
    assert response.headers["X-Request-Id"] == envelope["request_id"]


def test_a_wrong_verb_on_the_api_door_writes_its_usage_row(app, client):
    envelope = client.put("/api").get_json()
    row = usage_row(app, envelope["request_id"])
    assert (str(row.id), row.error_code, row.charged) == (envelope["last_id"], "4003", False)


def test_a_wrong_verb_on_the_api_door_answers_in_the_format_asked(client):
    response = client.delete("/api?result_type=xml&lang=en")
    body = response.get_data(as_text=True)
    assert (response.status_code, response.content_type) == (405, "application/xml; charset=utf-8")
    assert "<error_code>4003</error_code>" in body
    assert "<reason>Param error: DELETE is not served here" in body


@pytest.mark.parametrize(
    ("verb", "path", "allow"),
    [
        ("PUT", "/v1/chat/completions", "OPTIONS, POST"),
        ("GET", "/v1/chat/completions", "OPTIONS, POST"),
        ("DELETE", "/v1/models", "GET, HEAD, OPTIONS"),
        ("PATCH", "/v1/files", "GET, HEAD, OPTIONS, POST"),
        ("POST", "/v1/files/file-abc", "DELETE, GET, HEAD, OPTIONS"),
    ],
)
def test_a_wrong_verb_on_a_v1_path_is_an_openai_405_with_allow(client, verb, path, allow):
    response = client.open(path, method=verb)
    error = response.get_json()["error"]
    assert (response.status_code, response.headers["Allow"]) == (405, allow)
    assert (error["code"], error["type"]) == ("4003", "invalid_request_error")
    assert error["message"] == (
        f"Param error: {verb} is not served on {path}; use {calling_verbs(allow)}"
    )
    assert response.headers["X-Error-Code"] == "4003"
    assert response.headers["X-Request-Id"].startswith("gw-1.")


def test_an_unknown_v1_path_is_404_with_the_gateway_headers_and_a_usage_row(app, client):
    response = client.post("/v1/nope", json={})
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "4010")
    assert response.headers["X-Error-Code"] == "4010"
    row = usage_row(app, response.headers["X-Request-Id"])
    assert (row.error_code, row.charged) == ("4010", False)


@pytest.mark.parametrize(
    ("verb", "path", "allow"),
    [
        ("DELETE", "/health", "GET, HEAD, OPTIONS"),
        ("POST", "/", "GET, HEAD, OPTIONS"),
        ("PUT", "/api/methods", "GET, HEAD, OPTIONS"),
        ("POST", "/openapi.json", "GET, HEAD, OPTIONS"),
    ],
)
def test_a_wrong_verb_elsewhere_is_json_405_with_allow(client, verb, path, allow):
    response = client.open(path, method=verb)
    assert (response.status_code, response.headers["Allow"]) == (405, allow)
    assert response.get_json() == {
        "code": 405,
        "status": "Method Not Allowed",
        "message": f"{verb} is not served on {path}; use {calling_verbs(allow)}",
    }


def test_an_unknown_path_elsewhere_is_json_404(client):
    response = client.get("/nope")
    assert (response.status_code, response.content_type) == (404, "application/json")
    assert response.get_json()["code"] == 404
