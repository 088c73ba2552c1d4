"""Accounts: keys, hashed secrets, constant-time authentication."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from proxy import storage
from proxy.errors import ACCOUNT_NOT_FOUND, ACCOUNT_STOPPED, AUTH_FAILED, GatewayError

# Secrets are 128 random bits, so a salted SHA-256 is as strong as a slow hash here and keeps
# each API call fast; the salt stops equal secrets from sharing a hash.
_HASH_SCHEME = "sha256"


def hash_secret(secret: str, salt: str | None = None) -> str:
    salt = salt if salt is not None else secrets.token_hex(8)
    digest = hashlib.sha256((salt + secret).encode("utf-8")).hexdigest()
    return f"{_HASH_SCHEME}${salt}${digest}"


def secret_matches(secret: str, stored_hash: str) -> bool:
    _scheme, salt, _digest = stored_hash.split("$", 2)
    return hmac.compare_digest(hash_secret(secret, salt), stored_hash)


# Compared against when the key is unknown, so an unknown key and a wrong secret cost the same.
_DECOY_HASH = hash_secret(secrets.token_hex(16))


@dataclass(frozen=True)
class Account:
    id: int
    key: str
    name: str
    status: str
    daily_quota: int
    expires_on: date | None


@dataclass(frozen=True)
class NewAccount:
    account: Account
    secret: str  # shown once, never stored


class AccountStore:
    def __init__(self, engine: Engine, default_daily_quota: int):
        self.engine = engine
        self.default_daily_quota = default_daily_quota

    def create(
        self, name: str, *, daily_quota: int | None = None, expires_on: date | None = None
    ) -> NewAccount:
        secret = secrets.token_hex(16)
        quota = self.default_daily_quota if daily_quota is None else daily_quota
        for _attempt in range(3):
            key = secrets.token_hex(12)
            try:
                with self.engine.begin() as connection:
                    account_id = connection.execute(
                        insert(storage.accounts).values(
                            key=key,
                            secret_hash=hash_secret(secret),
                            name=name,
                            status="active",
                            daily_quota=quota,
                            expires_on=expires_on,
                            created_at=datetime.now(UTC).replace(tzinfo=None),
                        )
                    ).inserted_primary_key[0]
            except IntegrityError:  # key collision: astronomically rare, draw again
                continue
            account = Account(account_id, key, name, "active", quota, expires_on)
            return NewAccount(account, secret)
        raise RuntimeError("could not draw a unique account key")

    def list(self) -> list[Account]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(storage.accounts).order_by(storage.accounts.c.id))
            return [_account_from_row(row) for row in rows]

    def authenticate(self, key: str, secret: str) -> Account:
        """The account for key+secret, or GatewayError 4004 / 4005 / 4007."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(storage.accounts).where(storage.accounts.c.key == key)
            ).first()
        if row is None:
            secret_matches(secret, _DECOY_HASH)
            raise GatewayError(ACCOUNT_NOT_FOUND, "no account has this key; check `key`")
        if not secret_matches(secret, row.secret_hash):
            raise GatewayError(AUTH_FAILED, "the secret does not match this key; check `secret`")
        account = _account_from_row(row)
        if account.status != "active":
            raise GatewayError(ACCOUNT_STOPPED, "this account is stopped; contact the operator")
        return account


def _account_from_row(row) -> Account:
    return Account(row.id, row.key, row.name, row.status, row.daily_quota, row.expires_on)
