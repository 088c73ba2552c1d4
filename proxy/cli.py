"""Admin command line: `flask accounts ...`, `flask apis ...`, `flask init-db`; `flask keys ...`
in proxy/cli_keys.py, `flask operators ...` in proxy/cli_operators.py, `flask usage`,
`flask chats ...`, `flask upstreams ...` and `flask audit` in proxy/cli_reports.py.

Every command takes `--json` and then prints exactly one JSON document, for scripts.
"""

from __future__ import annotations

import json
from functools import partial

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from proxy import operations, storage
from proxy.account_values import Account
from proxy.api_states import ALL_APIS, EVERY_ACCOUNT, MAINTENANCE
from proxy.api_states import STOPPED as API_STOPPED_STATE
from proxy.catalog import CATALOG, PLATFORMS

accounts_cli = AppGroup("accounts", help="Create, show, change, stop, start and top up accounts.")
apis_cli = AppGroup("apis", help="Stop, start or put APIs in maintenance.")

CLI = "cli"  # who the audit log names for the admin commands (the console is "admin")

WHOLE = click.IntRange(min=1, max=operations.MOST)  # a limit, as its column holds it

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document for scripts."
)


def gateway():
    return current_app.extensions["gateway"]


def _api_names(value: str | None) -> tuple[str, ...] | None:
    """`openai,v1/embeddings` -> the platforms and methods named, each checked."""
    if value is None:
        return None
    try:
        return operations.api_names(value.split(","))
    except ValueError as refused:
        raise click.BadParameter(str(refused), param_hint="--apis") from None


def for_key(action, *args):
    """`action(*args)` of the account store; an unknown key, or a value it refuses, is a
    command error."""
    try:
        return action(*args)
    except (LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


def account_of(key: str) -> Account:
    return for_key(gateway().accounts.get, key)


def _account_document(account: Account) -> dict:
    return {
        "id": account.id,
        "key": account.key,
        "name": account.name,
        "status": account.status,
        "daily_quota": account.daily_quota,
        "balance": account.balance,
        "concurrency": account.concurrency_limit,
        "apis": list(account.apis) if account.apis is not None else None,
        "expires": account.expires_on.isoformat() if account.expires_on else None,
        "rpm": account.rpm,
        "tpm": account.tpm,
        "today": gateway().meter.today_figures(account.id),
    }


def _print_account(account: Account, as_json: bool, secret: str | None = None) -> None:
    document = _account_document(account)
    if secret is not None:  # key and secret first: what the operator hands to the client
        document = {"key": account.key, "secret": secret, **document}
    if as_json:
        click.echo(json.dumps(document, ensure_ascii=False))
        return
    for name, value in document.items():
        click.echo(f"{name + ':':13} {value if value is not None else '-'}")
    if secret is not None:
        click.echo("The secret is shown only now; store it safely.")


@accounts_cli.command("create")
@click.argument("name")
@click.option(
    "--daily-quota",
    type=click.IntRange(min=0, max=operations.MOST),
    default=None,
    help="Charged calls per day (default: DEFAULT_DAILY_QUOTA).",
)
@click.option(
    "--balance",
    type=click.IntRange(min=0, max=operations.MOST_CREDITS),
    default=None,
    help="Prepaid credits (default: not prepaid, only the quota applies).",
)
@click.option("--concurrency", type=WHOLE, default=None, help="Calls in flight at once.")
@click.option("--apis", default=None, help="Enabled platforms/methods, e.g. openai (default all).")
@click.option(
    "--expires", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, help="YYYY-MM-DD."
)
@click.option("--rpm", type=WHOLE, default=None, help="Calls per minute.")
@click.option("--tpm", type=WHOLE, default=None, help="Tokens per minute.")
@json_option
def create_account(
    name, daily_quota, balance, concurrency, apis, expires, rpm, tpm, as_json
) -> None:
    """Create an account; its secret is printed once and never stored in clear."""
    created = operations.create_account(
        gateway(),
        CLI,
        name,
        daily_quota=daily_quota,
        balance=balance,
        concurrency_limit=concurrency,
        apis=_api_names(apis),
        expires_on=expires.date() if expires else None,
        rpm=rpm,
        tpm=tpm,
    )
    _print_account(created.account, as_json, secret=created.secret)


@accounts_cli.command("list")
@json_option
def list_accounts(as_json: bool) -> None:
    """List accounts (keys, never secrets)."""
    rows = gateway().accounts.list()
    if as_json:
        click.echo(json.dumps([_account_document(a) for a in rows], ensure_ascii=False))
        return
    for a in rows:
        balance = "-" if a.balance is None else a.balance
        click.echo(f"{a.id}\t{a.key}\t{a.status}\t{a.daily_quota}\t{balance}\t{a.name}")


@accounts_cli.command("show")
@click.argument("key")
@json_option
def show_account(key: str, as_json: bool) -> None:
    """An account's settings and today's figures."""
    _print_account(account_of(key), as_json)


@accounts_cli.command("stop")
@click.argument("key")
@json_option
def stop_account(key: str, as_json: bool) -> None:
    """Stop an account: its calls answer 4007 until it is started."""
    _print_account(for_key(operations.stop_account, gateway(), CLI, key), as_json)


@accounts_cli.command("start")
@click.argument("key")
@json_option
def start_account(key: str, as_json: bool) -> None:
    """Start a stopped account."""
    _print_account(for_key(operations.start_account, gateway(), CLI, key), as_json)


@accounts_cli.command("topup")
@click.argument("key")
@click.option(
    "--credits",
    type=click.IntRange(min=1, max=operations.MOST_CREDITS),
    default=None,
    help="Add prepaid credits.",
)
@click.option("--calls", type=WHOLE, default=None, help="Add calls to today's quota.")
@json_option
def top_up(key: str, credits: int | None, calls: int | None, as_json: bool) -> None:
    """Top up: --credits to the balance, --calls to today's quota (both may be given)."""
    if credits is None and calls is None:
        raise click.UsageError("say what to add: --credits N and/or --calls N")
    account = for_key(
        lambda k: operations.top_up(gateway(), CLI, k, credits=credits, calls=calls), key
    )
    _print_account(account, as_json)


@accounts_cli.command("rotate-secret")
@click.argument("key")
@json_option
def rotate_secret(key: str, as_json: bool) -> None:
    """Draw a new secret (printed once); the old one stops working at once."""
    renewed = for_key(operations.rotate_secret, gateway(), CLI, key)
    _print_account(renewed.account, as_json, secret=renewed.secret)


CLEARED = object()  # what an option of an edit gives for "no value" (operations.NO_VALUE)


class Clearable(click.ParamType):
    """A value of `inner` (shown as `metavar`, described as `what` in an error), or `word`
    (none, all, any) for no value: CLEARED."""

    def __init__(self, inner: click.ParamType, word: str, metavar: str, what: str = ""):
        self.inner, self.word, self.what = inner, word, what or metavar
        self.name = f"{metavar}|{word}"

    def get_metavar(self, param, ctx) -> str:
        return self.name

    def convert(self, value, param, ctx):
        if value is CLEARED or (isinstance(value, str) and value.strip().lower() == self.word):
            return CLEARED
        try:
            return self.inner.convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r}: give {self.what}, or {self.word}", param, ctx)


def edits(options: dict, convert: dict | None = None) -> dict:
    """The options given (not None), CLEARED as None, others through `convert` by name."""
    convert = convert or {}
    return {
        name: None if value is CLEARED else convert.get(name, lambda v: v)(value)
        for name, value in options.items()
        if value is not None
    }


def edited(action, *args, **changes):
    """`action(*args, **changes)` of proxy/operations.py: nothing to change is a usage error,
    an unknown key or a refused value a command error."""
    if not changes:
        raise click.UsageError("say what to change: give at least one option (see --help)")
    return for_key(partial(action, **changes), *args)


def print_changes(result, as_json: bool, document: dict) -> None:
    """What an edit changed, then the new state (one JSON document with --json)."""
    if as_json:
        click.echo(json.dumps({**document, "changed": list(result.changed)}, ensure_ascii=False))
        return
    if result.changed:
        click.echo(f"changed: {operations.edit_detail(result.changed)}")
    else:
        click.echo("nothing changed: the values given are the ones it has")
    for name, value in document.items():
        shown = ",".join(value) if isinstance(value, list) else value
        click.echo(f"{name + ':':13} {shown if shown is not None else '-'}")


DAY = click.DateTime(formats=["%Y-%m-%d"])
LIMIT = Clearable(WHOLE, "none", "N", f"a whole number from 1 to {operations.MOST}")
LAST_DAY = Clearable(DAY, "none", "YYYY-MM-DD", "a day as YYYY-MM-DD")


@accounts_cli.command("set")
@click.argument("key")
@click.option("--name", default=None, help="The account's name.")
@click.option(
    "--daily-quota",
    type=click.IntRange(min=0, max=operations.MOST),
    default=None,
    metavar="N",
    help="Charged calls per day (0: none).",
)
@click.option("--concurrency", type=LIMIT, default=None, help="Calls in flight, or none.")
@click.option("--rpm", type=LIMIT, default=None, help="Calls per minute, or none.")
@click.option("--tpm", type=LIMIT, default=None, help="Tokens per minute, or none.")
@click.option("--expires", type=LAST_DAY, default=None, help="YYYY-MM-DD, or none: never.")
@click.option(
    "--apis",
    type=Clearable(click.STRING, "all", "LIST"),
    default=None,
    help="Enabled platforms/methods, e.g. openai,v1/embeddings, or all.",
)
@json_option
def set_account(key, as_json, **options) -> None:
    """Change an account's name, quota, limits, expiry or APIs (only the options given; none,
    all: no limit, no expiry, every API). The balance changes by `topup` only."""
    changes = edits(options, {"expires": lambda day: day.date(), "apis": _api_names})
    result = edited(operations.update_account, gateway(), CLI, key, **changes)
    print_changes(result, as_json, _account_document(result.state))


def _api_state_command(state: str | None):
    def command(target: str, account_key: str | None, as_json: bool) -> None:
        if target != ALL_APIS and target not in PLATFORMS and target not in CATALOG:
            raise click.BadParameter(
                f"{target!r} is not a catalog method, a platform or `{ALL_APIS}`",
                param_hint="METHOD_OR_PLATFORM",
            )
        for_key(lambda k: operations.set_api_state(gateway(), CLI, target, state, k), account_key)
        document = {"target": target, "account": account_key, "state": state or "running"}
        if as_json:
            click.echo(json.dumps(document))
        else:
            whom = f"account {account_key}" if account_key else "all accounts"
            click.echo(f"{target}: {document['state']} for {whom}")

    return command


for _name, _state, _help in (
    ("stop", API_STOPPED_STATE, "Stop a method or platform (`all`: every API): calls get 4006."),
    ("start", None, "Put a stopped or maintained method or platform back in service."),
    ("maintenance", MAINTENANCE, "Put a method or platform in maintenance: calls get 4009."),
):
    apis_cli.command(_name, help=_help)(
        click.argument("target", metavar="METHOD_OR_PLATFORM")(
            click.option("--account", "account_key", default=None, help="Only this key.")(
                json_option(_api_state_command(_state))
            )
        )
    )


@apis_cli.command("list")
@json_option
def list_api_states(as_json: bool) -> None:
    """Stopped and maintained APIs."""
    states = gateway().api_states.list()
    if as_json:
        click.echo(json.dumps(states))
        return
    for s in states:
        whom = "all accounts" if s["account_id"] == EVERY_ACCOUNT else f"account {s['account_id']}"
        click.echo(f"{s['target']}\t{s['state']}\t{whom}")


@click.command("init-db")
@with_appcontext
def init_db() -> None:
    """Create the database tables if they are missing."""
    storage.ensure_schema(gateway().engine)
    click.echo("database ready")


def init_app(app: Flask) -> None:
    from proxy import cli_keys, cli_operators, cli_reports  # they use this module's helpers

    app.cli.add_command(accounts_cli)
    app.cli.add_command(apis_cli)
    app.cli.add_command(cli_keys.keys_cli)
    app.cli.add_command(cli_operators.operators_cli)
    app.cli.add_command(cli_reports.usage)
    app.cli.add_command(cli_reports.chats_cli)
    app.cli.add_command(cli_reports.upstreams_cli)
    app.cli.add_command(cli_reports.show_audit)
    app.cli.add_command(init_db)
