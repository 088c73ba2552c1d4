"""GatewayWorker.handle_error with gunicorn's own parser, config and logger on a socket pair:
what the client reads and what the error log gets never quote the request's URI."""

from __future__ import annotations

import io
import logging
import os
import socket

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http.parser import RequestParser

from proxy.serving import GatewayWorker

CLIENT = ("127.0.0.1", 50000)
QUERY = "key=CANARYKEY&secret=CANARYSECRET"


@pytest.fixture
def worker():
    config = Config()
    worker = GatewayWorker(0, os.getppid(), [], None, 30, config, Logger(config))
    error_log = logging.getLogger("gunicorn.error")
    worker.log_output = io.StringIO()
    capture = logging.StreamHandler(worker.log_output)
    error_log.addHandler(capture)
    yield worker
    for handler in list(error_log.handlers):
        error_log.removeHandler(handler)
    worker.tmp.close()


def refuse(worker, request: bytes) -> bytes:
    """Parse `request` as gunicorn does; hand the request or its parse error to handle_error;
    what the client reads."""
    server, client = socket.socketpair()
    with server, client:
        client.sendall(request)
        req = None
        try:
            req = next(RequestParser(worker.cfg, server, CLIENT))
            raise RuntimeError("the application failed")
        except Exception as exc:
            worker.handle_error(req, server, CLIENT, exc)
        server.shutdown(socket.SHUT_WR)
        return client.recv(65536)


def test_an_application_error_is_logged_with_the_path_not_the_query(worker):
    answer = refuse(worker, f"GET /api?{QUERY} HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert worker.log_output.getvalue().startswith("Error handling request GET /api\n")
    assert "CANARY" not in worker.log_output.getvalue()


def test_a_request_line_with_a_tab_is_answered_400_without_quoting_it(worker):
    answer = refuse(worker, f"GET /api?{QUERY}&x=a\tb HTTP/1.1\r\nHost: gateway\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    withheld = "InvalidRequestLine (the request is not quoted: it may hold a key or secret)"
    assert worker.log_output.getvalue() == f"Invalid request from ip=127.0.0.1: {withheld}\n"
    assert b"CANARY" not in answer
