"""Numbers an operator types are refused, naming the range, when their column cannot hold them
(INTEGER: 2,147,483,647 on PostgreSQL; the balance, BIGINT: 9,223,372,036,854,775,807), and
nothing is written: a command says so in one line, the console flashes it. Before, PostgreSQL
refused them with a DataError trace, and SQLite with an OverflowError."""

from __future__ import annotations

import json

import pytest

from proxy.operations import MOST, MOST_CREDITS
from proxy.usage import token_count
from tests.conftest import create_account
from tests.test_console import TOKEN, csrf_of

EACH_DATABASE = pytest.mark.parametrize(
    "make_app_each_database", ["sqlite", "postgresql"], indirect=True
)


def shown(runner, key: str) -> dict:
    return json.loads(runner.invoke(args=["accounts", "show", key, "--json"]).output)


@EACH_DATABASE
def test_a_daily_quota_beyond_its_column_is_refused_by_the_command(make_app_each_database):
    runner = make_app_each_database().test_cli_runner()
    result = runner.invoke(args=["accounts", "create", "big", "--daily-quota", str(MOST + 1)])
    assert result.exit_code == 2
    assert f"{MOST + 1} is not in the range 0<=x<=2147483647" in result.output
    assert json.loads(runner.invoke(args=["accounts", "list", "--json"]).output) == []


@EACH_DATABASE
def test_calls_topped_up_beyond_todays_column_are_refused_and_nothing_is_written(
    make_app_each_database,
):
    runner = make_app_each_database().test_cli_runner()
    account = create_account(runner, "shop", "--balance", "10")
    full = runner.invoke(args=["accounts", "topup", account["key"], "--calls", str(MOST)])
    assert full.exit_code == 0, full.output
    result = runner.invoke(
        args=["accounts", "topup", account["key"], "--credits", "5", "--calls", "1"]
    )
    assert result.exit_code == 1
    assert "calls must be a whole number from 1 to 0 (today's top-ups hold at most" in (
        result.output
    )
    after = shown(runner, account["key"])
    assert (after["balance"], after["today"]["extra_calls"]) == (10, MOST)  # credits not added


@EACH_DATABASE
def test_credits_that_would_pass_the_balance_column_are_refused(make_app_each_database):
    runner = make_app_each_database().test_cli_runner()
    account = create_account(runner, "shop", "--balance", str(MOST_CREDITS - 3))
    result = runner.invoke(args=["accounts", "topup", account["key"], "--credits", "4"])
    assert result.exit_code == 1
    assert "credits must be a whole number from 1 to 3 (the balance holds at most" in (
        result.output
    )
    assert shown(runner, account["key"])["balance"] == MOST_CREDITS - 3


@EACH_DATABASE
def test_the_consoles_create_form_names_the_range_of_a_quota_too_big(make_app_each_database):
    app = make_app_each_database(ADMIN_TOKEN=TOKEN)
    browser = app.test_client()
    login = browser.get("/admin/login")
    browser.post("/admin/login", data={"token": TOKEN, "csrf": csrf_of(login.text)})
    csrf = csrf_of(browser.get("/admin/accounts").text)
    page = browser.post(
        "/admin/accounts",
        data={"name": "big", "daily_quota": "3000000000", "csrf": csrf},
    )
    assert page.status_code == 200
    assert "daily quota must be a whole number from 0 to 2147483647." in page.text
    runner = app.test_cli_runner()
    assert json.loads(runner.invoke(args=["accounts", "list", "--json"]).output) == []


def test_an_upstreams_token_count_is_kept_within_the_usage_rows_column():
    """An upstream (any member of a pool) reporting an absurd count must not fail the row."""
    assert [token_count(n) for n in (12, 2**40, -3, True, "7", None)] == [12, MOST, 0, 0, 0, 0]
