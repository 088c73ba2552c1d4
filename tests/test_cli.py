"""Admin command line: accounts create and list."""

from __future__ import annotations

import json

from sqlalchemy import select

from proxy import storage
from tests.conftest import create_account


def test_create_json_prints_key_and_secret_once(runner):
    created = create_account(runner, "acme")
    assert list(created)[:2] == ["key", "secret"]
    assert len(created["key"]) == 24 and len(created["secret"]) == 32
    assert created["name"] == "acme" and created["status"] == "active"


def test_secret_is_stored_hashed(app, runner):
    created = create_account(runner)
    with app.extensions["gateway"].engine.connect() as connection:
        stored = connection.execute(select(storage.accounts.c.secret_hash)).scalar_one()
    assert created["secret"] not in stored and stored.startswith("sha256$")


def test_created_credentials_authenticate(client, runner):
    created = create_account(runner)
    envelope = client.get(
        "/api",
        query_string={"key": created["key"], "secret": created["secret"], "method": "v1/models"},
    ).get_json()
    assert envelope["error_code"] == "0000"


def test_create_plain_text_shows_the_secret_once_warning(runner):
    result = runner.invoke(args=["accounts", "create", "plain"])
    assert result.exit_code == 0
    assert "secret:" in result.output and "shown only now" in result.output


def test_list_json_never_shows_secrets(runner):
    created = create_account(runner, "one")
    create_account(runner, "two", "--daily-quota", "5")
    listed = json.loads(runner.invoke(args=["accounts", "list", "--json"]).output)
    assert [(a["name"], a["daily_quota"]) for a in listed] == [("one", 30000), ("two", 5)]
    assert created["secret"] not in json.dumps(listed)


def test_init_db_is_idempotent(runner):
    assert runner.invoke(args=["init-db"]).exit_code == 0
    assert runner.invoke(args=["init-db"]).output == "database ready\n"
