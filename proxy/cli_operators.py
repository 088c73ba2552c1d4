"""Admin command line for the console's operators: `flask operators add|passwd|remove|list`
(docs/console.md). A password is typed twice at a hidden prompt, or read from standard input
with `--password-stdin` (for scripts); it is never printed, logged or audited."""

from __future__ import annotations

import json
import sys

import click
from flask.cli import AppGroup

from proxy import operations
from proxy.cli import CLI, for_key, gateway, json_option
from proxy.operators import Operator

operators_cli = AppGroup(
    "operators", help="Add, list and remove the console's operators; change a password."
)

password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of a prompt.",
)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


def _document(operator: Operator) -> dict:
    return {
        "name": operator.name,
        "created": operator.created_at.isoformat(sep=" ", timespec="seconds"),
        "password_changed": operator.password_changed_at.isoformat(sep=" ", timespec="seconds"),
    }


def _print(operator: Operator, as_json: bool, said: str) -> None:
    if as_json:
        click.echo(json.dumps(_document(operator), ensure_ascii=False))
    else:
        click.echo(said)


@operators_cli.command("add")
@click.argument("name")
@password_stdin_option
@json_option
def add_operator(name: str, password_stdin: bool, as_json: bool) -> None:
    """Let NAME log in to the console with a password (at least 12 characters)."""
    password = _password(password_stdin)
    operator = for_key(operations.add_operator, gateway(), CLI, name, password)
    _print(operator, as_json, f"operator {operator.name} added: the console is on")


@operators_cli.command("passwd")
@click.argument("name")
@password_stdin_option
@json_option
def set_password(name: str, password_stdin: bool, as_json: bool) -> None:
    """Give NAME a new password; their open console sessions end."""
    password = _password(password_stdin)
    operator = for_key(operations.set_operator_password, gateway(), CLI, name, password)
    _print(operator, as_json, f"operator {operator.name}: password changed, sessions ended")


@operators_cli.command("remove")
@click.argument("name")
@json_option
def remove_operator(name: str, as_json: bool) -> None:
    """NAME can no longer log in; their open console sessions end."""
    for_key(operations.remove_operator, gateway(), CLI, name)
    if as_json:
        click.echo(json.dumps({"removed": name}))
    else:
        click.echo(f"operator {name} removed, sessions ended")


@operators_cli.command("list")
@json_option
def list_operators(as_json: bool) -> None:
    """The operators (never a password or its hash)."""
    operators = gateway().operators.list()
    if as_json:
        click.echo(json.dumps([_document(o) for o in operators], ensure_ascii=False))
        return
    for operator in operators:
        document = _document(operator)
        click.echo(
            f"{operator.name}\tadded {document['created']}\t"
            f"password changed {document['password_changed']}"
        )
