"""Time to first chunk of a streamed chat: through the gateway (gunicorn, 2 workers, SQLite,
an account with quota and balance) versus straight to the bundled stub upstream.

    .venv/bin/python bench/stream_bench.py [--calls 40]

Each round streams the same chat direct, through /v1 and through /api (`stream: true` in
`_o_args`), in turn so all see the same machine, measuring from sending the request to the
response headers, to the first `data:` line, and to the end of the stream. Prints medians
and p95. /api holds one chunk back (the last travels in the END envelope), so its first event
waits for the upstream's second chunk: one chunk interval more, by design.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402

from stub_upstream import StubServer  # noqa: E402
from tests.served import ServedGateway  # noqa: E402


def stream_once(url: str, headers: dict, body: dict) -> tuple[float, ...]:
    """(ms to the response headers, to the first `data:` line, to the end of the stream), on a
    new connection. http.client's read1 hands over what the socket has delivered, as the SDK's
    HTTP client does (requests' iter_lines waits for 512 bytes, which hid the first chunk
    behind later ones)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    try:
        connection.request(
            "POST", parts.path, payload, {**headers, "Content-Type": "application/json"}
        )
        response = connection.getresponse()
        headers_at = time.perf_counter() - started
        assert response.status == 200, response.read()
        first, received = None, b""
        while piece := response.read1(65536):
            received += piece
            if first is None and b"data: " in received:
                first = time.perf_counter() - started
        return headers_at * 1000, first * 1000, (time.perf_counter() - started) * 1000
    finally:
        connection.close()


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    options = parser.parse_args()
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five"}],
    }
    with StubServer() as stub, tempfile.TemporaryDirectory() as workdir:
        gateway = ServedGateway(
            Path(workdir),
            workers=2,
            DATABASE_URL=f"sqlite:///{workdir}/gateway.sqlite3",
            OPENAI_BASE_URL=stub.base_url,
            OPENAI_API_KEY="sk-bench",
            ACCOUNT_SEALING_KEY=Fernet.generate_key().decode(),
        )
        account = gateway.flask_json(
            "accounts", "create", "bench", "--daily-quota", "100000", "--balance", "100000"
        )
        gateway.start()
        try:
            paths = {
                "direct to the stub": (
                    stub.base_url + "/chat/completions",
                    {"Authorization": "Bearer sk-bench"},
                    body,
                ),
                "through the gateway /v1": (
                    gateway.base + "/v1/chat/completions",
                    {"Authorization": f"Bearer {account['key']}:{account['secret']}"},
                    body,
                ),
                "through the gateway /api": (
                    gateway.base + "/api",
                    {},
                    {
                        "key": account["key"],
                        "secret": account["secret"],
                        "method": "v1/chat/completions",
                        "_o_args": json.dumps(body),
                    },
                ),
            }
            samples = {name: [] for name in paths}
            for round_number in range(3 + options.calls):  # 3 rounds warm every path
                for name, (url, headers, payload) in paths.items():
                    timing = stream_once(url, headers, payload)
                    if round_number >= 3:
                        samples[name].append(timing)
        finally:
            gateway.stop()
    print(f"{options.calls} streamed chats each way (the stub spaces its chunks 20 ms apart)")
    print(f"{'':28} {'headers':>10} {'first chunk':>22} {'whole stream':>24}")
    print(f"{'':28} {'median':>10} {'median':>10} {'p95':>11} {'median':>11} {'p95':>12}")
    for name, timings in samples.items():
        heads, firsts, wholes = ([t[i] for t in timings] for i in range(3))
        print(
            f"{name:28} {statistics.median(heads):7.1f} ms "
            f"{statistics.median(firsts):7.1f} ms {p95(firsts):8.1f} ms "
            f"{statistics.median(wholes):8.1f} ms {p95(wholes):9.1f} ms"
        )
    direct = statistics.median([t[1] for t in samples["direct to the stub"]])
    for name in ("through the gateway /v1", "through the gateway /api"):
        added = statistics.median([t[1] for t in samples[name]]) - direct
        print(f"{name} adds {added:.1f} ms (median) before the first chunk")


if __name__ == "__main__":
    main()
