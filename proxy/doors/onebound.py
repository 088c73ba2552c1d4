"""The onebound door: `/api` and `/<platform>/custom/`. It reads a call from the query string,
a form or a JSON body (body wins), runs it (proxy/calls.py) and answers in the onebound
envelope in the format asked (json, jsonu, xml, serialize, var_export), or as server-sent
envelopes for `stream: true`. Every answer is HTTP 200 (a wrong verb: 405) with the code in
`X-Error-Code`."""

from __future__ import annotations

import json
from collections.abc import Iterator

from flask import Flask, Response, current_app, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from proxy import formats
from proxy.accounts import Credentials
from proxy.calls import CallRequest, CallResult, StreamingCall, run_call
from proxy.catalog import PLATFORMS, find_method
from proxy.doors import kit
from proxy.envelope import EnvelopeFacts, build_envelope, server_now
from proxy.errors import ANSWERED_CODES, PARAM_ERROR, GatewayError
from proxy.openapi_docs import API_DOC
from proxy.params import (
    echo_call_args,
    load_common,
    parse_json_body,
    parse_presentation,
    refuse_unnamed_parts,
)

api_blp = Blueprint("api", __name__, description="The onebound-style generic endpoint.")
# The endpoints of this door: every answer there is an envelope, a wrong verb's included.
ENVELOPE_ENDPOINTS = frozenset({"api.GenericCall", "api.PlatformCall"})


def register(app: Flask, api: Api) -> None:
    api.register_blueprint(api_blp)


def _first_non_empty(multi) -> dict:
    """Legacy query strings repeat parameters (`api_name` twice) and leave empty segments."""
    merged: dict = {}
    refuse_unnamed_parts(multi)
    for name in multi.keys():
        name_clean = name.strip()
        if not name_clean:
            continue
        values = [v for v in multi.getlist(name) if v != ""]
        if values and name_clean not in merged:
            merged[name_clean] = values[0]
    return merged


def collect_raw_params() -> dict:
    """Query string, then form body, then JSON body: later sources win."""
    raw = _first_non_empty(request.args)
    with kit.body_read_errors():
        if request.mimetype == "application/json" or request.is_json:
            body = parse_json_body(request.get_data(cache=True, as_text=True))
            raw.update({k: v for k, v in body.items() if v is not None})
        else:
            raw.update(_first_non_empty(request.form))
    return raw


def with_header_credentials(raw: dict) -> dict:
    """The parameters plus key and secret from X-API-KEY / X-API-SECRET when not sent as such."""
    merged = dict(raw)
    key, secret = kit.header_credentials()
    if not merged.get("key") and key:
        merged["key"] = key
    if not merged.get("secret") and secret:
        merged["secret"] = secret
    return merged


def handle_call(platform: str | None, refusal: GatewayError | None = None) -> Response:
    """One call on the /api door; `refusal` answers (and records) a request it does not take."""
    gateway = kit.gateway()
    request_id = kit.new_request_id()
    presentation = {"result_type": "json", "lang": "cn", "callback": ""}
    raw: dict = {}

    def prepare() -> CallRequest:
        try:
            raw.update(collect_raw_params())
            result_type, lang, callback = parse_presentation(raw)
            presentation.update(result_type=result_type, lang=lang, callback=callback)
        except GatewayError:
            if refusal is None:
                raise
        if refusal is not None:  # the refusal is the answer, in the format asked when it parses
            raise refusal
        return call_request(raw, platform)

    client_ip = kit.client_ip()
    result = run_call(
        gateway, current_app.config, prepare, request_id=request_id, client_ip=client_ip
    )
    config = current_app.config

    def envelope_of(result: CallResult) -> dict:
        return build_envelope(
            EnvelopeFacts(
                code=result.code,
                response=result.response,
                lang=presentation["lang"],
                detail=result.detail,
                cached=result.cached,
                api_info=result.api_info,
                elapsed_seconds=result.elapsed_seconds,
                now=server_now(config["SERVER_TIMEZONE"]),
                time_label=config["SERVER_TIME_LABEL"],
                client_ip=client_ip,
                call_args=echo_call_args(raw),
                api_type=platform or _platform_of(result.method),
                request_id=request_id,
                last_id=result.last_id,
            )
        )

    if isinstance(result, StreamingCall):
        response = kit.event_stream(envelope_events(result, envelope_of, request_id))
        response.headers["X-Request-Id"] = request_id
        return response
    envelope = envelope_of(result)
    return render_envelope(
        envelope, presentation["result_type"], presentation["callback"], result.code
    )


def call_request(raw: dict, platform: str | None) -> CallRequest:
    """The call the parameters `raw` (and the request's headers and files) name; GatewayError
    (4003, 4014) for a missing or malformed one."""
    params = load_common(with_header_credentials(raw), current_app.config["API_VERSIONS"])
    return CallRequest(
        credentials=Credentials(
            key=params["key"],
            secret=params.get("secret", ""),
            sign=params.get("sign", ""),
            signed_params=raw,
        ),
        method=params["method"],
        o_args=params.get("o_args"),
        files=kit.multipart_files(),
        platform=platform,
        version=params["version"],
        use_cache=params["cache"] == "yes",
    )


def envelope_events(streaming: StreamingCall, envelope_of, request_id: str) -> Iterator[str]:
    """`stream: true` on /api: server-sent events of envelopes, the AIFlowy convention:
    `status` START (the first chunk), MIDDLE (the next ones), END (the last chunk in a whole
    envelope, with error_code, api_info and the rest). One chunk is held back, so that the
    last one can travel in the END envelope."""
    held, status = None, "START"
    for kind, value in streaming.events:
        if kind == "chunk":
            if held is not None:
                yield _chunk_event(status, held, request_id)
                status = "MIDDLE"
            held = value
            continue
        if held is not None:
            if value.code in ANSWERED_CODES:
                value.response = held
            else:  # a failure mid-stream: the chunk held back is still the client's text
                yield _chunk_event(status, held, request_id)
        yield _event({"status": "END", **envelope_of(value)})


def _chunk_event(status: str, chunk: dict, request_id: str) -> str:
    return _event(
        {"status": status, "error_code": "0000", "response": chunk, "request_id": request_id}
    )


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def render_envelope(envelope: dict, result_type: str, callback: str, code: str) -> Response:
    body, content_type = formats.render(envelope, result_type, callback or None)
    response = Response(body, status=200, content_type=content_type)
    response.headers["X-Error-Code"] = code
    response.headers["X-Request-Id"] = envelope["request_id"]
    if callback:
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _platform_of(method_name: str) -> str:
    spec = find_method(method_name) if method_name else None
    return spec.platform if spec else ""


@api_blp.route("/api", strict_slashes=False)
class GenericCall(MethodView):
    @api_blp.doc(**API_DOC)
    def get(self):
        """Call a catalog method: key, secret, method, _o_args; answered in the envelope."""
        return handle_call(None)

    @api_blp.doc(**API_DOC)
    def post(self):
        """Same as GET, with parameters in a form or JSON body (body wins over query)."""
        return handle_call(None)


@api_blp.route("/<string:platform>/custom", strict_slashes=False)
class PlatformCall(MethodView):
    @api_blp.doc(**API_DOC)
    def get(self, platform):
        """onebound-style URL: /openai/custom/?method=v1/chat/completions&_o_args=..."""
        return handle_call(_known_platform(platform))

    @api_blp.doc(**API_DOC)
    def post(self, platform):
        """Same as GET, with parameters in a form or JSON body."""
        return handle_call(_known_platform(platform))


def refuse_verb(endpoint: str | None, view_args: dict) -> Response | None:
    """A verb the door does not take at one of its paths: the envelope (4003) and a usage row
    like every call, as HTTP 405 (docs/envelope.md); the caller adds `Allow`. None for a path
    of another door."""
    if endpoint not in ENVELOPE_ENDPOINTS:
        return None
    platform = view_args.get("platform")
    detail = f"{request.method[:16]} is not served here; call it with GET or POST"
    known = _known_platform(platform) if platform is not None else None
    response = handle_call(known, refusal=GatewayError(PARAM_ERROR, detail))
    response.status_code = 405
    return response


def _known_platform(platform: str) -> str:
    # An unknown platform goes on as a name no catalog entry has, so the answer is 4010.
    return platform if platform in PLATFORMS else f"unknown:{platform[:40]}"
