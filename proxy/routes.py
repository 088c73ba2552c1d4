"""HTTP routes. The only modules that touch flask.request / g are this one and openai_door.py:
they read a call into a CallRequest, run it (proxy/calls.py) and render the answer."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

from flask import Response, current_app, g, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from proxy import formats
from proxy.accounts import Credentials
from proxy.calls import CallRequest, CallResult, StreamingCall, run_call
from proxy.catalog import PLATFORMS, find_method
from proxy.envelope import EnvelopeFacts, build_envelope, server_now
from proxy.errors import (
    ANSWERED_CODES,
    PARAM_ERROR,
    GatewayError,
)
from proxy.openai_door import body_read_errors, event_stream, multipart_files
from proxy.openapi_docs import (
    API_DOC,
    HealthDoc,
    MethodCatalogDoc,
    ServiceInfoDoc,
    method_catalog_entries,
)
from proxy.params import (
    echo_call_args,
    load_common,
    parse_json_body,
    parse_presentation,
    refuse_unnamed_parts,
)

log = logging.getLogger("proxy")

api_blp = Blueprint("api", __name__, description="The onebound-style generic endpoint.")
service_blp = Blueprint("service", __name__, description="Service information and health.")


def _gateway():
    return current_app.extensions["gateway"]


def _new_request_id() -> str:
    return f"{current_app.config['REQUEST_ID_PREFIX']}.{uuid.uuid4().hex[:16]}"


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
    with body_read_errors():
        if request.mimetype == "application/json" or request.is_json:
            body = parse_json_body(request.get_data(cache=True, as_text=True))
            raw.update({k: v for k, v in body.items() if v is not None})
        else:
            raw.update(_first_non_empty(request.form))
    return raw


def with_header_credentials(raw: dict) -> dict:
    """The parameters plus key and secret from X-API-KEY / X-API-SECRET when not sent as such."""
    merged = dict(raw)
    if not merged.get("key") and request.headers.get("X-API-KEY"):
        merged["key"] = request.headers["X-API-KEY"]
    if not merged.get("secret") and request.headers.get("X-API-SECRET"):
        merged["secret"] = request.headers["X-API-SECRET"]
    return merged


def handle_call(platform: str | None, refusal: GatewayError | None = None) -> Response:
    """One call on the /api door; `refusal` answers (and records) a request it does not take."""
    gateway = _gateway()
    request_id = _new_request_id()
    g.request_id = request_id
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
            files=multipart_files(),
            platform=platform,
            version=params["version"],
            use_cache=params["cache"] == "yes",
        )

    client_ip = request.remote_addr or ""  # the caller's address once ProxyFix has applied hops
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
        response = event_stream(envelope_events(result, envelope_of, request_id))
        response.headers["X-Request-Id"] = request_id
        return response
    envelope = envelope_of(result)
    return render_envelope(
        envelope, presentation["result_type"], presentation["callback"], result.code
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


def refuse_verb(platform: str | None) -> Response:
    """A verb the /api door does not take: the envelope (4003) and a usage row like every
    call, as HTTP 405 (docs/envelope.md); the caller adds `Allow`."""
    detail = f"{request.method[:16]} is not served here; call it with GET or POST"
    known = _known_platform(platform) if platform is not None else None
    response = handle_call(known, refusal=GatewayError(PARAM_ERROR, detail))
    response.status_code = 405
    return response


def _known_platform(platform: str) -> str:
    # An unknown platform goes on as a name no catalog entry has, so the answer is 4010.
    return platform if platform in PLATFORMS else f"unknown:{platform[:40]}"


@api_blp.route("/api/methods")
class MethodCatalog(MethodView):
    @api_blp.response(200, MethodCatalogDoc)
    def get(self):
        """The method catalog: each method's platform, flags, price and `_o_args` schema."""
        gateway = _gateway()
        return jsonify({"methods": method_catalog_entries(gateway.api, gateway.meter.price_of)})


@service_blp.route("/health")
class Health(MethodView):
    @service_blp.response(200, HealthDoc)
    @service_blp.alt_response(503, schema=HealthDoc, description="The database is unreachable.")
    def get(self):
        """Health: the database (503 when unreachable), the answer cache and, when configured,
        Redis (200 with status "degraded" when unreachable: the cache then misses and only
        concurrency-limited calls fail)."""
        gateway = _gateway()
        cache = gateway.dispatcher.cache.describe()
        report = {"status": "healthy", "database": "ok", "cache": cache}
        if gateway.redis is not None:
            report["redis"] = cache["state"]
            if cache["state"] != "ok":
                report["status"] = "degraded"
        try:
            gateway.ping_database()
        except Exception:
            log.exception("health check: database unreachable")
            report.update(status="unhealthy", database="unreachable")
            return jsonify(report), 503
        return jsonify(report)


@service_blp.route("/")
class ServiceInfo(MethodView):
    @service_blp.response(200, ServiceInfoDoc)
    def get(self):
        """Service information and the endpoints it serves."""
        return jsonify(
            {
                "service": current_app.config["API_TITLE"],
                "version": current_app.config["API_VERSION"],
                "endpoints": {
                    "/api": "GET|POST generic call: key, secret, method, _o_args",
                    "/<platform>/custom": "onebound-style alias of /api, e.g. /openai/custom/",
                    "/api/methods": "the method catalog with _o_args schemas",
                    "/v1/*": "OpenAI-compatible door (Authorization: Bearer KEY:SECRET)",
                    "/docs": "Swagger UI (offline)",
                    "/openapi.json": "OpenAPI document",
                    "/health": "database, cache and Redis state",
                },
                "platforms": sorted(PLATFORMS),
                "result_types": list(formats.RESULT_TYPES),
            }
        )
