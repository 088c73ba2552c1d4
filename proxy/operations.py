"""The operator's actions, one function each, shared by the admin commands (proxy/cli.py) and
the console (proxy/doors/admin.py): each does the change through the account store, the meter
or the API states, and writes its audit row (proxy/audit.py) naming `who` did it."""

from __future__ import annotations

from datetime import date

from proxy import audit
from proxy.accounts import ACTIVE, STOPPED, Account, NewAccount, NewKey
from proxy.api_states import EVERY_ACCOUNT
from proxy.keys import ApiKey
from proxy.operators import Operator
from proxy.services import Gateway


def create_account(gateway: Gateway, who: str, name: str, **settings) -> NewAccount:
    """A new account (settings as AccountStore.create takes them); its secret is returned once."""
    created = gateway.accounts.create(name, **settings)
    shown = {name: value for name, value in settings.items() if value is not None}
    audit.record(gateway.engine, who, "account.create", created.account.key, _detail(shown))
    return created


def stop_account(gateway: Gateway, who: str, key: str) -> Account:
    account = gateway.accounts.set_status(key, STOPPED)
    audit.record(gateway.engine, who, "account.stop", key)
    return account


def start_account(gateway: Gateway, who: str, key: str) -> Account:
    account = gateway.accounts.set_status(key, ACTIVE)
    audit.record(gateway.engine, who, "account.start", key)
    return account


def rotate_secret(gateway: Gateway, who: str, key: str) -> NewAccount:
    """A new secret for the account's first key, returned once; the old one stops at once."""
    renewed = gateway.accounts.rotate_secret(key)
    audit.record(gateway.engine, who, "account.rotate-secret", key)
    return renewed


def top_up(gateway: Gateway, who: str, key: str, *, credits: int | None, calls: int | None):
    """Add `credits` to the balance and/or `calls` to today's quota; LookupError for an unknown
    key, ValueError when neither is given."""
    if credits is None and calls is None:
        raise ValueError("say what to add: credits and/or calls")
    account = gateway.accounts.get(key)
    if credits is not None:
        account = gateway.accounts.top_up_credits(key, credits)
    if calls is not None:
        gateway.meter.add_calls_today(account.id, calls)
    audit.record(gateway.engine, who, "account.topup", key, _detail(credits=credits, calls=calls))
    return account


def create_key(gateway: Gateway, who: str, account_key: str, **settings) -> NewKey:
    created = gateway.accounts.create_key(account_key, **settings)
    shown = {name: value for name, value in settings.items() if value not in (None, "")}
    detail = _detail(account=account_key, **shown)
    audit.record(gateway.engine, who, "key.create", created.api_key.key, detail)
    return created


def revoke_key(gateway: Gateway, who: str, key: str) -> ApiKey:
    api_key = gateway.accounts.revoke_key(key)
    audit.record(gateway.engine, who, "key.revoke", key)
    return api_key


def set_api_state(
    gateway: Gateway, who: str, target: str, state: str | None, account_key: str | None = None
) -> None:
    """Stop (`stopped`), maintain (`maintenance`) or start (None) a method, platform or `all`,
    for every account or for `account_key`'s."""
    account_id = gateway.accounts.get(account_key).id if account_key else EVERY_ACCOUNT
    if state is None:
        gateway.api_states.clear(target, account_id)
    else:
        gateway.api_states.set(target, state, account_id)
    audit.record(
        gateway.engine,
        who,
        f"api.{_API_ACTIONS.get(state, state)}",
        target,
        _detail(account=account_key),
    )


_API_ACTIONS = {None: "start", "stopped": "stop"}


def add_operator(gateway: Gateway, who: str, name: str, password: str) -> Operator:
    """A new console operator (proxy/operators.py); the audit row never holds the password."""
    operator = gateway.operators.add(name, password)
    audit.record(gateway.engine, who, "operator.add", name)
    return operator


def set_operator_password(gateway: Gateway, who: str, name: str, password: str) -> Operator:
    """A new password for the operator; their open console sessions end."""
    operator = gateway.operators.set_password(name, password)
    audit.record(gateway.engine, who, "operator.passwd", name, "sessions ended")
    return operator


def remove_operator(gateway: Gateway, who: str, name: str) -> None:
    """The operator can no longer log in; their open console sessions end."""
    gateway.operators.remove(name)
    audit.record(gateway.engine, who, "operator.remove", name, "sessions ended")


def _detail(values: dict | None = None, **more) -> str:
    """`name=value` pairs of the values given (lists joined by commas, dates as ISO days)."""
    pairs = []
    for name, value in {**(values or {}), **more}.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(value)
        elif isinstance(value, date):
            value = value.isoformat()
        pairs.append(f"{name}={value}")
    return " ".join(pairs)
