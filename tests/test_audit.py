"""The audit log: every operator action, from the admin commands or the console, is one row
(who, what, on what, when) read by `flask audit`; a secret never is."""

from __future__ import annotations

import json

from proxy import audit
from tests.conftest import create_account


def audit_rows(runner) -> list[dict]:
    result = runner.invoke(args=["audit", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["audit"]


def test_admin_commands_are_in_the_audit_log_newest_first(runner):
    account = create_account(runner, "audited")
    runner.invoke(args=["accounts", "topup", account["key"], "--credits", "50", "--calls", "5"])
    runner.invoke(args=["accounts", "stop", account["key"]])
    rows = audit_rows(runner)
    assert [(r["who"], r["action"], r["target"]) for r in rows] == [
        ("cli", "account.stop", account["key"]),
        ("cli", "account.topup", account["key"]),
        ("cli", "account.create", account["key"]),
    ]
    assert rows[1]["detail"] == "credits=50 calls=5"


def test_the_audit_log_never_holds_a_secret(runner):
    account = create_account(runner, "secretive")
    key = json.loads(runner.invoke(args=["keys", "create", account["key"], "--json"]).output)
    runner.invoke(args=["accounts", "rotate-secret", account["key"]])
    text = runner.invoke(args=["audit", "--json"]).output
    assert [r["action"] for r in json.loads(text)["audit"]] == [
        "account.rotate-secret",
        "key.create",
        "account.create",
    ]
    assert account["secret"] not in text and key["secret"] not in text


def test_api_stops_name_their_target_and_account(runner):
    account = create_account(runner, "stopped-api")
    runner.invoke(args=["apis", "maintenance", "v1/embeddings", "--account", account["key"]])
    runner.invoke(args=["apis", "start", "v1/embeddings", "--account", account["key"]])
    rows = audit_rows(runner)[:2]
    assert [(r["action"], r["target"], r["detail"]) for r in rows] == [
        ("api.start", "v1/embeddings", f"account={account['key']}"),
        ("api.maintenance", "v1/embeddings", f"account={account['key']}"),
    ]


def test_flask_audit_lines_up_its_columns_whoever_acted(app, runner):
    create_account(runner, "columns")
    audit.record(app.extensions["gateway"].engine, "admin:alexandra", "account.stop", "k")
    lines = runner.invoke(args=["audit"]).output.splitlines()
    assert [line.split()[2] for line in lines] == ["admin:alexandra", "cli"]
    assert lines[0].index("account.stop") == lines[1].index("account.create"), lines
