"""Answer cache: hits, canonical keys, tenancy, errors never cached, one upstream call per
burst of identical misses."""

from __future__ import annotations

import threading

from proxy.cache import AnswerCache, canonical_key
from proxy.dispatcher import Call
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
