"""The application factory: wiring only (config, extensions, blueprints, CLI)."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import swagger_ui_bundle
from flask import Flask, send_from_directory
from flask_smorest import Api
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from config import Config
from proxy.wsgi_paths import CollapsedSlashes


@dataclass
class Gateway:
    """The per-app services the routes use (kept in app.extensions["gateway"])."""

    engine: Engine
    accounts: object  # proxy.accounts.AccountStore
    meter: object  # proxy.metering.Meter
    api_states: object  # proxy.api_states.ApiStates
    dispatcher: object  # proxy.dispatcher.Dispatcher
    api: Api
    chats: object = None  # proxy.chats.ChatMemory
    redis: object = None  # redis.Redis when REDIS_URL is set
    running: object = None  # proxy.running.RunningCalls

    def ping_database(self) -> None:
        from proxy.storage import ping

        ping(self.engine)


def create_app(test_config: dict | None = None) -> Flask:
    from proxy import cli, cors, logs, storage
    from proxy.accounts import AccountStore
    from proxy.api_states import ApiStates
    from proxy.chats import ChatMemory
    from proxy.dispatcher import Dispatcher
    from proxy.doors import register_doors
    from proxy.files import FileOwners
    from proxy.handlers.gateway import generate_for_job
    from proxy.jobs import ImageJobs
    from proxy.metering import Meter
    from proxy.openapi_docs import register_method_schemas, register_openai_paths
    from proxy.request_body import GuardedBody
    from proxy.running import RunningCalls
    from proxy.sealing import SecretSealer
    from proxy.upstreams import UpstreamRouter

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(Config())
    if test_config:
        app.config.update(test_config)
    _serve_without_redirects(app)
    app.wsgi_app = GuardedBody(app.wsgi_app, lambda: app.config["MAX_CONTENT_LENGTH"])
    if app.config["TRUSTED_PROXY_HOPS"] > 0:
        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logs.init_app(app)

    engine = storage.make_engine(
        storage.database_url(app.config["DATABASE_URL"], app.instance_path)
    )
    storage.ensure_schema(engine)
    api = Api(app)
    register_doors(app, api)
    register_method_schemas(api)
    _serve_swagger_assets(app)
    redis_client, slots, cache = _shared_state(app.config, engine, app.instance_path)
    router = UpstreamRouter.from_config(app.config)
    meter = Meter(
        engine,
        timezone=app.config["SERVER_TIMEZONE"],
        reservation_ttl_seconds=app.config["RESERVATION_TTL_SECONDS"],
        prices=app.config["METHOD_PRICES"],
        default_price=app.config["DEFAULT_METHOD_PRICE"],
        slots=slots,
    )
    app.extensions["gateway"] = Gateway(
        engine=engine,
        accounts=AccountStore(
            engine,
            default_daily_quota=app.config["DEFAULT_DAILY_QUOTA"],
            sealer=SecretSealer.from_config(app.config["ACCOUNT_SEALING_KEY"], app.instance_path),
            sign_window_seconds=app.config["SIGN_WINDOW_SECONDS"],
            settings_cache_seconds=app.config["SETTINGS_CACHE_SECONDS"],
        ),
        meter=meter,
        api_states=ApiStates(engine, settings_cache_seconds=app.config["SETTINGS_CACHE_SECONDS"]),
        dispatcher=Dispatcher(
            router=router,
            cache=cache,
            default_models=app.config["DEFAULT_MODELS"],
            max_messages=app.config["MAX_MESSAGES"],
            max_upload_bytes=app.config["MAX_UPLOAD_BYTES"],
            shared_cache=app.config["CACHE_SHARED_ACROSS_ACCOUNTS"],
            jobs=ImageJobs(
                engine,
                functools.partial(generate_for_job, router),
                heartbeat_seconds=app.config["JOB_HEARTBEAT_SECONDS"],
                stale_seconds=app.config["JOB_STALE_SECONDS"],
                max_running=app.config["JOB_MAX_RUNNING"],
            ),
            files=FileOwners(engine),
        ),
        api=api,
        chats=ChatMemory(
            engine,
            max_messages=app.config["CHAT_MEMORY_MAX_MESSAGES"],
            max_tokens=app.config["CHAT_MEMORY_MAX_TOKENS"],
        ),
        redis=redis_client,
        # Renewed a few times per TTL, so a late round or two never lets a live call expire.
        running=RunningCalls(
            meter, renew_interval_seconds=app.config["RESERVATION_TTL_SECONDS"] / 3
        ),
    )
    register_openai_paths(api)
    cors.init_app(app)
    cli.init_app(app)
    return app


def _serve_without_redirects(app: Flask) -> None:
    """No call is ever redirected: a redirect's Location would send key and secret back in
    the query string, to whatever Host the client named. Werkzeug redirects `//` to `/` and
    `/x` to `/x/`; here a path with `//` is served as if it had one slash, and a trailing
    slash is optional on every route."""
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.wsgi_app = CollapsedSlashes(app.wsgi_app)


def _shared_state(config, engine: Engine, instance_path: str) -> tuple:
    """(redis client, concurrency slots, answer cache): with REDIS_URL the slots and the
    cache's store are in Redis; else (None, None: slots in the database, the cache's store a
    SQLite file on this machine). Slots that Redis loses are rebuilt from the reservations
    in `engine`."""
    from proxy.cache import AnswerCache, TieredCache

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
    from proxy.metering import live_slot_tokens
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


def _serve_swagger_assets(app: Flask) -> None:
    """Swagger UI's JS and CSS from the installed swagger-ui-bundle package: /docs works offline."""

    def swagger_asset(filename: str):
        return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)

    app.add_url_rule("/docs/assets/<path:filename>", "swagger_asset", swagger_asset)
