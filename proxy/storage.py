"""Database tables (SQLAlchemy Core) and the engine: a SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import os

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

metadata = MetaData()

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
)


def database_url(configured: str, instance_path: str) -> str:
    if configured:
        return configured
    os.makedirs(instance_path, exist_ok=True)
    return "sqlite:///" + os.path.join(instance_path, "gateway.sqlite3")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

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
    return create_engine(url, pool_pre_ping=True)


def ensure_schema(engine: Engine) -> None:
    """Create missing tables; safe when several workers start at once."""
    try:
        metadata.create_all(engine, checkfirst=True)
    except (OperationalError, ProgrammingError) as exc:  # another worker created it first
        if "already exists" not in str(exc):
            raise
        metadata.create_all(engine, checkfirst=True)


def ping(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
