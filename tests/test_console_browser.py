"""The operator console in headless Chromium against a gateway served by gunicorn: log in,
create an account and see its secret once, call with it, see the calls on the usage page, stop
the account (its next call is 4007), top it up and start it again (its next call is 0000).

The screenshots of each page go to CONSOLE_SCREENSHOTS when set (docs/console/ was made so),
else to the test's own folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from tests.chromium import Chromium
from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway

TOKEN = "console-browser-token"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub):
    served = ServedGateway.on_stub(
        tmp_path_factory.mktemp("console"),
        stub,
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
    browser.wait_for("document.querySelector('.flash.done')")
    browser.click("#start")
    browser.wait_for("document.querySelector('#stop')")
    assert call(gateway, key, secret)["error_code"] == "0000"
    browser.screenshot(shots / "account.png")

    browser.goto(admin + "/accounts")
    browser.screenshot(shots / "accounts.png")
    browser.goto(admin + "/apis")
    browser.fill("#change-api [name=target]", "v1/embeddings")
    browser.click("#change-api [value=maintenance]")
    browser.wait_for("document.querySelector('.flash.done')")
    assert browser.text("#api-states .pill") == "maintenance"
    browser.screenshot(shots / "apis.png")
    browser.goto(admin + "/upstreams")
    assert browser.text("#upstreams tbody td:last-child") == "3"  # the three 0000 calls
    browser.screenshot(shots / "upstreams.png")
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
    browser.screenshot(shots / "audit.png")
