"""The onebound door: `/api` and `/<platform>/custom/`. It reads a call from the query string,
a form or a JSON body (body wins), runs it (proxy/calls.py) and answers in the onebound
envelope in the format asked (json, jsonu, xml, serialize, var_export), or as server-sent
envelopes for `stream: true`. Every answer is HTTP 200 (a wrong verb: 405) with the code in
`X-Error-Code`."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import partial

from flask import Flask, Response, current_app, request
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from proxy import formats
from proxy.account_values import Credentials
from proxy.calls import CallContext, CallRequest, CallResult, StreamingCall, answer_call
from proxy.catalog import PLATFORMS, find_method
from proxy.doors import kit
from proxy.envelope import EnvelopeFacts, build_envelope, server_now
from proxy.errors import ANSWERED_CODES, PARAM_ERROR, GatewayError
from proxy.openapi_docs import API_DOC
from proxy.params import Parameters, Presentation, read_parameters

api_blp = Blueprint("api", __name__, description="The onebound-style generic endpoint.")
# The endpoints of this door: every answer there is an envelope, a wrong verb's included.
ENVELOPE_ENDPOINTS = frozenset({"api.GenericCall", "api.PlatformCall"})


def register(app: Flask, api: Api) -> None:
    api.register_blueprint(api_blp)


def handle_call(platform: str | None, refusal: GatewayError | None = None) -> Response:
    """One call on the /api door; `refusal` answers (and records) a request it does not take."""
    context = kit.call_context("api")
    call, presentation = read_request(platform, refusal)
    result = answer_call(kit.gateway(), call, context)
    return render(result, presentation, platform, context)


def read_request(
    platform: str | None, refusal: GatewayError | None = None
) -> tuple[CallRequest | GatewayError, Presentation]:
    """The call the request names, or the GatewayError that refuses it (`refusal` when
    given), and how to answer it: in the format asked whenever that much parses."""
    parameters, presentation = read_parameters(
        request.args,
        _body(),
        kit.header_credentials(),
        current_app.config["API_VERSIONS"],
        refusal,
    )
    if isinstance(parameters, GatewayError):
        return parameters, presentation
    try:
        return call_request(parameters, platform), presentation
    except GatewayError as refused:  # a multipart file part without a name
        return refused, presentation


def _body():
    """The form, or the JSON body's text; the GatewayError of a body that cannot be read."""
    try:
        with kit.body_read_errors():
            if request.mimetype == "application/json" or request.is_json:
                return request.get_data(cache=True, as_text=True)
            return request.form
    except GatewayError as unreadable:
        return unreadable


def render(
    result: CallResult | StreamingCall,
    presentation: Presentation,
    platform: str | None,
    context: CallContext,
) -> Response:
    """The envelope in the format asked, or a stream of envelopes."""
    envelope_of = partial(  # a stream's envelopes are made after the request context is gone
        _envelope,
        presentation=presentation,
        platform=platform,
        context=context,
        config=current_app.config,
    )
    if isinstance(result, StreamingCall):
        response = kit.event_stream(envelope_events(result, envelope_of, context.request_id))
        response.headers["X-Request-Id"] = context.request_id
        return kit.name_upstream(response, result)
    response = render_envelope(
        envelope_of(result), presentation.result_type, presentation.callback, result.code
    )
    return kit.name_upstream(response, result)


def _envelope(
    result: CallResult,
    *,
    presentation: Presentation,
    platform: str | None,
    context: CallContext,
    config: Mapping,
) -> dict:
    return build_envelope(
        EnvelopeFacts(
            code=result.code,
            response=result.response,
            lang=presentation.lang,
            detail=result.detail,
            cached=result.cached,
            api_info=result.api_info,
            elapsed_seconds=result.elapsed_seconds,
            now=server_now(config["SERVER_TIMEZONE"]),
            time_label=config["SERVER_TIME_LABEL"],
            client_ip=context.client_ip,
            call_args=presentation.call_args,
            api_type=platform or _platform_of(result.method),
            request_id=context.request_id,
            last_id=result.last_id,
        )
    )


def call_request(parameters: Parameters, platform: str | None) -> CallRequest:
    """The call the checked parameters name, with the request's multipart files."""
    common = parameters.common
    return CallRequest(
        credentials=Credentials(
            key=common["key"],
            secret=common.get("secret", ""),
            sign=common.get("sign", ""),
            signed_params=parameters.raw,
        ),
        method=common["method"],
        o_args=common.get("o_args"),
        files=kit.multipart_files(),
        platform=platform,
        version=common["version"],
        use_cache=common["cache"] == "yes",
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


# /v1/... is the OpenAI door's (its 404 for /v1/custom): the document says `v1` is no platform.
_PLATFORM = {
    "in": "path",
    "name": "platform",
    "required": True,
    "schema": {"type": "string", "pattern": "^(?!v1$)[^/]+$", "example": "openai"},
}


@api_blp.route("/<string:platform>/custom", strict_slashes=False, parameters=[_PLATFORM])
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
