"""Upstream routing: which OpenAI-compatible server answers a model, and its SDK client.

The default upstream comes from OPENAI_BASE_URL / OPENAI_API_KEY (the bundled stub when
unset). UPSTREAMS_FILE names a TOML file of further upstreams, each with fnmatch patterns of
the model names it answers (format and rules: docs/upstreams.md). A table with several keys
(`api_key_envs`) is one member per key; the members sharing the pattern a model first matches
are its pool, each with a weight and a priority. The file is checked whole at startup (and at
each reload): every mistake is a ValueError naming the file, the upstream and what to fix, and
no message ever holds an upstream key.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from config import gunicorn_timeout_seconds

if TYPE_CHECKING:  # imported by client_for: the admin commands never need the SDK
    from openai import OpenAI

log = logging.getLogger("proxy")

# Used when OPENAI_BASE_URL is empty: the bundled stub that `make run` starts.
STUB_BASE_URL = "http://127.0.0.1:8001/v1"
STUB_API_KEY = "sk-stub"

# The SDK resources the catalog calls (warmed up before a worker takes calls).
CATALOG_RESOURCES = (
    "chat",
    "completions",
    "embeddings",
    "moderations",
    "models",
    "images",
    "audio",
    "files",
    "responses",
)

# Names of the upstreams from OPENAI_BASE_URL (or the stub); a file upstream may not take them.
RESERVED_NAMES = frozenset({"default", "stub"})
_NAME = re.compile(r"[a-z0-9_-]+")
# RFC 9110 field-name token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELDS = (
    "name",
    "base_url",
    "api_key_env",
    "api_key_envs",
    "models",
    "weight",
    "priority",
    "timeout_seconds",
    "max_retries",
    "headers",
    "responses",
)
# How an upstream answers v1/responses: its own /responses, or chat completions translated.
RESPONSES_MODES = ("native", "chat")
_REQUIRED = ("name", "base_url", "models")


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    api_key: str = field(repr=False)  # never printed: an Upstream may end up in a log line
    timeout_seconds: float
    max_retries: int
    # fnmatch patterns (case-sensitive) of the model names routed here; empty for the default.
    patterns: tuple[str, ...] = ()
    # Extra headers sent with every request to this upstream (never Authorization).
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    # A pool picks among its healthy members of the lowest priority, by weight.
    weight: float = 1
    priority: int = 0
    # It speaks chat completions only: v1/responses is translated (handlers/responses_via_chat).
    responses_via_chat: bool = False

    def matches(self, model: str) -> bool:
        return any(fnmatchcase(model, pattern) for pattern in self.patterns)

    def first_match(self, model: str) -> str | None:
        """The first of this member's patterns that matches `model`, or None."""
        return next((p for p in self.patterns if fnmatchcase(model, p)), None)


class UpstreamRouter:
    """Routes a model name to its pool of members: the first file member (in file order) with
    a pattern matching the name picks the pattern, and every member listing that same pattern
    is in the pool; a name matching no pattern goes to the default alone. One cached SDK
    client per member."""

    def __init__(self, default: Upstream, upstreams: Iterable[Upstream] = ()):
        self.default = default
        self.file_upstreams: tuple[Upstream, ...] = tuple(upstreams)
        self._clients: dict[str, OpenAI] = {}
        self._lock = threading.Lock()
        self._config: Mapping | None = None  # what reload() reads again
        self._generation_of: Callable[[], int] | None = None  # see watch()
        self._generation: int | None = None
        self._next_check = 0.0
        self._on_reload: list[Callable[[], None]] = []
        self.reload_check_seconds = 1.0

    @classmethod
    def from_config(cls, config) -> UpstreamRouter:
        router = cls(*cls.load(config))
        router._config = config
        return router

    @staticmethod
    def load(config) -> tuple[Upstream, list[Upstream]]:
        """(the default upstream, the file's members) as `config` says; ValueError on a bad
        file."""
        base_url = config["OPENAI_BASE_URL"] or STUB_BASE_URL
        api_key = config["OPENAI_API_KEY"] or (
            STUB_API_KEY if not config["OPENAI_BASE_URL"] else ""
        )
        default = Upstream(
            name="default" if config["OPENAI_BASE_URL"] else "stub",
            base_url=base_url.rstrip("/"),
            api_key=api_key or "unset",
            timeout_seconds=config["UPSTREAM_TIMEOUT_SECONDS"],
            max_retries=config["UPSTREAM_MAX_RETRIES"],
            responses_via_chat=_checked_responses_mode(
                config.get("OPENAI_RESPONSES_API") or "native", "OPENAI_RESPONSES_API"
            ),
        )
        path = config.get("UPSTREAMS_FILE", "")
        upstreams = (
            load_upstreams_file(
                path,
                default_timeout_seconds=config["UPSTREAM_TIMEOUT_SECONDS"],
                default_max_retries=config["UPSTREAM_MAX_RETRIES"],
            )
            if path
            else []
        )
        return default, upstreams

    def replace(self, default: Upstream, upstreams: Iterable[Upstream]) -> None:
        """Route by these members from now on; a member whose settings changed gets a new
        client (a call under way keeps the one it has)."""
        upstreams = tuple(upstreams)
        with self._lock:
            members = {u.name: u for u in (default, *upstreams)}
            kept = {
                key: client
                for key, client in self._clients.items()
                if members.get(key.split(" ")[0]) == self._member(key.split(" ")[0])
            }
            self.default, self.file_upstreams, self._clients = default, upstreams, kept

    def _member(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams() if u.name == name), None)

    def watch(
        self,
        generation_of: Callable[[], int],
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        """Reload the file when `generation_of()` (a number every worker reads, bumped by
        `flask upstreams reload`) changes; refresh() reads it at most once a second."""
        self._generation_of = generation_of
        if on_reload is not None:
            self._on_reload.append(on_reload)
        try:
            self._generation = generation_of()
        except Exception:  # the next refresh() tries again
            log.warning("the upstreams' reload generation could not be read", exc_info=True)

    def refresh(self) -> None:
        """Reload the upstreams if a reload was asked for since the last look (cheap: a
        clock read, and one small query every `reload_check_seconds`)."""
        now = time.monotonic()
        if self._generation_of is None or now < self._next_check:
            return
        self._next_check = now + self.reload_check_seconds
        try:
            generation = self._generation_of()
        except Exception:
            log.warning("the upstreams' reload generation could not be read", exc_info=True)
            return
        if generation != self._generation:
            self._generation = generation
            self.reload()

    def reload(self) -> bool:
        """Read the file again; a bad one is refused (logged with its reason) and the
        members loaded before stay. Whether the new file was taken."""
        from proxy import upstream_events

        try:
            default, upstreams = self.load(self._config)
        except ValueError as refused:
            log.error("upstreams reload refused, the previous upstreams stay: %s", refused)
            upstream_events.reloaded(self._generation or 0, accepted=False)
            return False
        self.replace(default, upstreams)
        for callback in self._on_reload:
            callback()
        log.info("upstreams reloaded: %d members", len(self.upstreams()))
        upstream_events.reloaded(self._generation or 0, accepted=True)
        return True

    def upstreams(self) -> list[Upstream]:
        """Every upstream: the default first, then the file's in file order."""
        return [self.default, *self.file_upstreams]

    def route_model(self, model: str | None) -> Upstream:
        """The first member of the model's pool in file order: what names the pool (its
        base URL keys the answer cache)."""
        return self.pool(model)[0]

    def pool(self, model: str | None) -> tuple[Upstream, ...]:
        """The members that may answer `model`, in file order (never empty)."""
        if isinstance(model, str) and model:
            file_upstreams = self.file_upstreams
            for upstream in file_upstreams:
                pattern = upstream.first_match(model)
                if pattern is not None:
                    return tuple(u for u in file_upstreams if pattern in u.patterns)
        return (self.default,)

    def lists_model(self, upstream: Upstream, model_id: str) -> bool:
        """Whether `model_id`, listed by `upstream`'s /v1/models, belongs in the gateway's
        merged list: only when calling that model could reach that same upstream."""
        return any(member.name == upstream.name for member in self.pool(model_id))

    def warm_up(self) -> None:
        """Build every upstream's client and touch the SDK resources the catalog uses: the SDK
        imports them on first use, which would otherwise stall a worker's first calls."""
        for upstream in self.upstreams():
            client = self.client_for(upstream)
            for resource in CATALOG_RESOURCES:
                getattr(client, resource)
            client.chat.completions  # noqa: B018
            client.audio.transcriptions, client.audio.translations, client.audio.speech  # noqa: B018

    def client_for(self, upstream: Upstream, *, retries: bool = True) -> OpenAI:
        """The member's client; with `retries=False`, one whose SDK never retries (a pool's
        failover retries on another member instead)."""
        from openai import OpenAI

        key = upstream.name if retries else f"{upstream.name} no-retries"
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = OpenAI(
                    api_key=upstream.api_key,
                    base_url=upstream.base_url,
                    timeout=upstream.timeout_seconds,
                    max_retries=upstream.max_retries if retries else 0,
                    default_headers=dict(upstream.headers) or None,
                )
                self._clients[key] = client
            return client


def load_upstreams_file(
    path: str | os.PathLike,
    *,
    default_timeout_seconds: float,
    default_max_retries: int,
    environ: Mapping[str, str] | None = None,
) -> list[Upstream]:
    """The upstreams of the TOML file at `path`, in file order; ValueError on any mistake."""
    environ = os.environ if environ is None else environ
    where = f"UPSTREAMS_FILE {os.fspath(path)}"
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ValueError(
            f"{where}: cannot be read ({exc.strerror or exc}); "
            "fix the path or leave UPSTREAMS_FILE empty"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where}: is not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"upstream"})
    if unknown:
        raise ValueError(
            f"{where}: unknown top-level key {unknown[0]!r}; "
            "the file holds only [[upstream]] tables"
        )
    tables = document.get("upstream", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: 'upstream' must be written as [[upstream]] tables")
    gunicorn_timeout = gunicorn_timeout_seconds(environ)
    upstreams: list[Upstream] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables, start=1):
        members = _parse_upstream(
            table,
            f"{where}: [[upstream]] #{index}",
            environ=environ,
            default_timeout_seconds=default_timeout_seconds,
            default_max_retries=default_max_retries,
            gunicorn_timeout=gunicorn_timeout,
        )
        name = table["name"]
        if name in seen:
            raise ValueError(
                f"{where}: [[upstream]] #{index} name {name!r} is already used by "
                f"[[upstream]] #{seen[name]}; give each upstream its own name"
            )
        seen[name] = index
        upstreams.extend(members)
    return upstreams


def _parse_upstream(
    table: dict,
    where: str,
    *,
    environ: Mapping[str, str],
    default_timeout_seconds: float,
    default_max_retries: int,
    gunicorn_timeout: int,
) -> list[Upstream]:
    """The table's members: one, or one per key of `api_key_envs` (named NAME#1, NAME#2...)."""
    # The name first, so that every later message can say which upstream it is about.
    name = _checked_name(table, where)
    where = f"{where} {name!r}"
    _check_fields(table, where)
    base_url = _checked_base_url(table["base_url"], where)
    api_keys = _checked_api_keys(table, where, environ)
    models = _checked_models(table["models"], where)
    timeout_seconds, max_retries = _checked_time_limits(
        table, where, default_timeout_seconds, default_max_retries, gunicorn_timeout
    )
    weight, priority = _checked_pool_place(table, where)
    headers = _checked_headers(table.get("headers", {}), where)
    via_chat = _checked_responses_mode(table.get("responses", "native"), f"{where}: responses")
    return [
        Upstream(
            name=name if "api_key_envs" not in table else f"{name}#{number}",
            base_url=base_url,
            api_key=api_key,
            timeout_seconds=float(timeout_seconds),
            max_retries=max_retries,
            patterns=tuple(models),
            headers=headers,
            weight=weight,
            priority=priority,
            responses_via_chat=via_chat,
        )
        for number, api_key in enumerate(api_keys, start=1)
    ]


def _checked_name(table: dict, where: str) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{where}: name must be a string of a-z, 0-9, '_' and '-', e.g. name = \"qwen\""
        )
    if name in RESERVED_NAMES:
        raise ValueError(
            f"{where}: name {name!r} is reserved for the OPENAI_BASE_URL upstream; pick another"
        )
    return name


def _check_fields(table: dict, where: str) -> None:
    for key in table:
        if key not in _FIELDS:
            hint = (
                "keys are never read from the file: put the key in an environment variable "
                "and name that variable in api_key_env"
                if "key" in key.lower()
                else f"known fields: {', '.join(_FIELDS)}"
            )
            raise ValueError(f"{where}: unknown field {key!r}; {hint}")
    for key in _REQUIRED:
        if key not in table:
            raise ValueError(f"{where}: the required field {key!r} is missing")


def _checked_base_url(base_url, where: str) -> str:
    if not isinstance(base_url, str):
        raise ValueError(f'{where}: base_url must be a string like "https://host/v1"')
    base_url = base_url.strip().rstrip("/")
    parts = urlsplit(base_url)
    if parts.username is not None or parts.password is not None:
        # Not echoed: the user part of a URL is a credential.
        raise ValueError(
            f"{where}: base_url must not carry credentials (user@host); "
            "put the key in an environment variable and name it in api_key_env"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"{where}: base_url {base_url!r} must be an http:// or https:// URL with a host, "
            'e.g. "https://api.deepseek.com/v1"'
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{where}: base_url {base_url!r} must not have a query or a fragment")
    try:
        parts.port  # noqa: B018 -- raises on a port that is not a number in range
    except ValueError:
        raise ValueError(f"{where}: base_url {base_url!r} has an invalid port") from None
    return base_url


def _checked_api_keys(table: dict, where: str, environ: Mapping[str, str]) -> list[str]:
    """The keys named by api_key_env (one) or api_key_envs (one member per key)."""
    if "api_key_env" not in table and "api_key_envs" not in table:
        raise ValueError(f"{where}: the required field 'api_key_env' is missing")
    if "api_key_env" in table and "api_key_envs" in table:
        raise ValueError(
            f"{where}: give api_key_env (one key) or api_key_envs (one member per key, "
            'e.g. api_key_envs = ["KEY_A", "KEY_B"]), not both'
        )
    if "api_key_env" in table:
        return [_checked_api_key(table["api_key_env"], where, environ)]
    names = table["api_key_envs"]
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names):
        raise ValueError(
            f"{where}: api_key_envs must be a non-empty list of distinct environment "
            'variable names, e.g. api_key_envs = ["KEY_A", "KEY_B"]'
        )
    return [_checked_api_key(name, where, environ) for name in names]


def _checked_responses_mode(mode, where: str) -> bool:
    """Whether v1/responses is translated to chat completions for this upstream."""
    if mode not in RESPONSES_MODES:
        raise ValueError(
            f'{where} must be "native" (the upstream serves /responses) or "chat" (it '
            "speaks chat completions only: text responses are translated)"
        )
    return mode == "chat"


def _checked_pool_place(table: dict, where: str) -> tuple[float, int]:
    """(weight, priority): how often the member is picked among its peers, and its tier."""
    weight = table.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ValueError(f"{where}: weight must be a number above 0, e.g. weight = 2")
    priority = table.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(
            f"{where}: priority must be a whole number (lower is tried first), e.g. priority = 1"
        )
    return weight, priority


def _checked_api_key(api_key_env, where: str, environ: Mapping[str, str]) -> str:
    if not isinstance(api_key_env, str) or not api_key_env.strip():
        raise ValueError(
            f"{where}: api_key_env must be the name of an environment variable, "
            'e.g. api_key_env = "DASHSCOPE_API_KEY"'
        )
    api_key = environ.get(api_key_env, "").strip()
    if not api_key:
        raise ValueError(
            f"{where}: the environment variable {api_key_env} named by api_key_env is unset "
            "or empty; export the upstream's key in it (any non-empty value for a local "
            "server that checks none)"
        )
    return api_key


def _checked_models(models, where: str) -> list[str]:
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(p, str) and p.strip() for p in models)
    ):
        raise ValueError(
            f"{where}: models must be a non-empty list of model-name patterns, "
            'e.g. models = ["qwen-*"]'
        )
    return models


def _checked_time_limits(
    table: dict,
    where: str,
    default_timeout_seconds: float,
    default_max_retries: int,
    gunicorn_timeout: int,
) -> tuple[float, int]:
    """(timeout_seconds, max_retries), whose worst case stays below the gunicorn timeout."""
    timeout_seconds = table.get("timeout_seconds", default_timeout_seconds)
    if (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not timeout_seconds > 0
    ):
        raise ValueError(f"{where}: timeout_seconds must be a number of seconds above 0")
    max_retries = table.get("max_retries", default_max_retries)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"{where}: max_retries must be a whole number, 0 or more")
    worst_case = float(timeout_seconds) * (1 + max_retries)
    if worst_case >= gunicorn_timeout:
        raise ValueError(
            f"{where}: timeout_seconds x attempts = {timeout_seconds:g}s x {1 + max_retries} "
            f"= {worst_case:g}s must stay below the gunicorn timeout ({gunicorn_timeout}s); "
            "lower timeout_seconds or max_retries, or raise GUNICORN_TIMEOUT"
        )
    return timeout_seconds, max_retries


def _checked_headers(headers, where: str) -> dict:
    if not isinstance(headers, dict):
        raise ValueError(
            f'{where}: headers must be a table of strings, e.g. headers = {{ "X-A" = "b" }}'
        )
    for header, value in headers.items():
        if not _HEADER_NAME.fullmatch(header):
            raise ValueError(f"{where}: headers: {header!r} is not a valid header name")
        if header.lower() == "authorization":
            raise ValueError(
                f"{where}: headers may not set Authorization; the key comes from api_key_env"
            )
        # The value is not echoed: a header may carry a secret of its own.
        if not isinstance(value, str) or "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"{where}: headers: the value of {header!r} must be a one-line string")
    return dict(headers)
