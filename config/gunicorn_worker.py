"""gunicorn's threaded worker, with gunicorn's own refusals made safe and JSON.

gunicorn answers a request it cannot parse (a bad request line or header, a line longer than
`limit_request_line`) itself, before the app sees it: with an HTML page, and with a warning
that prints the refused text whole. A legacy client's request line holds key and secret in
its query string, so the text is cut from the log line and the answer, and the answer is JSON
in the shape the app gives outside its two doors (`code`, `status`, `message`).
"""

from __future__ import annotations

import json
import logging
import re

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# From the first quote on, gunicorn's messages repeat what the client sent.
_ECHOED_TEXT = re.compile(r"""\s*['"].*""", re.DOTALL)
# A URI's query string, in gunicorn's "Error handling request GET /api?key=..." lines.
_QUERY = re.compile(r"\?\S*")
NOT_REPEATED = " (the text sent is not repeated)"
# What to do about a refusal, where the status alone does not say it.
_HINTS = {414: "send long parameters in a POST body"}


def without_client_text(message: str) -> str:
    """`message` cut where it starts repeating the client's text, its query strings removed."""
    cut = _ECHOED_TEXT.sub("", message)
    if cut != message:
        cut += NOT_REPEATED
    return _QUERY.sub("?(query not shown)", cut)


class ClientTextFilter(logging.Filter):
    """gunicorn's error log without the client's text (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = without_client_text(record.getMessage()), ()
        return True


def write_json_error(sock, status_int: int, reason: str, mesg: str) -> None:
    """What gunicorn writes for a request it refuses, as JSON instead of its HTML page."""
    message = without_client_text(mesg)
    if status_int in _HINTS:
        message = f"{message}: {_HINTS[status_int]}"
    body = json.dumps({"code": status_int, "status": reason, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin1") + body)


class GatewayWorker(ThreadWorker):
    def init_process(self) -> None:
        self.log.error_log.addFilter(ClientTextFilter())
        # gunicorn has no hook for its error page: its worker calls util.write_error by name.
        util.write_error = write_json_error
        super().init_process()
