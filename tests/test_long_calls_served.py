"""Long calls under gunicorn: a /v1 stream keeps its hold past RESERVATION_TTL_SECONDS, a
killed worker's hold is refunded without waiting for its account's next call, and SIGTERM cuts
the calls that outlast the grace period: settled, refunded, logged with their request ids."""

from __future__ import annotations

import json
import re
import threading
import time
from types import SimpleNamespace

import pytest
import requests
from sqlalchemy import create_engine, select

from proxy import storage
from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway, wait_until

TTL = 2.0  # RESERVATION_TTL_SECONDS of the gateway that is not stopped
STREAM_DELAY = 0.3  # between the events of a stub-stream-slow stream
GRACE = 5  # GUNICORN_GRACEFUL_TIMEOUT of the gateway that is stopped: calls are cut at 4 s


@pytest.fixture(scope="module")
def long_stub():
    server = StubServer(stream_slow_delay=STREAM_DELAY, hang_seconds=60.0).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, long_stub):
    workdir = tmp_path_factory.mktemp("long-calls")
    served = ServedGateway.on_stub(
        workdir,
        long_stub,
        workers=1,
        RESERVATION_TTL_SECONDS=str(TTL),
        UPSTREAM_TIMEOUT_SECONDS="20",
        UPSTREAM_MAX_RETRIES="0",
    ).start()
    yield served
    served.stop()


def words(count: int) -> str:
    """A message the stub answers in about count + 5 stream events."""
    return " ".join(["word"] * count)


def api_params(account: dict, model: str) -> dict:
    return {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(dict(CHAT_ARGS, model=model)),
        "cache": "no",
    }


def read_stream(base: str, account: dict, content: str, into: dict) -> None:
    """POST a /v1 stream of stub-stream-slow and keep its request id and its data lines."""
    into["events"] = []
    try:
        with requests.post(
            base + "/v1/chat/completions",
            json={
                "model": "stub-stream-slow",
                "stream": True,
                "messages": [{"role": "user", "content": content}],
            },
            headers={"Authorization": f"Bearer {account['key']}:{account['secret']}"},
            stream=True,
            timeout=60,
        ) as response:
            into["request_id"] = response.headers.get("X-Request-Id")
            for line in response.iter_lines():
                if line:
                    into["events"].append(line.decode())
    except requests.RequestException as exc:
        into["error"] = exc


def call_quietly(*args, **kwargs) -> None:
    try:
        requests.get(*args, **kwargs)
    except requests.RequestException:
        pass  # the worker serving it was killed


def today(served: ServedGateway, account: dict) -> tuple[int, int]:
    shown = served.flask_json("accounts", "show", account["key"])["today"]
    return shown["used"], shown["in_flight"]


def test_stream_running_past_the_ttl_holds_its_quota_and_is_charged_when_it_ends(
    gateway, long_stub
):
    account = gateway.flask_json(
        "accounts", "create", "stream", "--daily-quota", "1", "--concurrency", "1"
    )
    long_stub.reset()
    stream: dict = {}
    reader = threading.Thread(target=read_stream, args=(gateway.base, account, words(12), stream))
    reader.start()  # about 17 events 0.3 s apart: 5 s
    wait_until(lambda: stream.get("events"), 30, "the stream never started")
    time.sleep(TTL + 1)  # the reservation would have expired by now, were it not renewed
    second = requests.get(gateway.base + "/api", params=api_params(account, "gpt-4o-mini"))
    assert second.json()["error_code"] == "4013"
    reader.join()
    assert stream["events"][-1] == "data: [DONE]"
    assert not any('"error"' in event for event in stream["events"])
    report = gateway.flask_json("usage", account["key"])
    assert (report["charged"], report["by_code"]) == (1, {"0000": 1, "4013": 1})
    assert today(gateway, account) == (1, 0)


def test_reservation_of_a_killed_worker_is_refunded_without_a_call_of_its_account(
    gateway, long_stub
):
    account = gateway.flask_json(
        "accounts", "create", "crash", "--daily-quota", "1", "--concurrency", "1"
    )
    long_stub.reset()
    in_flight = threading.Thread(
        target=call_quietly,
        args=(gateway.base + "/api",),
        kwargs={"params": api_params(account, "stub-hang"), "timeout": 60},
    )
    in_flight.start()
    wait_until(lambda: long_stub.requests_seen("/v1/chat/completions"))
    gateway.kill_workers()  # mid-call: its quota unit and slot are held by a dead process
    in_flight.join()
    # No call of this account follows: the respawned worker refunds the hold once it expires.
    wait_until(lambda: today(gateway, account) == (0, 0), 120, "the hold was never refunded")


# -- SIGTERM while calls run longer than the grace period ----------------------------------------


@pytest.fixture(scope="module")
def stopped_mid_calls(tmp_path_factory, long_stub):
    """SIGTERM to a gateway serving a hanging call and a long stream; what was left after."""
    workdir = tmp_path_factory.mktemp("sigterm")
    served = ServedGateway.on_stub(
        workdir,
        long_stub,
        workers=1,
        GUNICORN_GRACEFUL_TIMEOUT=str(GRACE),
        UPSTREAM_TIMEOUT_SECONDS="20",
        UPSTREAM_MAX_RETRIES="0",
    ).start()
    try:
        account = served.flask_json("accounts", "create", "cut", "--daily-quota", "5")
        long_stub.reset()
        stream: dict = {}
        calls = [
            threading.Thread(
                target=call_quietly,
                args=(served.base + "/api",),
                kwargs={"params": api_params(account, "stub-hang"), "timeout": 60},
            ),
            threading.Thread(  # about 45 events 0.3 s apart: 13 s
                target=read_stream, args=(served.base, account, words(40), stream)
            ),
        ]
        for call in calls:
            call.start()
        wait_until(lambda: len(long_stub.requests_seen("/v1/chat/completions")) == 2)
        served.process.terminate()
        served.process.wait(timeout=60)
        for call in calls:
            call.join()
    finally:
        served.stop()
    engine = create_engine(served.env["DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            select(storage.usage).where(storage.usage.c.account_id == account["id"])
        ).all()
    engine.dispose()
    return SimpleNamespace(
        served=served, account=account, rows=rows, stream=stream, log=served.log_text()
    )


def test_sigterm_settles_calls_outlasting_the_grace_period_as_4017_refunded(stopped_mid_calls):
    rows = stopped_mid_calls.rows
    assert [(row.error_code, row.charged) for row in rows] == [("4017", False), ("4017", False)]
    assert today(stopped_mid_calls.served, stopped_mid_calls.account) == (0, 0)


def test_sigterm_logs_each_cut_call_with_its_request_id(stopped_mid_calls):
    logged = re.findall(r"request (\S+) \(v1/chat/completions\) cut after", stopped_mid_calls.log)
    assert sorted(logged) == sorted(row.request_id for row in stopped_mid_calls.rows)


def test_stream_cut_by_sigterm_ends_with_a_4017_error_event_then_done(stopped_mid_calls):
    stream = stopped_mid_calls.stream
    assert stream["events"][-1] == "data: [DONE]"
    error = json.loads(stream["events"][-2].removeprefix("data: "))["error"]
    assert error["code"] == "4017"
    assert "the gateway was stopping" in error["message"]
    assert stream["request_id"] in {row.request_id for row in stopped_mid_calls.rows}
