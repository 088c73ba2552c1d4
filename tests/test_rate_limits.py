"""Calls and tokens per minute, per key and per account: 4008 with the seconds until the window
frees, 429 with Retry-After on /v1; TPM counts the tokens the upstream reports."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter

from sqlalchemy import func, select

from proxy import storage
from proxy.rate_limits import Limit, _wait_for_room, estimate_call_tokens
from tests.conftest import CHAT_ARGS, create_account
from tests.test_keys import create_key, envelope

RETRY = re.compile(r"retry in (\d+) s$")


# -- the window's rule (pure) ---------------------------------------------------------------


def test_rpm_frees_when_the_oldest_call_that_fills_it_leaves():
    limit = Limit("k1", "this key", rpm=2, tpm=None)
    assert _wait_for_room(limit, [(100.0, 0)], 0, now=110.0) is None
    assert _wait_for_room(limit, [(100.0, 0), (105.0, 0)], 0, now=110.0) == ("rpm", 50.0)


def test_tpm_frees_when_enough_tokens_leave_the_window():
    limit = Limit("k1", "this key", rpm=None, tpm=100)
    entries = [(100.0, 30), (105.0, 40), (108.0, 20)]
    assert _wait_for_room(limit, entries, 10, now=110.0) is None  # 90 + 10 fits
    assert _wait_for_room(limit, entries, 45, now=110.0) == ("tpm", 55.0)  # after 30 and 40
    assert _wait_for_room(limit, entries, 101, now=110.0) == ("tpm", None)  # never


def test_a_calls_estimate_is_its_prompt_plus_max_tokens_or_the_default():
    args = {"messages": [{"role": "user", "content": "abcdefgh"}]}  # 4 framing + 2
    assert estimate_call_tokens({**args, "max_tokens": 10}, 1024) == 16
    assert estimate_call_tokens({**args, "max_completion_tokens": 7}, 1024) == 13
    assert estimate_call_tokens(args, 1024) == 1030
    assert estimate_call_tokens({"input": "abcd"}, 1024) == 5  # embeddings: no completion
    assert estimate_call_tokens({"prompt": "a cat"}, 0) == 6  # an image: its prompt's tokens


# -- through the app ------------------------------------------------------------------------


def test_the_call_over_a_keys_rpm_is_4008_saying_when_it_frees(runner, client):
    account = create_account(runner)
    key = create_key(runner, account["key"], "--rpm", "2")
    assert [envelope(client, key)["error_code"] for _ in range(2)] == ["0000", "0000"]
    refused = envelope(client, key, lang="en")
    assert refused["error_code"] == "4008"
    assert "this key's limit of 2 calls per minute is reached; retry in " in refused["reason"]
    assert 1 <= int(RETRY.search(refused["reason"]).group(1)) <= 60
    assert envelope(client, account)["error_code"] == "0000"  # the account's other key


def test_an_accounts_rpm_holds_for_all_its_keys_together(runner, client):
    account = create_account(runner, "acme", "--rpm", "2")
    key = create_key(runner, account["key"])
    assert envelope(client, account)["error_code"] == "0000"
    assert envelope(client, key)["error_code"] == "0000"
    refused = envelope(client, key)
    assert refused["error_code"] == "4008"
    assert "this account's limit of 2 calls per minute is reached" in refused["reason"]


def test_a_call_refused_after_the_window_took_it_gives_its_place_back(app, runner, client):
    account = create_account(runner, "acme", "--daily-quota", "1")
    key = create_key(runner, account["key"], "--rpm", "5")
    assert envelope(client, key)["error_code"] == "0000"
    assert envelope(client, key)["error_code"] == "4013"
    assert rate_entries(app) == 1


def test_tpm_counts_the_tokens_the_upstream_reported(app, runner, client):
    account = create_account(runner)
    key = create_key(runner, account["key"], "--tpm", "100000")
    assert envelope(client, key, {**CHAT_ARGS, "max_tokens": 50})["error_code"] == "0000"
    streamed = dict(CHAT_ARGS, stream=True, max_tokens=50)
    client.get(
        "/api",
        query_string={
            "key": key["key"],
            "secret": key["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(streamed),
        },
    ).get_data()
    reported = [row.total_tokens for row in usage_rows(app)]
    assert len(reported) == 2 and all(tokens > 0 for tokens in reported)
    assert window_tokens(app) == sorted(reported)


def test_the_call_the_tpm_window_has_no_room_for_is_4008(runner, client):
    account = create_account(runner)
    o_args = {**CHAT_ARGS, "max_tokens": 90}
    estimate = estimate_call_tokens(o_args, 1024)
    key = create_key(runner, account["key"], "--tpm", str(estimate + 1))
    assert envelope(client, key, o_args)["error_code"] == "0000"
    refused = envelope(client, key, o_args)
    assert refused["error_code"] == "4008"
    assert f"this key's limit of {estimate + 1} tokens per minute is reached" in refused["reason"]
    assert RETRY.search(refused["reason"])


def test_a_call_larger_than_the_tpm_itself_is_4008_saying_to_lower_max_tokens(runner, client):
    account = create_account(runner)
    key = create_key(runner, account["key"], "--tpm", "50")
    refused = envelope(client, key, {**CHAT_ARGS, "max_tokens": 100})
    assert refused["error_code"] == "4008"
    assert (
        "more than this key's limit of 50 tokens per minute; lower max_tokens"
        in (refused["reason"])
    )


def test_4008_of_a_per_minute_limit_is_429_with_retry_after_on_v1(runner, client):
    account = create_account(runner)
    key = create_key(runner, account["key"], "--rpm", "1")
    headers = {"Authorization": f"Bearer {key['key']}:{key['secret']}"}
    assert client.post("/v1/chat/completions", json=CHAT_ARGS, headers=headers).status_code == 200
    refused = client.post("/v1/chat/completions", json=CHAT_ARGS, headers=headers)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.get_json()["error"]["code"] == "4008"


def test_rpm_holds_across_two_apps_sharing_postgresql_without_redis(make_app, postgres_server):
    """The database's windows: two apps (two hosts' worth of connection pools) on one
    PostgreSQL, 10x oversubscribed at once."""
    database = postgres_server.new_database()
    apps = [make_app(DATABASE_URL=database) for _ in range(2)]
    account = create_account(apps[0].test_cli_runner())
    key = create_key(apps[0].test_cli_runner(), account["key"], "--rpm", "3")
    barrier, codes = threading.Barrier(30), []

    def one(index: int) -> None:
        client = apps[index % 2].test_client()
        barrier.wait()
        codes.append(envelope(client, key)["error_code"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(codes) == {"0000": 3, "4008": 27}


def usage_rows(app):
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(select(storage.usage).order_by(storage.usage.c.id)).all()


def rate_entries(app) -> int:
    with app.extensions["gateway"].engine.connect() as connection:
        return connection.execute(
            select(func.count()).select_from(storage.rate_entries)
        ).scalar_one()


def window_tokens(app) -> list[int]:
    entries = storage.rate_entries.c
    with app.extensions["gateway"].engine.connect() as connection:
        return sorted(connection.execute(select(entries.tokens)).scalars())
