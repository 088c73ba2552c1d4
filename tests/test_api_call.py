"""The /api call end to end: parameters, envelope, codes, upstream over real HTTP to the stub."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from sqlalchemy import select

from config import Config
from proxy import storage
from proxy.envelope import FIELD_ORDER
from tests.conftest import CHAT_ARGS, create_account

ROOT = Path(__file__).resolve().parent.parent
SEED_O_ARGS = '{"prompt":"中国队什么时候进世界杯","max_tokens":200}'


def upstream_calls(stub, path=None):
    return [r for r in stub.requests_seen() if path is None or r["path"] == path]


# --- success -------------------------------------------------------------------------------


def test_seed_completion_example_works_without_model(call, stub):
    envelope = call("v1/completions", SEED_O_ARGS)
    assert envelope["error_code"] == "0000"
    assert envelope["response"]["choices"][0]["text"] == "stub completion: 中国队什么时候进世界杯"
    sent = upstream_calls(stub, "/v1/completions")[0]["body"]
    assert sent == {
        "model": "gpt-3.5-turbo-instruct",
        "prompt": "中国队什么时候进世界杯",
        "max_tokens": 200,
    }


def test_chat_completion_returns_upstream_payload(call):
    envelope = call("v1/chat/completions", CHAT_ARGS)
    assert envelope["error_code"] == "0000"
    assert envelope["response"]["object"] == "chat.completion"
    assert envelope["response"]["choices"][0]["message"]["content"] == "stub reply: 你好 world"


def test_models_embeddings_and_moderations_succeed(call):
    assert call("v1/models")["response"]["object"] == "list"
    embedding = call("v1/embeddings", {"input": "hello"})["response"]["data"][0]["embedding"]
    assert len(embedding) == 8 and all(isinstance(x, float) for x in embedding)
    moderation = call("v1/moderations", {"input": "I will kill it"})["response"]
    assert moderation["results"][0]["flagged"] is True


def test_unknown_o_args_fields_pass_through_to_upstream(call, stub):
    call("v1/chat/completions", {**CHAT_ARGS, "temperature": 0.2, "vendor_flag": "x"})
    body = upstream_calls(stub, "/v1/chat/completions")[0]["body"]
    assert body["temperature"] == 0.2 and body["vendor_flag"] == "x"


def test_empty_upstream_result_is_2000(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-empty"})
    assert envelope["error_code"] == "2000"
    assert envelope["response"]["choices"] == []


# --- the envelope --------------------------------------------------------------------------


def test_envelope_fields_in_contract_order_with_string_and_int_types(call):
    envelope = call("v1/chat/completions", CHAT_ARGS)
    assert tuple(envelope) == FIELD_ORDER
    assert envelope["error"] == "" and envelope["reason"] == ""
    assert isinstance(envelope["error_code"], str) and envelope["cache"] == 0
    assert re.fullmatch(r"\d+\.\d{3}", envelope["execution_time"])
    assert re.fullmatch(r"Beijing/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", envelope["server_time"])
    assert re.fullmatch(r"\d+\.\d\dMB", envelope["server_memory"])
    assert re.fullmatch(r"gw-1\.[0-9a-f]{16}", envelope["request_id"])
    assert envelope["api_type"] == "openai" and envelope["translate_language"] == "cn"


def test_error_code_also_in_header_with_http_200(client, account):
    response = client.get(
        "/api", query_string={"key": account["key"], "secret": "wrong", "method": "v1/models"}
    )
    assert response.status_code == 200
    assert response.headers["X-Error-Code"] == "4005"


def test_last_id_is_the_usage_row_of_this_call(app, call):
    first, second = call("v1/models"), call("v1/models", cache="no")
    assert int(second["last_id"]) == int(first["last_id"]) + 1
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(
            select(storage.usage).where(storage.usage.c.id == int(second["last_id"]))
        ).one()
    assert row.request_id == second["request_id"] and row.error_code == "0000"


def test_failed_call_also_writes_a_usage_row(app, client):
    envelope = client.get("/api?key=nobody&secret=x&method=v1/models").get_json()
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(
            select(storage.usage).where(storage.usage.c.id == int(envelope["last_id"]))
        ).one()
    assert row.error_code == "4004" and row.charged is False and row.account_id is None


def test_call_args_echo_never_holds_credentials(client, account):
    envelope = client.get(
        "/api",
        query_string={
            "key": account["key"],
            "secret": account["secret"],
            "sign": "ABC",
            "method": "v1/models",
            "lang": "en",
        },
    ).get_json()
    assert envelope["call_args"] == {"method": "v1/models", "lang": "en"}
    assert account["secret"] not in json.dumps(envelope)
    assert account["key"] not in json.dumps(envelope)


def test_api_info_counts_todays_charged_calls(call, account):
    call("v1/models")
    envelope = call("v1/models", cache="no")
    assert envelope["api_info"] == "today:2 max:30000 all[2=2+0+0];expires:never"


def test_client_ip_behind_one_trusted_proxy_is_the_forwarded_address(make_app):
    app = make_app(TRUSTED_PROXY_HOPS=1)
    creds = create_account(app.test_cli_runner())
    envelope = (
        app.test_client()
        .get(
            "/api",
            query_string={**creds, "method": "v1/models"},
            headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.7"},
        )
        .get_json()
    )
    assert envelope["client_ip"] == "198.51.100.7"


def test_client_ip_ignores_forwarded_header_without_trusted_proxy(client, account):
    envelope = client.get(
        "/api",
        query_string={**_creds(account), "method": "v1/models"},
        headers={"X-Forwarded-For": "203.0.113.9"},
    ).get_json()
    assert envelope["client_ip"] == "127.0.0.1"


def _creds(account):
    return {"key": account["key"], "secret": account["secret"]}


# --- parameters and doors --------------------------------------------------------------------


def test_platform_custom_url_with_and_without_trailing_slash(client, account):
    for path in ("/openai/custom/", "/openai/custom"):
        response = client.get(path, query_string={**_creds(account), "method": "v1/models"})
        assert response.status_code == 200 and response.get_json()["error_code"] == "0000"


def test_unknown_platform_is_4010(client, account):
    envelope = client.get(
        "/feishu/custom/", query_string={**_creds(account), "method": "v1/models"}
    ).get_json()
    assert envelope["error_code"] == "4010"


def test_legacy_query_string_with_empty_segments_and_repeated_api_name(client, account):
    url = (
        f"/api/?& &key={account['key']}&&secret={account['secret']}&api_name=v1/models"
        "&api_name=v1/models&&"
    )
    assert client.get(url).get_json()["error_code"] == "0000"


def test_api_name_is_a_synonym_of_method(client, account):
    envelope = client.get(
        "/api", query_string={**_creds(account), "api_name": "v1/models"}
    ).get_json()
    assert envelope["error_code"] == "0000"


def test_credentials_from_headers(client, account):
    response = client.get(
        "/api?method=v1/models",
        headers={"X-API-KEY": account["key"], "X-API-SECRET": account["secret"]},
    )
    assert response.get_json()["error_code"] == "0000"


def test_urlencoded_form_post(client, account):
    response = client.post(
        "/api", data={**_creds(account), "method": "v1/completions", "_o_args": SEED_O_ARGS}
    )
    assert response.get_json()["error_code"] == "0000"


def test_multipart_form_post(client, account):
    response = client.post(
        "/api",
        data={**_creds(account), "method": "v1/completions", "_o_args": SEED_O_ARGS},
        content_type="multipart/form-data",
    )
    assert response.get_json()["error_code"] == "0000"


def test_json_body_with_o_args_object(client, account, stub):
    response = client.post(
        "/api",
        json={**_creds(account), "method": "v1/embeddings", "_o_args": {"input": ["a", "b"]}},
    )
    assert response.get_json()["error_code"] == "0000"
    assert upstream_calls(stub, "/v1/embeddings")[0]["body"]["input"] == ["a", "b"]


def test_body_parameters_win_over_query(client, account):
    response = client.post(
        "/api?method=nope&lang=ru", json={**_creds(account), "method": "v1/models", "lang": "en"}
    )
    envelope = response.get_json()
    assert envelope["error_code"] == "0000" and envelope["translate_language"] == "en"


@pytest.mark.parametrize(
    ("lang", "reason"),
    [
        ("cn", "授权失败"),
        ("en", "Invalid authentication credentials"),
        ("ru", "Неверные учётные данные"),
        ("zh-CN", "授权失败"),
    ],
)
def test_reason_in_callers_language(client, account, lang, reason):
    envelope = client.get(
        "/api",
        query_string={"key": account["key"], "secret": "bad", "method": "v1/models", "lang": lang},
    ).get_json()
    assert envelope["reason"].startswith(reason + ": ")


# --- caller errors -------------------------------------------------------------------------


def test_missing_key_is_4014(client):
    envelope = client.get("/api?secret=x&method=v1/models").get_json()
    assert envelope["error_code"] == "4014" and "key" in envelope["reason"]


def test_missing_method_is_4014(client, account):
    envelope = client.get("/api", query_string=_creds(account)).get_json()
    assert envelope["error_code"] == "4014" and "method" in envelope["reason"]


def test_unknown_key_is_4004(client):
    assert (
        client.get("/api?key=nobody&secret=x&method=v1/models").get_json()["error_code"] == "4004"
    )


def test_wrong_secret_is_4005(client, account):
    envelope = client.get(
        "/api", query_string={"key": account["key"], "secret": "bad", "method": "v1/models"}
    ).get_json()
    assert envelope["error_code"] == "4005" and envelope["error"] == "auth_failed"


@pytest.mark.parametrize(
    "method",
    [
        "../x",
        "v1/../../admin",
        "http://evil.example/v1/models",
        "%2e%2e/v1/models",
        "v1/models/../../x",
        "//evil.example/v1",
        "v1/chat/completions?x=1",
        "V1/MODELS",
    ],
)
def test_hostile_method_is_4010_and_nothing_reaches_upstream(call, stub, method):
    envelope = call(method)
    assert envelope["error_code"] == "4010"
    assert stub.requests_seen() == []


def test_o_args_not_json_is_4003(call):
    envelope = call("v1/chat/completions", '{"messages": [')
    assert envelope["error_code"] == "4003" and "_o_args is not valid JSON" in envelope["reason"]


def test_o_args_not_an_object_is_4003(call):
    assert call("v1/chat/completions", "[1,2]")["error_code"] == "4003"


def test_missing_messages_is_4003_naming_the_field(call, stub):
    envelope = call("v1/chat/completions", {"model": "gpt-4o-mini"})
    assert envelope["error_code"] == "4003"
    assert "_o_args.messages" in envelope["reason"]
    assert stub.requests_seen() == []


def test_message_without_role_is_4003_naming_the_path(call):
    envelope = call("v1/chat/completions", {"messages": [{"content": "hi"}]})
    assert envelope["error_code"] == "4003" and "_o_args.messages[0].role" in envelope["reason"]


def test_model_required_when_method_has_no_default(make_app):
    app = make_app(DEFAULT_MODELS={})
    creds = create_account(app.test_cli_runner())
    envelope = (
        app.test_client()
        .get("/api", query_string={**creds, "method": "v1/embeddings", "_o_args": '{"input":"x"}'})
        .get_json()
    )
    assert envelope["error_code"] == "4003" and "_o_args.model" in envelope["reason"]


def test_unknown_version_is_4003(call):
    envelope = call("v1/models", version="9")
    assert envelope["error_code"] == "4003" and "version" in envelope["reason"]


def test_unknown_result_type_is_4003_rendered_as_json(call):
    envelope = call("v1/models", result_type="yaml")
    assert envelope["error_code"] == "4003" and "result_type" in envelope["reason"]


def test_bad_cache_value_is_4003(call):
    assert call("v1/models", cache="maybe")["error_code"] == "4003"


def test_unknown_lang_is_4003(call):
    assert call("v1/models", lang="fr")["error_code"] == "4003"


def test_stream_on_a_method_that_does_not_stream_is_4003(call):
    envelope = call("v1/embeddings", {"input": "x", "stream": True})
    assert envelope["error_code"] == "4003"
    assert "stream=true is served for v1/chat/completions, v1/completions" in envelope["reason"]


def test_too_many_messages_is_4003(make_app):
    app = make_app(MAX_MESSAGES=2)
    creds = create_account(app.test_cli_runner())
    o_args = json.dumps({"messages": [{"role": "user", "content": "x"}] * 3})
    envelope = (
        app.test_client()
        .get("/api", query_string={**creds, "method": "v1/chat/completions", "_o_args": o_args})
        .get_json()
    )
    assert envelope["error_code"] == "4003" and "at most 2" in envelope["reason"]


def test_o_args_nested_too_deep_is_4003(call):
    deep = "[" * 40 + "]" * 40
    envelope = call("v1/chat/completions", '{"messages": ' + deep + "}")
    assert envelope["error_code"] == "4003" and "nested deeper" in envelope["reason"]


def test_o_args_hostile_depth_is_4003_not_500(call):
    deep = "[" * 200000 + "]" * 200000
    envelope = call("v1/chat/completions", '{"messages": ' + deep + "}")
    assert envelope["error_code"] == "4003"


def test_oversize_body_is_4003(app, client, account):
    app.config["MAX_CONTENT_LENGTH"] = 1000
    response = client.post(
        "/api", data={**_creds(account), "method": "v1/models", "_o_args": "x" * 2000}
    )
    envelope = response.get_json()
    assert envelope["error_code"] == "4003" and "larger than 1000 bytes" in envelope["reason"]


def test_envelope_doc_states_the_default_body_limit():
    mib = Config().MAX_CONTENT_LENGTH // 2**20
    assert f"body `MAX_BODY_BYTES` ({mib} MiB" in (ROOT / "docs/envelope.md").read_text()


def test_invalid_json_body_is_4003(client):
    response = client.post("/api", data="{not json", content_type="application/json")
    assert response.get_json()["error_code"] == "4003"


# --- upstream failures -------------------------------------------------------------------


def test_upstream_500_is_4002_with_upstream_error_object(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-500"})
    assert envelope["error_code"] == "4002"
    assert envelope["response"]["error"]["type"] == "server_error"


def test_upstream_429_is_4002_with_upstream_error_object(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-429"})
    assert envelope["error_code"] == "4002"
    assert "error" in envelope["response"]


def test_arguments_the_upstream_refuses_are_4003_with_its_error_object(call):
    envelope = call("v1/moderations", {"input": []}, lang="en")
    assert envelope["error_code"] == "4003"
    assert envelope["reason"] == (
        "Param error: the upstream refused the arguments (HTTP 400): 'input' must be a string,"
        " an array of strings, or an array of content parts."
    )
    assert envelope["response"]["error"]["code"] == "invalid_value"


def test_upstream_garbage_body_is_4002(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-garbage"})
    assert envelope["error_code"] == "4002" and "not a JSON object" in envelope["reason"]


def test_upstream_hang_is_4017(call):
    envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-hang"})
    assert envelope["error_code"] == "4017"


def test_unreachable_upstream_is_4001(make_app):
    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{dead_port}/v1")
    creds = create_account(app.test_cli_runner())
    envelope = (
        app.test_client().get("/api", query_string={**creds, "method": "v1/models"}).get_json()
    )
    assert envelope["error_code"] == "4001"


def test_failed_upstream_call_is_not_charged(call):
    call("v1/chat/completions", {**CHAT_ARGS, "model": "stub-500"})
    envelope = call("v1/models")
    assert envelope["api_info"].startswith("today:1 ")


def test_client_credentials_never_reach_upstream(call, account, stub):
    call("v1/chat/completions", CHAT_ARGS)
    seen = upstream_calls(stub, "/v1/chat/completions")[0]
    headers = {name.lower(): value for name, value in seen["headers"].items()}
    assert headers["authorization"] == "Bearer sk-upstream-secret"
    dumped = json.dumps(seen)
    assert account["secret"] not in dumped and account["key"] not in dumped


def test_upstream_key_never_reaches_the_client(call):
    for model in ("gpt-4o-mini", "stub-500"):
        envelope = call("v1/chat/completions", {**CHAT_ARGS, "model": model})
        assert "sk-upstream-secret" not in json.dumps(envelope)


def test_unexpected_exception_is_5000_without_trace(app, call, monkeypatch):
    def explode(*_args, **_kwargs):
        raise RuntimeError("boom with sk-upstream-secret inside")

    monkeypatch.setattr(app.extensions["gateway"].dispatcher, "execute", explode)
    envelope = call("v1/models")
    assert envelope["error_code"] == "5000"
    assert "Traceback" not in json.dumps(envelope) and "boom" not in json.dumps(envelope)
    assert envelope["request_id"] in envelope["reason"]


# --- JSONP -----------------------------------------------------------------------------------


def test_jsonp_callback_wraps_the_json_envelope(client, account):
    response = client.get(
        "/api",
        query_string={
            **_creds(account),
            "method": "v1/models",
            "callback": "jQuery1830_1699999999",
        },
    )
    body = response.get_data(as_text=True)
    assert body.startswith("/**/jQuery1830_1699999999({") and body.endswith("});")
    assert response.content_type == "application/javascript; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("callback", ["alert(1)//", "a;b", "<script>", "function", "a" * 65])
def test_hostile_callback_is_4003_and_not_echoed_as_code(client, account, callback):
    response = client.get(
        "/api", query_string={**_creds(account), "method": "v1/models", "callback": callback}
    )
    assert response.content_type == "application/json; charset=utf-8"
    assert response.get_json()["error_code"] == "4003"


def test_callback_with_php_format_is_4003(call):
    envelope = call("v1/models", callback="cb", result_type="serialize")
    assert envelope["error_code"] == "4003" and "callback" in envelope["reason"]


def test_failed_usage_write_is_4000_envelope_not_a_500(app, call, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("proxy.metering._insert_usage", refuse)
    envelope = call("v1/models")
    assert envelope["error_code"] == "4000" and envelope["response"] == []
    assert envelope["last_id"] == "" and envelope["request_id"] in envelope["reason"]


def test_failed_usage_write_leaves_the_reservation_for_refund(app, call, monkeypatch):
    monkeypatch.setattr("proxy.metering._insert_usage", lambda *a, **k: 1 / 0)
    call("v1/chat/completions", CHAT_ARGS)
    with app.extensions["gateway"].engine.connect() as connection:
        reservations = connection.execute(select(storage.reservations)).all()
        usage_rows = connection.execute(select(storage.usage)).all()
    # The settle transaction rolled back whole: no usage row, the reservation still held, so
    # the expiry sweep refunds it rather than the call being charged unrecorded.
    assert (len(reservations), len(usage_rows)) == (1, 0)
