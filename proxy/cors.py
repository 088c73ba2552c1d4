"""Cross-origin calls from browser pages (CORS), off unless CORS_ORIGINS names the origins.

A page on https://app.example that calls the gateway on another origin with `fetch` or
jQuery's `$.ajax` reads the answer only when the gateway says that origin may. Keys travel in
the query, the body or a header, never in cookies, so credentialed CORS is never allowed.
"""

from __future__ import annotations

from flask import Flask, Response, request

# The headers a browser page may send: the OpenAI door's credentials and the /api headers.
ALLOWED_REQUEST_HEADERS = (
    "Authorization, Content-Type, api-key, X-API-KEY, X-API-SECRET, X-Gateway-Cache, "
    "OpenAI-Organization, OpenAI-Project"
)
# The response headers a page may read besides the CORS-safelisted ones.
EXPOSED_HEADERS = "X-Request-Id, X-Error-Code, X-Api-Info, X-Gateway-Cache"
PREFLIGHT_MAX_AGE_SECONDS = 600


def parse_origins(configured: str) -> frozenset[str]:
    """`*`, or a comma-separated list of origins (scheme://host[:port]); empty: none."""
    return frozenset(o.strip().rstrip("/") for o in configured.split(",") if o.strip())


def allowed_origin(origins: frozenset[str], origin: str | None) -> str | None:
    """The Access-Control-Allow-Origin value for a request from `origin`, or None."""
    if not origin or not origins:
        return None
    if "*" in origins:
        return "*"
    return origin if origin in origins else None


def init_app(app: Flask) -> None:
    origins = parse_origins(app.config["CORS_ORIGINS"])
    if not origins:
        return

    @app.after_request
    def _cross_origin_headers(response: Response) -> Response:
        allowed = allowed_origin(origins, request.headers.get("Origin"))
        response.vary.add("Origin")
        if allowed is None:
            return response
        response.headers["Access-Control-Allow-Origin"] = allowed
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_REQUEST_HEADERS
            response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_SECONDS)
        return response
