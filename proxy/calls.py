"""One call through the gateway, whichever door it came in by (`/api` envelopes or the
OpenAI-compatible `/v1/*`): authenticate, look up, check, validate, admit, execute, settle.

No Flask here: a door hands in a `prepare` function that reads its request into a
CallRequest (raising GatewayError for bad parameters) and renders the CallResult its way.
Every outcome, bad parameters included, is settled: one usage row per call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial

from proxy.accounts import Account, Credentials
from proxy.dispatcher import Call
from proxy.errors import (
    API_NOT_ADDED,
    INTERNAL_ERROR,
    SUCCESS,
    UNKNOWN_ERROR,
    GatewayError,
)
from proxy.running import CUT_CODE
from proxy.uploads import FileUpload
from proxy.usage import UsageRecord

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


def run_call(
    gateway,
    config: Mapping,
    prepare: Callable[[], CallRequest],
    *,
    request_id: str,
    client_ip: str,
) -> CallResult | StreamingCall:
    record = Record(gateway, request_id, client_ip, started=time.perf_counter())
    method_name, platform = "", None
    code, response, detail, cached, usage = UNKNOWN_ERROR, [], "", False, {}
    http_status = None
    try:
        call = prepare()
        method_name, platform = call.method, call.platform
        account = record.account = gateway.accounts.authenticate(
            call.credentials, today=gateway.meter.today(), now=time.time()
        )
        spec = gateway.dispatcher.lookup(call.method, call.platform)
        method_name = record.method = spec.name
        record.platform = platform or "openai"
        gateway.api_states.check(spec.name, spec.platform, account.id)
        if not account.may_call(spec.name, spec.platform):
            raise GatewayError(
                API_NOT_ADDED,
                f"{spec.name} is not enabled for this account; ask the operator to add "
                f"{spec.platform} or {spec.name} to its APIs",
            )
        # 4003 before anything is held
        args, o_args, conversation = gateway.arguments.read(spec, call.o_args, call.files)
        remember = None
        if conversation is not None:
            new_messages = args["messages"]
            args["messages"] = [
                *gateway.chats.history(account.id, conversation.chat_id),
                *new_messages,
            ]
            remember = partial(_remember, gateway.chats, account.id, conversation, new_messages)
        facts = Call(
            method=spec.name,
            o_args=o_args,
            account_id=account.id,
            version=call.version,
            use_cache=call.use_cache and conversation is None,
            platform=call.platform,
            request_id=request_id,
        )
        if _paid_at_once(spec, args, account):
            kept = gateway.dispatcher.cached_outcome(spec, args, facts)
            if kept is not None:  # paid and settled at once: nothing to hold meanwhile
                result = CallResult(
                    kept.code,
                    kept.response,
                    cached=True,
                    method=spec.name,
                    platform=record.platform,
                )
                return record.settle_from_cache(result, kept.usage)
        record.admission = gateway.meter.admit(account, spec.name, charged=spec.charged)
        gateway.running.add(record)  # renewed while it runs; refused once the worker stops
        if args.get("stream"):
            stream = gateway.dispatcher.open_stream(spec, args)
            chunks = iter(stream)
            first = next(chunks, None)  # the upstream's refusal surfaces here, before any byte
            return StreamingCall(_stream_events(stream, chunks, first, record, spec.name, remember))
        outcome = gateway.dispatcher.execute(spec, args, facts)
        code, response, cached, usage = (
            outcome.code,
            outcome.response,
            outcome.cached,
            outcome.usage,
        )
        if remember is not None and code == SUCCESS:
            remember(_answer_text(response))
    except GatewayError as exc:
        code, response, detail, http_status = exc.code, exc.response, exc.detail, exc.http_status
    except Exception:  # never a trace or a secret in the answer; the request id finds the log
        log.exception("unexpected error in request %s", request_id)
        code, response, detail = UNKNOWN_ERROR, [], f"see log of {request_id}"
    return record.settle(
        CallResult(
            code=code,
            response=response,
            detail=detail,
            cached=cached,
            method=method_name,
            platform=platform or "openai",
            http_status=http_status,
        ),
        usage,
    )


@dataclass
class StreamingCall:
    """A `stream: true` call under way: ("chunk", dict) events as the upstream sends them,
    then ("end", CallResult) once it is settled. Closing it early (the client went away)
    stops the upstream and settles the call without an end event."""

    events: Iterator[tuple[str, object]]


@dataclass
class Record:
    """What settling a call needs, whenever it ends (at once, when its stream ends, or when a
    stopping worker cuts it). A call is settled once: later settlements get the first one's
    result."""

    gateway: object
    request_id: str
    client_ip: str
    started: float
    account: Account | None = None
    admission: object = None
    method: str = ""  # the catalog name, once looked up
    platform: str = ""
    outcome: CallResult | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def settle(self, result: CallResult, usage: Mapping) -> CallResult:
        with self._lock:
            if self.outcome is None:
                self.outcome = self._settle(result, usage)
        self.gateway.running.remove(self)
        return self.outcome

    def cut(self, detail: str) -> bool:
        """Settle the call now as cut (proxy/running.py), unless it is settled already."""
        if self.outcome is not None:
            return False
        result = CallResult(
            code=CUT_CODE, response=[], detail=detail, method=self.method, platform=self.platform
        )
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
            refusal = CallResult(
                code=refused.code,
                response=refused.response,
                detail=refused.detail,
                method=result.method,
                platform=result.platform,
                http_status=refused.http_status,
            )
            return self.settle(refusal, {})
        except Exception:  # an unmetered answer is not handed out as a success
            self._unrecorded(result)
        else:
            result.last_id, result.api_info = str(settlement.usage_id), settlement.api_info
        with self._lock:
            self.outcome = result
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
        result.elapsed_seconds = time.perf_counter() - self.started
        return UsageRecord(
            request_id=self.request_id,
            error_code=result.code,
            account_id=self.account.id if self.account else None,
            platform=result.platform,
            method=result.method,
            cached=result.cached,
            prompt_tokens=_int(usage.get("prompt_tokens")),
            completion_tokens=_int(usage.get("completion_tokens")),
            total_tokens=_int(usage.get("total_tokens")),
            latency_ms=int(result.elapsed_seconds * 1000),
            client_ip=self.client_ip,
        )

    def _unrecorded(self, result: CallResult) -> None:
        log.exception("usage ledger failed in request %s", self.request_id)
        result.code, result.response, result.cached = INTERNAL_ERROR, [], False
        result.http_status = None
        result.detail = f"the call could not be recorded; see log of {self.request_id}"


def _paid_at_once(spec, args: Mapping, account: Account) -> bool:
    """Whether a cache hit of this call is paid and settled in one step (Meter.charge_hit):
    a charged call that is not a stream, of an account without a concurrency slot to hold."""
    return spec.charged and not args.get("stream") and account.concurrency_limit is None


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


def _stream_events(stream, chunks, first, record: Record, method: str, remember=None):
    """Pass the chunks on; settle when the upstream ends, fails, or the client goes away.

    Charging (docs/streaming.md): a stream that ends normally is charged (0000) with the
    upstream's usage; one the upstream breaks off is refunded with the failure's code; one
    the client abandons is stopped upstream and charged when at least one chunk reached the
    client (the upstream has produced tokens), refunded when none did."""
    result = CallResult(code=SUCCESS, response=[], method=method, platform="openai")
    delivered, answer = 0, []
    try:
        chunk = first
        while chunk is not None and record.outcome is None:  # not cut by a stopping worker
            answer.append(_delta_text(chunk))
            yield "chunk", chunk
            delivered += 1
            chunk = next(chunks, None)
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


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
