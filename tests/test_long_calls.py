"""A call holds its reservation (quota, balance, concurrency slot) for as long as it runs, past
RESERVATION_TTL_SECONDS; slots that Redis loses are rebuilt from the live reservations before
the next call is counted. In one process, on SQLite and PostgreSQL, with real redis-servers."""

from __future__ import annotations

import json
import threading
import time

import pytest

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS, create_account
from tests.served import wait_until
from tests.servers import RedisServer

TTL = 1.0  # RESERVATION_TTL_SECONDS of these tests
SLOW_SECONDS = 3.5  # a stub-slow call outlives the TTL by far


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=SLOW_SECONDS).start()
    yield server
    server.stop()


@pytest.fixture
def long_call_app(make_app_each_database, slow_stub):
    """An app whose reservations expire after TTL unless renewed, on either database."""
    slow_stub.reset()
    return make_app_each_database(
        OPENAI_BASE_URL=slow_stub.base_url, RESERVATION_TTL_SECONDS=TTL, UPSTREAM_TIMEOUT_SECONDS=20
    )


def api_code(app, account, model: str | None = None) -> str:
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(dict(CHAT_ARGS, **({"model": model} if model else {}))),
        "cache": "no",
    }
    return app.test_client().get("/api", query_string=query).get_json()["error_code"]


def slow_calls(app, account, count: int, stub) -> tuple[list[threading.Thread], list[str]]:
    """`count` stub-slow calls in threads, returned once the upstream has seen all of them."""
    codes: list[str] = []
    threads = [
        threading.Thread(target=lambda: codes.append(api_code(app, account, "stub-slow")))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(stub.requests_seen("/v1/chat/completions")) >= count)
    return threads, codes


def cli_json(app, *args) -> dict:
    result = app.test_cli_runner().invoke(args=[*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_call_running_past_the_reservation_ttl_keeps_its_quota_and_slot_and_is_charged(
    long_call_app, slow_stub
):
    app = long_call_app
    account = create_account(
        app.test_cli_runner(), "long", "--daily-quota", "1", "--concurrency", "1"
    )
    threads, codes = slow_calls(app, account, 1, slow_stub)
    time.sleep(TTL + 1)  # the reservation would have expired by now, were it not renewed
    assert api_code(app, account) == "4013"
    held = cli_json(app, "accounts", "show", account["key"])["today"]
    assert (held["used"], held["in_flight"]) == (1, 1)
    threads[0].join()
    assert codes == ["0000"]
    report = cli_json(app, "usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1, "4013": 1})
    after = cli_json(app, "accounts", "show", account["key"])["today"]
    assert (after["used"], after["in_flight"]) == (1, 0)


def test_redis_slot_of_a_call_running_past_the_ttl_is_held_until_it_ends(
    make_app, redis_server, slow_stub
):
    slow_stub.reset()
    app = make_app(
        OPENAI_BASE_URL=slow_stub.base_url,
        REDIS_URL=redis_server.url,
        RESERVATION_TTL_SECONDS=TTL,
        UPSTREAM_TIMEOUT_SECONDS=20,
    )
    account = create_account(app.test_cli_runner(), "long", "--concurrency", "1")
    threads, codes = slow_calls(app, account, 1, slow_stub)
    time.sleep(TTL + 1)  # the slot would have expired in Redis by now, were it not renewed
    assert api_code(app, account) == "4008"
    threads[0].join()
    assert codes == ["0000"]
    assert api_code(app, account) == "0000"  # the slot was given back when the call ended


@pytest.mark.parametrize("loss", ["restart empty", "FLUSHALL"])
def test_slots_redis_lost_mid_call_are_rebuilt_before_the_next_call_counts(
    loss, make_app, slow_stub
):
    redis = RedisServer().start()
    try:
        slow_stub.reset()
        app = make_app(
            OPENAI_BASE_URL=slow_stub.base_url, REDIS_URL=redis.url, UPSTREAM_TIMEOUT_SECONDS=20
        )
        account = create_account(app.test_cli_runner(), "limited", "--concurrency", "2")
        threads, codes = slow_calls(app, account, 2, slow_stub)
        if loss == "FLUSHALL":
            redis.command("FLUSHALL")
        else:
            redis.stop(save=False)
            redis.start()
        assert api_code(app, account) == "4008"
        for thread in threads:
            thread.join()
        assert codes == ["0000", "0000"]
        assert redis.command("ZCARD", f"gw:slots:{account['id']}") == "0"
    finally:
        redis.close()


def test_call_cut_by_a_stopping_worker_answers_4017_with_its_one_usage_row(make_app, slow_stub):
    slow_stub.reset()
    app = make_app(OPENAI_BASE_URL=slow_stub.base_url, UPSTREAM_TIMEOUT_SECONDS=20)
    account = create_account(app.test_cli_runner(), "cut", "--daily-quota", "1")
    threads, codes = slow_calls(app, account, 1, slow_stub)
    assert app.extensions["gateway"].running.cut_all() == 1
    assert api_code(app, account) == "4017"  # admitted after the cut: refused, refunded
    threads[0].join()  # the upstream answers after the cut: the client gets the cut's answer
    assert codes == ["4017"]
    report = cli_json(app, "usage", account["key"])
    assert (report["calls"], report["charged"], report["by_code"]) == (2, 0, {"4017": 2})
    after = cli_json(app, "accounts", "show", account["key"])["today"]
    assert (after["used"], after["in_flight"]) == (0, 0)


def test_the_periodic_sweep_refunds_an_expired_hold_without_a_call_of_its_account(
    make_app_each_database,
):
    app = make_app_each_database(RESERVATION_TTL_SECONDS=0.05)
    gateway = app.extensions["gateway"]
    created = create_account(app.test_cli_runner(), "dead", "--concurrency", "1", "--balance", "2")
    account = gateway.accounts.get(created["key"])
    gateway.meter.admit(account, "v1/chat/completions", charged=True)  # its worker "dies"
    time.sleep(0.1)
    assert gateway.meter.refund_expired() == 1  # what each served worker's keeper runs
    held = cli_json(app, "accounts", "show", created["key"])
    assert (held["today"]["used"], held["today"]["in_flight"], held["balance"]) == (0, 0, 2)
