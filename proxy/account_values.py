"""An account and its keys as values: the Account a call is checked against, what creating an
account or a key hands back once (its secret), the Credentials a caller proves itself with,
and how secrets are hashed. Pure: no database (proxy/accounts.py stores them)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date

from proxy.keys import ApiKey

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


ACTIVE, STOPPED = "active", "stopped"


@dataclass(frozen=True)
class Account:
    id: int
    key: str
    name: str
    status: str
    daily_quota: int
    expires_on: date | None
    balance: int | None = None  # prepaid credits; None: not prepaid
    concurrency_limit: int | None = None  # None: no limit
    apis: tuple[str, ...] | None = None  # enabled platforms/methods; None: all
    api_key: ApiKey | None = None  # the key a call authenticated with; None outside a call
    rpm: int | None = None  # calls per minute of all its keys together; None: no limit
    tpm: int | None = None  # tokens per minute of all its keys together; None: no limit

    def may_call(self, method: str, platform: str) -> bool:
        return self.apis is None or method in self.apis or platform in self.apis


@dataclass(frozen=True)
class NewAccount:
    account: Account
    secret: str  # shown once, never stored in clear


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    secret: str  # shown once, never stored in clear


@dataclass(frozen=True)
class Credentials:
    """What the caller proved itself with: `secret`, or `sign` over `signed_params`."""

    key: str
    secret: str = ""
    sign: str = ""
    signed_params: dict | None = None


def parse_apis(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(sorted({part.strip() for part in text.split(",") if part.strip()}))
