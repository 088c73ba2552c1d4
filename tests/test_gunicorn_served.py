"""The gateway under gunicorn (config/gunicorn.conf.py, 2 workers of 4 threads): one log line
format for gunicorn and the app, a traceback once per failure, and simultaneous slow calls
spread over the workers."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections import Counter

import pytest
import requests

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway, wait_until
from tests.servers import RedisServer

THREADS = 4
WORKERS = 2
# How each line starts.
LINE_START = (
    r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] "  # time
    r"\[(\d+)\] \[([A-Z]+)\] \[(-|gw-1\.[0-9a-f]{16})\] "  # pid, level, request id
)
RECORD_START = re.compile(rf"^(?={LINE_START})", re.MULTILINE)
ACCESS_LINE = re.compile(rf"^{LINE_START}127\.0\.0\.1 \"GET /api HTTP/1\.1\" 200 ", re.MULTILINE)
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def slow_stub():
    server = StubServer(slow_seconds=2.0).start()  # the slow calls overlap: all start at once
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis():
    """A redis-server the gateway is configured with but that is not started yet."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, slow_stub, redis):
    workdir = tmp_path_factory.mktemp("gunicorn")
    served = ServedGateway.on_stub(
        workdir, slow_stub, workers=WORKERS, GUNICORN_THREADS=str(THREADS), REDIS_URL=redis.url
    )
    served.database = workdir / "gateway.sqlite3"
    served.account = served.flask_json("accounts", "create", "logs")
    served.start()
    yield served
    served.stop()


def call_params(
    account: dict, model: str | None = None, cache: str = "no", text: str | None = None
) -> dict:
    o_args = dict(CHAT_ARGS, **({"model": model} if model else {}))
    if text is not None:
        o_args["messages"] = [{"role": "user", "content": text}]
    return {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(o_args),
        "cache": cache,
    }


def slow_calls_at_once(
    gateway, count: int, cache: str = "no", text: str | None = None
) -> list[str]:
    """`count` stub-slow calls released together; their request ids."""
    barrier = threading.Barrier(count)
    request_ids = [""] * count

    def one(index: int) -> None:
        params = call_params(gateway.account, "stub-slow", cache, text)
        barrier.wait()
        response = requests.get(gateway.base + "/api", params=params, timeout=60)
        request_ids[index] = response.headers["X-Request-Id"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return request_ids


def worker_of(gateway, request_ids: list[str]) -> dict[str, str]:
    """request id -> pid of the worker whose access line names it."""
    wait_until(
        lambda: set(request_ids) <= {m[2] for m in ACCESS_LINE.findall(gateway.log_text())},
        message="an access line is missing",
    )
    return {m[2]: m[0] for m in ACCESS_LINE.findall(gateway.log_text())}


def records(log_text: str) -> list[str]:
    """The log's records, each with its traceback lines."""
    return [record for record in RECORD_START.split(log_text) if record]


def test_simultaneous_slow_calls_are_spread_evenly_over_the_workers(gateway):
    """As many slow calls as the workers have threads: each worker takes as many as it has
    threads, none waits behind another while a thread elsewhere is free."""
    request_ids = slow_calls_at_once(gateway, WORKERS * THREADS)
    workers = worker_of(gateway, request_ids)
    assert sorted(Counter(workers[rid] for rid in request_ids).values()) == [THREADS] * WORKERS


def test_gunicorn_lines_access_lines_and_app_lines_share_one_format(gateway, redis):
    """The app's warning (Redis down) and info (Redis back) lines, which had no handler,
    appear with time, pid, level and request id like gunicorn's own lines."""
    slow_calls_at_once(gateway, WORKERS * THREADS, cache="yes")  # every worker sees it down
    redis.start()
    # Another call: each worker keeps the first one's answer in memory, without asking Redis.
    slow_calls_at_once(gateway, WORKERS * THREADS, cache="yes", text="again")  # and back
    log_text = gateway.log_text()
    assert re.search(rf"^{LINE_START}Booting worker with pid: \d+$", log_text, re.MULTILINE)
    assert ACCESS_LINE.search(log_text)
    address = redis.url.removeprefix("redis://").removesuffix("/0")
    down = re.search(
        rf"^{LINE_START}answer cache: Redis at {address} is unreachable", log_text, re.MULTILINE
    )
    back = re.search(
        rf"^{LINE_START}answer cache: Redis at {address} answers again$", log_text, re.MULTILINE
    )
    assert down and down[2] == "WARNING"
    assert back and back[2] == "INFO"


def test_a_repeated_failure_logs_its_traceback_once_per_worker_then_one_line_each(gateway):
    """The database fails every call the same way: each call is logged with its request id,
    the traceback only once per worker, the repeats counted."""
    with sqlite3.connect(gateway.database) as database:
        database.execute("ALTER TABLE accounts RENAME TO accounts_away")
    try:
        request_ids = [
            requests.get(
                gateway.base + "/api", params=call_params(gateway.account), timeout=30
            ).headers["X-Request-Id"]
            for _ in range(12)
        ]
    finally:
        with sqlite3.connect(gateway.database) as database:
            database.execute("ALTER TABLE accounts_away RENAME TO accounts")
    worker_of(gateway, request_ids)  # every call has been answered and logged
    failures = [
        record
        for record in records(gateway.log_text())
        if any(f"[{rid}] unexpected error in request {rid}" in record for rid in request_ids)
    ]
    assert len(failures) == len(request_ids)
    with_traceback = Counter(re.match(LINE_START, r)[1] for r in failures if TRACEBACK in r)
    assert 1 <= sum(with_traceback.values()) and set(with_traceback.values()) == {1}
    for record in failures:
        if TRACEBACK not in record:
            assert record.count("\n") == 1
            assert re.search(r"\(OperationalError at \S+:\d+, again: repeat \d+ in the ", record)
