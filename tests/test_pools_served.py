"""Pools under gunicorn (two workers, one Redis): the cooldown is shared by the workers, and a
reload (`flask upstreams reload`, `kill -HUP`) takes effect without dropping a call, while a
bad file is refused and the old one stays. One served gateway for the module."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import requests

from stub_upstream import StubServer
from tests.conftest import CHAT_ARGS, SEALING_KEY
from tests.served import ServedGateway, wait_until

MEMBER_KEY = "sk-served-member-secret-77"


def member(name: str, base_url: str, *, priority: int = 0) -> str:
    return (
        f'[[upstream]]\nname = "{name}"\nbase_url = "{base_url}"\n'
        f'api_key_env = "SERVED_MEMBER_KEY"\nmodels = ["pool-*"]\npriority = {priority}\n'
    )


@pytest.fixture(scope="module")
def stubs():
    flaky, good, slow = (StubServer(slow_seconds=1.5).start() for _ in range(3))
    yield flaky, good, slow
    for stub in (flaky, good, slow):
        stub.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, redis_server, stubs):
    flaky, good, slow = stubs
    workdir = tmp_path_factory.mktemp("pools-served")
    upstreams = workdir / "upstreams.toml"
    upstreams.write_text(
        member("sflaky", flaky.base_url) + member("sgood", good.base_url, priority=1),
        encoding="utf-8",
    )
    gateway = ServedGateway(
        workdir,
        workers=2,
        DATABASE_URL=f"sqlite:///{workdir / 'gateway.sqlite3'}",
        OPENAI_BASE_URL=slow.base_url,
        OPENAI_API_KEY="sk-upstream-secret",
        ACCOUNT_SEALING_KEY=SEALING_KEY,
        REDIS_URL=redis_server.url,
        UPSTREAMS_FILE=str(upstreams),
        SERVED_MEMBER_KEY=MEMBER_KEY,
        UPSTREAM_MAX_RETRIES="0",
        UPSTREAM_COOLDOWN_FAILURES="2",
        UPSTREAM_COOLDOWN_SECONDS="600",
    ).start()
    account = gateway.flask_json("accounts", "create", "pools")
    yield gateway, account, upstreams
    gateway.stop()


def call(gateway, account, model: str = "pool-chat") -> requests.Response:
    """One call on a new connection (so the workers share them)."""
    params = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps({**CHAT_ARGS, "model": model}),
        "cache": "no",
    }
    return requests.get(gateway.base + "/api", params=params, timeout=30)


def member_states(gateway) -> dict[str, str]:
    members = requests.get(gateway.base + "/health", timeout=10).json()["upstreams"]
    return {m["name"]: m["state"] for m in members}


def served_by(gateway, account) -> str | None:
    return call(gateway, account).headers.get("X-Upstream")


def chat_requests(stub) -> int:
    return len(stub.requests_seen("/v1/chat/completions"))


def test_two_workers_share_the_cooldown_through_redis(served, stubs):
    gateway, account, _ = served
    flaky, good, _ = stubs
    flaky.set_fault("500")
    try:
        codes = [call(gateway, account).json()["error_code"] for _ in range(8)]
        states = [
            {
                m["name"]: m["state"]
                for m in requests.get(gateway.base + "/health").json()["upstreams"]
            }
            for _ in range(6)
        ]
    finally:
        flaky.set_fault(None)
    assert codes == ["0000"] * 8
    assert chat_requests(flaky) == 2  # the threshold, for both workers together
    assert {s["sflaky"] for s in states} == {"cooling"}  # whichever worker answers


def test_flask_upstreams_reload_reaches_every_worker(served, stubs):
    gateway, account, upstreams = served
    _, good, _ = stubs
    upstreams.write_text(member("sreloaded", good.base_url), encoding="utf-8")
    gateway.flask("upstreams", "reload")
    wait_until(
        lambda: all(
            call(gateway, account).headers.get("X-Upstream") == "sreloaded" for _ in range(4)
        ),
        timeout=15,
    )


def test_a_hup_reload_keeps_the_running_call_and_takes_the_new_file(served, stubs):
    gateway, account, upstreams = served
    _, good, slow = stubs
    slow.reset()
    answers = []
    running = threading.Thread(target=lambda: answers.append(call(gateway, account, "stub-slow")))
    running.start()
    wait_until(lambda: chat_requests(slow) == 1, timeout=10)  # the call is under way
    upstreams.write_text(member("shupped", good.base_url), encoding="utf-8")
    os.kill(gateway.process.pid, signal.SIGHUP)
    running.join(timeout=30)
    assert answers[0].json()["error_code"] == "0000"
    wait_until(lambda: call(gateway, account).headers.get("X-Upstream") == "shupped", timeout=60)


def test_a_hup_with_a_bad_file_keeps_the_old_upstreams(served, stubs):
    gateway, account, upstreams = served
    _, good, _ = stubs
    upstreams.write_text(member("sgood2", good.base_url), encoding="utf-8")
    os.kill(gateway.process.pid, signal.SIGHUP)
    wait_until(lambda: call(gateway, account).headers.get("X-Upstream") == "sgood2", timeout=60)
    upstreams.write_text("[[upstream]]\nname = broken\n", encoding="utf-8")
    old_pids = set(gateway.worker_pids())
    os.kill(gateway.process.pid, signal.SIGHUP)
    wait_until(lambda: not old_pids & set(gateway.worker_pids()), timeout=60)
    wait_until(lambda: len(gateway.worker_pids()) == 2, timeout=60)
    response = call(gateway, account)
    assert (response.json()["error_code"], response.headers["X-Upstream"]) == ("0000", "sgood2")
    assert "UPSTREAMS_FILE refused, the previous upstreams stay" in gateway.log_text()
    assert gateway.process.poll() is None
