"""Admin commands that read and report: `flask usage`, `flask chats ...`, `flask upstreams ...`
(and its reload), `flask audit`. Every command takes `--json` and then prints exactly one JSON
document, for scripts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from proxy import audit, operations
from proxy.cli import CLI, account_of, gateway, json_option
from proxy.failover import describe_members
from proxy.usage import usage_report


@click.command("usage")
@click.argument("key", required=False)
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    default=None,
    help="From this day's midnight in SERVER_TIMEZONE (default: all time).",
)
@click.option("--method", default=None, help="Only this method's calls (v1/chat/completions).")
@json_option
@with_appcontext
def usage(key: str | None, since: datetime | None, method: str | None, as_json: bool) -> None:
    """Calls, charges, cache hits, calls per code and tokens, for one key or all."""
    account_id = account_of(key).id if key else None
    since_utc = _local_midnight_utc(since.date()) if since else None
    report = usage_report(
        gateway().engine, account_id=account_id, since_utc=since_utc, method=method
    )
    since_day = since.date().isoformat() if since else None
    report = {"key": key, "since": since_day, "method": method, **report}
    if as_json:
        click.echo(json.dumps(report))
        return
    for name, value in report.items():
        click.echo(f"{name + ':':11} {value if value is not None else '-'}")


def _local_midnight_utc(day: date) -> datetime:
    zone = ZoneInfo(current_app.config["SERVER_TIMEZONE"])
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


chats_cli = AppGroup("chats", help="List, show and delete remembered conversations (chat_id).")


@chats_cli.command("list")
@click.option("--account", "key", default=None, help="Only this key's conversations.")
@json_option
@with_appcontext
def list_chats(key: str | None, as_json: bool) -> None:
    """Conversations: account, chat_id, custom_uid, messages, last message time."""
    chats = gateway().chats.list(account_of(key).id if key else None)
    if as_json:
        click.echo(json.dumps({"chats": chats}))
        return
    for chat in chats:
        click.echo(
            f"{chat['account_id']:>6}  {chat['chat_id']:<40} {chat['messages']:>5} messages  "
            f"{chat['last_at']}  {chat['custom_uid'] or '-'}"
        )


@chats_cli.command("show")
@click.argument("key")
@click.argument("chat_id")
@json_option
@with_appcontext
def show_chat(key: str, chat_id: str, as_json: bool) -> None:
    """The stored messages of one conversation, oldest first."""
    messages = gateway().chats.messages(account_of(key).id, chat_id)
    if as_json:
        click.echo(json.dumps({"chat_id": chat_id, "messages": messages}, ensure_ascii=False))
        return
    for message in messages:
        click.echo(f"{message['at']}  {message['role']:>9}: {message['content']}")


@chats_cli.command("delete")
@click.argument("key")
@click.argument("chat_id")
@json_option
@with_appcontext
def delete_chat(key: str, chat_id: str, as_json: bool) -> None:
    """Forget one conversation."""
    deleted = gateway().chats.delete(account_of(key).id, chat_id)
    if as_json:
        click.echo(json.dumps({"chat_id": chat_id, "deleted_messages": deleted}))
    else:
        click.echo(f"deleted {deleted} messages of {chat_id}")


upstreams_cli = AppGroup("upstreams", help="List the upstream members, or reload UPSTREAMS_FILE.")


@upstreams_cli.command("list")
@json_option
@with_appcontext
def list_upstreams(as_json: bool) -> None:
    """Members, weights, priorities and health (never keys). Health is shared only with
    REDIS_URL; without it each worker keeps its own (see each worker's /health)."""
    failover = gateway().dispatcher.failover
    shared = current_app.config["REDIS_URL"]
    members = describe_members(failover.router, failover.health if shared else None)
    if as_json:
        click.echo(json.dumps({"members": members}))
        return
    for member in members:
        click.echo(
            f"{member['name']:20} priority {member['priority']:<3} weight {member['weight']:<5g} "
            f"{member['state']:10} {member['base_url']} {', '.join(member['models'])}"
        )


@upstreams_cli.command("reload")
@json_option
@with_appcontext
def reload_upstreams(as_json: bool) -> None:
    """Check UPSTREAMS_FILE and have every worker on every host read it again (within about
    a second); a bad file is refused with the reason, and the workers keep the old one."""
    try:
        document = operations.reload_upstreams(gateway(), CLI)
    except ValueError as refused:
        raise click.ClickException(
            f"refused, the workers keep the upstreams they have: {refused}"
        ) from None
    if as_json:
        click.echo(json.dumps(document))
        return
    click.echo(f"reload {document['generation']} asked: members {', '.join(document['members'])}")


@click.command("audit")
@click.option("--limit", type=click.IntRange(min=1), default=50, help="How many rows.")
@json_option
@with_appcontext
def show_audit(limit: int, as_json: bool) -> None:
    """The newest operator actions (console and commands): when, who, what, on what."""
    rows = audit.recent(gateway().engine, limit)
    if as_json:
        click.echo(json.dumps({"audit": rows}))
        return
    who_width = max((len(row["who"]) for row in rows), default=0)  # admin:NAME is longer
    for row in rows:
        what = f"{row['who']:{who_width}} {row['action']:22} {row['target']}"
        click.echo(f"{row['at']}  {what}  {row['detail']}")
