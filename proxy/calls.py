"""One call through the gateway, whichever door it came in by (`/api` envelopes or the
OpenAI-compatible `/v1/*`): authenticate, look up, check, validate, admit, execute, settle.

No Flask here. A door reads its request into a CallRequest (or a GatewayError when its
parameters are refused), hands it to `answer_call` with the CallContext it took, and renders
the CallResult (or StreamingCall) its way. Every outcome, refused parameters included, is
settled: one usage row per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

from proxy import metrics
from proxy.account_values import Account, Credentials
from proxy.catalog import MethodSpec
from proxy.dispatcher import Call
from proxy.errors import (
    API_NOT_ADDED,
    INTERNAL_ERROR,
    SUCCESS,
    UNKNOWN_ERROR,
    GatewayError,
)
from proxy.rate_limits import estimate_call_tokens
from proxy.running import CUT_CODE
from proxy.uploads import FileUpload
from proxy.usage import UsageRecord, token_count

log = logging.getLogger("proxy")

# The code recorded for a stream whose client left before any chunk: not charged.
CLIENT_GONE = UNKNOWN_ERROR


@dataclass(frozen=True)
class CallRequest:
    credentials: Credentials
    method: str  # as the client named it; looked up in the catalog, never made into a URL
    o_args: object  # a JSON string (GET, form), a dict (JSON body), or None
    files: Mapping[str, FileUpload] = field(default_factory=dict)  # multipart parts by name
    platform: str | None = None  # from /<platform>/custom; None elsewhere
    version: str = ""
    use_cache: bool = True


@dataclass
class CallResult:
    code: str
    response: object
    detail: str = ""
    cached: bool = False
    method: str = ""  # the catalog name once known, else what the client sent
    platform: str = ""
    api_info: str = ""
    last_id: str = ""
    elapsed_seconds: float = 0.0
    http_status: int | None = None  # GatewayError.http_status, for the /v1 door
    retry_after_seconds: int | None = None  # when a per-minute limit frees (4008)
    upstream: str | None = None  # the member that answered (X-Upstream), never a key


@dataclass(frozen=True)
class CallContext:
    """Who asked, and since when: taken by the door before it reads the request."""

    request_id: str
    client_ip: str
    started: float  # time.perf_counter() when the door took the request
    door: str = ""  # "api" or "v1": the metrics' label (proxy/metrics.py)


def answer_call(gateway, call: CallRequest | GatewayError, context: CallContext):
    """Run the call a door read, or settle the refusal of one it could not read."""
    if isinstance(call, GatewayError):
        return refuse_call(gateway, call, context)
    return run_call(gateway, call, context)


def refuse_call(gateway, refusal: GatewayError, context: CallContext) -> CallResult:
    """Settle a request whose parameters were refused before it named a call: its usage row,
    no account, no method."""
    record = Record(gateway, context, platform="openai")
    return record.settle(record.refused(refusal), {})


def run_call(gateway, call: CallRequest, context: CallContext) -> CallResult | StreamingCall:
    """Run a call to its end (or, for a stream, to its first chunk): every outcome is settled,
    with one usage row; an unexpected failure is 5000 and its log, never its trace."""
    record = Record(gateway, context, method=call.method, platform=call.platform or "openai")
    try:
        return _run(gateway, record, call)
    except GatewayError as refused:
        return record.settle(record.refused(refused), {})
    except Exception:  # never a trace or a secret in the answer; the request id finds the log
        log.exception("unexpected error in request %s", context.request_id)
        failure = GatewayError(UNKNOWN_ERROR, f"see log of {context.request_id}")
        return record.settle(record.refused(failure), {})


def _run(gateway, record: Record, call: CallRequest) -> CallResult | StreamingCall:
    """Authenticate, look up, read the arguments (4003 before anything is held), answer a
    cache hit at once, else admit, call, settle."""
    account = record.account = gateway.accounts.authenticate(
        call.credentials, today=gateway.meter.today(), now=time.time(), named=record.key_names
    )
    if account.api_key is not None:
        account.api_key.check_address(record.context.client_ip)
    spec = gateway.dispatcher.lookup(call.method, call.platform)
    record.method, record.platform = spec.name, spec.platform
    _check_enabled(gateway, spec, account)
    args, o_args, conversation = gateway.arguments.read(spec, call.o_args, call.files)
    record.upstream, record.model = _upstream_name(gateway, spec, args), args.get("model")
    if account.api_key is not None:
        account.api_key.check_model(args.get("model"))
    remember = _with_history(gateway.chats, account, conversation, args)
    facts = Call(
        method=spec.name,
        o_args=o_args,
        account_id=account.id,
        version=call.version,
        use_cache=call.use_cache and conversation is None,
        platform=call.platform,
        request_id=record.request_id,
    )
    record.looks_in_cache = facts.use_cache and spec.cacheable and not args.get("stream")
    record.price = gateway.meter.call_price(spec.name, args) if spec.charged else None
    if facts.use_cache and _paid_at_once(spec, args, account):
        kept = gateway.dispatcher.cached_outcome(spec, args, facts)
        if kept is not None:  # paid and settled at once: nothing to hold meanwhile
            return record.settle_from_cache(record.answered(kept), kept.usage)
    tokens = estimate_call_tokens(args, gateway.meter.default_completion_tokens)
    record.admission = gateway.meter.admit(
        account, spec.name, charged=spec.charged, tokens=tokens, price=record.price
    )
    gateway.running.add(record)  # renewed while it runs; refused once the worker stops
    if args.get("stream"):
        return _open_stream(gateway.dispatcher, record, spec, args, remember)
    outcome = _execute(gateway.dispatcher, record, spec, args, facts)
    if remember is not None and outcome.code == SUCCESS:
        remember(_answer_text(outcome.response))
    return record.settle(record.answered(outcome), outcome.usage)


def _execute(dispatcher, record: Record, spec: MethodSpec, args: dict, facts: Call):
    """The dispatcher's answer; the time it took is the upstream's, unless the cache gave it."""
    started = time.perf_counter()
    try:
        outcome = dispatcher.execute(spec, args, facts)
    except GatewayError:
        record.upstream_seconds = time.perf_counter() - started  # the upstream's failure
        raise
    if not outcome.cached:
        record.upstream_seconds = time.perf_counter() - started
    return outcome


def _upstream_name(gateway, spec: MethodSpec, args: Mapping) -> str:
    """The name of the upstream the router picks for this call; "" for a method the gateway
    answers itself."""
    if spec.in_gateway:
        return ""
    if spec.platform in gateway.dispatcher.platforms:
        return spec.platform
    return gateway.dispatcher.router.route_model(args.get("model")).name


def _check_enabled(gateway, spec: MethodSpec, account: Account) -> None:
    """4006 / 4009 when the API is stopped or in maintenance, 4012 when the account may not
    call it."""
    gateway.api_states.check(spec.name, spec.platform, account.id)
    if not account.may_call(spec.name, spec.platform):
        raise GatewayError(
            API_NOT_ADDED,
            f"{spec.name} is not enabled for this account; ask the operator to add "
            f"{spec.platform} or {spec.name} to its APIs",
        )


def _with_history(chats, account: Account, conversation, args: dict):
    """In a conversation (chat_id), the messages so far go before the call's own; then a
    function that stores the call's messages and its answer. None outside one."""
    if conversation is None:
        return None
    new_messages = args["messages"]
    args["messages"] = [*chats.history(account.id, conversation.chat_id), *new_messages]
    return partial(_remember, chats, account.id, conversation, new_messages)


def _open_stream(dispatcher, record: Record, spec: MethodSpec, args: dict, remember):
    # Failed over until a member's first chunk.
    stream = dispatcher.open_stream(spec, args, account_id=record.account.id)
    chunks = iter(stream)
    first = _next_chunk(chunks, record)  # the upstream's refusal surfaces here, before any byte
    events = _stream_events(stream, chunks, first, record, remember)
    return StreamingCall(events, upstream=stream.upstream)


@dataclass
class StreamingCall:
    """A `stream: true` call under way: ("chunk", dict) events as the upstream sends them,
    then ("end", CallResult) once it is settled. Closing it early (the client went away)
    stops the upstream and settles the call without an end event."""

    events: Iterator[tuple[str, object]]
    upstream: str | None = None  # the member streaming (X-Upstream)


@dataclass
class Record:
    """What settling a call needs, whenever it ends (at once, when its stream ends, or when a
    stopping worker cuts it). A call is settled once: later settlements get the first one's
    result."""

    gateway: object
    context: CallContext
    account: Account | None = None
    # The account the call's key names, before the key is proven: a refusal's usage row names
    # it (docs/console.md), though nothing is charged or counted to it.
    named_account: Account | None = None
    admission: object = None
    price: object = None  # proxy.prices.CallPrice of a charged call, once its arguments are read
    method: str = ""  # the catalog name once looked up, else what the client sent
    platform: str = ""
    outcome: CallResult | None = None
    # For the metrics (proxy/metrics.py): the upstream routed to, the model asked, whether
    # the cache was looked in, and the time spent waiting on the upstream and on the client.
    upstream: str = ""
    model: object = None
    looks_in_cache: bool = False
    upstream_seconds: float = 0.0
    client_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        metrics.call_started(self.context.door)

    @property
    def request_id(self) -> str:
        """The context's, for the running calls' log lines (proxy/running.py)."""
        return self.context.request_id

    def key_names(self, account: Account) -> None:
        self.named_account = account

    def answered(self, outcome) -> CallResult:
        """The result of the dispatcher's Outcome (from the cache or the upstream)."""
        return CallResult(
            code=outcome.code,
            response=outcome.response,
            cached=outcome.cached,
            method=self.method,
            platform=self.platform,
            upstream=outcome.upstream,
        )

    def refused(self, refusal: GatewayError) -> CallResult:
        return CallResult(
            code=refusal.code,
            response=refusal.response,
            detail=refusal.detail,
            method=self.method,
            platform=self.platform,
            http_status=refusal.http_status,
            retry_after_seconds=refusal.retry_after_seconds,
        )

    def settle(self, result: CallResult, usage: Mapping) -> CallResult:
        with self._lock:
            if self.outcome is None:
                self.outcome = self._settle(result, usage)
                self._count(self.outcome, usage)
        self.gateway.running.remove(self)
        return self.outcome

    def cut(self, detail: str) -> bool:
        """Settle the call now as cut (proxy/running.py), unless it is settled already."""
        if self.outcome is not None:
            return False
        result = self.refused(GatewayError(CUT_CODE, detail))
        return self.settle(result, {}) is result

    def settle_from_cache(self, result: CallResult, usage: Mapping) -> CallResult:
        """Settle a call the cache answered before anything was held: paid, counted and
        recorded in one transaction (Meter.charge_hit). When it cannot be paid (4013,
        4016) it is settled as that refusal."""
        try:
            settlement = self.gateway.meter.charge_hit(
                self.account, self._usage_record(result, usage)
            )
        except GatewayError as refused:
            return self.settle(self.refused(refused), {})
        except Exception:  # an unmetered answer is not handed out as a success
            self._unrecorded(result)
        else:
            result.last_id, result.api_info = str(settlement.usage_id), settlement.api_info
        with self._lock:
            self.outcome = result
        self._count(result, usage)
        return result

    def _settle(self, result: CallResult, usage: Mapping) -> CallResult:
        try:
            settlement = self.gateway.meter.settle(
                self.admission, self._usage_record(result, usage), self.account
            )
            result.last_id, result.api_info = str(settlement.usage_id), settlement.api_info
        except Exception:  # an unmetered answer is not handed out as a success
            self._unrecorded(result)
        return result

    def _usage_record(self, result: CallResult, usage: Mapping) -> UsageRecord:
        result.elapsed_seconds = time.perf_counter() - self.context.started
        account = self.account or self.named_account
        return UsageRecord(
            request_id=self.request_id,
            error_code=result.code,
            account_id=account.id if account else None,
            platform=result.platform,
            method=result.method,
            cached=result.cached,
            prompt_tokens=token_count(usage.get("prompt_tokens")),
            completion_tokens=token_count(usage.get("completion_tokens")),
            total_tokens=token_count(usage.get("total_tokens")),
            latency_ms=int(result.elapsed_seconds * 1000),
            client_ip=self.context.client_ip,
            upstream=result.upstream,
            key_id=account.api_key.id if account and account.api_key else None,
            credits=self.price.final(usage) if self.price is not None else 0,
        )

    def _count(self, result: CallResult, usage: Mapping) -> None:
        """The settled call in the metrics (which make every value a bounded label)."""
        waited = self.upstream_seconds
        elapsed = time.perf_counter() - self.context.started
        metrics.call_settled(
            door=self.context.door,
            method=result.method,
            code=result.code,
            upstream=result.upstream or self.upstream,
            model=self.gateway.model_labels.label(self.model),
            usage={} if result.cached else usage,  # a cache hit cost the upstream no tokens
            overhead_seconds=elapsed - waited - self.client_seconds,
            upstream_seconds=waited if waited > 0 else None,
            cache_result=("hit" if result.cached else "miss") if self.looks_in_cache else None,
        )

    def _unrecorded(self, result: CallResult) -> None:
        log.exception("usage ledger failed in request %s", self.request_id)
        result.code, result.response, result.cached = INTERNAL_ERROR, [], False
        result.http_status = None
        result.detail = f"the call could not be recorded; see log of {self.request_id}"


def _paid_at_once(spec: MethodSpec, args: Mapping, account: Account) -> bool:
    """Whether a cache hit of this call would be paid and settled in one step
    (Meter.charge_hit): a charged, cacheable call that is not a stream, of an account without
    a concurrency slot to hold."""
    return (
        spec.charged
        and spec.cacheable
        and not args.get("stream")
        and account.concurrency_limit is None
    )


def _remember(chats, account_id: int, conversation, new_messages: list, answer) -> None:
    """Store the call's own messages and the answer in its conversation."""
    chats.append(
        account_id,
        conversation,
        [*new_messages, {"role": "assistant", "content": answer}],
    )


def _answer_text(response) -> str:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices:
        return ""
    return (choices[0].get("message") or {}).get("content") or ""


def _delta_text(chunk: dict) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    return (choices[0].get("delta") or {}).get("content") or choices[0].get("text") or ""


def _stream_events(stream, chunks, first, record: Record, remember=None):
    """Pass the chunks on; settle when the upstream ends, fails, or the client goes away.

    Charging (docs/streaming.md): a stream that ends normally is charged (0000) with the
    upstream's usage; one the upstream breaks off is refunded with the failure's code; one
    the client abandons is stopped upstream and charged when at least one chunk reached the
    client (the upstream has produced tokens), refunded when none did."""
    result = CallResult(
        code=SUCCESS,
        response=[],
        method=record.method,
        platform=record.platform,
        upstream=stream.upstream,
    )
    delivered, answer = 0, []
    try:
        chunk = first
        while chunk is not None and record.outcome is None:  # not cut by a stopping worker
            answer.append(_delta_text(chunk))
            handed = time.perf_counter()
            try:
                yield "chunk", chunk
            finally:  # the client's pace is not the gateway's overhead
                record.client_seconds += time.perf_counter() - handed
            delivered += 1
            chunk = _next_chunk(chunks, record)
    except GatewayError as exc:
        result.code, result.response, result.detail = exc.code, exc.response, exc.detail
    except GeneratorExit:
        stream.close()
        if not delivered:
            result.code, result.detail = CLIENT_GONE, "the client left before the first chunk"
        record.settle(result, stream.usage)
        raise
    except Exception:
        log.exception("unexpected error in the stream of request %s", record.request_id)
        result.code, result.detail = UNKNOWN_ERROR, f"see log of {record.request_id}"
    stream.close()
    if remember is not None and result.code == SUCCESS and record.outcome is None:
        remember("".join(answer))
    yield "end", record.settle(result, stream.usage)


def _next_chunk(chunks, record: Record):
    """The upstream's next chunk (None at its end), the wait counted as the upstream's."""
    asked = time.perf_counter()
    try:
        return next(chunks, None)
    finally:
        record.upstream_seconds += time.perf_counter() - asked
