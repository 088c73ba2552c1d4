"""The service door: what the gateway is (`/`), whether it is well (`/health`) and the method
catalog (`/api/methods`), as plain JSON. No account, no usage row."""

from __future__ import annotations

import logging

import swagger_ui_bundle
from flask import Flask, current_app, jsonify, send_from_directory
from flask.views import MethodView
from flask_smorest import Api, Blueprint

from proxy import formats
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


def swagger_asset(filename: str):
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)


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
                    "/docs": "Swagger UI (offline)",
                    "/openapi.json": "OpenAPI document",
                    "/health": "database, cache and Redis state",
                },
                "platforms": sorted(PLATFORMS),
                "result_types": list(formats.RESULT_TYPES),
            }
        )
