"""Gateway configuration: embedded defaults, overridden by the environment.

Imports nothing from proxy. `create_app(test_config)` applies test overrides on top.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a whole number; set it to e.g. {default}"
        ) from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to e.g. {default}") from None


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when unset)."""
    raw = os.environ.get(name, "").strip().lower() or choices[0]
    if raw not in choices:
        raise ValueError(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def _env_prices(name: str) -> dict[str, int]:
    raw = os.environ.get(name, "")
    if not raw.strip():
        return {}
    try:
        prices = json.loads(raw)
    except ValueError:
        prices = None
    if not isinstance(prices, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in prices.values()
    ):
        raise ValueError(
            f'{name} must be a JSON object of whole credits, e.g. {{"v1/chat/completions": 2}}'
        )
    return prices


# Timeouts are ordered: upstream (x attempts) < gunicorn worker timeout < nginx proxy_read_timeout.
UPSTREAM_TIMEOUT_SECONDS = 30.0
UPSTREAM_MAX_RETRIES = 1  # the SDK's retries of one member (a pool of one; docs/upstreams.md)
# A pool's failover: at most this many members tried per call, all within the deadline, which
# stays below the gunicorn timeout.
UPSTREAM_FAILOVER_ATTEMPTS = 3
UPSTREAM_DEADLINE_SECONDS = 60.0
GUNICORN_TIMEOUT_SECONDS = 90
NGINX_PROXY_READ_TIMEOUT_SECONDS = 120


def gunicorn_timeout_seconds(environ: Mapping[str, str] | None = None) -> int:
    """The gunicorn worker timeout: GUNICORN_TIMEOUT, else GUNICORN_TIMEOUT_SECONDS."""
    environ = os.environ if environ is None else environ
    raw = environ.get("GUNICORN_TIMEOUT", "")
    if not raw.strip():
        return GUNICORN_TIMEOUT_SECONDS
    try:
        return int(raw)
    except ValueError:
        raise ValueError(
            f"GUNICORN_TIMEOUT={raw!r} is not a whole number of seconds; "
            f"set it to e.g. {GUNICORN_TIMEOUT_SECONDS}"
        ) from None


def checked_gunicorn_timeout() -> int:
    """The gunicorn worker timeout, once the default upstream's worst case (its timeout x
    attempts) is below it: a worker killed mid-call would answer nothing at all. ValueError
    saying what to change otherwise. (Each upstream of UPSTREAMS_FILE is checked as it loads.)"""
    timeout = gunicorn_timeout_seconds()
    worst_case = _env_float("UPSTREAM_TIMEOUT_SECONDS", UPSTREAM_TIMEOUT_SECONDS) * (
        1 + _env_int("UPSTREAM_MAX_RETRIES", UPSTREAM_MAX_RETRIES)
    )
    if worst_case >= timeout:
        raise ValueError(
            f"UPSTREAM_TIMEOUT_SECONDS x attempts = {worst_case:.0f}s must stay below the "
            f"gunicorn timeout ({timeout}s); lower the upstream timeout or raise GUNICORN_TIMEOUT"
        )
    deadline = _env_float("UPSTREAM_DEADLINE_SECONDS", UPSTREAM_DEADLINE_SECONDS)
    if not 0 < deadline < timeout:
        raise ValueError(
            f"UPSTREAM_DEADLINE_SECONDS={deadline:g} (all of a call's failover attempts) must "
            f"be above 0 and below the gunicorn timeout ({timeout}s); lower it or raise "
            "GUNICORN_TIMEOUT"
        )
    return timeout


class Config:
    """Read once at app creation; every value can be set by an environment variable of its name."""

    def __init__(self) -> None:
        env = os.environ.get
        # Storage. Empty DATABASE_URL means a SQLite file under the Flask instance folder.
        self.DATABASE_URL = env("DATABASE_URL", "")
        # Upstream: empty OPENAI_BASE_URL means the bundled stub upstream (make run starts it).
        self.OPENAI_BASE_URL = env("OPENAI_BASE_URL", "")
        self.OPENAI_API_KEY = env("OPENAI_API_KEY", "")
        # "chat": the default upstream speaks chat completions only, and v1/responses is
        # translated to it (text only, docs/methods.md); "native": it serves /responses.
        self.OPENAI_RESPONSES_API = env("OPENAI_RESPONSES_API", "native")
        self.UPSTREAM_TIMEOUT_SECONDS = _env_float(
            "UPSTREAM_TIMEOUT_SECONDS", UPSTREAM_TIMEOUT_SECONDS
        )
        self.UPSTREAM_MAX_RETRIES = _env_int("UPSTREAM_MAX_RETRIES", UPSTREAM_MAX_RETRIES)
        self.UPSTREAMS_FILE = env("UPSTREAMS_FILE", "")
        # Pools (docs/upstreams.md): a failing member's call goes on to another, at most this
        # many tries in all, within one deadline below the gunicorn timeout.
        self.UPSTREAM_FAILOVER_ATTEMPTS = _env_int(
            "UPSTREAM_FAILOVER_ATTEMPTS", UPSTREAM_FAILOVER_ATTEMPTS
        )
        self.UPSTREAM_DEADLINE_SECONDS = _env_float(
            "UPSTREAM_DEADLINE_SECONDS", UPSTREAM_DEADLINE_SECONDS
        )
        # A member failing this many times within the window is skipped for the cooldown,
        # then one probe call decides (shared through Redis when REDIS_URL is set).
        self.UPSTREAM_COOLDOWN_FAILURES = _env_int("UPSTREAM_COOLDOWN_FAILURES", 3)
        self.UPSTREAM_COOLDOWN_WINDOW_SECONDS = _env_float("UPSTREAM_COOLDOWN_WINDOW_SECONDS", 30.0)
        self.UPSTREAM_COOLDOWN_SECONDS = _env_float("UPSTREAM_COOLDOWN_SECONDS", 30.0)
        # The Feishu platform (feishu/auth, docs/methods.md): empty FEISHU_BASE_URL means the
        # bundled stub and its app; the app's secret never comes from a client.
        self.FEISHU_BASE_URL = env("FEISHU_BASE_URL", "")
        self.FEISHU_APP_ID = env("FEISHU_APP_ID", "")
        self.FEISHU_APP_SECRET = env("FEISHU_APP_SECRET", "")
        # A tenant token is asked for again this long before Feishu's `expire`.
        self.FEISHU_TOKEN_MARGIN_SECONDS = _env_int("FEISHU_TOKEN_MARGIN_SECONDS", 300)
        # The model used when `_o_args` names none (the seed's own example sends no model).
        self.DEFAULT_MODELS = {
            "v1/chat/completions": env("DEFAULT_CHAT_MODEL", "gpt-4o-mini"),
            # The Responses API answers as chat does: the chat model unless set apart.
            "v1/responses": env("DEFAULT_RESPONSES_MODEL", "")
            or env("DEFAULT_CHAT_MODEL", "gpt-4o-mini"),
            "v1/completions": env("DEFAULT_COMPLETION_MODEL", "gpt-3.5-turbo-instruct"),
            "v1/embeddings": env("DEFAULT_EMBEDDING_MODEL", "text-embedding-3-small"),
            "v1/moderations": env("DEFAULT_MODERATION_MODEL", "omni-moderation-latest"),
            "v1/edits": env("DEFAULT_EDIT_MODEL", "gpt-4o-mini"),
            "v1/images/generations": env("DEFAULT_IMAGE_MODEL", "dall-e-3"),
            "v1/images/edits": env("DEFAULT_IMAGE_EDIT_MODEL", "dall-e-2"),
            "v1/images/variations": env("DEFAULT_IMAGE_EDIT_MODEL", "dall-e-2"),
            "images/submit": env("DEFAULT_IMAGE_MODEL", "dall-e-3"),
            "v1/audio/transcriptions": env("DEFAULT_TRANSCRIPTION_MODEL", "whisper-1"),
            "v1/audio/translations": env("DEFAULT_TRANSCRIPTION_MODEL", "whisper-1"),
            "v1/audio/speech": env("DEFAULT_SPEECH_MODEL", "tts-1"),
        }
        # Image jobs (images/submit): the worker running a job beats its heartbeat; a job whose
        # heartbeat is older than JOB_STALE_SECONDS is failed (its worker died).
        self.JOB_HEARTBEAT_SECONDS = _env_float("JOB_HEARTBEAT_SECONDS", 5.0)
        self.JOB_STALE_SECONDS = _env_float("JOB_STALE_SECONDS", 30.0)
        self.JOB_MAX_RUNNING = _env_int("JOB_MAX_RUNNING", 4)  # per worker process
        # Conversation memory (chat_id): at most this many stored messages go before new ones.
        self.CHAT_MEMORY_MAX_MESSAGES = _env_int("CHAT_MEMORY_MAX_MESSAGES", 40)
        # ... and, when set, only the newest of them that fit in this many estimated tokens.
        self.CHAT_MEMORY_MAX_TOKENS = _env_int("CHAT_MEMORY_MAX_TOKENS", 0)
        # Answer cache (docs/envelope.md, "Cache"): one store shared by the workers (Redis when
        # REDIS_URL is set, else a SQLite file on this machine) behind a small one per worker.
        self.CACHE_TTL_SECONDS = _env_int("CACHE_TTL_SECONDS", 600)
        # The shared store's size in bytes of answer JSON (with Redis: the largest entry).
        self.CACHE_MAX_BYTES = _env_int("CACHE_MAX_BYTES", 64 * 1024 * 1024)
        # Where the shared store lives without Redis; empty: next to the SQLite database
        # (instance/gateway.sqlite3-answers), or instance/answer-cache-<database id>.
        self.CACHE_DIR = env("CACHE_DIR", "")
        # Each worker's in-memory layer: estimated memory of the answers it keeps parsed.
        self.CACHE_MEMORY_BYTES = _env_int("CACHE_MEMORY_BYTES", 32 * 1024 * 1024)
        # Tenancy of the cache: by default one account never sees another's cached answers.
        self.CACHE_SHARED_ACROSS_ACCOUNTS = env("CACHE_SHARED_ACROSS_ACCOUNTS", "") == "1"
        # Envelope.
        self.SERVER_TIMEZONE = env("SERVER_TIMEZONE", "Asia/Shanghai")
        self.SERVER_TIME_LABEL = env("SERVER_TIME_LABEL", "Beijing")
        self.REQUEST_ID_PREFIX = env("REQUEST_ID_PREFIX", "gw-1")
        self.API_VERSIONS = tuple(
            v.strip() for v in env("API_VERSIONS", "1,1.0,v1").split(",") if v.strip()
        )
        # Number of reverse proxies (nginx = 1) whose X-Forwarded-For is trusted for client_ip.
        self.TRUSTED_PROXY_HOPS = _env_int("TRUSTED_PROXY_HOPS", 0)
        # Browser pages on these origins may call the gateway (CORS): `*`, or a comma-separated
        # list such as https://app.example,https://admin.example. Empty: same-origin only.
        self.CORS_ORIGINS = env("CORS_ORIGINS", "")
        # Limits on what a client controls.
        # A body holds at most one MAX_UPLOAD_BYTES file as base64 (4/3) plus the arguments.
        self.MAX_CONTENT_LENGTH = _env_int("MAX_BODY_BYTES", 16 * 1024 * 1024)
        self.MAX_UPLOAD_BYTES = _env_int("MAX_UPLOAD_BYTES", 8 * 1024 * 1024)
        self.MAX_O_ARGS_BYTES = _env_int("MAX_O_ARGS_BYTES", 1024 * 1024)
        self.MAX_O_ARGS_DEPTH = _env_int("MAX_O_ARGS_DEPTH", 32)
        self.MAX_MESSAGES = _env_int("MAX_MESSAGES", 512)
        # Accounts.
        self.DEFAULT_DAILY_QUOTA = _env_int("DEFAULT_DAILY_QUOTA", 30000)
        # Credits a charged call costs a prepaid account: METHOD_PRICES (JSON) per method,
        # DEFAULT_METHOD_PRICE for the others. Listing models is free.
        self.DEFAULT_METHOD_PRICE = _env_int("DEFAULT_METHOD_PRICE", 1)
        self.METHOD_PRICES = {"v1/models": 0, **_env_prices("METHOD_PRICES")}
        # TOML prices per model (docs/prices.md); unset: every call costs its method's flat price.
        self.PRICES_FILE = os.environ.get("PRICES_FILE", "")
        # What a call that sets no max_tokens is assumed to produce at most: its estimate in
        # the tokens-per-minute windows (docs/keys.md).
        self.DEFAULT_COMPLETION_TOKENS = _env_int("DEFAULT_COMPLETION_TOKENS", 1024)
        # A call's reservation (quota, credits, slot) is renewed while the call runs, however
        # long; when its worker dies it is refunded within about this long (docs/accounts.md).
        self.RESERVATION_TTL_SECONDS = _env_float("RESERVATION_TTL_SECONDS", 60.0)
        # A worker re-reads account settings (status, secret, expiry, enabled APIs) and API
        # stops/maintenance once its copy is this old: how long a change made by the admin
        # commands takes to reach every worker and host (docs/accounts.md). 0: every call.
        self.SETTINGS_CACHE_SECONDS = _env_float("SETTINGS_CACHE_SECONDS", 2.0)
        # Signed requests: `dateline` within this many seconds of the server's clock.
        self.SIGN_WINDOW_SECONDS = _env_int("SIGN_WINDOW_SECONDS", 300)
        # Fernet key sealing account secrets at rest (empty: instance/sealing.key, made once).
        # Hosts sharing one database must share this key.
        self.ACCOUNT_SEALING_KEY = env("ACCOUNT_SEALING_KEY", "")
        # Redis (redis://host:port/db): concurrency slots and the answer cache shared by every
        # worker and host. Empty: slots in the database, cache in a file on this machine.
        self.REDIS_URL = env("REDIS_URL", "")
        # Each Redis call gives up after this long: the most a Redis outage adds to a call.
        # Loopback Redis answers in well under a millisecond; the margin is for loaded hosts.
        self.REDIS_TIMEOUT_SECONDS = _env_float("REDIS_TIMEOUT_SECONDS", 2.0)
        # GET /metrics (docs/deploy.md, "Metrics"): served only to `Authorization: Bearer
        # <METRICS_TOKEN>`; empty: not served (404).
        self.METRICS_TOKEN = env("METRICS_TOKEN", "")
        # Model names the metrics show by name (comma list), besides the default models and
        # UPSTREAMS_FILE's exact names; any other model is counted as "other".
        self.METRICS_MODELS = env("METRICS_MODELS", "")
        # The operator console /admin (docs/console.md): served when ADMIN_TOKEN is set or an
        # operator exists (`flask operators add`), 404 otherwise; the token or an operator's
        # name and password log a browser in. SECRET_KEY signs the console's session cookie;
        # empty: derived from the sealing key (never from the token: docs/console.md).
        self.ADMIN_TOKEN = env("ADMIN_TOKEN", "")
        self.SECRET_KEY = env("SECRET_KEY", "")
        self.ADMIN_SESSION_HOURS = _env_float("ADMIN_SESSION_HOURS", 12.0)
        # This many failed logins within the window, from one address or at one operator name,
        # lock that address or name out of the login until they leave the window.
        self.ADMIN_LOGIN_FAILURES = _env_int("ADMIN_LOGIN_FAILURES", 10)
        self.ADMIN_LOGIN_WINDOW_SECONDS = _env_float("ADMIN_LOGIN_WINDOW_SECONDS", 900.0)
        # The session cookie's Secure flag: auto (when the request came over HTTPS, directly
        # or as a trusted proxy's X-Forwarded-Proto says), yes or no.
        self.ADMIN_COOKIE_SECURE = _env_choice("ADMIN_COOKIE_SECURE", ("auto", "yes", "no"))
        # flask-smorest / OpenAPI
        self.API_TITLE = "onebound-style API gateway"
        self.API_VERSION = "1"
        self.OPENAPI_VERSION = "3.0.3"
        self.OPENAPI_URL_PREFIX = "/"
        self.OPENAPI_JSON_PATH = "openapi.json"
        self.OPENAPI_SWAGGER_UI_PATH = "/docs"
        self.OPENAPI_SWAGGER_UI_URL = "/docs/assets/"  # served from the swagger-ui-bundle package
        self.JSON_AS_ASCII = False
