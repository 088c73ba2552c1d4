"""The gunicorn worker the gateway runs in (config/gunicorn.conf.py: worker_class).

gunicorn's threaded worker with two changes:

- a request gunicorn cannot parse is answered and logged without its text: gunicorn quotes
  the request line (or a header) in its log line and its 400 page, and legacy clients put
  `key` and `secret` in the query string; a 500 is logged with the path, not the URI; the
  refusal is JSON (`code`, `status`, `message`, as the app answers outside its doors), not
  gunicorn's HTML page;
- a worker accepts a connection only while one of its threads is free, so simultaneous slow
  calls are spread over the workers instead of queueing in the first worker to wake up while
  another idles (bench/spread_bench.py measures it; see docs/deploy.md).
"""

from __future__ import annotations

import functools
import json
import re
import ssl

from gunicorn import util
from gunicorn.glogging import Logger
from gunicorn.http.errors import LimitRequestHeaders, LimitRequestLine, ParseException
from gunicorn.workers.gthread import ThreadWorker

# What to do about a refusal, where the status alone does not say it.
_HINTS = {414: "send long parameters in a POST body"}
# gunicorn's page quotes the error's text after its own words ("Invalid Request Line '...'").
_QUOTED = re.compile(r"""\s*'.*'\Z""", re.DOTALL)
# Refusals whose text says only sizes and limits, never what the client sent.
_TEXT_FREE_ERRORS = (LimitRequestLine, LimitRequestHeaders)


class GatewayWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.busy_threads = 0  # connections handed to the thread pool and not yet finished

    def init_process(self):
        # gunicorn has no hook for its error page: its worker calls util.write_error by name.
        util.write_error = write_json_error
        super().init_process()

    def handle_error(self, req, client, addr, exc):
        if req is not None and hasattr(req, "path"):
            req.uri = req.path  # gunicorn logs req.uri with a 500; its query may hold a secret
        super().handle_error(req, client, addr, without_request_text(exc))

    def enqueue_req(self, conn):
        self.busy_threads += 1
        if self.busy_threads >= self.cfg.threads:
            self.set_accept_enabled(False)
        super().enqueue_req(conn)

    def finish_request(self, conn, fs):
        self.busy_threads -= 1
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled):
        # The main loop re-enables accepting on each turn; it stays off while no thread is free.
        super().set_accept_enabled(enabled and self.busy_threads < self.cfg.threads)


# The access line (config/gunicorn.conf.py): the path but never the query string, where legacy
# clients put key and secret; no header. proxy/logs.py adds the X-Request-Id answered.
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(L)ss'
REQUEST_ID_ATOM = "{x-request-id}o"


class GatewayLogger(Logger):
    """gunicorn's logger, whose access line builds only the atoms the gateway's format
    prints: gunicorn's own builds one per request header, response header and environ
    variable, on every request. Another access_log_format gets gunicorn's atoms."""

    def atoms(self, resp, req, environ, request_time):
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_ids = [value for name, value in resp.headers if name.lower() == "x-request-id"]
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "H": environ.get("SERVER_PROTOCOL"),
            "s": status,
            "B": getattr(resp, "sent", None),
            "L": f"{request_time.seconds}.{request_time.microseconds:06d}",
            REQUEST_ID_ATOM: request_ids[-1] if request_ids else "-",
        }


def without_request_text(exc: BaseException) -> BaseException:
    """For a request gunicorn could not read, a stand-in for `exc` whose text names only the
    kind of error: gunicorn puts str(exc) in its log line and its error page, and that text
    quotes the request line or a header. The stand-in's class is a subclass of `exc`'s, so
    gunicorn still answers with the status it picks by class. Other errors are the
    application's (a 500, whose page has no text): they pass as they are."""
    if not isinstance(exc, (ParseException, ssl.SSLError)) or isinstance(exc, _TEXT_FREE_ERRORS):
        return exc
    withheld = _text_withheld(type(exc))
    stand_in = withheld.__new__(withheld)
    stand_in.__dict__.update(vars(exc))
    return stand_in


@functools.cache
def _text_withheld(error_class: type) -> type:
    text = f"{error_class.__name__} (the request is not quoted: it may hold a key or secret)"
    return type(error_class.__name__, (error_class,), {"__str__": lambda self: text})


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn writes for a request it refuses, as JSON instead of its HTML page; `mesg`
    is already without the request's text (handle_error)."""
    message = _QUOTED.sub(" (the text sent is not repeated)", mesg)
    if status_int in _HINTS:
        message = f"{message}: {_HINTS[status_int]}"
    body = json.dumps({"code": status_int, "status": reason, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)
