"""How gunicorn spreads simultaneous slow calls over its workers.

Runs the gateway as deployed (gunicorn, config/gunicorn.conf.py, `--workers` workers of
GUNICORN_THREADS threads) against the stub's `stub-slow` model, and for each of `--trials`
rounds fires `--calls` GET /api calls released together. Each call's worker comes from the
access log (the bench adds its own access line format with the worker pid and request id);
its wall-clock is measured by the client. Prints, per round, the calls each worker served and
the slowest and median wall-clock: a worker that took more calls than it has threads makes
them queue behind the slow ones while another worker idles.

    .venv/bin/python bench/spread_bench.py [--calls 30] [--trials 3] [--slow-seconds 2]
    .venv/bin/python bench/spread_bench.py --gunicorn-args="--worker-class gthread"  # stock
    .venv/bin/python bench/spread_bench.py --gunicorn-args=--reuse-port
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from stub_upstream import StubServer  # noqa: E402
from tests.conftest import CHAT_ARGS  # noqa: E402
from tests.served import ServedGateway  # noqa: E402

# The bench's own access line: "spread-bench <pid> <request id>", whatever the log format.
ACCESS_LINE = "spread-bench %(p)s %({x-request-id}o)s"
ACCESS_LINE_RE = re.compile(r"spread-bench <(\d+)> (\S+)")


def fire(base: str, account: dict, count: int) -> list[tuple[str, float, str]]:
    """`count` stub-slow calls released together: (request id, wall-clock seconds, code)."""
    params = {
        "key": account["key"],
        "secret": account["secret"],
        "method": "v1/chat/completions",
        "_o_args": json.dumps(dict(CHAT_ARGS, model="stub-slow")),
        "cache": "no",
    }
    barrier = threading.Barrier(count)
    results: list[tuple[str, float, str]] = [("", 0.0, "")] * count

    def one(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        response = requests.get(base + "/api", params=params, timeout=120)
        results[index] = (
            response.headers.get("X-Request-Id", ""),
            time.perf_counter() - started,
            response.headers.get("X-Error-Code", f"HTTP {response.status_code}"),
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def worker_of_each_request(log_text: str) -> dict[str, str]:
    return {rid: pid for pid, rid in ACCESS_LINE_RE.findall(log_text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    parser.add_argument("--gunicorn-args", default="", help="added to GUNICORN_CMD_ARGS")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="spread-"))
    stub = StubServer(slow_seconds=args.slow_seconds).start()
    gateway = ServedGateway(
        workdir,
        workers=args.workers,
        DATABASE_URL=f"sqlite:///{workdir / 'gateway.sqlite3'}",
        OPENAI_BASE_URL=stub.base_url,
        OPENAI_API_KEY="sk-bench",
        UPSTREAM_TIMEOUT_SECONDS="20",
        UPSTREAM_MAX_RETRIES="0",
        ACCOUNT_SEALING_KEY=Fernet.generate_key().decode(),
        GUNICORN_THREADS=str(args.threads),
        GUNICORN_CMD_ARGS=f"--access-logformat '{ACCESS_LINE}' {args.gunicorn_args}",
    )
    account = gateway.flask_json("accounts", "create", "spread")
    gateway.start()
    print(
        f"{args.workers} workers x {args.threads} threads, {args.calls} calls of "
        f"{args.slow_seconds:g} s at once; GUNICORN_CMD_ARGS extra: {args.gunicorn_args or '-'}"
    )
    busiest = []
    try:
        for trial in range(args.trials):
            results = fire(gateway.base, account, args.calls)
            time.sleep(0.5)  # the workers write their access lines after answering
            workers = worker_of_each_request(gateway.log_text())
            per_worker = Counter(workers.get(rid, "?") for rid, _, _ in results)
            seconds = sorted(elapsed for _, elapsed, _ in results)
            codes = Counter(code for _, _, code in results)
            busiest.append(max(per_worker.values()))
            print(
                f"round {trial}: calls per worker {sorted(per_worker.values(), reverse=True)}  "
                f"wall-clock median {statistics.median(seconds):.1f} s, max {seconds[-1]:.1f} s  "
                f"codes {dict(codes)}",
                flush=True,
            )
    finally:
        gateway.stop()
        stub.stop()
    print(f"busiest worker per round: {busiest}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
