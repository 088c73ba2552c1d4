"""The dispatcher: catalog lookup, cache, and the handler call (arguments checked by
proxy/arguments.py).

No Flask here: the doors (proxy/doors/) hand in plain values and gets an Outcome back.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from proxy import response_owners
from proxy.arguments import ArgumentRules
from proxy.cache import AnswerCache, TieredCache, canonical_key
from proxy.catalog import MethodSpec, find_method
from proxy.errors import (
    API_NOT_FOUND,
    NO_RESULT,
    SUCCESS,
    GatewayError,
)
from proxy.failover import Failover
from proxy.handlers import openai as openai_handlers
from proxy.handlers import responses_via_chat
from proxy.response_owners import ResponseOwners
from proxy.uploads import cache_safe
from proxy.upstream_health import UpstreamHealth
from proxy.upstreams import UpstreamRouter
from proxy.usage import token_usage


@dataclass(frozen=True)
class Call:
    method: str
    o_args: dict
    account_id: int
    version: str = ""
    use_cache: bool = True
    platform: str | None = None  # from /<platform>/custom; None on /api
    request_id: str = ""


@dataclass
class Outcome:
    code: str
    response: object
    cached: bool = False
    usage: dict = field(default_factory=dict)
    upstream: str | None = None  # the member that answered; None for the cache or the gateway


class Dispatcher:
    def __init__(
        self,
        *,
        router: UpstreamRouter,
        cache: TieredCache | AnswerCache,  # AnswerCache alone: no store the workers share
        arguments: ArgumentRules,
        shared_cache: bool = False,
        jobs=None,  # proxy.jobs.ImageJobs, for images/submit and images/get
        files=None,  # proxy.files.FileOwners, for the v1/files methods
        failover: Failover | None = None,  # a pool's failover (default: in-process health)
        platforms: Mapping[str, object] | None = None,  # catalog.PLATFORM_CLIENTS, built
        response_owners: ResponseOwners | None = None,  # whose each stored response is
    ):
        self.router = router
        self.failover = failover or Failover(router, UpstreamHealth())
        self.cache = cache
        self.arguments = arguments
        self.shared_cache = shared_cache
        self.jobs = jobs
        self.files = files
        self.platforms = dict(platforms or {})
        self.response_owners = response_owners

    def lookup(self, method: str, platform: str | None) -> MethodSpec:
        spec = find_method(method)
        if spec is None or (platform is not None and platform != spec.platform):
            shown = method if len(method) <= 80 else method[:80] + "..."
            raise GatewayError(
                API_NOT_FOUND,
                f"method {shown!r} is not in the catalog; GET /api/methods lists the methods",
            )
        return spec

    def dispatch(self, call: Call) -> Outcome:
        spec = self.lookup(call.method, call.platform)
        return self.execute(spec, self.arguments.validate(spec, call.o_args), call)

    def open_stream(self, spec: MethodSpec, args: dict, account_id: int = 0) -> UpstreamStream:
        """A `stream: true` call (never cached): its chunks as the upstream sends them."""
        method, args = spec.streams_as(args) if spec.streams_as else (spec.name, args)
        typed = method in openai_handlers.TYPED_STREAMS  # usage in its last event, always
        options = args.get("stream_options") if isinstance(args.get("stream_options"), dict) else {}
        wants_usage = typed or options.get("include_usage") is True
        asked = args if typed else {**args, "stream_options": {**options, "include_usage": True}}

        via_chat = self._responses_via_chat(spec, args)

        def first_chunk(client):
            # A member that fails before its first chunk is failed over like any call.
            if via_chat:
                chunks = responses_via_chat.stream_events(client, asked)
            else:
                chunks = openai_handlers.stream_chunks(client, method, asked)
            first = next(chunks, None)
            return chunks, first

        member, (chunks, first) = self.failover.call(args.get("model"), first_chunk)
        owners = self.response_owners if spec.name == response_owners.CREATE else None
        return UpstreamStream(
            chunks,
            client_wants_usage=wants_usage,
            first=first,
            upstream=member.name,
            created=None if owners is None else functools.partial(owners.record, account_id),
        )

    def execute(self, spec: MethodSpec, args: dict, call: Call) -> Outcome:
        """Answer validated `args` (from ArgumentRules) from the cache, the upstream, or the
        gateway itself."""
        served: list[str] = []  # the member that answered, when one did
        self._check_owner(spec, args, call)
        upstream_url, answer = self._answerer(spec, args, call, served)
        if not (call.use_cache and spec.cacheable):
            payload, _ = answer()
            outcome = _outcome(payload, cached=False, upstream=served[-1] if served else None)
        else:
            key = self._cache_key(spec, args, call, upstream_url)
            payload, hit = self.cache.get_or_compute(key, answer)
            upstream = served[-1] if served and not hit else None
            outcome = _outcome(payload, cached=hit, upstream=upstream)
        self._note_owner(spec, args, call, outcome.response)
        return outcome

    def _check_owner(self, spec: MethodSpec, args: dict, call: Call) -> None:
        """A stored response is reached by the account that created it only."""
        if self.response_owners is not None and spec.name in response_owners.READS:
            self.response_owners.check(call.account_id, args["response_id"])

    def _note_owner(self, spec: MethodSpec, args: dict, call: Call, payload) -> None:
        if self.response_owners is None or not isinstance(payload, Mapping):
            return
        if spec.name == response_owners.CREATE:
            self.response_owners.record(call.account_id, payload.get("id"))
        elif spec.name == "v1/responses/delete":
            self.response_owners.forget(args["response_id"])

    def cached_outcome(self, spec: MethodSpec, args: dict, call: Call) -> Outcome | None:
        """The cache's answer to validated `args`, if it holds one; None otherwise (nothing
        is computed, and nothing is waited for)."""
        if not (call.use_cache and spec.cacheable):
            return None
        upstream_url = self._upstream_url(spec, args)
        payload = self.cache.get(self._cache_key(spec, args, call, upstream_url))
        return None if payload is None else _outcome(payload, cached=True)

    def _answerer(self, spec: MethodSpec, args: dict, call: Call, served: list[str]):
        """(the upstream's URL, or "gateway"; a function computing (payload, cacheable) that
        appends the member that answered to `served`)."""
        if spec.in_gateway:

            def answer() -> tuple[dict, bool]:
                payload = spec.handler(self, call, args)
                return payload, "unavailable_upstreams" not in payload  # partial: not kept

            return "gateway", answer
        if spec.platform in self.platforms:
            client = self.platforms[spec.platform]

            def call_platform() -> tuple[dict, bool]:
                payload = spec.handler(client, args)
                served.append(spec.platform)
                return payload, True

            return self._upstream_url(spec, args), call_platform
        model = args.get("model")
        handler = (
            responses_via_chat.create_response
            if self._responses_via_chat(spec, args)
            else spec.handler
        )

        def call_upstream() -> tuple[dict, bool]:
            member, payload = self.failover.call(model, lambda client: handler(client, args))
            served.append(member.name)
            return payload, True

        return self.router.route_model(model).base_url, call_upstream

    def _responses_via_chat(self, spec: MethodSpec, args: dict) -> bool:
        """A v1/responses call to a pool that speaks chat completions only."""
        if spec.name != response_owners.CREATE:
            return False
        return self.router.route_model(args.get("model")).responses_via_chat

    def _upstream_url(self, spec: MethodSpec, args: dict) -> str:
        """Whom the call goes to, as the cache key names it."""
        if spec.in_gateway:
            return "gateway"
        if spec.platform in self.platforms:
            return f"{spec.platform}:{getattr(self.platforms[spec.platform], 'base_url', '')}"
        return self.router.route_model(args.get("model")).base_url

    def _cache_key(self, spec: MethodSpec, args: dict, call: Call, upstream_url: str) -> str:
        return canonical_key(
            tenant="*" if self.shared_cache else str(call.account_id),
            method=spec.name,
            version=call.version,
            upstream=upstream_url,
            o_args=cache_safe(args),
        )


class UpstreamStream:
    """The chunks of a streamed call as the client asked for them, and the upstream's token
    usage once its final chunk has passed. The usage chunk is always asked for; when the
    client did not ask, it and the `usage: null` of the other chunks are taken out again."""

    def __init__(
        self,
        chunks: Iterator[dict],
        *,
        client_wants_usage: bool,
        first: dict | None = None,
        upstream: str | None = None,
        created: Callable[[str], None] | None = None,  # told a Responses stream's response id
    ):
        self._chunks = chunks
        self._first = first  # read while picking the member: none reached the client yet
        self.client_wants_usage = client_wants_usage
        self.usage: dict = {}
        self.upstream = upstream
        self._created = created

    def __iter__(self) -> Iterator[dict]:
        head = [] if self._first is None else [self._first]
        for chunk in itertools.chain(head, self._chunks):
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                self.usage = usage
            elif isinstance(chunk.get("response"), dict):  # a Responses API event
                self.usage = token_usage(chunk["response"].get("usage")) or self.usage
                if self._created is not None and chunk.get("type") == "response.created":
                    self._created(chunk["response"].get("id"))
            if not self.client_wants_usage:
                if usage is not None and not chunk.get("choices"):
                    continue  # the usage chunk the client did not ask for
                chunk.pop("usage", None)
            yield chunk

    def close(self) -> None:
        """Stop reading: the upstream connection closes, and the upstream stops."""
        self._chunks.close()


def _outcome(payload: dict, *, cached: bool, upstream: str | None = None) -> Outcome:
    usage = token_usage(payload.get("usage"))
    code = NO_RESULT if _is_empty_result(payload) else SUCCESS
    return Outcome(code=code, response=payload, cached=cached, usage=usage, upstream=upstream)


def _is_empty_result(payload: dict) -> bool:
    """A successful answer with nothing in it: no choices, no data, no results, no content
    blocks (a v1/messages Message)."""
    for list_field in ("choices", "data", "results", "content"):
        if list_field in payload:
            return payload[list_field] == []
    return False
