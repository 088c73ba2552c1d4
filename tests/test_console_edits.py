"""The console's edit forms: an account's Limits form and each key's edit form, filled in with
the current values (blank: no limit), saved through operations.update_account / update_key (the
`flask accounts set` / `flask keys set` code), audited as "admin", obeyed by the next call; bad
input flashes a reason naming the field and changes nothing. The commands: test_cli_edits.py."""

from __future__ import annotations

import json
import re

from tests import test_console
from tests.conftest import create_account
from tests.test_console import api_call
from tests.test_keys import create_key, envelope

# The console module's fixtures: an app with ADMIN_TOKEN, and a test client logged in to it.
app, console = test_console.app, test_console.console

ACCOUNT_FORM = {
    "name": "shop",
    "daily_quota": "30000",
    "concurrency": "",
    "rpm": "",
    "tpm": "",
    "expires": "",
    "apis": "",
}
KEY_FORM = {"label": "", "models": "", "ips": "", "rpm": "", "tpm": "", "expires": ""}


def save_limits(console, key: str, **fields):
    data = {**ACCOUNT_FORM, **fields, "csrf": console.csrf}
    return console.post(f"/admin/accounts/{key}/limits", data=data, follow_redirects=True)


def save_key(console, key: str, **fields):
    data = {**KEY_FORM, **fields, "csrf": console.csrf}
    return console.post(f"/admin/keys/{key}/edit", data=data, follow_redirects=True)


def account_shown(runner, key: str) -> dict:
    return json.loads(runner.invoke(args=["accounts", "show", key, "--json"]).output)


def key_shown(runner, key: str) -> dict:
    return json.loads(runner.invoke(args=["keys", "show", key, "--json"]).output)


def form_of(page: str, form_id: str) -> str:
    return re.search(rf'<form [^>]*id="{form_id}">.*?</form>', page, re.S).group(0)


def audit_rows(runner) -> list[dict]:
    return json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"]


# -- an account's limits --------------------------------------------------------------------


def test_the_limits_form_is_filled_in_with_the_accounts_values(console, runner):
    account = create_account(
        runner, "shop", "--daily-quota", "500", "--rpm", "5", "--expires", "2031-01-02"
    )
    runner.invoke(args=["accounts", "set", account["key"], "--apis", "openai,v1/embeddings"])
    form = form_of(console.get(f"/admin/accounts/{account['key']}").text, "limits")
    assert 'name="daily_quota" inputmode="numeric" size="8" required value="500"' in form
    assert 'name="rpm" inputmode="numeric" size="6" value="5"' in form
    assert 'name="concurrency" inputmode="numeric" size="5" value=""' in form
    assert 'name="expires" type="date" value="2031-01-02"' in form
    assert 'value="openai, v1/embeddings"' in form


def test_saved_limits_are_the_accounts_new_settings_and_the_page_shows_them(console, runner):
    account = create_account(runner, "shop", "--rpm", "5")
    page = save_limits(
        console, account["key"], daily_quota="500", tpm="900", expires="2031-01-02", apis="openai"
    ).text
    assert (
        f"Limits of account {account['key']} saved: "
        "daily_quota=500 rpm=none tpm=900 expires=2031-01-02 apis=openai."
    ) in page
    shown = account_shown(runner, account["key"])
    assert {k: shown[k] for k in ("daily_quota", "rpm", "tpm", "expires", "apis")} == {
        "daily_quota": 500,
        "rpm": None,
        "tpm": 900,
        "expires": "2031-01-02",
        "apis": ["openai"],
    }
    assert 'name="tpm" inputmode="numeric" size="8" value="900"' in form_of(page, "limits")


def test_a_bad_limit_flashes_a_reason_naming_the_field_and_changes_nothing(console, runner):
    account = create_account(runner, "shop")
    page = save_limits(console, account["key"], daily_quota="500", rpm="five").text
    assert (
        "rpm must be a whole number from 1 to 2147483647, or leave it empty for no limit."
    ) in page
    assert account_shown(runner, account["key"])["daily_quota"] == 30000


def test_an_empty_daily_quota_says_to_fill_it_in(console, runner):
    account = create_account(runner, "shop")
    page = save_limits(console, account["key"], daily_quota="").text
    assert "Fill in daily quota." in page


def test_an_unknown_api_flashes_its_name_and_changes_nothing(console, runner):
    account = create_account(runner, "shop")
    page = save_limits(console, account["key"], apis="openai, v9/nothing").text
    assert "apis: v9/nothing is neither a platform (anthropic, feishu, openai)" in page
    assert account_shown(runner, account["key"])["apis"] is None


def test_saved_limits_are_in_flask_audit_as_admin_naming_each_change(console, runner):
    account = create_account(runner, "shop")
    save_limits(console, account["key"], daily_quota="1", concurrency="2")
    row = audit_rows(runner)[0]
    assert (row["who"], row["action"], row["target"], row["detail"]) == (
        "admin",
        "account.update",
        account["key"],
        "daily_quota=1 concurrency=2",
    )


def test_saving_the_limits_unchanged_says_so_and_writes_no_audit_row(console, runner):
    account = create_account(runner, "shop")
    page = save_limits(console, account["key"]).text
    assert f"Limits of account {account['key']}: nothing changed." in page
    assert audit_rows(runner)[0]["action"] == "account.create"


def test_a_quota_lowered_in_the_console_refuses_the_next_call_with_4013(console, client, runner):
    account = create_account(runner, "shop")
    assert api_call(client, account)["error_code"] == "0000"
    save_limits(console, account["key"], daily_quota="1")
    assert api_call(client, account)["error_code"] == "4013"


def test_the_limits_form_without_the_csrf_token_changes_nothing(console, runner):
    account = create_account(runner, "shop")
    answer = console.post(f"/admin/accounts/{account['key']}/limits", data=ACCOUNT_FORM)
    assert answer.status_code == 400
    assert account_shown(runner, account["key"])["daily_quota"] == 30000


def test_the_limits_of_an_unknown_account_are_404(console):
    answer = console.post(
        "/admin/accounts/no-such-key/limits", data={**ACCOUNT_FORM, "csrf": console.csrf}
    )
    assert answer.status_code == 404


# -- a key's limits ---------------------------------------------------------------------------


def test_each_active_key_has_an_edit_form_filled_in_with_its_values(console, runner):
    account = create_account(runner, "shop")
    created = create_key(
        runner,
        account["key"],
        *("--label", "site", "--models", "gpt-4o*,o1-*", "--ips", "10.0.0.0/8", "--rpm", "7"),
    )
    form = form_of(console.get(f"/admin/accounts/{account['key']}").text, f"edit-{created['key']}")
    assert 'name="label" maxlength="200" value="site"' in form
    assert 'value="gpt-4o*, o1-*"' in form
    assert 'value="10.0.0.0/8"' in form
    assert 'name="rpm" inputmode="numeric" value="7"' in form
    assert 'name="expires" type="date" value=""' in form


def test_a_revoked_key_has_no_edit_form(console, runner):
    account = create_account(runner, "shop")
    created = create_key(runner, account["key"])
    runner.invoke(args=["keys", "revoke", created["key"]])
    page = console.get(f"/admin/accounts/{account['key']}").text
    assert f'id="edit-{created["key"]}"' not in page
    assert f'id="edit-{account["key"]}"' in page  # the first key, still active


def test_a_saved_key_is_changed_and_its_next_call_obeys_it(console, client, runner):
    account = create_account(runner, "shop")
    created = create_key(runner, account["key"])
    assert envelope(client, created)["error_code"] == "0000"
    page = save_key(console, created["key"], label="site", models="o1-*", rpm="3").text
    assert f"Key {created['key']} saved: label=site models=o1-* rpm=3." in page
    shown = key_shown(runner, created["key"])
    assert (shown["label"], shown["models"], shown["rpm"]) == ("site", ["o1-*"], 3)
    assert envelope(client, created)["error_code"] == "4012"


def test_blank_key_fields_clear_its_lists_and_limits(console, runner):
    account = create_account(runner, "shop")
    created = create_key(
        runner, account["key"], *("--models", "o1-*", "--ips", "10.0.0.0/8", "--tpm", "50")
    )
    save_key(console, created["key"])
    shown = key_shown(runner, created["key"])
    assert (shown["models"], shown["ips"], shown["tpm"]) == (None, None, None)


def test_a_bad_key_address_flashes_a_reason_naming_the_field_and_changes_nothing(console, runner):
    account = create_account(runner, "shop")
    created = create_key(runner, account["key"])
    page = save_key(console, created["key"], ips="10.0.0.0/8, nowhere", rpm="3").text
    assert (
        "ips: &#39;nowhere&#39; is neither an IP address nor a CIDR network (e.g. 10.0.0.0/8)"
    ) in page
    assert (key_shown(runner, created["key"])["ips"], key_shown(runner, created["key"])["rpm"]) == (
        None,
        None,
    )


def test_a_saved_key_is_in_flask_audit_as_admin_naming_each_change(console, runner):
    account = create_account(runner, "shop")
    created = create_key(runner, account["key"], "--rpm", "5")
    save_key(console, created["key"], expires="2031-01-02")
    row = audit_rows(runner)[0]
    assert (row["who"], row["action"], row["target"], row["detail"]) == (
        "admin",
        "key.update",
        created["key"],
        "rpm=none expires=2031-01-02",
    )


def test_editing_a_revoked_key_is_refused_with_the_reason(console, runner):
    account = create_account(runner, "shop")
    created = create_key(runner, account["key"])
    runner.invoke(args=["keys", "revoke", created["key"]])
    page = save_key(console, created["key"], rpm="3").text
    assert f"the key {created['key']} is revoked: it cannot be edited; create a new key" in page
    assert key_shown(runner, created["key"])["rpm"] is None


def test_editing_an_unknown_key_is_404(console):
    answer = console.post("/admin/keys/no-such-key/edit", data={**KEY_FORM, "csrf": console.csrf})
    assert answer.status_code == 404
