"""Gateway overhead, measured: per-call latency through /api (in-process app, stub upstream
over real HTTP) for cache misses and hits, and rendering time of each format.

Run: `make bench`. Prints a table; it asserts nothing (speed targets live here, not in tests).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy import create_app, formats  # noqa: E402
from stub_upstream import StubServer  # noqa: E402

CALLS = 200


def timed(fn, repeat: int) -> list[float]:
    samples = []
    for index in range(repeat):
        started = time.perf_counter()
        fn(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return f"{name:<38} median {statistics.median(ordered):7.2f} ms   p95 {p95:7.2f} ms"


def main() -> None:
    with StubServer() as stub, tempfile.TemporaryDirectory() as workdir:
        app = create_app(
            {
                "DATABASE_URL": f"sqlite:///{workdir}/bench.sqlite3",
                "OPENAI_BASE_URL": stub.base_url,
                "OPENAI_API_KEY": "sk-bench",
            }
        )
        creds = json.loads(
            app.test_cli_runner().invoke(args=["accounts", "create", "bench", "--json"]).output
        )
        client = app.test_client()

        def chat(index: int, cache: str) -> None:
            o_args = json.dumps({"messages": [{"role": "user", "content": f"hello {index}"}]})
            envelope = client.get(
                "/api",
                query_string={
                    "key": creds["key"],
                    "secret": creds["secret"],
                    "method": "v1/chat/completions",
                    "_o_args": o_args,
                    "cache": cache,
                },
            ).get_json()
            assert envelope["error_code"] == "0000", envelope

        chat(-1, "no")  # warm up: SDK client, connection pool
        print(f"{CALLS} calls each, SQLite usage ledger, stub upstream on {stub.url}")
        print(summary("/api miss (upstream call)", timed(lambda i: chat(i, "no"), CALLS)))
        print(summary("/api hit (same call again)", timed(lambda i: chat(0, "yes"), CALLS)))
        print(
            summary(
                "/api 4005 (wrong secret)",
                timed(
                    lambda i: client.get(
                        "/api",
                        query_string={"key": creds["key"], "secret": "x", "method": "v1/models"},
                    ),
                    CALLS,
                ),
            )
        )

        envelope = client.get(
            "/api",
            query_string={
                **{k: creds[k] for k in ("key", "secret")},
                "method": "v1/embeddings",
                "_o_args": json.dumps(
                    {"input": [f"text {i} 中文" for i in range(400)], "dimensions": 64}
                ),
            },
        ).get_json()
        size = len(json.dumps(envelope))
        for result_type in formats.RESULT_TYPES:
            samples = timed(lambda i, rt=result_type: formats.render(envelope, rt), 20)
            print(summary(f"render {result_type} ({size // 1024} KB envelope)", samples))


if __name__ == "__main__":
    main()
