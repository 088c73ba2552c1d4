"""The gateway's log: one line format for gunicorn's error and access logs and the app's own
`proxy` logger (time, pid, level, request id), and a traceback once per distinct failure.

config/gunicorn.conf.py hands `logging_config()` to gunicorn (logconfig_dict); create_app
applies it too when nothing configured logging (the `flask` commands, `flask run`).
See docs/deploy.md, "Logs".
"""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from flask import Flask, g, has_app_context

LINE_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] [%(request_id)s] %(message)s"
DATE_FORMAT = "[%Y-%m-%d %H:%M:%S %z]"
NO_REQUEST_ID = "-"
# A failure's traceback is logged again once this long has passed since the last time.
TRACEBACK_WINDOW_SECONDS = 60.0


def logging_config() -> dict:
    """A logging.config.dictConfig dictionary. The level is INFO whatever gunicorn's
    --log-level says: gunicorn's debug lines quote raw request bytes."""
    filters = ["request_id", "repeated_tracebacks"]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"format": LINE_FORMAT, "datefmt": DATE_FORMAT}},
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "repeated_tracebacks": {"()": RepeatedTracebackFilter},
        },
        "handlers": {
            "errors": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "gateway",
                "filters": filters,
            },
            "access": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "gateway",
                "filters": filters,
            },
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["errors"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
            "proxy": {"level": "INFO"},
        },
        # Libraries (SQLAlchemy, httpx, openai) log warnings and errors only.
        "root": {"level": "WARNING", "handlers": ["errors"]},
    }


def init_app(app: Flask) -> None:
    """Outside gunicorn, with no logging configured yet, log in the same format."""
    if not logging.getLogger().handlers:
        logging.config.dictConfig(logging_config())
    logging.getLogger("proxy").setLevel(logging.INFO)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to each record: the call's (both doors set g.request_id), on an
    access line the X-Request-Id the gateway answered with, else "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id(record)
        return True


def _request_id(record: logging.LogRecord) -> str:
    if has_app_context() and g.get("request_id"):
        return g.request_id
    if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
        # gunicorn's access line is formatted from its atoms; one atom per response header
        return record.args.get("{x-request-id}o") or NO_REQUEST_ID
    return NO_REQUEST_ID


@dataclass
class _Failure:
    traceback_at: float  # when its traceback was last logged
    repeats: int = 0  # logged since then without it


class RepeatedTracebackFilter(logging.Filter):
    """A traceback once per distinct failure: the same exception type raised at the same line
    (the innermost frame) and logged at the same line. Within `window_seconds` of that
    traceback, the failure's records keep their message and lose the traceback, which they
    name and count; after the window, its next record carries the traceback again and says
    how often it was left out."""

    def __init__(self, window_seconds: float = TRACEBACK_WINDOW_SECONDS, clock=time.monotonic):
        super().__init__()
        self.window_seconds = window_seconds
        self.clock = clock
        self._lock = threading.Lock()  # handlers filter outside their own lock
        self._failures: dict[tuple, _Failure] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or record.exc_info[0] is None:
            return True
        key = (record.pathname, record.lineno, *failure_key(record.exc_info))
        now = self.clock()
        with self._lock:
            failure = self._failures.get(key)
            if failure is None or now - failure.traceback_at >= self.window_seconds:
                self._failures[key] = _Failure(traceback_at=now)
                if failure is not None and failure.repeats:
                    _append(
                        record,
                        f"(repeated {failure.repeats:,} times without its traceback in the "
                        f"{now - failure.traceback_at:.0f} s before)",
                    )
                return True
            failure.repeats += 1
            repeats, age = failure.repeats, now - failure.traceback_at
        _append(
            record,
            f"({describe(*key[2:])}, again: repeat {repeats:,} in the {age:.0f} s since its "
            "traceback was logged)",
        )
        record.exc_info, record.exc_text = None, None
        return True


def failure_key(exc_info) -> tuple[str, str, int]:
    """(exception type, file, line) of where the exception was raised."""
    error_type, _, tb = exc_info
    name = f"{error_type.__module__}.{error_type.__qualname__}"
    if tb is None:
        return (name, "?", 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (name, tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def describe(error_type: str, filename: str, line: int) -> str:
    short_file = "/".join(filename.split("/")[-2:])
    return f"{error_type.rsplit('.', 1)[-1]} at {short_file}:{line}"


def _append(record: logging.LogRecord, note: str) -> None:
    record.msg, record.args = f"{record.getMessage()} {note}", None
