"""The Feishu platform (proxy/handlers/feishu.py): `feishu/auth` on /api and /feishu/custom/,
the stub's Feishu as the real HTTP upstream, the token kept in the shared store."""

from __future__ import annotations

import json

from redis import Redis
from sqlalchemy import select

from proxy import storage
from tests.conftest import create_account

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"


def token_requests(stub) -> list:
    return stub.requests_seen(TOKEN_PATH)


def feishu_call(client, account, path="/api", **params):
    query = {"key": account["key"], "secret": account["secret"], "method": "feishu/auth"}
    response = client.get(path, query_string={**query, **params})
    assert response.status_code == 200
    return response.get_json()


def usage_row(app, last_id: str):
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(
            select(storage.usage).where(storage.usage.c.id == int(last_id))
        ).one()


def test_feishu_auth_on_api_answers_the_tenant_token_in_the_envelope(client, account):
    envelope = feishu_call(client, account)
    assert envelope["error_code"] == "0000", envelope
    assert envelope["api_type"] == "feishu"
    assert envelope["response"]["tenant_access_token"].startswith("t-stub-")
    assert 7200 - 300 - 5 <= envelope["response"]["expire"] <= 7200
    assert set(envelope["response"]) == {"tenant_access_token", "expire"}


def test_feishu_custom_path_answers_the_same_token(client, account):
    first = feishu_call(client, account)
    custom = feishu_call(client, account, path="/feishu/custom/")
    assert custom["error_code"] == "0000", custom
    assert custom["api_type"] == "feishu"
    assert custom["response"]["tenant_access_token"] == first["response"]["tenant_access_token"]


def test_the_token_request_sends_the_configured_app_and_no_client_credential(client, account, stub):
    feishu_call(client, account)
    sent = token_requests(stub)
    assert [entry["body"] for entry in sent] == [
        {"app_id": "cli_stub_app", "app_secret": "stub-app-secret"}
    ]
    assert "authorization" not in sent[0]["headers"]


def test_a_second_call_reuses_the_kept_token_without_asking_feishu(client, account, stub):
    first, second = feishu_call(client, account), feishu_call(client, account)
    assert second["response"]["tenant_access_token"] == first["response"]["tenant_access_token"]
    assert len(token_requests(stub)) == 1


def test_apps_sharing_an_answer_store_share_the_token(make_app, tmp_path, stub):
    """Two apps on one store: two gunicorn workers, as far as the token is concerned."""
    shared = {"DATABASE_URL": f"sqlite:///{tmp_path / 'one.sqlite3'}"}
    shared["CACHE_DIR"] = str(tmp_path / "one-store")
    first_app, second_app = make_app(**shared), make_app(**shared)
    account = create_account(first_app.test_cli_runner())
    first = feishu_call(first_app.test_client(), account)
    second = feishu_call(second_app.test_client(), account)
    assert second["response"]["tenant_access_token"] == first["response"]["tenant_access_token"]
    assert len(token_requests(stub)) == 1


def test_the_token_is_shared_through_redis_until_the_margin_before_expiry(
    make_app, redis_server, stub, tmp_path
):
    redis = Redis.from_url(redis_server.url)
    for key in redis.scan_iter("*feishu-tenant-token*"):
        redis.delete(key)  # another test's token, from this session's stub
    shared = {"REDIS_URL": redis_server.url, "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}"}
    first_app, second_app = make_app(**shared), make_app(**shared)
    account = create_account(first_app.test_cli_runner())
    first = feishu_call(first_app.test_client(), account)
    second = feishu_call(second_app.test_client(), account)
    assert second["response"]["tenant_access_token"] == first["response"]["tenant_access_token"]
    assert len(token_requests(stub)) == 1
    (key,) = redis.scan_iter("*feishu-tenant-token*")
    assert 7200 - 300 - 10 <= redis.ttl(key) <= 7200 - 300
    assert b"stub-app-secret" not in key + redis.get(key)


def test_a_token_within_the_margin_of_its_expiry_is_asked_for_again(make_app, stub):
    app = make_app(FEISHU_APP_ID="cli_stub_short")  # the stub's 60 s tokens; margin 300 s
    account = create_account(app.test_cli_runner())
    first = feishu_call(app.test_client(), account)
    second = feishu_call(app.test_client(), account)
    assert first["error_code"] == second["error_code"] == "0000"
    assert first["response"]["tenant_access_token"] != second["response"]["tenant_access_token"]
    assert len(token_requests(stub)) == 2


def test_feishu_call_on_an_account_without_the_platform_is_4012(client, runner):
    openai_only = create_account(runner, "openai-only", "--apis", "openai")
    envelope = feishu_call(client, openai_only, path="/feishu/custom/")
    assert envelope["error_code"] == "4012"
    assert "add feishu or feishu/auth" in envelope["reason"]


def test_an_account_with_feishu_added_gets_the_token_and_no_openai(client, runner):
    feishu_only = create_account(runner, "feishu-only", "--apis", "feishu")
    assert feishu_call(client, feishu_only)["error_code"] == "0000"
    chat = feishu_call(client, feishu_only, method="v1/models")
    assert chat["error_code"] == "4012"


def test_an_app_secret_from_the_client_is_refused_4003(client, account, stub):
    envelope = feishu_call(client, account, _o_args=json.dumps({"app_secret": "mine"}))
    assert envelope["error_code"] == "4003"
    assert "_o_args.app_secret" in envelope["reason"]
    assert token_requests(stub) == []


def test_feishu_on_the_openai_custom_path_is_4010(client, account):
    assert feishu_call(client, account, path="/openai/custom/")["error_code"] == "4010"


def test_a_refused_app_secret_is_4002_with_feishus_code_and_no_secret(make_app):
    app = make_app(FEISHU_APP_SECRET="not-the-secret")
    account = create_account(app.test_cli_runner())
    envelope = feishu_call(app.test_client(), account)
    assert envelope["error_code"] == "4002"
    assert envelope["response"] == {"code": 10014, "msg": "app secret invalid"}
    assert "FEISHU_APP_SECRET" in envelope["reason"]
    assert "not-the-secret" not in json.dumps(envelope)
    assert usage_row(app, envelope["last_id"]).charged is False


def test_feishu_unreachable_is_4001(make_app):
    app = make_app(FEISHU_BASE_URL="http://127.0.0.1:9")
    account = create_account(app.test_cli_runner())
    assert feishu_call(app.test_client(), account)["error_code"] == "4001"


def test_a_feishu_call_is_charged_with_one_usage_row_of_its_platform(app, client, account):
    envelope = feishu_call(client, account)
    assert envelope["api_info"].startswith("today:1 ")
    row = usage_row(app, envelope["last_id"])
    assert (row.method, row.platform, row.error_code, row.charged) == (
        "feishu/auth",
        "feishu",
        "0000",
        True,
    )


def test_feishu_auth_is_listed_by_api_methods(client):
    methods = {entry["method"]: entry for entry in client.get("/api/methods").get_json()["methods"]}
    assert methods["feishu/auth"]["platform"] == "feishu"
    assert methods["feishu/auth"]["openai_routes"] == []
