"""The console's operations pages through the Flask test client: the upstreams page reloads
UPSTREAMS_FILE (the command's own operation, audited; a bad file changes nothing), the APIs
page picks its account from a list and starts one entry per row, and a call refused for a
known key (4005, 4007) is on that account's usage page."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.conftest import create_account
from tests.test_console import TOKEN, api_call, csrf_of

MEMBER_KEY = "sk-ops-pages-member-secret-77"


def member(name: str, base_url: str) -> str:
    return (
        f'[[upstream]]\nname = "{name}"\nbase_url = "{base_url}"\n'
        f'api_key_env = "OPS_PAGES_KEY"\nmodels = ["{name}-*"]\n'
    )


@pytest.fixture
def upstreams_file(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("OPS_PAGES_KEY", MEMBER_KEY)
    path = tmp_path / "upstreams.toml"
    path.write_text(member("first", stub.base_url), encoding="utf-8")
    return path


@pytest.fixture
def app(make_app, upstreams_file):
    """The module's app (and so `client` and `runner`): the console on, one file member."""
    return make_app(ADMIN_TOKEN=TOKEN, UPSTREAMS_FILE=str(upstreams_file))


def log_in(app):
    """A test client logged in to the console; `.csrf` is its session's CSRF token."""
    browser = app.test_client()
    login = browser.get("/admin/login")
    browser.post("/admin/login", data={"token": TOKEN, "csrf": csrf_of(login.text)})
    browser.csrf = csrf_of(browser.get("/admin/accounts").text)
    return browser


@pytest.fixture
def console(app):
    return log_in(app)


def member_names(page: str) -> list[str]:
    table = re.search(r'<table id="upstreams">.*?</table>', page, re.S).group(0)
    return re.findall(r"<td><b>([^<]+)</b></td>", table)


def flashes(page: str) -> list[str]:
    found = re.findall(r'<p class="flash \w+" role="status">([^<]*)</p>', page)
    return [html.unescape(text) for text in found]


def audit_rows(runner) -> list[dict]:
    return json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"]


# ---- upstreams: reload from the console


def test_a_console_reload_changes_the_members_the_page_shows(console, stub, upstreams_file):
    assert member_names(console.get("/admin/upstreams").text) == ["default", "first"]
    upstreams_file.write_text(member("second", stub.base_url), encoding="utf-8")
    page = console.post(
        "/admin/upstreams/reload", data={"csrf": console.csrf}, follow_redirects=True
    ).text
    assert flashes(page) == [
        "Reload 1 asked: members default, second. "
        "Every worker on every host takes it within about a second."
    ]
    assert member_names(page) == ["default", "second"]
    assert MEMBER_KEY not in page


def test_a_console_reload_writes_its_audit_row(console, stub, upstreams_file, runner):
    upstreams_file.write_text(member("second", stub.base_url), encoding="utf-8")
    console.post("/admin/upstreams/reload", data={"csrf": console.csrf})
    row = audit_rows(runner)[0]
    assert (row["who"], row["action"], row["target"], row["detail"]) == (
        "admin",
        "upstreams.reload",
        str(upstreams_file),
        "generation=1 members=default,second",
    )


def test_a_bad_file_is_refused_with_its_reason_and_the_members_stay(
    console, upstreams_file, runner
):
    upstreams_file.write_text(member("bad", "ftp://x/v1"), encoding="utf-8")
    page = console.post(
        "/admin/upstreams/reload", data={"csrf": console.csrf}, follow_redirects=True
    ).text
    assert flashes(page) == [
        "Refused, the workers keep the upstreams they have: "
        f"UPSTREAMS_FILE {upstreams_file}: [[upstream]] #1 'bad': base_url 'ftp://x/v1' must be "
        'an http:// or https:// URL with a host, e.g. "https://api.deepseek.com/v1"'
    ]
    assert member_names(page) == ["default", "first"]
    assert [r["action"] for r in audit_rows(runner)] == ["console.login"]


def test_without_upstreams_file_the_reload_is_disabled_with_the_reason(make_app):
    console = log_in(make_app(ADMIN_TOKEN=TOKEN))
    page = console.get("/admin/upstreams").text
    assert '<button type="submit" id="reload" disabled>' in page
    assert "nothing to reload" in re.search(r'id="nothing-to-reload">(.*?)</span>', page).group(1)
    refused = console.post(
        "/admin/upstreams/reload", data={"csrf": console.csrf}, follow_redirects=True
    )
    assert flashes(refused.text) == [
        "Refused, the workers keep the upstreams they have: UPSTREAMS_FILE is not set, so there "
        "is nothing to reload: the only upstream is OPENAI_BASE_URL's (set UPSTREAMS_FILE "
        "and restart to route models elsewhere)"
    ]


# ---- APIs: the account picked from a list, a start per row


def test_the_api_picker_lists_every_account_by_name_and_key_after_every_account(console, runner):
    shop, blog = create_account(runner, "Shop"), create_account(runner, "Blog")
    form = re.search(r'<form[^>]*id="change-api".*?</form>', console.get("/admin/apis").text, re.S)
    picker = re.search(r'<select name="account">(.*?)</select>', form.group(0), re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"\s*>([^<]*)</option>', picker) == [
        ("", "every account"),
        (shop["key"], f"Shop · {shop['key']}"),
        (blog["key"], f"Blog · {blog['key']}"),
    ]


def test_a_stop_for_a_picked_account_shows_its_name_and_key(console, runner):
    shop = create_account(runner, "Shop")
    form = {"target": "v1/embeddings", "account": shop["key"], "action": "stop"}
    page = console.post(
        "/admin/apis", data={**form, "csrf": console.csrf}, follow_redirects=True
    ).text
    row = re.search(r'<table id="api-states">.*?<tbody>\s*(<tr>.*?</tr>)', page, re.S).group(1)
    assert "<code>v1/embeddings</code>" in row and '<span class="pill stopped">' in row
    assert f"<b>Shop</b></a> <small><code>{shop['key']}</code></small>" in row


def test_a_rows_start_button_clears_that_entry_only(console, runner):
    shop = create_account(runner, "Shop")
    runner.invoke(args=["apis", "stop", "v1/embeddings", "--account", shop["key"]])
    runner.invoke(args=["apis", "maintenance", "v1/embeddings"])
    page = console.get("/admin/apis").text
    starts = re.findall(r'<form method="post" action="/admin/apis">(.*?)</form>', page, re.S)
    shops = next(form for form in starts if f'value="{shop["key"]}"' in form)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', shops))
    assert fields["target"] == "v1/embeddings" and fields["account"] == shop["key"]
    console.post("/admin/apis", data={**fields, "action": "start"})
    listed = json.loads(runner.invoke(args=["apis", "list", "--json"]).output)
    assert [(s["target"], s["account_id"], s["state"]) for s in listed] == [
        ("v1/embeddings", 0, "maintenance")
    ]


def test_the_account_view_lists_its_own_entries_and_every_accounts(console, runner):
    shop, blog = create_account(runner, "Shop"), create_account(runner, "Blog")
    runner.invoke(args=["apis", "stop", "v1/embeddings", "--account", shop["key"]])
    runner.invoke(args=["apis", "stop", "v1/moderations", "--account", blog["key"]])
    runner.invoke(args=["apis", "maintenance", "feishu"])
    page = console.get("/admin/apis", query_string={"account": shop["key"]}).text
    table = re.search(r'<table id="api-states">.*?</table>', page, re.S).group(0)
    assert re.findall(r"<td><code>([^<]+)</code></td>", table) == ["feishu", "v1/embeddings"]
    picked = re.search(r'id="pick-account">.*?</form>', page, re.S).group(0)
    assert f'<option value="{shop["key"]}" selected>' in picked


def test_the_account_page_links_to_its_apis(console, runner):
    shop = create_account(runner, "Shop")
    page = console.get(f"/admin/accounts/{shop['key']}").text
    assert f'<a href="/admin/apis?account={shop["key"]}" id="account-apis">' in page


# ---- usage: a refusal for a known key is its account's


def test_a_stopped_accounts_refused_call_shows_on_its_own_usage_page(console, client, runner):
    shop = create_account(runner, "Shop")
    runner.invoke(args=["accounts", "stop", shop["key"]])
    refused = api_call(client, shop)
    assert refused["error_code"] == "4007"
    page = console.get("/admin/usage", query_string={"account": shop["key"]}).text
    assert '<td class="num" data-code="4007">1</td>' in page
    assert f"<code>{refused['request_id']}</code>" in page


def usage_codes(runner, key: str | None = None) -> dict:
    return json.loads(runner.invoke(args=["usage", *([key] if key else []), "--json"]).output)[
        "by_code"
    ]


def test_a_wrong_secret_is_on_the_keys_account_usage(client, runner):
    shop = create_account(runner, "Shop")
    assert api_call(client, {**shop, "secret": "not-the-secret"})["error_code"] == "4005"
    assert usage_codes(runner, shop["key"]) == {"4005": 1}


def test_an_unknown_keys_refusal_is_on_no_accounts_usage(client, runner):
    shop = create_account(runner, "Shop")
    assert api_call(client, {**shop, "key": "0" * len(shop["key"])})["error_code"] == "4004"
    assert (usage_codes(runner, shop["key"]), usage_codes(runner)) == ({}, {"4004": 1})


def test_a_refusal_on_an_accounts_usage_costs_it_nothing_and_shows_no_figures(client, runner):
    shop = create_account(runner, "Shop")
    refused = api_call(client, {**shop, "secret": "not-the-secret"})
    assert (refused["error_code"], refused["api_info"]) == ("4005", "")
    assert api_call(client, shop)["api_info"] == "today:1 max:30000 all[1=1+0+0];expires:never"
