"""The log's pure parts: a traceback once per distinct failure, the request id on each line,
and gunicorn's errors stripped of the request's text."""

from __future__ import annotations

import io
import logging
import re

import pytest
from gunicorn.http.errors import (
    InvalidHeader,
    InvalidHTTPVersion,
    InvalidRequestLine,
    LimitRequestLine,
)

from proxy.logs import (
    DATE_FORMAT,
    LINE_FORMAT,
    RepeatedTracebackFilter,
    RequestIdFilter,
)
from proxy.serving import without_request_text

TRACEBACK = "Traceback (most recent call last)"
RECORD_START = re.compile(r"^(?=\[\d{4}-)", re.MULTILINE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def log(clock):
    """A logger whose lines (format LINE_FORMAT) collect in `log.output`."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RepeatedTracebackFilter(window_seconds=60, clock=clock))
    logger = logging.Logger("proxy-test")
    logger.addHandler(handler)
    logger.output = output
    return logger


def fail_in_database(number: int):
    raise ConnectionError(f"database unreachable (attempt {number})")


RAISED_AT = f"tests/test_logs.py:{fail_in_database.__code__.co_firstlineno + 1}"


def fail_elsewhere():
    raise ConnectionError("another place")


def log_failure(log: logging.Logger, failing=fail_in_database, number: int = 1) -> None:
    try:
        failing(number)
    except ConnectionError:
        log.exception("unexpected error in request gw-1.%04d", number)


def records(log: logging.Logger) -> list[str]:
    """The records written, each with its traceback lines."""
    return [record for record in RECORD_START.split(log.output.getvalue()) if record]


def test_a_failure_s_traceback_is_logged_once_its_repeats_as_one_line_with_a_count(log, clock):
    for number in range(1, 5):
        clock.now += 1
        log_failure(log, number=number)
    first, *repeats = records(log)
    assert TRACEBACK in first and "database unreachable (attempt 1)" in first
    assert len(repeats) == 3
    for count, line in enumerate(repeats, start=1):
        assert TRACEBACK not in line and line.count("\n") == 1
        assert f"unexpected error in request gw-1.{count + 1:04d}" in line
        assert f"(ConnectionError at {RAISED_AT}, again: repeat {count} in the " in line


def test_a_failure_raised_elsewhere_gets_its_own_traceback(log):
    log_failure(log)
    log_failure(log, failing=lambda number: fail_elsewhere())
    assert [TRACEBACK in record for record in records(log)] == [True, True]


def test_the_same_failure_logged_from_another_place_gets_its_own_traceback(log):
    log_failure(log)
    try:
        fail_in_database(2)
    except ConnectionError:
        log.exception("usage ledger failed in request gw-1.0002")
    assert [TRACEBACK in record for record in records(log)] == [True, True]


def test_after_the_window_the_traceback_returns_with_how_often_it_was_left_out(log, clock):
    for number in range(1, 4):
        log_failure(log, number=number)
    clock.now += 61
    log_failure(log, number=4)
    last = records(log)[-1]
    assert TRACEBACK in last
    assert "(repeated 2 times without its traceback in the 61 s before)" in last


def test_a_record_without_a_traceback_passes_unchanged(log):
    log.warning("concurrency limiter unreachable")
    log.warning("concurrency limiter unreachable")
    assert [record.split("] ", 4)[-1] for record in records(log)] == [
        "concurrency limiter unreachable\n",
        "concurrency limiter unreachable\n",
    ]


def test_a_line_outside_a_request_has_request_id_dash(log):
    log.warning("Redis at 127.0.0.1:6379 answers again")
    assert "[WARNING] [-] Redis at 127.0.0.1:6379 answers again" in log.output.getvalue()


def test_a_line_inside_a_call_has_its_request_id(log, app):
    from flask import g

    with app.test_request_context("/api"):
        g.request_id = "gw-1.0123456789abcdef"
        log.warning("refunding an expired reservation of account 7")
    assert "[WARNING] [gw-1.0123456789abcdef] refunding" in log.output.getvalue()


def test_an_access_line_has_the_request_id_the_gateway_answered_with(log):
    access = logging.Logger("gunicorn.access")
    access.addHandler(log.handlers[0])
    # gunicorn logs an access line with its atoms, one per response header, as the argument
    access.info('%(h)s "%(m)s %(U)s"', {"h": "127.0.0.1", "m": "GET", "U": "/api",
                                       "{x-request-id}o": "gw-1.00aa"})  # fmt: skip
    assert '[INFO] [gw-1.00aa] 127.0.0.1 "GET /api"' in log.output.getvalue()


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestLine("GET /api?key=CANARYKEY&secret=CANARY\tSECRET HTTP/1.1"),
        InvalidHTTPVersion("b&secret=CANARYSECRET HTTP/1.1"),
        InvalidHeader("X-API-SECRET CANARYSECRET"),
    ],
)
def test_a_bad_request_s_error_keeps_its_class_and_loses_its_text(error):
    stand_in = without_request_text(error)
    assert isinstance(stand_in, type(error))
    assert "CANARY" not in str(stand_in)
    assert str(stand_in) == (
        f"{type(error).__name__} (the request is not quoted: it may hold a key or secret)"
    )


def test_an_oversize_request_line_keeps_its_sizes_which_quote_nothing():
    error = LimitRequestLine(9000, 8190)
    assert without_request_text(error) is error
    assert str(error) == "Request Line is too large (9000 > 8190)"


def test_an_application_error_passes_as_it_is():
    error = RuntimeError("boom")
    assert without_request_text(error) is error


def _access_line(logger_class, access_log_format: str) -> str:
    """The access line `logger_class` writes for one answered GET /api with a query string."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    config = Config()
    config.set("accesslog", "-")
    config.set("access_log_format", access_log_format)
    logger = logger_class(config)
    output = io.StringIO()
    logger.access_log.handlers = [logging.StreamHandler(output)]
    response = SimpleNamespace(
        status="200 OK",
        sent=321,
        headers=[("Content-Type", "text/html"), ("X-Request-Id", "gw-1.0a")],
    )
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api",
        "QUERY_STRING": "key=CANARYKEY&secret=CANARYSECRET",
        "RAW_URI": "/api?key=CANARYKEY&secret=CANARYSECRET",
        "SERVER_PROTOCOL": "HTTP/1.1",
    }
    request = SimpleNamespace(headers=[("HOST", "gw"), ("USER-AGENT", "php")])
    logger.access(response, request, environ, timedelta(seconds=1, microseconds=2500))
    return output.getvalue()


def test_the_gateway_access_line_is_gunicorns_line_for_the_same_format():
    from gunicorn.glogging import Logger

    from proxy.serving import ACCESS_LOG_FORMAT, GatewayLogger

    ours = _access_line(GatewayLogger, ACCESS_LOG_FORMAT)
    assert ours == '10.0.0.7 "GET /api HTTP/1.1" 200 321 1.002500s\n'
    assert ours == _access_line(Logger, ACCESS_LOG_FORMAT)


def test_another_access_log_format_gets_all_of_gunicorns_atoms():
    from proxy.serving import GatewayLogger

    line = _access_line(GatewayLogger, "%({user-agent}i)s %({x-request-id}o)s")
    assert line == "php gw-1.0a\n"
