"""The application factory: wiring only (config, WSGI guards, services, doors, CLI)."""

from __future__ import annotations

from flask import Flask

from config import Config


def create_app(test_config: dict | None = None) -> Flask:
    from flask_smorest import Api
    from werkzeug.middleware.proxy_fix import ProxyFix

    from proxy import cli, cors, logs, wsgi_paths
    from proxy.doors import register_doors
    from proxy.openapi_docs import register_method_schemas
    from proxy.openapi_sdk_paths import register_anthropic_path, register_openai_paths
    from proxy.request_body import GuardedBody
    from proxy.services import build_gateway

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_object(Config())
    if test_config:
        app.config.update(test_config)
    wsgi_paths.serve_without_redirects(app)
    app.wsgi_app = GuardedBody(app.wsgi_app, lambda: app.config["MAX_CONTENT_LENGTH"])
    if app.config["TRUSTED_PROXY_HOPS"] > 0:
        hops = app.config["TRUSTED_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logs.init_app(app)
    app.extensions["gateway"] = build_gateway(app.config, app.instance_path)
    api = Api(app)
    register_doors(app, api)
    register_method_schemas(api)
    register_openai_paths(api)
    register_anthropic_path(api)
    cors.init_app(app)
    cli.init_app(app)
    return app
