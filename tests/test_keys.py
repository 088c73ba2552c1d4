"""An account's many keys: each with its own secret, label, expiry, model and address
allow-lists; revoked and expired keys refused at once; old accounts' key is their first key."""

from __future__ import annotations

import json
from datetime import date, timedelta

from sqlalchemy import select, text

from proxy import storage
from tests.conftest import CHAT_ARGS, create_account

LONG = 60.0  # a settings-copy TTL no test outlives


def create_key(runner, account_key: str, *extra) -> dict:
    result = runner.invoke(args=["keys", "create", account_key, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def envelope(client, credentials: dict, o_args=None, **params) -> dict:
    query = {
        "key": credentials["key"],
        "secret": credentials["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(o_args or CHAT_ARGS),
        "cache": "no",
        **params,
    }
    return client.get("/api", query_string=query).get_json()


def test_keys_create_prints_the_new_key_and_its_secret_once(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--label", "shop", "--rpm", "5")
    assert list(created)[:2] == ["key", "secret"]
    assert created["key"] != account["key"] and len(created["secret"]) == 32
    assert created["account"] == account["key"]
    assert (created["label"], created["status"], created["rpm"]) == ("shop", "active", 5)


def test_a_new_key_answers_0000_for_its_account(app, runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"])
    answer = envelope(client, created)
    assert answer["error_code"] == "0000"
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(select(storage.usage)).one()
    assert row.account_id == account["id"]
    assert row.key_id is not None and row.key_id != 1  # not the first key


def test_the_accounts_own_key_is_its_first_key(runner):
    account = create_account(runner)
    listed = json.loads(runner.invoke(args=["keys", "list", account["key"], "--json"]).output)
    assert [(k["key"], k["label"]) for k in listed] == [(account["key"], "first")]


def test_keys_list_never_shows_secrets(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"])
    output = runner.invoke(args=["keys", "list", account["key"], "--json"]).output
    assert created["secret"] not in output and account["secret"] not in output
    assert [k["key"] for k in json.loads(output)] == [account["key"], created["key"]]


def test_keys_of_an_unknown_account_is_a_command_error(runner):
    result = runner.invoke(args=["keys", "create", "no-such-key"])
    assert result.exit_code == 1 and "no account has the key 'no-such-key'" in result.output


def test_an_ip_that_is_not_one_is_refused_by_keys_create(runner):
    account = create_account(runner)
    result = runner.invoke(args=["keys", "create", account["key"], "--ips", "10.0.0.0/8,nope"])
    assert result.exit_code == 2
    assert "'nope' is neither an IP address nor a CIDR network" in result.output


def test_a_revoked_key_is_4005_at_once(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"])
    assert envelope(client, created)["error_code"] == "0000"
    assert runner.invoke(args=["keys", "revoke", created["key"]]).exit_code == 0
    answer = envelope(client, created)
    assert answer["error_code"] == "4005"
    assert answer["reason"].endswith("this key was revoked; use another key of the account")
    assert envelope(client, account)["error_code"] == "0000"  # the account's other keys work


def test_a_key_revoked_by_another_process_is_4005_at_once(make_app, tmp_path):
    """The other process still holds a fresh copy of the key: the admission's own check of
    the key's row refuses it, with no copy growing old first."""
    database = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    serving = make_app(DATABASE_URL=database, SETTINGS_CACHE_SECONDS=LONG)
    admin = make_app(DATABASE_URL=database, SETTINGS_CACHE_SECONDS=LONG)
    account = create_account(admin.test_cli_runner())
    created = create_key(admin.test_cli_runner(), account["key"])
    client = serving.test_client()
    assert envelope(client, created)["error_code"] == "0000"  # its copy is made
    assert admin.test_cli_runner().invoke(args=["keys", "revoke", created["key"]]).exit_code == 0
    assert envelope(client, created)["error_code"] == "4005"
    cached = envelope(client, created, cache="yes")  # a cache hit is paid at once: refused too
    assert cached["error_code"] == "4005"


def test_an_expired_key_is_4005_naming_its_last_day(runner, client):
    account = create_account(runner)
    yesterday = (date.today() - timedelta(days=2)).isoformat()
    created = create_key(runner, account["key"], "--expires", yesterday)
    answer = envelope(client, created)
    assert answer["error_code"] == "4005"
    assert f"this key expired on {yesterday}" in answer["reason"]


def test_a_model_outside_the_keys_models_is_4012_naming_it(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--models", "gpt-4o*,o1-*")
    answer = envelope(client, created, {**CHAT_ARGS, "model": "gpt-3.5-turbo"})
    assert answer["error_code"] == "4012"
    assert "the model 'gpt-3.5-turbo' is not enabled for this key" in answer["reason"]


def test_a_model_matching_the_keys_patterns_answers_0000(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--models", "gpt-4o*,o1-*")
    assert envelope(client, created, {**CHAT_ARGS, "model": "gpt-4o-mini"})["error_code"] == "0000"


def test_an_address_outside_the_keys_ips_is_4005_saying_the_address_seen(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--ips", "10.0.0.0/8,192.0.2.7")
    answer = envelope(client, created)
    assert answer["error_code"] == "4005"
    assert answer["reason"].endswith("this key does not accept calls from the address 127.0.0.1")
    assert "10.0.0.0" not in json.dumps(answer) and "192.0.2.7" not in json.dumps(answer)


def test_an_address_inside_the_keys_ips_answers_0000(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--ips", "10.0.0.0/8,127.0.0.0/8")
    assert envelope(client, created)["error_code"] == "0000"


def test_a_refused_address_is_401_on_v1(runner, client):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--ips", "10.0.0.0/8")
    response = client.post(
        "/v1/chat/completions",
        json=CHAT_ARGS,
        headers={"Authorization": f"Bearer {created['key']}:{created['secret']}"},
    )
    assert response.status_code == 401
    assert "127.0.0.1" in response.get_json()["error"]["message"]


def test_an_account_made_before_keys_existed_keeps_answering_0000(make_app_each_database):
    """A database whose accounts have no key rows (an older version's): ensure_schema gives
    each account its own key, with its secret, as its first key."""
    app = make_app_each_database()
    account = create_account(app.test_cli_runner())
    engine = app.extensions["gateway"].engine
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE api_keys"))
    storage.ensure_schema(engine)
    app.extensions["gateway"].accounts._by_key.forget()
    assert envelope(app.test_client(), account)["error_code"] == "0000"
    runner = app.test_cli_runner()
    listed = json.loads(runner.invoke(args=["keys", "list", account["key"], "--json"]).output)
    assert [k["label"] for k in listed] == ["first"]
