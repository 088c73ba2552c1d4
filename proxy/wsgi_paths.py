"""A WSGI guard in front of the app: Werkzeug's routing would redirect a path with `//` and
echo its query string (key, secret) in the Location. Plain WSGI: no Flask."""

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
