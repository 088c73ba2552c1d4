"""Operators of the console (docs/console.md, "Who may see it"): each logs in with a name and
password kept as a hash, and the audit log names them; removing an operator or changing a
password ends their sessions; the console is on with ADMIN_TOKEN or an operator; failed logins
are limited per address and per name, in the database or Redis; the session cookie is Secure as
ADMIN_COOKIE_SECURE says. The `flask operators` commands are in tests/test_cli_operators.py."""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from proxy import operators
from proxy.operators import OperatorStore
from tests.conftest import create_account
from tests.test_console import csrf_of

PASSWORD = "correct horse battery"
TOKEN = "operators-console-token"
WRONG_OPERATOR = "Wrong name or password."


@pytest.fixture
def app(make_app):
    """Console on through its operators only (no ADMIN_TOKEN); settings read at every request;
    X-Forwarded-For names the client, as behind nginx."""
    return make_app(SETTINGS_CACHE_SECONDS=0, TRUSTED_PROXY_HOPS=1)


def add_operator(runner, name: str, password: str = PASSWORD) -> None:
    result = runner.invoke(args=["operators", "add", name, "--password-stdin"], input=password)
    assert result.exit_code == 0, result.output


def log_in(browser, name: str, password: str, address: str = "192.0.2.1"):
    """POST the login form from `address`; the answer."""
    headers = {"X-Forwarded-For": address}
    csrf = csrf_of(browser.get("/admin/login", headers=headers).text)
    return browser.post(
        "/admin/login",
        data={"name": name, "token": password, "csrf": csrf},
        headers=headers,
    )


def logged_in(app, name: str, password: str = PASSWORD):
    browser = app.test_client()
    answer = log_in(browser, name, password)
    assert answer.status_code == 302 and answer.headers["Location"] == "/admin/accounts"
    return browser


def audit_rows(runner) -> list[dict]:
    return json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"]


def test_an_operators_login_and_actions_are_audited_under_their_name(app, runner):
    add_operator(runner, "alice")
    account = create_account(runner, "shop")
    browser = logged_in(app, "Alice")  # names are lower-case: Alice is alice
    page = browser.get("/admin/accounts")
    assert '<span class="who" id="logged-in-as">admin:alice</span>' in page.text
    browser.post(f"/admin/accounts/{account['key']}/stop", data={"csrf": csrf_of(page.text)})
    rows = audit_rows(runner)
    assert [(r["who"], r["action"], r["target"], r["detail"]) for r in rows[:2]] == [
        ("admin:alice", "account.stop", account["key"], ""),
        ("admin:alice", "console.login", "", "from=192.0.2.1"),
    ]


def test_the_token_still_logs_in_with_the_name_left_empty_and_is_audited_as_admin(
    make_app,
):
    app = make_app(ADMIN_TOKEN=TOKEN)
    runner = app.test_cli_runner()
    add_operator(runner, "alice")
    assert log_in(app.test_client(), "", TOKEN).status_code == 302
    assert log_in(app.test_client(), "alice", TOKEN).status_code == 401  # not alice's password
    assert log_in(app.test_client(), "", PASSWORD).status_code == 401  # not the token
    assert audit_rows(runner)[0]["who"] == "admin"


def test_a_wrong_password_is_refused_as_an_unknown_name_is(app, runner):
    add_operator(runner, "alice")
    browser = app.test_client()
    wrong_password = log_in(browser, "alice", PASSWORD + "x")
    unknown_name = log_in(browser, "mallory", PASSWORD)
    assert (wrong_password.status_code, unknown_name.status_code) == (401, 401)
    assert WRONG_OPERATOR in wrong_password.text
    assert wrong_password.data == unknown_name.data
    assert browser.get("/admin/accounts").headers["Location"] == "/admin/login"


def test_an_unknown_name_is_checked_against_a_hash_of_the_same_cost(app, runner):
    add_operator(runner, "alice")
    engine = app.extensions["gateway"].engine
    store = OperatorStore(engine, settings_cache_seconds=0)
    assert store.verify("mallory", PASSWORD) is None
    with engine.connect() as connection:
        real = connection.execute(text("SELECT password_hash FROM operators")).scalar()
    assert real.startswith("scrypt:32768:8:1$")
    assert store._decoy_hash.split("$")[0] == real.split("$")[0]


def test_removing_an_operator_ends_their_session(app, runner):
    add_operator(runner, "alice")
    add_operator(runner, "bob")
    alice, bob = logged_in(app, "alice"), logged_in(app, "bob")
    runner.invoke(args=["operators", "remove", "alice"])
    assert alice.get("/admin/accounts").headers["Location"] == "/admin/login"
    assert bob.get("/admin/accounts").status_code == 200


def test_a_new_password_ends_the_old_sessions_and_the_old_password(app, runner):
    add_operator(runner, "alice")
    before = logged_in(app, "alice")
    changed = runner.invoke(
        args=["operators", "passwd", "alice", "--password-stdin"], input="a new long password"
    )
    assert changed.exit_code == 0, changed.output
    assert before.get("/admin/accounts").headers["Location"] == "/admin/login"
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 401
    assert logged_in(app, "alice", "a new long password").get("/admin/accounts").status_code == 200


# -- the console off and on ---------------------------------------------------------------


@pytest.mark.parametrize(
    "verb, path",
    [
        ("GET", "/admin/login"),
        ("POST", "/admin/login"),
        ("PUT", "/admin/accounts"),
        ("GET", "/admin"),
    ],
)
def test_the_console_is_404_without_token_or_operator_and_on_after_operators_add(
    app, runner, verb, path
):
    off = app.test_client().open(path, method=verb)
    assert off.status_code == 404
    assert "set-cookie" not in off.headers
    add_operator(runner, "alice")
    assert app.test_client().get("/admin/login").status_code == 200


def test_the_console_goes_off_when_its_last_operator_is_removed(app, runner):
    add_operator(runner, "alice")
    runner.invoke(args=["operators", "remove", "alice"])
    assert app.test_client().get("/admin/login").status_code == 404


# -- the login limit ------------------------------------------------------------------------


def test_the_11th_login_after_10_failures_is_429_without_checking_the_password(app, runner):
    add_operator(runner, "alice")
    browser = app.test_client()
    first_failure = time.time()
    assert [log_in(browser, "alice", "wrong").status_code for _ in range(10)] == [401] * 10
    locked = log_in(browser, "alice", PASSWORD)  # the right password, unchecked
    assert locked.status_code == 429
    # The lock lasts until the first failure leaves the 900 s window (10 hashes may take a
    # few seconds on a loaded machine).
    waited = math.ceil(time.time() - first_failure)
    assert 900 - waited <= int(locked.headers["Retry-After"]) <= 900
    assert "Too many failed logins from this address or for this name." in locked.text
    assert browser.get("/admin/accounts").headers["Location"] == "/admin/login"
    lockouts = [r for r in audit_rows(runner) if r["action"] == "console.lockout"]
    assert [(r["who"], r["target"]) for r in lockouts] == [
        ("anonymous", "name:alice"),
        ("anonymous", "ip:192.0.2.1"),
    ]
    assert lockouts[0]["detail"] == "failures=10 window=900s from=192.0.2.1"


def test_a_lock_ends_when_the_failures_leave_the_window(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, ADMIN_LOGIN_FAILURES=2, ADMIN_LOGIN_WINDOW_SECONDS=60)
    browser = app.test_client()
    assert [log_in(browser, "", "wrong").status_code for _ in range(2)] == [401, 401]
    assert log_in(browser, "", TOKEN).status_code == 429
    with app.extensions["gateway"].engine.begin() as connection:  # a minute passes
        connection.execute(text("UPDATE login_failures SET at = at - 60"))
    assert log_in(browser, "", TOKEN).status_code == 302


def test_a_lockout_is_per_address(app, runner):
    add_operator(runner, "alice")
    for _ in range(10):  # the token, so no name is counted: only the address
        assert log_in(app.test_client(), "", "wrong", address="198.51.100.7").status_code == 401
    assert log_in(app.test_client(), "alice", PASSWORD, "198.51.100.7").status_code == 429
    assert log_in(app.test_client(), "alice", PASSWORD, "198.51.100.8").status_code == 302


def test_a_lockout_is_per_name_from_any_address(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=0, TRUSTED_PROXY_HOPS=1, ADMIN_LOGIN_FAILURES=3)
    runner = app.test_cli_runner()
    add_operator(runner, "alice")
    add_operator(runner, "bob")
    for last in range(3):
        assert log_in(app.test_client(), "alice", "wrong", f"203.0.113.{last}").status_code == 401
    assert log_in(app.test_client(), "alice", PASSWORD, "203.0.113.50").status_code == 429
    assert log_in(app.test_client(), "bob", PASSWORD, "203.0.113.50").status_code == 302


def test_a_success_does_not_reset_the_addresses_failures_at_other_names(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=0, TRUSTED_PROXY_HOPS=1, ADMIN_LOGIN_FAILURES=3)
    runner = app.test_cli_runner()
    add_operator(runner, "alice")
    browser = app.test_client()
    assert log_in(browser, "mallory", "guess").status_code == 401
    assert log_in(browser, "trent", "guess").status_code == 401
    assert log_in(browser, "alice", PASSWORD).status_code == 302
    assert log_in(browser, "oscar", "guess").status_code == 401  # the address's third
    assert log_in(browser, "alice", PASSWORD).status_code == 429


def test_failures_are_counted_for_every_app_sharing_the_database(make_app, tmp_path):
    shared = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.sqlite3'}"}
    settings = {**shared, "ADMIN_TOKEN": TOKEN, "ADMIN_LOGIN_FAILURES": 2}
    first, second = make_app(**settings), make_app(**settings)
    assert log_in(first.test_client(), "", "wrong").status_code == 401
    assert log_in(second.test_client(), "", "wrong").status_code == 401
    assert log_in(first.test_client(), "", TOKEN).status_code == 429


def test_failures_are_counted_in_redis_when_it_is_set(make_app, redis_server):
    """Two apps on two databases share only Redis: one's failures lock the other's login."""
    settings = {
        "ADMIN_TOKEN": TOKEN,
        "ADMIN_LOGIN_FAILURES": 2,
        "REDIS_URL": redis_server.url,
        "TRUSTED_PROXY_HOPS": 1,
    }
    first, second = make_app(**settings), make_app(**settings)
    address = "192.0.2.200"  # this test's own: the Redis server is shared by the run
    assert log_in(first.test_client(), "", "wrong", address).status_code == 401
    assert log_in(second.test_client(), "", "wrong", address).status_code == 401
    assert log_in(first.test_client(), "", TOKEN, address).status_code == 429
    assert log_in(second.test_client(), "", TOKEN, "192.0.2.201").status_code == 302


def test_operators_and_the_login_limit_work_on_each_database(make_app_each_database):
    app = make_app_each_database(TRUSTED_PROXY_HOPS=1, ADMIN_LOGIN_FAILURES=2)
    add_operator(app.test_cli_runner(), "alice")
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 302
    assert [log_in(app.test_client(), "alice", "wrong").status_code for _ in range(2)] == [401] * 2
    assert log_in(app.test_client(), "alice", PASSWORD).status_code == 429


# -- the session cookie's Secure flag --------------------------------------------------------


def session_cookie(app, **headers) -> str:
    answer = app.test_client().get("/admin/login", headers=headers)
    return next(v for v in answer.headers.getlist("Set-Cookie") if v.startswith("gateway_admin="))


def test_the_cookie_is_secure_when_the_proxy_says_https(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, TRUSTED_PROXY_HOPS=1)
    assert "; Secure" in session_cookie(app, **{"X-Forwarded-Proto": "https"})


def test_the_cookie_is_not_secure_over_plain_http_in_auto(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, TRUSTED_PROXY_HOPS=1)
    assert "; Secure" not in session_cookie(app)


def test_the_cookie_is_always_secure_with_yes(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, ADMIN_COOKIE_SECURE="yes")
    assert "; Secure" in session_cookie(app)


def test_the_cookie_is_never_secure_with_no(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, TRUSTED_PROXY_HOPS=1, ADMIN_COOKIE_SECURE="no")
    assert "; Secure" not in session_cookie(app, **{"X-Forwarded-Proto": "https"})


def test_an_untrusted_forwarded_proto_does_not_make_the_cookie_secure(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN)  # TRUSTED_PROXY_HOPS=0: the header is anyone's
    assert "; Secure" not in session_cookie(app, **{"X-Forwarded-Proto": "https"})


def test_an_unknown_admin_cookie_secure_value_says_what_to_set(monkeypatch):
    from config import Config

    monkeypatch.setenv("ADMIN_COOKIE_SECURE", "maybe")
    expected = r"^ADMIN_COOKIE_SECURE='maybe' is not one of auto, yes, no$"
    with pytest.raises(ValueError, match=expected):
        Config()


def test_a_login_limit_of_no_failures_is_refused_at_start(make_app):
    with pytest.raises(ValueError, match="ADMIN_LOGIN_FAILURES=0 and ADMIN_LOGIN_WINDOW_SECONDS"):
        make_app(ADMIN_LOGIN_FAILURES=0)


def test_a_name_typed_at_the_login_cannot_forge_a_line_of_the_audit_log(make_app):
    app = make_app(ADMIN_TOKEN=TOKEN, ADMIN_LOGIN_FAILURES=2)
    runner = app.test_cli_runner()
    forged = "x\n2026-01-01 00:00:00  admin:alice operator.remove  bob"
    assert [log_in(app.test_client(), forged, "wrong").status_code for _ in range(2)] == [401] * 2
    [lockout] = [r for r in audit_rows(runner) if r["target"].startswith("name:")]
    assert lockout["target"] == "name:(not an operator name)"
    printed = runner.invoke(args=["audit"]).output.splitlines()
    assert len(printed) == len(audit_rows(runner))  # one line per row
    assert not any("operator.remove" in line for line in printed)


def test_an_audit_row_writes_control_characters_as_escapes(app, runner):
    add_operator(runner, "alice")
    account = create_account(runner, "shop")
    browser = logged_in(app, "alice")
    page = browser.get(f"/admin/accounts/{account['key']}")
    label = "ok\n2026-01-01\xa000:00:00\xa0\xa0cli\xa0key.revoke\x1b[31m"  # no plain space
    form = {"label": label, "models": "", "ips": "", "rpm": "", "tpm": "", "expires": ""}
    browser.post(f"/admin/keys/{account['key']}/edit", data={**form, "csrf": csrf_of(page.text)})
    [edit] = [r for r in audit_rows(runner) if r["action"] == "key.update"]
    escaped = "ok\\n2026-01-01\\xa000:00:00\\xa0\\xa0cli\\xa0key.revoke\\x1b[31m"
    assert edit["detail"] == f"label={escaped}"


def test_logins_sent_at_once_get_no_more_tries_than_the_limit(make_app):
    """Each attempt is counted before its password is checked: of 12 sent together, only the
    limit's 3 are checked (401) and the rest refused unchecked (429)."""
    app = make_app(SETTINGS_CACHE_SECONDS=0, TRUSTED_PROXY_HOPS=1, ADMIN_LOGIN_FAILURES=3)
    add_operator(app.test_cli_runner(), "alice")
    start = threading.Barrier(12)

    def wrong_login(n: int) -> int:
        browser = app.test_client()
        address = f"198.51.100.{n}"
        csrf = csrf_of(browser.get("/admin/login", headers={"X-Forwarded-For": address}).text)
        start.wait()
        form = {"name": "alice", "token": "wrong", "csrf": csrf}
        return browser.post("/admin/login", data=form, headers={"X-Forwarded-For": address})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(wrong_login, range(12)))
    assert sorted(answer.status_code for answer in answers) == [401] * 3 + [429] * 9
    lockouts = [r for r in audit_rows(app.test_cli_runner()) if r["action"] == "console.lockout"]
    assert [r["target"] for r in lockouts] == ["name:alice"]  # audited once, by the 3rd


def test_at_most_two_password_checks_run_at_once_in_a_process(app, runner, monkeypatch):
    """Each check is scrypt (about 32 MB): logins sent at once wait their turn. The hash
    function is a double here that records how many run together."""
    add_operator(runner, "alice")
    store = OperatorStore(app.extensions["gateway"].engine, settings_cache_seconds=0)
    running, most, lock = [0], [0], threading.Lock()

    def slow_check(stored: str, password: str) -> bool:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return False

    monkeypatch.setattr(operators, "check_password_hash", slow_check)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: store.verify("alice", f"guess-{n}"), range(8)))
    assert answers == [None] * 8
    assert most[0] == operators.HASHES_AT_ONCE == 2
