"""A browser reads the /api stream: headless Chromium runs docs/streaming.md's `fetch` reader on a
page of another origin against the gateway served by gunicorn, and reports what it read back to
the page's own server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.served import REPO, ServedGateway
from tests.servers import free_port

CHROMIUM = "/usr/bin/chromium"
SLOW_WORDS = "one two three four five six"  # stub-stream-slow sends one word per 0.5 s


def documented_reader() -> str:
    """The fetch reader exactly as docs/streaming.md shows it."""
    text = (REPO / "docs" / "streaming.md").read_text()
    return re.search(r"A browser reads them with.*?```js\n(.*?)```", text, re.S).group(1)


PAGE = """<!doctype html><meta charset="utf-8"><title>stream reader</title>
<script>
const url = %(url)s;
const started = performance.now();
const shown = [];
const seconds = () => (performance.now() - started) / 1000;
function show(text) { shown.push({text, at: seconds()}); }
function fail(code, reason) { shown.push({code, reason, at: seconds()}); }
async function read() {
%(reader)s
  return response.headers.get("X-Request-Id");
}
read().then(
  (requestId) => report({shown, requestId}),
  (error) => report({error: String(error)}),
);
function report(result) {
  fetch("/report", {method: "POST", body: JSON.stringify(result)});
}
</script>
"""


class PageServer:
    """Serves the reader page on its own origin and takes the page's report."""

    def __init__(self):
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.page = b""
        self.report: dict | None = None
        self.reported = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(server.page)))
                self.end_headers()
                self.wfile.write(server.page)

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.report = json.loads(body)
                server.reported.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def page_server():
    server = PageServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, stub, page_server):
    workdir = tmp_path_factory.mktemp("browser")
    served = ServedGateway.on_stub(
        workdir,
        stub,
        UPSTREAM_MAX_RETRIES="0",
        CORS_ORIGINS=page_server.origin,
    ).start()
    yield served
    served.stop()


def read_in_chromium(page_server: PageServer, gateway_url: str, tmp_path: Path) -> dict:
    page_server.report, page_server.reported = None, threading.Event()
    page_server.page = (
        PAGE % {"url": json.dumps(gateway_url), "reader": documented_reader()}
    ).encode()
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            page_server.origin + "/reader.html",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert page_server.reported.wait(timeout=120), "the page never reported"
        return page_server.report
    finally:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait(timeout=30)


def stream_url(gateway: ServedGateway, account: dict) -> str:
    o_args = {
        "model": "stub-stream-slow",
        "stream": True,
        "messages": [{"role": "user", "content": SLOW_WORDS}],
    }
    query = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(o_args),
    }
    return f"{gateway.base}/api?{urlencode(query)}"


def test_chromium_reads_the_api_stream_piece_by_piece_with_the_documented_reader(
    gateway, page_server, tmp_path
):
    account = gateway.flask_json("accounts", "create", "browser")
    report = read_in_chromium(page_server, stream_url(gateway, account), tmp_path)
    assert "error" not in report, report
    assert "".join(item["text"] for item in report["shown"]) == "stub reply: " + SLOW_WORDS
    assert report["requestId"].startswith("gw-1.")  # an exposed header the page can read
    arrivals = [item["at"] for item in report["shown"]]
    # the upstream spaces its words 0.5 s apart: the page shows the first seconds before the last
    assert arrivals[-1] - arrivals[0] > 2.0, arrivals
    assert gateway.flask_json("usage", account["key"])["by_code"] == {"0000": 1}
