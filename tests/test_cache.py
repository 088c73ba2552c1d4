"""Answer cache: hits, canonical keys, tenancy, errors never cached, one upstream call per
burst of identical misses."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import make_url

from proxy.cache import AnswerCache, TieredCache, canonical_key
from proxy.dispatcher import Call
from proxy.local_store import LocalAnswerCache
from proxy.services import answer_store_directory
from tests.conftest import CHAT_ARGS, create_account


def chat_upstream_calls(stub):
    return [r for r in stub.requests_seen() if r["path"] == "/v1/chat/completions"]


def test_second_identical_call_is_a_cache_hit(call, stub):
    first = call("v1/chat/completions", CHAT_ARGS)
    second = call("v1/chat/completions", CHAT_ARGS)
    assert (first["cache"], second["cache"]) == (0, 1)
    assert second["response"] == first["response"]
    assert len(chat_upstream_calls(stub)) == 1


def test_key_order_and_formatting_of_o_args_share_one_entry(call, stub):
    first = call(
        "v1/chat/completions", '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}'
    )
    assert first["error_code"] == "0000", first
    again = call(
        "v1/chat/completions",
        '{ "messages" : [ {"content":"x", "role":"user"} ],\n "model":"gpt-4o-mini" }',
    )
    assert again["cache"] == 1
    assert len(chat_upstream_calls(stub)) == 1


def test_default_model_and_explicit_default_share_one_entry(call):
    call("v1/chat/completions", CHAT_ARGS)
    assert call("v1/chat/completions", {**CHAT_ARGS, "model": "gpt-4o-mini"})["cache"] == 1


def test_cache_no_always_calls_upstream(call, stub):
    call("v1/chat/completions", CHAT_ARGS)
    envelope = call("v1/chat/completions", CHAT_ARGS, cache="no")
    assert envelope["cache"] == 0
    assert len(chat_upstream_calls(stub)) == 2


def test_other_account_does_not_see_cached_answer(client, runner, call):
    call("v1/chat/completions", CHAT_ARGS)
    other = create_account(runner, "other")
    envelope = client.get(
        "/api",
        query_string={
            **{k: other[k] for k in ("key", "secret")},
            "method": "v1/chat/completions",
            "_o_args": '{"messages":[{"role":"user","content":"你好 world"}]}',
        },
    ).get_json()
    assert envelope["cache"] == 0


def test_version_is_part_of_the_key(call):
    call("v1/models", version="1")
    assert call("v1/models", version="v1")["cache"] == 0


def test_errors_are_never_cached(call, stub):
    args = {**CHAT_ARGS, "model": "stub-500"}
    call("v1/chat/completions", args)
    envelope = call("v1/chat/completions", args)
    assert (envelope["error_code"], envelope["cache"]) == ("4002", 0)
    assert len(chat_upstream_calls(stub)) == 2


def test_cache_hit_is_recorded_as_cached_in_api_info(call):
    call("v1/models")
    envelope = call("v1/models")
    assert envelope["api_info"] == "today:2 max:30000 all[2=1+1+0];expires:never"


def test_identical_concurrent_misses_make_one_upstream_call(make_app, stub):
    # A generous timeout: a loaded machine must not turn the slow answer into a 4017.
    app = make_app(UPSTREAM_TIMEOUT_SECONDS=20.0)
    dispatcher = app.extensions["gateway"].dispatcher
    args = {**CHAT_ARGS, "model": "stub-slow"}  # the stub holds each answer 0.3 s
    results = []

    def worker():
        with app.app_context():
            results.append(dispatcher.dispatch(Call("v1/chat/completions", args, account_id=1)))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(chat_upstream_calls(stub)) == 1
    assert sorted(outcome.cached for outcome in results) == [False] + [True] * 5


def test_canonical_key_ignores_key_order():
    a = canonical_key(tenant="1", method="m", version="", upstream="u", o_args={"a": 1, "b": [1]})
    b = canonical_key(tenant="1", method="m", version="", upstream="u", o_args={"b": [1], "a": 1})
    assert a == b


def test_canonical_key_differs_by_tenant_and_upstream():
    base = {"method": "m", "version": "", "o_args": {}}
    keys = {canonical_key(tenant=t, upstream=u, **base) for t in ("1", "2") for u in ("x", "y")}
    assert len(keys) == 4


def test_cache_is_bounded_by_bytes():
    cache = AnswerCache(ttl_seconds=60, max_bytes=100)
    for index in range(10):
        cache.set(f"k{index}", {"text": "x" * 30})
    held = [index for index in range(10) if cache.get(f"k{index}") is not None]
    assert 0 < len(held) <= 2 and held[-1] == 9


def test_answer_larger_than_the_cache_is_not_stored():
    cache = AnswerCache(ttl_seconds=60, max_bytes=10)
    cache.set("big", {"text": "x" * 100})
    assert cache.get("big") is None


# -- one cache for every worker: the in-process layer in front of the shared store ---------


def test_two_workers_on_one_database_share_answers_in_a_store_beside_it(make_app, stub, tmp_path):
    database = tmp_path / "shared.sqlite3"
    settings = {"DATABASE_URL": f"sqlite:///{database}", "CACHE_DIR": ""}  # the default place
    first, second = make_app(**settings), make_app(**settings)
    account = create_account(first.test_cli_runner())
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": '{"messages":[{"role":"user","content":"shared"}]}',
    }
    one = first.test_client().get("/api", query_string=query).get_json()
    two = second.test_client().get("/api", query_string=query).get_json()
    assert (one["cache"], two["cache"]) == (0, 1)
    assert two["response"] == one["response"]
    assert len(chat_upstream_calls(stub)) == 1
    assert (tmp_path / "shared.sqlite3-answers" / "answers.sqlite3").is_file()


def test_a_hit_in_the_workers_memory_is_the_kept_answer_itself(app):
    dispatcher = app.extensions["gateway"].dispatcher
    call = Call("v1/chat/completions", CHAT_ARGS, account_id=1)
    with app.app_context():
        first, second, third = (dispatcher.dispatch(call) for _ in range(3))
    assert (first.cached, second.cached, third.cached) == (False, True, True)
    assert third.response is second.response  # neither parsed nor rendered again


def tiered(directory, ttl_seconds: int) -> TieredCache:
    return TieredCache(
        AnswerCache(ttl_seconds=600, max_bytes=100_000, counts_memory=True),
        LocalAnswerCache(str(directory), ttl_seconds=ttl_seconds, max_bytes=100_000),
    )


def test_an_answer_kept_in_memory_expires_when_its_stored_entry_does(tmp_path):
    filler, reader = tiered(tmp_path, ttl_seconds=1), tiered(tmp_path, ttl_seconds=1)
    computed = []

    def compute():
        computed.append(1)
        return {"answer": len(computed)}, True

    assert filler.get_or_compute("k", compute) == ({"answer": 1}, False)
    time.sleep(0.5)
    assert reader.get_or_compute("k", compute) == ({"answer": 1}, True)  # kept from now on
    time.sleep(0.55)  # the entry is 1.05 s old: stale, though the reader kept it 0.55 s ago
    assert reader.get_or_compute("k", compute) == ({"answer": 2}, False)


def test_a_failing_store_costs_no_call_and_memory_still_serves_hits(make_app, tmp_path, caplog):
    in_the_way = tmp_path / "not-a-directory"
    in_the_way.write_text("")
    app = make_app(CACHE_DIR=str(in_the_way))
    account = create_account(app.test_cli_runner())
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": '{"messages":[{"role":"user","content":"x"}]}',
    }
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="proxy"):
        answers = [client.get("/api", query_string=query).get_json() for _ in range(2)]
    assert [(a["error_code"], a["cache"]) for a in answers] == [("0000", 0), ("0000", 1)]
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(f"answer cache: the answer store {in_the_way}")
    health = client.get("/health").get_json()
    assert (health["status"], health["cache"]["state"]) == ("healthy", "failing")


def test_store_folder_is_named_after_the_database_and_never_shared_by_two():
    def folder(url: str, configured: str = "") -> str | None:
        return answer_store_directory(configured, make_url(url), "/srv/gw/instance")

    assert folder("sqlite:////srv/gw/instance/gateway.sqlite3") == (
        "/srv/gw/instance/gateway.sqlite3-answers"
    )
    assert folder("sqlite://") is None and folder("sqlite:///:memory:") is None
    one = folder("postgresql+psycopg://gw:pw1@db/one")
    assert one.startswith("/srv/gw/instance/answer-cache-") and len(one) == 30 + 12
    assert folder("postgresql+psycopg://gw:pw2@db/one") == one  # the password is not in it
    assert folder("postgresql+psycopg://gw:pw1@db/two") != one
    assert folder("postgresql+psycopg://gw@db/one", configured="/var/cache/gw") == "/var/cache/gw"
