"""An account's keys as data: each key's allow-lists (models by fnmatch pattern, caller
addresses by IP or CIDR), expiry and limits, and the checks a call makes against them.

Pure: no Flask, no database. proxy/accounts.py stores and authenticates keys; proxy/calls.py
checks a call's model and address with `check_model` and `check_address`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatchcase

from proxy.errors import API_NOT_ADDED, AUTH_FAILED, GatewayError

ACTIVE, REVOKED = "active", "revoked"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class ApiKey:
    id: int
    key: str
    account_id: int
    label: str
    status: str
    expires_on: date | None = None  # the last quota day it works; None: never expires
    models: tuple[str, ...] | None = None  # fnmatch patterns; None: every model
    ips: tuple[str, ...] | None = None  # addresses and networks as given; None: every address
    rpm: int | None = None  # calls per minute of this key; None: no limit of its own
    tpm: int | None = None  # tokens per minute of this key; None: no limit of its own
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def __post_init__(self) -> None:
        networks = None if self.ips is None else tuple(parse_network(ip) for ip in self.ips)
        object.__setattr__(self, "_networks", networks)

    def check_usable(self, today: date) -> None:
        """4005 when the key is revoked or past its expiry day."""
        if self.status != ACTIVE:
            raise revoked_key_refusal()
        if self.expires_on is not None and today > self.expires_on:
            raise GatewayError(
                AUTH_FAILED,
                f"this key expired on {self.expires_on.isoformat()}; use another key of the "
                "account or ask the operator for a new one",
            )

    def check_model(self, model: object) -> None:
        """4012 naming the model when the key's model allow-list does not match it."""
        if self.models is None or model is None:
            return
        if not any(fnmatchcase(str(model), pattern) for pattern in self.models):
            raise GatewayError(
                API_NOT_ADDED,
                f"the model {str(model)[:200]!r} is not enabled for this key; ask the operator "
                "to add it to the key's models",
            )

    def check_address(self, client_ip: str) -> None:
        """4005 saying which address was seen when the key's address allow-list refuses it
        (never which addresses are allowed)."""
        networks = self._networks  # type: ignore[attr-defined]
        if networks is None:
            return
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            address = None
        if address is None or not any(address in network for network in networks):
            raise GatewayError(
                AUTH_FAILED,
                f"this key does not accept calls from the address {client_ip[:64] or '(none)'}",
            )


def revoked_key_refusal() -> GatewayError:
    """4005 for a revoked key, whichever check finds it (authentication, or the admission's
    write in proxy/metering.py)."""
    return GatewayError(AUTH_FAILED, "this key was revoked; use another key of the account")


def edit_refusal(key: str, status: str) -> ValueError:
    """A revoked key stays as it was when revoked (there is no un-revoke to edit it for)."""
    return ValueError(f"the key {key} is {status}: it cannot be edited; create a new key")


def parse_network(text: str) -> Network:
    """`10.0.0.0/8`, `2001:db8::/32` or one address (a /32 or /128); ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_list(text: str | None) -> tuple[str, ...] | None:
    """`a, b,,c` -> ("a", "b", "c"); None stays None (no list: no restriction)."""
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_networks(text: str | None) -> tuple[str, ...] | None:
    """`10.0.0.0/8,192.0.2.7` -> each checked as an address or a CIDR network; ValueError
    naming the first that is neither. None stays None (no list: any address)."""
    items = parse_list(text)
    for item in items or ():
        try:
            parse_network(item)
        except ValueError:
            raise ValueError(
                f"{item!r} is neither an IP address nor a CIDR network (e.g. 10.0.0.0/8)"
            ) from None
    return items


def join_list(items: tuple[str, ...] | None) -> str | None:
    return None if items is None else ",".join(items)
