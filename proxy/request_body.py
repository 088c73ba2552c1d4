"""The request body as the views read it. A body that cannot be read (chunked framing that is
broken, a client gone mid-body) raises UnreadableBody, which quotes nothing of the body:
gunicorn's own errors quote the bytes they stopped at, and those may be a form's secret."""

from __future__ import annotations

from werkzeug.exceptions import ClientDisconnected


class UnreadableBody(ClientDisconnected):
    description = (
        "the request body could not be read: its chunked framing is broken, or it ended early"
    )


class GuardedBody:
    """WSGI middleware: the app reads `wsgi.input` through a stream whose read errors are
    UnreadableBody."""

    def __init__(self, wsgi_app) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        environ["wsgi.input"] = _GuardedStream(environ["wsgi.input"])
        return self.wsgi_app(environ, start_response)


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
