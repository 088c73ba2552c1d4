"""Accounts and their keys, hashed (and sealed) secrets, authentication by secret or by `sign`.

An account owns many keys (table `api_keys`); the key it was created with is its first key.
A call authenticates with one key: the Account it gets carries that key (`api_key`), whose
allow-lists, expiry and limits the call then obeys.

An account's limits live here as data (quota, balance, concurrency, enabled APIs, expiry);
proxy/metering.py enforces the counted ones atomically. A call reads the account through a
short-lived copy (proxy/settings_cache.py): a change made by the admin commands holds in
their own process at once and in every other within SETTINGS_CACHE_SECONDS.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from proxy import keys as key_rules
from proxy import storage
from proxy.account_values import (
    ACTIVE,
    Account,
    Credentials,
    NewAccount,
    NewKey,
    hash_secret,
    parse_apis,
    secret_matches,
)
from proxy.errors import (
    ACCOUNT_NOT_FOUND,
    ACCOUNT_STOPPED,
    AUTH_FAILED,
    GatewayError,
)
from proxy.keys import ApiKey
from proxy.sealing import SealError, SecretSealer
from proxy.settings_cache import SettingsCache
from proxy.signing import parse_dateline, sign_matches

# Compared against when the key is unknown, so an unknown key and a wrong secret cost the same.
_DECOY_HASH = hash_secret(secrets.token_hex(16))
_DECOY_SECRET = secrets.token_hex(16)


_KEY_COLUMNS = [column.label(f"k_{column.name}") for column in storage.api_keys.c]
# The key's row and its account's, in one read.
_ACCOUNT_BY_KEY = (
    select(storage.accounts, *_KEY_COLUMNS)
    .join(storage.api_keys, storage.api_keys.c.account_id == storage.accounts.c.id)
    .where(storage.api_keys.c.key == bindparam("key"))
)


class AccountStore:
    def __init__(
        self,
        engine: Engine,
        *,
        default_daily_quota: int,
        sealer: SecretSealer,
        sign_window_seconds: int,
        settings_cache_seconds: float = 0.0,
    ):
        self.engine = engine
        self.default_daily_quota = default_daily_quota
        self.sealer = sealer
        self.sign_window_seconds = sign_window_seconds
        # Key -> (row, Account), or None for a key no account has: an unknown key is kept too,
        # so that it costs what a known key costs. Keys are random, so none is created after
        # being tried.
        self._by_key = SettingsCache(settings_cache_seconds)

    # -- administration -------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        daily_quota: int | None = None,
        expires_on: date | None = None,
        balance: int | None = None,
        concurrency_limit: int | None = None,
        apis: tuple[str, ...] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> NewAccount:
        secret = secrets.token_hex(16)
        secret_hash, secret_sealed = hash_secret(secret), self.sealer.seal(secret)
        quota = self.default_daily_quota if daily_quota is None else daily_quota

        def write(connection, key: str) -> None:
            account_id = connection.execute(
                insert(storage.accounts).values(
                    key=key,
                    secret_hash=secret_hash,
                    secret_sealed=secret_sealed,
                    name=name,
                    status=ACTIVE,
                    daily_quota=quota,
                    expires_on=expires_on,
                    balance=balance,
                    concurrency_limit=concurrency_limit,
                    apis=key_rules.join_list(apis),
                    rpm=rpm,
                    tpm=tpm,
                    in_flight=0,
                    created_at=storage.utc_now(),
                )
            ).inserted_primary_key[0]
            connection.execute(
                insert(storage.api_keys).values(
                    account_id=account_id,
                    key=key,
                    secret_hash=secret_hash,
                    secret_sealed=secret_sealed,
                    label="first",
                    status=key_rules.ACTIVE,
                    created_at=storage.utc_now(),
                )
            )

        return NewAccount(self.get(self._with_new_key(write)), secret)

    def list(self) -> list[Account]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(storage.accounts).order_by(storage.accounts.c.id))
            return [_account_from_row(row) for row in rows]

    def account_key_of(self, account_id: int) -> str:
        """The key string the account was created with (its first key)."""
        accounts = storage.accounts
        with self.engine.connect() as connection:
            return connection.execute(
                select(accounts.c.key).where(accounts.c.id == account_id)
            ).scalar_one()

    def get(self, key: str) -> Account:
        """The account of `key`; LookupError when there is none."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(storage.accounts).where(storage.accounts.c.key == key)
            ).first()
        if row is None:
            raise LookupError(f"no account has the key {key!r}")
        return _account_from_row(row)

    def set_status(self, key: str, status: str) -> Account:
        self._update(key, status=status)
        return self.get(key)

    def top_up_credits(self, key: str, credits: int) -> Account:
        """Add prepaid credits (an account that was not prepaid becomes prepaid)."""
        balance = storage.accounts.c.balance
        self._update(key, balance=func.coalesce(balance, 0) + credits)
        return self.get(key)

    def rotate_secret(self, key: str) -> NewAccount:
        """A new secret for the account's first key (the account's own key string)."""
        secret = secrets.token_hex(16)
        sealed = {"secret_hash": hash_secret(secret), "secret_sealed": self.sealer.seal(secret)}
        self._update(key, **sealed)
        with self.engine.begin() as connection:
            keys = storage.api_keys
            connection.execute(update(keys).where(keys.c.key == key).values(**sealed))
        self._by_key.forget(key)
        return NewAccount(self.get(key), secret)

    # -- keys -----------------------------------------------------------------------------

    def create_key(
        self,
        account_key: str,
        *,
        label: str = "",
        models: tuple[str, ...] | None = None,
        ips: tuple[str, ...] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        expires_on: date | None = None,
    ) -> NewKey:
        """Another key of the account of `account_key` (LookupError when there is none); its
        secret is returned once. ValueError for an address or network that is not one."""
        for ip in ips or ():
            key_rules.parse_network(ip)
        account = self.get(account_key)
        secret = secrets.token_hex(16)

        def write(connection, key: str) -> None:
            connection.execute(
                insert(storage.api_keys).values(
                    account_id=account.id,
                    key=key,
                    secret_hash=hash_secret(secret),
                    secret_sealed=self.sealer.seal(secret),
                    label=label,
                    status=key_rules.ACTIVE,
                    expires_on=expires_on,
                    models=key_rules.join_list(models),
                    ips=key_rules.join_list(ips),
                    rpm=rpm,
                    tpm=tpm,
                    created_at=storage.utc_now(),
                )
            )

        return NewKey(self.get_key(self._with_new_key(write)), secret)

    def _with_new_key(self, write: Callable) -> str:
        """A newly drawn key, after `write(connection, key)` stored it in one transaction; a
        collision with an existing key (astronomically rare) draws again."""
        for _attempt in range(3):
            key = secrets.token_hex(12)
            try:
                with self.engine.begin() as connection:
                    write(connection, key)
            except IntegrityError:
                continue
            self._by_key.forget(key)
            return key
        raise RuntimeError("could not draw a unique key")

    def keys_of(self, account_key: str) -> list[ApiKey]:
        """The keys of the account of `account_key`, oldest first; LookupError without one."""
        account = self.get(account_key)
        keys = storage.api_keys
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(keys).where(keys.c.account_id == account.id).order_by(keys.c.id)
            )
            return [_key_from_row(row) for row in rows]

    def get_key(self, key: str) -> ApiKey:
        """The key `key`; LookupError when no account has it."""
        keys = storage.api_keys
        with self.engine.connect() as connection:
            row = connection.execute(select(keys).where(keys.c.key == key)).first()
        if row is None:
            raise LookupError(f"no account has the key {key!r}")
        return _key_from_row(row)

    def revoke_key(self, key: str) -> ApiKey:
        """Revoke `key` for good: refused in this process at once, and at once everywhere else
        too once a call reaches admission (Meter checks the key's row in that transaction)."""
        keys = storage.api_keys
        with self.engine.begin() as connection:
            result = connection.execute(
                update(keys)
                .where(keys.c.key == key)
                .values(status=key_rules.REVOKED, revoked_at=storage.utc_now())
            )
        self._by_key.forget(key)
        if result.rowcount == 0:
            raise LookupError(f"no account has the key {key!r}")
        return self.get_key(key)

    def update(self, key: str, **settings) -> Account:
        """Set `settings` (columns as `create` names them; `apis` a tuple, None for all) of the
        account of `key` in one UPDATE; LookupError when there is none."""
        if "apis" in settings:
            apis = settings["apis"]
            settings["apis"] = ",".join(apis) if apis is not None else None
        self._update(key, **settings)
        return self.get(key)

    def update_key(self, key: str, **settings) -> ApiKey:
        """Set `settings` (as `create_key` names them) of the active key `key` in one UPDATE;
        LookupError when no account has it, ValueError when it is revoked."""
        for name in ("models", "ips"):
            if name in settings:
                settings[name] = key_rules.join_list(settings[name])
        keys = storage.api_keys
        with self.engine.begin() as connection:
            result = connection.execute(
                update(keys)
                .where(keys.c.key == key, keys.c.status == key_rules.ACTIVE)
                .values(**settings)
            )
        self._by_key.forget(key)
        if result.rowcount == 0:
            status = self.get_key(key).status  # LookupError when there is no such key
            raise key_rules.edit_refusal(key, status)
        return self.get_key(key)

    def _update(self, key: str, **values) -> None:
        with self.engine.begin() as connection:
            result = connection.execute(
                update(storage.accounts).where(storage.accounts.c.key == key).values(**values)
            )
        self._by_key.forget()  # this process sees the change at once, through every key
        if result.rowcount == 0:
            raise LookupError(f"no account has the key {key!r}")

    # -- the call ---------------------------------------------------------------------------

    def authenticate(
        self,
        credentials: Credentials,
        *,
        today: date,
        now: float,
        named: Callable[[Account], object] | None = None,
    ) -> Account:
        """The account the credentials prove, or GatewayError 4004 / 4005 / 4007.

        `today` is the quota day (expiry is checked against it), `now` unix time (the sign's
        dateline window). `named` is told the account the key names before anything else is
        checked (an unknown key's 4004 names none): a refusal after that is on its usage."""
        found = self._by_key.get(credentials.key, lambda: self._read(credentials.key))
        if found is None:
            self._spend_decoy_time(credentials)
            raise GatewayError(ACCOUNT_NOT_FOUND, "no account has this key; check `key`")
        row, account = found
        if named is not None:
            named(account)
        if credentials.secret:
            if not secret_matches(credentials.secret, row.k_secret_hash):
                raise GatewayError(
                    AUTH_FAILED, "the secret does not match this key; check `secret`"
                )
        else:
            self._check_signature(row, credentials, now)
        if account.status != ACTIVE:
            raise GatewayError(ACCOUNT_STOPPED, "this account is stopped; contact the operator")
        if account.expires_on is not None and today > account.expires_on:
            raise GatewayError(
                AUTH_FAILED,
                f"this account expired on {account.expires_on.isoformat()}; "
                "ask the operator to renew it",
            )
        account.api_key.check_usable(today)
        return account

    def _read(self, key: str):
        """(row, Account) of `key` from the database, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(_ACCOUNT_BY_KEY, {"key": key}).first()
        if row is None:
            return None
        api_key = _key_from_row(row, prefix="k_")
        return row, _account_from_row(row, api_key)

    def _spend_decoy_time(self, credentials: Credentials) -> None:
        if credentials.secret:
            secret_matches(credentials.secret, _DECOY_HASH)
        else:
            sign_matches(_DECOY_SECRET, credentials.signed_params or {}, credentials.sign)

    def _check_signature(self, row, credentials: Credentials, now: float) -> None:
        if not row.k_secret_sealed:
            raise GatewayError(
                AUTH_FAILED,
                "this account cannot use `sign` until its secret is rotated "
                "(flask accounts rotate-secret KEY); send `secret` meanwhile",
            )
        try:
            secret = self.sealer.unseal(row.k_secret_sealed)
        except SealError:
            raise GatewayError(
                AUTH_FAILED,
                "the gateway cannot verify `sign` for this account (its sealing key changed); "
                "send `secret`, or ask the operator to rotate the secret",
            ) from None
        if not sign_matches(secret, credentials.signed_params or {}, credentials.sign):
            raise GatewayError(
                AUTH_FAILED,
                "`sign` does not match: it must be the upper-case MD5 of secret + the "
                "parameters sorted by name as name+value + secret (see docs/signing.md)",
            )
        dateline = (credentials.signed_params or {}).get("dateline")
        parse_dateline(dateline, now=now, window_seconds=self.sign_window_seconds)
        self._remember_signature(row.id, credentials.sign.upper(), now)

    def _remember_signature(self, account_id: int, sign: str, now: float) -> None:
        """A sign is accepted once: the unique key refuses a replay, on every worker and host."""
        now_utc = datetime.fromtimestamp(now, UTC).replace(tzinfo=None)
        keep_until = now_utc + timedelta(seconds=2 * self.sign_window_seconds + 1)
        table = storage.used_signatures
        try:
            with self.engine.begin() as connection:
                connection.execute(delete(table).where(table.c.expires_at < now_utc))
                connection.execute(
                    insert(table).values(account_id=account_id, sign=sign, expires_at=keep_until)
                )
        except IntegrityError:
            raise GatewayError(
                AUTH_FAILED,
                "this `sign` was already used; sign every request anew "
                "(a new `dateline`, or add a `nonce` parameter)",
            ) from None


def _key_from_row(row, prefix: str = "") -> ApiKey:
    def value(name: str):
        return getattr(row, prefix + name)

    return ApiKey(
        id=value("id"),
        key=value("key"),
        account_id=value("account_id"),
        label=value("label"),
        status=value("status"),
        expires_on=value("expires_on"),
        models=key_rules.parse_list(value("models")),
        ips=key_rules.parse_list(value("ips")),
        rpm=value("rpm"),
        tpm=value("tpm"),
        created_at=value("created_at"),
        revoked_at=value("revoked_at"),
    )


def _account_from_row(row, api_key: ApiKey | None = None) -> Account:
    return Account(
        id=row.id,
        key=row.key,
        name=row.name,
        status=row.status,
        daily_quota=row.daily_quota,
        expires_on=row.expires_on,
        balance=row.balance,
        concurrency_limit=row.concurrency_limit,
        apis=parse_apis(row.apis),
        api_key=api_key,
        rpm=row.rpm,
        tpm=row.tpm,
    )
