"""Database tables (SQLAlchemy Core) and the engine: a SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError

metadata = MetaData()

LIFETIME_COUNTERS = ("upstream_calls", "cache_hits", "uncharged")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("secret_hash", String(160), nullable=False),
    Column("name", String(200), nullable=False),
    Column("status", String(16), nullable=False, default="active"),
    Column("daily_quota", Integer, nullable=False),
    Column("expires_on", Date, nullable=True),
    Column("created_at", DateTime, nullable=False),
    # The secret sealed with the instance's sealing key: `sign` verification needs the secret.
    Column("secret_sealed", String(400), nullable=True),
    # Prepaid credits; NULL means the account is not prepaid (only its daily quota applies).
    Column("balance", BigInteger, nullable=True),
    # Calls in flight at once; NULL means no limit.
    Column("concurrency_limit", Integer, nullable=True),
    # Comma-separated platforms and methods the account may call; NULL means all.
    Column("apis", String(2000), nullable=True),
    # Calls and tokens per minute of the whole account (all its keys); NULL means no limit.
    Column("rpm", Integer, nullable=True),
    Column("tpm", Integer, nullable=True),
    # Calls holding a slot now (database-held slots; Redis holds them when REDIS_URL is set).
    Column("in_flight", Integer, nullable=False, default=0, server_default="0"),
    # Credits the account's charged calls cost over its life (api_info's credits:N).
    Column("credits_spent", BigInteger, nullable=False, default=0, server_default="0"),
    # Settled calls over the account's life (api_info's all[T=a+b+c]): charged calls answered
    # by the upstream, charged cache hits, uncharged calls. Settling returns them.
    *(
        Column(name, BigInteger, nullable=False, default=0, server_default="0")
        for name in LIFETIME_COUNTERS
    ),
)

# An account's keys: each with its own secret, label, expiry, allow-lists and limits. The key
# an account was created with is its first key (same key string and secret); databases made
# before keys existed gain that row in ensure_schema.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, nullable=False, index=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("secret_hash", String(160), nullable=False),
    Column("secret_sealed", String(400), nullable=True),
    Column("label", String(200), nullable=False, default=""),
    Column("status", String(16), nullable=False, default="active"),  # active or revoked
    Column("expires_on", Date, nullable=True),  # the last quota day it works; NULL: never
    Column("models", String(2000), nullable=True),  # comma-separated fnmatch patterns; NULL: all
    Column("ips", String(2000), nullable=True),  # comma-separated addresses and CIDRs; NULL: all
    Column("rpm", Integer, nullable=True),  # calls per minute; NULL: no limit of its own
    Column("tpm", Integer, nullable=True),  # tokens per minute; NULL: no limit of its own
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
)

# Per-minute windows (proxy/rate_limits.py) without Redis: one row per limited scope (a key
# `k<id>` or an account `a<id>`), whose UPDATE serialises that scope's admissions, and one
# entry per admitted call and scope: when it was admitted (unix seconds), its tokens.
rate_scopes = Table(
    "rate_scopes",
    metadata,
    Column("scope", String(40), primary_key=True),
    Column("admitted", BigInteger, nullable=False, default=0),
)
rate_entries = Table(
    "rate_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("scope", String(40), nullable=False),
    Column("member", String(32), nullable=False, index=True),
    Column("at", Double, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Index("ix_rate_entries_scope_at", "scope", "at"),
)

# One row per account and quota day (the day in SERVER_TIMEZONE). `used` counts charged and
# reserved calls and is what the quota is checked against; `extra_calls` is the day's top-up.
# (Databases made before the lifetime counters moved to `accounts` keep per-day upstream_calls,
# cache_hits and uncharged columns here, no longer written; they filled the new counters once.)
account_days = Table(
    "account_days",
    metadata,
    Column("account_id", Integer, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("used", Integer, nullable=False, default=0, server_default="0"),
    Column("extra_calls", Integer, nullable=False, default=0, server_default="0"),
)

# What a call in flight holds: one quota unit, its price in credits, maybe a database slot.
# Settling deletes the row. The worker running the call pushes `expires_at` forward while the
# call runs, so a row past it belongs to a dead worker and is refunded by a sweep.
reservations = Table(
    "reservations",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("day", Date, nullable=False),
    Column("calls", Integer, nullable=False),
    Column("credits", BigInteger, nullable=False),
    Column("holds_slot", Boolean, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Column("created_at", DateTime, nullable=False),
    # The call's Redis slot, when Redis holds the slots: what rebuilds them if Redis loses them.
    Column("slot_token", String(32), nullable=True),
    Index("ix_reservations_account_expiry", "account_id", "expires_at"),
    # Never reuse an id: a late settlement must not delete a newer reservation.
    sqlite_autoincrement=True,
)

# Stops and maintenance of a method or platform, for everyone (account_id 0) or one account.
api_states = Table(
    "api_states",
    metadata,
    Column("target", String(200), primary_key=True),
    Column("account_id", Integer, primary_key=True),
    Column("state", String(16), nullable=False),  # "stopped" or "maintenance"
    Column("created_at", DateTime, nullable=False),
)

# Signatures already accepted, kept for the dateline window so that a replay is refused.
used_signatures = Table(
    "used_signatures",
    metadata,
    Column("account_id", Integer, primary_key=True),
    Column("sign", String(32), primary_key=True),
    Column("expires_at", DateTime, nullable=False, index=True),
)

# Image jobs of images/submit: any worker or host answers images/get from here. The worker that
# runs a job beats its heartbeat; a pending or running job whose heartbeat stopped is failed.
image_jobs = Table(
    "image_jobs",
    metadata,
    Column("id", String(32), primary_key=True),  # the imgid handed to the client
    Column("account_id", Integer, nullable=False),
    Column("args", Text, nullable=False),  # the validated _o_args as JSON
    Column("status", String(16), nullable=False),  # pending, running, done, failed
    Column("progress", Integer, nullable=False, default=0),
    Column("result", Text, nullable=True),  # the upstream's answer as JSON, when done
    Column("error_code", String(4), nullable=True),
    Column("reason", String(500), nullable=True),
    Column("owner", String(200), nullable=False),  # host:pid:boot of the worker running it
    Column("request_id", String(64), nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# Files uploaded through the gateway and the account that owns each: the upstream holds every
# account's files under the one upstream key, so only this table says whose a file is.
file_owners = Table(
    "file_owners",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),  # upload order
    Column("file_id", String(80), nullable=False, unique=True),
    Column("account_id", Integer, nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("file_object", Text, nullable=False),  # the upstream's answer to the upload, as JSON
    Column("created_at", DateTime, nullable=False),
    Index("ix_file_owners_account", "account_id", "seq"),
    sqlite_autoincrement=True,
)

# Responses (the Responses API) created through the gateway and the account that created each:
# the upstream stores every account's responses under the one key, as it does files.
response_owners = Table(
    "response_owners",
    metadata,
    Column("response_id", String(200), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

# Conversation memory (chat_id): the messages of each account's conversations, in order.
chat_messages = Table(
    "chat_messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("account_id", Integer, nullable=False),
    Column("chat_id", String(128), nullable=False),
    Column("custom_uid", String(128), nullable=True),
    Column("role", String(32), nullable=False),
    Column("content", Text, nullable=False),  # JSON: a string, or a list of content parts
    Column("created_at", DateTime, nullable=False),
    Index("ix_chat_messages_chat", "account_id", "chat_id", "id"),
)

usage = Table(
    "usage",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("created_at", DateTime, nullable=False, index=True),
    Column("account_id", Integer, nullable=True, index=True),
    Column("platform", String(32), nullable=False, default=""),
    Column("method", String(200), nullable=False, default=""),
    Column("error_code", String(4), nullable=False),
    Column("charged", Boolean, nullable=False, default=False),
    Column("cached", Boolean, nullable=False, default=False),
    Column("prompt_tokens", Integer, nullable=False, default=0),
    Column("completion_tokens", Integer, nullable=False, default=0),
    Column("total_tokens", Integer, nullable=False, default=0),
    Column("latency_ms", Integer, nullable=False, default=0),
    Column("request_id", String(64), nullable=False),
    Column("client_ip", String(64), nullable=False, default=""),
    # The upstream member that answered (its name, never a key); NULL when none did.
    Column("upstream", String(64), nullable=True),
    # Credits the call cost (0 unless charged): its priced usage or its method's flat price.
    Column("credits", BigInteger, nullable=False, default=0, server_default="0"),
    # The key the call authenticated with (api_keys.id); NULL before authentication.
    Column("key_id", Integer, nullable=True),
)

# What an operator did (proxy/audit.py): who, what, on which target, when; never a secret.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("at", DateTime, nullable=False, index=True),
    Column("who", String(64), nullable=False),  # "admin:NAME", "admin" (the token) or "cli"
    Column("action", String(64), nullable=False),  # e.g. "account.stop", "key.revoke"
    Column("target", String(200), nullable=False, default=""),  # an account or key string
    Column("detail", String(2000), nullable=False, default=""),  # e.g. "credits=100"
)

# The console's operators (proxy/operators.py): each logs in with its own name and password
# (kept only as a werkzeug scrypt hash). A new `session_stamp` ends the operator's sessions.
operators = Table(
    "operators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("session_stamp", String(32), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("password_changed_at", DateTime, nullable=False),
)

# Failed console logins without Redis (proxy/login_limits.py): one row per failure and scope
# (`ip:ADDRESS`, `name:NAME`), when it happened (unix seconds); rows leave after the window.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("scope", String(200), nullable=False),
    Column("at", Double, nullable=False, index=True),
    Index("ix_login_failures_scope_at", "scope", "at"),
)

# Numbers every worker and host reads to learn of a change, e.g. `upstreams_generation`,
# bumped by `flask upstreams reload`.
generations = Table(
    "generations",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)


def utc_now() -> datetime:
    """The time as every table stores it: UTC, without a zone (SQLite keeps none)."""
    return datetime.now(UTC).replace(tzinfo=None)


def database_url(configured: str, instance_path: str) -> str:
    if configured:
        return configured
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "gateway.sqlite3")


def make_engine(url: str) -> Engine:
    # SQLAlchemy's errors quote bound parameters (an account key among them) into the log.
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets readers and one writer work at once across gunicorn workers;
            # NORMAL syncs at checkpoints, so a usage row does not cost an fsync per call.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_engine(url, hide_parameters=True)
    _ping_when_idle(engine)
    return engine


# A pooled connection unused for this long is pinged before it serves again: the server or a
# proxy may have closed it meanwhile. One in steady use is not, which saves a round trip per
# transaction (SQLAlchemy's pool_pre_ping pings on every checkout).
PING_AFTER_IDLE_SECONDS = 5.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record) -> None:
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
        idle_from = record.info.get("idle_from")
        if idle_from is None or time.monotonic() - idle_from < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception:  # the pool drops this connection and checks out another
            raise DisconnectionError("a pooled connection did not answer its ping") from None


# Any constant: the PostgreSQL advisory lock that serialises schema creation across processes.
_SCHEMA_LOCK_KEY = 0x6761_7465_7761_79


def ensure_schema(engine: Engine) -> None:
    """Create missing tables and add missing nullable or defaulted columns to older tables;
    safe when several workers and hosts start at once: they take turns."""
    with _schema_turn(engine):
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Concurrent CREATE TABLEs race inside PostgreSQL's catalog; take turns.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY}
                )
            metadata.create_all(connection, checkfirst=True)
            added = _add_missing_columns(connection)
            if ("accounts", LIFETIME_COUNTERS[0]) in added:
                _fill_lifetime_counters(connection)
            _give_accounts_their_first_key(connection)


@contextmanager
def _schema_turn(engine: Engine):
    """SQLite runs each CREATE TABLE in its own transaction, so workers booting together would
    collide between "is it there?" and "create it": a lock file beside the database makes them
    take turns (all of them run on the one machine that holds the file)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(database + ".schema-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _add_missing_columns(connection: Connection) -> set[tuple[str, str]]:
    """A database made by an older version gains the columns added since (no data changes);
    the (table, column) pairs added."""
    inspector = inspect(connection)
    added = set()
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            column_type = column.type.compile(dialect=connection.dialect)
            default = (
                f" NOT NULL DEFAULT {column.server_default.arg}"
                if column.server_default is not None
                else ""
            )
            statement = f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {column_type}'
            connection.execute(text(statement + default))
            added.add((table.name, column.name))
    return added


def _fill_lifetime_counters(connection: Connection) -> None:
    """The lifetime counters, new on `accounts`, start from the per-day counters that older
    versions kept on `account_days` (when that table has them)."""
    present = {c["name"] for c in inspect(connection).get_columns("account_days")}
    if not set(LIFETIME_COUNTERS) <= present:
        return
    sums = ", ".join(
        f"{name} = (SELECT COALESCE(SUM(d.{name}), 0) FROM account_days d "
        "WHERE d.account_id = accounts.id)"
        for name in LIFETIME_COUNTERS
    )
    connection.execute(text(f"UPDATE accounts SET {sums}"))


def _give_accounts_their_first_key(connection: Connection) -> None:
    """An account without a key row (made before keys existed) gets its own key as its first
    key: same key string, same secret, no expiry, no allow-lists, no limits of its own."""
    connection.execute(
        text(
            "INSERT INTO api_keys (account_id, key, secret_hash, secret_sealed, label, status, "
            "created_at) SELECT a.id, a.key, a.secret_hash, a.secret_sealed, 'first', 'active', "
            "a.created_at FROM accounts a WHERE NOT EXISTS "
            "(SELECT 1 FROM api_keys k WHERE k.key = a.key)"
        )
    )


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
