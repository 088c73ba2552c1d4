"""Upstream routing: which OpenAI-compatible server answers a model, and its SDK client."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from openai import OpenAI

# Used when OPENAI_BASE_URL is empty: the bundled stub that `make run` starts.
STUB_BASE_URL = "http://127.0.0.1:8001/v1"
STUB_API_KEY = "sk-stub"


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    api_key: str
    timeout_seconds: float
    max_retries: int


class UpstreamRouter:
    """Routes a model name to an upstream. One default today; the catalog issue adds patterns."""

    def __init__(self, default: Upstream):
        self.default = default
        self._clients: dict[str, OpenAI] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config) -> UpstreamRouter:
        base_url = config["OPENAI_BASE_URL"] or STUB_BASE_URL
        api_key = config["OPENAI_API_KEY"] or (
            STUB_API_KEY if not config["OPENAI_BASE_URL"] else ""
        )
        return cls(
            Upstream(
                name="default" if config["OPENAI_BASE_URL"] else "stub",
                base_url=base_url.rstrip("/"),
                api_key=api_key or "unset",
                timeout_seconds=config["UPSTREAM_TIMEOUT_SECONDS"],
                max_retries=config["UPSTREAM_MAX_RETRIES"],
            )
        )

    def route_model(self, model: str | None) -> Upstream:
        return self.default

    def warm_up(self) -> None:
        """Build the default client and touch the SDK resources the catalog uses: the SDK
        imports them on first use, which would otherwise stall a worker's first calls."""
        client = self.client_for(self.default)
        for resource in ("chat", "completions", "embeddings", "moderations", "models"):
            getattr(client, resource)
        client.chat.completions  # noqa: B018

    def client_for(self, upstream: Upstream) -> OpenAI:
        with self._lock:
            client = self._clients.get(upstream.name)
            if client is None:
                client = OpenAI(
                    api_key=upstream.api_key,
                    base_url=upstream.base_url,
                    timeout=upstream.timeout_seconds,
                    max_retries=upstream.max_retries,
                )
                self._clients[upstream.name] = client
            return client
