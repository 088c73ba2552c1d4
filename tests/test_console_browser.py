"""The operator console in headless Chromium against a gateway served by gunicorn: log in,
create an account and see its secret once, call with it, see the calls on the usage page, stop
the account (its next call is 4007), top it up and start it again (its next call is 0000). An
operator of their own logs in by name, lowers an account's quota (its next call is 4013),
edits a key, reads a week of usage for one method, and finds their name in the audit log.

The screenshots of each page go to CONSOLE_SCREENSHOTS when set (docs/console/ was made so),
else to the test's own folder."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine

from proxy import storage
from proxy.storage import utc_now
from tests.chromium import Chromium
from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway

TOKEN = "console-browser-token"
OPERATOR_PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("console")
    upstreams = workdir / "upstreams.toml"  # a pool of two keys for qwen-*, beside the default
    upstreams.write_text(
        f'[[upstream]]\nname = "qwen"\nbase_url = "{stub.base_url}"\n'
        'api_key_envs = ["QWEN_KEY_A", "QWEN_KEY_B"]\nmodels = ["qwen-*"]\n'
    )
    served = ServedGateway.on_stub(
        workdir,
        stub,
        UPSTREAMS_FILE=str(upstreams),
        QWEN_KEY_A="sk-qwen-a",
        QWEN_KEY_B="sk-qwen-b",
        ADMIN_TOKEN=TOKEN,
        SETTINGS_CACHE_SECONDS="0",  # a stop holds at once in both workers
        UPSTREAM_MAX_RETRIES="0",
    ).start()
    yield served
    served.stop()


@pytest.fixture
def browser(tmp_path):
    chromium = Chromium(tmp_path / "chromium-profile")
    yield chromium
    chromium.close()


def call(gateway: ServedGateway, key: str, secret: str, o_args: str | None = None) -> dict:
    params = {
        "key": key,
        "secret": secret,
        "method": "v1/chat/completions",
        "_o_args": o_args if o_args is not None else json.dumps(CHAT_ARGS),
        "cache": "no",
    }
    return requests.get(gateway.base + "/api", params=params, timeout=60).json()


def earlier_week_of_calls(gateway: ServedGateway, account_id: int) -> int:
    """Usage rows over the 6 days before today's calls (placed in time as only rows can be: a
    call is made now), 6-hourly, busier by day and with some failures and slower calls; how
    many."""
    engine = create_engine(gateway.env["DATABASE_URL"])
    now, rows = utc_now(), []
    for bucket in range(1, 25):
        for n in range(3 + (bucket * 7) % 11):
            rows.append(
                {
                    "created_at": now - timedelta(hours=6 * bucket, minutes=n),
                    "account_id": account_id,
                    "method": "v1/chat/completions",
                    "platform": "openai",
                    "error_code": "5000" if n % 9 == 4 else "0000",
                    "charged": n % 9 != 4,
                    "latency_ms": 300 + 40 * ((bucket + n) % 13) + (900 if n == 7 else 0),
                    "prompt_tokens": 20 + n,
                    "completion_tokens": 60 + 3 * n,
                    "total_tokens": 80 + 4 * n,
                    "credits": 1 if n % 9 != 4 else 0,
                    "request_id": f"earlier-{bucket}-{n}",
                }
            )
    with engine.begin() as connection:
        connection.execute(storage.usage.insert(), rows)
    engine.dispose()
    return len(rows)


def flashed(browser: Chromium, words: str) -> None:
    """Wait for the page whose flash says `words` (not a flash of the page being left)."""
    has_words = f"f => f.textContent.includes({json.dumps(words)})"
    browser.wait_for(f"[...document.querySelectorAll('.flash.done')].some({has_words})")


def test_an_operator_creates_stops_tops_up_and_starts_an_account_in_the_browser(
    gateway, browser, tmp_path
):
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    admin = gateway.base + "/admin"

    browser.goto(admin + "/login")
    browser.screenshot(shots / "login.png")
    browser.fill("#token", TOKEN)
    browser.click("#login")
    browser.wait_for(f"location.href === {json.dumps(admin + '/accounts')}")

    browser.fill("#name", "Example Shop")
    browser.click("#create")
    browser.wait_for("document.querySelector('#new-secret-value')")
    key, secret = browser.text("#new-key"), browser.text("#new-secret-value")
    browser.screenshot(shots / "account-created.png")
    browser.goto(admin + "/accounts")
    assert secret not in browser.evaluate("document.documentElement.outerHTML")
    assert browser.text(f"#account-{key} .pill") == "active"

    assert [call(gateway, key, secret)["error_code"] for _ in range(2)] == ["0000", "0000"]
    assert call(gateway, key, secret, o_args="{not json")["error_code"] == "4003"
    browser.goto(f"{admin}/usage?account={key}")
    assert browser.text("#calls") == "3"
    assert browser.text('#by-code [data-code="0000"]') == "2"
    assert browser.text('#by-code [data-code="4003"]') == "1"
    browser.screenshot(shots / "usage.png")

    browser.goto(f"{admin}/accounts/{key}")
    browser.click("#stop")
    browser.wait_for("document.querySelector('#start')")
    assert browser.text("#status") == "stopped"
    browser.screenshot(shots / "account-stopped.png")
    assert call(gateway, key, secret)["error_code"] == "4007"

    browser.fill("#topup [name=calls]", "100")
    browser.click("#topup button")
    flashed(browser, "topped up")  # the page being left still shows the stop's flash
    browser.click("#start")
    browser.wait_for("document.querySelector('#stop')")
    assert call(gateway, key, secret)["error_code"] == "0000"
    browser.screenshot(shots / "account.png")

    browser.goto(admin + "/apis")
    browser.fill("#change-api [name=target]", "v1/embeddings")
    browser.click("#change-api [value=maintenance]")
    browser.wait_for("document.querySelector('.flash.done')")
    assert browser.text("#api-states .pill") == "maintenance"
    browser.screenshot(shots / "apis.png")
    browser.goto(admin + "/upstreams")
    assert browser.text("#upstreams tbody td:last-child") == "3"  # the three 0000 calls
    browser.goto(admin + "/audit")
    assert browser.evaluate(
        "[...document.querySelectorAll('#audit tbody td:nth-child(3)')].map(c => c.textContent)"
    ) == [
        "api.maintenance",
        "account.start",
        "account.topup",
        "account.stop",
        "account.create",
        "console.login",
    ]


def test_an_operator_by_name_edits_limits_and_reads_a_week_of_one_methods_usage(
    gateway, browser, tmp_path
):
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    admin = gateway.base + "/admin"
    gateway.flask("operators", "add", "alice", "--password-stdin", stdin=OPERATOR_PASSWORD)
    created = gateway.flask_json("accounts", "create", "Noodle Bar", "--daily-quota", "100")
    key, secret = created["key"], created["secret"]
    caller = gateway.flask_json("accounts", "create", "Tea House")  # calls the qwen pool
    assert [call(gateway, key, secret)["error_code"] for _ in range(3)] == ["0000"] * 3

    browser.goto(admin + "/login")
    browser.fill("#operator", "alice")
    browser.fill("#token", OPERATOR_PASSWORD)
    browser.click("#login")
    browser.wait_for(f"location.href === {json.dumps(admin + '/accounts')}")
    assert browser.text("#logged-in-as") == "admin:alice"

    browser.goto(f"{admin}/accounts/{key}")
    browser.fill("#limits [name=daily_quota]", "3")
    browser.fill("#limits [name=rpm]", "60")
    browser.click("#limits button")
    flashed(browser, "saved")
    assert call(gateway, key, secret)["error_code"] == "4013"  # 3 calls made: the quota is 3
    browser.evaluate("document.querySelector('details.edit').open = true")
    browser.fill(f"#edit-{key} [name=models]", "gpt-4o*")
    browser.screenshot(shots / "account-limits.png")
    browser.click(f"#edit-{key} button")
    flashed(browser, f"Key {key} saved")

    earlier = earlier_week_of_calls(gateway, account_id=created["id"])
    browser.goto(f"{admin}/usage?period=7d&account={key}&method=v1/chat/completions")
    assert browser.text("#calls") == str(4 + earlier)  # the week's rows and today's 4 calls
    assert browser.text("#method") == "v1/chat/completions"
    browser.screenshot(shots / "usage-week.png")

    qwen = json.dumps({**CHAT_ARGS, "model": "qwen-plus"})
    answers = [call(gateway, caller["key"], caller["secret"], qwen) for _ in range(4)]
    assert [answer["error_code"] for answer in answers] == ["0000"] * 4
    browser.goto(admin + "/upstreams")
    browser.click("#reload-upstreams button")
    flashed(browser, "Reload")
    members = "[...document.querySelectorAll('#upstreams tbody tr td:first-child')]"
    assert browser.evaluate(f"{members}.map(c => c.textContent.trim())") == [
        "default",
        "qwen#1",
        "qwen#2",
    ]
    browser.screenshot(shots / "upstreams.png")

    browser.goto(admin + "/audit")
    rows = browser.evaluate(
        "[...document.querySelectorAll('#audit tbody tr')].slice(0, 4)"
        ".map(r => [r.cells[1].textContent, r.cells[2].textContent])"
    )
    assert rows == [
        ["admin:alice", "upstreams.reload"],
        ["admin:alice", "key.update"],
        ["admin:alice", "account.update"],
        ["admin:alice", "console.login"],
    ]
    browser.screenshot(shots / "audit.png")
    browser.goto(admin + "/accounts")
    browser.screenshot(shots / "accounts.png")
