"""No credential reaches the log or an answer: calls of every kind, well-formed or not, carry
canary keys, secrets and signs; then everything the served gateway wrote (gunicorn's stdout
and stderr) and every answer (status line, headers, body) is searched for them."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import CHAT_ARGS
from tests.served import ServedGateway

KEY, SECRET, SIGN = "CANARYKEY7f3a", "CANARYSECRET9c1e", "CANARYSIGN4b2d"
UPSTREAM_KEY = "sk-CANARYUPSTREAM5e8b"
MAX_BODY_BYTES = 256 * 1024
PATHS = ("/api", "/openai/custom/", "/v1/models", "/v1/chat/completions")
CREDENTIAL_QUERY = f"key={KEY}&secret={SECRET}&sign={SIGN}&dateline=1700000000"


def malformed_request_lines() -> list[bytes]:
    """Request lines gunicorn refuses, each with the canaries in its query."""
    lines = []
    for path in PATHS:
        lines += [
            f"GET {path}?method=v1/models&x=a b&{CREDENTIAL_QUERY} HTTP/1.1",  # space
            f"GET {path}?x=a b&{CREDENTIAL_QUERY}&y=c d HTTP/1.1",  # two spaces
            f"GET {path}?{CREDENTIAL_QUERY}&x=a\tb HTTP/1.1",  # tab
            f"GET\t{path}?{CREDENTIAL_QUERY} HTTP/1.1",  # tab after the method
            f"GET {path}?{CREDENTIAL_QUERY}&x=a\x01b HTTP/1.1",  # control character
            f"GET {path}?{CREDENTIAL_QUERY}&x=a\x7fb HTTP/1.1",  # DEL
            f"GET {path}?{CREDENTIAL_QUERY}&x=a\x00b HTTP/1.1",  # NUL
            f"GET {path}?{CREDENTIAL_QUERY}&x=\u00e9 HTTP/1.1",  # raw non-ASCII
            f"GET {path}?{CREDENTIAL_QUERY}",  # no version
            f"GET {path}?{CREDENTIAL_QUERY} HTTP/9.1",  # unknown version
            f"GET {path}?{CREDENTIAL_QUERY}&pad={'a' * 9000} HTTP/1.1",  # longer than 8190
        ]
    return [line.encode("utf-8") + b"\r\nHost: gateway\r\n\r\n" for line in lines] + [
        f"GET /api?{CREDENTIAL_QUERY} HTTP/1.1\nHost: gateway\n\n".encode(),  # bare LF
    ]


def malformed_headers() -> list[bytes]:
    """Requests whose headers gunicorn refuses, with the canaries in those headers."""
    start = f"GET /api?method=v1/models&{CREDENTIAL_QUERY} HTTP/1.1\r\nHost: gateway\r\n"
    headers = [
        f"X-API-SECRET {SECRET}",  # no colon
        f"X-API-SECRET: {SECRET}\x01",  # control character in the value
        f"X-{SECRET}(KEY): 1",  # bad name
        f"X-API-SECRET: {SECRET}{'s' * 9000}",  # too large
        f"Authorization: Bearer {KEY}:{SECRET}\r\n folded",  # obsolete line folding
        f"Expect: {SECRET}",
        f"Transfer-Encoding: {SECRET}",
        f"Content-Length: {KEY}",
    ]
    return [(start + header + "\r\n\r\n").encode() for header in headers]


def chunked_bodies() -> list[bytes]:
    """A form POSTed in chunks whose framing is broken, with canaries in the chunk lines."""
    start = (
        f"POST /api?{CREDENTIAL_QUERY} HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    form = f"key={KEY}&secret={SECRET}&method=v1/models"
    return [
        (start + f"{SECRET}\r\n{form}\r\n0\r\n\r\n").encode(),  # chunk size is not hex
        (start + f"{len(form):x};{SECRET}=\x01\r\n{form}\r\n0\r\n\r\n").encode(),  # extension
        (start + f"{len(form):x}\r\n{form}{SECRET}\r\n0\r\n\r\n").encode(),  # no terminator
    ]


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` as it is; everything the gateway answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def recorded(response: requests.Response) -> bytes:
    head = f"HTTP {response.status_code} {response.reason}\r\n" + "".join(
        f"{name}: {value}\r\n" for name, value in response.headers.items()
    )
    return head.encode() + b"\r\n" + response.content


class Traffic:
    """Calls against the served gateway; every answer kept as bytes."""

    def __init__(self, gateway: ServedGateway, account: dict, database: Path) -> None:
        self.gateway, self.account, self.database = gateway, account, database
        self.answers: list[bytes] = []
        self.refusals: list[bytes] = []  # answers to what gunicorn must refuse
        self.unreadable: list[bytes] = []  # answers to bodies whose chunked framing is broken

    def raw(self, request: bytes) -> bytes:
        answer = raw_exchange(self.gateway.port, request)
        self.answers.append(answer)
        return answer

    def http(self, method: str, path: str, **kwargs) -> None:
        kwargs.setdefault("timeout", 30)
        self.answers.append(recorded(requests.request(method, self.gateway.base + path, **kwargs)))

    def credential_sets(self) -> list[dict]:
        """Canary credentials, and the real account's with a canary secret or sign."""
        real_key, real_secret = self.account["key"], self.account["secret"]
        return [
            {"key": KEY, "secret": SECRET},
            {"key": KEY, "sign": SIGN, "dateline": str(int(time.time()))},
            {"key": real_key, "secret": SECRET},
            {"key": real_key, "sign": SIGN, "dateline": str(int(time.time()))},
            {"key": real_key, "sign": SIGN, "dateline": "1700000000"},
            {"key": real_key, "secret": real_secret},
        ]

    def calls_of_every_kind(self) -> None:
        chat = json.dumps(CHAT_ARGS)
        for credentials in self.credential_sets():
            for method, o_args in (
                ("v1/models", "{}"),
                ("v1/chat/completions", chat),
                ("v1/chat/completions", json.dumps(dict(CHAT_ARGS, stream=True))),
                ("v1/chat/completions", json.dumps(dict(CHAT_ARGS, model="stub-500"))),
                ("v1/chat/completions", json.dumps(dict(CHAT_ARGS, model="stub-garbage"))),
                ("v1/chat/completions", "{not json"),
                ("v1/no/such/method", "{}"),
            ):
                params = {**credentials, "method": method, "_o_args": o_args, "cache": "no"}
                self.http("GET", "/api", params=params)
                self.http("GET", "/openai/custom/", params={**params, "result_type": "xml"})
                self.http("POST", "/api", data=params)
                self.http("POST", "/api", json=params)
                self.http("GET", "/api", params={**params, "callback": "cb"})
            headers = {"X-API-KEY": credentials["key"]}
            if "secret" in credentials:
                headers["X-API-SECRET"] = credentials["secret"]
            self.http("GET", "/api", params={"method": "v1/models"}, headers=headers)
        self.openai_door_calls()

    def openai_door_calls(self) -> None:
        real = f"{self.account['key']}:{self.account['secret']}"
        for token in (f"{KEY}:{SECRET}", f"{self.account['key']}:{SECRET}", KEY, real):
            bearer = {"Authorization": f"Bearer {token}"}
            self.http("GET", "/api", params={"method": "v1/models"}, headers=bearer)
            self.http("GET", "/v1/models", headers=bearer)
            self.http("GET", "/v1/models", headers={"api-key": token})
            for body in (
                dict(CHAT_ARGS, model="gpt-4o-mini"),
                dict(CHAT_ARGS, model="gpt-4o-mini", stream=True),
                dict(CHAT_ARGS, model="stub-500"),
                {"messages": "not a list"},
            ):
                self.http("POST", "/v1/chat/completions", json=body, headers=bearer)
            self.http(
                "POST",
                "/v1/chat/completions",
                data=b"{not json",
                headers={**bearer, "Content-Type": "application/json"},
            )

    def bad_multipart_bodies(self) -> None:
        boundary = "gatewayboundary"
        parts = "".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in (("key", KEY), ("secret", SECRET), ("sign", SIGN))
        )
        for body in (
            parts,  # no closing boundary
            parts + f"--{boundary}\r\nContent-Disposition: form-data; name=file; filename=a"
            f"\r\n\r\n{SECRET}",  # a file part cut short
            f"--{boundary}\r\n{SECRET}\r\n\r\n--{boundary}--\r\n",  # a part without headers
            f"--other\r\n{parts}--other--\r\n",  # the wrong boundary
        ):
            for path in ("/api", "/v1/audio/transcriptions"):
                self.http(
                    "POST",
                    path,
                    params={"method": "v1/audio/transcriptions"},
                    data=body.encode(),
                    headers={
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Authorization": f"Bearer {KEY}:{SECRET}",
                    },
                )

    def oversize_bodies(self) -> None:
        padding = "a" * (MAX_BODY_BYTES + 1)
        bearer = {"Authorization": f"Bearer {KEY}:{SECRET}"}
        self.http("POST", "/api", data={"key": KEY, "secret": SECRET, "pad": padding})
        self.http("POST", f"/api?{CREDENTIAL_QUERY}", json={"key": KEY, "_o_args": padding})
        self.http("POST", "/v1/chat/completions", json={"pad": padding}, headers=bearer)
        self.http(
            "POST",
            "/api",
            data=(f"key={KEY}&secret={SECRET}&pad={padding}".encode() for _ in range(1)),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # chunked, no Content-Length

    def database_failures(self) -> None:
        """The unexpected-exception path: a call whose database query fails."""
        database = sqlite3.connect(self.database)
        database.execute("ALTER TABLE accounts RENAME TO accounts_away")
        database.commit()
        database.close()
        for credentials in self.credential_sets():
            params = {**credentials, "method": "v1/models"}
            self.http("GET", "/api", params=params)
            self.http("POST", "/api", json=params)
        for token in (f"{KEY}:{SECRET}", f"{self.account['key']}:{self.account['secret']}"):
            self.http("GET", "/v1/models", headers={"Authorization": f"Bearer {token}"})
        self.http("GET", "/health")


@pytest.fixture(scope="module")
def traffic(tmp_path_factory, stub):
    workdir = tmp_path_factory.mktemp("canary")
    gateway = ServedGateway.on_stub(
        workdir,
        stub,
        OPENAI_API_KEY=UPSTREAM_KEY,
        MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        MAX_UPLOAD_BYTES=str(MAX_BODY_BYTES // 2),
        # Every call reads its account from the database, so that the database failure below
        # fails authentication itself (the unexpected-exception path), whatever the timing.
        SETTINGS_CACHE_SECONDS="0",
    )
    account = gateway.flask_json("accounts", "create", "canary")
    gateway.start()
    calls = Traffic(gateway, account, workdir / "gateway.sqlite3")
    try:
        calls.refusals = [calls.raw(r) for r in malformed_request_lines() + malformed_headers()]
        calls.unreadable = [calls.raw(request) for request in chunked_bodies()]
        calls.calls_of_every_kind()
        calls.bad_multipart_bodies()
        calls.oversize_bodies()
        calls.database_failures()
    finally:
        gateway.stop()  # its log is complete once it has stopped
    calls.canaries = (KEY, SECRET, SIGN, UPSTREAM_KEY, account["key"], account["secret"])
    calls.log = gateway.log_path.read_bytes()
    return calls


def hits(canaries, text: bytes) -> list[str]:
    return [canary for canary in canaries if canary.encode() in text]


def test_no_canary_in_anything_the_gateway_wrote(traffic):
    leaking = [line for line in traffic.log.splitlines() if hits(traffic.canaries, line)]
    assert leaking == []


def test_no_canary_in_any_answer(traffic):
    leaking = [answer[:300] for answer in traffic.answers if hits(traffic.canaries, answer)]
    assert leaking == []


def test_every_malformed_request_was_refused_by_gunicorn_itself(traffic):
    """Without this the searches above could pass because the requests never got anywhere."""
    statuses = {answer.split(b"\r\n", 1)[0] for answer in traffic.refusals}
    assert statuses <= {
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 414 URI Too Long",
        b"HTTP/1.1 417 Expectation Failed",
        b"HTTP/1.1 431 Request Header Fields Too Large",
        b"HTTP/1.1 501 Bad Request",  # sic: gunicorn's reason for an unknown coding
    }, statuses
    assert traffic.log.count(b"Invalid request from ip=127.0.0.1: ") >= len(PATHS) * 10


def test_the_database_failures_were_logged_with_their_request_ids(traffic):
    assert b"unexpected error in request gw-1." in traffic.log
    assert b"Traceback (most recent call last)" in traffic.log


def test_a_body_with_broken_chunked_framing_is_4003_saying_so(traffic):
    for answer in traffic.unreadable:
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"\r\nX-Error-Code: 4003\r\n" in head
        assert json.loads(body)["reason"] == (
            "用户输入参数错误: the request body could not be read: its chunked framing is broken, "
            "or it ended early"
        )
