"""Where the answer cache's shared store lives without Redis, measured (docs/envelope.md,
"Cache"): its own SQLite file (proxy/local_store.py, the choice), a table in the gateway's
SQLite database, and diskcache when it is installed (it is not a dependency).

1. One thread: microseconds per read of a stored answer and per write of a new one.
2. Two processes: one writes usage rows into the gateway database as calls do, the other
   fills the cache as fast as it can; the usage rows' latency with the cache's writes in
   the same database file and in a file of their own.
3. What an answer kept parsed in a worker's memory takes, against its JSON bytes.
4. A hit's own work, both ways in one run: parsing the stored JSON and rendering the envelope
   (as before), against the worker's kept answer (formats.Frozen: each format renders once).

Run: `.venv/bin/python bench/answer_store_bench.py`. It asserts nothing.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import (  # noqa: E402
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    insert,
    select,
)

from proxy import formats  # noqa: E402
from proxy.cache import AnswerCache  # noqa: E402
from proxy.local_store import LocalStore  # noqa: E402
from proxy.storage import make_engine  # noqa: E402

CHAT = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "你好! " * 40},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 40, "total_tokens": 49},
    },
    separators=(",", ":"),
    ensure_ascii=False,
).encode()
EMBEDDING = json.dumps(
    {"object": "list", "data": [{"embedding": [0.0123456789 * i for i in range(1536)]}]},
    separators=(",", ":"),
).encode()
TTL = 600
OPS = 2000

metadata = MetaData()
cache_table = Table(
    "answer_cache",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Column("value", LargeBinary, nullable=False),
)
usage_table = Table(
    "usage_rows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("request_id", String(64)),
    Column("latency_ms", Integer),
)


class DatabaseTable:
    """The cache as a table of the gateway's database (through its SQLAlchemy engine)."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        metadata.create_all(self.engine)

    def read(self, key: str):
        with self.engine.connect() as db:
            return db.execute(
                select(cache_table.c.value, cache_table.c.expires_at).where(
                    cache_table.c.key == key, cache_table.c.expires_at > time.time()
                )
            ).first()

    def write(self, key: str, blob: bytes, ttl: int) -> None:
        with self.engine.begin() as db:
            db.execute(delete(cache_table).where(cache_table.c.key == key))
            db.execute(
                insert(cache_table).values(key=key, expires_at=time.time() + ttl, value=blob)
            )


class DiskCache:
    def __init__(self, directory: str):
        import diskcache

        self.cache = diskcache.Cache(directory, size_limit=64 * 1024 * 1024)

    def read(self, key: str):
        return self.cache.get(key, expire_time=True)

    def write(self, key: str, blob: bytes, ttl: int) -> None:
        self.cache.set(key, blob, expire=ttl)


def stores(workdir: Path) -> dict:
    made = {
        "own SQLite file (LocalStore)": LocalStore(str(workdir / "own"), max_bytes=64 << 20),
        "table in the gateway database": DatabaseTable(f"sqlite:///{workdir / 'gateway.db'}"),
    }
    try:
        made["diskcache (not a dependency)"] = DiskCache(str(workdir / "diskcache"))
    except ImportError:
        pass
    return made


def per_operation(workdir: Path) -> None:
    print(f"1. microseconds per operation, one thread, {OPS} operations (median of 5 runs)")
    for name, store in stores(workdir).items():
        for label, blob in (("chat 0.5 KB", CHAT), ("embedding 30 KB", EMBEDDING)):
            writes, reads = [], []
            for run in range(5):
                started = time.perf_counter()
                for index in range(OPS):
                    store.write(f"{label}-{run}-{index}", blob, TTL)
                writes.append((time.perf_counter() - started) / OPS * 1e6)
                started = time.perf_counter()
                for index in range(OPS):
                    store.read(f"{label}-{run}-{index}")
                reads.append((time.perf_counter() - started) / OPS * 1e6)
            print(
                f"   {name:<32} {label:<16} write {statistics.median(writes):6.0f}"
                f"   read {statistics.median(reads):5.0f}"
            )


def _usage_writer(url: str, seconds: float, latencies) -> None:
    engine = make_engine(url)
    metadata.create_all(engine)
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        with engine.begin() as db:
            db.execute(insert(usage_table).values(request_id="r", latency_ms=1))
        samples.append((time.perf_counter() - started) * 1000)
    latencies.put(samples)


def _cache_filler(kind: str, workdir: str, seconds: float, count) -> None:
    store = (
        LocalStore(f"{workdir}/own", max_bytes=64 << 20)
        if kind == "own"
        else DatabaseTable(f"sqlite:///{workdir}/gateway.db")
    )
    deadline, written = time.monotonic() + seconds, 0
    while time.monotonic() < deadline:
        store.write(f"fill-{written}", CHAT, TTL)
        written += 1
    count.put(written)


def contention(workdir: Path, seconds: float = 3.0) -> None:
    print(f"2. usage-row inserts (ms) while another process fills the cache, {seconds:.0f} s each")
    context = multiprocessing.get_context("spawn")
    url = f"sqlite:///{workdir / 'gateway.db'}"
    for kind, label in (
        (None, "no cache writes"),
        ("own", "cache in its own file"),
        ("table", "cache in the gateway database"),
    ):
        latencies, count = context.Queue(), context.Queue()
        processes = [context.Process(target=_usage_writer, args=(url, seconds, latencies))]
        if kind:
            processes.append(
                context.Process(target=_cache_filler, args=(kind, str(workdir), seconds, count))
            )
        for process in processes:
            process.start()
        samples = latencies.get(timeout=60)
        fills = count.get(timeout=60) if kind else 0
        for process in processes:
            process.join()
        ordered = sorted(samples)
        p50, p99 = ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.99)]
        print(
            f"   {label:<30} {len(samples) / seconds:6.0f} rows/s   p50 {p50:.2f}"
            f"   p99 {p99:.2f}   (cache fills/s: {fills / seconds:.0f})"
        )


def kept_memory() -> None:
    print("3. an answer kept parsed in memory, with its json and jsonu renderings")
    for label, blob in (("chat", CHAT), ("embedding", EMBEDDING)):
        tracemalloc.start()
        kept = [formats.Frozen(json.loads(blob)) for _ in range(50)]
        for answer in kept:
            formats.render({"response": answer}, "json")
            formats.render({"response": answer}, "jsonu")
        used = tracemalloc.get_traced_memory()[0] / 50
        tracemalloc.stop()
        ratio = used / len(blob)
        print(f"   {label:<10} JSON {len(blob):6d} B   in memory {used:8.0f} B ({ratio:.1f}x)")


def envelope(response) -> dict:
    """An envelope as proxy/doors/onebound.py builds it around a cached answer."""
    return {
        "response": response,
        "error": "",
        "reason": "ok",
        "error_code": "0000",
        "cache": 1,
        "api_info": "today:1 max:30000 all[1=1+0+0];expires:never",
        "execution_time": "0.001",
        "server_time": "Beijing/2026-12-01 00:00:00",
        "client_ip": "127.0.0.1",
        "call_args": {"method": "v1/chat/completions"},
        "api_type": "openai",
        "translate_language": "cn",
        "server_memory": "50.00MB",
        "request_id": "gw-1.0123456789abcdef",
        "last_id": "1",
    }


def v1_json(payload) -> str:
    return json.dumps(payload, ensure_ascii=False)


def hit_work() -> None:
    print("4. a hit's own work (us): parse + render, against the kept answer (median of 7 runs)")
    for label, blob in (("chat", CHAT), ("embedding", EMBEDDING)):
        kept = AnswerCache(ttl_seconds=600, max_bytes=1 << 30, counts_memory=True)
        kept.set("k", json.loads(blob))
        for result_type in ("json", "jsonu", "serialize", "xml", "/v1"):

            def parsed(result_type=result_type, blob=blob):
                value = json.loads(blob)
                if result_type == "/v1":
                    return v1_json(value)
                return formats.render(envelope(value), result_type)

            def from_memory(result_type=result_type, kept=kept):
                value = kept.get("k")
                if result_type == "/v1":
                    return value.rendering("/v1", v1_json)
                return formats.render(envelope(value), result_type)

            assert parsed() == from_memory()
            count = 1000 if label == "chat" else 50
            before, after = [], []
            for _ in range(7):
                for way, samples in ((parsed, before), (from_memory, after)):
                    started = time.perf_counter()
                    for _ in range(count):
                        way()
                    samples.append((time.perf_counter() - started) / count * 1e6)
            ratio = statistics.median(a / b for a, b in zip(after, before, strict=True))
            print(
                f"   {label:<10} {result_type:<10} parse + render {statistics.median(before):7.1f}"
                f"   kept {statistics.median(after):6.1f}   ratio {ratio:.3f}"
            )


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        per_operation(Path(workdir))
    with tempfile.TemporaryDirectory() as workdir:
        contention(Path(workdir))
    kept_memory()
    hit_work()


if __name__ == "__main__":
    main()
