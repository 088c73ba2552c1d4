"""`flask accounts set` and `flask keys set`: an account's quota, limits, expiry and APIs and a
key's label, models, addresses, limits and expiry changed after creation (only the options
given; none/all/any clear one), audited, and obeyed by the next call: at once in the process
that made the change, within SETTINGS_CACHE_SECONDS in every other (docs/accounts.md,
docs/keys.md)."""

from __future__ import annotations

import json

import pytest

from proxy import operations
from tests.conftest import create_account
from tests.served import wait_until
from tests.test_keys import LONG, create_key, envelope
from tests.test_settings_copies import two_processes


def set_account(runner, key: str, *options):
    return runner.invoke(args=["accounts", "set", key, *options, "--json"])


def set_key(runner, key: str, *options):
    return runner.invoke(args=["keys", "set", key, *options, "--json"])


def shown(runner, *command) -> dict:
    done = runner.invoke(args=[*command, "--json"])
    assert done.exit_code == 0, done.output
    return json.loads(done.output)


def audit_rows(runner) -> list[dict]:
    return shown(runner, "audit")["audit"]


# -- flask accounts set ---------------------------------------------------------------------


def test_accounts_set_changes_only_the_options_given(runner):
    account = create_account(runner, "shop", "--concurrency", "3", "--tpm", "900")
    done = set_account(runner, account["key"], "--daily-quota", "500", "--rpm", "5")
    assert done.exit_code == 0, done.output
    after = json.loads(done.output)
    assert {k: after[k] for k in ("name", "daily_quota", "rpm", "concurrency", "tpm")} == {
        "name": "shop",
        "daily_quota": 500,
        "rpm": 5,
        "concurrency": 3,
        "tpm": 900,
    }
    assert after["changed"] == ["daily_quota", "rpm"]


def test_accounts_set_none_and_all_clear_limits_expiry_and_apis(runner):
    account = create_account(
        runner, "shop", "--concurrency", "3", "--rpm", "5", "--expires", "2031-01-01"
    )
    runner.invoke(args=["accounts", "set", account["key"], "--apis", "openai"])
    done = set_account(
        runner, account["key"], "--concurrency", "none", "--rpm", "NONE", "--expires", "none"
    )
    assert done.exit_code == 0, done.output
    cleared = set_account(runner, account["key"], "--apis", "all")
    after = json.loads(cleared.output)
    assert (after["concurrency"], after["rpm"], after["expires"], after["apis"]) == (
        None,
        None,
        None,
        None,
    )


def test_accounts_set_without_an_option_is_a_usage_error(runner):
    account = create_account(runner)
    done = runner.invoke(args=["accounts", "set", account["key"]])
    assert done.exit_code == 2
    assert "Error: say what to change: give at least one option (see --help)" in done.output
    assert [row["action"] for row in audit_rows(runner)] == ["account.create"]


def test_accounts_set_an_unknown_api_is_refused_naming_it_and_changes_nothing(runner):
    account = create_account(runner, "shop", "--apis", "openai")
    done = set_account(runner, account["key"], "--apis", "openai,v9/nothing", "--rpm", "5")
    assert done.exit_code == 2
    assert "Invalid value for --apis: v9/nothing is neither a platform" in done.output
    after = shown(runner, "accounts", "show", account["key"])
    assert (after["apis"], after["rpm"]) == (["openai"], None)


def test_accounts_set_a_limit_that_is_not_a_number_says_what_to_type(runner):
    account = create_account(runner)
    done = set_account(runner, account["key"], "--concurrency", "0")
    assert done.exit_code == 2
    assert (
        "Invalid value for '--concurrency': '0': give a whole number from 1 to 2147483647, or none"
    ) in done.output


def test_accounts_set_an_unknown_key_is_exit_code_1(runner):
    done = set_account(runner, "no-such-key", "--rpm", "5")
    assert done.exit_code == 1
    assert "Error: no account has the key 'no-such-key'" in done.output


def test_accounts_set_writes_one_audit_row_naming_each_change(runner):
    account = create_account(runner, "shop", "--expires", "2031-01-01")
    set_account(runner, account["key"], "--daily-quota", "500", "--expires", "none")
    rows = audit_rows(runner)
    assert len(rows) == 2
    assert {k: rows[0][k] for k in ("who", "action", "target", "detail")} == {
        "who": "cli",
        "action": "account.update",
        "target": account["key"],
        "detail": "daily_quota=500 expires=none",
    }


def test_accounts_set_to_the_values_it_has_changes_nothing_and_writes_no_audit_row(runner):
    account = create_account(runner, "shop", "--daily-quota", "500")
    done = set_account(runner, account["key"], "--daily-quota", "500", "--name", "shop")
    assert json.loads(done.output)["changed"] == []
    assert [row["action"] for row in audit_rows(runner)] == ["account.create"]


def test_a_lowered_daily_quota_refuses_the_next_charged_call_with_4013(make_app_each_database):
    app = make_app_each_database(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner, "shop", "--daily-quota", "5")
    assert [envelope(client, account)["error_code"] for _ in range(2)] == ["0000", "0000"]
    assert set_account(runner, account["key"], "--daily-quota", "1").exit_code == 0
    refused = envelope(client, account)
    assert refused["error_code"] == "4013"
    assert "the daily quota of 1 calls is used up" in refused["reason"]
    after = shown(runner, "accounts", "show", account["key"])
    assert (after["today"]["used"], after["today"]["in_flight"]) == (2, 0)  # nothing held
    usage = shown(runner, "usage", account["key"])
    assert (usage["calls"], usage["by_code"]) == (3, {"0000": 2, "4013": 1})


def test_a_raised_daily_quota_lets_calls_through_again(make_app_each_database):
    app = make_app_each_database(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner, "shop", "--daily-quota", "1")
    assert [envelope(client, account)["error_code"] for _ in range(2)] == ["0000", "4013"]
    assert set_account(runner, account["key"], "--daily-quota", "3").exit_code == 0
    assert [envelope(client, account)["error_code"] for _ in range(3)] == [
        "0000",
        "0000",
        "4013",
    ]


def test_calls_topped_up_today_stay_on_top_of_a_new_quota(runner, client):
    account = create_account(runner, "shop", "--daily-quota", "5")
    assert [envelope(client, account)["error_code"] for _ in range(2)] == ["0000", "0000"]
    runner.invoke(args=["accounts", "topup", account["key"], "--calls", "1"])
    assert set_account(runner, account["key"], "--daily-quota", "2").exit_code == 0
    assert [envelope(client, account)["error_code"] for _ in range(2)] == ["0000", "4013"]


def test_the_daily_quota_cannot_be_cleared(app, runner):
    account = create_account(runner)
    with pytest.raises(ValueError) as refused:
        operations.update_account(
            app.extensions["gateway"], "test", account["key"], daily_quota=None
        )
    assert str(refused.value) == "daily_quota must be a whole number from 0 to 2147483647"


def test_an_edit_naming_no_field_is_refused(app, runner):
    account = create_account(runner)
    with pytest.raises(ValueError) as refused:
        operations.update_account(app.extensions["gateway"], "test", account["key"])
    assert str(refused.value).startswith("say what to change: one or more of name, daily_quota")


def test_an_accounts_new_rpm_applies_to_its_next_call_at_once(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner)
    assert envelope(client, account)["error_code"] == "0000"  # the copy is made
    assert set_account(runner, account["key"], "--rpm", "1").exit_code == 0
    assert [envelope(client, account)["error_code"] for _ in range(2)] == ["0000", "4008"]


def test_an_accounts_new_apis_apply_to_its_next_call_at_once(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    account = create_account(runner)
    assert envelope(client, account)["error_code"] == "0000"
    assert set_account(runner, account["key"], "--apis", "v1/embeddings").exit_code == 0
    assert envelope(client, account)["error_code"] == "4012"


def test_an_account_change_by_another_process_reaches_a_worker_once_its_copy_is_ttl_old(
    make_app, tmp_path
):
    client, admin = two_processes(make_app, tmp_path, 0.2)
    account = create_account(admin, "shop", "--daily-quota", "5")
    assert envelope(client, account)["error_code"] == "0000"
    assert set_account(admin, account["key"], "--daily-quota", "1").exit_code == 0
    wait_until(
        lambda: envelope(client, account)["error_code"] == "4013", 10, "the quota never arrived"
    )


# -- flask keys set ---------------------------------------------------------------------------


def test_keys_set_changes_only_the_options_given(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--label", "shop", "--tpm", "900")
    done = set_key(runner, created["key"], "--models", "gpt-4o*,o1-*", "--rpm", "5")
    assert done.exit_code == 0, done.output
    after = json.loads(done.output)
    assert {k: after[k] for k in ("label", "models", "ips", "rpm", "tpm", "changed")} == {
        "label": "shop",
        "models": ["gpt-4o*", "o1-*"],
        "ips": None,
        "rpm": 5,
        "tpm": 900,
        "changed": ["models", "rpm"],
    }


def test_keys_set_all_any_and_none_clear_models_addresses_limits_and_expiry(runner):
    account = create_account(runner)
    created = create_key(
        runner,
        account["key"],
        *("--models", "gpt-4o*", "--ips", "10.0.0.0/8", "--rpm", "5", "--expires", "2031-01-01"),
    )
    done = set_key(
        runner,
        created["key"],
        *("--models", "all", "--ips", "any", "--rpm", "none", "--expires", "none"),
    )
    after = json.loads(done.output)
    assert (after["models"], after["ips"], after["rpm"], after["expires"]) == (
        None,
        None,
        None,
        None,
    )


def test_keys_set_writes_one_audit_row_naming_each_change(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"], "--models", "gpt-4o*")
    set_key(runner, created["key"], "--label", "my site", "--models", "all", "--tpm", "100")
    row = audit_rows(runner)[0]
    assert {k: row[k] for k in ("who", "action", "target", "detail")} == {
        "who": "cli",
        "action": "key.update",
        "target": created["key"],
        "detail": 'label="my site" models=all tpm=100',
    }


def test_keys_set_a_bad_address_is_refused_naming_it_and_changes_nothing(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"])
    done = set_key(runner, created["key"], "--ips", "10.0.0.0/8,nowhere", "--rpm", "5")
    assert done.exit_code == 2
    assert "Invalid value for --ips: 'nowhere' is neither an IP address nor a CIDR" in done.output
    after = shown(runner, "keys", "show", created["key"])
    assert (after["ips"], after["rpm"]) == (None, None)


def test_keys_set_on_a_revoked_key_is_refused(runner):
    account = create_account(runner)
    created = create_key(runner, account["key"])
    runner.invoke(args=["keys", "revoke", created["key"]])
    done = set_key(runner, created["key"], "--rpm", "5")
    assert done.exit_code == 1
    assert (
        f"Error: the key {created['key']} is revoked: it cannot be edited; create a new key"
    ) in done.output


def test_a_keys_new_models_apply_to_its_next_call_at_once(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    created = create_key(runner, create_account(runner)["key"])
    assert envelope(client, created)["error_code"] == "0000"  # the copy is made
    assert set_key(runner, created["key"], "--models", "o1-*").exit_code == 0
    refused = envelope(client, created)
    assert refused["error_code"] == "4012"
    assert "is not enabled for this key" in refused["reason"]
    assert set_key(runner, created["key"], "--models", "all").exit_code == 0
    assert envelope(client, created)["error_code"] == "0000"


def test_a_keys_new_addresses_apply_to_its_next_call_at_once(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    created = create_key(runner, create_account(runner)["key"])
    assert envelope(client, created)["error_code"] == "0000"
    assert set_key(runner, created["key"], "--ips", "10.0.0.0/8").exit_code == 0
    refused = envelope(client, created)
    assert refused["error_code"] == "4005"
    assert "this key does not accept calls from the address 127.0.0.1" in refused["reason"]


def test_a_keys_new_rpm_applies_to_its_next_call_at_once(make_app):
    app = make_app(SETTINGS_CACHE_SECONDS=LONG)
    runner, client = app.test_cli_runner(), app.test_client()
    created = create_key(runner, create_account(runner)["key"])
    assert envelope(client, created)["error_code"] == "0000"
    assert set_key(runner, created["key"], "--rpm", "1").exit_code == 0
    assert [envelope(client, created)["error_code"] for _ in range(2)] == ["0000", "4008"]


def test_a_key_change_by_another_process_reaches_a_worker_once_its_copy_is_ttl_old(
    make_app, tmp_path
):
    client, admin = two_processes(make_app, tmp_path, 0.2)
    created = create_key(admin, create_account(admin)["key"])
    assert envelope(client, created)["error_code"] == "0000"
    assert set_key(admin, created["key"], "--models", "o1-*").exit_code == 0
    wait_until(
        lambda: envelope(client, created)["error_code"] == "4012", 10, "the models never arrived"
    )
