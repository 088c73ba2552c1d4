"""`flask operators add|passwd|remove|list`: a password of at least 12 characters, typed twice
at a hidden prompt or read from standard input, kept only as a hash, never printed or audited;
each change is one audit row naming the command line."""

from __future__ import annotations

import json

from sqlalchemy import text

PASSWORD = "correct horse battery"


def operators(runner, *args, input=None):
    return runner.invoke(args=["operators", *args], input=input)


def test_add_reads_the_password_twice_at_a_hidden_prompt(runner):
    result = operators(runner, "add", "alice", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "Password: \nRepeat for confirmation: \noperator alice added: the console is on\n"
    )


def test_add_refuses_two_different_passwords(runner):
    result = operators(runner, "add", "alice", input=f"{PASSWORD}\n{PASSWORD}x\n")
    assert "Error: The two entered values do not match." in result.output
    assert json.loads(operators(runner, "list", "--json").output) == []


def test_a_short_password_is_refused_with_the_length_to_use(runner):
    result = operators(runner, "add", "alice", "--password-stdin", input="eleven char")
    assert result.exit_code == 1
    assert result.output == (
        "Error: the password has 11 characters; use at least 12 (e.g. four random words)\n"
    )
    assert json.loads(operators(runner, "list", "--json").output) == []


def test_a_bad_name_says_what_a_name_may_hold(runner):
    result = operators(runner, "add", "alice smith", "--password-stdin", input=PASSWORD)
    assert result.exit_code == 1
    assert result.output == (
        "Error: 'alice smith' is not an operator name: use 1 to 32 lower-case letters, digits, "
        "dots, dashes or underscores, starting with a letter or digit\n"
    )


def test_a_name_is_added_once(runner):
    operators(runner, "add", "alice", "--password-stdin", input=PASSWORD)
    again = operators(runner, "add", "alice", "--password-stdin", input=PASSWORD + "!")
    assert (again.exit_code, again.output) == (
        1,
        "Error: there is already an operator named 'alice'\n",
    )


def test_list_shows_names_and_dates_never_a_hash(runner):
    operators(runner, "add", "bob", "--password-stdin", input=PASSWORD)
    operators(runner, "add", "alice", "--password-stdin", input=PASSWORD)
    listed = json.loads(operators(runner, "list", "--json").output)
    assert [sorted(o) for o in listed] == [["created", "name", "password_changed"]] * 2
    assert [o["name"] for o in listed] == ["alice", "bob"]


def test_the_password_is_kept_only_as_a_scrypt_hash(runner, app):
    operators(runner, "add", "alice", "--password-stdin", input=PASSWORD)
    with app.extensions["gateway"].engine.connect() as connection:
        stored = connection.execute(text("SELECT * FROM operators")).mappings().one()
    assert stored["password_hash"].startswith("scrypt:")
    assert PASSWORD not in json.dumps({k: str(v) for k, v in stored.items()})


def test_each_change_is_audited_without_the_password(runner):
    operators(runner, "add", "alice", "--password-stdin", input=PASSWORD)
    operators(runner, "passwd", "alice", "--password-stdin", input="another long password")
    operators(runner, "remove", "alice")
    rows = json.loads(runner.invoke(args=["audit", "--json"]).output)["audit"]
    assert [(r["who"], r["action"], r["target"], r["detail"]) for r in rows] == [
        ("cli", "operator.remove", "alice", "sessions ended"),
        ("cli", "operator.passwd", "alice", "sessions ended"),
        ("cli", "operator.add", "alice", ""),
    ]


def test_passwd_and_remove_of_an_unknown_name_are_errors(runner):
    passwd = operators(runner, "passwd", "nobody", "--password-stdin", input=PASSWORD)
    remove = operators(runner, "remove", "nobody")
    assert (passwd.exit_code, passwd.output) == (1, "Error: there is no operator named 'nobody'\n")
    assert (remove.exit_code, remove.output) == (1, "Error: there is no operator named 'nobody'\n")
