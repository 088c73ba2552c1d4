"""Keys, per-minute limits and token prices through real HTTP on two gunicorn hosts sharing
PostgreSQL and Redis, 10x oversubscribed: RPM and TPM never exceeded, balances never below zero
and each call charged exactly its priced tokens (streamed and not); revoked and expired keys and
a refused address refused at once on both hosts; an account's own key still answers 0000."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import date, timedelta

import pytest
import requests

from tests.conftest import CHAT_ARGS, SEALING_KEY
from tests.served import bases, fire_at_once, two_hosts
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def redis():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, postgres_server, redis, stub):
    workdir = tmp_path_factory.mktemp("keys-two-hosts")
    prices = workdir / "prices.toml"
    prices.write_text(
        '[models."gpt-4o-mini"]\nprompt_per_million = 1000000\ncompletion_per_million = 2000000\n'
    )
    settings = {
        "PRICES_FILE": str(prices),
        "DATABASE_URL": postgres_server.new_database(),
        "REDIS_URL": redis.url,
        "ACCOUNT_SEALING_KEY": SEALING_KEY,
        "OPENAI_BASE_URL": stub.base_url,
        "OPENAI_API_KEY": "sk-upstream-secret",
        "UPSTREAM_MAX_RETRIES": "0",
        # Copies no test outlives: what is refused at once is not a copy growing old.
        "SETTINGS_CACHE_SECONDS": "60",
    }
    with two_hosts(workdir, **settings) as both:
        yield both


def new_key(gateways, *options: str) -> dict:
    account = gateways[0].flask_json("accounts", "create", "site")
    return gateways[0].flask_json("keys", "create", account["key"], *options)


def call(base: str, credentials: dict, o_args=None) -> dict:
    params = {
        "key": credentials["key"],
        "secret": credentials["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(o_args or CHAT_ARGS),
        "cache": "no",
        "lang": "en",
    }
    return requests.get(base + "/api", params=params, timeout=30).json()


def fire_streams_at_once(bases: list[str], credentials: dict, count: int, o_args: dict):
    """`count` streamed calls released together, spread over `bases`; their codes."""
    barrier, codes = threading.Barrier(count), []

    def one(index: int) -> None:
        params = {
            "key": credentials["key"],
            "secret": credentials["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(o_args),
        }
        barrier.wait()
        answer = requests.get(bases[index % len(bases)] + "/api", params=params, timeout=60)
        streaming = answer.headers["Content-Type"].startswith("text/event-stream")
        answer.content  # noqa: B018 (read the stream to its end)
        codes.append("0000" if streaming else answer.headers["X-Error-Code"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Counter(codes)


def test_a_keys_rpm_of_5_holds_across_two_hosts_10x_oversubscribed(gateways):
    key = new_key(gateways, "--rpm", "5")
    assert fire_at_once(bases(gateways), key, 50) == {"0000": 5, "4008": 45}


def test_an_accounts_rpm_of_4_holds_for_two_keys_on_two_hosts(gateways):
    account = gateways[0].flask_json("accounts", "create", "acct", "--rpm", "4")
    other = gateways[1].flask_json("keys", "create", account["key"])
    codes: Counter = Counter()
    threads = [
        threading.Thread(target=lambda k=k: codes.update(fire_at_once(bases(gateways), k, 20)))
        for k in (account, other)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == {"0000": 4, "4008": 36}


def plain_and_streamed_at_once(gateways, credentials: dict, o_args: dict):
    """20 plain calls from each of 2 threads and 20 streams, all at once across both hosts:
    the codes of the plain ones and of the streamed ones (Counters)."""
    plain = Counter()
    threads = [
        threading.Thread(
            target=lambda: plain.update(
                Counter(call(b, credentials, o_args)["error_code"] for b in bases(gateways) * 10)
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    streamed = fire_streams_at_once(bases(gateways), credentials, 20, {**o_args, "stream": True})
    for thread in threads:
        thread.join()
    return plain, streamed


def test_tpm_is_never_exceeded_across_two_hosts_streamed_and_not(gateways, redis):
    o_args = {**CHAT_ARGS, "max_tokens": 16}
    tpm = 5 * (16 + 4 + 8)  # five calls' estimates (prompt "你好 world": 4 framing + 2 + 2)
    key = new_key(gateways, "--tpm", str(tpm))
    plain, streamed = plain_and_streamed_at_once(gateways, key, o_args)
    report = gateways[1].flask_json("usage", key["account"])
    admitted = plain["0000"] + streamed["0000"]
    assert admitted >= 5 and set(plain) | set(streamed) <= {"0000", "4008"}
    assert report["charged"] == admitted
    assert 0 < report["tokens"]["total"] <= tpm
    # The window holds what the upstream reported for each admitted call, streams included.
    held = redis.command("HVALS", f"gw:rate:k{key['id']}:tok").split()
    assert sum(int(tokens) for tokens in held) == report["tokens"]["total"]


def test_a_revoked_key_is_refused_at_once_on_both_hosts(gateways):
    key = new_key(gateways)
    assert [call(b, key)["error_code"] for b in bases(gateways)] == ["0000", "0000"]
    gateways[0].flask("keys", "revoke", key["key"])
    answers = [call(b, key) for b in bases(gateways)]
    assert [a["error_code"] for a in answers] == ["4005", "4005"]
    assert answers[1]["reason"].endswith("this key was revoked; use another key of the account")


def test_an_expired_key_is_refused_on_both_hosts(gateways):
    expired = (date.today() - timedelta(days=2)).isoformat()
    key = new_key(gateways, "--expires", expired)
    assert [call(b, key)["error_code"] for b in bases(gateways)] == ["4005", "4005"]


def test_an_address_outside_the_keys_list_is_refused_saying_the_address(gateways):
    key = new_key(gateways, "--ips", "10.0.0.0/8")
    answer = call(gateways[1].base, key)
    assert answer["error_code"] == "4005"
    assert answer["reason"].endswith("does not accept calls from the address 127.0.0.1")


def test_an_accounts_own_key_still_answers_0000_on_both_hosts(gateways):
    account = gateways[0].flask_json("accounts", "create", "old")
    assert [call(b, account)["error_code"] for b in bases(gateways)] == ["0000", "0000"]


def test_token_prices_hold_across_two_hosts_streamed_and_not(gateways):
    """gpt-4o-mini costs 1 credit per prompt token and 2 per completion token; each call
    reserves 8 + 2 x 16 = 40 credits, so a balance of 200 admits about 5 of 60 at once."""
    account = gateways[0].flask_json("accounts", "create", "prepaid", "--balance", "200")
    o_args = {**CHAT_ARGS, "max_tokens": 16}
    plain, streamed = plain_and_streamed_at_once(gateways, account, o_args)
    report = gateways[1].flask_json("usage", account["key"])
    left = gateways[0].flask_json("accounts", "show", account["key"])["balance"]
    tokens = report["tokens"]
    assert plain["0000"] + streamed["0000"] == report["charged"] >= 5
    assert set(plain) | set(streamed) <= {"0000", "4016"}
    assert report["credits"] == tokens["prompt"] + 2 * tokens["completion"]
    assert left == 200 - report["credits"] >= 0
