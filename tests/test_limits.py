"""Accounts and limits in one process (SQLite): quota, balance, concurrency, stops, expiry,
enabled APIs, charging and refunds, api_info, the admin commands that change them."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from proxy import storage
from proxy.errors import GatewayError
from proxy.signing import compute_sign
from proxy.usage import UsageRecord
from tests.conftest import CHAT_ARGS, create_account


@pytest.fixture
def make_app(make_app_each_database):
    """Every test here runs on SQLite and on a real PostgreSQL server."""
    return make_app_each_database


@pytest.fixture
def call_as(client):
    """GET /api as a given account; returns the json envelope."""

    def _call(account, method="v1/chat/completions", o_args=CHAT_ARGS, **params):
        query = {"key": account["key"], "secret": account["secret"], "method": method, **params}
        if o_args is not None:
            query["_o_args"] = json.dumps(o_args)
        return client.get("/api", query_string=query).get_json()

    return _call


def codes(envelopes) -> list[str]:
    return [e["error_code"] for e in envelopes]


def cli_json(runner, *args) -> dict:
    result = runner.invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# -- daily quota ----------------------------------------------------------------------------


def test_daily_quota_admits_exactly_quota_calls_then_4013(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "2")
    assert codes(call_as(account, cache="no") for _ in range(3)) == ["0000", "0000", "4013"]


def test_quota_exceeded_reason_says_when_it_renews(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "0")
    envelope = call_as(account, lang="en")
    assert envelope["error_code"] == "4013"
    assert "daily quota of 0 calls is used up" in envelope["reason"]


def test_failed_upstream_call_does_not_use_quota(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "1")
    failed = call_as(account, o_args={**CHAT_ARGS, "model": "stub-500"})
    assert failed["error_code"] == "4002"
    assert call_as(account)["error_code"] == "0000"


def test_cache_hit_is_charged_and_flagged(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "2")
    first, hit, over = (call_as(account) for _ in range(3))
    assert (first["cache"], hit["cache"]) == (0, 1)
    assert codes([first, hit, over]) == ["0000", "0000", "4013"]


def test_cache_hit_beyond_the_balance_is_4016_and_takes_no_quota(runner, call_as):
    account = create_account(runner, "b", "--daily-quota", "5", "--balance", "1")
    first, refused = call_as(account), call_as(account)
    assert codes([first, refused]) == ["0000", "4016"]
    shown = cli_json(runner, "accounts", "show", account["key"])
    assert (shown["balance"], shown["today"]["used"]) == (0, 1)
    assert refused["api_info"] == "today:1 max:5 all[2=1+0+1];expires:never;credits:1"


def test_cache_hit_refused_for_a_dead_workers_hold_is_answered_after_its_refund(make_app):
    app = make_app(RESERVATION_TTL_SECONDS=0.05)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner, "q", "--daily-quota", "2")
    query = {"key": account["key"], "secret": account["secret"], "method": "v1/chat/completions"}
    query["_o_args"] = json.dumps(CHAT_ARGS)
    assert client.get("/api", query_string=query).get_json()["cache"] == 0
    meter, held = app.extensions["gateway"].meter, _account_object(app, account["key"])
    meter.admit(held, "v1/chat/completions", charged=True)
    time.sleep(0.1)  # the hold's worker "died": its reservation expired, the quota is used up
    hit = client.get("/api", query_string=query).get_json()
    assert (hit["error_code"], hit["cache"]) == ("0000", 1)
    assert meter.today_figures(held.id)["used"] == 2


def test_topup_calls_lifts_4013_today(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "1")
    assert codes(call_as(account, cache="no") for _ in range(2)) == ["0000", "4013"]
    shown = cli_json(runner, "accounts", "topup", account["key"], "--calls", "1")
    assert shown["today"]["extra_calls"] == 1
    assert call_as(account, cache="no")["error_code"] == "0000"
    assert call_as(account, cache="no")["error_code"] == "4013"


# -- api_info -------------------------------------------------------------------------------


def test_api_info_counts_charged_cached_and_uncharged_calls(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "5", "--expires", "2099-01-01")
    call_as(account)  # charged, upstream
    call_as(account)  # charged, cache hit
    call_as(account, o_args={**CHAT_ARGS, "model": "stub-500"})  # not charged
    envelope = call_as(account, o_args={"messages": "not a list"})  # 4003, not charged
    assert envelope["api_info"] == "today:2 max:5 all[4=1+1+2];expires:2099-01-01"


def test_api_info_max_includes_todays_topup(runner, call_as):
    account = create_account(runner, "q", "--daily-quota", "3")
    runner.invoke(args=["accounts", "topup", account["key"], "--calls", "4"])
    assert call_as(account)["api_info"] == "today:1 max:7 all[1=1+0+0];expires:never"


# -- balance --------------------------------------------------------------------------------


def test_balance_admits_calls_while_credits_last_then_4016(runner, call_as):
    account = create_account(runner, "b", "--balance", "2")
    assert codes(call_as(account, cache="no") for _ in range(3)) == ["0000", "0000", "4016"]
    assert cli_json(runner, "accounts", "show", account["key"])["balance"] == 0


def test_method_price_comes_from_config(make_app):
    app = make_app(METHOD_PRICES={"v1/chat/completions": 3})
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner, "b", "--balance", "5")
    query = {"key": account["key"], "secret": account["secret"], "cache": "no"}
    query.update(method="v1/chat/completions", _o_args=json.dumps(CHAT_ARGS))
    results = [client.get("/api", query_string=query).get_json() for _ in range(2)]
    assert codes(results) == ["0000", "4016"]
    assert "costs 3 credits" in results[1]["reason"]
    assert cli_json(runner, "accounts", "show", account["key"])["balance"] == 2


def test_free_method_needs_no_balance(runner, call_as):
    account = create_account(runner, "b", "--balance", "0")
    assert call_as(account, method="v1/models", o_args=None)["error_code"] == "0000"


def test_failed_call_refunds_its_credits(runner, call_as):
    account = create_account(runner, "b", "--balance", "1")
    assert call_as(account, o_args={**CHAT_ARGS, "model": "stub-429"})["error_code"] == "4002"
    assert cli_json(runner, "accounts", "show", account["key"])["balance"] == 1


def test_topup_credits_lifts_4016(runner, call_as):
    account = create_account(runner, "b", "--balance", "0")
    assert call_as(account)["error_code"] == "4016"
    assert cli_json(runner, "accounts", "topup", account["key"], "--credits", "1")["balance"] == 1
    assert call_as(account)["error_code"] == "0000"


# -- concurrency (database-held slots: no REDIS_URL) ------------------------------------------


def _account_object(app, key):
    return app.extensions["gateway"].accounts.get(key)


def test_concurrency_limit_refuses_the_call_beyond_it_with_4008(app, runner):
    meter = app.extensions["gateway"].meter
    account = _account_object(app, create_account(runner, "c", "--concurrency", "2")["key"])
    held = [meter.admit(account, "v1/chat/completions", charged=True) for _ in range(2)]
    with pytest.raises(GatewayError) as refused:
        meter.admit(account, "v1/chat/completions", charged=True)
    assert refused.value.code == "4008"
    meter.settle(held[0], UsageRecord(request_id="r1", error_code="0000", account_id=account.id))
    meter.admit(account, "v1/chat/completions", charged=True)  # a slot is free again


def test_refused_admission_holds_nothing(app, runner):
    meter = app.extensions["gateway"].meter
    key = create_account(runner, "c", "--concurrency", "1", "--daily-quota", "5")["key"]
    account = _account_object(app, key)
    meter.admit(account, "v1/chat/completions", charged=True)
    with pytest.raises(GatewayError):
        meter.admit(account, "v1/chat/completions", charged=True)
    assert meter.today_figures(account.id)["used"] == 1  # the 4008 took no quota


def test_expired_reservation_is_refunded_once_and_not_charged_later(make_app):
    app = make_app(RESERVATION_TTL_SECONDS=0.05)
    runner = app.test_cli_runner()
    meter = app.extensions["gateway"].meter
    key = create_account(runner, "c", "--concurrency", "1", "--balance", "3")["key"]
    account = _account_object(app, key)
    lost = meter.admit(account, "v1/chat/completions", charged=True)  # its worker "dies"
    time.sleep(0.1)
    meter.admit(account, "v1/chat/completions", charged=True)  # sweeps and refunds `lost`
    figures = meter.today_figures(account.id)
    assert (figures["used"], figures["in_flight"]) == (1, 1)
    assert app.extensions["gateway"].accounts.get(key).balance == 2
    late = meter.settle(lost, UsageRecord(request_id="r", error_code="0000", account_id=account.id))
    with app.extensions["gateway"].engine.connect() as connection:
        row = connection.execute(
            select(storage.usage).where(storage.usage.c.id == late.usage_id)
        ).one()
    assert row.charged is False
    assert app.extensions["gateway"].accounts.get(key).balance == 2


# -- account status, expiry, enabled APIs, API stops --------------------------------------------


def test_stopped_account_gets_4007_until_started(runner, call_as):
    account = create_account(runner, "s")
    assert cli_json(runner, "accounts", "stop", account["key"])["status"] == "stopped"
    assert call_as(account)["error_code"] == "4007"
    runner.invoke(args=["accounts", "start", account["key"]])
    assert call_as(account)["error_code"] == "0000"


def test_expired_account_gets_4005_saying_it_expired(runner, call_as):
    yesterday = (date.today() - timedelta(days=2)).isoformat()
    account = create_account(runner, "old", "--expires", yesterday)
    envelope = call_as(account, lang="en")
    assert envelope["error_code"] == "4005"
    assert f"expired on {yesterday}" in envelope["reason"]


def test_method_not_enabled_for_account_is_4012(runner, call_as):
    account = create_account(runner, "e", "--apis", "v1/embeddings")
    assert call_as(account)["error_code"] == "4012"
    embedded = call_as(account, method="v1/embeddings", o_args={"input": "x"})
    assert embedded["error_code"] == "0000"


def test_platform_enables_all_its_methods(runner, call_as):
    account = create_account(runner, "e", "--apis", "openai")
    assert call_as(account)["error_code"] == "0000"


def test_unknown_api_name_is_refused_by_create(runner):
    result = runner.invoke(args=["accounts", "create", "x", "--apis", "v1/nope"])
    assert result.exit_code == 2 and "v1/nope" in result.output


def test_stopped_method_is_4006_for_everyone(runner, call_as):
    account = create_account(runner, "a")
    runner.invoke(args=["apis", "stop", "v1/chat/completions"])
    envelope = call_as(account, lang="en")
    assert envelope["error_code"] == "4006" and "for all accounts" in envelope["reason"]
    assert call_as(account, method="v1/models", o_args=None)["error_code"] == "0000"


def test_api_stopped_for_one_account_only(runner, call_as):
    one, two = create_account(runner, "one"), create_account(runner, "two")
    runner.invoke(args=["apis", "stop", "openai", "--account", one["key"]])
    assert codes([call_as(one), call_as(two)]) == ["4006", "0000"]


def test_stop_all_stops_every_api(runner, call_as):
    account = create_account(runner, "a")
    runner.invoke(args=["apis", "stop", "all"])
    assert call_as(account, method="v1/models", o_args=None)["error_code"] == "4006"


def test_maintenance_is_4009_and_start_ends_it(runner, call_as):
    account = create_account(runner, "a")
    runner.invoke(args=["apis", "maintenance", "openai"])
    assert call_as(account)["error_code"] == "4009"
    runner.invoke(args=["apis", "start", "openai"])
    assert call_as(account)["error_code"] == "0000"


def test_stop_wins_over_maintenance(runner, call_as):
    account = create_account(runner, "a")
    runner.invoke(args=["apis", "maintenance", "openai"])
    runner.invoke(args=["apis", "stop", "v1/chat/completions"])
    assert call_as(account)["error_code"] == "4006"


def test_apis_command_refuses_unknown_target(runner):
    result = runner.invoke(args=["apis", "stop", "v1/nope"])
    assert result.exit_code == 2 and "not a catalog method" in result.output


# -- rotate-secret ----------------------------------------------------------------------------


def test_rotate_secret_retires_the_old_secret(runner, call_as):
    account = create_account(runner, "r")
    rotated = cli_json(runner, "accounts", "rotate-secret", account["key"])
    assert rotated["secret"] != account["secret"]
    assert call_as(account)["error_code"] == "4005"
    assert call_as({**account, "secret": rotated["secret"]})["error_code"] == "0000"


def test_commands_on_unknown_key_fail_with_a_message(runner):
    result = runner.invoke(args=["accounts", "show", "nokey"])
    assert result.exit_code == 1 and "no account has the key 'nokey'" in result.output


# -- signed requests ----------------------------------------------------------------------------


@pytest.fixture
def signed_call(client):
    def _call(account, *, dateline=None, sign=None, **extra):
        params = {
            "key": account["key"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(CHAT_ARGS, ensure_ascii=False),
            "dateline": str(int(time.time()) if dateline is None else dateline),
            "lang": "en",
            **extra,
        }
        params["sign"] = sign or compute_sign(account["secret"], params)
        return client.get("/api", query_string=params).get_json()

    return _call


def test_signed_request_without_secret_is_answered(account, signed_call):
    envelope = signed_call(account)
    assert envelope["error_code"] == "0000"
    assert "sign" not in envelope["call_args"] and "dateline" in envelope["call_args"]


def test_replayed_sign_is_4005(account, client):
    params = {"key": account["key"], "method": "v1/models", "dateline": str(int(time.time()))}
    params["sign"] = compute_sign(account["secret"], params)
    first = client.get("/api", query_string=params).get_json()
    replay = client.get("/api", query_string=params).get_json()
    assert (first["error_code"], replay["error_code"]) == ("0000", "4005")


def test_replay_reason_says_to_sign_anew(account, signed_call):
    dateline = int(time.time())
    signed_call(account, dateline=dateline, nonce="1")
    envelope = signed_call(account, dateline=dateline, nonce="1")
    assert envelope["error_code"] == "4005" and "already used" in envelope["reason"]
    assert signed_call(account, dateline=dateline, nonce="2")["error_code"] == "0000"


def test_stale_dateline_is_4005(account, signed_call):
    envelope = signed_call(account, dateline=int(time.time()) - 3600)
    assert envelope["error_code"] == "4005" and "must be within ±300 s" in envelope["reason"]


def test_wrong_sign_is_4005(account, signed_call):
    envelope = signed_call(account, sign="0" * 32)
    assert envelope["error_code"] == "4005" and "`sign` does not match" in envelope["reason"]


def test_sign_of_unknown_key_is_4004(signed_call):
    assert signed_call({"key": "nokey", "secret": "x"})["error_code"] == "4004"


def test_sign_without_dateline_is_4014(account, client):
    params = {"key": account["key"], "method": "v1/models", "sign": "A" * 32}
    assert client.get("/api", query_string=params).get_json()["error_code"] == "4014"


# -- usage report ---------------------------------------------------------------------------------


def test_usage_report_agrees_with_the_calls_made(runner, call_as):
    account = create_account(runner, "u", "--daily-quota", "2")
    call_as(account)  # 0000 upstream
    call_as(account)  # 0000 cache hit
    call_as(account)  # 4013
    call_as(account, o_args={**CHAT_ARGS, "model": "stub-500"})  # 4013 before the upstream
    report = cli_json(runner, "usage", account["key"])
    assert {k: report[k] for k in ("calls", "charged", "cache_hits", "by_code")} == {
        "calls": 4,
        "charged": 2,
        "cache_hits": 1,
        "by_code": {"0000": 2, "4013": 2},
    }
    assert report["tokens"]["total"] > 0


def test_usage_report_since_tomorrow_is_empty(runner, call_as):
    account = create_account(runner, "u")
    call_as(account)
    tomorrow = (date.today() + timedelta(days=2)).isoformat()
    report = cli_json(runner, "usage", account["key"], "--since", tomorrow)
    assert (report["calls"], report["by_code"]) == (0, {})


def test_concurrent_calls_of_one_limited_account_all_settle(make_app):
    """Admission and settlement lock rows in one order: on PostgreSQL, 8 threads of one account
    with database-held slots once deadlocked (4000/5000); every call must answer 0000."""
    app = make_app(UPSTREAM_TIMEOUT_SECONDS=20)  # a loaded machine must not turn calls to 4017
    runner = app.test_cli_runner()
    account = create_account(runner, "busy", "--concurrency", "50", "--balance", "1000")
    query = {"key": account["key"], "secret": account["secret"], "cache": "no"}
    query.update(method="v1/chat/completions", _o_args=json.dumps(CHAT_ARGS))
    found: list[str] = []

    def calls() -> None:
        client = app.test_client()
        for _ in range(3):
            found.append(client.get("/api", query_string=query).get_json()["error_code"])

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(found) == {"0000": 24}
    shown = cli_json(runner, "accounts", "show", account["key"])
    assert (shown["balance"], shown["today"]["used"], shown["today"]["in_flight"]) == (976, 24, 0)
