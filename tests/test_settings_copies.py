"""Account settings and API states are read through short-lived copies (SETTINGS_CACHE_SECONDS):
a call reads neither while its worker's copy is fresh; an admin command takes effect at once in
its own process and in every other once that process's copy is SETTINGS_CACHE_SECONDS old."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import event

from tests.conftest import CHAT_ARGS, create_account
from tests.served import wait_until

LONG = 60.0  # a TTL no test outlives: what changes meanwhile was not a copy growing old
# What the copies hold. Other reads may happen during a call (the upstreams file's generation,
# checked at most once a second: docs/upstreams.md) and are not what these tests are about.
SETTINGS_TABLES = {"accounts", "api_keys", "api_states"}


def code_of(client, account, **params) -> str:
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(CHAT_ARGS),
        "cache": "no",
        **params,
    }
    return client.get("/api", query_string=query).get_json()["error_code"]


def tables_read_during(app, call) -> list[str]:
    engine = app.extensions["gateway"].engine
    read: list[str] = []

    def on_statement(_connection, _cursor, statement, *_rest):
        if statement.lstrip().upper().startswith("SELECT"):
            table = re.search(r"\bFROM\s+(\w+)", statement).group(1)
            if table in SETTINGS_TABLES:
                read.append(table)

    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    return read


def test_a_call_reads_no_account_or_api_state_while_the_copies_are_fresh(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    client, account = app.test_client(), create_account(app.test_cli_runner())
    assert code_of(client, account) == "0000"
    read: list[str] = []
    read += tables_read_during(app, lambda: read.append(code_of(client, account)))
    assert read == ["0000"]  # the code, and no settings table read


def test_an_unknown_key_is_refused_from_the_copy_too(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    client, stranger = app.test_client(), {"key": "no-such-key", "secret": "x"}
    assert code_of(client, stranger) == "4004"
    read: list[str] = []
    read += tables_read_during(app, lambda: read.append(code_of(client, stranger)))
    assert read == ["4004"]  # the code, and no settings table read


@pytest.mark.parametrize(
    "command, expected",
    [
        (["accounts", "stop", "{key}"], "4007"),
        (["accounts", "rotate-secret", "{key}"], "4005"),
        (["apis", "stop", "openai"], "4006"),
        (["apis", "maintenance", "v1/chat/completions"], "4009"),
        (["apis", "stop", "all", "--account", "{key}"], "4006"),
    ],
)
def test_an_admin_command_takes_effect_at_once_in_its_own_process(make_app, command, expected):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner)
    assert code_of(client, account) == "0000"  # the copies are made
    done = runner.invoke(args=[part.format(key=account["key"]) for part in command])
    assert done.exit_code == 0, done.output
    assert code_of(client, account) == expected


def test_a_first_topup_makes_an_account_prepaid_at_once_in_its_own_process(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner)  # not prepaid: only its daily quota counts
    assert code_of(client, account) == "0000"
    assert (
        runner.invoke(args=["accounts", "topup", account["key"], "--credits", "1"]).exit_code == 0
    )
    assert [code_of(client, account), code_of(client, account)] == ["0000", "4016"]


def two_processes(make_app, tmp_path, ttl: float):
    """A worker and an admin process on one database: two apps, each with its own copies."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    worker = make_app(DATABASE_URL=url, SETTINGS_CACHE_SECONDS=ttl)
    admin = make_app(DATABASE_URL=url, SETTINGS_CACHE_SECONDS=ttl)
    return worker.test_client(), admin.test_cli_runner()


def test_a_stop_by_another_process_is_not_seen_before_the_copy_is_ttl_old(make_app, tmp_path):
    client, admin = two_processes(make_app, tmp_path, LONG)
    account = create_account(admin)
    assert code_of(client, account) == "0000"
    admin.invoke(args=["accounts", "stop", account["key"]])
    assert code_of(client, account) == "0000"


def test_a_stop_by_another_process_reaches_a_worker_once_its_copy_is_ttl_old(make_app, tmp_path):
    client, admin = two_processes(make_app, tmp_path, 0.2)
    account = create_account(admin)
    assert code_of(client, account) == "0000"
    admin.invoke(args=["accounts", "stop", account["key"]])
    wait_until(lambda: code_of(client, account) == "4007", 10, "the stop never arrived")


def test_an_api_stop_by_another_process_reaches_a_worker_once_its_copy_is_ttl_old(
    make_app, tmp_path
):
    client, admin = two_processes(make_app, tmp_path, 0.2)
    account = create_account(admin)
    assert code_of(client, account) == "0000"
    admin.invoke(args=["apis", "stop", "v1/chat/completions"])
    wait_until(lambda: code_of(client, account) == "4006", 10, "the stop never arrived")
