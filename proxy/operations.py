"""The operator's actions, one function each, shared by the admin commands (proxy/cli.py) and
the console (proxy/doors/admin/): each does the change through the account store, the meter
or the API states, and writes its audit row (proxy/audit.py) naming `who` did it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from proxy import audit, generations
from proxy.account_values import ACTIVE, STOPPED, Account, NewAccount, NewKey
from proxy.api_states import EVERY_ACCOUNT
from proxy.catalog import CATALOG, PLATFORMS
from proxy.keys import ACTIVE as ACTIVE_KEY
from proxy.keys import ApiKey, edit_refusal, parse_networks
from proxy.operators import Operator
from proxy.services import Gateway


def create_account(gateway: Gateway, who: str, name: str, **settings) -> NewAccount:
    """A new account (settings as AccountStore.create takes them); its secret is returned once.
    ValueError naming a number its column cannot hold."""
    _check_counts(settings)
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
    key, ValueError when neither is given or a sum would pass what its column holds (both are
    checked before either is written)."""
    if credits is None and calls is None:
        raise ValueError("say what to add: credits and/or calls")
    account = gateway.accounts.get(key)
    _check_top_up(gateway, account, credits, calls)
    if credits is not None:
        account = gateway.accounts.top_up_credits(key, credits)
    if calls is not None:
        gateway.meter.add_calls_today(account.id, calls)
    audit.record(gateway.engine, who, "account.topup", key, _detail(credits=credits, calls=calls))
    return account


def create_key(gateway: Gateway, who: str, account_key: str, **settings) -> NewKey:
    _check_counts(settings)
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


def reload_upstreams(gateway: Gateway, who: str) -> dict:
    """Check UPSTREAMS_FILE and have every worker on every host read it again (this process at
    once, the others within about a second): {"generation": n, "members": [names]}. ValueError
    with the reason when there is no file or it does not parse; then nothing changes."""
    router = gateway.dispatcher.router
    if not router.file_path:
        raise ValueError(
            "UPSTREAMS_FILE is not set, so there is nothing to reload: the only upstream is "
            "OPENAI_BASE_URL's (set UPSTREAMS_FILE and restart to route models elsewhere)"
        )
    default, members = router.check()  # a bad file stops here: no worker is asked to read it
    generation = generations.bump(gateway.engine, generations.UPSTREAMS)
    router.refresh(at_once=True)
    names = [default.name, *(member.name for member in members)]
    detail = _detail(generation=generation, members=names)
    audit.record(gateway.engine, who, "upstreams.reload", router.file_path, detail)
    return {"generation": generation, "members": names}


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


def _check_counts(settings: dict) -> None:
    """The whole numbers a new account or key is given, each within what its column holds."""
    for field, least in (("daily_quota", 0), ("concurrency_limit", 1), ("rpm", 1), ("tpm", 1)):
        if settings.get(field) is not None:
            _count(least=least, clearable=False)(field, settings[field])
    balance = settings.get("balance")
    if balance is not None and not 0 <= balance <= MOST_CREDITS:
        raise ValueError(f"balance must be a whole number from 0 to {MOST_CREDITS}")


def _check_top_up(gateway: Gateway, account: Account, credits: int | None, calls: int | None):
    if credits is not None:
        if not 1 <= credits <= MOST_CREDITS - (account.balance or 0):
            raise ValueError(
                f"credits must be a whole number from 1 to {MOST_CREDITS - (account.balance or 0)}"
                f" (the balance holds at most {MOST_CREDITS})"
            )
    if calls is not None:
        topped_up = gateway.meter.today_figures(account.id)["extra_calls"]
        if not 1 <= calls <= MOST - topped_up:
            raise ValueError(
                f"calls must be a whole number from 1 to {MOST - topped_up} (today's top-ups "
                f"hold at most {MOST})"
            )


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


# -- editing an account's or a key's settings ---------------------------------------------

MOST = 2**31 - 1  # the largest whole number the integer columns hold on PostgreSQL too
MOST_CREDITS = 2**63 - 1  # the balance column's (BIGINT)

# What each editable field is stored as (AccountStore.update / update_key name them so).
_ACCOUNT_COLUMNS = {
    "name": "name",
    "daily_quota": "daily_quota",
    "concurrency": "concurrency_limit",
    "rpm": "rpm",
    "tpm": "tpm",
    "expires": "expires_on",
    "apis": "apis",
}
_KEY_COLUMNS = {
    "label": "label",
    "models": "models",
    "ips": "ips",
    "rpm": "rpm",
    "tpm": "tpm",
    "expires": "expires_on",
}
# A field set to None has no value: no limit, no expiry, every API, model or address. The word
# is what the commands take for it and what the audit log writes.
NO_VALUE = {
    "concurrency": "none",
    "rpm": "none",
    "tpm": "none",
    "expires": "none",
    "apis": "all",
    "models": "all",
    "ips": "any",
}


@dataclass(frozen=True)
class Edited:
    state: Account | ApiKey  # as it is after the edit
    changed: dict  # field -> new value, of the fields whose value differed; {} for none


def update_account(gateway: Gateway, who: str, key: str, **changes) -> Edited:
    """Set the fields given (see _ACCOUNT_COLUMNS; None clears one: NO_VALUE) of the account
    of `key`: each checked first (ValueError naming it), then one UPDATE of those whose value
    differs and one audit row `account.update` naming them. The balance is not a field: it
    only grows by top-ups (an edit would race with the charges). LookupError for no account."""
    wanted = _checked(changes, _ACCOUNT_CHECKS)
    current = gateway.accounts.get(key)
    changed = _differing(wanted, current, _ACCOUNT_COLUMNS)
    if not changed:
        return Edited(current, {})
    account = gateway.accounts.update(key, **_columns(changed, _ACCOUNT_COLUMNS))
    audit.record(gateway.engine, who, "account.update", key, edit_detail(changed))
    return Edited(account, changed)


def update_key(gateway: Gateway, who: str, key: str, **changes) -> Edited:
    """Set the fields given (see _KEY_COLUMNS; None clears one: NO_VALUE) of the key `key`, as
    update_account does (audit row `key.update`). ValueError for a revoked key, LookupError
    for no key."""
    wanted = _checked(changes, _KEY_CHECKS)
    current = gateway.accounts.get_key(key)
    if current.status != ACTIVE_KEY:
        raise edit_refusal(key, current.status)
    changed = _differing(wanted, current, _KEY_COLUMNS)
    if not changed:
        return Edited(current, {})
    api_key = gateway.accounts.update_key(key, **_columns(changed, _KEY_COLUMNS))
    audit.record(gateway.engine, who, "key.update", key, edit_detail(changed))
    return Edited(api_key, changed)


def api_names(names) -> tuple[str, ...]:
    """The platforms and catalog methods named (sorted, each once); ValueError naming any that
    is neither."""
    chosen = tuple(sorted({name.strip() for name in names if name.strip()}))
    unknown = [name for name in chosen if name not in PLATFORMS and name not in CATALOG]
    if unknown:
        raise ValueError(
            f"{', '.join(unknown)} is neither a platform ({', '.join(sorted(PLATFORMS))}) "
            "nor a catalog method (GET /api/methods)"
        )
    return chosen


def _checked(changes: dict, checks: dict) -> dict:
    """The changes, each value checked and normalized, in the fields' own order."""
    unknown = set(changes) - set(checks)
    if unknown:
        raise TypeError(f"not an editable field: {', '.join(sorted(unknown))}")
    if not changes:
        raise ValueError(f"say what to change: one or more of {', '.join(checks)}")
    return {
        field: check(field, changes[field]) for field, check in checks.items() if field in changes
    }


def _differing(wanted: dict, current, columns: dict) -> dict:
    return {
        field: value for field, value in wanted.items() if getattr(current, columns[field]) != value
    }


def _columns(changed: dict, columns: dict) -> dict:
    return {columns[field]: value for field, value in changed.items()}


def _text(*, required: bool):
    def check(field: str, value):
        text = value.strip() if isinstance(value, str) else None
        if text is None or (required and not text) or len(text) > 200:
            least = "1 to" if required else "at most"
            raise ValueError(f"{field} must be a text of {least} 200 characters")
        return text

    return check


def _count(*, least: int, clearable: bool):
    def check(field: str, value):
        if value is None and clearable:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and least <= value <= MOST:
            return value
        clear = f", or {NO_VALUE[field]} for no limit" if clearable else ""
        raise ValueError(f"{field} must be a whole number from {least} to {MOST}{clear}")

    return check


def _day(field: str, value):
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise ValueError(f"{field} must be a day (YYYY-MM-DD), or none for no expiry")


def _apis(field: str, value):
    if value is None:
        return None
    try:
        chosen = api_names(value)
    except ValueError as refused:
        raise ValueError(f"{field}: {refused}") from None
    if not chosen:
        raise ValueError(f"{field}: name at least one platform or method, or all for every API")
    return chosen


def _models(field: str, value):
    if value is None:
        return None
    patterns = tuple(pattern.strip() for pattern in value if pattern.strip())
    if not patterns:
        raise ValueError(f"{field}: give at least one pattern (gpt-4o*), or all for every model")
    return patterns


def _ips(field: str, value):
    if value is None:
        return None
    try:
        networks = parse_networks(",".join(value))
    except ValueError as refused:
        raise ValueError(f"{field}: {refused}") from None
    if not networks:
        raise ValueError(f"{field}: give at least one address or network, or any for every one")
    return networks


_ACCOUNT_CHECKS = {
    "name": _text(required=True),
    "daily_quota": _count(least=0, clearable=False),
    "concurrency": _count(least=1, clearable=True),
    "rpm": _count(least=1, clearable=True),
    "tpm": _count(least=1, clearable=True),
    "expires": _day,
    "apis": _apis,
}
_KEY_CHECKS = {
    "label": _text(required=False),
    "models": _models,
    "ips": _ips,
    "rpm": _count(least=1, clearable=True),
    "tpm": _count(least=1, clearable=True),
    "expires": _day,
}


def edit_detail(changed: dict) -> str:
    """`daily_quota=500 expires=none models=gpt-4o*,o1-*`: each field changed and its value (a
    text with a space, `=` or nothing at all quoted)."""
    pairs = []
    for field, value in changed.items():
        if value is None:
            shown = NO_VALUE[field]
        elif isinstance(value, tuple):
            shown = ",".join(value)
        elif isinstance(value, date):
            shown = value.isoformat()
        elif isinstance(value, str) and (not value or any(c in value for c in ' ="\t')):
            shown = json.dumps(value, ensure_ascii=False)
        else:
            shown = str(value)
        pairs.append(f"{field}={shown}")
    return " ".join(pairs)
