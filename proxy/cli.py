"""Admin command line: `flask accounts create|list`, `flask init-db`."""

from __future__ import annotations

import json

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from proxy import storage

accounts_cli = AppGroup("accounts", help="Create and list accounts.")


def _gateway():
    return current_app.extensions["gateway"]


@accounts_cli.command("create")
@click.argument("name")
@click.option(
    "--daily-quota",
    type=click.IntRange(min=0),
    default=None,
    help="Calls per day (default: DEFAULT_DAILY_QUOTA).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def create_account(name: str, daily_quota: int | None, as_json: bool) -> None:
    """Create an account; its secret is printed once and never stored in clear."""
    created = _gateway().accounts.create(name, daily_quota=daily_quota)
    account = created.account
    if as_json:
        click.echo(
            json.dumps(
                {
                    "key": account.key,
                    "secret": created.secret,
                    "name": account.name,
                    "id": account.id,
                    "daily_quota": account.daily_quota,
                    "status": account.status,
                }
            )
        )
        return
    click.echo(f"account {account.name!r} created (id {account.id})")
    click.echo(f"key:    {account.key}")
    click.echo(f"secret: {created.secret}")
    click.echo("The secret is shown only now; store it safely.")


@accounts_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list for scripts.")
def list_accounts(as_json: bool) -> None:
    """List accounts (keys, never secrets)."""
    rows = _gateway().accounts.list()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": a.id,
                        "key": a.key,
                        "name": a.name,
                        "status": a.status,
                        "daily_quota": a.daily_quota,
                    }
                    for a in rows
                ]
            )
        )
        return
    for a in rows:
        click.echo(f"{a.id}\t{a.key}\t{a.status}\t{a.daily_quota}\t{a.name}")


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create the database tables if they are missing."""
    storage.ensure_schema(_gateway().engine)
    click.echo("database ready")


def init_app(app: Flask) -> None:
    app.cli.add_command(accounts_cli)
    app.cli.add_command(init_db)
