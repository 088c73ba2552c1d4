"""Limits hold exactly under gunicorn with 4 workers on one SQLite database: calls fired at
once from many client threads, counted by the codes they answer."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS, SEALING_KEY
from tests.served import ServedGateway, fire_at_once, wait_until

SLOW_SECONDS = 2.0  # the slow calls overlap: all are admitted long before the first ends


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=SLOW_SECONDS, hang_seconds=30.0).start()
    yield server
    server.stop()


def gateway_settings(workdir, stub, **extra) -> dict:
    return {
        "DATABASE_URL": f"sqlite:///{workdir / 'gateway.sqlite3'}",
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "sk-upstream-secret",
        "UPSTREAM_TIMEOUT_SECONDS": "20",
        "UPSTREAM_MAX_RETRIES": "0",
        "ACCOUNT_SEALING_KEY": SEALING_KEY,
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, slow_stub):
    workdir = tmp_path_factory.mktemp("four-workers")
    served = ServedGateway(workdir, workers=4, **gateway_settings(workdir, slow_stub)).start()
    yield served
    served.stop()


def test_quota_5_admits_exactly_5_of_40_concurrent_calls(gateway):
    account = gateway.flask_json("accounts", "create", "quota", "--daily-quota", "5")
    assert fire_at_once([gateway.base], account, 40) == {"0000": 5, "4013": 35}


def test_usage_report_agrees_with_the_concurrent_calls(gateway):
    account = gateway.flask_json("accounts", "create", "report", "--daily-quota", "5")
    fired = fire_at_once([gateway.base], account, 40)
    report = gateway.flask_json("usage", account["key"])
    assert (report["calls"], report["charged"], report["by_code"]) == (40, 5, dict(fired))


def test_concurrency_2_lets_exactly_2_of_6_slow_calls_through(gateway):
    account = gateway.flask_json("accounts", "create", "conc", "--concurrency", "2")
    assert fire_at_once([gateway.base], account, 6, model="stub-slow") == {
        "0000": 2,
        "4008": 4,
    }
    assert gateway.flask_json("accounts", "show", account["key"])["today"]["in_flight"] == 0


def test_balance_3_pays_for_exactly_3_of_12_concurrent_calls(gateway):
    account = gateway.flask_json("accounts", "create", "prepaid", "--balance", "3")
    assert fire_at_once([gateway.base], account, 12) == {"0000": 3, "4016": 9}
    assert gateway.flask_json("accounts", "show", account["key"])["balance"] == 0


def test_failed_upstream_calls_cost_nothing(gateway):
    account = gateway.flask_json(
        "accounts", "create", "failing", "--balance", "8", "--daily-quota", "8"
    )
    assert fire_at_once([gateway.base], account, 8, model="stub-500") == {"4002": 8}
    shown = gateway.flask_json("accounts", "show", account["key"])
    assert (shown["balance"], shown["today"]["used"]) == (8, 0)
    assert gateway.flask_json("usage", account["key"])["charged"] == 0


def test_a_killed_worker_loses_nothing_its_reservation_expires(tmp_path, slow_stub):
    slow_stub.reset()
    # Long enough for `accounts show` to read the hold before the respawned worker's periodic
    # sweep may refund it (tests/test_long_calls_served.py checks that sweep).
    ttl = 5.0
    settings = gateway_settings(tmp_path, slow_stub, RESERVATION_TTL_SECONDS=str(ttl))
    served = ServedGateway(tmp_path, workers=1, **settings).start()
    try:
        account = served.flask_json(
            "accounts", "create", "crash", "--daily-quota", "1", "--concurrency", "1"
        )
        params = {
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(dict(CHAT_ARGS, model="stub-hang")),
        }
        in_flight = threading.Thread(
            target=lambda: _swallow(requests.get, served.base + "/api", params=params, timeout=30)
        )
        in_flight.start()
        wait_until(lambda: slow_stub.requests_seen("/v1/chat/completions"))
        admitted_at = time.monotonic()
        served.kill_workers()  # mid-call: its quota unit and slot are held by a dead process
        in_flight.join()
        held = served.flask_json("accounts", "show", account["key"])["today"]
        assert (held["used"], held["in_flight"]) == (1, 1)
        time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - admitted_at)))
        # The next admission finds the reservation expired and refunds it, once.
        assert _get_code(served.base, dict(params, _o_args=json.dumps(CHAT_ARGS))) == "0000"
        after = served.flask_json("accounts", "show", account["key"])["today"]
        assert (after["used"], after["in_flight"]) == (1, 0)
        report = served.flask_json("usage", account["key"])
        assert (report["charged"], report["by_code"]) == (1, {"0000": 1})
    finally:
        served.stop()


def _get_code(base: str, params: dict) -> str:
    deadline = time.monotonic() + 30
    while True:  # the master may still be respawning the killed worker
        try:
            return requests.get(base + "/api", params=params, timeout=30).json()["error_code"]
        except requests.RequestException:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def _swallow(function, *args, **kwargs) -> None:
    try:
        function(*args, **kwargs)
    except requests.RequestException:
        pass  # the worker serving it was killed
