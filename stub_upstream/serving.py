"""The stub on a real socket: :class:`StubServer` (a daemon thread, for tests and benchmarks)
and :func:`main` (``python -m stub_upstream``, for ``make run``)."""

from __future__ import annotations

import argparse
import logging
import re
import threading
from typing import Any

import flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from stub_upstream.app import DEFAULT_OWNED_BY, create_stub_app
from stub_upstream.replies import log
from stub_upstream.state import stub_state

_QUERY_RE = re.compile(r"\?[^\s\"']*")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)\S+")


def redact(text: str) -> str:
    """Drop query strings and bearer tokens; replace control characters (no log injection)."""
    text = _BEARER_RE.sub(r"\1[redacted]", _QUERY_RE.sub("", text))
    return "".join(c if c.isprintable() or c == "\n" else "?" for c in text)


class _RequestHandler(WSGIRequestHandler):
    """Logs one line per request, without the query string or any Authorization value."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # SSE: each small event must leave at once

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = (getattr(self, "path", None) or "-").split("?", 1)[0].split("#", 1)[0]
        method = getattr(self, "command", None) or "-"
        log.info('%s "%s %s" %s', self.address_string(), redact(method), redact(path), code)

    def log(self, type: str, message: str, *args: Any) -> None:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = message
        level = logging.ERROR if type == "error" else logging.INFO
        log.log(level, "%s %s", self.address_string(), redact(str(text)).rstrip())


def _make_server(host: str, port: int, app: flask.Flask) -> BaseWSGIServer:
    return make_server(host, port, app, threaded=True, request_handler=_RequestHandler)


def url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class StubServer:
    """The stub app on a real socket, served from a daemon thread.

    ``StubServer(port=0, slow_seconds=0.2).start()`` picks a free port; ``stop()`` returns
    promptly even with requests still sleeping (they are woken and answered 503). Also a
    context manager: ``with StubServer() as stub: ...``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **app_options: Any):
        self.host = host
        self.port = port
        self.app = create_stub_app(**app_options)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StubServer:
        if self._server is not None:
            raise RuntimeError("StubServer is already running")
        stub_state(self.app).stopping.clear()
        server = _make_server(self.host, self.port, self.app)
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"stub-upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        stub_state(self.app).stopping.set()  # wake slow/hang handlers, cut streams
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)
        self._server = None
        self._thread = None

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (known once started when port 0 was asked for)."""
        if self.port == 0:
            raise RuntimeError("StubServer has no port yet: call start() first")
        return f"http://{url_host(self.host)}:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``: what to give the SDK as ``base_url``."""
        return self.url + "/v1"

    def requests_seen(self, path: str | None = None) -> list[dict[str, Any]]:
        """Copies of the logged requests, oldest first (only those for ``path`` if given)."""
        return stub_state(self.app).log.entries(path)

    def reset(self) -> None:
        """Forget every logged request."""
        stub_state(self.app).log.clear()

    def set_fault(self, mode: str | None) -> None:
        """Every /v1 request fails with `mode` ("500", "429", "401"), whatever its model;
        None: answer normally again (as POST /_stub/fault)."""
        from stub_upstream.faults import SERVER_FAULTS

        if mode is not None and mode not in SERVER_FAULTS:
            raise ValueError(f"mode must be one of {SERVER_FAULTS} or None")
        stub_state(self.app).options.fault = mode


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stub_upstream",
        description="Deterministic OpenAI-compatible stub upstream (see docs/stub-upstream.md).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--hang-seconds", type=float, default=300.0)
    parser.add_argument("--stream-delay", type=float, default=0.02)
    parser.add_argument("--stream-slow-delay", type=float, default=0.5)
    parser.add_argument(
        "--retry-after-ms", type=int, default=None, help="also send retry-after-ms on 429/500"
    )
    parser.add_argument("--log-limit", type=int, default=1000)
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated model ids for GET /v1/models instead of the built-in catalogue",
    )
    parser.add_argument("--owned-by", default=DEFAULT_OWNED_BY, help="owned_by of the models")
    parser.add_argument("--files-limit", type=int, default=1000)
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve the stub until killed: ``python -m stub_upstream --port 8001``."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_stub_app(
        slow_seconds=args.slow_seconds,
        hang_seconds=args.hang_seconds,
        stream_delay=args.stream_delay,
        stream_slow_delay=args.stream_slow_delay,
        retry_after_ms=args.retry_after_ms,
        log_limit=args.log_limit,
        models=None if args.models is None else tuple(filter(None, args.models.split(","))),
        owned_by=args.owned_by,
        files_limit=args.files_limit,
    )
    server = _make_server(args.host, args.port, app)
    log.info("stub upstream serving on http://%s:%d/v1", url_host(args.host), server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
