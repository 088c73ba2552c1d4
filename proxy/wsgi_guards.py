"""WSGI guards in front of the app, for what Flask's routing and body reading would otherwise
do with a hostile request: redirect it (and echo its credentials), or cut its body short.
Plain WSGI: no Flask."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

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


class BoundedChunkedBody:
    """A body without Content-Length (chunked) is read here, up to one byte past the limit,
    and handed on with its Content-Length: one over the limit is then refused like any
    oversize body (413 / 4003), where Werkzeug would silently cut it at the limit and run
    what was left. `max_bytes()` is read per request (the app's MAX_CONTENT_LENGTH)."""

    def __init__(self, wsgi_app, max_bytes: Callable[[], int | None]):
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        limit = self.max_bytes()
        if limit is not None and _is_unsized_body(environ):
            body = environ["wsgi.input"].read(limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]  # else Werkzeug ignores CONTENT_LENGTH
        return self.wsgi_app(environ, start_response)


def _is_unsized_body(environ) -> bool:
    """A chunked body, which the server de-chunks (wsgi.input_terminated): no Content-Length
    to check it by."""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked and bool(environ.get("wsgi.input_terminated"))
