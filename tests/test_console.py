"""The operator console /admin through the Flask test client: off without ADMIN_TOKEN, the token
(and nothing else) logs in, every form needs the session's CSRF token, a created secret is shown
once, and every action is the CLI's own operation, audited as "admin". The browser test is
tests/test_console_browser.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time

import pytest
from flask.json.tag import TaggedJSONSerializer
from itsdangerous import URLSafeTimedSerializer

from tests.conftest import CHAT_ARGS, create_account

TOKEN = "console-token-for-tests"


@pytest.fixture
def app(make_app):
    """The module's app (and so `client` and `runner`) has the console on."""
    return make_app(ADMIN_TOKEN=TOKEN)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
def console(app):
    """A test client logged in to the console; `console.csrf` is its session's CSRF token."""
    browser = app.test_client()
    login = browser.get("/admin/login")
    answer = browser.post("/admin/login", data={"token": TOKEN, "csrf": csrf_of(login.text)})
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/accounts"
    browser.csrf = csrf_of(browser.get("/admin/accounts").text)
    return browser


def api_call(client, account: dict) -> dict:
    return client.get(
        "/api",
        query_string={
            "key": account["key"],
            "secret": account["secret"],
            "method": "v1/chat/completions",
            "_o_args": json.dumps(CHAT_ARGS),
        },
    ).get_json()


@pytest.mark.parametrize(
    "verb, path",
    [
        ("GET", "/admin"),
        ("GET", "/admin/login"),
        ("POST", "/admin/login"),
        ("GET", "/admin/accounts"),
        ("GET", "/admin/console.css"),
        ("PUT", "/admin/accounts"),
    ],
)
def test_the_console_is_404_without_admin_token(make_app, verb, path):
    answer = make_app().test_client().open(path, method=verb, data={"token": ""})
    assert answer.status_code == 404
    assert "set-cookie" not in answer.headers


def test_a_wrong_token_is_refused_and_opens_no_page(app):
    browser = app.test_client()
    csrf = csrf_of(browser.get("/admin/login").text)
    answer = browser.post("/admin/login", data={"token": TOKEN + "x", "csrf": csrf})
    assert answer.status_code == 401
    assert "That is not the console&#39;s token." in answer.text
    assert browser.get("/admin/accounts").headers["Location"] == "/admin/login"


def test_a_form_without_the_csrf_token_is_refused(console, runner):
    account = create_account(runner, "kept")
    answer = console.post(f"/admin/accounts/{account['key']}/stop", data={})
    assert answer.status_code == 400
    assert "did not come from the console" in answer.text
    wrong = console.post(f"/admin/accounts/{account['key']}/stop", data={"csrf": "guess"})
    assert wrong.status_code == 400
    assert runner.invoke(args=["accounts", "show", account["key"], "--json"]).output.count(
        '"status": "active"'
    )


def test_a_login_form_without_the_csrf_token_is_refused(app):
    answer = app.test_client().post("/admin/login", data={"token": TOKEN})
    assert answer.status_code == 400


def test_an_api_key_opens_no_console_page(app, runner):
    account = create_account(runner, "caller")
    browser = app.test_client()
    credentials = f"{account['key']}:{account['secret']}"
    for answer in (
        browser.get("/admin/accounts", query_string={"key": account["key"], **account}),
        browser.get("/admin/accounts", headers={"Authorization": f"Bearer {credentials}"}),
        browser.get(
            "/admin/accounts",
            headers={"X-API-KEY": account["key"], "X-API-SECRET": account["secret"]},
        ),
        browser.get("/admin/accounts", headers={"Authorization": f"Bearer {TOKEN}"}),
    ):
        assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"


def test_a_created_accounts_secret_is_shown_once(console):
    created = console.post("/admin/accounts", data={"name": "shop", "csrf": console.csrf})
    secret = re.search(r'id="new-secret-value">([0-9a-f]{32})<', created.text).group(1)
    assert created.headers["Cache-Control"] == "no-store"
    assert secret not in console.get("/admin/accounts").text
    assert secret not in console.get("/admin/audit").text


def test_a_stop_from_the_console_refuses_the_accounts_calls_with_4007(console, client, runner):
    account = create_account(runner, "stoppable")
    assert api_call(client, account)["error_code"] == "0000"
    answer = console.post(f"/admin/accounts/{account['key']}/stop", data={"csrf": console.csrf})
    assert answer.status_code == 302
    assert api_call(client, account)["error_code"] == "4007"
    console.post(f"/admin/accounts/{account['key']}/start", data={"csrf": console.csrf})
    assert api_call(client, account)["error_code"] == "0000"


def test_a_top_up_from_the_console_is_the_cli_top_up(console, runner):
    account = create_account(runner, "prepaid", "--balance", "5")
    console.post(
        f"/admin/accounts/{account['key']}/topup",
        data={"credits": "20", "calls": "7", "csrf": console.csrf},
    )
    shown = json.loads(runner.invoke(args=["accounts", "show", account["key"], "--json"]).output)
    assert (shown["balance"], shown["today"]["extra_calls"]) == (25, 7)


def test_a_bad_top_up_says_what_to_fix_and_changes_nothing(console, runner):
    account = create_account(runner, "prepaid", "--balance", "5")
    answer = console.post(
        f"/admin/accounts/{account['key']}/topup",
        data={"credits": "-3", "csrf": console.csrf},
        follow_redirects=True,
    )
    assert "credits must be a whole number from 1 to 9223372036854775807." in answer.text
    shown = json.loads(runner.invoke(args=["accounts", "show", account["key"], "--json"]).output)
    assert shown["balance"] == 5


def test_console_actions_are_in_flask_audit_as_admin(console, runner):
    account = create_account(runner, "audited")
    console.post(f"/admin/accounts/{account['key']}/stop", data={"csrf": console.csrf})
    created = console.post(
        f"/admin/accounts/{account['key']}/keys", data={"label": "site", "csrf": console.csrf}
    )
    new_key = re.search(r'id="new-key">([0-9a-f]+)<', created.text).group(1)
    console.post(f"/admin/keys/{new_key}/revoke", data={"csrf": console.csrf})
    console.post(
        "/admin/apis", data={"target": "openai", "action": "maintenance", "csrf": console.csrf}
    )
    rows = json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"]
    assert [(r["who"], r["action"], r["target"]) for r in rows[:4]] == [
        ("admin", "api.maintenance", "openai"),
        ("admin", "key.revoke", new_key),
        ("admin", "key.create", new_key),
        ("admin", "account.stop", account["key"]),
    ]


def test_the_usage_page_shows_an_accounts_failed_calls_with_their_request_ids(
    console, client, runner
):
    account = create_account(runner, "failing")
    runner.invoke(args=["apis", "maintenance", "openai", "--account", account["key"]])
    refused = api_call(client, account)
    page = console.get("/admin/usage", query_string={"account": account["key"]}).text
    assert f"<code>{refused['request_id']}</code>" in page
    assert '<td class="num" data-code="4009">1</td>' in page


def test_a_new_admin_token_ends_the_sessions_of_the_old_one(make_app, tmp_path):
    shared = {"SECRET_KEY": "a-key-of-its-own", "DATABASE_URL": f"sqlite:///{tmp_path}/one.db"}
    before = make_app(ADMIN_TOKEN=TOKEN, **shared).test_client()
    csrf = csrf_of(before.get("/admin/login").text)
    before.post("/admin/login", data={"token": TOKEN, "csrf": csrf})
    cookie = before.get_cookie("gateway_admin", path="/admin")
    assert before.get("/admin/accounts").status_code == 200
    after = make_app(ADMIN_TOKEN="the-next-token-0", **shared).test_client()
    after.set_cookie("gateway_admin", cookie.value, path="/admin")
    assert after.get("/admin/accounts").headers["Location"] == "/admin/login"


def test_an_api_change_without_a_target_says_what_to_fix(console):
    answer = console.post(
        "/admin/apis", data={"target": "", "action": "stop", "csrf": console.csrf}
    )
    assert answer.status_code == 302
    assert "Fill in target." in console.get("/admin/apis").text


def test_a_number_in_other_digits_says_what_to_fix(console, runner):
    account = create_account(runner, "prepaid", "--balance", "5")
    answer = console.post(
        f"/admin/accounts/{account['key']}/topup",
        data={"credits": "²", "csrf": console.csrf},
        follow_redirects=True,
    )
    assert "credits must be a whole number from 1 to 9223372036854775807." in answer.text


def test_the_upstreams_page_shows_each_member_and_the_calls_it_answered(console, client, runner):
    account = create_account(runner, "caller")
    api_call(client, account)
    page = console.get("/admin/upstreams").text
    row = re.search(r"<tr>\s*<td><b>default</b>.*?</tr>", page, re.S).group(0)
    assert '<span class="pill healthy">healthy</span>' in row
    assert '<td class="num">1</td>\n    </tr>' in row
    assert "sk-upstream-secret" not in page


def test_the_usage_page_shows_this_hours_calls_with_their_p50_and_p95_latency(console, app):
    from datetime import timedelta

    from proxy import storage
    from proxy.storage import utc_now

    now = utc_now()
    rows = [{"latency_ms": ms, "error_code": "0000"} for ms in range(1, 21)]  # 1..20 ms
    rows.append({"latency_ms": 900, "error_code": "4002"})  # a slow failure
    with app.extensions["gateway"].engine.begin() as connection:
        for number, row in enumerate(rows):
            connection.execute(
                storage.usage.insert(),
                dict(row, request_id=f"r{number}", method="v1/chat/completions", created_at=now),
            )
        connection.execute(  # a day old: outside the 24 hours
            storage.usage.insert(),
            dict(request_id="old", error_code="0000", latency_ms=5, created_at=now - timedelta(1)),
        )
    page = console.get("/admin/usage").text
    hour = now.strftime("%m-%d %H:00")
    # 21 calls: p50 is the 11th fastest (11 ms), p95 the 20th (20 ms); 1 failed
    assert (
        f'<td class="num" data-bucket-calls="{hour}">21</td>\n'
        '      <td class="num">1</td>\n'
        '      <td class="num">11</td>\n'
        '      <td class="num">20</td>'
    ) in page


def test_a_short_admin_token_is_refused_at_start(make_app):
    with pytest.raises(ValueError, match="ADMIN_TOKEN has 9 characters; use at least 16, random"):
        make_app(ADMIN_TOKEN="short-one")


def test_a_cookie_signed_with_a_key_made_from_the_token_opens_nothing(app):
    """The session key never comes from the token: a guess at the token cannot sign a
    session (nor be tested offline against the cookie the login page hands out)."""
    guessed_key = hmac.new(TOKEN.encode(), b"onebound-gateway admin session key", "sha256")
    serializer = URLSafeTimedSerializer(
        guessed_key.hexdigest(),
        salt="cookie-session",
        serializer=TaggedJSONSerializer(),
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1},
    )
    browser = app.test_client()
    mark = hmac.new(TOKEN.encode(), b"admin session mark", "sha256").hexdigest()[:32]
    forged = serializer.dumps({"admin": mark, "opened_at": time.time(), "csrf": "x"})
    browser.set_cookie("gateway_admin", forged, path="/admin")
    answer = browser.get("/admin/accounts")
    assert (answer.status_code, answer.headers["Location"]) == (302, "/admin/login")


@pytest.mark.parametrize("verb, path", [("GET", "/admin/nope"), ("PUT", "/admin/login")])
def test_the_consoles_routing_refusals_carry_its_page_headers(client, verb, path):
    answer = client.open(path, method=verb)
    assert answer.status_code in (404, 405)
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert (answer.headers["X-Frame-Options"], answer.headers["Cache-Control"]) == (
        "DENY",
        "no-store",
    )
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
