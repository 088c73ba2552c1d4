"""The service door: what the gateway is (`/`), whether it is well (`/health`), the method
catalog (`/api/methods`), as plain JSON, and the operator's metrics (`/metrics`, Prometheus
text). No account, no usage row."""

from __future__ import annotations

import hmac
import logging

import swagger_ui_bundle
from flask import Flask, Response, abort, current_app, jsonify, request, send_from_directory
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from proxy import formats, metrics
from proxy.catalog import PLATFORMS
from proxy.doors import kit
from proxy.failover import describe_members
from proxy.openapi_docs import HealthDoc, MethodCatalogDoc, ServiceInfoDoc, method_catalog_entries

log = logging.getLogger("proxy")

service_blp = Blueprint("service", __name__, description="Service information and health.")


def register(app: Flask, api: Api) -> None:
    api.register_blueprint(service_blp)
    app.extensions["openapi"] = api  # /api/methods writes the schemas as this document does
    # Swagger UI's JS and CSS from the installed swagger-ui-bundle package: /docs works offline.
    app.add_url_rule("/docs/assets/<path:filename>", "swagger_asset", swagger_asset)
    # For the operator's scraper, not for clients: not in the OpenAPI document. Every verb is
    # taken so that none answers 405 (which would tell a stranger the path exists).
    app.add_url_rule(
        "/metrics",
        "metrics",
        serve_metrics,
        methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        provide_automatic_options=False,
    )


def swagger_asset(filename: str):
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)


def serve_metrics() -> Response:
    """Prometheus text of every worker's metrics, to `Authorization: Bearer <METRICS_TOKEN>`
    only; 404, as for any path that does not exist, when METRICS_TOKEN is unset or the token
    is missing or wrong (docs/deploy.md, "Metrics")."""
    token = current_app.config["METRICS_TOKEN"]
    if not token or request.method not in ("GET", "HEAD") or not _bearer_is(token):
        abort(404)
    body, content_type = metrics.exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _bearer_is(token: str) -> bool:
    """Whether the request's `Authorization: Bearer` token is `token` (constant time)."""
    scheme, _, presented = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    if hmac.compare_digest(presented.strip().encode(), token.encode()):
        return True
    log.warning("GET /metrics refused: wrong bearer token (answered 404)")
    return False


@service_blp.route("/api/methods")
class MethodCatalog(MethodView):
    @service_blp.doc(tags=["api"])  # documented beside /api, whose methods it lists
    @service_blp.response(200, MethodCatalogDoc)
    def get(self):
        """The method catalog: each method's platform, flags, price and `_o_args` schema."""
        api, price_of = current_app.extensions["openapi"], kit.gateway().meter.price_of
        return jsonify({"methods": method_catalog_entries(api, price_of)})


@service_blp.route("/health")
class Health(MethodView):
    @service_blp.response(200, HealthDoc)
    @service_blp.alt_response(503, schema=HealthDoc, description="The database is unreachable.")
    def get(self):
        """Health: the database (503 when unreachable), the answer cache, when configured,
        Redis (200 with status "degraded" when unreachable: the cache then misses and only
        concurrency-limited calls fail), and each upstream member's state (never its key)."""
        gateway = kit.gateway()
        cache = gateway.dispatcher.cache.describe()
        report = {"status": "healthy", "database": "ok", "cache": cache}
        if gateway.redis is not None:
            report["redis"] = cache["state"]
            if cache["state"] != "ok":
                report["status"] = "degraded"
        failover = gateway.dispatcher.failover
        report["upstreams"] = describe_members(failover.router, failover.health)
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
                    "/v1/messages": "Anthropic Messages door (x-api-key: KEY:SECRET)",
                    "/docs": "Swagger UI (offline)",
                    "/openapi.json": "OpenAPI document",
                    "/health": "database, cache and Redis state",
                },
                "platforms": sorted(PLATFORMS),
                "result_types": list(formats.RESULT_TYPES),
            }
        )
