"""Time to first chunk of a streamed chat: through the gateway (gunicorn, 2 workers, SQLite,
an account with quota and balance) versus straight to the bundled stub upstream.

    .venv/bin/python bench/stream_bench.py [--calls 40]

Each round streams the same chat once direct and once through /v1 (alternating, so both see
the same machine), measuring from sending the request to reading the first `data:` line, and
to the end of the stream. Prints medians and p95.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402

from proxy.stub_upstream import StubServer  # noqa: E402
from tests.served import ServedGateway  # noqa: E402


def stream_once(url: str, headers: dict, body: dict) -> tuple[float, float]:
    started = time.perf_counter()
    with requests.post(url, headers=headers, json=body, stream=True, timeout=60) as response:
        response.raise_for_status()
        first = None
        for line in response.iter_lines():
            if first is None and line.startswith(b"data: "):
                first = time.perf_counter() - started
        return first * 1000, (time.perf_counter() - started) * 1000


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
            direct_headers = {"Authorization": "Bearer sk-bench"}
            gateway_headers = {"Authorization": f"Bearer {account['key']}:{account['secret']}"}
            for _ in range(3):  # warm both paths: connections, SDK clients, statement caches
                stream_once(stub.base_url + "/chat/completions", direct_headers, body)
                stream_once(gateway.base + "/v1/chat/completions", gateway_headers, body)
            direct, through = [], []
            for _ in range(options.calls):
                direct.append(
                    stream_once(stub.base_url + "/chat/completions", direct_headers, body)
                )
                through.append(
                    stream_once(gateway.base + "/v1/chat/completions", gateway_headers, body)
                )
        finally:
            gateway.stop()
    print(f"{options.calls} streamed chats each way (the stub spaces its chunks 20 ms apart)")
    print(f"{'':28} {'first chunk':>22} {'whole stream':>24}")
    print(f"{'':28} {'median':>10} {'p95':>11} {'median':>11} {'p95':>12}")
    for name, samples in (("direct to the stub", direct), ("through the gateway /v1", through)):
        firsts, wholes = [s[0] for s in samples], [s[1] for s in samples]
        print(
            f"{name:28} {statistics.median(firsts):8.1f} ms {p95(firsts):8.1f} ms "
            f"{statistics.median(wholes):8.1f} ms {p95(wholes):9.1f} ms"
        )
    added = statistics.median([t[0] for t in through]) - statistics.median([d[0] for d in direct])
    print(f"the gateway adds {added:.1f} ms (median) before the first chunk")


if __name__ == "__main__":
    main()
