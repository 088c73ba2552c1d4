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
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from proxy.upstreams_file import (
    CATALOG_RESOURCES,
    STUB_API_KEY,
    STUB_BASE_URL,
    Upstream,
    checked_responses_mode,
    load_upstreams_file,
)

if TYPE_CHECKING:  # imported by client_for: the admin commands never need the SDK
    from openai import OpenAI

log = logging.getLogger("proxy")


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
            responses_via_chat=checked_responses_mode(
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

    @property
    def file_path(self) -> str:
        """UPSTREAMS_FILE as this router reads it ("" without one)."""
        return (self._config or {}).get("UPSTREAMS_FILE", "") or ""

    def check(self) -> tuple[Upstream, list[Upstream]]:
        """What a reload would take now, read as load() reads it; ValueError on a bad file."""
        return self.load(self._config)

    def refresh(self, *, at_once: bool = False) -> None:
        """Reload the upstreams if a reload was asked for since the last look (cheap: a
        clock read, and one small query every `reload_check_seconds`); `at_once` looks now
        (the process that asked for the reload takes it before it answers)."""
        now = time.monotonic()
        if self._generation_of is None or (now < self._next_check and not at_once):
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


def shown_url(url: str) -> str:
    """A base URL as operators and /health see it: without a user part or a query, which may
    carry a key (OPENAI_BASE_URL is not checked as UPSTREAMS_FILE's base_url is)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
