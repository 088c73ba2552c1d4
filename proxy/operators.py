"""The console's operators: people who log in to /admin with their own name and password, so
that the audit log names each of them (`admin:NAME`). A password is kept only as werkzeug's
salted scrypt hash; each operator has a session stamp, renewed with the password, that every
console session of theirs must match (a removed operator has none): both end their sessions.

The store is read on every console request (is the console on? is this session's stamp still
the operator's?) through copies kept SETTINGS_CACHE_SECONDS, as account settings are."""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from proxy import storage
from proxy.settings_cache import SettingsCache

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # hashing is costly: a megabyte "password" would cost more
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
_ANY_EXIST = "any"  # the settings-cache key of "is there an operator?"
# A login's password check is scrypt: about 80 ms of CPU and 32 MB of memory. At most this many
# run at once in a process; the others wait their turn, so logins sent from many addresses
# at once cannot take a worker's memory (16 threads would want 512 MB).
HASHES_AT_ONCE = 2
_hashing = threading.BoundedSemaphore(HASHES_AT_ONCE)


@dataclass(frozen=True)
class Operator:
    name: str
    session_stamp: str
    created_at: datetime
    password_changed_at: datetime


def normal_name(typed: str) -> str:
    """The name as stored: trimmed and lower-case (logging in as `Alice` is `alice`)."""
    return typed.strip().lower()[:64]


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name[:64]!r} is not an operator name: use 1 to 32 lower-case letters, digits, "
            "dots, dashes or underscores, starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"the password has {len(password)} characters; use at least {MIN_PASSWORD_LENGTH} "
            "(e.g. four random words)"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


class OperatorStore:
    def __init__(self, engine: Engine, *, settings_cache_seconds: float):
        self._engine = engine
        self._copies = SettingsCache(settings_cache_seconds)
        self._decoy_hash: str | None = None
        self._decoy_lock = threading.Lock()

    def add(self, name: str, password: str) -> Operator:
        """A new operator; ValueError for a bad name or password, or a name already taken."""
        check_name(name)
        now = storage.utc_now()
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(storage.operators).values(
                        name=name,
                        password_hash=generate_password_hash(check_password(password)),
                        session_stamp=secrets.token_hex(16),
                        created_at=now,
                        password_changed_at=now,
                    )
                )
        except IntegrityError:
            raise ValueError(f"there is already an operator named {name!r}") from None
        self._copies.forget()
        return self.get(name)

    def set_password(self, name: str, password: str) -> Operator:
        """A new password and session stamp: the operator's open sessions end. LookupError for
        an unknown name."""
        values = {
            "password_hash": generate_password_hash(check_password(password)),
            "session_stamp": secrets.token_hex(16),
            "password_changed_at": storage.utc_now(),
        }
        self._change(name, update(storage.operators).values(**values))
        return self.get(name)

    def remove(self, name: str) -> None:
        """LookupError for an unknown name."""
        self._change(name, delete(storage.operators))

    def _change(self, name: str, statement) -> None:
        with self._engine.begin() as connection:
            changed = connection.execute(statement.where(storage.operators.c.name == name))
        self._copies.forget()
        if changed.rowcount == 0:
            raise LookupError(f"there is no operator named {name[:64]!r}")

    def get(self, name: str) -> Operator:
        row = self._row(name)
        if row is None:
            raise LookupError(f"there is no operator named {name[:64]!r}")
        return _operator(row)

    def list(self) -> list[Operator]:
        with self._engine.connect() as connection:
            rows = connection.execute(select(storage.operators).order_by(storage.operators.c.name))
            return [_operator(row) for row in rows]

    def any_exist(self) -> bool:
        """Whether there is an operator at all (a copy at most SETTINGS_CACHE_SECONDS old)."""
        return self._copies.get(_ANY_EXIST, self._count_operators) > 0

    def session_stamp(self, name: str) -> str | None:
        """The operator's current session stamp; None once removed (a copy, as any_exist)."""
        return self._copies.get(("stamp", name), lambda: self._stamp_from_database(name))

    def verify(self, typed_name: str, password: str) -> Operator | None:
        """The operator whose name and password these are, else None. An unknown name costs
        the same hash work as a wrong password, so timing does not tell which names exist."""
        row = self._row(normal_name(typed_name))
        stored = self._decoy() if row is None else row.password_hash
        with _hashing:
            matches = check_password_hash(stored, password)
        return _operator(row) if row is not None and matches else None

    def _decoy(self) -> str:
        """A hash of the same method and cost as a real one, of a password nobody knows."""
        with self._decoy_lock:
            if self._decoy_hash is None:
                self._decoy_hash = generate_password_hash(secrets.token_urlsafe(16))
            return self._decoy_hash

    def _row(self, name: str):
        with self._engine.connect() as connection:
            return connection.execute(
                select(storage.operators).where(storage.operators.c.name == name)
            ).first()

    def _count_operators(self) -> int:
        with self._engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(storage.operators)).scalar()

    def _stamp_from_database(self, name: str) -> str | None:
        row = self._row(name)
        return row.session_stamp if row is not None else None


def _operator(row) -> Operator:
    return Operator(row.name, row.session_stamp, row.created_at, row.password_changed_at)
