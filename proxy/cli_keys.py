"""Admin command line for keys: `flask keys create|list|show|set|revoke` (docs/keys.md). Every
command takes `--json` and then prints exactly one JSON document, for scripts."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from proxy import operations
from proxy.cli import (
    CLI,
    LAST_DAY,
    LIMIT,
    WHOLE,
    Clearable,
    edited,
    edits,
    for_key,
    gateway,
    json_option,
    print_changes,
)
from proxy.keys import ApiKey, parse_list, parse_networks

keys_cli = AppGroup("keys", help="Create, list, show, change and revoke an account's keys.")


def _key_document(api_key: ApiKey, secret: str | None = None) -> dict:
    document = {
        "id": api_key.id,
        "key": api_key.key,
        "account": gateway().accounts.account_key_of(api_key.account_id),
        "label": api_key.label,
        "status": api_key.status,
        "expires": api_key.expires_on.isoformat() if api_key.expires_on else None,
        "models": list(api_key.models) if api_key.models is not None else None,
        "ips": list(api_key.ips) if api_key.ips is not None else None,
        "rpm": api_key.rpm,
        "tpm": api_key.tpm,
        "created": api_key.created_at.isoformat(sep=" ", timespec="seconds"),
        "revoked": (
            api_key.revoked_at.isoformat(sep=" ", timespec="seconds")
            if api_key.revoked_at
            else None
        ),
    }
    if secret is not None:  # key and secret first: what the operator hands to the client
        document = {"key": api_key.key, "secret": secret, **document}
    return document


def _print_key(api_key: ApiKey, as_json: bool, secret: str | None = None) -> None:
    document = _key_document(api_key, secret)
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
        return
    for name, value in document.items():
        shown = ",".join(value) if isinstance(value, list) else value
        click.echo(f"{name + ':':9} {shown if shown is not None else '-'}")
    if secret is not None:
        click.echo("The secret is shown only now; store it safely.")


def _networks(value: str | None) -> tuple[str, ...] | None:
    try:
        return parse_networks(value)
    except ValueError as refused:
        raise click.BadParameter(str(refused), param_hint="--ips") from None


@keys_cli.command("create")
@click.argument("account_key")
@click.option("--label", default="", help="What the key is for, e.g. the site using it.")
@click.option("--models", default=None, help="Allowed models, fnmatch patterns: gpt-4o*,o1-*.")
@click.option("--ips", default=None, help="Allowed caller addresses/CIDRs: 10.0.0.0/8,192.0.2.7.")
@click.option("--rpm", type=WHOLE, default=None, help="Calls per minute.")
@click.option("--tpm", type=WHOLE, default=None, help="Tokens per minute.")
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="YYYY-MM-DD: the last day it works.",
)
@json_option
def create_key(account_key, label, models, ips, rpm, tpm, expires, as_json) -> None:
    """Give the account of ACCOUNT_KEY another key; its secret is printed once."""
    created = for_key(
        lambda key: operations.create_key(
            gateway(),
            CLI,
            key,
            label=label,
            models=parse_list(models),
            ips=_networks(ips),
            rpm=rpm,
            tpm=tpm,
            expires_on=expires.date() if expires else None,
        ),
        account_key,
    )
    _print_key(created.api_key, as_json, secret=created.secret)


@keys_cli.command("list")
@click.argument("account_key")
@json_option
def list_keys(account_key: str, as_json: bool) -> None:
    """The keys of the account of ACCOUNT_KEY (never secrets)."""
    keys = for_key(gateway().accounts.keys_of, account_key)
    if as_json:
        click.echo(json.dumps([_key_document(k) for k in keys], ensure_ascii=False))
        return
    for k in keys:
        expires = k.expires_on.isoformat() if k.expires_on else "-"
        click.echo(f"{k.key}\t{k.status}\t{expires}\t{k.label}")


@keys_cli.command("show")
@click.argument("key")
@json_option
def show_key(key: str, as_json: bool) -> None:
    """A key's settings (never its secret)."""
    _print_key(for_key(gateway().accounts.get_key, key), as_json)


@keys_cli.command("revoke")
@click.argument("key")
@json_option
def revoke_key(key: str, as_json: bool) -> None:
    """Revoke a key for good: its calls answer 4005 at once (docs/keys.md)."""
    _print_key(for_key(operations.revoke_key, gateway(), CLI, key), as_json)


@keys_cli.command("set")
@click.argument("key")
@click.option("--label", default=None, help="What the key is for.")
@click.option(
    "--models",
    type=Clearable(click.STRING, "all", "PATTERNS"),
    default=None,
    help="Allowed models, fnmatch patterns: gpt-4o*,o1-*; or all.",
)
@click.option(
    "--ips",
    type=Clearable(click.STRING, "any", "CIDRS"),
    default=None,
    help="Allowed caller addresses/CIDRs: 10.0.0.0/8,192.0.2.7; or any.",
)
@click.option("--rpm", type=LIMIT, default=None, help="Calls per minute, or none.")
@click.option("--tpm", type=LIMIT, default=None, help="Tokens per minute, or none.")
@click.option(
    "--expires",
    type=LAST_DAY,
    default=None,
    help="YYYY-MM-DD: the last day it works; or none: never.",
)
@json_option
def set_key(key, as_json, **options) -> None:
    """Change a key's label, models, addresses, limits or expiry (only the options given; all,
    any, none: every model, every address, no limit, no expiry). A revoked key stays as is."""
    changes = edits(
        options,
        {"models": parse_list, "ips": _networks, "expires": lambda day: day.date()},
    )
    result = edited(operations.update_key, gateway(), CLI, key, **changes)
    print_changes(result, as_json, _key_document(result.state))
