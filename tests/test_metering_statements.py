"""What a call costs the database, on SQLite and PostgreSQL: the statements it runs and the
transactions they run in. Authentication and API states come from the worker's short-lived
copies; the limits are conditional updates, one transaction to admit and one to settle, and
one for a cache hit (paid and recorded at once)."""

from __future__ import annotations

import json
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from tests.conftest import CHAT_ARGS, create_account


@pytest.fixture
def make_app(make_app_each_database):
    """Every test here runs on SQLite and on a real PostgreSQL server. The upstreams file's
    reload generation (read at most once a second, docs/upstreams.md) is read once an hour
    here, so that no such read falls inside a measured call on a slow machine."""

    def make(**settings):
        app = make_app_each_database(**settings)
        app.extensions["gateway"].dispatcher.router.reload_check_seconds = 3600.0
        return app

    return make


@contextmanager
def sql_of(app):
    """The statements (verb and table, e.g. "UPDATE account_days") run meanwhile, and a list
    with one entry per transaction."""
    engine = app.extensions["gateway"].engine
    statements, transactions = [], []

    def on_statement(_connection, _cursor, statement, *_rest):
        verb_and_table = re.match(r"\s*(SELECT .*? FROM|\w+(?: INTO| FROM)?)\s+(\w+)", statement)
        statements.append(" ".join(verb_and_table.groups()) if verb_and_table else statement)

    def on_begin(_connection):
        transactions.append("begin")

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine, "begin", on_begin)
    try:
        yield statements, transactions
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "begin", on_begin)


def ask(client, account, cache="no", **o_args) -> dict:
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps({**CHAT_ARGS, **o_args}),
        "cache": cache,
    }
    return client.get("/api", query_string=query).get_json()


def test_a_charged_call_is_one_transaction_to_admit_and_one_to_settle(make_app):
    app = make_app()
    client, account = app.test_client(), create_account(app.test_cli_runner())
    assert ask(client, account)["error_code"] == "0000"  # today's quota row now exists
    with sql_of(app) as (statements, transactions):
        assert ask(client, account)["error_code"] == "0000"
    assert statements == [
        "UPDATE account_days",  # quota unit, returning today's figures
        "INSERT INTO reservations",
        "DELETE FROM reservations",
        "UPDATE accounts",  # lifetime counters, returned for api_info
        "INSERT INTO usage",
    ]
    assert len(transactions) == 2


def test_balance_and_concurrency_slot_are_one_more_update_each_way(make_app):
    app = make_app()
    client = app.test_client()
    account = create_account(app.test_cli_runner(), "p", "--balance", "9", "--concurrency", "2")
    ask(client, account, cache="yes")  # the answer the next call finds in the cache
    with sql_of(app) as (statements, transactions):
        assert ask(client, account, cache="yes")["cache"] == 1
    assert statements == [
        "UPDATE account_days",
        "UPDATE accounts",  # credits and slot
        "INSERT INTO reservations",
        "DELETE FROM reservations",
        "UPDATE accounts",  # lifetime counters and slot
        "INSERT INTO usage",
    ]
    assert len(transactions) == 2


def test_a_cache_hit_is_paid_and_recorded_in_one_transaction(make_app):
    app = make_app()
    client = app.test_client()
    account = create_account(app.test_cli_runner(), "h", "--balance", "9")
    ask(client, account, cache="yes")  # the answer the next call finds in the cache
    with sql_of(app) as (statements, transactions):
        assert ask(client, account, cache="yes")["cache"] == 1
    assert statements == [
        "UPDATE account_days",  # quota unit, returning today's figures
        "UPDATE accounts",  # credits and the cache-hit counter, returning the lifetime ones
        "INSERT INTO usage",
    ]
    assert len(transactions) == 1


def test_a_failed_call_is_refunded_in_its_settling_transaction(make_app):
    app = make_app()
    client = app.test_client()
    account = create_account(app.test_cli_runner(), "f", "--balance", "9")
    ask(client, account)
    with sql_of(app) as (statements, transactions):
        assert ask(client, account, model="stub-500")["error_code"] == "4002"
    assert statements == [
        "UPDATE account_days",
        "UPDATE accounts",
        "INSERT INTO reservations",
        "DELETE FROM reservations",
        "UPDATE account_days",  # the quota unit back
        "UPDATE accounts",  # the credits back, counted as uncharged
        "INSERT INTO usage",
    ]
    assert len(transactions) == 2
