"""Two gateway processes on different ports sharing one PostgreSQL database and one Redis hold
the same limits together; Redis stopped mid-run costs no HTTP 500 and leaks no slot."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS, SEALING_KEY
from tests.served import bases, fire_at_once, two_hosts, wait_until
from tests.servers import RedisServer

SLOW_SECONDS = 2.0


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=SLOW_SECONDS).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, postgres_server, redis, slow_stub):
    workdir = tmp_path_factory.mktemp("two-hosts")
    settings = {
        "DATABASE_URL": postgres_server.new_database(),
        "REDIS_URL": redis.url,
        "ACCOUNT_SEALING_KEY": SEALING_KEY,
        "OPENAI_BASE_URL": slow_stub.base_url,
        "OPENAI_API_KEY": "sk-upstream-secret",
        "UPSTREAM_TIMEOUT_SECONDS": "20",
        "UPSTREAM_MAX_RETRIES": "0",
    }
    with two_hosts(workdir, **settings) as both:
        yield both


def slots_in_redis(redis: RedisServer, account_id: int) -> int:
    return int(redis.command("ZCARD", f"gw:slots:{account_id}"))


def test_quota_5_holds_across_two_processes(gateways):
    account = gateways[0].flask_json("accounts", "create", "quota", "--daily-quota", "5")
    assert fire_at_once(bases(gateways), account, 40) == {"0000": 5, "4013": 35}
    report = gateways[1].flask_json("usage", account["key"])
    assert (report["calls"], report["charged"]) == (40, 5)


def test_concurrency_2_holds_across_two_processes(gateways, redis):
    account = gateways[0].flask_json("accounts", "create", "conc", "--concurrency", "2")
    assert fire_at_once(bases(gateways), account, 6, model="stub-slow") == {"0000": 2, "4008": 4}
    assert slots_in_redis(redis, account["id"]) == 0


def test_balance_3_holds_across_two_processes(gateways):
    account = gateways[0].flask_json("accounts", "create", "prepaid", "--balance", "3")
    assert fire_at_once(bases(gateways), account, 12) == {"0000": 3, "4016": 9}
    assert gateways[1].flask_json("accounts", "show", account["key"])["balance"] == 0


def test_cache_is_shared_by_both_processes(gateways):
    account = gateways[0].flask_json("accounts", "create", "cache")
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(CHAT_ARGS),
    }
    first = requests.get(gateways[0].base + "/api", params=query, timeout=30).json()
    second = requests.get(gateways[1].base + "/api", params=query, timeout=30).json()
    assert (first["cache"], second["cache"]) == (0, 1)
    assert second["response"] == first["response"]


def test_redis_stopped_mid_run_fails_limited_calls_closed_and_leaks_no_slot(
    gateways, redis, slow_stub
):
    limited = gateways[0].flask_json("accounts", "create", "limited", "--concurrency", "2")
    unlimited = gateways[0].flask_json("accounts", "create", "unlimited")

    def query(account, model=None):
        return {
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(dict(CHAT_ARGS, **({"model": model} if model else {}))),
            "cache": "no",
            "lang": "en",
        }

    slow_stub.reset()
    in_flight_codes: list[str] = []
    in_flight = [
        threading.Thread(
            target=lambda base=base: in_flight_codes.append(
                requests.get(base + "/api", params=query(limited, "stub-slow"), timeout=60).json()[
                    "error_code"
                ]
            )
        )
        for base in bases(gateways)
    ]
    for thread in in_flight:
        thread.start()
    wait_until(lambda: len(slow_stub.requests_seen("/v1/chat/completions")) >= 2)
    assert slots_in_redis(redis, limited["id"]) == 2

    redis.stop(save=True)  # both slow calls hold a slot; their releases will find Redis gone
    try:
        during = [
            requests.get(b + "/api", params=query(limited), timeout=30) for b in bases(gateways)
        ]
        free = [
            requests.get(b + "/api", params=query(unlimited), timeout=30) for b in bases(gateways)
        ]
        for thread in in_flight:
            thread.join()
    finally:
        redis.start()

    assert [r.status_code for r in during + free] == [200, 200, 200, 200]
    assert [r.json()["error_code"] for r in during] == ["4000", "4000"]
    assert "Redis" in during[0].json()["reason"]
    assert [r.json()["error_code"] for r in free] == ["0000", "0000"]  # no limit: no Redis needed
    assert in_flight_codes == ["0000", "0000"]  # the calls in flight finished normally

    # The releases that failed during the outage are retried: no slot stays leaked.
    wait_until(lambda: slots_in_redis(redis, limited["id"]) == 0, 15, "a slot leaked")
    assert fire_at_once(bases(gateways), limited, 6, model="stub-slow") == {"0000": 2, "4008": 4}
