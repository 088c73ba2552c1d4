"""The request body as the views read it, in front of Werkzeug (plain WSGI, no Flask):

- a body that cannot be read (chunked framing that is broken, a client gone mid-body) raises
  UnreadableBody, which quotes nothing of the body: gunicorn's own errors quote the bytes
  they stopped at, and those may be a form's secret;
- a chunked body (no Content-Length) is read here, up to one byte past the limit, and handed
  on with its Content-Length, so one over the limit is refused like any oversize body
  (4003, HTTP 413 on /v1), where Werkzeug would silently cut it at the limit and run the rest.
"""

from __future__ import annotations

import io
from collections.abc import Callable

from werkzeug.exceptions import ClientDisconnected


class UnreadableBody(ClientDisconnected):
    description = (
        "the request body could not be read: its chunked framing is broken, or it ended early"
    )


class GuardedBody:
    """WSGI middleware: `wsgi.input` as a guarded stream, a chunked body bounded by
    `max_bytes()` (the app's MAX_CONTENT_LENGTH, read per request)."""

    def __init__(self, wsgi_app, max_bytes: Callable[[], int | None]) -> None:
        self.wsgi_app = wsgi_app
        self.max_bytes = max_bytes

    def __call__(self, environ, start_response):
        stream = _GuardedStream(environ["wsgi.input"])
        limit = self.max_bytes()
        if limit is not None and _is_chunked(environ):
            stream = _read_up_to(stream, limit + 1)
            if not isinstance(stream, _BrokenBody):  # which stays unsized: the view reads it
                environ["CONTENT_LENGTH"] = str(len(stream.getvalue()))
                del environ["HTTP_TRANSFER_ENCODING"]  # else Werkzeug ignores CONTENT_LENGTH
        environ["wsgi.input"] = stream
        return self.wsgi_app(environ, start_response)


def _is_chunked(environ) -> bool:
    """A chunked body, which the server de-chunks (wsgi.input_terminated): no Content-Length
    to check it by."""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked and bool(environ.get("wsgi.input_terminated"))


def _read_up_to(stream: _GuardedStream, size: int) -> io.BytesIO | _BrokenBody:
    """The body's first `size` bytes; a body that breaks off is one whose reads fail again
    (as UnreadableBody) when the view reads it."""
    try:
        return io.BytesIO(stream.read(size))
    except UnreadableBody:
        return _BrokenBody()


class _BrokenBody:
    """A body that broke off: every read fails, as the first one did."""

    def read(self, *_args):
        raise UnreadableBody()

    readline = readlines = readinto = read

    def __iter__(self):
        return self

    __next__ = read


class _GuardedStream:
    def __init__(self, stream) -> None:
        self._stream = stream

    def read(self, *size):
        return self._guarded(self._stream.read, *size)

    def readline(self, *size):
        return self._guarded(self._stream.readline, *size)

    def readlines(self, *hint):
        return self._guarded(self._stream.readlines, *hint)

    def __iter__(self):
        return iter(self.readline, b"")

    @staticmethod
    def _guarded(read, *args):
        try:
            return read(*args)
        except Exception:
            raise UnreadableBody() from None
