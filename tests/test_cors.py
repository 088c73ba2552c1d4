"""Cross-origin calls from browser pages: allowed only for the origins CORS_ORIGINS names."""

from __future__ import annotations

from proxy.cors import EXPOSED_HEADERS
from tests.conftest import create_account

APP_ORIGIN = "https://app.example"


def chat_query(account) -> dict:
    return {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": '{"messages":[{"role":"user","content":"hi"}]}',
    }


def test_no_cross_origin_headers_unless_configured(client, account):
    response = client.get("/api", query_string=chat_query(account), headers={"Origin": APP_ORIGIN})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_listed_origin_may_read_the_answer_and_its_gateway_headers(make_app):
    app = make_app(CORS_ORIGINS=f"{APP_ORIGIN}, https://admin.example/")
    account = create_account(app.test_cli_runner())
    response = app.test_client().get(
        "/api", query_string=chat_query(account), headers={"Origin": APP_ORIGIN}
    )
    assert response.get_json()["error_code"] == "0000"
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert response.headers["Access-Control-Expose-Headers"] == EXPOSED_HEADERS
    assert response.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_an_unlisted_origin_gets_no_allow_origin(make_app):
    app = make_app(CORS_ORIGINS=APP_ORIGIN)
    account = create_account(app.test_cli_runner())
    response = app.test_client().get(
        "/api", query_string=chat_query(account), headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


def test_star_allows_every_origin_without_credentials(make_app):
    app = make_app(CORS_ORIGINS="*")
    response = app.test_client().get("/health", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_preflight_for_the_openai_door_allows_the_bearer_header(make_app):
    client = make_app(CORS_ORIGINS=APP_ORIGIN).test_client()
    response = client.options(
        "/v1/chat/completions",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type", "api-key", "x-api-key"} <= allowed
    assert response.headers["Access-Control-Max-Age"] == "600"
