"""The gateway's services, built once per app from its config: the typed container the doors
and the admin commands use (kept in app.extensions["gateway"])."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from proxy import generations, storage
from proxy.accounts import AccountStore
from proxy.api_states import ApiStates
from proxy.arguments import ArgumentRules
from proxy.cache import AnswerCache, TieredCache
from proxy.catalog import PLATFORM_CLIENTS
from proxy.chats import ChatMemory
from proxy.dispatcher import Dispatcher
from proxy.failover import Failover
from proxy.files import FileOwners
from proxy.handlers.gateway import generate_for_job
from proxy.jobs import ImageJobs
from proxy.metering import Meter
from proxy.metrics import ModelLabels
from proxy.operators import OperatorStore
from proxy.prices import PriceTable
from proxy.response_owners import ResponseOwners
from proxy.running import RunningCalls
from proxy.sealing import SecretSealer
from proxy.upstream_health import UpstreamHealth
from proxy.upstreams import UpstreamRouter

if TYPE_CHECKING:  # imported only with REDIS_URL set (_shared_state)
    from redis import Redis

    from proxy.redis_store import RedisConcurrency


@dataclass
class Gateway:
    """The per-app services the doors and commands use."""

    engine: Engine
    accounts: AccountStore
    meter: Meter
    api_states: ApiStates
    arguments: ArgumentRules
    dispatcher: Dispatcher
    chats: ChatMemory
    running: RunningCalls
    operators: OperatorStore  # who may log in to the console besides ADMIN_TOKEN
    redis: Redis | None = None  # set with REDIS_URL
    # The model names the metrics may show (proxy/metrics.py); any other is "other".
    model_labels: ModelLabels = field(default_factory=lambda: ModelLabels(()))

    def ping_database(self) -> None:
        storage.ping(self.engine)


def build_gateway(config: Mapping, instance_path: str) -> Gateway:
    """Every service of one app, from its config (the Flask config, or any mapping of the
    same names); the SQLite database and the answer store default to `instance_path`."""
    engine = storage.make_engine(storage.database_url(config["DATABASE_URL"], instance_path))
    storage.ensure_schema(engine)
    redis_client, slots, cache = _shared_state(config, engine, instance_path)
    arguments = ArgumentRules.from_config(config)  # the limits, once for every call
    meter = Meter(
        engine,
        timezone=config["SERVER_TIMEZONE"],
        reservation_ttl_seconds=config["RESERVATION_TTL_SECONDS"],
        prices=config["METHOD_PRICES"],
        default_price=config["DEFAULT_METHOD_PRICE"],
        slots=slots,
        rate_limits=_rate_limits(engine, redis_client),
        default_completion_tokens=config["DEFAULT_COMPLETION_TOKENS"],
        token_prices=PriceTable.load(config["PRICES_FILE"]),
    )
    dispatcher = _dispatcher(config, engine, cache, arguments, redis_client)
    patterns = [p for upstream in dispatcher.router.upstreams() for p in upstream.patterns]
    return Gateway(
        engine=engine,
        accounts=AccountStore(
            engine,
            default_daily_quota=config["DEFAULT_DAILY_QUOTA"],
            sealer=SecretSealer.from_config(config["ACCOUNT_SEALING_KEY"], instance_path),
            sign_window_seconds=config["SIGN_WINDOW_SECONDS"],
            settings_cache_seconds=config["SETTINGS_CACHE_SECONDS"],
        ),
        meter=meter,
        api_states=ApiStates(engine, settings_cache_seconds=config["SETTINGS_CACHE_SECONDS"]),
        arguments=arguments,
        dispatcher=dispatcher,
        chats=ChatMemory(
            engine,
            max_messages=config["CHAT_MEMORY_MAX_MESSAGES"],
            max_tokens=config["CHAT_MEMORY_MAX_TOKENS"],
        ),
        # Renewed a few times per TTL, so a late round or two never lets a live call expire.
        running=RunningCalls(meter, renew_interval_seconds=config["RESERVATION_TTL_SECONDS"] / 3),
        operators=OperatorStore(engine, settings_cache_seconds=config["SETTINGS_CACHE_SECONDS"]),
        redis=redis_client,
        model_labels=ModelLabels.from_config(config, patterns),
    )


def _rate_limits(engine: Engine, redis_client: Redis | None):
    """Per-minute windows in Redis when it is configured, else in the database."""
    from proxy.rate_limits import DatabaseRateLimits, RedisRateLimits

    return RedisRateLimits(redis_client) if redis_client is not None else DatabaseRateLimits(engine)


def _dispatcher(
    config: Mapping,
    engine: Engine,
    cache: TieredCache | AnswerCache,
    arguments: ArgumentRules,
    redis_client: Redis | None,
) -> Dispatcher:
    router = UpstreamRouter.from_config(config)
    health = UpstreamHealth.from_config(config, redis_client)
    # `flask upstreams reload` bumps the generation; each worker reloads when it sees it.
    router.watch(
        functools.partial(generations.read, engine, generations.UPSTREAMS),
        on_reload=health.forget_revoked,
    )
    failover = Failover(
        router,
        health,
        attempts=config["UPSTREAM_FAILOVER_ATTEMPTS"],
        deadline_seconds=config["UPSTREAM_DEADLINE_SECONDS"],
    )
    store = cache.shared.store if isinstance(cache, TieredCache) else None
    return Dispatcher(
        platforms={name: connect(config, store) for name, connect in PLATFORM_CLIENTS.items()},
        router=router,
        cache=cache,
        arguments=arguments,
        shared_cache=config["CACHE_SHARED_ACROSS_ACCOUNTS"],
        jobs=ImageJobs(
            engine,
            functools.partial(generate_for_job, failover),
            heartbeat_seconds=config["JOB_HEARTBEAT_SECONDS"],
            stale_seconds=config["JOB_STALE_SECONDS"],
            max_running=config["JOB_MAX_RUNNING"],
        ),
        files=FileOwners(engine),
        response_owners=ResponseOwners(engine),
        failover=failover,
    )


def _shared_state(
    config: Mapping, engine: Engine, instance_path: str
) -> tuple[Redis | None, RedisConcurrency | None, TieredCache | AnswerCache]:
    """(redis client, concurrency slots, answer cache): with REDIS_URL the slots and the
    cache's store are in Redis; else (None, None: slots in the database, the cache's store a
    SQLite file on this machine). Slots that Redis loses are rebuilt from the reservations
    in `engine`."""
    ttl, max_bytes = config["CACHE_TTL_SECONDS"], config["CACHE_MAX_BYTES"]
    memory_bytes = config["CACHE_MEMORY_BYTES"]
    memory = AnswerCache(ttl_seconds=ttl, max_bytes=memory_bytes, counts_memory=True)
    if not config["REDIS_URL"]:
        directory = answer_store_directory(config["CACHE_DIR"], engine.url, instance_path)
        if directory is None:  # an in-memory database: no file the workers could share
            return None, None, AnswerCache(ttl_seconds=ttl, max_bytes=max_bytes)
        from proxy.local_store import LocalAnswerCache

        shared = LocalAnswerCache(directory, ttl_seconds=ttl, max_bytes=max_bytes)
        return None, None, TieredCache(memory, shared)
    from proxy.metering_statements import live_slot_tokens
    from proxy.redis_store import RedisAnswerCache, RedisConcurrency, make_redis_client

    client = make_redis_client(config["REDIS_URL"], config["REDIS_TIMEOUT_SECONDS"])
    slots = RedisConcurrency(
        client,
        slot_ttl_seconds=config["RESERVATION_TTL_SECONDS"],
        live_slots=functools.partial(live_slot_tokens, engine),
    )
    shared = RedisAnswerCache(client, ttl_seconds=ttl, max_entry_bytes=max_bytes)
    return client, slots, TieredCache(memory, shared)


def answer_store_directory(configured: str, database_url, instance_path: str) -> str | None:
    """Where the workers' shared answer store lives without Redis: CACHE_DIR; else beside a
    SQLite database file (gateway.sqlite3-answers); else (PostgreSQL) in the instance folder,
    named after the database, so that two gateways of one checkout never share answers.
    None for an in-memory SQLite database."""
    if configured:
        return configured
    if database_url.get_backend_name() == "sqlite":
        database = database_url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            return None
        return os.path.abspath(database) + "-answers"
    named = database_url.render_as_string(hide_password=True).encode()
    return os.path.join(instance_path, f"answer-cache-{hashlib.sha256(named).hexdigest()[:12]}")
