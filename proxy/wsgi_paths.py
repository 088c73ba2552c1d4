"""A WSGI guard in front of the app, and the routing settings it goes with: Werkzeug's
routing would redirect a path with `//` and echo its query string (key, secret) in the
Location. Plain WSGI: no Flask import."""

from __future__ import annotations

import re

_SLASH_RUNS = re.compile("/{2,}")


class CollapsedSlashes:
    """A run of slashes in the path is one slash: `/api//` is served as `/api/`, where
    Werkzeug would answer 308 with the query string (key, secret) in its Location."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _SLASH_RUNS.sub("/", path)
        return self.wsgi_app(environ, start_response)


def serve_without_redirects(app) -> None:
    """No call is ever redirected: a redirect's Location would send key and secret back in
    the query string, to whatever Host the client named. Werkzeug redirects `//` to `/` and
    `/x` to `/x/`; here a path with `//` is served as if it had one slash, and a trailing
    slash is optional on every route."""
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.wsgi_app = CollapsedSlashes(app.wsgi_app)
